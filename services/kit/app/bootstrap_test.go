package app_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/platforma/platforma/migrations"
	"github.com/platforma/platforma/services/kit/app"
	"github.com/platforma/platforma/services/kit/migrate"
	"github.com/platforma/platforma/services/kit/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var roleCounter atomic.Int64

var profileLike = app.Service{Name: "profile", Migrations: migrations.Profile}

// TestBootstrapCommandPreparesADatabaseForMigrate: what a deployment's
// set-up job runs, as the administrator, on an empty database: afterwards
// the owner role can migrate, the roles have scram passwords from their
// files, and running it again changes nothing and fails nothing.
func TestBootstrapCommandPreparesADatabaseForMigrate(t *testing.T) {
	t.Parallel()
	if !pgtest.HasRoles(t) {
		t.Skip("creates roles: needs the test harness's own cluster (unset DATABASE_URL)")
	}
	ctx := context.Background()
	admin := pgtest.NewBlankDatabase(t)
	// Roles are the cluster's, not the database's: names of this test only.
	n := roleCounter.Add(1)
	owner, runtime := fmt.Sprintf("bootstrap_owner_%d_%d", os.Getpid(), n), fmt.Sprintf("bootstrap_rt_%d_%d", os.Getpid(), n)
	conn, err := pgx.Connect(ctx, admin)
	require.NoError(t, err)
	t.Cleanup(func() {
		// After the database is dropped (cleanups run last-in first-out,
		// and the database's was registered first), the roles can go.
		_, _ = conn.Exec(context.Background(), "DROP ROLE IF EXISTS "+owner+"; DROP ROLE IF EXISTS "+runtime)
		_ = conn.Close(context.Background())
	})
	dir := t.TempDir()
	ownerPW, runtimePW := filepath.Join(dir, "owner"), filepath.Join(dir, "runtime")
	require.NoError(t, os.WriteFile(ownerPW, []byte("owner-secret-1\n"), 0o600))
	require.NoError(t, os.WriteFile(runtimePW, []byte("runtime-secret-2"), 0o600))

	var stderr bytes.Buffer
	bootstrap := func() int {
		stderr.Reset()
		return app.Run(ctx, profileLike, app.Env{
			Args: []string{"bootstrap", "-owner-role", owner, "-runtime-role", runtime},
			Getenv: func(k string) string {
				return map[string]string{"DATABASE_URL": admin, "OWNER_PASSWORD_FILE": ownerPW, "RUNTIME_PASSWORD_FILE": runtimePW}[k]
			},
			Stderr: &stderr,
		})
	}
	require.Equal(t, 0, bootstrap(), stderr.String())
	assert.NotContains(t, stderr.String(), "secret", "passwords are never logged")

	var schemaOwner string
	require.NoError(t, conn.QueryRow(ctx, `SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = $1`, migrations.Profile.Schema).Scan(&schemaOwner))
	assert.Equal(t, owner, schemaOwner)
	for _, role := range []string{owner, runtime} {
		var verifier string
		require.NoError(t, conn.QueryRow(ctx, `SELECT coalesce(rolpassword, '') FROM pg_authid WHERE rolname = $1`, role).Scan(&verifier))
		assert.True(t, strings.HasPrefix(verifier, "SCRAM-SHA-256$4096:"), "%s has a scram verifier, got %q", role, verifier)
	}

	_, err = migrate.Up(ctx, pgtest.AsRole(admin, owner), migrations.Profile, nil)
	require.NoError(t, err, "the owner role migrates the bootstrapped database")

	require.Equal(t, 0, bootstrap(), "a second run: %s", stderr.String())
	require.NoError(t, conn.QueryRow(ctx, `SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = $1`, migrations.Profile.Schema).Scan(&schemaOwner))
	assert.Equal(t, owner, schemaOwner)
}

func TestBootstrapCommandRefusesBadSetUpBeforeTouchingTheDatabase(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		contains string
	}{
		{"same role twice", []string{"-owner-role", "x", "-runtime-role", "x"}, 2, "must differ"},
		{"no database", nil, 2, "DATABASE_URL (-database-url) is required"},
		{"password file missing", []string{"-database-url", "postgres://nobody@127.0.0.1:1/none", "-owner-password-file", "/nonexistent/pw"}, 1, "the password of profile_owner"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stderr bytes.Buffer
			code := app.Run(context.Background(), profileLike, app.Env{
				Args: append([]string{"bootstrap"}, tc.args...), Getenv: func(string) string { return "" }, Stderr: &stderr,
			})
			assert.Equal(t, tc.code, code, stderr.String())
			assert.Contains(t, stderr.String(), tc.contains)
		})
	}
}
