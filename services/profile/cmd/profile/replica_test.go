package main

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	profilev1 "github.com/platforma/platforma/gen/platforma/profile/v1"
	"github.com/platforma/platforma/services/kit/apptest"
	"github.com/platforma/platforma/services/kit/pgtest"
	"github.com/platforma/platforma/services/profile"
)

// ListProfiles and GetStabilityDistribution read from the replica;
// GetProfile reads the primary, so a worker sees the profile it just
// recorded even while the replica has not replayed it. With the standby
// stopped the list answers from the primary.
func TestListsReadFromTheReplicaAndGetProfileFromThePrimary(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	svc := profile.Service()
	dsn := apptest.Migrate(t, svc)
	standby := pgtest.StartStandby(t)
	s := apptest.Run(t, svc, dsn, profilev1.ProfileService_ServiceDesc.ServiceName,
		"-read-database-url="+apptest.ReplicaURL(t, svc, dsn, standby), "-read-max-lag=1h")
	client := profilev1.NewProfileServiceClient(s.Conn)
	reads := func(target string) float64 {
		v, _ := apptest.MetricValue(apptest.Scrape(t, s.MetricsAddr), `platforma_db_reads_total{target="`+target+`"}`)
		return v
	}
	record := func(account string) string {
		t.Helper()
		resp, err := client.RecordLoginResult(ctx, &profilev1.RecordLoginResultRequest{
			EventId: uuid.NewString(), UserId: uuid.NewString(), PlatformAccountId: account,
			Outcome: commonv1.Outcome_OUTCOME_SUCCESS, AuthType: commonv1.AuthType_AUTH_TYPE_NORMAL,
			OccurredAt: timestamppb.New(time.Now()),
		})
		require.NoError(t, err)
		return resp.GetProfile().GetId()
	}
	list := func() (ids []string) {
		t.Helper()
		resp, err := client.ListProfiles(ctx, &profilev1.ListProfilesRequest{PageSize: 10})
		require.NoError(t, err)
		for _, p := range resp.GetProfiles() {
			ids = append(ids, p.GetId())
		}
		return ids
	}

	first := record("first")
	require.Eventually(t, func() bool {
		before := reads("replica")
		return len(list()) == 1 && reads("replica") > before
	}, 30*time.Second, 50*time.Millisecond, "the replica never served the profile")
	sconn, err := pgx.Connect(ctx, pgtest.OnStandby(dsn, standby))
	require.NoError(t, err)
	defer sconn.Close(ctx)
	var readConns int
	require.NoError(t, sconn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'profile-read'").Scan(&readConns))
	assert.Positive(t, readConns, "the read pool is connected to the standby")

	pgtest.PauseReplay(t, sconn)
	second := record("second")
	got, err := client.GetProfile(ctx, &profilev1.GetProfileRequest{Id: second})
	require.NoError(t, err, "GetProfile reads the primary")
	assert.Equal(t, second, got.GetProfile().GetId())
	assert.Equal(t, []string{first}, list(), "the list reads the replica, which has not replayed the second")
	dist, err := client.GetStabilityDistribution(ctx, &profilev1.GetStabilityDistributionRequest{})
	require.NoError(t, err)
	assert.Equal(t, int64(1), dist.GetTotalProfiles(), "so does the distribution")

	require.NoError(t, standby.Stop(ctx))
	before := reads("primary")
	assert.ElementsMatch(t, []string{first, second}, list(), "the primary answers")
	assert.Greater(t, reads("primary"), before)
}
