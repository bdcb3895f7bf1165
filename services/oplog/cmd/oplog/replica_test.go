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
	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	"github.com/platforma/platforma/services/kit/apptest"
	"github.com/platforma/platforma/services/kit/pgtest"
	"github.com/platforma/platforma/services/oplog"
)

// reads is platforma_db_reads_total of target on s's /metrics.
func reads(t *testing.T, s *apptest.Service, target string) float64 {
	t.Helper()
	v, _ := apptest.MetricValue(apptest.Scrape(t, s.MetricsAddr), `platforma_db_reads_total{target="`+target+`"}`)
	return v
}

// The query RPCs read from a streaming replica: what it has not replayed
// yet they do not see while it is within the bound, and a service with a
// tighter bound reads the primary instead; page tokens carry over from
// one to the other. With the standby stopped the queries still answer,
// from the primary.
func TestQueryRPCsReadFromTheReplicaWithinTheBound(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	svc := oplog.Service()
	grpcService := oplogv1.OpLogService_ServiceDesc.ServiceName
	dsn := apptest.Migrate(t, svc)
	standby := pgtest.StartStandby(t)
	replica := "-read-database-url=" + apptest.ReplicaURL(t, svc, dsn, standby)
	keys := "-page-token-keys=" + apptest.PageTokenKeys
	loose := apptest.Run(t, svc, dsn, grpcService, replica, "-read-max-lag=1h", keys)
	tight := apptest.Run(t, oplog.Service(), dsn, grpcService, replica, "-read-max-lag=1s", keys)
	looseClient, tightClient := oplogv1.NewOpLogServiceClient(loose.Conn), oplogv1.NewOpLogServiceClient(tight.Conn)

	user := uuid.NewString()
	ingest := func(at time.Time) string {
		t.Helper()
		id := uuid.NewString()
		stream, err := looseClient.Ingest(ctx)
		require.NoError(t, err)
		require.NoError(t, stream.Send(&oplogv1.IngestRequest{Logs: []*oplogv1.OperationLog{{
			Id: id, UserId: user, OperationType: oplogv1.OperationType_OPERATION_TYPE_GET_STORES,
			Outcome: commonv1.Outcome_OUTCOME_SUCCESS, CreateTime: timestamppb.New(at),
		}}}))
		resp, err := stream.CloseAndRecv()
		require.NoError(t, err)
		require.Equal(t, int64(1), resp.GetAccepted())
		return id
	}
	list := func(c oplogv1.OpLogServiceClient, pageSize int32, token string) (ids []string, next string) {
		t.Helper()
		resp, err := c.ListOperationLogs(ctx, &oplogv1.ListOperationLogsRequest{UserId: user, PageSize: pageSize, PageToken: token})
		require.NoError(t, err)
		for _, l := range resp.GetOperationLogs() {
			ids = append(ids, l.GetId())
		}
		return ids, resp.GetNextPageToken()
	}
	now := time.Now()
	first, second := ingest(now.Add(-2*time.Minute)), ingest(now.Add(-time.Minute))

	// Replayed, and read from the replica once its first check passed.
	require.Eventually(t, func() bool {
		before := reads(t, loose, "replica")
		ids, _ := list(looseClient, 10, "")
		return len(ids) == 2 && reads(t, loose, "replica") > before
	}, 30*time.Second, 50*time.Millisecond, "the replica never served both rows")
	sconn, err := pgx.Connect(ctx, pgtest.OnStandby(dsn, standby))
	require.NoError(t, err)
	defer sconn.Close(ctx)
	var readConns int
	require.NoError(t, sconn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'oplog-read'").Scan(&readConns))
	assert.Positive(t, readConns, "the read pool is connected to the standby")

	// Replay paused: a fresh write is not on the replica, and the loose
	// service, whose bound it is within, does not see it.
	pgtest.PauseReplay(t, sconn)
	third := ingest(now)
	before := reads(t, loose, "replica")
	ids, token := list(looseClient, 1, "")
	assert.Equal(t, []string{second}, ids, "the newest row the replica has")
	require.NotEmpty(t, token)
	stats, err := looseClient.GetOperationStats(ctx, &oplogv1.GetOperationStatsRequest{
		Since: timestamppb.New(now.Add(-time.Hour)), Until: timestamppb.New(now.Add(time.Minute)),
	})
	require.NoError(t, err)
	require.Len(t, stats.GetStats(), 1)
	assert.Equal(t, int64(2), stats.GetStats()[0].GetTotal(), "the statistics of the replica too")
	assert.GreaterOrEqual(t, reads(t, loose, "replica")-before, 3.0, "the list, its missing months and the statistics")

	// The tight service finds the replica more than a second behind and
	// reads from the primary, which has the write; the loose service's
	// page token works there.
	require.Eventually(t, func() bool {
		ids, _ := list(tightClient, 10, "")
		return len(ids) == 3 && ids[0] == third
	}, 30*time.Second, 50*time.Millisecond, "the primary never served the third row")
	assert.Positive(t, reads(t, tight, "primary"))
	lag, ok := apptest.MetricValue(apptest.Scrape(t, tight.MetricsAddr), "platforma_db_replica_lag_seconds")
	assert.True(t, ok)
	assert.Greater(t, lag, 1.0)
	ids, _ = list(tightClient, 1, token)
	assert.Equal(t, []string{first}, ids, "page 2 from the primary after page 1 from the replica")

	// The standby stopped: the loose service answers from the primary.
	require.NoError(t, standby.Stop(ctx))
	before = reads(t, loose, "primary")
	ids, _ = list(looseClient, 10, "")
	assert.Equal(t, []string{third, second, first}, ids)
	assert.Greater(t, reads(t, loose, "primary"), before)
	assert.Eventually(t, func() bool {
		up, ok := apptest.MetricValue(apptest.Scrape(t, loose.MetricsAddr), "platforma_db_replica_up")
		return ok && up == 0
	}, 10*time.Second, 50*time.Millisecond, "the replica's check fails")
}
