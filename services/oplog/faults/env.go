//go:build faults

package faults

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/platforma/platforma/migrations"
	"github.com/platforma/platforma/services/kit/hacluster"
	"github.com/platforma/platforma/services/kit/migrate"
	"github.com/platforma/platforma/services/kit/pgcluster"
)

// binDir is where the service binaries are: $FAULTS_BIN, else bin/ at the
// repository root (this package is services/oplog/faults).
func binDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("FAULTS_BIN")
	if dir == "" {
		dir = "../../../bin"
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"oplog", "profile"} {
		if _, err := os.Stat(filepath.Join(abs, name)); err != nil {
			t.Fatalf("%s not found in %s: run `make build` (or `make test-faults`, which builds first), or set FAULTS_BIN", name, abs)
		}
	}
	return abs
}

// database is the name of each scenario's database.
const database = "faults"

// Env is one scenario's world: its own throwaway Postgres cluster with one
// database and, per service, an owner and a runtime role (as `make run`
// sets them up: migrate.Bootstrap), both schemas migrated by the binaries'
// own `migrate` as the owners; the services serve as the runtime roles.
//
// An Env made by newHAEnv has HA (a Patroni cluster, ha_test.go) instead
// of PG: its URLs and the suite's own connections go to whichever node
// leads, through the multi-host URL.
type Env struct {
	t   *testing.T
	dir string
	bin string
	PG  *pgcluster.Cluster
	HA  *hacluster.Cluster
}

// newEnv starts a cluster and migrates a fresh database for t.
func newEnv(t *testing.T) *Env {
	t.Helper()
	e := newScenarioDir(t, "faults-")
	dir := e.dir
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var err error
	e.PG, err = pgcluster.New(ctx, pgcluster.Options{
		DataDir: filepath.Join(dir, "pg"),
		// Restarts reuse the port: one outside the ephemeral range (see
		// freeAddr).
		Port: freePort(t),
		// Postgres's default durability (fsync, synchronous_commit on):
		// an acknowledged row must survive the restarts below.
		Settings:          map[string]string{"max_connections": "200"},
		ParentDeathSignal: syscall.SIGQUIT,
	})
	if err == nil {
		err = e.PG.Start(ctx)
	}
	if err != nil {
		_ = os.RemoveAll(dir)
		t.Fatalf("throwaway cluster: %v", err)
	}
	e.stopAtEnd(30*time.Second, "postgres log pg.log", e.PG.Stop)

	e.prepare(ctx)
	return e
}

// newScenarioDir is an Env whose directory (prefix*, in the temporary
// directory) is made for t; the database is the caller's to start.
func newScenarioDir(t *testing.T, prefix string) *Env {
	t.Helper()
	bin := binDir(t)
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	// Postgres runs as the postgres OS user when we are root: it must
	// reach its data directory.
	_ = os.Chmod(dir, 0o755)
	return &Env{t: t, dir: dir, bin: bin}
}

// stopAtEnd stops the scenario's database (stop, within timeout) when the
// test ends, and removes its directory, or keeps it when the test failed:
// logs names what is in it besides the services' logs.
func (e *Env) stopAtEnd(timeout time.Duration, logs string, stop func(context.Context) error) {
	e.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		_ = stop(ctx)
		if e.t.Failed() {
			e.t.Logf("kept %s (service logs, %s)", e.dir, logs)
			return
		}
		_ = os.RemoveAll(e.dir)
	})
}

// prepare creates the scenario's database, its roles (migrate.Bootstrap)
// and migrates both schemas with the binaries' own `migrate`.
func (e *Env) prepare(ctx context.Context) {
	t, bin := e.t, e.bin
	e.exec(ctx, "postgres", "CREATE DATABASE "+database)
	admin, err := pgx.Connect(ctx, e.superDSN(database))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	for _, set := range []migrations.Set{migrations.OpLog, migrations.Profile} {
		roles := migrate.DefaultRoles(set.Schema)
		if err := migrate.Bootstrap(ctx, admin, set, roles); err != nil {
			t.Fatal(err)
		}
		cmd := exec.CommandContext(ctx, filepath.Join(bin, set.Schema), "migrate")
		cmd.Env = append(os.Environ(), "DATABASE_URL="+e.URL(roles.Owner), "LOG_LEVEL=warn")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s migrate: %v\n%s", set.Schema, err, out)
		}
	}
}

