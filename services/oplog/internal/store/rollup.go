package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	"github.com/platforma/platforma/services/oplog/internal/stats"
)

// opKey is one row of operation_stats_{hourly,daily}.
type opKey struct {
	bucket    int64 // Unix seconds of the bucket's start
	op        int16
	outcome   int16
	errorType string
}

type opAgg struct {
	total, execCount, execSum int64
	hist                      []int64
}

// proxyKey is one row of proxy_stats_{hourly,daily}.
type proxyKey struct {
	bucket  int64
	proxy   string
	outcome int16
}

type proxyAgg struct{ total, execCount, execSum int64 }

// countKey is one row of operation_counts_hourly.
type countKey struct {
	bucket int64
	op     int16
}

type countAgg struct{ total, failed int64 }

// Bucket starts are UTC hours and UTC days.
func hourStart(t time.Time) int64 { return t.Unix() - t.Unix()%3600 }
func dayStart(t time.Time) int64  { return t.Unix() - t.Unix()%86400 }

// rollups is the roll-up delta of a set of rows.
type rollups struct {
	opHourly, opDaily       map[opKey]*opAgg
	proxyHourly, proxyDaily map[proxyKey]*proxyAgg
	countsHourly            map[countKey]*countAgg
}

// failed is the Outcome number of a failure.
const failed = int16(commonv1.Outcome_OUTCOME_FAILED)

func aggregate(rows []*Row) rollups {
	r := rollups{
		opHourly: map[opKey]*opAgg{}, opDaily: map[opKey]*opAgg{},
		proxyHourly: map[proxyKey]*proxyAgg{}, proxyDaily: map[proxyKey]*proxyAgg{},
		countsHourly: map[countKey]*countAgg{},
	}
	for _, row := range rows {
		ck := countKey{hourStart(row.CreateTime), row.OperationType}
		c := r.countsHourly[ck]
		if c == nil {
			c = &countAgg{}
			r.countsHourly[ck] = c
		}
		c.total++
		if row.Outcome == failed {
			c.failed++
		}
		errType := string(row.ErrorType)
		for _, m := range []struct {
			aggs   map[opKey]*opAgg
			bucket int64
		}{{r.opHourly, hourStart(row.CreateTime)}, {r.opDaily, dayStart(row.CreateTime)}} {
			k := opKey{m.bucket, row.OperationType, row.Outcome, errType}
			a := m.aggs[k]
			if a == nil {
				a = &opAgg{hist: make([]int64, stats.Buckets)}
				m.aggs[k] = a
			}
			a.total++
			if row.ExecutionTimeMs != nil {
				a.execCount++
				a.execSum += *row.ExecutionTimeMs
				a.hist[stats.Bucket(*row.ExecutionTimeMs)]++
			}
		}
		if len(row.ProxyUsed) == 0 {
			continue // proxy statistics are about proxies
		}
		proxy := string(row.ProxyUsed)
		for _, m := range []struct {
			aggs   map[proxyKey]*proxyAgg
			bucket int64
		}{{r.proxyHourly, hourStart(row.CreateTime)}, {r.proxyDaily, dayStart(row.CreateTime)}} {
			k := proxyKey{m.bucket, proxy, row.Outcome}
			a := m.aggs[k]
			if a == nil {
				a = &proxyAgg{}
				m.aggs[k] = a
			}
			a.total++
			if row.ExecutionTimeMs != nil {
				a.execCount++
				a.execSum += *row.ExecutionTimeMs
			}
		}
	}
	return r
}

