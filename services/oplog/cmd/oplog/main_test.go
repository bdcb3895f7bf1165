package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	"github.com/platforma/platforma/services/kit/app"
	"github.com/platforma/platforma/services/kit/apptest"
	"github.com/platforma/platforma/services/kit/pgtest"
	"github.com/platforma/platforma/services/oplog"
	"github.com/platforma/platforma/services/oplog/oplogclient"
)

// No migrations in the template: the test runs the binary's own migrate.
func TestMain(m *testing.M) { pgtest.Main(m) }

func TestBinaryMigratesAndIngests(t *testing.T) {
	t.Parallel()
	grpcService := oplogv1.OpLogService_ServiceDesc.ServiceName
	s := apptest.Start(t, oplog.Service(), grpcService)
	assert.Contains(t, apptest.ListServices(t, s.Conn), grpcService, "reflection lists the service")
	ctx := context.Background()

	// A plain generated client, as grpcurl or another language would send.
	stream, err := oplogv1.NewOpLogServiceClient(s.Conn).Ingest(ctx)
	require.NoError(t, err)
	require.NoError(t, stream.Send(&oplogv1.IngestRequest{Logs: []*oplogv1.OperationLog{{
		Id: uuid.NewString(), UserId: uuid.NewString(), OperationType: oplogv1.OperationType_OPERATION_TYPE_GET_STORES,
		Outcome: commonv1.Outcome_OUTCOME_SUCCESS, CreateTime: timestamppb.Now(),
	}, {Id: "bad"}}}))
	resp, err := stream.CloseAndRecv()
	require.NoError(t, err)
	assert.Equal(t, int64(1), resp.GetAccepted())
	require.Len(t, resp.GetRejected(), 1)
	assert.Equal(t, int64(1), resp.GetRejected()[0].GetIndex())

	// The SDK, as a worker uses it.
	client, err := oplogclient.New(s.Conn)
	require.NoError(t, err)
	for i := 0; i < 10; i++ {
		client.Log(ctx, oplogclient.Entry{UserID: uuid.NewString(), OperationType: oplogv1.OperationType_OPERATION_TYPE_CHECK_LOGIN, Outcome: commonv1.Outcome_OUTCOME_FAILED})
	}
	closeCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	require.NoError(t, client.Close(closeCtx))
	assert.Equal(t, int64(10), client.Stats().Acknowledged)

	// What was ingested can be queried.
	list, err := oplogv1.NewOpLogServiceClient(s.Conn).ListOperationLogs(ctx, &oplogv1.ListOperationLogsRequest{
		Outcome: commonv1.Outcome_OUTCOME_FAILED, PageSize: 100,
	})
	require.NoError(t, err)
	assert.Len(t, list.GetOperationLogs(), 10)
	st, err := oplogv1.NewOpLogServiceClient(s.Conn).GetOperationStats(ctx, &oplogv1.GetOperationStatsRequest{
		Since: timestamppb.New(time.Now().Add(-time.Hour)), Until: timestamppb.Now(),
	})
	require.NoError(t, err)
	require.Len(t, st.GetStats(), 2)
	assert.Equal(t, int64(10), st.GetStats()[0].GetTotal(), "CHECK_LOGIN comes first")
}

