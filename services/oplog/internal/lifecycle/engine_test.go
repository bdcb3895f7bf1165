package lifecycle_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gocloud.dev/blob"

	"github.com/platforma/platforma/migrations"
	"github.com/platforma/platforma/services/kit/apptest"
	"github.com/platforma/platforma/services/kit/migrate"
	"github.com/platforma/platforma/services/kit/miniotest"
	"github.com/platforma/platforma/services/kit/pgtest"
	"github.com/platforma/platforma/services/oplog/internal/coldstore"
	"github.com/platforma/platforma/services/oplog/internal/lifecycle"
	"github.com/platforma/platforma/services/oplog/internal/store"
)

func TestMain(m *testing.M) {
	runAsCLI()
	pgtest.Main(m, migrations.OpLog)
}

// now is the tests' clock: 14 months of partitions end here.
var now = time.Date(2026, 12, 15, 3, 30, 0, 0, time.UTC)

func month(y int, m time.Month) time.Time { return time.Date(y, m, 1, 0, 0, 0, 0, time.UTC) }

// testConfig: 60 days hot, 300 days kept, 420 days of roll-ups.
func testConfig(storeURL string) lifecycle.Config {
	return lifecycle.Config{
		Store: storeURL, HotWindow: 60 * 24 * time.Hour, Retention: 300 * 24 * time.Hour,
		RollupRetention: 420 * 24 * time.Hour, RunAt: "03:30",
	}
}

type env struct {
	pool   *pgxpool.Pool
	dsn    string
	dir    string
	bucket *blob.Bucket
	cfg    lifecycle.Config
	// cliExtraEnv is added to the CLI's environment (crash_test.go).
	cliExtraEnv []string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvOn(t, pgtest.NewDatabase(t))
}

// newEnvOn is newEnv on a migrated database of the caller's.
func newEnvOn(t *testing.T, dsn string) *env {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), dsn)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	dir := t.TempDir()
	bucket, err := coldstore.OpenBucket(context.Background(), dir)
	require.NoError(t, err)
	t.Cleanup(func() { _ = bucket.Close() })
	return &env{pool: pool, dsn: dsn, dir: dir, bucket: bucket, cfg: testConfig(dir)}
}

