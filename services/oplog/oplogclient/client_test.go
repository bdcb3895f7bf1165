package oplogclient_test

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	"github.com/platforma/platforma/migrations"
	"github.com/platforma/platforma/services/kit/apptest"
	"github.com/platforma/platforma/services/kit/db"
	"github.com/platforma/platforma/services/kit/pgtest"
	"github.com/platforma/platforma/services/kit/server"
	"github.com/platforma/platforma/services/oplog/internal/oplogsvc"
	"github.com/platforma/platforma/services/oplog/internal/wire"
	"github.com/platforma/platforma/services/oplog/oplogclient"
	"github.com/platforma/platforma/services/oplog/redact"
)

func TestMain(m *testing.M) { pgtest.Main(m, migrations.OpLog) }

func serverConfig() oplogsvc.Config { return oplogsvc.DefaultConfig() }

// wrap lets a test put something between the gRPC server and OpLogService.
type wrap func(oplogv1.OpLogServiceServer) oplogv1.OpLogServiceServer

// startServer serves OpLogService on pool and returns a connection to it.
func startServer(t *testing.T, pool *pgxpool.Pool, w wrap) *grpc.ClientConn {
	t.Helper()
	return apptest.ServeCodec(t, pool, wire.Codec{}, func(r server.Registrar) error {
		if w != nil {
			r.GRPC = wrapRegistrar{inner: r.GRPC, w: w}
		}
		return oplogsvc.Register(r, db.Pools{Primary: pool}, serverConfig())
	})
}

// wrapRegistrar registers OpLogService's implementation wrapped in w, and
// every other service as it is.
type wrapRegistrar struct {
	inner grpc.ServiceRegistrar
	w     wrap
}

func (r wrapRegistrar) RegisterService(desc *grpc.ServiceDesc, impl any) {
	if s, ok := impl.(oplogv1.OpLogServiceServer); ok && desc.ServiceName == oplogv1.OpLogService_ServiceDesc.ServiceName {
		impl = r.w(s)
	}
	r.inner.RegisterService(desc, impl)
}

func newClient(t *testing.T, conn grpc.ClientConnInterface, opts ...oplogclient.Option) *oplogclient.Client {
	t.Helper()
	c, err := oplogclient.New(conn, append([]oplogclient.Option{oplogclient.WithBackoff(5*time.Millisecond, 100*time.Millisecond)}, opts...)...)
	require.NoError(t, err)
	return c
}

func entry() oplogclient.Entry {
	return oplogclient.Entry{
		UserID:        uuid.NewString(),
		OperationType: oplogv1.OperationType_OPERATION_TYPE_GET_REVIEWS,
		Outcome:       commonv1.Outcome_OUTCOME_SUCCESS,
	}
}

