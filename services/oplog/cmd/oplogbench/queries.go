package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	"github.com/platforma/platforma/services/oplog/internal/store"
)

// Shape of the loaded data: 10,000 users, 40 proxies, one in ten
// operations failing with one of five error types, latencies with a long
// tail, spread evenly over the last 90 days.
// loadRows inserts rows $1..$2 of $3, spread evenly over the $5 seconds
// from $4.
const loadRows = `
INSERT INTO oplog.operation_logs (id, create_time, user_id, platform_account_id, operation_type, outcome,
	error_type, error_message, execution_time_ms, retry_count, proxy_used, user_agent, request_payload)
SELECT gen_random_uuid(),
	$4::timestamptz + make_interval(secs => (g::float8 / $3) * $5),
	('00000000-0000-4000-8000-' || lpad((g % 10000)::text, 12, '0'))::uuid,
	'acct-' || g % 10000,
	1 + (g / 7) % 7,
	CASE WHEN g % 10 = 0 THEN 2 ELSE 1 END,
	CASE WHEN g % 10 = 0 THEN (ARRAY['TIMEOUT','SELECTOR_NOT_FOUND','AUTH_REQUIRED','RATE_LIMIT','NETWORK'])[1 + (g / 10) % 5] END,
	CASE WHEN g % 10 = 0 THEN 'operation failed' END,
	(-ln(1 - random()) * 900)::bigint,
	g % 3,
	'proxy-' || g % 40,
	'Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0',
	'{"page": 1, "sort": "newest"}'::jsonb
FROM generate_series($1::bigint, $2::bigint) g`

// Raw SQL over the log (what the system this replaces ran) for the same answers as the RPCs, over the
// raw table.
const (
	rawUserFailures = `
SELECT create_time, operation_type, error_type, error_message, execution_time_ms, proxy_used
FROM oplog.operation_logs
WHERE user_id = $1 AND outcome = 2 AND create_time >= now() - interval '7 days'
ORDER BY create_time DESC LIMIT 50`
	rawProxyStats = `
SELECT proxy_used, count(*) FILTER (WHERE outcome = 1) * 100.0 / count(*), avg(execution_time_ms), count(*)
FROM oplog.operation_logs
WHERE create_time >= $1 AND create_time < $2 AND proxy_used IS NOT NULL
GROUP BY proxy_used ORDER BY 2 DESC`
	rawFailureSeries = `
SELECT date_trunc('hour', create_time), operation_type, count(*) FILTER (WHERE outcome = 2) * 100.0 / count(*)
FROM oplog.operation_logs
WHERE create_time >= $1 AND create_time < $2
GROUP BY 1, 2 ORDER BY 1, 2`
	rawOperationStats = `
SELECT operation_type, count(*), count(*) FILTER (WHERE outcome = 1),
	percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY execution_time_ms)
FROM oplog.operation_logs
WHERE create_time >= $1 AND create_time < $2
GROUP BY operation_type`
)

type timing struct{ p50, p99 time.Duration }