// engine is an engine on a fresh connection, with the clock at.
func (e *env) engine(t *testing.T, at time.Time) *lifecycle.Engine {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), e.dsn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return lifecycle.NewEngine(conn, e.bucket, e.cfg, func() time.Time { return at }, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// fill writes n rows into each month from first to last through the
// store's write path (so the roll-ups count them), and returns the rows
// per month.
func (e *env) fill(t *testing.T, first, last time.Time, n int) map[time.Time]int {
	t.Helper()
	ctx := context.Background()
	st := store.New(e.pool, store.Options{})
	require.NoError(t, st.Partitions().EnsureRange(ctx, first, last))
	rng := rand.New(rand.NewPCG(uint64(first.Unix()), 9))
	out := map[time.Time]int{}
	for m := first; !m.After(last); m = m.AddDate(0, 1, 0) {
		span := m.AddDate(0, 1, 0).Sub(m)
		rows := make([]*store.Row, n)
		for i := range rows {
			r := &store.Row{
				ID:            uuid.Must(uuid.NewV7()),
				CreateTime:    m.Add(time.Duration(rng.Int64N(int64(span)))).Truncate(time.Microsecond),
				UserID:        uuid.New(),
				OperationType: int16(1 + rng.IntN(7)),
				Outcome:       int16(1 + rng.IntN(2)),
				RetryCount:    int32(rng.IntN(3)),
			}
			if i%2 == 0 {
				r.PlatformAccountID = []byte(fmt.Sprintf("acct-%d", i))
				r.RequestPayload = []byte(`{"page": 1, "q": "리뷰"}`)
				ms := rng.Int64N(5000)
				r.ExecutionTimeMs = &ms
			}
			if r.Outcome == 2 {
				r.ErrorType = []byte("TIMEOUT")
				code := int32(504)
				r.ErrorCode = &code
			}
			rows[i] = r
		}
		_, _, err := st.WriteRows(ctx, rows)
		require.NoError(t, err)
		out[m] = n
	}
	return out
}

func (e *env) parent(t *testing.T, m time.Time) string {
	t.Helper()
	var parent string
	err := e.pool.QueryRow(context.Background(), `
		SELECT coalesce((SELECT p.relname FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent WHERE i.inhrelid = c.oid), 'none')
		FROM pg_class c WHERE c.relname = $1 AND c.relnamespace = 'oplog'::regnamespace`, store.PartitionName(m)).Scan(&parent)
	if err == pgx.ErrNoRows {
		return "dropped"
	}
	require.NoError(t, err)
	return parent
}

func (e *env) states(t *testing.T) map[string]string {
	t.Helper()
	rows, err := e.pool.Query(context.Background(), `SELECT to_char(month, 'YYYY-MM'), state FROM oplog.lifecycle_months`)
	require.NoError(t, err)
	out := map[string]string{}
	var m, s string
	_, err = pgx.ForEachRow(rows, []any{&m, &s}, func() error { out[m] = s; return nil })
	require.NoError(t, err)
	return out
}

func (e *env) count(t *testing.T, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	require.NoError(t, e.pool.QueryRow(context.Background(), sql, args...).Scan(&n))
	return n
}

// Fourteen months: the three newest stay hot, eight are archived with a
// verified export, the three oldest are dropped; hot queries and the
// statistics of the dropped months are untouched; a second run has
// nothing to do.
func TestFourteenMonthsEndToEnd(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	first, last := month(2025, 11), month(2026, 12)
	e.fill(t, first, last, 300)
	statsBefore := e.count(t, `SELECT coalesce(sum(total), 0) FROM oplog.operation_counts_hourly`)

	eng := e.engine(t, now)
	plan, err := eng.Plan(ctx)
	require.NoError(t, err)
	planned := map[string][]lifecycle.Action{}
	for _, s := range plan {
		if !s.Month.IsZero() {
			planned[s.Month.Format("2006-01")] = append(planned[s.Month.Format("2006-01")], s.Action)
		}
	}
	assert.Equal(t, []lifecycle.Action{lifecycle.Archive, lifecycle.Export}, planned["2026-09"])
	assert.Nil(t, planned["2026-10"], "ended 45 days ago: hot")
	assert.Equal(t, []lifecycle.Action{lifecycle.Archive, lifecycle.Export, lifecycle.Drop}, planned["2026-01"])
	assert.Empty(t, e.states(t), "planning changes nothing")

	steps, err := eng.Run(ctx, false)
	require.NoError(t, err)
	var drops []string
	for _, s := range steps {
		assert.Equal(t, "ok", s.Result, "%s %s", s.Month.Format("2006-01"), s.Action)
		if s.Action == lifecycle.Drop {
			drops = append(drops, s.Month.Format("2006-01"))
		}
	}
	assert.Equal(t, []string{"2025-11", "2025-12", "2026-01"}, drops, "exported, verified and dropped in one run")
	var taken []lifecycle.Action
	for _, s := range steps {
		if s.Month.Equal(month(2026, 1)) {
			taken = append(taken, s.Action)
		}
	}
	assert.Equal(t, planned["2026-01"], taken, "the run took the planned steps, no more")

	for m := first; !m.After(last); m = m.AddDate(0, 1, 0) {
		label := m.Format("2006-01")
		switch {
		case m.Before(month(2026, 2)):
			assert.Equal(t, "dropped", e.parent(t, m), label)
			assert.Equal(t, "dropped", e.states(t)[label], label)
		case m.Before(month(2026, 10)):
			assert.Equal(t, "operation_logs_archive", e.parent(t, m), label)
			assert.Equal(t, "verified", e.states(t)[label], label)
		default:
			assert.Equal(t, "operation_logs", e.parent(t, m), label)
			assert.Empty(t, e.states(t)[label], label)
		}
	}
	assert.Equal(t, int64(3*300), e.count(t, `SELECT count(*) FROM oplog.operation_logs`), "the hot months keep every row")
	assert.Equal(t, int64(8*300), e.count(t, `SELECT count(*) FROM oplog.operation_logs_archive`))
	assert.Equal(t, statsBefore, e.count(t, `SELECT coalesce(sum(total), 0) FROM oplog.operation_counts_hourly`),
		"the roll-ups keep the dropped months' statistics")
	// Lists: an archived month only when asked, a dropped one named as missing.
	st := store.New(e.pool, store.Options{})
	list := func(m time.Time, archived bool) (int, []string) {
		f := store.LogFilter{Since: m, Until: m.AddDate(0, 1, 0), IncludeArchived: archived, Limit: 1000}
		rows, err := st.ListLogs(ctx, f)
		require.NoError(t, err)
		missing, err := st.MissingMonths(ctx, f.Since, f.Until, archived)
		require.NoError(t, err)
		return len(rows), missing
	}
	n, missing := list(month(2026, 3), false)
	assert.Zero(t, n)
	assert.Equal(t, []string{"2026-03"}, missing, "archived, not asked for")
	n, missing = list(month(2026, 3), true)
	assert.Equal(t, 300, n)
	assert.Empty(t, missing)
	n, missing = list(month(2025, 12), true)
	assert.Zero(t, n)
	assert.Equal(t, []string{"2025-12"}, missing, "dropped: only in cold storage")
	n, missing = list(month(2026, 11), false)
	assert.Equal(t, 300, n, "hot queries unaffected")
	assert.Empty(t, missing)

	archivedIndexes := e.count(t, `SELECT count(*) FROM pg_indexes WHERE schemaname = 'oplog' AND tablename = $1`, store.PartitionName(month(2026, 5)))
	assert.Equal(t, int64(2), archivedIndexes, "an archived month keeps its primary key and the BRIN index only")

	steps, err = e.engine(t, now).Run(ctx, false)
	require.NoError(t, err)
	for _, s := range steps {
		assert.Equal(t, "purge-rollups", string(s.Action), "nothing left to do for any month")
	}
	runs := e.count(t, `SELECT count(*) FROM oplog.lifecycle_steps WHERE step = 'run' AND ok`)
	assert.Equal(t, int64(2), runs, "every run is recorded")

	// A year on, the roll-up retention takes the statistics of 2025-11.
	later := now.AddDate(0, 2, 0)
	_, err = e.engine(t, later).Run(ctx, false)
	require.NoError(t, err)
	assert.Zero(t, e.count(t, `SELECT count(*) FROM oplog.operation_counts_hourly WHERE bucket_start < $1`, later.Add(-e.cfg.RollupRetention)))
}

// A restore brings back exactly the rows that were exported.
func TestRestoreRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	m := month(2025, 12)
	e.fill(t, m, m, 2000)
	eng := e.engine(t, now)
	_, err := eng.Run(ctx, false) // archive, export, verify, and drop: it is past the retention
	require.NoError(t, err)
	require.Equal(t, "dropped", e.parent(t, m))
	var digestBefore string
	require.NoError(t, e.pool.QueryRow(ctx, `SELECT export_digest FROM oplog.lifecycle_months WHERE month = $1`, m).Scan(&digestBefore))

	man, added, err := e.engine(t, now).RestoreMonth(ctx, m, "")
	require.NoError(t, err)
	assert.Equal(t, int64(2000), added)
	assert.Equal(t, digestBefore, man.Digest, "the digest of the rows as they were in Postgres")
	assert.Equal(t, "operation_logs_archive", e.parent(t, m))
	assert.Equal(t, int64(2000), e.count(t, `SELECT count(*) FROM oplog.operation_logs_archive`))

	// Again: nothing new, still verified.
	_, added, err = e.engine(t, now).RestoreMonth(ctx, m, "")
	require.NoError(t, err)
	assert.Zero(t, added, "a repeated restore adds nothing")
	assert.Equal(t, "verified", e.states(t)[m.Format("2006-01")])
}

