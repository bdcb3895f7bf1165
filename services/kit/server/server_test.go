package server_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"

	"github.com/platforma/platforma/services/kit/pgtest"
	"github.com/platforma/platforma/services/kit/server"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const testService = "grpc.testing.TestService"

// testServer is a service whose UnaryCall does whatever the test says,
// whose StreamingInputCall sums the payload sizes of a client stream and
// whose StreamingOutputCall answers once with its request's payload.
type testServer struct {
	testgrpc.UnimplementedTestServiceServer
	unary func(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error)
	// streamStarted receives once per stream, after its first message.
	streamStarted chan struct{}
	// inputDelay is how long StreamingInputCall works on each message
	// before asking for the next.
	inputDelay time.Duration
	// calls counts the calls that reached a handler.
	calls atomic.Int32
}

func (s *testServer) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	s.calls.Add(1)
	if s.unary == nil {
		return &testgrpc.SimpleResponse{}, nil
	}
	return s.unary(ctx, req)
}

func (s *testServer) StreamingOutputCall(req *testgrpc.StreamingOutputCallRequest, stream grpc.ServerStreamingServer[testgrpc.StreamingOutputCallResponse]) error {
	s.calls.Add(1)
	return stream.Send(&testgrpc.StreamingOutputCallResponse{Payload: req.GetPayload()})
}

func (s *testServer) StreamingInputCall(stream grpc.ClientStreamingServer[testgrpc.StreamingInputCallRequest, testgrpc.StreamingInputCallResponse]) error {
	s.calls.Add(1)
	var total int32
	for first := true; ; first = false {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&testgrpc.StreamingInputCallResponse{AggregatedPayloadSize: total})
		}
		if err != nil {
			return err
		}
		total += int32(len(req.GetPayload().GetBody()))
		if first && s.streamStarted != nil {
			s.streamStarted <- struct{}{}
		}
		time.Sleep(s.inputDelay)
	}
}

type running struct {
	srv  *server.Server
	conn *grpc.ClientConn
	stop context.CancelFunc
	done chan struct{} // closed when Run returned, with its error in err
	err  error
}

func start(t *testing.T, db server.Pinger, svc *testServer, shutdownTimeout time.Duration) *running {
	t.Helper()
	srv, err := server.New(server.Config{
		ListenAddr:      "127.0.0.1:0",
		MetricsAddr:     "127.0.0.1:0",
		ShutdownTimeout: shutdownTimeout,
		HealthInterval:  50 * time.Millisecond,
		MaxRecvMsgSize:  4 << 20,
		Insecure:        true,
	}, server.Options{
		WithoutAuth: true,
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		Database:    db,
		Register: func(r server.Registrar) error {
			testgrpc.RegisterTestServiceServer(r.GRPC, svc)
			return nil
		},
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{srv: srv, stop: cancel, done: make(chan struct{})}
	go func() {
		r.err = srv.Run(ctx)
		close(r.done)
	}()
	r.conn, err = grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() {
		cancel()
		_ = r.conn.Close()
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
			t.Error("server did not stop")
		}
	})
	return r
}

func waitHealth(t *testing.T, conn *grpc.ClientConn, service string, want healthgrpc.HealthCheckResponse_ServingStatus) {
	t.Helper()
	client := healthgrpc.NewHealthClient(conn)
	var last string
	require.Eventually(t, func() bool {
		resp, err := client.Check(context.Background(), &healthgrpc.HealthCheckRequest{Service: service})
		if err != nil {
			last = err.Error()
			return false
		}
		last = resp.GetStatus().String()
		return resp.GetStatus() == want
	}, 20*time.Second, 20*time.Millisecond, "health of %q never became %v (last: %s)", service, want, last)
}

func TestHealthFollowsTheDatabase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cluster := pgtest.StartCluster(t)
	pool, err := pgxpool.New(ctx, cluster.DSN("postgres")+" connect_timeout=1")
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	r := start(t, pool, &testServer{}, 5*time.Second)

	for _, svc := range []string{"", testService} {
		waitHealth(t, r.conn, svc, healthgrpc.HealthCheckResponse_SERVING)
	}

	require.NoError(t, cluster.Stop(ctx))
	for _, svc := range []string{"", testService} {
		waitHealth(t, r.conn, svc, healthgrpc.HealthCheckResponse_NOT_SERVING)
	}

	require.NoError(t, cluster.Start(ctx))
	for _, svc := range []string{"", testService} {
		waitHealth(t, r.conn, svc, healthgrpc.HealthCheckResponse_SERVING)
	}

	_, err = healthgrpc.NewHealthClient(r.conn).Check(ctx, &healthgrpc.HealthCheckRequest{Service: "no.such.Service"})
	assert.Equal(t, codes.NotFound, status.Code(err), "unknown service names are NOT_FOUND")
}

