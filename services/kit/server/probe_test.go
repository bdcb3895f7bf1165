package server_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/platforma/platforma/services/kit/pgtest"
	"github.com/platforma/platforma/services/kit/server"
)

// kubelet's grpc probes speak plaintext only. The health listener answers
// them: readiness ("") follows the database, liveness stays SERVING
// through a database outage (an outage must not restart every replica),
// nothing but health is served there, and during a shutdown readiness
// reads NOT_SERVING while in-flight calls drain.
func TestHealthListenerServesProbes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cluster := pgtest.StartCluster(t)
	pool, err := pgxpool.New(ctx, cluster.DSN("postgres")+" connect_timeout=1")
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	entered, release := make(chan struct{}), make(chan struct{})
	svc := &testServer{unary: func(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
		close(entered)
		<-release
		return &testgrpc.SimpleResponse{}, nil
	}}
	srv, err := server.New(server.Config{
		ListenAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0", HealthAddr: "127.0.0.1:0",
		ShutdownTimeout: 30 * time.Second, HealthInterval: 50 * time.Millisecond, MaxRecvMsgSize: 1 << 20, Insecure: true,
	}, server.Options{
		WithoutAuth: true,
		Logger:      slog.New(slog.DiscardHandler),
		Database:    pool,
		Register: func(r server.Registrar) error {
			testgrpc.RegisterTestServiceServer(r.GRPC, svc)
			return nil
		},
	})
	require.NoError(t, err)
	require.NotEmpty(t, srv.HealthAddr())
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Run(runCtx) }()
	t.Cleanup(stop)

	probe, err := grpc.NewClient(srv.HealthAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = probe.Close() })
	main, err := grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = main.Close() })

	waitHealth(t, probe, "", healthgrpc.HealthCheckResponse_SERVING)
	waitHealth(t, probe, server.LivenessService, healthgrpc.HealthCheckResponse_SERVING)
	waitHealth(t, probe, testService, healthgrpc.HealthCheckResponse_SERVING)

	_, err = testgrpc.NewTestServiceClient(probe).EmptyCall(ctx, &testgrpc.Empty{})
	assert.Equal(t, codes.Unimplemented, status.Code(err), "the health listener serves health alone")

	require.NoError(t, cluster.Stop(ctx))
	waitHealth(t, probe, "", healthgrpc.HealthCheckResponse_NOT_SERVING)
	resp, err := healthgrpc.NewHealthClient(probe).Check(ctx, &healthgrpc.HealthCheckRequest{Service: server.LivenessService})
	require.NoError(t, err)
	assert.Equal(t, healthgrpc.HealthCheckResponse_SERVING, resp.GetStatus(), "liveness does not follow the database")
	require.NoError(t, cluster.Start(ctx))
	waitHealth(t, probe, "", healthgrpc.HealthCheckResponse_SERVING)

	// A call in flight holds the shutdown open; meanwhile the probe
	// listener still answers, NOT_SERVING.
	callDone := make(chan error, 1)
	go func() {
		_, err := testgrpc.NewTestServiceClient(main).UnaryCall(ctx, &testgrpc.SimpleRequest{})
		callDone <- err
	}()
	<-entered
	stop()
	waitHealth(t, probe, "", healthgrpc.HealthCheckResponse_NOT_SERVING)
	waitHealth(t, probe, server.LivenessService, healthgrpc.HealthCheckResponse_NOT_SERVING)
	close(release)
	require.NoError(t, <-callDone)
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return")
	}
	// Then the listener is gone.
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err = healthgrpc.NewHealthClient(probe).Check(cctx, &healthgrpc.HealthCheckRequest{})
	assert.Error(t, err, "the health listener closes with the server")
}