// A flipped byte or a missing file is caught by verify, and the month is
// not dropped.
func TestCorruptExportIsNeverDropped(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, damage := range []string{"flip a byte", "remove a file"} {
		t.Run(damage, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			m := month(2026, 5) // archived, within the retention
			e.fill(t, m, m, 1000)
			_, err := e.engine(t, now).Run(ctx, false)
			require.NoError(t, err)
			require.Equal(t, "verified", e.states(t)[m.Format("2006-01")])

			parts, err := filepath.Glob(filepath.Join(e.dir, "operation_logs", m.Format("2006-01"), "*", "part-*.parquet"))
			require.NoError(t, err)
			require.NotEmpty(t, parts)
			if damage == "flip a byte" {
				b, err := os.ReadFile(parts[0])
				require.NoError(t, err)
				b[len(b)/2] ^= 0x40
				require.NoError(t, os.WriteFile(parts[0], b, 0o644))
			} else {
				require.NoError(t, os.Remove(parts[0]))
			}
			_, err = e.engine(t, now).VerifyMonth(ctx, m)
			require.ErrorIs(t, err, coldstore.ErrCorrupt)

			// Past the retention, the run refuses the drop.
			later := m.AddDate(0, 1, 0).Add(e.cfg.Retention + 24*time.Hour)
			steps, err := e.engine(t, later).Run(ctx, false)
			require.Error(t, err)
			require.NotEmpty(t, steps)
			assert.Equal(t, lifecycle.Drop, steps[0].Action)
			assert.Contains(t, steps[0].Result, "did not verify")
			assert.Equal(t, "operation_logs_archive", e.parent(t, m), "still there")
			assert.Equal(t, int64(1000), e.count(t, `SELECT count(*) FROM oplog.operation_logs_archive`))
		})
	}
}

