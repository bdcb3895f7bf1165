package pgtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/platforma/platforma/migrations"
)

// fixture is a migration set of this test only: every database handed out
// must already have its table.
var fixture = migrations.Set{
	Schema: "pgtest_fixture",
	FS: fstest.MapFS{
		"0001_things.sql": {Data: []byte(`-- +goose Up
CREATE TABLE pgtest_fixture.things (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO pgtest_fixture.things VALUES (1, 'from the template');
-- +goose Down
DROP TABLE pgtest_fixture.things;
`)},
	},
}

func TestDatabaseStartsMigrated(t *testing.T) {
	t.Parallel()
	pool := NewPool(t)
	var name string
	require.NoError(t, pool.QueryRow(context.Background(), "SELECT name FROM pgtest_fixture.things WHERE id = 1").Scan(&name))
	assert.Equal(t, "from the template", name)
}

func TestDatabasesAreIsolated(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, b := NewPool(t), NewPool(t)

	_, err := a.Exec(ctx, "INSERT INTO pgtest_fixture.things VALUES (2, 'only in a')")
	require.NoError(t, err)
	_, err = a.Exec(ctx, "CREATE TABLE extra (x int)")
	require.NoError(t, err)

	var n int
	require.NoError(t, b.QueryRow(ctx, "SELECT count(*) FROM pgtest_fixture.things").Scan(&n))
	assert.Equal(t, 1, n, "b must not see a's row")
	var extra *string
	require.NoError(t, b.QueryRow(ctx, "SELECT to_regclass('extra')::text").Scan(&extra))
	assert.Nil(t, extra, "b must not see a's table")

	var dbA, dbB string
	require.NoError(t, a.QueryRow(ctx, "SELECT current_database()").Scan(&dbA))
	require.NoError(t, b.QueryRow(ctx, "SELECT current_database()").Scan(&dbB))
	assert.NotEqual(t, dbA, dbB)
}

func TestDatabaseDroppedAfterTest(t *testing.T) {
	t.Parallel()
	var name string
	t.Run("uses a database", func(t *testing.T) {
		require.NoError(t, NewPool(t).QueryRow(context.Background(), "SELECT current_database()").Scan(&name))
	})
	var exists bool
	require.NoError(t, current.admin.QueryRow(context.Background(),
		"SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists))
	assert.False(t, exists, "database %s should be dropped when its test ends", name)
}

func TestStartClusterStopsAndRestarts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var pid int
	var dataDir string
	t.Run("private cluster", func(t *testing.T) {
		c := StartCluster(t)
		pid, dataDir = c.Pid(), c.DataDir()
		conn, err := pgx.Connect(ctx, c.DSN("postgres"))
		require.NoError(t, err)
		require.NoError(t, conn.Close(ctx))

		require.NoError(t, c.Stop(ctx))
		assert.False(t, c.Running())
		_, err = pgx.Connect(ctx, c.DSN("postgres"))
		require.Error(t, err, "stopped cluster must refuse connections")

		port := c.Port()
		require.NoError(t, c.Start(ctx))
		assert.Equal(t, port, c.Port(), "a restart keeps the port clients know")
		conn, err = pgx.Connect(ctx, c.DSN("postgres"))
		require.NoError(t, err)
		require.NoError(t, conn.Close(ctx))
		pid = c.Pid()
	})
	assertGone(t, pid, dataDir)
}

// childEnv makes the test binary a child of TestHarnessCleanup: instead of
// running tests it starts the harness, reports its cluster and exits or
// waits to be stopped.
const childEnv = "PGTEST_CHILD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(run(func() int { return child(mode) }, []migrations.Set{fixture}))
	}
	Main(m, fixture)
}

func child(mode string) int {
	if err := current.ensureStarted(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("CLUSTER %d %s\n", current.cluster.Pid(), current.dir)
	if mode == "wait" {
		time.Sleep(time.Minute)
	}
	return 0
}

func TestHarnessCleanup(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		mode string
		stop func(*os.Process) error
		// kept reports whether the directory may remain: after SIGKILL no
		// code of ours runs; only the parent-death signal stops postgres.
		kept bool
	}{
		{"tests end", "exit", nil, false},
		{"interrupted", "wait", func(p *os.Process) error { return p.Signal(syscall.SIGINT) }, false},
		{"killed", "wait", func(p *os.Process) error { return p.Kill() }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(os.Args[0])
			// The child always runs its own cluster, whatever this run uses.
			cmd.Env = append(withoutEnv(os.Environ(), "DATABASE_URL"), childEnv+"="+tc.mode)
			cmd.Stderr = os.Stderr
			out, err := cmd.StdoutPipe()
			require.NoError(t, err)
			require.NoError(t, cmd.Start())
			defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

			pid, dir := readClusterLine(t, bufio.NewScanner(out))
			require.True(t, alive(pid), "cluster runs while the child does")
			if tc.stop != nil {
				require.NoError(t, tc.stop(cmd.Process))
			}
			_ = cmd.Wait()
			waitGone(t, pid)
			if tc.kept {
				_ = os.RemoveAll(dir)
				return
			}
			_, err = os.Stat(dir)
			assert.True(t, errors.Is(err, os.ErrNotExist), "cluster directory %s should be removed", dir)
		})
	}
}

func withoutEnv(env []string, name string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	return out
}

func readClusterLine(t *testing.T, sc *bufio.Scanner) (int, string) {
	t.Helper()
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) == 3 && fields[0] == "CLUSTER" {
			pid, err := strconv.Atoi(fields[1])
			require.NoError(t, err)
			return pid, fields[2]
		}
	}
	t.Fatal("child did not report its cluster")
	return 0, ""
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for alive(pid) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	assert.False(t, alive(pid), "postgres (pid %d) must not outlive the tests", pid)
}

func assertGone(t *testing.T, pid int, dataDir string) {
	t.Helper()
	waitGone(t, pid)
	_, err := os.Stat(dataDir)
	assert.True(t, errors.Is(err, os.ErrNotExist), "data directory %s should be removed", dataDir)
}
