// Package pgtest gives every test its own real PostgreSQL database.
//
// One throwaway cluster per test binary is started from the machine's
// Postgres binaries (see pgcluster) the first time a test asks for a
// database. The package's migrations are applied once to a template
// database; each test then gets a fresh clone of it (CREATE DATABASE ...
// TEMPLATE), which takes milliseconds and isolates tests completely.
//
// On its own cluster the harness sets up the template as `make run` sets
// up its database (README, "Database roles"): every service's schema is
// bootstrapped (migrate.Bootstrap: an owner and a runtime role per
// schema, migrate.DefaultRoles) and the package's migrations are applied
// as the owners, so tests can connect as either role (AsRole) and the
// privileges they meet are the real ones. NewDatabase's DSN connects as
// the superuser, for the tests' own set-up and checks.
//
// With DATABASE_URL set, that server is used instead of a throwaway
// cluster; its role needs CREATEDB. Databases made there are dropped when
// the tests end. There everything runs as that role (HasRoles is false).
//
// Use it from TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m, migrations.Profile) }
//
// and in a test:
//
//	pool := pgtest.NewPool(t)
package pgtest

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/platforma/platforma/migrations"
	"github.com/platforma/platforma/services/kit/migrate"
	"github.com/platforma/platforma/services/kit/pgcluster"
)

// ClusterSettings returns the server settings of throwaway clusters:
// durability off (a crash loses nothing we care about), enough connections
// for concurrency tests. A new map each time: callers may change it.
func ClusterSettings() map[string]string {
	return map[string]string{
		"fsync":                      "off",
		"synchronous_commit":         "off",
		"full_page_writes":           "off",
		"max_connections":            "300",
		"shared_buffers":             "128MB",
		"max_wal_size":               "1GB",
		"log_min_messages":           "warning",
		"log_min_duration_statement": "-1",
	}
}

type harness struct {
	sets []migrations.Set

	// Set when the harness runs its own cluster (no DATABASE_URL).
	cluster *pgcluster.Cluster
	dir     string

	once     sync.Once
	startErr error
	admin    *pgxpool.Pool
	dsn      func(dbname string) string
	template string
	cleanups []func()
	// roles: the template's schemas are bootstrapped with
	// migrate.DefaultRoles (the harness's own cluster); bootstrapped are
	// their sets.
	roles        bool
	bootstrapped []migrations.Set

	mu      sync.Mutex // serialises CREATE DATABASE from the template
	counter atomic.Int64
}

var (
	current  *harness
	prefix   = fmt.Sprintf("pgt_%d", os.Getpid())
	mainUsed atomic.Bool
)

// Main runs the package's tests, then stops the cluster and removes its
// files, also when the tests fail or the run is interrupted (SIGINT,
// SIGTERM). sets are the migrations every test database starts with.
func Main(m *testing.M, sets ...migrations.Set) {
	os.Exit(run(m.Run, sets))
}

// run runs tests with the harness set up for sets and returns their exit
// code after cleaning up.
func run(tests func() int, sets []migrations.Set) int {
	mainUsed.Store(true)
	current = &harness{sets: sets}

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		sig := <-signals
		fmt.Fprintf(os.Stderr, "pgtest: %v: removing the test cluster\n", sig)
		current.close()
		os.Exit(130)
	}()

	code := tests()
	signal.Stop(signals)
	current.close()
	return code
}

