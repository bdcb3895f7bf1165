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
