// Package pgtest gives every test its own real PostgreSQL database.
//
// One throwaway cluster per test binary is started from the machine's
// Postgres binaries (see pgcluster) the first time a test asks for a
// database. The package's migrations are applied once to a template
// database; each test then gets a fresh clone of it (CREATE DATABASE ...
// TEMPLATE), which takes milliseconds and isolates tests completely.
//
// With DATABASE_URL set, that server is used instead of a throwaway
// cluster; its role needs CREATEDB. Databases made there are dropped when
// the tests end.
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
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/platforma/platforma/migrations"
	"github.com/platforma/platforma/services/kit/migrate"
	"github.com/platforma/platforma/services/kit/pgcluster"
)

// ClusterSettings are the server settings of throwaway clusters: durability
// off (a crash loses nothing we care about), enough connections for
// concurrency tests.
var ClusterSettings = map[string]string{
	"fsync":                      "off",
	"synchronous_commit":         "off",
	"full_page_writes":           "off",
	"max_connections":            "300",
	"shared_buffers":             "128MB",
	"max_wal_size":               "1GB",
	"log_min_messages":           "warning",
	"log_min_duration_statement": "-1",
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
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := h.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	return h.dsn(name)
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
		Settings:          ClusterSettings,
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
	for _, set := range h.sets {
		if _, err := migrate.Up(ctx, h.dsn(h.template), set, nil); err != nil {
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
