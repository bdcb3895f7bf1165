package store

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/platforma/platforma/services/oplog/internal/coldstore"
)

// Lifecycle is the SQL of the op log's life cycle (migration 0008), on
// one connection of the schema's owner: detaching, attaching and dropping
// partitions is DDL, which the runtime role may not do, and DETACH
// CONCURRENTLY may not run inside a transaction, so nothing here does
// unless it says so.
type Lifecycle struct{ conn lifecycleDB }

// lifecycleDB is a *pgx.Conn for the engine, which needs one session (its
// advisory lock, DETACH CONCURRENTLY outside a transaction), or the
// service's pool for the read-only queries behind the metrics.
type lifecycleDB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Begin(ctx context.Context) (pgx.Tx, error)
}

// NewLifecycle returns the lifecycle's SQL on conn.
func NewLifecycle(conn lifecycleDB) *Lifecycle { return &Lifecycle{conn: conn} }

// lifecycleLockKey is the advisory lock one lifecycle run holds, so that
// one replica (or one operator's CLI) runs it at a time.
const lifecycleLockKey = "oplog lifecycle"

// TryLock takes the lifecycle's advisory lock for this session; false
// when another holds it.
func (l *Lifecycle) TryLock(ctx context.Context) (bool, error) {
	var ok bool
	err := l.conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtext($1))`, lifecycleLockKey).Scan(&ok)
	return ok, err
}

// Unlock releases the lock TryLock took.
func (l *Lifecycle) Unlock(ctx context.Context) error {
	_, err := l.conn.Exec(ctx, `SELECT pg_advisory_unlock(hashtext($1))`, lifecycleLockKey)
	return err
}

// Where a month's partition is attached.
const (
	AttachedHot     = "hot"     // to oplog.operation_logs
	AttachedArchive = "archive" // to oplog.operation_logs_archive
	AttachedNone    = "none"    // a table of its own: detached, not yet archived
)

// MonthPartition is one month's partition as the catalog shows it.
type MonthPartition struct {
	Month time.Time // first day, UTC
	Name  string    // operation_logs_pYYYYMM
	// Parent is AttachedHot, AttachedArchive or AttachedNone.
	Parent string
	// DetachPending: a DETACH ... CONCURRENTLY was interrupted; it must be
	// finalized before anything else.
	DetachPending bool
}

var partitionName = regexp.MustCompile(`^operation_logs_p(\d{4})(\d{2})$`)

// MonthOf is the month a partition name stands for.
func MonthOf(name string) (time.Time, bool) {
	m := partitionName.FindStringSubmatch(name)
	if m == nil {
		return time.Time{}, false
	}
	t, err := time.Parse("200601", m[1]+m[2])
	return t.UTC(), err == nil
}

// Partitions lists every month partition of the schema, attached or not.
func (l *Lifecycle) Partitions(ctx context.Context) ([]MonthPartition, error) {
	rows, err := l.conn.Query(ctx, `
SELECT c.relname,
	CASE p.relname WHEN 'operation_logs' THEN 'hot' WHEN 'operation_logs_archive' THEN 'archive' ELSE 'none' END,
	coalesce(i.inhdetachpending, false)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'oplog'
LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
LEFT JOIN pg_class p ON p.oid = i.inhparent
WHERE c.relkind = 'r' AND c.relname ~ '^operation_logs_p[0-9]{6}$'
ORDER BY c.relname`)
	if err != nil {
		return nil, err
	}
	var out []MonthPartition
	var p MonthPartition
	_, err = pgx.ForEachRow(rows, []any{&p.Name, &p.Parent, &p.DetachPending}, func() error {
		month, ok := MonthOf(p.Name)
		if !ok {
			return fmt.Errorf("partition %s: no month in its name", p.Name)
		}
		p.Month = month
		out = append(out, p)
		return nil
	})
	return out, err
}

// PartitionFacts are what the data of a partition says, whatever its
// bounds: retention judges by these.
type PartitionFacts struct {
	Rows           int64
	Oldest, Newest time.Time // zero when empty
}

// Facts counts a partition's rows and finds its oldest and newest
// create_time. It reads the whole partition.
func (l *Lifecycle) Facts(ctx context.Context, name string) (PartitionFacts, error) {
	var f PartitionFacts
	var oldest, newest pgtype.Timestamptz
	err := l.conn.QueryRow(ctx, fmt.Sprintf(`SELECT count(*), min(create_time), max(create_time) FROM oplog.%s`,
		pgx.Identifier{name}.Sanitize())).Scan(&f.Rows, &oldest, &newest)
	f.Oldest, f.Newest = oldest.Time.UTC(), newest.Time.UTC()
	return f, err
}

// EstimatedRows is the planner's estimate of a partition's rows (0 when
// it has none): enough for a progress line's time left, without reading
// the table.
func (l *Lifecycle) EstimatedRows(ctx context.Context, name string) int64 {
	var n float64
	if err := l.conn.QueryRow(ctx, `SELECT greatest(reltuples, 0)::float8 FROM pg_class WHERE oid = to_regclass($1)`,
		"oplog."+pgx.Identifier{name}.Sanitize()).Scan(&n); err != nil {
		return 0
	}
	return int64(n)
}

// Detach takes a month's partition off the hot table without blocking
// ingest (DETACH ... CONCURRENTLY, which waits for running transactions
// instead of locking the table against them), or finishes a detach that
// was interrupted (FINALIZE).
func (l *Lifecycle) Detach(ctx context.Context, p MonthPartition) error {
	mode := "CONCURRENTLY"
	if p.DetachPending {
		mode = "FINALIZE"
	}
	_, err := l.conn.Exec(ctx, fmt.Sprintf(`ALTER TABLE oplog.operation_logs DETACH PARTITION oplog.%s %s`,
		pgx.Identifier{p.Name}.Sanitize(), mode))
	return err
}

// AttachArchive moves a detached partition into the archive: it drops the
// hot table's query indexes (the archive keeps only its primary key and a
// BRIN index on create_time, which ATTACH creates), moves the table to
// tablespace when one is given, and attaches it. Each step is a no-op when
// already done, so a crash between them is finished by running it again.
func (l *Lifecycle) AttachArchive(ctx context.Context, p MonthPartition, tablespace string) error {
	table := "oplog." + pgx.Identifier{p.Name}.Sanitize()
	rows, err := l.conn.Query(ctx, `