// NewDatabase creates a database for this test, cloned from the migrated
// template, and drops it when the test ends. It returns its DSN, connecting
// as the superuser.
func NewDatabase(t testing.TB) string {
	t.Helper()
	h := mustHarness(t)
	name := fmt.Sprintf("%s_%d", prefix, h.counter.Add(1))
	ctx := context.Background()

	h.mu.Lock()
	_, err := h.admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" TEMPLATE "+pgx.Identifier{h.template}.Sanitize())
	h.mu.Unlock()
	if err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	// The clone has the template's schemas and their privileges, but not
	// the privileges on the database itself.
	for _, set := range h.bootstrapped {
		if err := migrate.GrantDatabase(ctx, h.admin, name, set, migrate.DefaultRoles(set.Schema)); err != nil {
			t.Fatalf("pgtest: %v", err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := h.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	return h.dsn(name)
}

// NewBlankDatabase creates an empty database for this test (nothing
// bootstrapped, nothing migrated), dropped when the test ends, and returns
// its DSN as the superuser: for tests of the set-up itself.
func NewBlankDatabase(t testing.TB) string {
	t.Helper()
	h := mustHarness(t)
	name := fmt.Sprintf("%s_blank_%d", prefix, h.counter.Add(1))
	h.mu.Lock()
	_, err := h.admin.Exec(context.Background(), "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" TEMPLATE template0")
	h.mu.Unlock()
	if err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := h.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	return h.dsn(name)
}

// HasRoles reports whether test databases have every service's owner and
// runtime roles (migrate.DefaultRoles): on the harness's own cluster they
// do; with DATABASE_URL they do not, and AsRole must not be used.
func HasRoles(t testing.TB) bool {
	t.Helper()
	return mustHarness(t).roles
}

// AsRole returns dsn (as NewDatabase returns it) connecting as role
// instead, without a password: the harness's cluster trusts local
// connections. migrate.DefaultRoles names the services' roles.
func AsRole(dsn, role string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		if u, err := url.Parse(dsn); err == nil {
			u.User = url.User(role)
			return u.String()
		}
	}
	// In key=value form the last occurrence of a key wins.
	return dsn + " user=" + role
}

// NewPool is NewDatabase plus a pool on it, closed when the test ends.
func NewPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), NewDatabase(t))
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// StartCluster starts a private cluster for this test, for tests that stop
// and restart the server. It is removed when the test ends. It always needs
// local Postgres binaries, even when DATABASE_URL is set.
func StartCluster(t testing.TB) *pgcluster.Cluster {
	t.Helper()
	dir, err := clusterDir()
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	c, err := startCluster(context.Background(), dir)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.Stop(ctx); err != nil {
			t.Errorf("pgtest: stop cluster: %v", err)
		}
	})
	return c
}

// StartStandby starts a streaming standby of the harness's cluster,
// private to this test (so that it may pause replay or stop the standby),
// and removes it when the test ends. Every database NewDatabase hands out
// is on it too, read-only, as soon as replayed: OnStandby gives a DSN's
// database there. The test is skipped with DATABASE_URL set: there is no
// cluster of the harness's own to copy.
func StartStandby(t testing.TB) *pgcluster.Cluster {
	t.Helper()
	h := mustHarness(t)
	if h.cluster == nil {
		t.Skip("pgtest: no standby with DATABASE_URL: it needs the harness's own cluster")
	}
	return StartStandbyOf(t, h.cluster)
}

// StartStandbyOf starts a streaming standby of primary (a running
// cluster without a password, as StartCluster's), and removes it when the
// test ends.
func StartStandbyOf(t testing.TB, primary *pgcluster.Cluster) *pgcluster.Cluster {
	t.Helper()
	dir, err := clusterDir()
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	ctx := context.Background()
	s, err := primary.NewStandby(ctx, pgcluster.Options{
		DataDir:           dir + "/data",
		Settings:          ClusterSettings(),
		ParentDeathSignal: syscall.SIGQUIT,
	})
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatalf("pgtest: start standby: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			t.Errorf("pgtest: stop standby: %v", err)
		}
	})
	return s
}

// OnStandby returns dsn (as NewDatabase or AsRole return it) connecting
// to the same database on standby instead.
func OnStandby(dsn string, standby *pgcluster.Cluster) string {
	// In key=value form the last occurrence of a key wins.
	return fmt.Sprintf("%s host=%s port=%d", dsn, standby.SocketDir(), standby.Port())
}

