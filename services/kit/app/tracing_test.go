package app_test

import (
	"context"
	"io"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/platforma/platforma/migrations"
	"github.com/platforma/platforma/services/kit/app"
	"github.com/platforma/platforma/services/kit/apptest"
	"github.com/platforma/platforma/services/kit/db"
	"github.com/platforma/platforma/services/kit/server"
	"github.com/platforma/platforma/services/kit/telemetry/telemetrytest"
)

// `serve` with OTEL_EXPORTER_OTLP_ENDPOINT set exports its calls' spans
// there, under the binary's name, and flushes them when it stops.
func TestServeExportsTracesToTheConfiguredCollector(t *testing.T) {
	collector := telemetrytest.Start(t)
	before := otel.GetTracerProvider()
	t.Cleanup(func() { otel.SetTracerProvider(before) })
	// The OTLP exporter reads its settings from the process environment.
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.Endpoint)
	t.Setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
	// The database is not needed for the call below; it is never reached.
	t.Setenv("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
	// Plaintext: the reflection call below is public, so no credentials.
	t.Setenv("INSECURE", "true")

	svc := app.Service{
		Name: "tracedsvc", DefaultListenAddr: "127.0.0.1:0", DefaultMetricsAddr: "127.0.0.1:0",
		Migrations: migrations.Profile,
		Register:   func(server.Registrar, db.Pools) error { return nil },
	}
	ctx, stop := context.WithCancel(context.Background())
	ready, exit := make(chan *server.Server, 1), make(chan int, 1)
	go func() {
		exit <- app.Run(ctx, svc, app.Env{Args: []string{"serve"}, Getenv: os.Getenv, Stderr: io.Discard,
			Ready: func(s *server.Server) { ready <- s }})
	}()
	var srv *server.Server
	select {
	case srv = <-ready:
	case code := <-exit:
		t.Fatalf("serve exited %d", code)
	}
	conn, err := grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	apptest.ListServices(t, conn) // a traced call

	stop()
	select {
	case code := <-exit:
		require.Equal(t, 0, code)
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop")
	}
	assert.Contains(t, collector.Spans(),
		telemetrytest.Span{Service: "tracedsvc", Name: "grpc.reflection.v1.ServerReflection/ServerReflectionInfo"},
		"the call's server span reached the collector by the time serve returned")
}
