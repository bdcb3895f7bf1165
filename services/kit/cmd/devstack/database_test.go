package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/platforma/platforma/services/kit/pgcluster"
)

// refused requires a connection with dsn to be refused for its missing
// or wrong password.
func refused(t *testing.T, dsn string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err == nil {
		_ = conn.Close(ctx)
		t.Fatalf("connected without the role's password: %s", dsn)
	}
	var pgErr *pgconn.PgError
	require.True(t, errors.As(err, &pgErr), "%v", err)
	assert.Equal(t, "28P01", pgErr.Code, "password authentication failed: %v", err)
}

func noPasswordFile(t *testing.T) {
	t.Helper()
	// libpq's conventions, which pgx follows: no password from elsewhere.
	t.Setenv("PGPASSFILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("PGPASSWORD", "")
}

// `make run`'s cluster, while the stack runs: every connection needs its
// role's password, over the socket and TCP, the superuser's too; the
// passwords are in a file only its owner can read; and a service's
// runtime role can use its own schema only.
func databaseIsLocked(t *testing.T, cfg config) {
	noPasswordFile(t)
	ctx := context.Background()
	st, err := os.Stat(filepath.Join(cfg.dataDir, pgpassFile))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm(), "the password file is its owner's alone")
	hba, err := os.ReadFile(filepath.Join(cfg.dataDir, "pg", "pg_hba.conf"))
	require.NoError(t, err)
	assert.Equal(t, pgcluster.PasswordHBA, string(hba))

	socket := filepath.Join(cfg.dataDir, "run")
	for _, role := range clusterRoles(cfg.services) {
		refused(t, fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", socket, cfg.pgPort, role, database))
		refused(t, fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", role, cfg.pgPort, database))
		refused(t, fmt.Sprintf("postgres://%s:wrong@127.0.0.1:%d/%s?sslmode=disable", role, cfg.pgPort, database))
	}

	passwords, generated, err := loadPasswords(cfg.dataDir, cfg.services)
	require.NoError(t, err)
	assert.Empty(t, generated, "the passwords of the running stack are kept")
	conn, err := pgx.Connect(ctx, fmt.Sprintf("postgres://profile:%s@127.0.0.1:%d/%s?sslmode=disable", passwords["profile"], cfg.pgPort, database))
	require.NoError(t, err)
	defer conn.Close(ctx)
	var n int
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM profile.profiles").Scan(&n), "its own tables")
	for _, sql := range []string{
		"SELECT count(*) FROM oplog.operation_logs",
		"DELETE FROM reviewmeta.review_metadata",
		"CREATE SCHEMA squatter",
		"CREATE TABLE profile.squatter (x int)",
		"DROP TABLE profile.profiles",
	} {
		_, err := conn.Exec(ctx, sql)
		var pgErr *pgconn.PgError
		if assert.True(t, errors.As(err, &pgErr), "%s: %v", sql, err) {
			assert.Equal(t, "42501", pgErr.Code, "%s: %v", sql, err)
		}
	}
}

// A .data/ from before passwords (a cluster that trusted every local
// connection) is converted on the next start, before anyone can connect;
// a lost password file gets new passwords that work.
//
// Not parallel: noPasswordFile uses t.Setenv.
func TestClusterWithoutPasswordsIsConverted(t *testing.T) {
	noPasswordFile(t)
	ctx := context.Background()
	dataDir, err := os.MkdirTemp("", "platforma-devstack-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dataDir) })
	require.NoError(t, os.Chmod(dataDir, 0o755))
	services := freeServices(t)
	port := freePort(t)
	socketDSN := func(password string) string {
		return fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres sslmode=disable password='%s'", filepath.Join(dataDir, "run"), port, password)
	}

	// The old cluster: trust.
	old, err := pgcluster.New(ctx, pgcluster.Options{
		DataDir: filepath.Join(dataDir, "pg"), SocketDir: filepath.Join(dataDir, "run"), LogFile: filepath.Join(dataDir, "postgres.log"),
		Port: port, ParentDeathSignal: syscall.SIGINT,
	})
	require.NoError(t, err)
	require.NoError(t, old.Start(ctx))
	conn, err := pgx.Connect(ctx, socketDSN(""))
	require.NoError(t, err, "the old cluster trusts")
	_ = conn.Close(ctx)
	require.NoError(t, old.Stop(ctx))

	start := func(reset bool) (*pgcluster.Cluster, map[string]string) {
		passwords, generated, err := loadPasswords(dataDir, services)
		require.NoError(t, err)
		assert.Equal(t, reset, generated[pgcluster.Superuser])
		c, err := startCluster(ctx, &console{w: &syncBuffer{}}, dataDir, port, passwords[pgcluster.Superuser], generated[pgcluster.Superuser])
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Stop(context.Background()) })
		return c, passwords
	}
	c, passwords := start(true)
	refused(t, socketDSN(""))
	refused(t, fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port))
	conn, err = pgx.Connect(ctx, socketDSN(passwords[pgcluster.Superuser]))
	require.NoError(t, err)
	_ = conn.Close(ctx)
	require.NoError(t, bootstrap(ctx, c, services, passwords))
	conn, err = pgx.Connect(ctx, c.URL("oplog", passwords["oplog"], database))
	require.NoError(t, err, "the service roles' passwords are set")
	_ = conn.Close(ctx)
	require.NoError(t, c.Stop(ctx))

	// Same passwords next time: nothing to reset.
	c, _ = start(false)
	require.NoError(t, c.Stop(ctx))

	require.NoError(t, os.Remove(filepath.Join(dataDir, pgpassFile)))
	c, fresh := start(true)
	require.NotEqual(t, passwords[pgcluster.Superuser], fresh[pgcluster.Superuser])
	refused(t, socketDSN(passwords[pgcluster.Superuser]))
	conn, err = pgx.Connect(ctx, socketDSN(fresh[pgcluster.Superuser]))
	require.NoError(t, err, "a lost password is replaced")
	_ = conn.Close(ctx)
	require.NoError(t, c.Stop(ctx))
}