SELECT quote_ident(ic.relname) FROM pg_index x JOIN pg_class ic ON ic.oid = x.indexrelid
WHERE x.indrelid = $1::regclass AND NOT x.indisprimary AND NOT EXISTS (SELECT FROM pg_inherits WHERE inhrelid = x.indexrelid)`, table)
	if err != nil {
		return err
	}
	extra, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, idx := range extra {
		if _, err := l.conn.Exec(ctx, "DROP INDEX IF EXISTS oplog."+idx); err != nil {
			return err
		}
	}
	if tablespace != "" {
		if _, err := l.conn.Exec(ctx, fmt.Sprintf("ALTER TABLE %s SET TABLESPACE %s", table, pgx.Identifier{tablespace}.Sanitize())); err != nil {
			return err
		}
	}
	from, to := p.Month, p.Month.AddDate(0, 1, 0)
	_, err = l.conn.Exec(ctx, fmt.Sprintf(`ALTER TABLE oplog.operation_logs_archive ATTACH PARTITION %s FOR VALUES FROM ('%s') TO ('%s')`,
		table, from.Format(time.RFC3339), to.Format(time.RFC3339)))
	return err
}

// DropPartition drops a month's partition, wherever it is attached.
func (l *Lifecycle) DropPartition(ctx context.Context, name string) error {
	_, err := l.conn.Exec(ctx, "DROP TABLE IF EXISTS oplog."+pgx.Identifier{name}.Sanitize())
	return err
}

// CurrentLSN is the primary's WAL insert position now: the end of every
// record already made, committed or not. The write position can lag it
// (a commit with synchronous_commit off waits in WAL buffers), so a
// replica past the write position may still miss committed rows.
func (l *Lifecycle) CurrentLSN(ctx context.Context) (string, error) {
	var lsn string
	err := l.conn.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&lsn)
	return lsn, err
}

// ReplayedPast reports whether this connection's server, a streaming
// replica, has replayed the WAL up to lsn (a primary always has).
func (l *Lifecycle) ReplayedPast(ctx context.Context, lsn string) (bool, error) {
	var ok bool
	err := l.conn.QueryRow(ctx, `SELECT NOT pg_is_in_recovery() OR coalesce(pg_last_wal_replay_lsn() >= $1::pg_lsn, false)`, lsn).Scan(&ok)
	return ok, err
}

// Identity names a partition's storage: its oid and file node. On a
// physical replica of this database they are the same; anywhere else
// they differ.
func (l *Lifecycle) Identity(ctx context.Context, name string) (string, error) {
	var id string
	err := l.conn.QueryRow(ctx, `SELECT c.oid::text || '/' || pg_relation_filenode(c.oid)::text || '/' || d.oid::text
		FROM pg_class c, pg_database d WHERE c.oid = to_regclass($1) AND d.datname = current_database()`,
		"oplog."+pgx.Identifier{name}.Sanitize()).Scan(&id)
	return id, err
}

// exportColumns are every column of oplog.operation_logs, in
// coldstore.Row's order; payloads as the text Postgres renders.
const exportColumns = `id, create_time, user_id, platform_account_id, operation_type, resource_id, outcome,
	error_code, error_type, error_message, execution_time_ms, retry_count, auth_type_detected, session_refreshed,
	proxy_used, user_agent, request_payload::text, response_summary::text, trace_id, span_id`

// streamChunk is the span of create_time one sorted read of StreamRows
// reads: a day's rows sort in the lifecycle session's work_mem (or in
// little temporary space), where a month's would spill the whole month to
// disk next to ingest; the BRIN index on create_time finds each day's
// pages. (An hour was measured 3 times slower to read: 744 bitmap scans a
// month.)
const streamChunk = 24 * time.Hour

// chunkPages is how many heap pages one unsorted read of StreamRows
// fetches: 4 MiB of the month, tens of thousands of rows, held in memory
// for a moment.
const chunkPages = 512

// StreamRows calls fn with every row of a month's partition, one at a
// time: memory stays bounded whatever the month's size. fn must not keep
// the Row.
//
// Unsorted, it reads the partition in the order of its pages, chunkPages
// at a time (a TID range scan each), and each chunk is fetched whole
// before fn sees its first row. That keeps every query's snapshot short
// however slowly fn consumes rows (an export may be rate-limited): a
// snapshot held for the whole month would hold back the xmin horizon, so
// the roll-up rows ingest updates hundreds of times a second could not
// be pruned, and their version chains, and every upsert's cost, would
// grow for as long as it was held. The log is append-only (no row is
// updated or moved), so reading it chunk by chunk sees every row of a
// month that no longer changes exactly once.
//
// Sorted, it reads in (create_time, id) order, a day at a time through
// the BRIN index, streaming; rows outside the month (a partition with
// wider bounds) come after the month's. Only digests of schema version 1
// exports need it.
func (l *Lifecycle) StreamRows(ctx context.Context, name string, month time.Time, sorted bool, fn func(*coldstore.Row) error) error {
	table := "oplog." + pgx.Identifier{name}.Sanitize()
	if !sorted {
		return l.streamChunks(ctx, table, fn)
	}
	from, to := month, month.AddDate(0, 1, 0)
	read := func(sql string, args ...any) error {
		return l.scanRows(ctx, fmt.Sprintf(`SELECT %s FROM %s %s ORDER BY create_time, id`, exportColumns, table, sql), args,
			func(r *coldstore.Row) error { return fn(r) })
	}
	if err := read(`WHERE create_time < $1`, from); err != nil {
		return err
	}
	for t := from; t.Before(to); t = t.Add(streamChunk) {
		if err := read(`WHERE create_time >= $1 AND create_time < $2`, t, t.Add(streamChunk)); err != nil {
			return err
		}
	}
	return read(`WHERE create_time >= $1`, to)
}

// streamChunks is StreamRows unsorted: chunkPages pages at a time, until
// a chunk starts past the table's last page (looked up again at the end,
// in case a hot month grew meanwhile).
func (l *Lifecycle) streamChunks(ctx context.Context, table string, fn func(*coldstore.Row) error) error {
	query := fmt.Sprintf(`SELECT %s FROM %s WHERE ctid >= format('(%%s,0)', $1::bigint)::tid AND ctid < format('(%%s,0)', $2::bigint)::tid`,
		exportColumns, table)
	const pagesQuery = `SELECT pg_relation_size($1::regclass) / current_setting('block_size')::bigint`
	var chunk []coldstore.Row
	for start, pages := int64(0), int64(0); ; start += chunkPages {
		if start >= pages {
			if err := l.conn.QueryRow(ctx, pagesQuery, table).Scan(&pages); err != nil {
				return err
			}
			if start >= pages {
				return nil
			}
		}
		chunk = chunk[:0]
		if err := l.scanRows(ctx, query, []any{start, start + chunkPages}, func(r *coldstore.Row) error {
			chunk = append(chunk, *r)
			return nil
		}); err != nil {
			return err
		}
		for i := range chunk {
			if err := fn(&chunk[i]); err != nil {
				return err
			}
		}
		if cap(chunk) > 4*len(chunk) && cap(chunk) > 1<<16 {
			chunk = nil // a chunk of huge rows does not pin its memory for the rest of the month
		}
	}
}

// scanRows runs query and calls fn with each row, decoded into one Row
// that is reused.
func (l *Lifecycle) scanRows(ctx context.Context, query string, args []any, fn func(*coldstore.Row) error) error {
	rows, err := l.conn.Query(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	var r coldstore.Row
	var req, resp pgtype.Text
	for rows.Next() {
		r = coldstore.Row{}
		if err := rows.Scan(&r.ID, &r.CreateTime, &r.UserID, &r.PlatformAccountID, &r.OperationType, &r.ResourceID, &r.Outcome,
			&r.ErrorCode, &r.ErrorType, &r.ErrorMessage, &r.ExecutionTimeMs, &r.RetryCount, &r.AuthTypeDetected, &r.SessionRefreshed,
			&r.ProxyUsed, &r.UserAgent, &req, &resp, &r.TraceID, &r.SpanID); err != nil {
			return err
		}
		r.CreateTime = r.CreateTime.UTC()
		if req.Valid {
			r.RequestPayload = []byte(req.String)
		}
		if resp.Valid {
			r.ResponseSummary = []byte(resp.String)
		}
		if err := fn(&r); err != nil {
			return err
		}
	}
	return rows.Err()
}

// restoreBatch is how many rows one restore transaction copies.
const restoreBatch = 50_000

// Restorer puts exported rows back into a month's archive partition,
// creating the partition when it is gone. Rows already there are left
// alone (ON CONFLICT DO NOTHING on the primary key), so a restore run
// twice, or after a crash, adds each row once.
type Restorer struct {
	l     *Lifecycle
	name  string
	batch [][]any
	added int64
}

// NewRestorer prepares the archive partition of month.
func (l *Lifecycle) NewRestorer(ctx context.Context, month time.Time) (*Restorer, error) {
	name := PartitionName(month)
	_, err := l.conn.Exec(ctx, fmt.Sprintf(
		`CREATE TABLE IF NOT EXISTS oplog.%s PARTITION OF oplog.operation_logs_archive FOR VALUES FROM ('%s') TO ('%s')`,
		pgx.Identifier{name}.Sanitize(), month.Format(time.RFC3339), month.AddDate(0, 1, 0).Format(time.RFC3339)))
	return &Restorer{l: l, name: name}, err
}

// Add queues one row; every restoreBatch rows are written.
func (r *Restorer) Add(ctx context.Context, row *coldstore.Row) error {
	var req, resp any
	if row.RequestPayload != nil {
		req = string(row.RequestPayload)
	}
	if row.ResponseSummary != nil {
		resp = string(row.ResponseSummary)
	}
	r.batch = append(r.batch, []any{row.ID, row.CreateTime, row.UserID, row.PlatformAccountID, row.OperationType, row.ResourceID,
		row.Outcome, row.ErrorCode, row.ErrorType, row.ErrorMessage, row.ExecutionTimeMs, row.RetryCount, row.AuthTypeDetected,
		row.SessionRefreshed, row.ProxyUsed, row.UserAgent, req, resp, row.TraceID, row.SpanID})
	if len(r.batch) >= restoreBatch {
		return r.Flush(ctx)
	}
	return nil
}

// Flush writes the queued rows in one transaction: COPY into a staging
// table, then INSERT ... ON CONFLICT DO NOTHING.
func (r *Restorer) Flush(ctx context.Context) error {
	if len(r.batch) == 0 {
		return nil
	}
	tx, err := r.l.conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	table := "oplog." + pgx.Identifier{r.name}.Sanitize()
	if _, err := tx.Exec(ctx, fmt.Sprintf(`CREATE TEMPORARY TABLE restore_rows
		(LIKE %s INCLUDING DEFAULTS, request_payload_text text, response_summary_text text) ON COMMIT DROP`, table)); err != nil {
		return err
	}
	cols := strings.Fields(strings.NewReplacer(",", " ", "request_payload::text", "request_payload_text",
		"response_summary::text", "response_summary_text").Replace(exportColumns))
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"restore_rows"}, cols, pgx.CopyFromRows(r.batch)); err != nil {
		return err
	}
	tag, err := tx.Exec(ctx, fmt.Sprintf(`
