package server_test

import (
	"context"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	profilev1 "github.com/platforma/platforma/gen/platforma/profile/v1"
	"github.com/platforma/platforma/services/kit/apptest"
	"github.com/platforma/platforma/services/kit/auth/devpki"
	"github.com/platforma/platforma/services/kit/pgtest"
)

// TestMeasureHeldConnectionsAndCalls measures what a client that holds
// connections and calls open costs a real server process (bin/profile and
// bin/oplog, as `make build` builds them): server RSS (/proc/<pid>/status)
// and goroutines (go_goroutines on /metrics) with N idle connections, N
// half-sent unary calls and N idle Ingest streams, the p50/p99 a
// well-behaved client sees meanwhile, and when and how the held calls end.
// It only logs figures; it asserts that the server survives.
//
//	make build
//	MEASURE_LIMITS=1 go test -count=1 -v -timeout 20m -run TestMeasureHeldConnectionsAndCalls ./services/kit/server/
//
// MEASURE_N (1000) sets N, BIN_DIR (the repository's bin/) another build
// (an older one, say), MEASURE_FLAGS extra `serve` flags (e.g.
// "-recv-timeout=1h -recv-idle-timeout=1h" to see the calls held), and
// MEASURE_WAIT (60s) how long to wait for the held calls to end.
func TestMeasureHeldConnectionsAndCalls(t *testing.T) {
	if os.Getenv("MEASURE_LIMITS") == "" {
		t.Skip("set MEASURE_LIMITS=1 after `make build` to measure held connections and calls (see the test's comment)")
	}
	n := envInt(t, "MEASURE_N", 1000)
	wait := 60 * time.Second
	if v := os.Getenv("MEASURE_WAIT"); v != "" {
		d, err := time.ParseDuration(v)
		require.NoError(t, err)
		wait = d
	}
	binDir := os.Getenv("BIN_DIR")
	if binDir == "" {
		binDir = "../../../bin"
	}
	binDir, err := filepath.Abs(binDir)
	require.NoError(t, err)
	flags := strings.Fields(os.Getenv("MEASURE_FLAGS"))
	t.Logf("N=%d, binaries from %s, extra flags %q", n, binDir, flags)
	// Plaintext as before (rawCall speaks h2c), with a token of every role
	// and no rate limits: what is measured is the transport, not auth.
	flags = append(measureCredentials(t), flags...)

	t.Run("profile", func(t *testing.T) {
		p := startBinary(t, filepath.Join(binDir, "profile"), profilev1.ProfileService_ServiceDesc.ServiceName, flags)
		conn := p.dial(t)
		client := profilev1.NewProfileServiceClient(conn)
		rec, err := client.RecordLoginResult(context.Background(), &profilev1.RecordLoginResultRequest{
			EventId: uuid.NewString(), UserId: uuid.NewString(), PlatformAccountId: "measure",
			Outcome: commonv1.Outcome_OUTCOME_SUCCESS, OccurredAt: timestamppb.Now(),
		})
		require.NoError(t, err)
		getProfile := func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := client.GetProfile(ctx, &profilev1.GetProfileRequest{Id: rec.GetProfile().GetId()})
			return err
		}
		for range 200 { // warm up
			require.NoError(t, getProfile())
		}
		p.report(t, "baseline", getProfile)

		// N idle connections: handshake done, no calls.
		idle := dialMany(t, p.addr, n)
		p.report(t, fmt.Sprintf("%d idle connections", n), getProfile)
		closeAll(idle)
		time.Sleep(2 * time.Second)
		p.report(t, "after closing them", nil)

		// N half-sent unary calls: headers sent, never the message nor the
		// end of the stream.
		held := holdStreams(t, p.addr, n, profilev1.ProfileService_GetProfile_FullMethodName, grpc.StreamDesc{})
		p.report(t, fmt.Sprintf("%d half-sent GetProfile calls", n), getProfile)
		held.waitEnd(t, wait)
		p.report(t, "after they ended", getProfile)
		t.Logf("  server WARN lines \"call cut off\": %d", strings.Count(p.logs.String(), "call cut off"))

		// One call with 8 MiB of request headers.
		before := p.rss(t)
		outcome := rawCall(t, p.addr, strings.Repeat("h", 8<<20))
		time.Sleep(500 * time.Millisecond)
		t.Logf("8 MiB request header: %s; RSS %d -> %d MiB (peak %d MiB)", outcome, before>>10, p.rss(t)>>10, p.peakRSS(t)>>10)
		require.NoError(t, getProfile(), "the server survived")
	})

	t.Run("oplog", func(t *testing.T) {
		p := startBinary(t, filepath.Join(binDir, "oplog"), oplogv1.OpLogService_ServiceDesc.ServiceName, flags)
		conn := p.dial(t)
		client := oplogv1.NewOpLogServiceClient(conn)
		list := func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := client.ListOperationLogs(ctx, &oplogv1.ListOperationLogsRequest{UserId: uuid.NewString()})
			return err
		}
		ingest := func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			stream, err := client.Ingest(ctx)
			if err != nil {
				return err
			}
			if err := stream.Send(&oplogv1.IngestRequest{Logs: []*oplogv1.OperationLog{{
				Id: uuid.NewString(), UserId: uuid.NewString(), OperationType: oplogv1.OperationType_OPERATION_TYPE_GET_REVIEWS,
				Outcome: commonv1.Outcome_OUTCOME_SUCCESS, CreateTime: timestamppb.Now(),
			}}}); err != nil {
				return err
			}
			_, err = stream.CloseAndRecv()
			return err
		}
		for range 50 {
			require.NoError(t, list())
			require.NoError(t, ingest())
		}
		p.report(t, "baseline (ListOperationLogs)", list)

		// N Ingest streams that never send.
		held := holdStreams(t, p.addr, n, oplogv1.OpLogService_Ingest_FullMethodName, grpc.StreamDesc{ClientStreams: true})
		p.report(t, fmt.Sprintf("%d idle Ingest streams (ListOperationLogs)", n), list)
		// A well-behaved SDK flush meanwhile: one stream, one row, sent at once.
		var flushes []time.Duration
		codesSeen := map[codes.Code]int{}
		for range 3 {
			began := time.Now()
			err := ingest()
			flushes = append(flushes, time.Since(began))
			codesSeen[status.Code(err)]++
		}
		t.Logf("  well-behaved Ingest of 1 row meanwhile: %v, codes %v", flushes, codesSeen)
		held.waitEnd(t, wait)
		p.report(t, "after they ended (ListOperationLogs)", list)
		t.Logf("  server WARN lines \"call cut off\": %d", strings.Count(p.logs.String(), "call cut off"))
	})
}

