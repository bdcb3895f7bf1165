package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/platforma/platforma/services/kit/db"
	"github.com/platforma/platforma/services/oplog/internal/stats"
)

// LogFilter selects operation logs, newest first.
type LogFilter struct {
	UserID        *[16]byte
	AccountID     string
	OperationType int16 // 0: any
	Outcome       int16 // 0: any
	ErrorType     string
	ProxyUsed     string
	// IncludeArchived reads the archive's months too.
	IncludeArchived bool
	// Since and Until bound create_time: [Since, Until). They let the
	// planner prune partitions.
	Since, Until time.Time
	// Before is the keyset position: rows strictly older than
	// (BeforeTime, BeforeID); none when BeforeTime is zero.
	BeforeTime time.Time
	BeforeID   [16]byte
	Limit      int
}

// LogRow is one stored operation log.
type LogRow struct {
	ID                [16]byte
	CreateTime        time.Time
	UserID            [16]byte
	PlatformAccountID string
	OperationType     int16
	ResourceID        string
	Outcome           int16
	ErrorCode         *int32
	ErrorType         string
	ErrorMessage      string
	ExecutionTimeMs   *int64
	RetryCount        int32
	AuthTypeDetected  int16
	SessionRefreshed  bool
	ProxyUsed         string
	UserAgent         string
	RequestPayload    []byte
	ResponseSummary   []byte
	TraceID           string
	SpanID            string
}

const logColumns = `id, create_time, user_id, coalesce(platform_account_id, ''), operation_type, coalesce(resource_id, ''),
	outcome, error_code, coalesce(error_type, ''), coalesce(error_message, ''), execution_time_ms, retry_count,
	auth_type_detected, session_refreshed, coalesce(proxy_used, ''), coalesce(user_agent, ''),
	request_payload::text, response_summary::text, coalesce(trace_id, ''), coalesce(span_id, '')`

// ListSQL builds the list query for f: only the conditions asked for, so
// each filter reaches its index. An outcome is written as a literal: the
// planner matches operation_logs_failure_idx (WHERE outcome = 2) only on
// a literal.
func ListSQL(f LogFilter) (string, []any) {
	args := []any{f.Since, f.Until}
	where := []string{`create_time >= $1`, `create_time < $2`}
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if !f.BeforeTime.IsZero() {
		args = append(args, f.BeforeTime, f.BeforeID)
		where = append(where, fmt.Sprintf(`(create_time, id) < ($%d, $%d)`, len(args)-1, len(args)))
	}
	if f.UserID != nil {
		add(`user_id = $%d`, *f.UserID)
	}
	if f.AccountID != "" {
		add(`platform_account_id = $%d`, f.AccountID)
	}
	if f.OperationType != 0 {
		add(`operation_type = $%d`, f.OperationType)
	}
	if f.Outcome != 0 {
		where = append(where, fmt.Sprintf(`outcome = %d`, f.Outcome))
	}
	if f.ErrorType != "" {
		add(`error_type = $%d`, f.ErrorType)
	}
	if f.ProxyUsed != "" {
		add(`proxy_used = $%d`, f.ProxyUsed)
	}
	args = append(args, f.Limit)
	from := `oplog.operation_logs`
	if f.IncludeArchived {
		// A month is in exactly one of the two tables (the life cycle
		// moves its partition whole), so the union repeats no row; the
		// conditions reach both sides, and each prunes its partitions.
		from = `(SELECT * FROM oplog.operation_logs UNION ALL SELECT * FROM oplog.operation_logs_archive) AS l`
	}
	return `SELECT ` + logColumns + `
FROM ` + from + `
WHERE ` + strings.Join(where, ` AND `) + `
ORDER BY create_time DESC, id DESC
LIMIT $` + fmt.Sprint(len(args)), args
}

// ListLogs returns the logs f selects.
func (s *Store) ListLogs(ctx context.Context, f LogFilter) (out []LogRow, err error) {
	sql, args := ListSQL(f)
	err = s.read(ctx, func(q db.Querier) error {
		rows, err := q.Query(ctx, sql, args...)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, scanLog)
		return err
	})
	return out, err
}

