package store

import (
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/platforma/platforma/migrations"
	"github.com/platforma/platforma/services/kit/migrate"
	"github.com/platforma/platforma/services/kit/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m, migrations.OpLog) }

// runtimePool is a pool on a fresh database as OpLogService's runtime
// role, as `oplog serve` connects, and one as the superuser for checks.
func runtimePool(t *testing.T) (runtime, admin *pgxpool.Pool) {
	t.Helper()
	if !pgtest.HasRoles(t) {
		t.Skip("needs the services' roles: the test harness's own cluster (unset DATABASE_URL)")
	}
	dsn := pgtest.NewDatabase(t)
	var err error
	runtime, err = pgxpool.New(context.Background(), pgtest.AsRole(dsn, migrate.DefaultRoles("oplog").Runtime))
	require.NoError(t, err)
	t.Cleanup(runtime.Close)
	admin, err = pgxpool.New(context.Background(), dsn)
	require.NoError(t, err)
	t.Cleanup(admin.Close)
	return runtime, admin
}

func row(at time.Time) *Row {
	r := &Row{CreateTime: at.UTC().Truncate(time.Microsecond), OperationType: 1, Outcome: 1, ResourceID: []byte("shop-1")}
	_, _ = rand.Read(r.ID[:])
	_, _ = rand.Read(r.UserID[:])
	return r
}

// The runtime role has no CREATE on the schema, yet the maintenance task
// and the write path still create the months they need, through the
// owner's function; the partitions belong to the owner and carry the
// parent's indexes. A batch written twice takes the write path's other
// branch (a temporary staging table: the runtime role's TEMPORARY).
func TestRuntimeRoleCreatesPartitionsThroughTheFunction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, admin := runtimePool(t)
	now := time.Now().UTC()

	require.NoError(t, newPartitions(pool).EnsureRange(ctx, now.AddDate(0, -2, 0), now.AddDate(0, 1, 0)))
	for m := now.AddDate(0, -2, 0); !m.After(now.AddDate(0, 1, 0)); m = m.AddDate(0, 1, 0) {
		var owner string
		var indexes int
		require.NoError(t, admin.QueryRow(ctx, `
SELECT c.relowner::regrole::text, (SELECT count(*) FROM pg_index i WHERE i.indrelid = c.oid)
FROM pg_class c JOIN pg_inherits h ON h.inhrelid = c.oid
WHERE c.oid = to_regclass('oplog.' || $1) AND h.inhparent = 'oplog.operation_logs'::regclass`, PartitionName(m)).Scan(&owner, &indexes))
		assert.Equal(t, "oplog_owner", owner, PartitionName(m))
		assert.Equal(t, 4, indexes, "%s: the primary key and the three indexes of 0003", PartitionName(m))
	}

	// A month nobody prepared: the write path creates it.
	next := now.AddDate(0, 2, 0)
	rows := []*Row{row(next), row(now)}
	st := New(pool, Options{})
	parts := st.Partitions()
	require.NoError(t, parts.EnsureFor(ctx, rows))
	fresh, _, err := st.WriteRows(ctx, rows)
	require.NoError(t, err)
	assert.Len(t, fresh, 2)
	fresh, inserted, err := st.WriteRows(ctx, rows)
	require.NoError(t, err, "a resent batch goes through the staging table")
	assert.Empty(t, fresh)
	assert.Empty(t, inserted)
	var stored int
	require.NoError(t, admin.QueryRow(ctx, "SELECT count(*) FROM oplog."+PartitionName(next)).Scan(&stored))
	assert.Equal(t, 1, stored)
}

// Replicas create the same months at once: each month once, no errors.
func TestConcurrentPartitionCreation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := runtimePool(t)
	now := time.Now().UTC()
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = newPartitions(pool).EnsureRange(ctx, now.AddDate(0, -6, 0), now.AddDate(0, 1, 0))
		}()
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
}

// The function creates a month's partition of the log and nothing else;
// the runtime role cannot create a table any other way.
func TestPartitionFunctionCreatesOnlyAMonthOfTheLog(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, admin := runtimePool(t)
	code := func(err error) string {
		if pgErr := (*pgconn.PgError)(nil); errors.As(err, &pgErr) {
			return pgErr.Code
		}
		return ""
	}

	var name string
	require.NoError(t, pool.QueryRow(ctx, "SELECT oplog.create_operation_logs_partition('2026-03-01')").Scan(&name))
	assert.Equal(t, "operation_logs_p202603", name)
	var bounds string
	require.NoError(t, admin.QueryRow(ctx, "SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE oid = 'oplog.operation_logs_p202603'::regclass").Scan(&bounds))
	assert.Equal(t, "FOR VALUES FROM ('2026-03-01 00:00:00+00') TO ('2026-04-01 00:00:00+00')", bounds)
	require.NoError(t, pool.QueryRow(ctx, "SELECT oplog.create_operation_logs_partition('2026-03-01')").Scan(&name), "idempotent")

	for _, month := range []string{"2026-03-15", "1999-12-01", "2100-01-01", "infinity"} {
		_, err := pool.Exec(ctx, "SELECT oplog.create_operation_logs_partition($1::date)", month)
		require.Error(t, err, month)
		assert.Equal(t, "22023", code(err), "%s: %v", month, err)
	}
	_, err := pool.Exec(ctx, "SELECT oplog.create_operation_logs_partition(NULL)")
	assert.Equal(t, "22023", code(err), "%v", err)

	for _, sql := range []string{
		"CREATE TABLE oplog.operation_logs_p203001 PARTITION OF oplog.operation_logs FOR VALUES FROM ('2030-01-01') TO ('2030-02-01')",
		"CREATE TABLE oplog.anything (x int)",
		"CREATE TABLE public.anything (x int)",
		"DROP TABLE oplog.operation_logs_p202603",
		"ALTER TABLE oplog.operation_logs DETACH PARTITION oplog.operation_logs_p202603",
	} {
		_, err := pool.Exec(ctx, sql)
		require.Error(t, err, sql)
		assert.Equal(t, "42501", code(err), "%s: %v", sql, err)
	}
}