// measure calls op n times in a row and returns the latency percentiles.
func measure(n int, op func(i int) error) (timing, error) {
	d := make([]time.Duration, n)
	for i := range d {
		start := time.Now()
		if err := op(i); err != nil {
			return timing{}, err
		}
		d[i] = time.Since(start)
	}
	slices.Sort(d)
	return timing{p50: d[n/2], p99: d[min(n-1, n*99/100)]}, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// runQueries loads rows over 90 days, builds the roll-ups, starts the
// server and times each operator question through the RPC and through raw
// SQL over the log.
func runQueries(serverBin string, rows int) error {
	ctx := context.Background()
	adminDSN, stopDB, err := database(ctx)
	if err != nil {
		return err
	}
	defer stopDB()
	dsn, err := freshDatabase(ctx, adminDSN, "bench_queries", serverBin)
	if err != nil {
		return err
	}
	if err := createPartitions(ctx, dsn, time.Now().AddDate(0, 0, -91), time.Now().AddDate(0, 1, 0)); err != nil {
		return err
	}
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return err
	}
	defer pool.Close()

	start := time.Now()
	loadStart := start.Add(-90 * 24 * time.Hour)
	const chunk = 1_000_000
	for from := 1; from <= rows; from += chunk {
		if _, err := pool.Exec(ctx, loadRows, from, min(from+chunk-1, rows), rows, loadStart, 90*86400); err != nil {
			return fmt.Errorf("load: %w", err)
		}
	}
	loaded := time.Since(start)
	start = time.Now()
	if err := store.New(pool, store.Options{}).RebuildRollups(ctx, time.Now().AddDate(0, 0, -92), time.Now().Add(24*time.Hour)); err != nil {
		return fmt.Errorf("roll-ups: %w", err)
	}
	if _, err := pool.Exec(ctx, `VACUUM ANALYZE oplog.operation_logs`); err != nil {
		return err
	}
	fmt.Printf("oplogbench queries: %d rows over 90 days (loaded in %s, roll-ups built in %s), on %d CPUs\n\n",
		rows, loaded.Round(time.Second), time.Since(start).Round(time.Second), cpus())

	srv, err := startServer(serverBin, dsn, benchCredentials().secured)
	if err != nil {
		return err
	}
	defer srv.stop()
	conn, err := grpc.NewClient(srv.addr, benchCredentials().secured.operator...)
	if err != nil {
		return err
	}
	defer conn.Close()
	client := oplogv1.NewOpLogServiceClient(conn)
	rng := rand.New(rand.NewPCG(1, 2))
	user := func() string { return fmt.Sprintf("00000000-0000-4000-8000-%012d", rng.IntN(10000)) }

	fmt.Printf("%-34s %-6s %9s %9s   %11s %11s   %s\n", "question", "window", "RPC p50", "RPC p99", "raw SQL p50", "raw SQL p99", "raw / RPC (p50)")
	report := func(question, window string, rpc, raw timing) {
		fmt.Printf("%-34s %-6s %7.2fms %7.2fms   %9.1fms %9.1fms   %.1f×\n",
			question, window, ms(rpc.p50), ms(rpc.p99), ms(raw.p50), ms(raw.p99), float64(raw.p50)/float64(rpc.p50))
	}

	// Question 1: a user's recent failures.
	rpc, err := measure(300, func(int) error {
		_, err := client.ListOperationLogs(ctx, &oplogv1.ListOperationLogsRequest{
			UserId: user(), Outcome: commonv1.Outcome_OUTCOME_FAILED, PageSize: 50,
		})
		return err
	})
	if err != nil {
		return err
	}
	raw, err := measure(300, func(int) error { return drain(pool.Query(ctx, rawUserFailures, user())) })
	if err != nil {
		return err
	}
	report("a user's recent failures (50)", "7d", rpc, raw)

	now := time.Now()
	windows := []struct {
		name string
		d    time.Duration
	}{{"24h", 24 * time.Hour}, {"7d", 7 * 24 * time.Hour}, {"30d", 30 * 24 * time.Hour}}
	for _, w := range windows {
		since, until := timestamppb.New(now.Add(-w.d)), timestamppb.New(now)
		// The raw queries take seconds: fewer runs.
		rawRuns := 3
		rpc, err := measure(200, func(int) error {
			_, err := client.GetOperationStats(ctx, &oplogv1.GetOperationStatsRequest{Since: since, Until: until})
			return err
		})
		if err != nil {
			return err
		}
		raw, err := measure(rawRuns, func(int) error { return drain(pool.Query(ctx, rawOperationStats, now.Add(-w.d), now)) })
		if err != nil {
			return err
		}
		report("operation stats (percentile_cont)", w.name, rpc, raw)

		rpc, err = measure(200, func(int) error {
			_, err := client.GetProxyStats(ctx, &oplogv1.GetProxyStatsRequest{Since: since, Until: until})
			return err
		})
		if err != nil {
			return err
		}
		raw, err = measure(rawRuns, func(int) error { return drain(pool.Query(ctx, rawProxyStats, now.Add(-w.d), now)) })
		if err != nil {
			return err
		}
		report("proxy success rates (query 3)", w.name, rpc, raw)

		rpc, err = measure(200, func(int) error {
			_, err := client.GetFailureRateSeries(ctx, &oplogv1.GetFailureRateSeriesRequest{Since: since, Until: until, Bucket: oplogv1.TimeBucket_TIME_BUCKET_HOUR})
			return err
		})
		if err != nil {
			return err
		}
		raw, err = measure(rawRuns, func(int) error { return drain(pool.Query(ctx, rawFailureSeries, now.Add(-w.d), now)) })
		if err != nil {
			return err
		}
		report("hourly failure rate (query 4)", w.name, rpc, raw)
	}
	return nil
}

// drain reads every row of a query.
func drain(rows pgx.Rows, err error) error {
	if err != nil {
		return err
	}
	for rows.Next() {
	}
	rows.Close()
	return rows.Err()
}