// A partition whose name and bounds are old but which holds a recent row
// is not dropped: retention reads the data.
func TestRetentionJudgesByTheData(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	e.cfg.DropWithoutExport = true
	old := month(2025, 1)
	_, err := e.pool.Exec(ctx, `CREATE TABLE oplog.operation_logs_p202501 PARTITION OF oplog.operation_logs_archive
		FOR VALUES FROM ('2025-01-01 00:00:00+00') TO ('2026-12-01 00:00:00+00')`)
	require.NoError(t, err)
	_, err = e.pool.Exec(ctx, `INSERT INTO oplog.operation_logs_p202501 (id, create_time, user_id, operation_type, outcome)
		VALUES (gen_random_uuid(), '2025-01-10', gen_random_uuid(), 1, 1), (gen_random_uuid(), '2026-11-20', gen_random_uuid(), 1, 1)`)
	require.NoError(t, err)

	steps, _ := e.engine(t, now).Run(ctx, false)
	for _, s := range steps {
		assert.NotEqual(t, lifecycle.Drop, s.Action)
		assert.NotEqual(t, lifecycle.DropUnexported, s.Action)
	}
	assert.Equal(t, "operation_logs_archive", e.parent(t, old))
	assert.Equal(t, int64(2), e.count(t, `SELECT count(*) FROM oplog.operation_logs_p202501`))
}

// One run at a time: a second engine finds the lock held.
func TestOneRunAtATime(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	holder, err := pgx.Connect(ctx, e.dsn)
	require.NoError(t, err)
	defer holder.Close(ctx)
	_, err = holder.Exec(ctx, `SELECT pg_advisory_lock(hashtext('oplog lifecycle'))`)
	require.NoError(t, err)
	_, err = e.engine(t, now).Run(ctx, false)
	require.ErrorIs(t, err, store.ErrLocked)
}

