package lifecycle_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/platforma/platforma/services/kit/app"
	"github.com/platforma/platforma/services/oplog/internal/coldstore"
	"github.com/platforma/platforma/services/oplog/internal/lifecycle"
	"github.com/platforma/platforma/services/oplog/internal/store"
)

// cliEnv, when set, makes the test binary `oplog lifecycle` with these
// arguments (see TestMain): the crash tests kill -9 it.
const cliEnv = "LIFECYCLE_TEST_CLI"

func runAsCLI() {
	if args := os.Getenv(cliEnv); args != "" {
		svc := app.Service{Name: "oplog", Commands: map[string]app.Command{"lifecycle": lifecycle.Command()}}
		os.Exit(app.Run(context.Background(), svc, app.Env{Args: strings.Fields(args), Getenv: os.Getenv, Stderr: os.Stderr}))
	}
}

// cli runs `oplog lifecycle args...` as a process of its own, against e,
// with a policy measured in hours so that real months are past it.
func (e *env) cli(t *testing.T, retention string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		cliEnv+"="+strings.Join(append([]string{"lifecycle"}, args...), " "),
		"LIFECYCLE_DATABASE_URL="+e.dsn, "LIFECYCLE_STORE="+e.dir,
		"BACKFILL_WINDOW=1h", "LIFECYCLE_HOT_WINDOW=24h", "LIFECYCLE_RETENTION="+retention, "LIFECYCLE_ROLLUP_RETENTION=0")
	cmd.Env = append(cmd.Env, e.cliExtraEnv...)
	return cmd
}

// runCLI runs it to the end.
func (e *env) runCLI(t *testing.T, retention string, args ...string) string {
	t.Helper()
	out, err := e.cli(t, retention, args...).CombinedOutput()
	require.NoError(t, err, "%s", out)
	return string(out)
}

// killDuring starts the CLI, waits until ready says the moment has come,
// then kills it with SIGKILL, and its database session with it (a killed
// process's session would otherwise finish the statement it waits in).
func (e *env) killDuring(t *testing.T, retention string, ready func(line string) bool, args ...string) {
	t.Helper()
	cmd := e.cli(t, retention, args...)
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	deadline := time.After(60 * time.Second)
	for fired := false; !fired; {
		select {
		case line, ok := <-lines:
			require.True(t, ok, "the CLI ended before the moment to kill it")
			fired = ready(line)
		case <-time.After(50 * time.Millisecond):
			fired = ready("")
		case <-deadline:
			_ = cmd.Process.Kill()
			t.Fatal("the moment to kill the CLI never came")
		}
	}
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	_, err = e.pool.Exec(context.Background(), `
		SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = $1`, lifecycle.ApplicationName)
	require.NoError(t, err)
}

// waiting reports whether a statement like pattern waits for a lock.
func (e *env) waiting(t *testing.T, pattern string) bool {
	var n int
	require.NoError(t, e.pool.QueryRow(context.Background(), `
		SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE $1`,
		pattern).Scan(&n))
	return n > 0
}

// blocker holds a transaction that reads table, so DDL on it waits.
func (e *env) blocker(t *testing.T, table string) (release func()) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, e.dsn)
	require.NoError(t, err)
	tx, err := conn.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, "SELECT count(*) FROM "+table)
	require.NoError(t, err)
	return func() {
		_ = tx.Rollback(ctx)
		_ = conn.Close(ctx)
	}
}

// oldMonth fills the month three months before this one with n rows.
func (e *env) oldMonth(t *testing.T, n int) time.Time {
	t.Helper()
	m := time.Now().UTC().AddDate(0, -3, 0)
	m = time.Date(m.Year(), m.Month(), 1, 0, 0, 0, 0, time.UTC)
	e.fill(t, m, m, n)
	return m
}

const keep = "87600h" // ten years: archived and verified, not dropped

func TestKilledDuringDetachIsFinishedByTheNextRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := e.oldMonth(t, 5000)
	// A reader of the hot table makes the concurrent detach wait.
	release := e.blocker(t, "oplog.operation_logs")
	e.killDuring(t, keep, func(string) bool { return e.waiting(t, "%DETACH PARTITION%") }, "run")
	release()

	parts, err := store.NewLifecycle(mustConn(t, e.dsn)).Partitions(context.Background())
	require.NoError(t, err)
	require.Len(t, parts, 1)
	assert.True(t, parts[0].DetachPending || parts[0].Parent == store.AttachedNone,
		"the kill left the detach unfinished: %+v", parts[0])

	out := e.runCLI(t, keep, "run")
	assert.Contains(t, out, "archive")
	assert.Equal(t, "operation_logs_archive", e.parent(t, m))
	assert.Equal(t, "verified", e.states(t)[m.Format("2006-01")])
	assert.Equal(t, int64(5000), e.count(t, `SELECT count(*) FROM oplog.operation_logs_archive`), "no row lost or doubled")
	assert.Zero(t, e.count(t, `SELECT count(*) FROM oplog.operation_logs`))
}

func TestKilledDuringExportIsFinishedByTheNextRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := e.oldMonth(t, 150_000)
	// Slow enough that the export is still writing when its first
	// progress line (after a row group) arrives and the kill follows.
	e.cliExtraEnv = []string{"LIFECYCLE_EXPORT_RATE=20000"}
	e.killDuring(t, keep, func(line string) bool { return strings.Contains(line, "export:") }, "run")
	e.cliExtraEnv = nil
	assert.NotEqual(t, "verified", e.states(t)[m.Format("2006-01")], "killed before it was verified")

	e.runCLI(t, keep, "run")
	assert.Equal(t, "verified", e.states(t)[m.Format("2006-01")])
	assert.Equal(t, int64(150_000), e.count(t, `SELECT count(*) FROM oplog.operation_logs_archive`))
	exports, err := coldstore.Exports(context.Background(), e.bucket, m)
	require.NoError(t, err)
	assert.Len(t, exports, 1, "one complete export; the killed one never got its manifest")
	man, err := e.engine(t, time.Now()).VerifyMonth(context.Background(), m)
	require.NoError(t, err)
	assert.Equal(t, int64(150_000), man.Rows)
}

func TestKilledDuringDropIsFinishedByTheNextRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	m := e.oldMonth(t, 3000)
	e.runCLI(t, keep, "run")
	require.Equal(t, "verified", e.states(t)[m.Format("2006-01")])

	release := e.blocker(t, "oplog."+store.PartitionName(m))
	e.killDuring(t, "48h", func(string) bool { return e.waiting(t, "DROP TABLE%") }, "run")
	release()
	require.Equal(t, "operation_logs_archive", e.parent(t, m), "the kill came before the drop")

	e.runCLI(t, "48h", "run")
	assert.Equal(t, "dropped", e.parent(t, m))
	assert.Equal(t, "dropped", e.states(t)[m.Format("2006-01")])
	man, err := e.engine(t, time.Now()).VerifyMonth(context.Background(), m)
	require.NoError(t, err, "the export outlives the month")
	assert.Equal(t, int64(3000), man.Rows)
}

func mustConn(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}