// countingPinger is the database as the server sees it, counting pings.
type countingPinger struct {
	server.Pinger
	pings atomic.Int64
}

func (c *countingPinger) Ping(ctx context.Context) error {
	c.pings.Add(1)
	return c.Pinger.Ping(ctx)
}

// While the database is unreachable the server pings it more often than
// HealthInterval, so health turns SERVING again well within one interval
// of the database coming back; once it answers, pings are HealthInterval
// apart again.
func TestHealthTurnsServingPromptlyWhenTheDatabaseIsBack(t *testing.T) {
	t.Parallel()
	const healthInterval = 5 * time.Second
	ctx := context.Background()
	cluster := pgtest.StartCluster(t)
	pool, err := pgxpool.New(ctx, cluster.DSN("postgres")+" connect_timeout=1")
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	db := &countingPinger{Pinger: pool}
	srv, err := server.New(server.Config{
		ListenAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0",
		ShutdownTimeout: 5 * time.Second, HealthInterval: healthInterval, MaxRecvMsgSize: 1 << 20, Insecure: true,
	}, server.Options{
		WithoutAuth: true,
		Logger:      slog.New(slog.DiscardHandler),
		Database:    db,
		Register: func(r server.Registrar) error {
			testgrpc.RegisterTestServiceServer(r.GRPC, &testServer{})
			return nil
		},
	})
	require.NoError(t, err)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		require.NoError(t, <-done)
	})
	conn, err := grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	health := healthgrpc.NewHealthClient(conn)
	current := func() healthgrpc.HealthCheckResponse_ServingStatus {
		resp, err := health.Check(ctx, &healthgrpc.HealthCheckRequest{Service: testService})
		if err != nil {
			return healthgrpc.HealthCheckResponse_UNKNOWN
		}
		return resp.GetStatus()
	}

	waitHealth(t, conn, testService, healthgrpc.HealthCheckResponse_SERVING)
	require.NoError(t, cluster.Stop(ctx))
	// Noticed at the next regular ping, at most one HealthInterval later.
	waitHealth(t, conn, testService, healthgrpc.HealthCheckResponse_NOT_SERVING)

	require.NoError(t, cluster.Start(ctx))
	require.Eventually(t, func() bool { return current() == healthgrpc.HealthCheckResponse_SERVING },
		time.Second, 10*time.Millisecond, "health turns SERVING within a second of the database answering, not after HealthInterval (%v)", healthInterval)

	// Healthy again, the database is pinged every HealthInterval, not
	// every quarter second: at most one ping in the next second.
	before := db.pings.Load()
	time.Sleep(time.Second)
	assert.LessOrEqual(t, db.pings.Load()-before, int64(1), "pings while the database answers")
	assert.Equal(t, healthgrpc.HealthCheckResponse_SERVING, current())
}

func TestReflectionListsServices(t *testing.T) {
	t.Parallel()
	r := start(t, pgtest.NewPool(t), &testServer{}, 5*time.Second)
	want := []string{testService, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"}
	ctx := context.Background()

	v1, err := reflectionv1.NewServerReflectionClient(r.conn).ServerReflectionInfo(ctx)
	require.NoError(t, err)
	require.NoError(t, v1.Send(&reflectionv1.ServerReflectionRequest{MessageRequest: &reflectionv1.ServerReflectionRequest_ListServices{}}))
	resp, err := v1.Recv()
	require.NoError(t, err)
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	assert.Subset(t, names, want)

	// Descriptors resolve, so grpcurl can build requests without protos.
	require.NoError(t, v1.Send(&reflectionv1.ServerReflectionRequest{MessageRequest: &reflectionv1.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: testService}}))
	resp, err = v1.Recv()
	require.NoError(t, err)
	assert.NotEmpty(t, resp.GetFileDescriptorResponse().GetFileDescriptorProto())

	// Older clients speak v1alpha.
	alpha, err := reflectionv1alpha.NewServerReflectionClient(r.conn).ServerReflectionInfo(ctx) //nolint:staticcheck // testing the deprecated protocol on purpose
	require.NoError(t, err)
	require.NoError(t, alpha.Send(&reflectionv1alpha.ServerReflectionRequest{MessageRequest: &reflectionv1alpha.ServerReflectionRequest_ListServices{}}))
	alphaResp, err := alpha.Recv()
	require.NoError(t, err)
	assert.NotEmpty(t, alphaResp.GetListServicesResponse().GetService())
}