// process is a service binary running `serve`.
type process struct {
	cmd               *exec.Cmd
	addr, metricsAddr string
	logs              *syncBuffer
	conns             []*grpc.ClientConn
}

func startBinary(t *testing.T, bin, grpcService string, flags []string) *process {
	t.Helper()
	_, err := os.Stat(bin)
	require.NoError(t, err, "build the binaries first: make build")
	dsn := pgtest.NewDatabase(t)
	env := append(os.Environ(), "DATABASE_URL="+dsn, "LOG_FORMAT=text", "LOG_LEVEL=info")
	migrate := exec.Command(bin, "migrate")
	migrate.Env = env
	out, err := migrate.CombinedOutput()
	require.NoError(t, err, string(out))

	p := &process{addr: freeAddr(t), metricsAddr: freeAddr(t), logs: &syncBuffer{}}
	p.cmd = exec.Command(bin, append([]string{"serve", "-listen-addr=" + p.addr, "-metrics-addr=" + p.metricsAddr}, flags...)...)
	p.cmd.Env = env
	p.cmd.Stderr = p.logs
	require.NoError(t, p.cmd.Start())
	t.Cleanup(func() {
		for _, c := range p.conns {
			_ = c.Close()
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- p.cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s exited: %v\n%s", bin, err, p.logs.String())
			}
		case <-time.After(60 * time.Second):
			_ = p.cmd.Process.Kill()
			t.Errorf("%s did not stop after SIGTERM", bin)
		}
	})
	conn := p.dial(t)
	require.Eventually(t, func() bool {
		resp, err := healthgrpc.NewHealthClient(conn).Check(context.Background(), &healthgrpc.HealthCheckRequest{Service: grpcService})
		return err == nil && resp.GetStatus() == healthgrpc.HealthCheckResponse_SERVING
	}, 30*time.Second, 50*time.Millisecond, p.logs.String())
	return p
}

// measureDialOptions are the measuring clients' credentials (set by
// measureCredentials).
var measureDialOptions = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}

// measureCredentials makes a JWKS and a token with every role, and
// returns the `serve` flags that trust it.
func measureCredentials(t *testing.T) []string {
	t.Helper()
	p, err := devpki.New("", "")
	require.NoError(t, err)
	tok, err := p.Token("measure", []string{"worker", "operator", "admin"}, 24*time.Hour)
	require.NoError(t, err)
	jwks := filepath.Join(t.TempDir(), "jwks.json")
	require.NoError(t, devpki.WriteFile(jwks, p.JWKS()))
	measureDialOptions = append(measureDialOptions, grpc.WithPerRPCCredentials(devpki.Bearer{Token: tok}))
	return []string{"-insecure", "-jwks-file=" + jwks, "-jwt-issuer=" + p.Issuer, "-jwt-audience=" + p.Audience,
		"-rate-limit-writes=0", "-rate-limit-reads=0"}
}