// upsertOpStats adds deltas to a table of operation statistics. The
// histograms travel as one flat array, cut back into rows by ordinality.
// Rows are written in key order: concurrent batches lock them in the same
// order and cannot deadlock.
const upsertOpStats = `
INSERT INTO oplog.%s AS s (bucket_start, operation_type, outcome, error_type,
	total, execution_ms_count, execution_ms_sum, execution_ms_histogram)
SELECT u.b, u.o, u.r, u.e, u.t, u.c, u.s, ($8::bigint[])[(u.n - 1) * $9 + 1 : u.n * $9]
FROM unnest($1::timestamptz[], $2::smallint[], $3::smallint[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[])
	WITH ORDINALITY AS u(b, o, r, e, t, c, s, n)
ORDER BY 1, 2, 3, 4
ON CONFLICT (bucket_start, operation_type, outcome, error_type) DO UPDATE SET
	total = s.total + excluded.total,
	execution_ms_count = s.execution_ms_count + excluded.execution_ms_count,
	execution_ms_sum = s.execution_ms_sum + excluded.execution_ms_sum,
	execution_ms_histogram = ARRAY(
		SELECT x + y FROM unnest(s.execution_ms_histogram, excluded.execution_ms_histogram) WITH ORDINALITY AS h(x, y, i)
		ORDER BY i)`

const upsertProxyStats = `
INSERT INTO oplog.%s AS s (bucket_start, proxy_used, outcome, total, execution_ms_count, execution_ms_sum)
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::smallint[], $4::bigint[], $5::bigint[], $6::bigint[])
ORDER BY 1, 2, 3
ON CONFLICT (bucket_start, proxy_used, outcome) DO UPDATE SET
	total = s.total + excluded.total,
	execution_ms_count = s.execution_ms_count + excluded.execution_ms_count,
	execution_ms_sum = s.execution_ms_sum + excluded.execution_ms_sum`

const upsertCounts = `
INSERT INTO oplog.operation_counts_hourly AS s (bucket_start, operation_type, total, failed)
SELECT * FROM unnest($1::timestamptz[], $2::smallint[], $3::bigint[], $4::bigint[])
ORDER BY 1, 2
ON CONFLICT (bucket_start, operation_type) DO UPDATE SET
	total = s.total + excluded.total,
	failed = s.failed + excluded.failed`

// addToRollups adds rows to the five roll-up tables, in one round trip.
func addToRollups(ctx context.Context, tx pgx.Tx, rows []*Row) error {
	if len(rows) == 0 {
		return nil
	}
	r := aggregate(rows)
	batch := &pgx.Batch{}
	queueOpStats(batch, upsertOpStatsHourly, r.opHourly)
	queueOpStats(batch, upsertOpStatsDaily, r.opDaily)
	queueProxyStats(batch, upsertProxyStatsHourly, r.proxyHourly)
	queueProxyStats(batch, upsertProxyStatsDaily, r.proxyDaily)
	queueCounts(batch, r.countsHourly)
	return tx.SendBatch(ctx, batch).Close()
}

var (
	upsertOpStatsHourly    = fmt.Sprintf(upsertOpStats, "operation_stats_hourly")
	upsertOpStatsDaily     = fmt.Sprintf(upsertOpStats, "operation_stats_daily")
	upsertProxyStatsHourly = fmt.Sprintf(upsertProxyStats, "proxy_stats_hourly")
	upsertProxyStatsDaily  = fmt.Sprintf(upsertProxyStats, "proxy_stats_daily")
)

func queueOpStats(batch *pgx.Batch, sql string, aggs map[opKey]*opAgg) {
	if len(aggs) == 0 {
		return
	}
	keys := make([]opKey, 0, len(aggs))
	for k := range aggs {
		keys = append(keys, k)
	}
	n := len(keys)
	buckets, ops, outcomes, errTypes := make([]time.Time, n), make([]int16, n), make([]int16, n), make([]string, n)
	totals, counts, sums := make([]int64, n), make([]int64, n), make([]int64, n)
	hist := make([]int64, 0, n*stats.Buckets)
	for i, k := range keys {
		a := aggs[k]
		buckets[i], ops[i], outcomes[i], errTypes[i] = time.Unix(k.bucket, 0).UTC(), k.op, k.outcome, k.errorType
		totals[i], counts[i], sums[i] = a.total, a.execCount, a.execSum
		hist = append(hist, a.hist...)
	}
	batch.Queue(sql, buckets, ops, outcomes, errTypes, totals, counts, sums, hist, stats.Buckets)
}