func TestGracefulShutdownLetsInFlightCallsFinish(t *testing.T) {
	t.Parallel()
	entered, release := make(chan struct{}), make(chan struct{})
	svc := &testServer{
		unary: func(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
			close(entered)
			<-release
			return &testgrpc.SimpleResponse{Username: "finished"}, nil
		},
		streamStarted: make(chan struct{}, 1),
	}
	r := start(t, pgtest.NewPool(t), svc, 30*time.Second)
	client := testgrpc.NewTestServiceClient(r.conn)
	ctx := context.Background()

	unaryDone := make(chan error, 1)
	var unaryResp atomic.Pointer[testgrpc.SimpleResponse]
	go func() {
		resp, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{})
		unaryResp.Store(resp)
		unaryDone <- err
	}()
	<-entered

	stream, err := client.StreamingInputCall(ctx)
	require.NoError(t, err)
	require.NoError(t, stream.Send(&testgrpc.StreamingInputCallRequest{Payload: &testgrpc.Payload{Body: []byte("abc")}}))
	<-svc.streamStarted

	r.stop() // as SIGTERM does

	// New calls are refused while the old ones finish.
	require.Eventually(t, func() bool {
		fresh, err := grpc.NewClient(r.srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		require.NoError(t, err)
		defer fresh.Close()
		ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		_, err = testgrpc.NewTestServiceClient(fresh).EmptyCall(ctx, &testgrpc.Empty{})
		return err != nil
	}, 10*time.Second, 20*time.Millisecond)

	// The stream that was open goes on receiving and completes.
	require.NoError(t, stream.Send(&testgrpc.StreamingInputCallRequest{Payload: &testgrpc.Payload{Body: []byte("defg")}}))
	streamResp, err := stream.CloseAndRecv()
	require.NoError(t, err)
	assert.Equal(t, int32(7), streamResp.GetAggregatedPayloadSize())

	select {
	case <-r.done:
		t.Fatal("Run returned while a call was still in flight")
	default:
	}
	close(release)
	require.NoError(t, <-unaryDone)
	assert.Equal(t, "finished", unaryResp.Load().GetUsername())
	select {
	case <-r.done:
		assert.NoError(t, r.err, "a requested shutdown is not an error")
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the last call finished")
	}
}

func TestShutdownTimeoutCutsOffStuckCalls(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		handler func(ctx context.Context) // blocks until the call ends
	}{
		// A slow query: returns once its context is cancelled.
		{"call that honours its context", func(ctx context.Context) { <-ctx.Done() }},
		// A bug: never returns. The server still exits.
		{"call that ignores its context", func(context.Context) { select {} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			entered := make(chan struct{})
			svc := &testServer{unary: func(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
				close(entered)
				tc.handler(ctx)
				return nil, ctx.Err()
			}}
			r := start(t, pgtest.NewPool(t), svc, 300*time.Millisecond)
			callErr := make(chan error, 1)
			go func() {
				_, err := testgrpc.NewTestServiceClient(r.conn).UnaryCall(context.Background(), &testgrpc.SimpleRequest{})
				callErr <- err
			}()
			<-entered
			began := time.Now()
			r.stop()
			select {
			case <-r.done:
				assert.NoError(t, r.err)
			case <-time.After(15 * time.Second):
				t.Fatal("shutdown did not force-stop after its timeout")
			}
			assert.GreaterOrEqual(t, time.Since(began), 300*time.Millisecond, "in-flight calls get the whole timeout")
			assert.Equal(t, codes.Unavailable, status.Code(<-callErr), "the cut-off call fails retryably")
		})
	}
}

func TestHandlerErrorsAreTranslatedAndPanicsRecovered(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	svc := &testServer{unary: func(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		calls.Add(1)
		switch string(req.GetPayload().GetBody()) {
		case "duplicate":
			return nil, &pgconn.PgError{Code: "23505", Message: `duplicate key value violates unique constraint "profiles_pkey" in SELECT secret`}
		case "panic":
			panic("handler bug")
		}
		return &testgrpc.SimpleResponse{}, nil
	}}
	r := start(t, pgtest.NewPool(t), svc, 5*time.Second)
	client := testgrpc.NewTestServiceClient(r.conn)
	ctx := context.Background()

	_, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("duplicate")}})
	st := status.Convert(err)
	assert.Equal(t, codes.AlreadyExists, st.Code())
	assert.NotContains(t, st.Message(), "secret")
	assert.NotContains(t, st.Message(), "profiles_pkey")

	_, err = client.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("panic")}})
	assert.Equal(t, codes.Internal, status.Code(err))
	assert.NotContains(t, status.Convert(err).Message(), "handler bug")

	// The process survived the panic and serves the next call.
	_, err = client.UnaryCall(ctx, &testgrpc.SimpleRequest{})
	require.NoError(t, err)
	assert.Equal(t, int32(3), calls.Load())

	metrics := scrape(t, r.srv.MetricsAddr())
	assert.Contains(t, metrics, "grpc_server_panics_recovered_total 1")
	assert.Contains(t, metrics, `grpc_server_handled_total{grpc_code="AlreadyExists",grpc_method="UnaryCall",grpc_service="grpc.testing.TestService",grpc_type="unary"} 1`)
	assert.Contains(t, metrics, `grpc_server_handled_total{grpc_code="OK",grpc_method="UnaryCall",grpc_service="grpc.testing.TestService",grpc_type="unary"} 1`)
	assert.Contains(t, metrics, `grpc_server_handling_seconds_bucket{grpc_method="UnaryCall"`)
	assert.Contains(t, metrics, "go_goroutines")
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(body)
}