func stored(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT count(*) FROM oplog.operation_logs`).Scan(&n))
	return n
}

func TestLogStampsRedactsAndDelivers(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	conn := startServer(t, pool, nil)
	// A word the server does not redact: what arrives redacted, the SDK did.
	client := newClient(t, conn, oplogclient.WithRedactKeys("shopSecret"))

	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:  trace.SpanID{1}, TraceFlags: trace.FlagsSampled,
	})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)
	payload := map[string]any{"shop_secret": "s3cr3t", "nested": []any{map[string]any{"SHOP-SECRET": 1}}, "shopId": "shop-1"}
	e := entry()
	e.RequestPayload = payload
	e.ErrorMessage = "bad\x00byte \xff and " + strings.Repeat("long ", 2000)
	before := time.Now()
	client.Log(ctx, e)
	payload["shopId"] = "changed after Log" // the SDK took a copy
	require.NoError(t, client.Close(context.Background()))
	after := time.Now()

	var id uuid.UUID
	var createTime time.Time
	var traceID, message string
	var request map[string]any
	require.NoError(t, pool.QueryRow(context.Background(),
		`SELECT id, create_time, trace_id, error_message, request_payload FROM oplog.operation_logs`).Scan(&id, &createTime, &traceID, &message, &request))
	assert.Equal(t, uuid.Version(7), id.Version())
	assert.False(t, createTime.Before(before.Truncate(time.Microsecond)) || createTime.After(after))
	assert.Equal(t, sc.TraceID().String(), traceID)
	assert.Equal(t, map[string]any{"shop_secret": redact.Placeholder, "nested": []any{map[string]any{"SHOP-SECRET": redact.Placeholder}}, "shopId": "shop-1"}, request)
	assert.LessOrEqual(t, len(message), 4096, "truncated to the server's limit instead of rejected")
	assert.True(t, strings.HasPrefix(message, "bad\uFFFDbyte \uFFFD and long"))

	st := client.Stats()
	assert.Equal(t, oplogclient.Stats{Enqueued: 1, Acknowledged: 1}, st)
}

// flaky aborts Ingest streams at random: before reading them, after reading
// them but before their rows are submitted, and after their rows are
// committed but before the answer (so the client resends rows that are
// already stored).
type flaky struct {
	oplogv1.UnimplementedOpLogServiceServer
	real                      oplogv1.OpLogServiceServer
	mu                        sync.Mutex
	rng                       *rand.Rand
	early, middle, late, good atomic.Int64
}

func (f *flaky) roll() float64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rng.Float64()
}

func (f *flaky) Ingest(stream grpc.ClientStreamingServer[oplogv1.IngestRequest, oplogv1.IngestResponse]) error {
	switch r := f.roll(); {
	case r < 0.15:
		f.early.Add(1)
		return status.Error(codes.Unavailable, "injected: stream dropped before reading")
	case r < 0.30:
		f.middle.Add(1)
		return f.real.Ingest(&failingRecv{stream})
	case r < 0.50:
		f.late.Add(1)
		return f.real.Ingest(&lostAnswer{stream})
	default:
		f.good.Add(1)
		return f.real.Ingest(stream)
	}
}

type failingRecv struct {
	grpc.ClientStreamingServer[oplogv1.IngestRequest, oplogv1.IngestResponse]
}

func (s *failingRecv) Recv() (*oplogv1.IngestRequest, error) {
	return nil, status.Error(codes.Unavailable, "injected: connection lost while reading")
}

type lostAnswer struct {
	grpc.ClientStreamingServer[oplogv1.IngestRequest, oplogv1.IngestResponse]
}

func (s *lostAnswer) SendAndClose(*oplogv1.IngestResponse) error {
	return status.Error(codes.Unavailable, "injected: connection lost before the answer")
}

func TestEveryRowStoredOnceWhileStreamsAbortAtRandom(t *testing.T) {
	t.Parallel()
	const rows = 100000
	pool := pgtest.NewPool(t)
	f := &flaky{rng: rand.New(rand.NewPCG(7, 8))}
	conn := startServer(t, pool, func(s oplogv1.OpLogServiceServer) oplogv1.OpLogServiceServer { f.real = s; return f })
	client := newClient(t, conn, oplogclient.WithBufferSize(rows), oplogclient.WithLinger(20*time.Millisecond))

	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < rows/8; i++ {
				client.Log(context.Background(), entry())
			}
		}()
	}
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	require.NoError(t, client.Close(ctx))

	st := client.Stats()
	assert.Equal(t, int64(rows), st.Enqueued)
	assert.Equal(t, int64(rows), st.Acknowledged, "every row acknowledged exactly once")
	assert.Zero(t, st.Dropped)
	assert.Zero(t, st.Failed)
	assert.Zero(t, st.InBuffer)
	assert.Positive(t, st.Retries)
	assert.Positive(t, st.Duplicates, "rows committed before a lost answer come back as duplicates")
	assert.Positive(t, f.early.Load())
	assert.Positive(t, f.middle.Load())
	assert.Positive(t, f.late.Load())

	var total, distinct int
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT count(*), count(DISTINCT id) FROM oplog.operation_logs`).Scan(&total, &distinct))
	assert.Equal(t, rows, total)
	assert.Equal(t, rows, distinct)
}

func TestServerDownBuffersBoundedThenDrains(t *testing.T) {
	t.Parallel()
	const buffer, logged = 5000, 20000
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := lis.Addr().String()
	require.NoError(t, lis.Close()) // nothing listens: the server is down

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 10 * time.Millisecond, Multiplier: 1.5, MaxDelay: 200 * time.Millisecond}}))
	require.NoError(t, err)
	defer conn.Close()
	client := newClient(t, conn, oplogclient.WithBufferSize(buffer), oplogclient.WithLinger(10*time.Millisecond))

	for i := 0; i < logged; i++ {
		client.Log(context.Background(), entry()) // returns at once: no I/O in Log
	}
	st := client.Stats()
	assert.Equal(t, int64(logged), st.Enqueued)
	assert.LessOrEqual(t, st.InBuffer, int64(buffer+2*500), "memory is bounded by the buffer and the batches in flight")
	assert.GreaterOrEqual(t, st.Dropped, int64(logged-buffer-2*500), "the oldest entries were dropped, and counted")
	assert.Equal(t, int64(logged), st.Dropped+st.InBuffer)
	require.Eventually(t, func() bool { return client.Stats().Retries > 0 }, 10*time.Second, 10*time.Millisecond)

	// The server comes up on that address: the buffer drains by itself.
	pool := pgtest.NewPool(t)
	stop := serveOn(t, addr, pool)
	defer stop()

	require.Eventually(t, func() bool { return client.Stats().InBuffer == 0 }, 60*time.Second, 20*time.Millisecond)
	st = client.Stats()
	assert.Equal(t, st.Enqueued-st.Dropped, st.Acknowledged)
	assert.Equal(t, int(st.Acknowledged), stored(t, pool))
	require.NoError(t, client.Close(context.Background()))
}