func (p *process) dial(t *testing.T) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(p.addr, measureDialOptions...)
	require.NoError(t, err)
	p.conns = append(p.conns, conn)
	return conn
}

// rss and peakRSS are VmRSS and VmHWM, in KiB.
func (p *process) rss(t *testing.T) int64     { return procStatus(t, p.cmd.Process.Pid, "VmRSS:") }
func (p *process) peakRSS(t *testing.T) int64 { return procStatus(t, p.cmd.Process.Pid, "VmHWM:") }

func procStatus(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == field {
			v, err := strconv.ParseInt(f[1], 10, 64)
			require.NoError(t, err)
			return v
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

func (p *process) goroutines(t *testing.T) float64 {
	t.Helper()
	v, ok := apptest.MetricValue(apptest.Scrape(t, p.metricsAddr), "go_goroutines")
	require.True(t, ok)
	return v
}

// report logs RSS and goroutines, then, if call is set, runs it in a
// loop for 2 s and logs its latencies.
func (p *process) report(t *testing.T, what string, call func() error) {
	t.Helper()
	time.Sleep(time.Second) // let the server settle
	line := fmt.Sprintf("%-45s RSS %4d MiB  goroutines %5.0f", what+":", p.rss(t)>>10, p.goroutines(t))
	if call != nil {
		var lat []time.Duration
		failed := 0
		for end := time.Now().Add(2 * time.Second); time.Now().Before(end); {
			began := time.Now()
			if err := call(); err != nil {
				failed++
			}
			lat = append(lat, time.Since(began))
		}
		slices.Sort(lat)
		q := func(f float64) float64 { return float64(lat[int(f*float64(len(lat)-1))].Microseconds()) / 1000 }
		line += fmt.Sprintf("  well-behaved calls: %d, p50 %.2f ms, p99 %.2f ms, max %.2f ms, failed %d", len(lat), q(0.5), q(0.99), q(1), failed)
	}
	t.Log(line)
}

// dialMany opens n connections and waits until each is READY.
func dialMany(t *testing.T, addr string, n int) []*grpc.ClientConn {
	t.Helper()
	conns := make([]*grpc.ClientConn, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 50)
	for i := range conns {
		conn, err := grpc.NewClient(addr, measureDialOptions...)
		require.NoError(t, err)
		conns[i] = conn
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			conn.Connect()
			for s := conn.GetState(); s != connectivity.Ready; s = conn.GetState() {
				if !conn.WaitForStateChange(ctx, s) {
					return
				}
			}
		}()
	}
	wg.Wait()
	return conns
}

func closeAll(conns []*grpc.ClientConn) {
	for _, c := range conns {
		_ = c.Close()
	}
}

// heldStreams are calls opened and left waiting.
type heldStreams struct {
	opened time.Time
	conns  []*grpc.ClientConn
	mu     sync.Mutex
	ended  []time.Duration // since opened
	codes  map[codes.Code]int
	n      int
}

// holdStreams opens n calls of method over as few connections as the
// default stream limit allows (250 a connection), sends nothing, and
// watches them end.
func holdStreams(t *testing.T, addr string, n int, method string, desc grpc.StreamDesc) *heldStreams {
	t.Helper()
	perConn := 250
	h := &heldStreams{conns: dialMany(t, addr, int(math.Ceil(float64(n)/float64(perConn)))), codes: map[codes.Code]int{}, n: n}
	opened := make(chan struct{}, n)
	for i := range n {
		go func() {
			cs, err := h.conns[i/perConn].NewStream(context.Background(), &desc, method)
			opened <- struct{}{}
			if err == nil {
				var resp []byte
				err = cs.RecvMsg(&resp) // returns when the server ends the call
			}
			h.mu.Lock()
			h.ended = append(h.ended, time.Since(h.opened))
			h.codes[status.Code(err)]++
			h.mu.Unlock()
		}()
	}
	for range n {
		<-opened
	}
	h.mu.Lock()
	h.opened = time.Now()
	h.mu.Unlock()
	return h
}

// waitEnd waits up to d for the server to end every held call, logs when
// and how they ended, and closes their connections.
func (h *heldStreams) waitEnd(t *testing.T, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		h.mu.Lock()
		done := len(h.ended) == h.n
		h.mu.Unlock()
		if done {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	h.mu.Lock()
	ended := slices.Clone(h.ended)
	seen := fmt.Sprint(h.codes)
	h.mu.Unlock()
	slices.Sort(ended)
	if len(ended) == 0 {
		t.Logf("  none of the %d calls ended within %s", h.n, d)
	} else {
		t.Logf("  %d of %d calls ended within %s: first after %s, last after %s; codes %s",
			len(ended), h.n, d, ended[0].Round(10*time.Millisecond), ended[len(ended)-1].Round(10*time.Millisecond), seen)
	}
	closeAll(h.conns)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	require.NoError(t, err, name)
	return n
}