func TestNewFailsOnTakenPort(t *testing.T) {
	t.Parallel()
	r := start(t, pgtest.NewPool(t), &testServer{}, time.Second)
	_, err := server.New(server.Config{
		ListenAddr: r.srv.Addr(), MetricsAddr: "127.0.0.1:0",
		ShutdownTimeout: time.Second, HealthInterval: time.Second, MaxRecvMsgSize: 1 << 20, Insecure: true,
	}, server.Options{
		WithoutAuth: true,
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		Database:    pgtest.NewPool(t),
		Register:    func(server.Registrar) error { return nil },
	})
	require.Error(t, err)
	assert.True(t, strings.Contains(err.Error(), r.srv.Addr()), "error names the address: %v", err)
}

func TestHealthWatchDoesNotHoldShutdown(t *testing.T) {
	t.Parallel()
	r := start(t, pgtest.NewPool(t), &testServer{}, 30*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	watch, err := healthgrpc.NewHealthClient(r.conn).Watch(ctx, &healthgrpc.HealthCheckRequest{Service: testService})
	require.NoError(t, err)
	for {
		resp, err := watch.Recv()
		require.NoError(t, err)
		if resp.GetStatus() == healthgrpc.HealthCheckResponse_SERVING {
			break
		}
	}

	began := time.Now()
	r.stop()
	// Watchers learn the server is going away, then their stream ends.
	resp, err := watch.Recv()
	require.NoError(t, err)
	assert.Equal(t, healthgrpc.HealthCheckResponse_NOT_SERVING, resp.GetStatus())
	for err == nil {
		_, err = watch.Recv()
	}
	select {
	case <-r.done:
		assert.NoError(t, r.err)
	case <-time.After(10 * time.Second):
		t.Fatal("an open health watch held up the shutdown")
	}
	assert.Less(t, time.Since(began), 10*time.Second)
}

func TestBackgroundTasksOutliveInFlightCalls(t *testing.T) {
	t.Parallel()
	entered, release := make(chan struct{}), make(chan struct{})
	var callFinished, taskSawCallFinished atomic.Bool
	svc := &testServer{unary: func(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		close(entered)
		<-release
		callFinished.Store(true)
		return &testgrpc.SimpleResponse{}, nil
	}}
	taskStarted, taskDone := make(chan struct{}), make(chan struct{})
	srv, err := server.New(server.Config{
		ListenAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0",
		ShutdownTimeout: 10 * time.Second, HealthInterval: time.Second, MaxRecvMsgSize: 1 << 20, Insecure: true,
	}, server.Options{
		WithoutAuth: true,
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		Database:    pgtest.NewPool(t),
		Register: func(r server.Registrar) error {
			testgrpc.RegisterTestServiceServer(r.GRPC, svc)
			r.Background("test task", func(ctx context.Context) {
				close(taskStarted)
				<-ctx.Done()
				taskSawCallFinished.Store(callFinished.Load())
				close(taskDone)
			})
			return nil
		},
	})
	require.NoError(t, err)
	ctx, stop := context.WithCancel(context.Background())
	result := make(chan error, 1)
	go func() { result <- srv.Run(ctx) }()
	<-taskStarted

	conn, err := grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	callErr := make(chan error, 1)
	go func() {
		_, err := testgrpc.NewTestServiceClient(conn).UnaryCall(context.Background(), &testgrpc.SimpleRequest{})
		callErr <- err
	}()
	<-entered
	stop()
	time.Sleep(100 * time.Millisecond)
	select {
	case <-taskDone:
		t.Fatal("background task stopped while a call was still in flight")
	default:
	}
	close(release)
	require.NoError(t, <-callErr)
	require.NoError(t, <-result)
	<-taskDone
	assert.True(t, taskSawCallFinished.Load())
}
