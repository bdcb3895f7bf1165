package apierr

import (
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
)

// ErrorDomain is the domain of every google.rpc.ErrorInfo the services
// send: reasons are unique within it.
const ErrorDomain = "platforma.dev"

// Outcome is a domain outcome a client may branch on: a standard gRPC code
// and a stable, machine-readable reason (UPPER_SNAKE_CASE), sent as
// google.rpc.ErrorInfo. Each service declares its outcomes once, as
// sentinels in its domain package; its store and handlers return them
// with the message of one case (Errorf, Field), and callers test for them
// with errors.Is:
//
//	var ErrReviewNotFound = apierr.NewOutcome(codes.NotFound, "REVIEW_NOT_FOUND")
//	return domain.ErrReviewNotFound.Errorf("review metadata for review_id %s not found", id)
//	errors.Is(err, domain.ErrReviewNotFound) // true
//
// The code and reason travel with the error to the boundary, where
// ToStatus turns it into the status; nothing in between translates it.
type Outcome struct {
	code   codes.Code
	reason string
}

// NewOutcome declares an outcome.
func NewOutcome(code codes.Code, reason string) *Outcome {
	return &Outcome{code: code, reason: reason}
}

// Code is the outcome's gRPC code.
func (o *Outcome) Code() codes.Code { return o.code }

// Reason is the outcome's ErrorInfo reason.
func (o *Outcome) Reason() string { return o.reason }

// Error is the reason: an outcome returned bare has no better message.
func (o *Outcome) Error() string { return o.reason }

// GRPCStatus is the status of the outcome returned bare.
func (o *Outcome) GRPCStatus() *status.Status { return o.status(o.reason, nil) }

// Errorf returns the outcome with a message for this case.
func (o *Outcome) Errorf(format string, args ...any) error {
	return &outcomeError{outcome: o, msg: fmt.Sprintf(format, args...)}
}

// Field returns the outcome as a refusal of one field of the request
// (google.rpc.BadRequest), for outcomes with code INVALID_ARGUMENT.
func (o *Outcome) Field(field, description string) error {
	fv := FieldViolation(field, description)
	return &outcomeError{outcome: o, msg: violationsMessage([]*errdetails.BadRequest_FieldViolation{fv}), violations: []*errdetails.BadRequest_FieldViolation{fv}}
}

func (o *Outcome) status(msg string, violations []*errdetails.BadRequest_FieldViolation) *status.Status {
	st := status.New(o.code, msg)
	details := []protoadapt.MessageV1{&errdetails.ErrorInfo{Reason: o.reason, Domain: ErrorDomain}}
	if len(violations) > 0 {
		details = append(details, &errdetails.BadRequest{FieldViolations: violations})
	}
	if withDetails, err := st.WithDetails(details...); err == nil {
		return withDetails
	}
	return st
}

type outcomeError struct {
	outcome    *Outcome
	msg        string
	violations []*errdetails.BadRequest_FieldViolation
}

func (e *outcomeError) Error() string { return e.msg }

// Is makes errors.Is(err, sentinel) true for the outcome's sentinel.
func (e *outcomeError) Is(target error) bool { return target == e.outcome }

func (e *outcomeError) GRPCStatus() *status.Status { return e.outcome.status(e.msg, e.violations) }

// Reason is the ErrorInfo reason a status carries, "" for none.
func Reason(st *status.Status) string {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}
