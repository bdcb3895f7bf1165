package apierr

import (
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
)

// ItemError turns the error of one batch item into its per-item result,
// classified like any other error (ToStatus), with its field violations
// and its reason.
func ItemError(err error) *commonv1.ItemError {
	st, _ := ToStatus(err)
	out := &commonv1.ItemError{Code: int32(st.Code()), Message: st.Message(), Reason: Reason(st)}
	for _, fv := range FieldViolations(st) {
		out.FieldViolations = append(out.FieldViolations, &commonv1.FieldViolation{Field: fv.GetField(), Description: fv.GetDescription()})
	}
	return out
}

// FieldViolations returns the google.rpc.BadRequest field violations a
// status carries, if any.
func FieldViolations(st *status.Status) []*errdetails.BadRequest_FieldViolation {
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			return br.GetFieldViolations()
		}
	}
	return nil
}