// The domain metrics count what was stored, once: retries are not counted
// again, rejected rows are counted by the field at fault, and client-chosen
// label values stop at their caps.
func TestMetricsCountStoredOperationsOnce(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t, oplog.Service(), oplogv1.OpLogService_ServiceDesc.ServiceName,
		"-metrics-max-error-types=1", "-metrics-max-proxies=2")
	client := oplogv1.NewOpLogServiceClient(s.Conn)
	user, now := uuid.NewString(), timestamppb.Now()
	log := func(op oplogv1.OperationType, outcome commonv1.Outcome, errorType, proxy string, ms int64, retries int32) *oplogv1.OperationLog {
		return &oplogv1.OperationLog{
			Id: uuid.NewString(), UserId: user, OperationType: op, Outcome: outcome, ErrorType: errorType,
			ProxyUsed: proxy, ExecutionTimeMs: &ms, RetryCount: retries, CreateTime: now,
		}
	}
	const reviews, reply = oplogv1.OperationType_OPERATION_TYPE_GET_REVIEWS, oplogv1.OperationType_OPERATION_TYPE_ADD_REPLY
	const ok, failed = commonv1.Outcome_OUTCOME_SUCCESS, commonv1.Outcome_OUTCOME_FAILED
	logs := []*oplogv1.OperationLog{
		log(reviews, ok, "", "p1", 300, 2),
		log(reviews, failed, "TIMEOUT", "p2", 7000, 0),
		log(reply, failed, "SELECTOR_NOT_FOUND", "p3", 100, 0), // beyond both caps
		log(reply, failed, "AUTH_REQUIRED", "", 100, 0),        // never folded: an alert reads it
	}
	bad := log(reviews, ok, "", "", 1, 0)
	bad.UserId = "not-a-uuid"
	for _, batch := range [][]*oplogv1.OperationLog{append(logs, bad), logs} { // then a retry
		stream, err := client.Ingest(context.Background())
		require.NoError(t, err)
		require.NoError(t, stream.Send(&oplogv1.IngestRequest{Logs: batch}))
		_, err = stream.CloseAndRecv()
		require.NoError(t, err)
	}

	page := apptest.Scrape(t, s.MetricsAddr)
	for series, want := range map[string]float64{
		`platforma_operation_outcomes_total{operation_type="GET_REVIEWS",outcome="SUCCESS"}`:      1,
		`platforma_operation_outcomes_total{operation_type="GET_REVIEWS",outcome="FAILED"}`:       1,
		`platforma_operation_outcomes_total{operation_type="ADD_REPLY",outcome="FAILED"}`:         2,
		`platforma_operation_outcomes_total{operation_type="CHECK_LOGIN",outcome="FAILED"}`:       0,
		`platforma_operation_errors_total{error_type="TIMEOUT",operation_type="GET_REVIEWS"}`:     1,
		`platforma_operation_errors_total{error_type="other",operation_type="ADD_REPLY"}`:         1,
		`platforma_operation_errors_total{error_type="AUTH_REQUIRED",operation_type="ADD_REPLY"}`: 1,
		`platforma_proxy_operations_total{outcome="SUCCESS",proxy="p1"}`:                          1,
		`platforma_proxy_operations_total{outcome="FAILED",proxy="p2"}`:                           1,
		`platforma_proxy_operations_total{outcome="FAILED",proxy="other"}`:                        1,
		`platforma_operation_duration_seconds_count{operation_type="GET_REVIEWS"}`:                2,
		`platforma_operation_duration_seconds_bucket{operation_type="GET_REVIEWS",le="5"}`:        1,
		`platforma_operation_retries_total{operation_type="GET_REVIEWS"}`:                         2,
		`platforma_ingest_rows_total{result="accepted"}`:                                          4,
		`platforma_ingest_rows_total{result="duplicate"}`:                                         4,
		`platforma_ingest_rows_total{result="rejected"}`:                                          1,
		`platforma_ingest_rejected_rows_total{reason="user_id"}`:                                  1,
		`platforma_ingest_batch_rows_sum`:                                                         8,
		`platforma_ingest_batch_failures_total`:                                                   0,
	} {
		got, found := apptest.MetricValue(page, series)
		assert.True(t, found, "%s exported", series)
		assert.Equal(t, want, got, series)
	}
	_, found := apptest.MetricValue(page, `platforma_proxy_operations_total{outcome="FAILED",proxy="p3"}`)
	assert.False(t, found, "the third proxy is folded into other")
}

// `serve` with a life-cycle database runs the daily life cycle: its
// metrics are registered and read the months at start-up.
func TestServeRunsTheLifeCycle(t *testing.T) {
	t.Parallel()
	first := apptest.Start(t, oplog.Service(), oplogv1.OpLogService_ServiceDesc.ServiceName) // migrated
	first.Stop()
	dsn := first.DatabaseURL
	s := apptest.Run(t, oplog.Service(), dsn, oplogv1.OpLogService_ServiceDesc.ServiceName,
		"-lifecycle-database-url="+dsn, "-lifecycle-store="+t.TempDir(), "-lifecycle-run-at=00:00")
	require.Eventually(t, func() bool {
		hot, ok := apptest.MetricValue(apptest.Scrape(t, s.MetricsAddr), `platforma_lifecycle_months{state="hot"}`)
		return ok && hot >= 2 // this month and the next, at least
	}, 20*time.Second, 50*time.Millisecond)
	page := apptest.Scrape(t, s.MetricsAddr)
	overdue, ok := apptest.MetricValue(page, "platforma_lifecycle_overdue_hot_months")
	assert.True(t, ok)
	assert.Zero(t, overdue)
	assert.Contains(t, s.Logs(), "lifecycle: next run")
}

// The CLI plans with the same engine, and a policy that would archive
// months still taking backfilled rows is refused before anything runs.
func TestLifecycleCommand(t *testing.T) {
	t.Parallel()
	migrated := apptest.Start(t, oplog.Service(), oplogv1.OpLogService_ServiceDesc.ServiceName)
	migrated.Stop()
	dsn := migrated.DatabaseURL
	run := func(args ...string) (int, string) {
		var out strings.Builder
		env := map[string]string{"LIFECYCLE_DATABASE_URL": dsn, "LIFECYCLE_STORE": t.TempDir()}
		code := app.Run(context.Background(), oplog.Service(), app.Env{Args: args, Getenv: func(k string) string { return env[k] }, Stderr: &out})
		return code, out.String()
	}
	code, out := run("lifecycle", "plan")
	assert.Equal(t, 0, code, out)
	assert.Contains(t, out, "purge-rollups")

	code, out = run("lifecycle", "plan", "-lifecycle-hot-window=720h")
	assert.Equal(t, 2, code)
	assert.Contains(t, out, "must be longer than BACKFILL_WINDOW")

	code, out = run("lifecycle", "verify", "-month=2025-13")
	assert.Equal(t, 2, code)
	assert.Contains(t, out, "-month must be YYYY-MM")

	code, out = run("serve", "-lifecycle-hot-window=720h")
	assert.Equal(t, 2, code, "serve refuses it too")
	assert.Contains(t, out, "must be longer than BACKFILL_WINDOW")

	code, out = run("lifecycle", "shred")
	assert.Equal(t, 2, code)
	assert.Contains(t, out, "unknown lifecycle command")
}
