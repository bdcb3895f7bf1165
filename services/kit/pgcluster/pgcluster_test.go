package pgcluster_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/platforma/platforma/services/kit/pgcluster"
)

func TestFindBinariesHonoursPGBIN(t *testing.T) {
	dir, err := pgcluster.FindBinaries()
	require.NoError(t, err, "this machine needs Postgres server binaries for the test suite")
	assert.FileExists(t, dir+"/initdb")
	assert.FileExists(t, dir+"/postgres")

	t.Setenv("PG_BIN", dir)
	got, err := pgcluster.FindBinaries()
	require.NoError(t, err)
	assert.Equal(t, dir, got)

	t.Setenv("PG_BIN", t.TempDir())
	_, err = pgcluster.FindBinaries()
	assert.ErrorContains(t, err, "does not contain initdb and postgres")
}

func TestNewNeedsADataDir(t *testing.T) {
	t.Parallel()
	_, err := pgcluster.New(context.Background(), pgcluster.Options{})
	assert.ErrorContains(t, err, "DataDir is required")
}

// A cluster with a Password asks every connection for it, over the Unix
// socket and TCP, the superuser's included; DSN carries it.
func TestClusterWithPasswordRefusesConnectionsWithout(t *testing.T) {
	t.Setenv("PGPASSFILE", filepath.Join(t.TempDir(), "none"))
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "pgcluster-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755)) // reachable by the postgres user when root
	c, err := pgcluster.New(ctx, pgcluster.Options{DataDir: filepath.Join(dir, "data"), Password: "s3cret-Passw0rd", ParentDeathSignal: syscall.SIGQUIT})
	require.NoError(t, err)
	require.NoError(t, c.Start(ctx))
	t.Cleanup(func() { _ = c.Stop(context.Background()) })

	hba, err := os.ReadFile(filepath.Join(dir, "data", "pg_hba.conf"))
	require.NoError(t, err)
	assert.Equal(t, pgcluster.PasswordHBA, string(hba))

	conn, err := pgx.Connect(ctx, c.DSN("postgres"))
	require.NoError(t, err, "the DSN carries the password")
	verifier, err := pgcluster.ScramVerifier("r0le-password")
	require.NoError(t, err)
	assert.Regexp(t, `^SCRAM-SHA-256\$4096:[A-Za-z0-9+/=]{24}\$[A-Za-z0-9+/=]{44}:[A-Za-z0-9+/=]{44}$`, verifier)
	_, err = conn.Exec(ctx, "CREATE ROLE someone LOGIN PASSWORD '"+verifier+"'")
	require.NoError(t, err)
	require.NoError(t, conn.Close(ctx))

	for _, dsn := range []string{
		strings.Replace(c.DSN("postgres"), "s3cret-Passw0rd", "", 1),
		strings.Replace(c.DSN("postgres"), "s3cret-Passw0rd", "wrong", 1),
		c.TCPURL(pgcluster.Superuser, "postgres"),
		c.URL("someone", "wrong", "postgres"),
	} {
		_, err := pgx.Connect(ctx, dsn)
		var pgErr *pgconn.PgError
		if assert.True(t, errors.As(err, &pgErr), "%s: %v", dsn, err) {
			assert.Equal(t, "28P01", pgErr.Code, "%s: %v", dsn, err)
		}
	}
	conn, err = pgx.Connect(ctx, c.URL("someone", "r0le-password", "postgres"))
	require.NoError(t, err, "a password set through its SCRAM verifier")
	require.NoError(t, conn.Close(ctx))
}

// A standby replays what its primary writes, read-only, and starts
// serving from the copy pg_basebackup made.
func TestStandbyReplaysItsPrimary(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "pgcluster-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755)) // reachable by the postgres user when root
	primary, err := pgcluster.New(ctx, pgcluster.Options{DataDir: filepath.Join(dir, "primary"), ParentDeathSignal: syscall.SIGQUIT})
	require.NoError(t, err)
	require.NoError(t, primary.Start(ctx))
	t.Cleanup(func() { _ = primary.Stop(context.Background()) })
	conn, err := pgx.Connect(ctx, primary.DSN("postgres"))
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
	require.NoError(t, err)

	standby, err := primary.NewStandby(ctx, pgcluster.Options{DataDir: filepath.Join(dir, "standby"), ParentDeathSignal: syscall.SIGQUIT})
	require.NoError(t, err)
	require.NoError(t, standby.Start(ctx))
	t.Cleanup(func() { _ = standby.Stop(context.Background()) })
	assert.NotEqual(t, primary.Port(), standby.Port())

	sconn, err := pgx.Connect(ctx, standby.DSN("postgres"))
	require.NoError(t, err)
	defer sconn.Close(ctx)
	var recovery bool
	require.NoError(t, sconn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&recovery))
	assert.True(t, recovery, "a standby")
	_, err = sconn.Exec(ctx, "INSERT INTO t VALUES (3)")
	assert.ErrorContains(t, err, "read-only")

	_, err = conn.Exec(ctx, "INSERT INTO t VALUES (2)")
	require.NoError(t, err)
	assert.Eventually(t, func() bool {
		var n int
		return sconn.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n) == nil && n == 2
	}, 20*time.Second, 20*time.Millisecond, "the primary's later write replayed")

	_, err = primary.NewStandby(ctx, pgcluster.Options{DataDir: filepath.Join(dir, "standby")})
	assert.ErrorContains(t, err, "already holds a cluster")
}
