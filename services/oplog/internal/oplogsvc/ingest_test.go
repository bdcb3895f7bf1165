package oplogsvc_test

import (
	"context"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	"github.com/platforma/platforma/migrations"
	"github.com/platforma/platforma/services/kit/apptest"
	"github.com/platforma/platforma/services/kit/db"
	"github.com/platforma/platforma/services/kit/migrate"
	"github.com/platforma/platforma/services/kit/pgtest"
	"github.com/platforma/platforma/services/kit/server"
	"github.com/platforma/platforma/services/oplog/internal/oplogsvc"
	"github.com/platforma/platforma/services/oplog/internal/wire"
	"github.com/platforma/platforma/services/oplog/redact"
)

func TestMain(m *testing.M) { pgtest.Main(m, migrations.OpLog) }

// testConfig signs page tokens with apptest's key, so tests can sign
// tokens too.
func testConfig() oplogsvc.Config {
	cfg := oplogsvc.DefaultConfig()
	cfg.PageTokens = apptest.PageTokens()
	return cfg
}

// serve starts OpLogService on pool with cfg and the clock now.
func serve(t *testing.T, pool *pgxpool.Pool, cfg oplogsvc.Config, now func() time.Time) oplogv1.OpLogServiceClient {
	t.Helper()
	cfg.Now = now
	conn := apptest.ServeCodec(t, pool, wire.Codec{}, func(r server.Registrar) error {
		return oplogsvc.Register(r, db.Pools{Primary: pool}, cfg)
	})
	return oplogv1.NewOpLogServiceClient(conn)
}

func row(at time.Time) *oplogv1.OperationLog {
	return &oplogv1.OperationLog{
		Id:            uuid.Must(uuid.NewV7()).String(),
		UserId:        uuid.NewString(),
		OperationType: oplogv1.OperationType_OPERATION_TYPE_CHECK_LOGIN,
		Outcome:       commonv1.Outcome_OUTCOME_SUCCESS,
		CreateTime:    timestamppb.New(at),
	}
}

// send opens one stream, sends each message and returns the response.
func send(ctx context.Context, client oplogv1.OpLogServiceClient, messages ...[]*oplogv1.OperationLog) (*oplogv1.IngestResponse, error) {
	stream, err := client.Ingest(ctx)
	if err != nil {
		return nil, err
	}
	for _, logs := range messages {
		if err := stream.Send(&oplogv1.IngestRequest{Logs: logs}); err != nil {
			break // the status comes with CloseAndRecv
		}
	}
	return stream.CloseAndRecv()
}