// StandbyConn is a connection (or pool) to a standby.
type StandbyConn interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// PauseReplay pauses WAL replay on the standby and returns once it has
// paused: pg_wal_replay_pause() only asks, and replay stops at its next
// record, so a write made on the primary right after the call could still
// be replayed. Replay stays paused until pg_wal_replay_resume(), or until
// the standby goes with its test (StartStandby).
func PauseReplay(t testing.TB, standby StandbyConn) {
	t.Helper()
	ctx := context.Background()
	if _, err := standby.Exec(ctx, "SELECT pg_wal_replay_pause()"); err != nil {
		t.Fatalf("pgtest: pause replay: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var state string
		if err := standby.QueryRow(ctx, "SELECT pg_get_wal_replay_pause_state()").Scan(&state); err != nil {
			t.Fatalf("pgtest: replay pause state: %v", err)
		}
		if state == "paused" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pgtest: replay still %q 10s after the pause was asked for", state)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// clusterDir makes a directory for a throwaway cluster that the postgres OS
// user can reach when we run as root (os.MkdirTemp makes it 0700).
func clusterDir() (string, error) {
	dir, err := os.MkdirTemp("", "platforma-pgtest-")
	if err != nil {
		return "", err
	}
	return dir, os.Chmod(dir, 0o755)
}

func startCluster(ctx context.Context, dir string) (*pgcluster.Cluster, error) {
	c, err := pgcluster.New(ctx, pgcluster.Options{
		DataDir:           dir + "/data",
		Settings:          ClusterSettings(),
		ParentDeathSignal: syscall.SIGQUIT,
	})
	if err != nil {
		return nil, err
	}
	return c, c.Start(ctx)
}

func mustHarness(t testing.TB) *harness {
	t.Helper()
	if !mainUsed.Load() {
		t.Fatal("pgtest: call pgtest.Main(m, ...) from this package's TestMain")
	}
	if err := current.ensureStarted(); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return current
}

func (h *harness) ensureStarted() error {
	h.once.Do(func() { h.startErr = h.start() })
	return h.startErr
}

func (h *harness) start() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	if url := os.Getenv("DATABASE_URL"); url != "" {
		if _, err := pgx.ParseConfig(url); err != nil {
			return fmt.Errorf("DATABASE_URL: %w", err)
		}
		h.dsn = func(dbname string) string { return WithDatabase(url, dbname) }
	} else {
		dir, err := clusterDir()
		h.cleanups = append(h.cleanups, func() { _ = os.RemoveAll(dir) })
		if err != nil {
			return err
		}
		c, err := startCluster(ctx, dir)
		if err != nil {
			return err
		}
		h.cluster, h.dir = c, dir
		h.cleanups = append(h.cleanups, func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_ = c.Stop(ctx)
		})
		h.dsn = c.DSN
	}

	admin, err := pgxpool.New(ctx, h.dsn("postgres"))
	if err != nil {
		return err
	}
	h.admin = admin

	h.template = prefix + "_template"
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{h.template}.Sanitize()); err != nil {
		return fmt.Errorf("create template database: %w", err)
	}
	templateDSN := h.dsn(h.template)
	if h.cluster != nil {
		// Every service's schema, so apptest can start any service on a
		// clone; and the package's own sets.
		sets := append([]migrations.Set(nil), migrations.All...)
		for _, set := range h.sets {
			if !slices.ContainsFunc(sets, func(s migrations.Set) bool { return s.Schema == set.Schema }) {
				sets = append(sets, set)
			}
		}
		conn, err := pgx.Connect(ctx, templateDSN)
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		for _, set := range sets {
			if err := migrate.Bootstrap(ctx, conn, set, migrate.DefaultRoles(set.Schema)); err != nil {
				return fmt.Errorf("bootstrap template: %w", err)
			}
		}
		h.roles, h.bootstrapped = true, sets
	}
	for _, set := range h.sets {
		dsn := templateDSN
		if h.roles {
			dsn = AsRole(dsn, migrate.DefaultRoles(set.Schema).Owner)
		}
		if _, err := migrate.Up(ctx, dsn, set, nil); err != nil {
			return fmt.Errorf("migrate template (%s): %w", set.Schema, err)
		}
	}
	return nil
}

// close drops what was created on an external server and stops a
// throwaway cluster. Safe to call more than once.
func (h *harness) close() {
	if h.admin != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, _ = h.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{h.template}.Sanitize()+" WITH (FORCE)")
		cancel()
		h.admin.Close()
		h.admin = nil
	}
	for i := len(h.cleanups) - 1; i >= 0; i-- {
		h.cleanups[i]()
	}
	h.cleanups = nil
}

// WithDatabase returns dsn (a postgres:// URL or key=value string) with its
// database replaced by dbname.
func WithDatabase(dsn, dbname string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err == nil {
			u.Path = "/" + dbname
			return u.String()
		}
	}
	// In key=value form the last occurrence of a key wins.
	return dsn + " dbname=" + dbname
}