func scanLog(row pgx.CollectableRow) (LogRow, error) {
	var l LogRow
	var req, resp pgtype.Text
	err := row.Scan(&l.ID, &l.CreateTime, &l.UserID, &l.PlatformAccountID, &l.OperationType, &l.ResourceID,
		&l.Outcome, &l.ErrorCode, &l.ErrorType, &l.ErrorMessage, &l.ExecutionTimeMs, &l.RetryCount,
		&l.AuthTypeDetected, &l.SessionRefreshed, &l.ProxyUsed, &l.UserAgent, &req, &resp, &l.TraceID, &l.SpanID)
	if req.Valid {
		l.RequestPayload = []byte(req.String)
	}
	if resp.Valid {
		l.ResponseSummary = []byte(resp.String)
	}
	return l, err
}

// Window is a span of whole hours, [Since, Until).
type Window struct {
	Since, Until time.Time
}

// split divides the window into whole UTC days, read from the daily
// roll-ups, and the hours before and after them, read from the hourly
// ones. With no whole day, the days are an empty span at Until.
func (w Window) split() (dayFrom, dayTo time.Time) {
	dayFrom = w.Since.UTC().Truncate(24 * time.Hour)
	if dayFrom.Before(w.Since) {
		dayFrom = dayFrom.Add(24 * time.Hour)
	}
	dayTo = w.Until.UTC().Truncate(24 * time.Hour)
	if !dayFrom.Before(dayTo) {
		return w.Until, w.Until
	}
	return dayFrom, dayTo
}

// OpStats are the statistics of one operation type, outcome and error type.
type OpStats struct {
	OperationType, Outcome int16
	ErrorType              string
	Total                  int64
	ExecutionCount         int64
	ExecutionSum           int64
	Histogram              []int64
}

// The whole days from the daily roll-up, the edges from the hourly one.
// $1 $2: the window; $3 $4: its whole days; $5: operation type or 0.
const operationStats = `
SELECT operation_type, outcome, error_type, total, execution_ms_count, execution_ms_sum, execution_ms_histogram
FROM oplog.operation_stats_daily
WHERE bucket_start >= $3 AND bucket_start < $4 AND ($5::smallint = 0 OR operation_type = $5::smallint)
UNION ALL
SELECT operation_type, outcome, error_type, total, execution_ms_count, execution_ms_sum, execution_ms_histogram
FROM oplog.operation_stats_hourly
WHERE ((bucket_start >= $1 AND bucket_start < $3) OR (bucket_start >= $4 AND bucket_start < $2))
	AND ($5::smallint = 0 OR operation_type = $5::smallint)`

// OperationStats sums the roll-ups over w per operation type, outcome and
// error type.
func (s *Store) OperationStats(ctx context.Context, w Window, operationType int16) (out []OpStats, err error) {
	dayFrom, dayTo := w.split()
	err = s.read(ctx, func(q db.Querier) error {
		rows, err := q.Query(ctx, operationStats, w.Since, w.Until, dayFrom, dayTo, operationType)
		if err != nil {
			return err
		}
		out, err = sumOpStats(rows)
		return err
	})
	return out, err
}

// sumOpStats sums the roll-ups' rows per operation type, outcome and
// error type, in the order they first appear.
func sumOpStats(rows pgx.Rows) ([]OpStats, error) {
	type key struct {
		op, outcome int16
		errorType   string
	}
	sums := map[key]*OpStats{}
	var order []key
	var r OpStats
	_, err := pgx.ForEachRow(rows, []any{&r.OperationType, &r.Outcome, &r.ErrorType, &r.Total, &r.ExecutionCount, &r.ExecutionSum, &r.Histogram}, func() error {
		k := key{r.OperationType, r.Outcome, r.ErrorType}
		acc := sums[k]
		if acc == nil {
			acc = &OpStats{OperationType: k.op, Outcome: k.outcome, ErrorType: k.errorType, Histogram: make([]int64, stats.Buckets)}
			sums[k] = acc
			order = append(order, k)
		}
		acc.Total += r.Total
		acc.ExecutionCount += r.ExecutionCount
		acc.ExecutionSum += r.ExecutionSum
		acc.Histogram = stats.Add(acc.Histogram, r.Histogram)
		return nil
	})
	out := make([]OpStats, 0, len(order))
	for _, k := range order {
		out = append(out, *sums[k])
	}
	return out, err
}

// ProxyStats are the statistics of one proxy and outcome.
type ProxyStats struct {
	ProxyUsed      string
	Outcome        int16
	Total          int64
	ExecutionCount int64
	ExecutionSum   int64
}

