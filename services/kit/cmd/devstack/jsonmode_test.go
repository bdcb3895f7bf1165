package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	"github.com/platforma/platforma/services/kit/auth/devpki"
	"github.com/platforma/platforma/services/kit/tlsfiles"
)

func grpcTLS(cfg *tls.Config) grpc.DialOption {
	return grpc.WithTransportCredentials(credentials.NewTLS(cfg))
}

// TestJSONModeForHarnesses is -json as the TypeScript tests use it: one
// JSON line that is enough to reach every service as a worker and as an
// operator and the database in SQL; kill -9 and start again on stdin; the
// end of stdin stops everything.
//
// Not parallel: it runs a whole stack, as TestStackStartsAndStops does.
func TestJSONModeForHarnesses(t *testing.T) {
	services := freeServices(t)
	dataDir, err := os.MkdirTemp("", "platforma-devstack-json-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dataDir) })
	require.NoError(t, os.Chmod(dataDir, 0o755)) // reachable by the postgres user when root

	stdinR, stdinW := io.Pipe()
	stdoutR, stdoutW := io.Pipe()
	var logs syncBuffer
	cfg := config{services: services, binDir: binaries(t), dataDir: dataDir, pgPort: freePort(t), out: &logs,
		harness: &harness{in: stdinR, out: stdoutW}}
	result := make(chan error, 1)
	go func() {
		result <- run(context.Background(), cfg)
		_ = stdoutW.Close()
	}()
	t.Cleanup(func() { _ = stdinW.Close() })
	lines := bufio.NewScanner(stdoutR)
	readLine := func(into any) {
		t.Helper()
		got := make(chan bool, 1)
		go func() { got <- lines.Scan() }()
		select {
		case ok := <-got:
			require.True(t, ok, "stdout ended; output:\n%s", logs.String())
			require.NoError(t, json.Unmarshal(lines.Bytes(), into), lines.Text())
		case err := <-result:
			t.Fatalf("stack exited: %v\n%s", err, logs.String())
		case <-time.After(90 * time.Second):
			t.Fatalf("no line on stdout in time; output:\n%s", logs.String())
		}
	}

	var d stackDescription
	readLine(&d)
	require.Len(t, d.Services, 3)
	for _, s := range services {
		sd := d.Services[s.name]
		assert.Equal(t, s.addr, sd.Addr)
		assert.Equal(t, s.grpcService, sd.GRPCService)
		assert.Positive(t, sd.Pid)
	}
	assert.NotEmpty(t, d.OperatorToken)
	assert.NotContains(t, logs.String(), "platforma is up", "no banner in -json mode: stdout is the harness's")

	// The files and tokens work: the worker's certificate for health and
	// Ingest, the operator's token for a query.
	tlsCfg, err := tlsfiles.ClientConfig(d.CA, d.WorkerCert, d.WorkerKey, nil)
	require.NoError(t, err)
	worker, err := grpc.NewClient(d.Services["oplog"].Addr, grpcTLS(tlsCfg))
	require.NoError(t, err)
	defer worker.Close()
	opTLS, err := tlsfiles.ClientConfig(d.CA, "", "", nil)
	require.NoError(t, err)
	operator, err := grpc.NewClient(d.Services["oplog"].Addr, grpcTLS(opTLS), grpc.WithPerRPCCredentials(devpki.Bearer{Token: d.OperatorToken, Secure: true}))
	require.NoError(t, err)
	defer operator.Close()
	health := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := healthgrpc.NewHealthClient(worker).Check(ctx, &healthgrpc.HealthCheckRequest{Service: d.Services["oplog"].GRPCService})
		return err
	}
	require.NoError(t, health())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = oplogv1.NewOpLogServiceClient(operator).ListOperationLogs(ctx, &oplogv1.ListOperationLogsRequest{})
	require.NoError(t, err, "the operator token is accepted")
	_, err = oplogv1.NewOpLogServiceClient(worker).ListOperationLogs(ctx, &oplogv1.ListOperationLogsRequest{})
	assert.Equal(t, codes.PermissionDenied, status.Code(err), "and the worker's certificate is not an operator's")

	db, err := pgx.Connect(ctx, d.DatabaseURL)
	require.NoError(t, err, "database_url reaches the database")
	var n int
	require.NoError(t, db.QueryRow(ctx, "SELECT count(*) FROM oplog.operation_logs").Scan(&n))
	require.NoError(t, db.Close(ctx))

	// kill -9, then start on the same port.
	var res commandResult
	_, err = io.WriteString(stdinW, "kill oplog\n")
	require.NoError(t, err)
	readLine(&res)
	require.True(t, res.OK, res.Error)
	assert.Equal(t, d.Services["oplog"].Pid, res.Pid)
	assertNotListening(t, services[2].port)

	_, err = io.WriteString(stdinW, "start nosuch\n")
	require.NoError(t, err)
	readLine(&res)
	assert.False(t, res.OK)
	assert.Contains(t, res.Error, `no service "nosuch"`)

	_, err = io.WriteString(stdinW, "start oplog\n")
	require.NoError(t, err)
	readLine(&res)
	require.True(t, res.OK, res.Error)
	assert.NotEqual(t, d.Services["oplog"].Pid, res.Pid)
	require.Eventually(t, func() bool { return health() == nil }, 10*time.Second, 50*time.Millisecond, "the restarted oplog serves")

	// The end of stdin stops everything.
	require.NoError(t, stdinW.Close())
	select {
	case err := <-result:
		require.NoError(t, err, logs.String())
	case <-time.After(60 * time.Second):
		t.Fatal("the stack did not stop when stdin ended")
	}
	for _, s := range services {
		assertNotListening(t, s.port)
	}
}

// -json chooses free ports for the variables that are not set, and keeps
// those that are.
func TestFreePortsUnlessSet(t *testing.T) {
	t.Parallel()
	getenv := freePortsUnlessSet(func(k string) string {
		if k == "OPLOG_GRPC_PORT" {
			return "15053"
		}
		return ""
	})
	p, pg, err := portsFromEnv(getenv)
	require.NoError(t, err, "seven distinct ports")
	assert.Equal(t, 15053, p.grpc[2])
	assert.NotEqual(t, defaultPGPort, pg)
	for _, port := range append(p.grpc[:2], p.metrics[:]...) {
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		require.NoError(t, err, "port %d is free", port)
		_ = l.Close()
	}
}
