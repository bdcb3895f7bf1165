package migrate_test

import (
	"context"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/platforma/platforma/migrations"
	"github.com/platforma/platforma/services/kit/migrate"
	"github.com/platforma/platforma/services/kit/pgtest"
)

// No migrations in the template: these tests apply them.
func TestMain(m *testing.M) { pgtest.Main(m) }

func TestUpCreatesEachSchemaWithItsOwnVersionTable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)

	for _, set := range migrations.All {
		applied, err := migrate.Up(ctx, dsn, set, nil)
		require.NoError(t, err, set.Schema)
		assert.NotEmpty(t, applied, "%s: first run applies its migrations", set.Schema)
	}

	conn, err := pgx.Connect(ctx, dsn)
	require.NoError(t, err)
	defer conn.Close(ctx)
	for _, set := range migrations.All {
		var versionTable *string
		require.NoError(t, conn.QueryRow(ctx, "SELECT to_regclass($1)::text", migrate.VersionTable(set.Schema)).Scan(&versionTable))
		require.NotNil(t, versionTable, "%s keeps goose's table in its own schema", set.Schema)
	}
	var publicGoose *string
	require.NoError(t, conn.QueryRow(ctx, "SELECT to_regclass('public.goose_db_version')::text").Scan(&publicGoose))
	assert.Nil(t, publicGoose, "no shared version table in public")

	// A second run has nothing to do.
	for _, set := range migrations.All {
		applied, err := migrate.Up(ctx, dsn, set, nil)
		require.NoError(t, err)
		assert.Empty(t, applied, "%s: nothing pending on the second run", set.Schema)
	}
}

func TestConcurrentUpIsSerialised(t *testing.T) {
	t.Parallel()
	// Replicas starting together all run `migrate`; exactly one applies.
	ctx := context.Background()
	dsn := pgtest.NewDatabase(t)
	var wg sync.WaitGroup
	results := make([][]int64, 4)
	errs := make([]error, 4)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = migrate.Up(ctx, dsn, migrations.Profile, nil)
		}()
	}
	wg.Wait()
	total := 0
	for i := range results {
		require.NoError(t, errs[i])
		total += len(results[i])
	}
	applied, err := migrate.Up(ctx, dsn, migrations.Profile, nil)
	require.NoError(t, err)
	assert.Empty(t, applied)

	conn, err := pgx.Connect(ctx, dsn)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var rows int
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM "+migrate.VersionTable("profile")+" WHERE version_id > 0").Scan(&rows))
	assert.Equal(t, rows, total, "each migration applied exactly once across the concurrent runs")
}