const proxyStats = `
SELECT proxy_used, outcome, sum(total)::bigint, sum(execution_ms_count)::bigint, sum(execution_ms_sum)::bigint
FROM (
	SELECT proxy_used, outcome, total, execution_ms_count, execution_ms_sum
	FROM oplog.proxy_stats_daily WHERE bucket_start >= $3 AND bucket_start < $4
	UNION ALL
	SELECT proxy_used, outcome, total, execution_ms_count, execution_ms_sum
	FROM oplog.proxy_stats_hourly
	WHERE (bucket_start >= $1 AND bucket_start < $3) OR (bucket_start >= $4 AND bucket_start < $2)
) r
GROUP BY proxy_used, outcome`

// ProxyStatsOf sums the proxy roll-ups over w per proxy and outcome.
func (s *Store) ProxyStatsOf(ctx context.Context, w Window) (out []ProxyStats, err error) {
	dayFrom, dayTo := w.split()
	err = s.read(ctx, func(q db.Querier) error {
		rows, err := q.Query(ctx, proxyStats, w.Since, w.Until, dayFrom, dayTo)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, pgx.RowToStructByPos[ProxyStats])
		return err
	})
	return out, err
}

// SeriesPoint is one operation type in one bucket.
type SeriesPoint struct {
	BucketStart   time.Time
	OperationType int16
	Total, Failed int64
}

// Hourly points come from the per-operation counts; daily ones from the
// daily statistics, a few dozen rows a day.
const (
	failureSeriesHourly = `
SELECT bucket_start, operation_type, total, failed
FROM oplog.operation_counts_hourly
WHERE bucket_start >= $1 AND bucket_start < $2 AND ($3::smallint = 0 OR operation_type = $3::smallint)
ORDER BY bucket_start, operation_type`
	failureSeriesDaily = `
SELECT bucket_start, operation_type, sum(total)::bigint, coalesce(sum(total) FILTER (WHERE outcome = 2), 0)::bigint
FROM oplog.operation_stats_daily
WHERE bucket_start >= $1 AND bucket_start < $2 AND ($3::smallint = 0 OR operation_type = $3::smallint)
GROUP BY bucket_start, operation_type
ORDER BY bucket_start, operation_type`
)

// FailureSeries returns totals and failures per bucket (hourly, or daily
// when daily is set) and operation type over w, whose bounds must be
// whole buckets.
func (s *Store) FailureSeries(ctx context.Context, w Window, daily bool, operationType int16) ([]SeriesPoint, error) {
	sql := failureSeriesHourly
	if daily {
		sql = failureSeriesDaily
	}
	var out []SeriesPoint
	err := s.read(ctx, func(q db.Querier) error {
		out = nil // a read the replica failed runs again on the primary
		rows, err := q.Query(ctx, sql, w.Since, w.Until, operationType)
		if err != nil {
			return err
		}
		var p SeriesPoint
		_, err = pgx.ForEachRow(rows, []any{&p.BucketStart, &p.OperationType, &p.Total, &p.Failed}, func() error {
			out = append(out, p)
			return nil
		})
		return err
	})
	return out, err
}

// MissingMonths lists the months ("2006-01") overlapping [since, until)
// that the life cycle has taken out of the tables a list reads: archived
// ones unless includeArchived, and those whose partition is in neither
// table (only in cold storage, dropped, or between detach and attach).
// Months the life cycle never touched are not missing: their rows, if
// any, are hot.
func (s *Store) MissingMonths(ctx context.Context, since, until time.Time, includeArchived bool) (out []string, err error) {
	err = s.read(ctx, func(q db.Querier) error {
		rows, err := q.Query(ctx, missingMonths, since, until, includeArchived)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	return out, err
}

const missingMonths = `
SELECT to_char(m.month, 'YYYY-MM')
FROM oplog.lifecycle_months m
WHERE m.month < $2 AND m.month + interval '1 month' > $1
	AND NOT EXISTS (
		SELECT FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE c.relnamespace = 'oplog'::regnamespace AND c.relname = 'operation_logs_p' || to_char(m.month, 'YYYYMM')
			AND NOT i.inhdetachpending
			AND (i.inhparent = 'oplog.operation_logs'::regclass
				OR ($3 AND i.inhparent = 'oplog.operation_logs_archive'::regclass)))
ORDER BY m.month`