// superDSN connects to dbname as the superuser: the cluster's, or the HA
// cluster's leader's.
func (e *Env) superDSN(dbname string) string {
	if e.HA != nil {
		return e.HA.URL(hacluster.Superuser, dbname)
	}
	return e.PG.DSN(dbname)
}

// URL is the database's URL as role, over TCP (the cluster trusts local
// connections): "oplog" and "profile" are the services' runtime roles.
func (e *Env) URL(role string) string {
	if e.HA != nil {
		return e.HA.URL(role, database)
	}
	return e.PG.TCPURL(role, database)
}

// Oplog prepares `oplog serve` on this database; env adds settings.
func (e *Env) Oplog(env ...string) *Proc { return e.serve("oplog", "oplog", e.URL("oplog"), env...) }

// Profile prepares `profile serve` on this database.
func (e *Env) Profile(env ...string) *Proc {
	return e.serve("profile", "profile", e.URL("profile"), env...)
}

// Replica prepares replica name of service on addr (its own loopback
// address, the port its siblings use too), named so in pg_stat_activity.
func (e *Env) Replica(service, name, addr string, env ...string) *Proc {
	p := e.serve(service, name, e.URL(service)+"&application_name="+name, append(env, "LISTEN_ADDR="+addr)...)
	p.Addr = addr
	return p
}

// serve prepares `<service> serve` as its runtime role, with TLS, under
// name (its log file's).
func (e *Env) serve(service, name, dsn string, env ...string) *Proc {
	base := append([]string{"DATABASE_URL=" + dsn}, serveEnv(e.t)...)
	if service == "oplog" {
		base = append(base, relayEnv(e.t)...)
	}
	return newProc(e.t, e.dir, name, filepath.Join(e.bin, service), append(base, env...)...)
}

// exec runs one statement as the superuser in dbname, failing the test on
// an error.
func (e *Env) exec(ctx context.Context, dbname, sql string, args ...any) {
	e.t.Helper()
	conn, err := pgx.Connect(ctx, e.superDSN(dbname))
	if err != nil {
		e.t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

// conn connects to the scenario's database as the superuser, retrying for
// up to a minute (the database may be on its way back from a restart).
func (e *Env) conn(ctx context.Context) (*pgx.Conn, error) {
	deadline := time.Now().Add(time.Minute)
	for {
		conn, err := pgx.Connect(ctx, e.superDSN(database))
		if err == nil {
			return conn, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("connect to the scenario's database: %w", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// count runs a query that returns one integer.
func (e *Env) count(ctx context.Context, sql string, args ...any) (int64, error) {
	conn, err := e.conn(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	var n int64
	err = conn.QueryRow(ctx, sql, args...).Scan(&n)
	return n, err
}

// mustCount is count that fails the test on an error.
func (e *Env) mustCount(sql string, args ...any) int64 {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n, err := e.count(ctx, sql, args...)
	if err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// StopPG shuts Postgres down the way `pg_ctl stop -m fast` does (SIGINT:
// sessions are ended, a checkpoint is written) and waits for it.
func (e *Env) StopPG() {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.PG.Stop(ctx); err != nil {
		e.t.Fatalf("stop postgres: %v", err)
	}
}

// CrashPG shuts Postgres down the way `pg_ctl stop -m immediate` does
// (SIGQUIT: no checkpoint; the next start runs crash recovery from the
// WAL) and waits until the postmaster is gone.
func (e *Env) CrashPG() {
	e.t.Helper()
	if err := syscall.Kill(e.PG.Pid(), syscall.SIGQUIT); err != nil {
		e.t.Fatalf("SIGQUIT postgres: %v", err)
	}
	waitFor(e.t, time.Minute, "postgres to exit after SIGQUIT", func() bool { return !e.PG.Running() })
}

// StartPG starts Postgres again on the same port and data directory.
func (e *Env) StartPG() {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := e.PG.Start(ctx); err != nil {
		e.t.Fatalf("start postgres: %v", err)
	}
}

// waitFor polls cond every 50 ms until it holds, and fails the test with
// what it was waiting for after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("gave up after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}
