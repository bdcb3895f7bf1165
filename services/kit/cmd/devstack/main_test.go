package main

import (
	"context"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
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
	// Ports of its own, so a `make run` on this machine or another test
	// cannot collide with it.
	services := stackServices(ports{grpc: [3]int{freePort(t), freePort(t), freePort(t)}, metrics: [3]int{freePort(t), freePort(t), freePort(t)}})
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

	t.Setenv("PG_PORT", strconv.Itoa(freePort(t)))
	t.Setenv("DATABASE_URL", "")

	for round := 1; round <= 2; round++ {
		ctx, stop := context.WithCancel(context.Background())
		result := make(chan error, 1)
		go func() { result <- run(ctx, services, binDir, dataDir, "grpcurl") }()

		for _, s := range services {
			awaitServing(t, s, result)
		}
		if round == 1 {
			driveTraffic(t, services)
			checkDashboardMetricsExported(t, services)
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

// freePort returns a port nothing listens on, below the kernel's range of
// ephemeral ports: the other test binaries running alongside this one
// open connections and listen on port 0 by the hundred, and the kernel
// hands those out only from that range, so a port below it stays free
// between this check and the service binding it. (The defaults, 50051-3,
// lie inside the range: a parallel test once took :50052 first.)
func freePort(t *testing.T) int {
	t.Helper()
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				low = n
			}
		}
	}
	const from = 10000
	for i := 0; i < 100 && low > from; i++ {
		port := from + rand.IntN(low-from)
		if usedPorts[port] {
			continue
		}
		if l, err := net.Listen("tcp", ":"+strconv.Itoa(port)); err == nil {
			_ = l.Close()
			usedPorts[port] = true
			return port
		}
	}
	// No room below the range: any free port, with a small chance of a
	// collision.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// usedPorts are the ports freePort handed out already.
var usedPorts = map[int]bool{}
