package main

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
)

// TestStackStartsAndStops is `make run` end to end: real binaries, a local
// cluster in a fresh data directory, Ctrl-C, then a second start on the
// same directory (the path a newcomer takes the next morning).
func TestStackStartsAndStops(t *testing.T) {
	for _, s := range services {
		if l, err := net.Listen("tcp", s.addr); err != nil {
			t.Fatalf("%s is taken (is `make run` running?): %v", s.addr, err)
		} else {
			_ = l.Close()
		}
	}
	binDir := t.TempDir()
	for _, s := range services {
		out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, s.name),
			"github.com/platforma/platforma/services/"+s.name+"/cmd/"+s.name).CombinedOutput()
		require.NoError(t, err, "build %s: %s", s.name, out)
	}
	dataDir, err := os.MkdirTemp("", "platforma-devstack-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dataDir) })
	require.NoError(t, os.Chmod(dataDir, 0o755)) // reachable by the postgres user when root

	free, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Setenv("PG_PORT", strconv.Itoa(free.Addr().(*net.TCPAddr).Port))
	require.NoError(t, free.Close())
	t.Setenv("DATABASE_URL", "")

	for round := 1; round <= 2; round++ {
		ctx, stop := context.WithCancel(context.Background())
		result := make(chan error, 1)
		go func() { result <- run(ctx, binDir, dataDir, "grpcurl") }()

		for _, s := range services {
			awaitServing(t, s, result)
		}
		stop() // Ctrl-C
		select {
		case err := <-result:
			require.NoError(t, err, "round %d", round)
		case <-time.After(60 * time.Second):
			t.Fatalf("round %d: stack did not stop", round)
		}
		for _, s := range services {
			conn, err := net.DialTimeout("tcp", s.addr, time.Second)
			if err == nil {
				_ = conn.Close()
				t.Fatalf("round %d: %s still listening after Ctrl-C", round, s.name)
			}
		}
	}
	_, err = os.Stat(filepath.Join(dataDir, "pg", "PG_VERSION"))
	require.NoError(t, err, "the cluster lives in the data directory")
}

func awaitServing(t *testing.T, s service, result <-chan error) {
	t.Helper()
	conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-result:
			t.Fatalf("stack exited before %s was SERVING: %v", s.name, err)
		default:
		}
		resp, err := healthgrpc.NewHealthClient(conn).Check(context.Background(), &healthgrpc.HealthCheckRequest{Service: s.grpcService})
		if err == nil && resp.GetStatus() == healthgrpc.HealthCheckResponse_SERVING {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s never SERVING", s.name)
}