// The archive must keep the hot table's columns, in order: lists read
// both through one UNION ALL, and archiving moves partitions between them.
func TestArchiveHasTheHotTablesColumns(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	columns := func(table string) []string {
		rows, err := e.pool.Query(context.Background(), `
			SELECT attname || ' ' || format_type(atttypid, atttypmod) || CASE WHEN attnotnull THEN ' not null' ELSE '' END
			FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, table)
		require.NoError(t, err)
		out, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		return out
	}
	assert.Equal(t, columns("oplog.operation_logs"), columns("oplog.operation_logs_archive"))
}

// Archiving and exporting a month never blocks or fails ingest into the
// hot months: writes go on throughout, and none fails.
func TestIngestGoesOnWhileAMonthIsArchived(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	old := month(2026, 5)
	e.fill(t, old, old, 20_000)
	current := time.Now().UTC()
	st := store.New(e.pool, store.Options{})
	require.NoError(t, st.Partitions().EnsureRange(ctx, current, current))

	stop := make(chan struct{})
	written := make(chan int64)
	var writeErr error
	go func() {
		var n int64
		defer func() { written <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			rows := make([]*store.Row, 100)
			for i := range rows {
				rows[i] = &store.Row{ID: uuid.Must(uuid.NewV7()), CreateTime: time.Now().UTC().Truncate(time.Microsecond),
					UserID: uuid.New(), OperationType: 1, Outcome: 1}
			}
			if _, _, err := st.WriteRows(ctx, rows); err != nil {
				writeErr = err
				return
			}
			n += int64(len(rows))
		}
	}()
	time.Sleep(200 * time.Millisecond)
	steps, err := e.engine(t, now).Run(ctx, false)
	close(stop)
	n := <-written
	require.NoError(t, err)
	require.NoError(t, writeErr, "ingest saw no error")
	assert.Equal(t, lifecycle.Archive, steps[0].Action)
	assert.Equal(t, "operation_logs_archive", e.parent(t, old))
	assert.Greater(t, n, int64(0))
	assert.Equal(t, n, e.count(t, `SELECT count(*) FROM oplog.operation_logs WHERE create_time >= $1`, current.AddDate(0, 0, -1)),
		"every write landed")
}

// The same life on an S3-compatible store (a real MinIO): export, verify,
// drop, and restore from the bucket.
func TestLifeCycleOnS3(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	srv := miniotest.Start(t)
	bucket, err := coldstore.OpenBucketWith(ctx, srv.URL(srv.Bucket(t)),
		coldstore.Credentials{AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey})
	require.NoError(t, err)
	t.Cleanup(func() { _ = bucket.Close() })
	e.bucket = bucket
	m := month(2025, 12)
	e.fill(t, m, m, 3000)

	steps, err := e.engine(t, now).Run(ctx, false)
	require.NoError(t, err)
	var actions []lifecycle.Action
	for _, s := range steps {
		if !s.Month.IsZero() {
			actions = append(actions, s.Action)
		}
	}
	assert.Equal(t, []lifecycle.Action{lifecycle.Archive, lifecycle.Export, lifecycle.Drop}, actions)
	assert.Equal(t, "dropped", e.parent(t, m))
	exports, err := coldstore.Exports(ctx, bucket, m)
	require.NoError(t, err)
	require.Len(t, exports, 1)

	man, added, err := e.engine(t, now).RestoreMonth(ctx, m, "")
	require.NoError(t, err)
	assert.Equal(t, int64(3000), added)
	assert.Equal(t, exports[0], man.ExportID)
	assert.Equal(t, int64(3000), e.count(t, `SELECT count(*) FROM oplog.operation_logs_archive`))
}

// With an archive tablespace, an archived month's table moves there.
func TestArchiveMovesToItsTablespace(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	dir := filepath.Join(t.TempDir(), "archive")
	require.NoError(t, os.Mkdir(dir, 0o700))
	if os.Geteuid() == 0 {
		// The cluster runs as postgres (it refuses root): the directory is
		// its, and the path to it must let it through.
		u, err := user.Lookup("postgres")
		require.NoError(t, err)
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		require.NoError(t, os.Chown(dir, uid, gid))
		for p := filepath.Dir(dir); p != "/" && p != os.TempDir(); p = filepath.Dir(p) {
			require.NoError(t, os.Chmod(p, 0o755))
		}
	}
	space := fmt.Sprintf("archive_%d", time.Now().UnixNano())
	_, err := e.pool.Exec(ctx, fmt.Sprintf(`CREATE TABLESPACE %s LOCATION '%s'`, space, dir))
	require.NoError(t, err)
	e.cfg.ArchiveTablespace = space
	m := month(2026, 6)
	e.fill(t, m, m, 500)
	_, err = e.engine(t, now).Run(ctx, false)
	require.NoError(t, err)
	var where string
	require.NoError(t, e.pool.QueryRow(ctx, `SELECT coalesce(t.spcname, 'default') FROM pg_class c LEFT JOIN pg_tablespace t ON t.oid = c.reltablespace
		WHERE c.oid = $1::regclass`, "oplog."+store.PartitionName(m)).Scan(&where))
	assert.Equal(t, space, where)
	assert.Equal(t, int64(500), e.count(t, `SELECT count(*) FROM oplog.operation_logs_archive`))
	// Empty the tablespace so that it can go with the test.
	_, err = e.pool.Exec(ctx, "DROP TABLE oplog."+store.PartitionName(m))
	require.NoError(t, err)
	_, err = e.pool.Exec(ctx, "DROP TABLESPACE "+space)
	require.NoError(t, err)
}

// RunOnce, what `serve` runs every day: a run as the owner, logged, and
// counted in the metrics; a replica that finds the lock held says so.
func TestRunOnceRunsLogsAndCounts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	m := month(2026, 6)
	e.fill(t, m, m, 400)
	cfg := e.cfg
	cfg.DatabaseURL = e.dsn
	clock := func() time.Time { return now }
	metrics := lifecycle.NewMetrics(store.NewLifecycle(e.pool), cfg, clock)
	var logs apptest.SyncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))

	lifecycle.RunOnce(ctx, cfg, metrics, clock, log)
	assert.Contains(t, logs.String(), "lifecycle: run done")
	assert.Equal(t, "verified", e.states(t)[m.Format("2006-01")])
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(metrics))
	rows := testutil.ToFloat64(metrics.Collectors()[1])
	assert.Equal(t, 400.0, rows, "export rows counted")
	n, err := testutil.GatherAndCount(reg, "platforma_lifecycle_months", "platforma_lifecycle_last_success_timestamp_seconds")
	require.NoError(t, err)
	assert.Equal(t, 6, n, "five states and the last success")

	holder := mustConn(t, e.dsn)
	_, err = holder.Exec(ctx, `SELECT pg_advisory_lock(hashtext('oplog lifecycle'))`)
	require.NoError(t, err)
	lifecycle.RunOnce(ctx, cfg, metrics, clock, log)
	assert.Contains(t, logs.String(), "another replica is running it")
}

// An export reads its month from a streaming replica once the replica has
// replayed all the primary had written; from the primary when the replica
// is behind past the wait, or is no replica of this database. The export
// is the same either way.
func TestExportReadsFromACaughtUpReplica(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// A primary of its own: a standby of the harness's cluster on this
	// machine would replay the CREATE TABLESPACE of
	// TestArchiveMovesToItsTablespace into the directory the primary
	// already uses, and stop.
	primary := pgtest.StartCluster(t)
	dsn := primary.DSN("postgres")
	_, err := migrate.Up(ctx, dsn, migrations.OpLog, nil)
	require.NoError(t, err)
	e := newEnvOn(t, dsn)
	standby := pgtest.StartStandbyOf(t, primary)
	m := month(2026, 3)
	e.fill(t, m, m, 500)
	e.cfg.ReplicaWait = time.Second

	export := func(t *testing.T, replicaDSN string) string {
		t.Helper()
		primary, err := pgx.Connect(ctx, e.dsn)
		require.NoError(t, err)
		t.Cleanup(func() { _ = primary.Close(ctx) })
		replica, err := pgx.Connect(ctx, replicaDSN)
		require.NoError(t, err)
		t.Cleanup(func() { _ = replica.Close(ctx) })
		logs := &apptest.SyncBuffer{}
		eng := lifecycle.NewEngine(primary, e.bucket, e.cfg, func() time.Time { return now }, slog.New(slog.NewTextHandler(logs, nil)))
		eng.ReadFrom(replica)
		man, err := eng.ExportMonth(ctx, m)
		require.NoError(t, err)
		assert.Equal(t, int64(500), man.Rows)
		return logs.String()
	}

	t.Run("caught up", func(t *testing.T) {
		log := export(t, pgtest.OnStandby(e.dsn, standby))
		assert.Contains(t, log, "reading the month from the read replica")
		assert.NotContains(t, log, "reading from the primary")
	})
	t.Run("not a replica of this database", func(t *testing.T) {
		other := newEnv(t)
		other.fill(t, m, m, 500) // the same partition name, other rows
		log := export(t, other.dsn)
		assert.Contains(t, log, "is not a replica of this database")
		assert.NotContains(t, log, "reading the month from the read replica")
	})
	t.Run("behind", func(t *testing.T) {
		admin, err := pgx.Connect(ctx, pgtest.OnStandby(e.dsn, standby))
		require.NoError(t, err)
		defer admin.Close(ctx)
		pgtest.PauseReplay(t, admin)
		// Something for the replica to be behind on.
		_, err = e.pool.Exec(ctx, `CREATE TABLE oplog.replica_lag_marker (id int)`)
		require.NoError(t, err)
		log := export(t, pgtest.OnStandby(e.dsn, standby))
		assert.Contains(t, log, "read replica still behind; reading from the primary")
		assert.NotContains(t, log, "reading the month from the read replica")
	})
}

// TestExportsHoldNoSnapshotWhileWriting checks why exports read a month
// a chunk at a time: while the exporter writes rows (at its own pace, or
// LIFECYCLE_EXPORT_RATE's), its connection holds no snapshot, so it does
// not hold back the xmin horizon and the roll-up rows ingest keeps
// updating can be pruned. A query whose rows are handed out as they
// stream in (as sorted reads for schema version 1 digests do) holds one
// all along; the test checks it can see that.
func TestExportsHoldNoSnapshotWhileWriting(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	m := month(2026, 3)
	e.fill(t, m, m, 3000)
	conn, err := pgx.Connect(ctx, e.dsn)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(ctx) })
	name := store.PartitionName(m)

	// snapshotHeld reports whether conn's backend has a snapshot, asked
	// from another connection while conn's rows are being handed out.
	snapshotHeld := func() bool {
		var held bool
		require.NoError(t, e.pool.QueryRow(ctx, `SELECT backend_xmin IS NOT NULL FROM pg_stat_activity WHERE pid = $1`,
			conn.PgConn().PID()).Scan(&held))
		return held
	}
	var rows, held int
	require.NoError(t, store.NewLifecycle(conn).StreamRows(ctx, name, m, false, func(*coldstore.Row) error {
		if rows%500 == 0 && snapshotHeld() {
			held++
		}
		rows++
		return nil
	}))
	assert.Equal(t, 3000, rows)
	assert.Zero(t, held, "the export's reads hold no snapshot while rows are handed out")

	// The control: 2M rows (tens of MB) cannot all sit in socket buffers,
	// so the first ones are read while the query still runs.
	streaming, err := conn.Query(ctx, `SELECT g FROM generate_series(1, 2000000) AS g`)
	require.NoError(t, err)
	require.True(t, streaming.Next())
	assert.True(t, snapshotHeld(), "a streaming query holds its snapshot")
	streaming.Close()
}