INSERT INTO %s (id, create_time, user_id, platform_account_id, operation_type, resource_id, outcome,
	error_code, error_type, error_message, execution_time_ms, retry_count, auth_type_detected, session_refreshed,
	proxy_used, user_agent, request_payload, response_summary, trace_id, span_id)
SELECT id, create_time, user_id, platform_account_id, operation_type, resource_id, outcome,
	error_code, error_type, error_message, execution_time_ms, retry_count, auth_type_detected, session_refreshed,
	proxy_used, user_agent, request_payload_text::jsonb, response_summary_text::jsonb, trace_id, span_id
FROM restore_rows ON CONFLICT DO NOTHING`, table))
	if err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}
	r.added += tag.RowsAffected()
	r.batch = r.batch[:0]
	return nil
}

// Added is how many rows were new to the partition.
func (r *Restorer) Added() int64 { return r.added }

// Month is one row of oplog.lifecycle_months.
type Month struct {
	Month            time.Time
	State            string
	RowCount         *int64
	NewestCreateTime *time.Time
	ExportID         *string
	ExportRows       *int64
	ExportBytes      *int64
	ExportDigest     *string
	VerifiedTime     *time.Time
	DroppedTime      *time.Time
	UpdateTime       time.Time
}

// Month states.
const (
	StateHot      = "hot"
	StateArchived = "archived"
	StateExported = "exported"
	StateVerified = "verified"
	StateDropped  = "dropped"
)

// Months reads every month's record.
func (l *Lifecycle) Months(ctx context.Context) (map[time.Time]Month, error) {
	rows, err := l.conn.Query(ctx, `
