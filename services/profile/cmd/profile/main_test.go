package main

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	profilev1 "github.com/platforma/platforma/gen/platforma/profile/v1"
	"github.com/platforma/platforma/services/kit/apptest"
	"github.com/platforma/platforma/services/kit/pgtest"
	"github.com/platforma/platforma/services/profile"
)

// No migrations in the template: the test runs the binary's own migrate.
func TestMain(m *testing.M) { pgtest.Main(m) }

func TestBinaryMigratesAndServes(t *testing.T) {
	t.Parallel()
	grpcService := profilev1.ProfileService_ServiceDesc.ServiceName
	// A non-default N shows the service's own flags reach the handlers.
	s := apptest.Start(t, profile.Service(), grpcService, "-refresh-after-failures=1")

	assert.Contains(t, apptest.ListServices(t, s.Conn), grpcService, "reflection lists the service")

	client := profilev1.NewProfileServiceClient(s.Conn)
	req := &profilev1.RecordLoginResultRequest{
		EventId:           uuid.NewString(),
		UserId:            uuid.NewString(),
		PlatformAccountId: "acct",
		Outcome:           commonv1.Outcome_OUTCOME_FAILED,
		AuthType:          commonv1.AuthType_AUTH_TYPE_TWO_FACTOR,
		OccurredAt:        timestamppb.New(time.Now()),
	}
	resp, err := client.RecordLoginResult(context.Background(), req)
	require.NoError(t, err)
	assert.True(t, resp.GetProfile().GetNeedsSessionRefresh(), "one failure is enough with -refresh-after-failures=1")
	_, err = client.RecordLoginResult(context.Background(), req) // a retry
	require.NoError(t, err)

	metrics := apptest.Scrape(t, s.MetricsAddr)
	for _, line := range []string{
		`grpc_server_handled_total{grpc_code="OK",grpc_method="RecordLoginResult",grpc_service="platforma.profile.v1.ProfileService",grpc_type="unary"} 2`,
		// The retry is not a second login.
		`platforma_logins_total{auth_type="TWO_FACTOR",outcome="FAILED"} 1`,
		`platforma_logins_total{auth_type="NORMAL",outcome="SUCCESS"} 0`,
		`platforma_profiles{grade="CRITICAL"} 1`,
		`platforma_profiles{grade="STABLE"} 0`,
		`platforma_db_pool_max_connections `,
	} {
		assert.Contains(t, metrics, line)
	}
}

// An item a batch refuses is logged and counted although the call itself
// succeeds, whatever made it bad (here: a string that is not UTF-8).
func TestRefusedBatchItemsAreLoggedAndCounted(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t, profile.Service(), profilev1.ProfileService_ServiceDesc.ServiceName, "-log-level=info")
	item := func(account string) *profilev1.RecordLoginResultRequest {
		return &profilev1.RecordLoginResultRequest{
			EventId: uuid.NewString(), UserId: uuid.NewString(), PlatformAccountId: account,
			Outcome: commonv1.Outcome_OUTCOME_SUCCESS, OccurredAt: timestamppb.New(time.Now()),
		}
	}
	resp, err := profilev1.NewProfileServiceClient(s.Conn).BatchRecordLoginResults(context.Background(),
		&profilev1.BatchRecordLoginResultsRequest{Requests: []*profilev1.RecordLoginResultRequest{item("ok"), item("bad\xff"), item(" padded")}})
	require.NoError(t, err)
	require.Len(t, resp.GetResults(), 3)
	assert.NotNil(t, resp.GetResults()[0].GetProfile())

	series := `platforma_batch_items_refused_total{field="platform_account_id",grpc_code="InvalidArgument",grpc_method="/platforma.profile.v1.ProfileService/BatchRecordLoginResults"}`
	v, ok := apptest.MetricValue(apptest.Scrape(t, s.MetricsAddr), series)
	require.True(t, ok, "%s exported", series)
	assert.Equal(t, 2.0, v)
	assert.Contains(t, s.Logs(), "batch item refused")
	assert.Contains(t, s.Logs(), "requests[1].platform_account_id")
	assert.Contains(t, s.Logs(), "requests[2].platform_account_id")
}