func TestCloseReportsWhatItCouldNotDeliver(t *testing.T) {
	t.Parallel()
	conn, err := grpc.NewClient("127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	client := newClient(t, conn)
	for i := 0; i < 10; i++ {
		client.Log(context.Background(), entry())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err = client.Close(ctx)
	require.Error(t, err)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	st := client.Stats()
	assert.Equal(t, int64(10), st.Failed)
	assert.Zero(t, st.InBuffer)

	client.Log(context.Background(), entry())
	assert.Equal(t, int64(1), client.Stats().Dropped, "Log after Close is counted, not sent")
}

func TestRejectedEntriesAreReportedNotRetried(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	conn := startServer(t, pool, nil)
	var mu sync.Mutex
	var rejected []oplogclient.Rejected
	client := newClient(t, conn, oplogclient.OnRejected(func(r oplogclient.Rejected) {
		mu.Lock()
		defer mu.Unlock()
		rejected = append(rejected, r)
	}))
	bad := entry()
	bad.UserID = "not-a-uuid"
	client.Log(context.Background(), bad)
	client.Log(context.Background(), entry())
	require.NoError(t, client.Close(context.Background()))

	require.Len(t, rejected, 1)
	assert.Equal(t, "user_id", rejected[0].Field)
	assert.Equal(t, oplogv1.OperationType_OPERATION_TYPE_GET_REVIEWS, rejected[0].OperationType)
	st := client.Stats()
	assert.Equal(t, int64(1), st.Rejected)
	assert.Equal(t, int64(1), st.Acknowledged)
	assert.Zero(t, st.Retries)
	assert.Equal(t, 1, stored(t, pool))
}

func TestTrackLogsOutcomeTypeAndDuration(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	conn := startServer(t, pool, nil)
	client := newClient(t, conn)
	ctx := context.Background()

	err := client.Track(ctx, entry(), func(context.Context) error {
		time.Sleep(20 * time.Millisecond)
		return nil
	})
	require.NoError(t, err)
	code := int32(404)
	want := &oplogclient.Error{Type: "SELECTOR_NOT_FOUND", Code: &code, Err: errors.New("no .reply-button")}
	err = client.Track(ctx, entry(), func(context.Context) error { return want })
	assert.Same(t, want, err, "the operation's error is returned unchanged")
	timeoutCtx, cancel := context.WithTimeout(ctx, time.Millisecond)
	defer cancel()
	_ = client.Track(timeoutCtx, entry(), func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
	require.NoError(t, client.Close(ctx))

	rows, err := pool.Query(ctx, `SELECT outcome, coalesce(error_type, ''), coalesce(error_code, 0), coalesce(error_message, ''), execution_time_ms
		FROM oplog.operation_logs ORDER BY id`)
	require.NoError(t, err)
	type got struct {
		Outcome int16
		Type    string
		Code    int32
		Message string
		Ms      int64
	}
	var all []got
	for rows.Next() {
		var g got
		require.NoError(t, rows.Scan(&g.Outcome, &g.Type, &g.Code, &g.Message, &g.Ms))
		all = append(all, g)
	}
	require.Len(t, all, 3)
	assert.Equal(t, int16(1), all[0].Outcome)
	assert.GreaterOrEqual(t, all[0].Ms, int64(20))
	assert.Equal(t, got{Outcome: 2, Type: "SELECTOR_NOT_FOUND", Code: 404, Message: "no .reply-button", Ms: all[1].Ms}, all[1])
	assert.Equal(t, "TIMEOUT", all[2].Type)
}

func TestErrorType(t *testing.T) {
	t.Parallel()
	for err, want := range map[error]string{
		nil: "",
		oplogclient.Errorf("RATE_LIMIT", "429 from %s", "shop"):                  "RATE_LIMIT",
		errors.Join(errors.New("x"), oplogclient.Errorf("AUTH_REQUIRED", "2FA")): "AUTH_REQUIRED",
		context.DeadlineExceeded:        "TIMEOUT",
		context.Canceled:                "CANCELED",
		io.ErrUnexpectedEOF:             "UNKNOWN",
		&oplogclient.Error{Err: io.EOF}: "UNKNOWN",
	} {
		assert.Equal(t, want, oplogclient.ErrorType(err), "%v", err)
	}
}
