// Package apptest runs a service the way its binary runs, for end-to-end
// tests: `migrate`, then `serve` on free ports against a fresh database,
// through the same app.Run the binary's main calls.
package apptest

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/platforma/platforma/services/kit/app"
	"github.com/platforma/platforma/services/kit/migrate"
	"github.com/platforma/platforma/services/kit/pgcluster"
	"github.com/platforma/platforma/services/kit/pgtest"
	"github.com/platforma/platforma/services/kit/server"
)

// Service is a running service.
type Service struct {
	// Conn is a client connection to its gRPC address.
	Conn *grpc.ClientConn
	// Addr and MetricsAddr are where it listens; PprofAddr too with
	// -pprof-addr ("" otherwise).
	Addr, MetricsAddr, PprofAddr string
	// DatabaseURL is its database, as the superuser (for the test's own
	// set-up and checks; the service connects as its runtime role).
	DatabaseURL string

	name     string
	logs     *SyncBuffer
	stop     func()
	exit     chan int
	once     sync.Once
	t        testing.TB
	dialOpts []grpc.DialOption
}

// DialOptions are the options Conn was made with: TLS trusting the test
// CA, a worker's client certificate and a bearer token with every role
// (see Token). For tests that dial Addr themselves.
func (s *Service) DialOptions() []grpc.DialOption { return s.dialOpts }

// Start migrates a fresh database with svc's `migrate` command, starts
// `serve` with extra flags added, and waits until health reports
// grpcService SERVING. When the test ends the service is stopped as
// SIGTERM would, and must exit 0. The calling package's TestMain must use
// pgtest.Main.
func Start(t *testing.T, svc app.Service, grpcService string, flags ...string) *Service {
	t.Helper()
	return Run(t, svc, Migrate(t, svc), grpcService, flags...)
}

// Migrate is Start's first half: a fresh database migrated with svc's
// `migrate` command. It returns its DSN as pgtest.NewDatabase does, for
// Run, when serve's flags depend on the database (ReplicaURL).
func Migrate(t *testing.T, svc app.Service) string {
	t.Helper()
	dsn := pgtest.NewDatabase(t)
	env := map[string]string{"DATABASE_URL": asRole(t, dsn, svc, false), "LOG_FORMAT": "text"}
	var logs SyncBuffer
	if code := app.Run(context.Background(), svc, app.Env{Args: []string{"migrate"}, Getenv: func(k string) string { return env[k] }, Stderr: &logs}); code != 0 {
		t.Fatalf("%s migrate exited %d:\n%s", svc.Name, code, logs.String())
	}
	assertMigrated(t, dsn, svc.Migrations.Schema)
	return dsn
}

// ReplicaURL is the database of dsn (Migrate's) on standby
// (pgtest.StartStandby), as the role svc's serve connects as: the value
// of its -read-database-url.
func ReplicaURL(t testing.TB, svc app.Service, dsn string, standby *pgcluster.Cluster) string {
	t.Helper()
	return asRole(t, pgtest.OnStandby(dsn, standby), svc, true)
}

// Run starts `serve` on an already migrated database, as Start does: a
// second replica, or the same service again after a Stop. dsn is as
// pgtest.NewDatabase returns it (Service.DatabaseURL); the service
// connects as its runtime role.
func Run(t *testing.T, svc app.Service, dsn, grpcService string, flags ...string) *Service {
	t.Helper()
	env := map[string]string{"DATABASE_URL": asRole(t, dsn, svc, true), "LOG_FORMAT": "text"}
	// Secure by default, as the binary: TLS, client certificates and
	// tokens of the test PKI (see security.go); flags given win.
	creds := securityEnv(t, env, flags)
	s := &Service{DatabaseURL: dsn, name: svc.Name, logs: &SyncBuffer{}, exit: make(chan int, 1), t: t, dialOpts: creds}
	ctx, stop := context.WithCancel(context.Background())
	s.stop = stop
	ready := make(chan *server.Server, 1)
	go func() {
		s.exit <- app.Run(ctx, svc, app.Env{
			Args:   append([]string{"serve", "-listen-addr=127.0.0.1:0", "-metrics-addr=127.0.0.1:0", "-health-interval=50ms"}, flags...),
			Getenv: func(k string) string { return env[k] },
			Stderr: s.logs,
			Ready:  func(s *server.Server) { ready <- s },
		})
	}()
	var srv *server.Server
	select {
	case srv = <-ready:
	case code := <-s.exit:
		stop()
		t.Fatalf("%s serve exited %d before listening:\n%s", svc.Name, code, s.logs.String())
	}
	conn, err := grpc.NewClient(srv.Addr(), creds...)
	if err != nil {
		stop()
		t.Fatal(err)
	}
	s.Conn, s.Addr, s.MetricsAddr, s.PprofAddr = conn, srv.Addr(), srv.MetricsAddr(), srv.PprofAddr()
	t.Cleanup(s.Stop)

	health := healthgrpc.NewHealthClient(conn)
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := health.Check(context.Background(), &healthgrpc.HealthCheckRequest{Service: grpcService})
		if err == nil && resp.GetStatus() == healthgrpc.HealthCheckResponse_SERVING {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never SERVING (last: %v %v):\n%s", grpcService, resp.GetStatus(), err, s.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s
}

// Stop shuts the service down as SIGTERM would and checks it exits 0.
// Later calls do nothing.
func (s *Service) Stop() {
	s.once.Do(func() {
		_ = s.Conn.Close()
		s.stop()
		select {
		case code := <-s.exit:
			if code != 0 {
				s.t.Errorf("%s serve exited %d after SIGTERM:\n%s", s.name, code, s.logs.String())
			}
		case <-time.After(30 * time.Second):
			s.t.Errorf("%s serve did not stop within 30s", s.name)
		}
	})
}

// Logs is what the service has logged so far.
func (s *Service) Logs() string { return s.logs.String() }

// Serve runs a kit server with the real interceptor chain on a free
// port, with the services register adds, and returns a client connection
// to it. The server stops when the test ends.
func Serve(t testing.TB, db server.Pinger, register func(server.Registrar) error) *grpc.ClientConn {
	t.Helper()
	return ServeCodec(t, db, nil, register)
}

// ServeCodec is Serve for a service with its own codec (nil: protobuf),
// which the kit wraps as it does in the binary.
func ServeCodec(t testing.TB, db server.Pinger, codec encoding.CodecV2, register func(server.Registrar) error) *grpc.ClientConn {
	t.Helper()
	// TLS and authentication as in the binary (the platform's method
	// table, tokens of the test PKI), without rate limits.
	tlsCfg, authn, creds := inProcessSecurity(t)
	addr, stop := runServer(t, server.Config{ListenAddr: "127.0.0.1:0", TLS: tlsCfg},
		server.Options{Database: db, Register: register, Codec: codec, Auth: authn})
	conn, err := grpc.NewClient(addr, append(creds,
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))...)
	if err != nil {
		stop()
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(); stop() })
	return conn
}

