package apierr_test

import (
	"bytes"
	"context"
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	profilev1 "github.com/platforma/platforma/gen/platforma/profile/v1"
	"github.com/platforma/platforma/services/kit/apierr"
)

func TestItemRefusalsAreCountedAndLogged(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	r := apierr.NewItemRefusals(slog.New(slog.NewTextHandler(&logs, nil)))
	bad := func(field string) *profilev1.RecordLoginResultResult {
		return &profilev1.RecordLoginResultResult{Result: &profilev1.RecordLoginResultResult_Error{Error: &commonv1.ItemError{
			Code: int32(codes.InvalidArgument), Message: "invalid",
			FieldViolations: []*commonv1.FieldViolation{{Field: field, Description: "must be valid UTF-8"}},
		}}}
	}
	resp := &profilev1.BatchRecordLoginResultsResponse{Results: []*profilev1.RecordLoginResultResult{
		{Result: &profilev1.RecordLoginResultResult_Profile{Profile: &profilev1.Profile{}}},
		bad("requests[1].platform_account_id"),
		bad("requests[12].platform_account_id"),
		bad("requests[13].user_id"),
	}}
	method := profilev1.ProfileService_BatchRecordLoginResults_FullMethodName
	got, err := r.UnaryServerInterceptor()(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: method},
		func(context.Context, any) (any, error) { return resp, nil })
	require.NoError(t, err)
	assert.Same(t, resp, got)

	assert.Equal(t, 2, testutil.CollectAndCount(r.Collector()), "one series per method, code and field")
	assert.Equal(t, 2.0, testutil.ToFloat64(counterWith(t, r, method, "platform_account_id")))
	assert.Equal(t, 1.0, testutil.ToFloat64(counterWith(t, r, method, "user_id")))
	assert.Contains(t, logs.String(), "level=INFO msg=\"batch item refused\"")
	assert.Contains(t, logs.String(), "index=2 ")
	assert.Contains(t, logs.String(), "fields=requests[12].platform_account_id")
	assert.NotContains(t, logs.String(), "ERROR")
}

func TestItemRefusalsIgnoreOtherResponses(t *testing.T) {
	t.Parallel()
	r := apierr.NewItemRefusals(slog.New(slog.DiscardHandler))
	_, err := r.UnaryServerInterceptor()(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/x/y"},
		func(context.Context, any) (any, error) {
			return &profilev1.ListProfilesResponse{Profiles: []*profilev1.Profile{{}}}, nil
		})
	require.NoError(t, err)
	assert.Equal(t, 0, testutil.CollectAndCount(r.Collector()))
}

func counterWith(t *testing.T, r *apierr.ItemRefusals, method, field string) prometheus.Collector {
	t.Helper()
	vec, ok := r.Collector().(*prometheus.CounterVec)
	require.True(t, ok)
	return vec.WithLabelValues(method, codes.InvalidArgument.String(), field)
}
