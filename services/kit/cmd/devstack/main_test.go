package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/platforma/platforma/services/kit/pgcluster"
)

// TestMain removes the service binaries the tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds the three service binaries once per test binary and
// returns their directory.
func binaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "platforma-devstack-bin-"); buildErr != nil {
			return
		}
		for _, name := range serviceNames {
			out, err := exec.Command("go", "build", "-o", filepath.Join(binDir, name),
				"github.com/platforma/platforma/services/"+name+"/cmd/"+name).CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("build %s: %w\n%s", name, err, out)
				return
			}
		}
	})
	require.NoError(t, buildErr)
	return binDir
}

// freeServices are the three services on ports of their own, so a `make
// run` on this machine or another test cannot collide with them.
func freeServices(t *testing.T) []service {
	return stackServices(ports{grpc: [3]int{freePort(t), freePort(t), freePort(t)}, metrics: [3]int{freePort(t), freePort(t), freePort(t)}})
}

// TestStackStartsAndStops is `make run` end to end: real binaries, a local
// cluster in a fresh data directory, Ctrl-C, then a second start on the
// same directory (the path a newcomer takes the next morning). While the
// first start runs, a second `make run` on the same directory and one whose
// port is taken must fail without disturbing it.
//
// Not parallel: databaseIsLocked uses t.Setenv, and its steps share one
// running stack.
func TestStackStartsAndStops(t *testing.T) {
	services := freeServices(t)
	dataDir, err := os.MkdirTemp("", "platforma-devstack-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dataDir) })
	require.NoError(t, os.Chmod(dataDir, 0o755)) // reachable by the postgres user when root
	cfg := config{services: services, binDir: binaries(t), dataDir: dataDir, grpcurl: "grpcurl", pgPort: freePort(t), out: os.Stdout}

	for round := 1; round <= 2; round++ {
		ctx, stop := context.WithCancel(context.Background())
		result := make(chan error, 1)
		go func() { result <- run(ctx, cfg) }()

		for _, s := range services {
			awaitServing(t, cfg.dataDir, s, result)
		}
		if round == 1 {
			t.Run("SecondRunOnTheSameDataDirFails", func(t *testing.T) { secondRunFails(t, cfg) })
			t.Run("ClusterOfAnotherRunIsNotTakenForOurs", func(t *testing.T) { secondClusterFails(t, cfg) })
			t.Run("TakenPortIsNamed", func(t *testing.T) {
				passwords, _, err := loadPasswords(cfg.dataDir, cfg.services)
				require.NoError(t, err)
				takenPortIsNamed(t, cfg, fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/%s?sslmode=disable", "postgres", passwords["postgres"], cfg.pgPort, database))
			})
			t.Run("DatabaseAsksForPasswordsAndConfinesServices", func(t *testing.T) { databaseIsLocked(t, cfg) })
			// The first stack, Postgres included, is untouched.
			driveTraffic(t, cfg.dataDir, services)
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

// syncBuffer collects a run's output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// runToFailure runs devstack with cfg, which must fail within a minute,
// and returns its error and output.
func runToFailure(t *testing.T, cfg config) (string, error) {
	t.Helper()
	var out syncBuffer
	cfg.out = &out
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	result := make(chan error, 1)
	go func() { result <- run(ctx, cfg) }()
	select {
	case err := <-result:
		require.Error(t, err, "devstack must fail; its output:\n%s", out.String())
		return out.String(), err
	case <-time.After(60 * time.Second):
		stop()
		<-result
		t.Fatalf("devstack did not fail; its output:\n%s", out.String())
		return "", nil
	}
}

// A second `make run` in the same folder, while the first runs: its
// Postgres cannot start on the same data directory. It used to take the
// first run's server, and services, for its own and print "platforma is
// up."; it must fail, say why, and leave the first run alone.
func secondRunFails(t *testing.T, cfg config) {
	out, err := runToFailure(t, cfg)
	t.Log(err)
	abs, _ := filepath.Abs(cfg.dataDir)
	assert.Contains(t, err.Error(), "another `make run` is already using "+abs)
	assert.NotContains(t, out, "platforma is up")
	for _, s := range cfg.services {
		awaitServing(t, cfg.dataDir, s, nil)
	}
}

// Past the up-front check (the first run may start between the two):
// Postgres refuses to start on a data directory in use, while the other
// run's server answers on the same socket. That answer must not pass for
// a start.
func secondClusterFails(t *testing.T, cfg config) {
	var out syncBuffer
	passwords, _, err := loadPasswords(cfg.dataDir, cfg.services)
	require.NoError(t, err)
	cluster, err := startCluster(context.Background(), &console{w: &out}, cfg.dataDir, cfg.pgPort, passwords[pgcluster.Superuser], false)
	if err == nil {
		_ = cluster.Stop(context.Background())
	}
	require.Error(t, err, "the other run's Postgres passed for ours")
	t.Log(err)
	assert.Contains(t, err.Error(), "Is another `make run` still running")
}

// A port of the stack taken by another process that answers gRPC health
// SERVING, as another stack's ProfileService would: devstack used to
// read that answer as its own ProfileService's, which had failed to bind,
// and print "platforma is up."; it must fail naming the port, and leave
// nothing running.
func takenPortIsNamed(t *testing.T, stack config, databaseURL string) {
	services := freeServices(t)
	busy := services[0].port
	impostor(t, busy, services[0].grpcService)
	cfg := config{services: services, binDir: stack.binDir, grpcurl: "grpcurl", databaseURL: databaseURL}
	out, err := runToFailure(t, cfg)
	t.Log(err)
	assert.Contains(t, err.Error(), fmt.Sprintf("port %d", busy))
	assert.Contains(t, err.Error(), "PROFILE_GRPC_PORT")
	assert.NotContains(t, out, "platforma is up")
	for _, s := range services[1:] {
		assertNotListening(t, s.port)
		assertNotListening(t, s.metricsPort)
	}
}

// impostor listens on port, on every interface as the services do, and
// answers health SERVING for grpcService.
func impostor(t *testing.T, port int, grpcService string) {
	t.Helper()
	l, err := net.Listen("tcp", ":"+strconv.Itoa(port))
	require.NoError(t, err)
	srv := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus(grpcService, healthgrpc.HealthCheckResponse_SERVING)
	healthgrpc.RegisterHealthServer(srv, hs)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
}

func assertNotListening(t *testing.T, port int) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", "localhost:"+strconv.Itoa(port), time.Second)
	if err == nil {
		_ = conn.Close()
		t.Errorf("port %d still listening", port)
	}
}

// The readiness check itself, past the up-front port check (a port can be
// taken between the two): ProfileService fails to bind the port another
// process answers health on. Health alone says SERVING; devstack must see
// that its own process never served there, and name the port.
func TestReadinessNeedsTheServicesOwnProcess(t *testing.T) {
	t.Parallel()
	services := freeServices(t)
	s := services[0]
	impostor(t, s.port, s.grpcService)

	var out syncBuffer
	exited := make(chan *process, 1)
	creds, err := prepareCredentials(t.TempDir())
	require.NoError(t, err)
	dialCreds, err := creds.workerDialOption()
	require.NoError(t, err)
	p, err := startService(&console{w: &out}, binaries(t), s, "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=1", creds.serviceEnv(s), exited)
	require.NoError(t, err)
	t.Cleanup(func() { stopAll([]*process{p}) })

	err = waitReady(context.Background(), []*process{p}, dialCreds, 30*time.Second)
	require.Error(t, err, "health answered by another process is not readiness; output:\n%s", out.String())
	t.Log(err)
	assert.Contains(t, err.Error(), fmt.Sprintf("gRPC port %d", s.port))
	assert.Contains(t, err.Error(), "PROFILE_GRPC_PORT")
}

// A service that serves on its ports is ready; its "serving" line is what
// ties the port to the process.
func TestParseServing(t *testing.T) {
	t.Parallel()
	l, ok := parseServing(`time=2026-01-02T03:04:05.000Z level=INFO msg=serving addr=[::]:50051 metrics_addr=[::]:9451 services="[grpc.health.v1.Health]"`)
	require.True(t, ok)
	assert.Equal(t, listening{"[::]:50051", "[::]:9451"}, l)
	assert.Equal(t, 50051, portOf(l.addr))
	l, ok = parseServing(`{"time":"2026-01-02T03:04:05Z","level":"INFO","msg":"serving","addr":"[::]:50052","metrics_addr":"[::]:9452"}`)
	require.True(t, ok)
	assert.Equal(t, listening{"[::]:50052", "[::]:9452"}, l)
	for _, line := range []string{
		`time=... level=INFO msg="database reachable: SERVING"`,
		`time=... level=INFO msg=shutting down timeout=30s`,
		`profile: listen on :50051: listen tcp :50051: bind: address already in use`,
	} {
		_, ok := parseServing(line)
		assert.False(t, ok, line)
	}
}

// Every port is set by its own variable; mistakes are named.
func TestPortsFromEnv(t *testing.T) {
	t.Parallel()
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	p, pg, err := portsFromEnv(env(nil))
	require.NoError(t, err)
	assert.Equal(t, defaultPorts, p)
	assert.Equal(t, defaultPGPort, pg)

	p, pg, err = portsFromEnv(env(map[string]string{
		"PG_PORT": "15432", "PROFILE_GRPC_PORT": "15051", "PROFILE_METRICS_PORT": "15451",
		"REVIEWMETA_GRPC_PORT": "15052", "REVIEWMETA_METRICS_PORT": "15452", "OPLOG_GRPC_PORT": "15053", "OPLOG_METRICS_PORT": "15453",
	}))
	require.NoError(t, err)
	assert.Equal(t, ports{grpc: [3]int{15051, 15052, 15053}, metrics: [3]int{15451, 15452, 15453}}, p)
	assert.Equal(t, 15432, pg)
	services := stackServices(p)
	assert.Equal(t, "localhost:15053", services[2].addr)
	assert.Contains(t, services[2].env, "PROFILE_ADDR=localhost:15051", "oplog's relay follows ProfileService's port")

	_, _, err = portsFromEnv(env(map[string]string{"OPLOG_GRPC_PORT": "http", "PG_PORT": "70000", "REVIEWMETA_METRICS_PORT": "9451"}))
	require.Error(t, err)
	for _, want := range []string{`OPLOG_GRPC_PORT="http"`, `PG_PORT="70000"`, "PROFILE_METRICS_PORT and REVIEWMETA_METRICS_PORT are both port 9451"} {
		assert.Contains(t, err.Error(), want)
	}
}

func awaitServing(t *testing.T, dataDir string, s service, result <-chan error) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		select {
		case err := <-result:
			t.Fatalf("stack exited before %s was SERVING: %v", s.name, err)
		default:
		}
		// Every start writes new certificates: read them each time.
		if last = checkServing(dataDir, s); last == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s never SERVING: %v", s.name, last)
}

// freePort returns a port nothing listens on, not handed out before
// (pickFreePort: below the kernel's range of ephemeral ports, which the
// other test binaries running alongside this one take by the hundred).
func freePort(t *testing.T) int {
	t.Helper()
	port := pickFreePort(usedPorts)
	require.NotZero(t, port, "no free port")
	usedPorts[port] = true
	return port
}

// usedPorts are the ports freePort handed out already.
var usedPorts = map[int]bool{}

func checkServing(dataDir string, s service) error {
	opt, err := stackDialOption(dataDir)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(s.addr, opt)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := healthgrpc.NewHealthClient(conn).Check(ctx, &healthgrpc.HealthCheckRequest{Service: s.grpcService})
	if err == nil && resp.GetStatus() != healthgrpc.HealthCheckResponse_SERVING {
		err = fmt.Errorf("health %v", resp.GetStatus())
	}
	return err
}