// ServePlaintextAt runs a kit server, as ServeCodec does, on the fixed
// address addr (a test's "server comes back on the same address"), over
// plaintext and without authentication: for clients that dial with
// insecure credentials and no token, as the worker SDK's tests do. The
// server has the standard health service, following db. It returns once
// addr is bound. stop shuts the server down as SIGTERM would and waits
// for it; it may be called more than once, runs at the end of the test,
// and frees addr for a later server.
func ServePlaintextAt(t testing.TB, addr string, db server.Pinger, codec encoding.CodecV2, register func(server.Registrar) error) (stop func()) {
	t.Helper()
	_, stop = runServer(t, server.Config{ListenAddr: addr, Insecure: true},
		server.Options{Database: db, Register: register, Codec: codec, WithoutAuth: true})
	return stop
}

// runServer runs a kit server with cfg and opts, completed with the
// settings every test server shares, until stop, which may be called more
// than once and runs at the end of the test. It returns once the server
// listens, with its address.
func runServer(t testing.TB, cfg server.Config, opts server.Options) (addr string, stop func()) {
	t.Helper()
	cfg.MetricsAddr = "127.0.0.1:0"
	cfg.ShutdownTimeout = 10 * time.Second
	cfg.HealthInterval = time.Second
	cfg.MaxRecvMsgSize = 16 << 20
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := server.New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("server on %s: %v", srv.Addr(), err)
			}
		})
	}
	t.Cleanup(stop)
	return srv.Addr(), stop
}

// asRole is dsn (pgtest.NewDatabase's) as the role the binary connects
// as, where the harness has the roles (README, "Database roles"):
// `migrate` as the schema's owner, `serve` as its runtime role.
func asRole(t testing.TB, dsn string, svc app.Service, runtime bool) string {
	t.Helper()
	if !pgtest.HasRoles(t) {
		return dsn
	}
	roles := migrate.DefaultRoles(svc.Migrations.Schema)
	if runtime {
		return pgtest.AsRole(dsn, roles.Runtime)
	}
	return pgtest.AsRole(dsn, roles.Owner)
}

// assertMigrated checks that migrate left the schema with its own goose
// version table.
func assertMigrated(t *testing.T, dsn, schema string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var table *string
	if err := conn.QueryRow(ctx, "SELECT to_regclass($1)::text", migrate.VersionTable(schema)).Scan(&table); err != nil {
		t.Fatal(err)
	}
	if table == nil {
		t.Fatalf("after migrate, %s does not exist", migrate.VersionTable(schema))
	}
}

// ListServices asks the server's reflection service (v1) which services
// it serves, as grpcurl's `list` does.
func ListServices(t *testing.T, conn *grpc.ClientConn) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := reflectionv1.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionv1.ServerReflectionRequest{MessageRequest: &reflectionv1.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	return names
}

// Scrape returns the text of the service's /metrics page.
func Scrape(t *testing.T, metricsAddr string) string {
	t.Helper()
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	return string(body)
}

// MetricValue returns the value of one series in a /metrics page, given
// as it appears there (name{labels...}), and whether it is present.
func MetricValue(page, series string) (float64, bool) {
	for _, line := range strings.Split(page, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

// SyncBuffer is a bytes.Buffer safe for concurrent writes: the log of a
// server under test.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