SELECT month::timestamp AT TIME ZONE 'UTC', state, row_count, newest_create_time, export_id, export_rows, export_bytes,
	export_digest, verified_time, dropped_time, update_time
FROM oplog.lifecycle_months ORDER BY month`)
	if err != nil {
		return nil, err
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Month])
	out := map[time.Time]Month{}
	for _, m := range list {
		m.Month = m.Month.UTC()
		out[m.Month] = m
	}
	return out, err
}

// SetMonth records a month's state; fields left nil keep their value.
func (l *Lifecycle) SetMonth(ctx context.Context, m Month) error {
	_, err := l.conn.Exec(ctx, `
INSERT INTO oplog.lifecycle_months AS m (month, state, row_count, newest_create_time, export_id, export_rows, export_bytes,
	export_digest, verified_time, dropped_time)
VALUES ($1::date, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (month) DO UPDATE SET
	state = excluded.state,
	row_count = coalesce(excluded.row_count, m.row_count),
	newest_create_time = coalesce(excluded.newest_create_time, m.newest_create_time),
	export_id = coalesce(excluded.export_id, m.export_id),
	export_rows = coalesce(excluded.export_rows, m.export_rows),
	export_bytes = coalesce(excluded.export_bytes, m.export_bytes),
	export_digest = coalesce(excluded.export_digest, m.export_digest),
	verified_time = CASE WHEN excluded.state IN ('verified', 'dropped') THEN coalesce(excluded.verified_time, m.verified_time) END,
	dropped_time = excluded.dropped_time,
	update_time = now()`,
		m.Month.Format(time.DateOnly), m.State, m.RowCount, m.NewestCreateTime, m.ExportID, m.ExportRows, m.ExportBytes,
		m.ExportDigest, m.VerifiedTime, m.DroppedTime)
	return err
}

// StartStep records the start of a step and returns its id.
func (l *Lifecycle) StartStep(ctx context.Context, runID [16]byte, month time.Time, step string, dryRun bool) (int64, error) {
	var m any
	if !month.IsZero() {
		m = month.Format(time.DateOnly)
	}
	var id int64
	err := l.conn.QueryRow(ctx, `
INSERT INTO oplog.lifecycle_steps (run_id, month, step, dry_run) VALUES ($1, $2::date, $3, $4) RETURNING id`,
		runID, m, step, dryRun).Scan(&id)
	return id, err
}

// FinishStep records a step's result.
func (l *Lifecycle) FinishStep(ctx context.Context, id int64, ok bool, detail string) error {
	_, err := l.conn.Exec(ctx, `UPDATE oplog.lifecycle_steps SET finish_time = now(), ok = $2, detail = $3 WHERE id = $1`, id, ok, detail)
	return err
}

// LastSuccess is when the last run that was not a dry run finished
// without a failed step (zero when none has).
func (l *Lifecycle) LastSuccess(ctx context.Context) (time.Time, error) {
	var t pgtype.Timestamptz
	err := l.conn.QueryRow(ctx, `
SELECT max(finish_time) FROM oplog.lifecycle_steps WHERE step = 'run' AND NOT dry_run AND ok`).Scan(&t)
	return t.Time, err
}

// rollupTables are the roll-ups, each with its bucket_start column.
var rollupTables = []string{
	"operation_stats_hourly", "operation_stats_daily", "proxy_stats_hourly", "proxy_stats_daily", "operation_counts_hourly",
}

// PurgeRollups deletes roll-up rows of buckets before cutoff, each table
// in batches, and returns how many went. Roll-ups are small (one row per
// hour and key), so DELETE is the right tool for them.
func (l *Lifecycle) PurgeRollups(ctx context.Context, cutoff time.Time, dryRun bool) (int64, error) {
	var total int64
	for _, t := range rollupTables {
		if dryRun {
			var n int64
			if err := l.conn.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM oplog.%s WHERE bucket_start < $1`, t), cutoff).Scan(&n); err != nil {
				return total, err
			}
			total += n
			continue
		}
		tag, err := l.conn.Exec(ctx, fmt.Sprintf(`DELETE FROM oplog.%s WHERE bucket_start < $1`, t), cutoff)
		if err != nil {
			return total, err
		}
		total += tag.RowsAffected()
	}
	return total, nil
}

// ErrLocked: another run holds the lifecycle's lock.
var ErrLocked = errors.New("another lifecycle run holds the lock")