func queueProxyStats(batch *pgx.Batch, sql string, aggs map[proxyKey]*proxyAgg) {
	if len(aggs) == 0 {
		return
	}
	keys := make([]proxyKey, 0, len(aggs))
	for k := range aggs {
		keys = append(keys, k)
	}
	n := len(keys)
	buckets, proxies, outcomes := make([]time.Time, n), make([]string, n), make([]int16, n)
	totals, counts, sums := make([]int64, n), make([]int64, n), make([]int64, n)
	for i, k := range keys {
		a := aggs[k]
		buckets[i], proxies[i], outcomes[i] = time.Unix(k.bucket, 0).UTC(), k.proxy, k.outcome
		totals[i], counts[i], sums[i] = a.total, a.execCount, a.execSum
	}
	batch.Queue(sql, buckets, proxies, outcomes, totals, counts, sums)
}

func queueCounts(batch *pgx.Batch, aggs map[countKey]*countAgg) {
	n := len(aggs)
	buckets, ops, totals, fails := make([]time.Time, 0, n), make([]int16, 0, n), make([]int64, 0, n), make([]int64, 0, n)
	for k, a := range aggs {
		buckets, ops = append(buckets, time.Unix(k.bucket, 0).UTC()), append(ops, k.op)
		totals, fails = append(totals, a.total), append(fails, a.failed)
	}
	batch.Queue(upsertCounts, buckets, ops, totals, fails)
}

// RebuildRollups recomputes every roll-up of [since, until) (whole days)
// from the log itself, replacing what is there: for loading data that did
// not come through ingest, or after changing the histogram bounds. Ingest
// into that range must be stopped meanwhile, or its rows may count twice.
func (s *Store) RebuildRollups(ctx context.Context, since, until time.Time) error {
	hist := "ARRAY["
	for i := 0; i < stats.Buckets; i++ {
		if i > 0 {
			hist += ", "
		}
		low, high := stats.BucketRange(i)
		cond := fmt.Sprintf("execution_time_ms >= %d", low)
		if i < stats.Buckets-1 { // the last bucket is open
			cond += fmt.Sprintf(" AND execution_time_ms < %d", high)
		}
		hist += fmt.Sprintf("count(*) FILTER (WHERE %s)", cond)
	}
	hist += "]"
	day := `date_trunc('day', create_time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'`
	hour := `date_trunc('hour', create_time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'`
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		for _, b := range []struct{ suffix, trunc string }{{"hourly", hour}, {"daily", day}} {
			for _, stmt := range []string{
				`DELETE FROM oplog.operation_stats_` + b.suffix + ` WHERE bucket_start >= $1 AND bucket_start < $2`,
				`DELETE FROM oplog.proxy_stats_` + b.suffix + ` WHERE bucket_start >= $1 AND bucket_start < $2`,
				`INSERT INTO oplog.operation_stats_` + b.suffix + `
				 SELECT ` + b.trunc + `, operation_type, outcome, coalesce(error_type, ''), count(*), count(execution_time_ms),
					coalesce(sum(execution_time_ms), 0), ` + hist + `
				 FROM oplog.operation_logs WHERE create_time >= $1 AND create_time < $2 GROUP BY 1, 2, 3, 4`,
				`INSERT INTO oplog.proxy_stats_` + b.suffix + `
				 SELECT ` + b.trunc + `, proxy_used, outcome, count(*), count(execution_time_ms), coalesce(sum(execution_time_ms), 0)
				 FROM oplog.operation_logs WHERE create_time >= $1 AND create_time < $2 AND proxy_used IS NOT NULL GROUP BY 1, 2, 3`,
			} {
				if _, err := tx.Exec(ctx, stmt, since, until); err != nil {
					return err
				}
			}
		}
		for _, stmt := range []string{
			`DELETE FROM oplog.operation_counts_hourly WHERE bucket_start >= $1 AND bucket_start < $2`,
			`INSERT INTO oplog.operation_counts_hourly
			 SELECT ` + hour + `, operation_type, count(*), count(*) FILTER (WHERE outcome = 2)
			 FROM oplog.operation_logs WHERE create_time >= $1 AND create_time < $2 GROUP BY 1, 2`,
		} {
			if _, err := tx.Exec(ctx, stmt, since, until); err != nil {
				return err
			}
		}
		return nil
	})
}