func count(t *testing.T, pool *pgxpool.Pool, where string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT count(*) FROM oplog.operation_logs `+where, args...).Scan(&n))
	return n
}

func TestIngestStoresEveryFieldAndRedacts(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	client := serve(t, pool, testConfig(), time.Now)
	l := row(time.Now().Add(-time.Minute))
	l.PlatformAccountId, l.ResourceId = "acct-1", "shop-9"
	l.Outcome, l.ErrorCode, l.ErrorType = commonv1.Outcome_OUTCOME_FAILED, ptr(int32(401)), "AUTH_REQUIRED"
	l.ErrorMessage, l.ExecutionTimeMs, l.RetryCount = "login page asked for 2FA", ptr(int64(5123)), 2
	l.AuthTypeDetected, l.SessionRefreshed = commonv1.AuthType_AUTH_TYPE_TWO_FACTOR, true
	l.ProxyUsed, l.UserAgent, l.TraceId = "proxy-eu-3", "Mozilla/5.0", "4bf92f3577b34da6a3ce929d0e0e4736"
	var err error
	l.RequestPayload, err = structpb.NewStruct(map[string]any{"username": "owner", "Password": "hunter2", "form": map[string]any{"otp": "123456"}})
	require.NoError(t, err)
	l.ResponseSummary, err = structpb.NewStruct(map[string]any{"status": 401.0})
	require.NoError(t, err)

	resp, err := send(context.Background(), client, []*oplogv1.OperationLog{l})
	require.NoError(t, err)
	assert.Equal(t, int64(1), resp.GetAccepted())
	assert.Empty(t, resp.GetRejected())

	var (
		account, resource, errType, msg, proxy, agent, trace string
		errCode                                              int32
		ms                                                   int64
		retries                                              int32
		auth, op, outcome                                    int16
		refreshed                                            bool
		request, response                                    map[string]any
	)
	require.NoError(t, pool.QueryRow(context.Background(), `
		SELECT platform_account_id, resource_id, error_type, error_message, proxy_used, user_agent, trace_id,
			error_code, execution_time_ms, retry_count, auth_type_detected, operation_type, outcome, session_refreshed,
			request_payload, response_summary
		FROM oplog.operation_logs WHERE id = $1`, l.GetId()).Scan(
		&account, &resource, &errType, &msg, &proxy, &agent, &trace, &errCode, &ms, &retries, &auth, &op, &outcome, &refreshed,
		&request, &response))
	assert.Equal(t, []any{"acct-1", "shop-9", "AUTH_REQUIRED", "login page asked for 2FA", "proxy-eu-3", "Mozilla/5.0", l.GetTraceId()},
		[]any{account, resource, errType, msg, proxy, agent, trace})
	assert.Equal(t, []any{int32(401), int64(5123), int32(2), int16(1), int16(1), int16(2), true},
		[]any{errCode, ms, retries, auth, op, outcome, refreshed})
	assert.Equal(t, map[string]any{"username": "owner", "Password": redact.Placeholder, "form": map[string]any{"otp": redact.Placeholder}}, request,
		"redacted again on the server, whatever the client did")
	assert.Equal(t, map[string]any{"status": 401.0}, response)
}

func ptr[T any](v T) *T { return &v }

// A stream of 1,000 rows, every tenth hostile: every good row is stored,
// each bad one is reported with its index in the stream and its field.
func TestHostileRowsAreRejectedAlone(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	client := serve(t, pool, testConfig(), time.Now)
	now := time.Now()
	hostile := []struct {
		field  string
		mutate func(*oplogv1.OperationLog)
	}{
		{"id", func(l *oplogv1.OperationLog) { l.Id = "1; DROP TABLE oplog.operation_logs" }},
		{"user_id", func(l *oplogv1.OperationLog) { l.UserId = "" }},
		{"error_message", func(l *oplogv1.OperationLog) { l.ErrorMessage = "nul\x00byte" }},
		{"request_payload", func(l *oplogv1.OperationLog) {
			l.RequestPayload = &structpb.Struct{Fields: map[string]*structpb.Value{"v": structpb.NewStringValue("\u0000")}}
		}},
		{"response_summary", func(l *oplogv1.OperationLog) {
			l.ResponseSummary = &structpb.Struct{Fields: map[string]*structpb.Value{"v": structpb.NewNumberValue(math.Inf(-1))}}
		}},
		{"user_agent", func(l *oplogv1.OperationLog) { l.UserAgent = strings.Repeat("A", 100000) }},
		{"operation_type", func(l *oplogv1.OperationLog) { l.OperationType = 1234 }},
		{"create_time", func(l *oplogv1.OperationLog) { l.CreateTime = timestamppb.New(now.AddDate(-1, 0, 0)) }},
		{"create_time", func(l *oplogv1.OperationLog) { l.CreateTime = timestamppb.New(now.Add(time.Hour)) }},
		{"request_payload", func(l *oplogv1.OperationLog) {
			s := &structpb.Struct{Fields: map[string]*structpb.Value{}}
			for i := 0; i < 40; i++ {
				s = &structpb.Struct{Fields: map[string]*structpb.Value{"d": structpb.NewStructValue(s)}}
			}
			l.RequestPayload = s
		}},
	}
	var logs []*oplogv1.OperationLog
	want := map[int64]string{}
	var good []string
	for i := 0; i < 1000; i++ {
		l := row(now.Add(-time.Duration(i) * time.Second))
		if i%10 == 3 {
			h := hostile[(i/10)%len(hostile)]
			h.mutate(l)
			want[int64(i)] = h.field
		} else {
			good = append(good, l.GetId())
		}
		logs = append(logs, l)
	}
	// Three messages, so indexes must continue across them.
	resp, err := send(context.Background(), client, logs[:250], logs[250:600], logs[600:])
	require.NoError(t, err)
	assert.Equal(t, int64(900), resp.GetAccepted())
	got := map[int64]string{}
	for _, r := range resp.GetRejected() {
		got[r.GetIndex()] = r.GetField()
		assert.NotEmpty(t, r.GetReason())
		assert.Equal(t, logs[r.GetIndex()].GetId(), r.GetId(), "the rejection carries the row's id as sent")
	}
	assert.Equal(t, want, got)
	assert.Equal(t, 900, count(t, pool, `WHERE id = ANY($1::uuid[])`, good))
	assert.Equal(t, 900, count(t, pool, ``))
}

func TestResentRowsAreCountedAsDuplicates(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	client := serve(t, pool, testConfig(), time.Now)
	ctx := context.Background()
	var logs []*oplogv1.OperationLog
	for i := 0; i < 300; i++ {
		logs = append(logs, row(time.Now().Add(-time.Duration(i)*time.Millisecond)))
	}
	resp, err := send(ctx, client, logs[:200])
	require.NoError(t, err)
	assert.Equal(t, int64(200), resp.GetAccepted())

	// The first 200 again, the last 100 new, and 50 repeated inside the stream.
	resp, err = send(ctx, client, logs, logs[250:])
	require.NoError(t, err)
	assert.Equal(t, int64(100), resp.GetAccepted())
	assert.Equal(t, int64(250), resp.GetDuplicates())

	// Eight streams racing with the same rows: stored once, all acknowledged.
	fresh := make([]*oplogv1.OperationLog, 500)
	for i := range fresh {
		fresh[i] = row(time.Now().Add(-time.Duration(i) * time.Millisecond))
	}
	var accepted, duplicates atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := send(ctx, client, fresh)
			if assert.NoError(t, err) {
				accepted.Add(resp.GetAccepted())
				duplicates.Add(resp.GetDuplicates())
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, int64(500), accepted.Load())
	assert.Equal(t, int64(7*500), duplicates.Load())
	assert.Equal(t, 800, count(t, pool, ``))
}

func TestRowsLandInTheirMonthsPartition(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	// The server believes it is early November: late October is in the window.
	clock := time.Date(2026, 11, 3, 9, 0, 0, 0, time.UTC)
	client := serve(t, pool, testConfig(), func() time.Time { return clock })
	at := func(s string) *oplogv1.OperationLog {
		ts, err := time.Parse(time.RFC3339Nano, s)
		require.NoError(t, err)
		return row(ts)
	}
	lastOfOctober := at("2026-10-31T23:59:59.999999Z")
	firstOfNovember := at("2026-11-01T00:00:00Z")
	inSeptember := at("2026-09-30T12:00:00Z") // 33 days before the clock: inside the window
	// A Korean-time row just after midnight on 1 November is still October in UTC.
	koreanMidnight := at("2026-11-01T00:30:00+09:00")
	tooOld := at("2026-09-28T08:59:59Z")
	tooNew := at("2026-11-03T09:05:01Z")
	resp, err := send(context.Background(), client, []*oplogv1.OperationLog{lastOfOctober, firstOfNovember, inSeptember, koreanMidnight, tooOld, tooNew})
	require.NoError(t, err)
	assert.Equal(t, int64(4), resp.GetAccepted())
	require.Len(t, resp.GetRejected(), 2)
	assert.Equal(t, []int64{4, 5}, []int64{resp.GetRejected()[0].GetIndex(), resp.GetRejected()[1].GetIndex()})
	assert.Equal(t, "create_time", resp.GetRejected()[0].GetField())

	partition := func(l *oplogv1.OperationLog) string {
		var name string
		require.NoError(t, pool.QueryRow(context.Background(),
			`SELECT tableoid::regclass::text FROM oplog.operation_logs WHERE id = $1`, l.GetId()).Scan(&name))
		return name
	}
	assert.Equal(t, "oplog.operation_logs_p202610", partition(lastOfOctober))
	assert.Equal(t, "oplog.operation_logs_p202611", partition(firstOfNovember))
	assert.Equal(t, "oplog.operation_logs_p202609", partition(inSeptember))
	assert.Equal(t, "oplog.operation_logs_p202610", partition(koreanMidnight))

	// Maintenance creates the window and the month ahead in the background,
	// so the month ahead may appear a moment after the rows were acknowledged.
	want := []string{"operation_logs_p202609", "operation_logs_p202610", "operation_logs_p202611", "operation_logs_p202612"}
	assert.EventuallyWithT(t, func(c *assert.CollectT) {
		var parts []string
		rows, err := pool.Query(context.Background(), `
			SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
			WHERE i.inhparent = 'oplog.operation_logs'::regclass ORDER BY 1`)
		if !assert.NoError(c, err) {
			return
		}
		for rows.Next() {
			var n string
			assert.NoError(c, rows.Scan(&n))
			parts = append(parts, n)
		}
		assert.NoError(c, rows.Err())
		assert.Subset(c, parts, want)
	}, 10*time.Second, 20*time.Millisecond)
}

func TestStreamLimits(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	client := serve(t, pool, testConfig(), time.Now)
	big := make([]*oplogv1.OperationLog, wire.MaxRowsPerMessage+1)
	for i := range big {
		big[i] = row(time.Now())
	}
	_, err := send(context.Background(), client, big)
	assert.Equal(t, []string{"logs"}, apptest.ViolatedFields(t, err))

	var messages [][]*oplogv1.OperationLog
	for i := 0; i <= wire.MaxRowsPerStream/wire.MaxRowsPerMessage; i++ {
		messages = append(messages, big[:wire.MaxRowsPerMessage])
	}
	_, err = send(context.Background(), client, messages...)
	assert.Equal(t, []string{"logs"}, apptest.ViolatedFields(t, err))

	resp, err := send(context.Background(), client)
	require.NoError(t, err, "an empty stream is fine")
	assert.Zero(t, resp.GetAccepted())
}

// When the database cannot keep up, streams wait for buffer space and then
// get RESOURCE_EXHAUSTED with a retry delay; nothing is acknowledged that
// is not committed, and everything goes through once the database is back.
//
// Not parallel: it asserts what happened within a fixed second, which
// other tests' load could stretch.
func TestSlowDatabaseBacksPressureOntoStreams(t *testing.T) {
	pool := pgtest.NewPool(t)
	cfg := testConfig()
	cfg.BufferMiB, cfg.BufferWait = 1, 300*time.Millisecond
	client := serve(t, pool, cfg, time.Now)
	ctx := context.Background()
	_, err := send(ctx, client, []*oplogv1.OperationLog{row(time.Now())}) // partitions exist
	require.NoError(t, err)

	// Hold the table: writers block on it as on a database at full load.
	lock, err := pool.Begin(ctx)
	require.NoError(t, err)
	_, err = lock.Exec(ctx, `LOCK TABLE oplog.operation_logs IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)

	payload, err := structpb.NewStruct(map[string]any{"blob": strings.Repeat("x", 12000)})
	require.NoError(t, err)
	var sent [][]*oplogv1.OperationLog
	var busy, other atomic.Int64
	var wg sync.WaitGroup
	for s := 0; s < 12; s++ {
		logs := make([]*oplogv1.OperationLog, 20) // ~250 KB a stream: four fill the buffer
		for i := range logs {
			logs[i] = row(time.Now())
			logs[i].RequestPayload = payload
		}
		sent = append(sent, logs)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := send(ctx, client, logs)
			switch st := status.Convert(err); st.Code() {
			case codes.ResourceExhausted:
				busy.Add(1)
				var retry *errdetails.RetryInfo
				for _, d := range st.Details() {
					if r, ok := d.(*errdetails.RetryInfo); ok {
						retry = r
					}
				}
				assert.NotNil(t, retry, "RESOURCE_EXHAUSTED says when to retry")
			case codes.OK:
				other.Add(1) // acknowledged: must have been committed, checked below
			default:
				t.Errorf("unexpected %v", err)
			}
		}()
	}
	time.Sleep(time.Second)
	assert.Positive(t, busy.Load(), "some streams were told to back off")
	assert.Zero(t, other.Load(), "nothing is acknowledged while nothing can commit")
	require.NoError(t, lock.Rollback(ctx))
	wg.Wait()

	// Everything resent once the database is back is stored exactly once.
	for _, logs := range sent {
		resp, err := send(ctx, client, logs)
		require.NoError(t, err)
		assert.Equal(t, int64(len(logs)), resp.GetAccepted()+resp.GetDuplicates())
	}
	assert.Equal(t, 1+12*20, count(t, pool, ``))
}

// Streams that open and send nothing hold no decode slot: with more idle
// streams than slots, a producer is still answered at once.
func TestIdleStreamsDoNotStarveProducers(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	cfg := testConfig()
	cfg.ReceiveSlots, cfg.BufferWait = 2, 2*time.Second
	client := serve(t, pool, cfg, time.Now)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := 0; i < 4*cfg.ReceiveSlots; i++ {
		idle, err := client.Ingest(ctx)
		require.NoError(t, err)
		// One empty message, then silence: the stream waits for its next.
		require.NoError(t, idle.Send(&oplogv1.IngestRequest{}))
	}
	for i := 0; i < 4*cfg.ReceiveSlots; i++ {
		_, err := client.Ingest(ctx) // never sends a single message
		require.NoError(t, err)
	}
	time.Sleep(100 * time.Millisecond) // the idle streams reach the server

	for i := 0; i < 3; i++ {
		resp, err := send(context.Background(), client, []*oplogv1.OperationLog{row(time.Now()), row(time.Now())})
		require.NoError(t, err, "a producer is served while idle streams wait")
		assert.Equal(t, int64(2), resp.GetAccepted())
	}
}

// Each way of being saturated names its own cause.
func TestSaturationNamesItsCause(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	cfg := testConfig()
	cfg.BufferMiB, cfg.BufferWait = 1, 200*time.Millisecond
	client := serve(t, pool, cfg, time.Now)
	ctx := context.Background()
	_, err := send(ctx, client, []*oplogv1.OperationLog{row(time.Now())})
	require.NoError(t, err)
	lock, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = lock.Rollback(ctx) }()
	_, err = lock.Exec(ctx, `LOCK TABLE oplog.operation_logs IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)
	payload, err := structpb.NewStruct(map[string]any{"blob": strings.Repeat("x", 12000)})
	require.NoError(t, err)
	var msg string
	for i := 0; i < 20 && msg == ""; i++ {
		logs := make([]*oplogv1.OperationLog, 40)
		for j := range logs {
			logs[j] = row(time.Now())
			logs[j].RequestPayload = payload
		}
		go func() { _, _ = send(ctx, client, logs) }() // fills the buffer, waits for the commit
		callCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := send(callCtx, client, logs)
		cancel()
		if status.Code(err) == codes.ResourceExhausted {
			msg = status.Convert(err).Message()
		}
	}
	require.NotEmpty(t, msg, "a full buffer is reported")
	assert.Contains(t, msg, "database is slower than producers")
	assert.NotContains(t, msg, "decode slot")
}

func TestDatabaseDownFailsStreamsUntilItReturns(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cluster := pgtest.StartCluster(t)
	// The service's own database, migrated, on a cluster the test can stop.
	admin, err := pgxpool.New(ctx, cluster.DSN("postgres"))
	require.NoError(t, err)
	_, err = admin.Exec(ctx, `CREATE DATABASE oplog_down`)
	require.NoError(t, err)
	admin.Close()
	dsn := cluster.DSN("oplog_down")
	_, err = migrate.Up(ctx, dsn, migrations.OpLog, nil)
	require.NoError(t, err)
	pool, err := pgxpool.New(ctx, dsn+" connect_timeout=1")
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	client := serve(t, pool, testConfig(), time.Now)

	logs := []*oplogv1.OperationLog{row(time.Now()), row(time.Now())}
	_, err = send(ctx, client, logs)
	require.NoError(t, err)

	require.NoError(t, cluster.Stop(ctx))
	more := []*oplogv1.OperationLog{row(time.Now()), row(time.Now())}
	_, err = send(ctx, client, more)
	assert.Equal(t, codes.Unavailable, status.Code(err), "%v", err)

	require.NoError(t, cluster.Start(ctx))
	require.Eventually(t, func() bool {
		resp, err := send(ctx, client, more)
		return err == nil && resp.GetAccepted() == 2
	}, 20*time.Second, 100*time.Millisecond, "the service recovers by itself")
	assert.Equal(t, 4, count(t, pool, ``))
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	require.NoError(t, cfg.Validate())
	cfg.Writers, cfg.BatchRows, cfg.Backfill = 0, 0, time.Minute
	err := cfg.Validate()
	for _, name := range []string{"INGEST_WRITERS", "INGEST_BATCH_ROWS", "BACKFILL_WINDOW"} {
		assert.ErrorContains(t, err, name)
	}
}

// With a ProfileAddr, the rows' transaction also queues their login
// outcomes: new login rows with an account only, once however often the
// stream is resent, and with the trace and span that performed them.
func TestIngestQueuesNewLoginsInTheOutbox(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	cfg := testConfig()
	// The relay runs, but nothing answers there (nor could it check the
	// relay's credentials): the outbox keeps what is queued.
	cfg.ProfileAddr = "localhost:1"
	client := serve(t, pool, cfg, time.Now)
	now := time.Now()

	first := row(now.Add(-time.Minute))
	first.PlatformAccountId, first.AuthTypeDetected = "acct-1", commonv1.AuthType_AUTH_TYPE_TWO_FACTOR
	first.TraceId, first.SpanId = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	resp, err := send(context.Background(), client, []*oplogv1.OperationLog{first})
	require.NoError(t, err)
	require.Equal(t, int64(1), resp.GetAccepted())

	second := row(now)
	second.PlatformAccountId, second.Outcome = "acct-1", commonv1.Outcome_OUTCOME_FAILED
	second.OperationType = oplogv1.OperationType_OPERATION_TYPE_VALIDATE_SESSION
	noAccount := row(now)
	scrape := row(now)
	scrape.PlatformAccountId, scrape.OperationType = "acct-1", oplogv1.OperationType_OPERATION_TYPE_GET_REVIEWS
	// first again: the batch takes the duplicate-aware path.
	resp, err = send(context.Background(), client, []*oplogv1.OperationLog{first, second, noAccount, scrape})
	require.NoError(t, err)
	require.Equal(t, []int64{3, 1}, []int64{resp.GetAccepted(), resp.GetDuplicates()})

	rows, err := pool.Query(context.Background(), `
		SELECT event_id::text, platform_account_id, success, auth_type, occurred_at, coalesce(trace_id, ''), coalesce(span_id, '')
		FROM oplog.login_outbox ORDER BY seq`)
	require.NoError(t, err)
	type entry struct {
		EventID, Account string
		Success          bool
		AuthType         int16
		OccurredAt       time.Time
		TraceID, SpanID  string
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[entry])
	require.NoError(t, err)
	for i := range got {
		got[i].OccurredAt = got[i].OccurredAt.UTC()
	}
	us := func(ts *timestamppb.Timestamp) time.Time { return ts.AsTime().Truncate(time.Microsecond) }
	assert.Equal(t, []entry{
		{first.GetId(), "acct-1", true, 1, us(first.GetCreateTime()), first.GetTraceId(), first.GetSpanId()},
		{second.GetId(), "acct-1", false, 0, us(second.GetCreateTime()), "", ""},
	}, got)
}

func TestIngestWithoutProfileAddrQueuesNothing(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	client := serve(t, pool, testConfig(), time.Now)
	l := row(time.Now())
	l.PlatformAccountId = "acct-1"
	_, err := send(context.Background(), client, []*oplogv1.OperationLog{l})
	require.NoError(t, err)
	var n int
	require.NoError(t, pool.QueryRow(context.Background(), "SELECT count(*) FROM oplog.login_outbox").Scan(&n))
	assert.Zero(t, n)
}
