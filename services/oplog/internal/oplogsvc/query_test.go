package oplogsvc_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	"github.com/platforma/platforma/services/kit/apptest"
	"github.com/platforma/platforma/services/kit/pgtest"
	"github.com/platforma/platforma/services/kit/validate"
	"github.com/platforma/platforma/services/oplog/internal/stats"
	"github.com/platforma/platforma/services/oplog/internal/store"
)

// clock is the server's "now" in these tests: mid-November, so rows over
// the previous weeks are inside the backfill window.
var clock = time.Date(2026, 11, 20, 15, 30, 0, 0, time.UTC)

var (
	proxies    = []string{"proxy-a", "proxy-b", "proxy-c", ""}
	errorTypes = []string{"TIMEOUT", "SELECTOR_NOT_FOUND", "AUTH_REQUIRED", ""}
)

// generated makes n varied rows over the 10 days before clock.
func generated(rng *rand.Rand, n int, users []string) []*oplogv1.OperationLog {
	logs := make([]*oplogv1.OperationLog, n)
	for i := range logs {
		l := row(clock.Add(-time.Duration(rng.Int64N(int64(10 * 24 * time.Hour)))))
		l.UserId = users[rng.IntN(len(users))]
		l.OperationType = oplogv1.OperationType(1 + rng.IntN(7))
		l.ProxyUsed = proxies[rng.IntN(len(proxies))]
		if rng.IntN(4) == 0 {
			l.Outcome = commonv1.Outcome_OUTCOME_FAILED
			l.ErrorType = errorTypes[rng.IntN(len(errorTypes))]
		}
		if rng.IntN(10) > 0 { // some rows report no time
			ms := int64(rng.ExpFloat64() * float64(300+rng.IntN(4000)))
			l.ExecutionTimeMs = &ms
		}
		logs[i] = l
	}
	return logs
}

// ingestAll sends logs in streams of 500 and returns how many were new.
func ingestAll(t *testing.T, client oplogv1.OpLogServiceClient, logs []*oplogv1.OperationLog) int64 {
	t.Helper()
	var accepted int64
	for start := 0; start < len(logs); start += 500 {
		resp, err := send(context.Background(), client, logs[start:min(start+500, len(logs))])
		require.NoError(t, err)
		accepted += resp.GetAccepted()
	}
	return accepted
}

// Roll-ups count exactly what the raw table holds: duplicates and
// rejected rows never count.
func TestRollupsEqualRawRows(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	client := serve(t, pool, testConfig(), func() time.Time { return clock })
	rng := rand.New(rand.NewPCG(11, 12))
	users := []string{uuid.NewString(), uuid.NewString(), uuid.NewString()}
	logs := generated(rng, 4000, users)
	// Hostile and invalid rows in the mix, and every tenth row sent twice.
	var mix []*oplogv1.OperationLog
	for i, l := range logs {
		mix = append(mix, l)
		if i%10 == 0 {
			mix = append(mix, l)
		}
		if i%97 == 0 {
			bad := proto.Clone(l).(*oplogv1.OperationLog)
			bad.Id, bad.ErrorMessage = uuid.NewString(), "nul\x00"
			mix = append(mix, bad)
		}
	}
	accepted := ingestAll(t, client, mix)
	assert.Equal(t, int64(len(logs)), accepted)
	assert.Equal(t, int64(len(logs)), accepted+ingestAll(t, client, logs[:1000]), "a resend adds nothing")

	ctx := context.Background()
	for _, tc := range []struct{ rollup, raw string }{
		{
			`SELECT bucket_start, operation_type, outcome, error_type, total, execution_ms_count, execution_ms_sum, execution_ms_histogram
			 FROM oplog.operation_stats_hourly`,
			`SELECT date_trunc('hour', create_time), operation_type, outcome, coalesce(error_type, ''), count(*), count(execution_time_ms),
			 coalesce(sum(execution_time_ms), 0), array_agg(execution_time_ms) FILTER (WHERE execution_time_ms IS NOT NULL)
			 FROM oplog.operation_logs GROUP BY 1, 2, 3, 4`,
		},
		{
			`SELECT bucket_start, operation_type, outcome, error_type, total, execution_ms_count, execution_ms_sum, execution_ms_histogram
			 FROM oplog.operation_stats_daily`,
			`SELECT date_trunc('day', create_time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', operation_type, outcome, coalesce(error_type, ''),
			 count(*), count(execution_time_ms), coalesce(sum(execution_time_ms), 0),
			 array_agg(execution_time_ms) FILTER (WHERE execution_time_ms IS NOT NULL)
			 FROM oplog.operation_logs GROUP BY 1, 2, 3, 4`,
		},
	} {
		assert.Equal(t, opRollup(t, pool, tc.rollup, false), opRollup(t, pool, tc.raw, true))
	}
	for _, tc := range []struct{ rollup, raw string }{
		{
			`SELECT bucket_start, proxy_used, outcome, total, execution_ms_count, execution_ms_sum FROM oplog.proxy_stats_hourly`,
			`SELECT date_trunc('hour', create_time), proxy_used, outcome, count(*), count(execution_time_ms),
			 coalesce(sum(execution_time_ms), 0)::bigint FROM oplog.operation_logs WHERE proxy_used IS NOT NULL GROUP BY 1, 2, 3`,
		},
		{
			`SELECT bucket_start, proxy_used, outcome, total, execution_ms_count, execution_ms_sum FROM oplog.proxy_stats_daily`,
			`SELECT date_trunc('day', create_time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', proxy_used, outcome, count(*),
			 count(execution_time_ms), coalesce(sum(execution_time_ms), 0)::bigint FROM oplog.operation_logs WHERE proxy_used IS NOT NULL GROUP BY 1, 2, 3`,
		},
		{
			`SELECT bucket_start, operation_type, total, failed FROM oplog.operation_counts_hourly`,
			`SELECT date_trunc('hour', create_time), operation_type, count(*), count(*) FILTER (WHERE outcome = 2)
			 FROM oplog.operation_logs GROUP BY 1, 2`,
		},
	} {
		assert.Equal(t, rowsOf(t, pool, tc.rollup), rowsOf(t, pool, tc.raw))
	}

	// Rebuilding the roll-ups from the log gives what ingest maintained.
	before := opRollup(t, pool, `SELECT bucket_start, operation_type, outcome, error_type, total, execution_ms_count,
		execution_ms_sum, execution_ms_histogram FROM oplog.operation_stats_hourly`, false)
	beforeProxies := rowsOf(t, pool, `SELECT * FROM oplog.proxy_stats_daily`)
	beforeCounts := rowsOf(t, pool, `SELECT * FROM oplog.operation_counts_hourly`)
	require.NoError(t, store.New(pool, store.Options{}).RebuildRollups(ctx, clock.AddDate(0, 0, -30), clock.AddDate(0, 0, 1)))
	assert.Equal(t, before, opRollup(t, pool, `SELECT bucket_start, operation_type, outcome, error_type, total, execution_ms_count,
		execution_ms_sum, execution_ms_histogram FROM oplog.operation_stats_hourly`, false))
	assert.Equal(t, beforeProxies, rowsOf(t, pool, `SELECT * FROM oplog.proxy_stats_daily`))
	assert.Equal(t, beforeCounts, rowsOf(t, pool, `SELECT * FROM oplog.operation_counts_hourly`))

	// And the RPCs read the same numbers, for a window with partial days.
	since, until := clock.Add(-6*24*time.Hour-7*time.Hour), clock.Add(-2*24*time.Hour+3*time.Hour)
	resp, err := client.GetOperationStats(ctx, &oplogv1.GetOperationStatsRequest{Since: timestamppb.New(since), Until: timestamppb.New(until)})
	require.NoError(t, err)
	w0, w1 := since.Truncate(time.Hour), until.Truncate(time.Hour)
	assert.True(t, resp.GetSince().AsTime().Equal(w0))
	assert.True(t, resp.GetUntil().AsTime().Equal(w1.Add(time.Hour)), "widened to whole hours")
	rows, err := pool.Query(ctx, `SELECT operation_type, count(*), count(*) FILTER (WHERE outcome = 1)
		FROM oplog.operation_logs WHERE create_time >= $1 AND create_time < $2 GROUP BY 1 ORDER BY 1`, w0, w1.Add(time.Hour))
	require.NoError(t, err)
	var want [][3]int64
	for rows.Next() {
		var r [3]int64
		require.NoError(t, rows.Scan(&r[0], &r[1], &r[2]))
		want = append(want, r)
	}
	var got [][3]int64
	for _, st := range resp.GetStats() {
		got = append(got, [3]int64{int64(st.GetOperationType()), st.GetTotal(), st.GetSuccessCount()})
		var errs int64
		for _, e := range st.GetErrors() {
			errs += e.GetCount()
		}
		assert.Equal(t, st.GetTotal()-st.GetSuccessCount(), errs, "every failure is in the error distribution")
	}
	assert.Equal(t, want, got)
}

// opRollup reads operation statistics as comparable strings; for raw
// rows, the latencies are bucketed here.
func opRollup(t *testing.T, pool *pgxpool.Pool, sql string, raw bool) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), sql)
	require.NoError(t, err)
	var out []string
	for rows.Next() {
		var bucket time.Time
		var op, outcome int16
		var errType string
		var total, count, sum int64
		var hist []int64
		if raw {
			var values []int64
			require.NoError(t, rows.Scan(&bucket, &op, &outcome, &errType, &total, &count, &sum, &values))
			hist = make([]int64, stats.Buckets)
			for _, v := range values {
				hist[stats.Bucket(v)]++
			}
		} else {
			require.NoError(t, rows.Scan(&bucket, &op, &outcome, &errType, &total, &count, &sum, &hist))
		}
		out = append(out, fmt.Sprint(bucket.UTC(), op, outcome, errType, total, count, sum, hist))
	}
	require.NoError(t, rows.Err())
	sort.Strings(out)
	require.NotEmpty(t, out)
	return out
}

func rowsOf(t *testing.T, pool *pgxpool.Pool, sql string) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), sql)
	require.NoError(t, err)
	var out []string
	for rows.Next() {
		vals, err := rows.Values()
		require.NoError(t, err)
		if ts, ok := vals[0].(time.Time); ok {
			vals[0] = ts.UTC()
		}
		out = append(out, fmt.Sprint(vals...))
	}
	require.NoError(t, rows.Err())
	sort.Strings(out)
	require.NotEmpty(t, out)
	return out
}

func TestPercentilesWithinOneBucketOfExact(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	client := serve(t, pool, testConfig(), func() time.Time { return clock })
	rng := rand.New(rand.NewPCG(13, 14))
	ingestAll(t, client, generated(rng, 5000, []string{uuid.NewString()}))

	resp, err := client.GetOperationStats(context.Background(), &oplogv1.GetOperationStatsRequest{
		Since: timestamppb.New(clock.Add(-30 * 24 * time.Hour)), Until: timestamppb.New(clock),
	})
	require.NoError(t, err)
	require.Len(t, resp.GetStats(), 7)
	for _, st := range resp.GetStats() {
		var p50, p95, p99 float64
		require.NoError(t, pool.QueryRow(context.Background(), `
			SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY execution_time_ms),
				percentile_cont(0.95) WITHIN GROUP (ORDER BY execution_time_ms),
				percentile_cont(0.99) WITHIN GROUP (ORDER BY execution_time_ms)
			FROM oplog.operation_logs WHERE operation_type = $1 AND execution_time_ms IS NOT NULL`,
			int16(st.GetOperationType())).Scan(&p50, &p95, &p99))
		for _, c := range []struct {
			name            string
			exact, estimate float64
		}{{"p50", p50, st.GetP50ExecutionTimeMs()}, {"p95", p95, st.GetP95ExecutionTimeMs()}, {"p99", p99, st.GetP99ExecutionTimeMs()}} {
			diff := stats.Bucket(int64(c.estimate)) - stats.Bucket(int64(c.exact))
			assert.True(t, diff >= -1 && diff <= 1, "%v %s: exact %.1f, from the histogram %.1f", st.GetOperationType(), c.name, c.exact, c.estimate)
		}
	}
}

func TestProxyStatsAndFailureSeries(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	client := serve(t, pool, testConfig(), func() time.Time { return clock })
	ctx := context.Background()
	at := clock.Truncate(time.Hour).Add(-2 * time.Hour)
	mk := func(proxy string, op oplogv1.OperationType, failed bool, ms int64, offset time.Duration) *oplogv1.OperationLog {
		l := row(at.Add(offset))
		l.ProxyUsed, l.OperationType, l.ExecutionTimeMs = proxy, op, &ms
		if failed {
			l.Outcome, l.ErrorType = commonv1.Outcome_OUTCOME_FAILED, "TIMEOUT"
		}
		return l
	}
	get, add := oplogv1.OperationType_OPERATION_TYPE_GET_REVIEWS, oplogv1.OperationType_OPERATION_TYPE_ADD_REPLY
	ingestAll(t, client, []*oplogv1.OperationLog{
		mk("proxy-a", get, false, 100, 0), mk("proxy-a", get, false, 300, 0), mk("proxy-a", add, true, 500, time.Hour),
		mk("proxy-b", get, true, 1000, 0), mk("proxy-b", get, true, 3000, time.Hour),
		mk("", get, false, 1, 0), // no proxy: not in proxy stats
	})
	proxies, err := client.GetProxyStats(ctx, &oplogv1.GetProxyStatsRequest{Since: timestamppb.New(at), Until: timestamppb.New(clock)})
	require.NoError(t, err)
	require.Len(t, proxies.GetProxies(), 2)
	a, b := proxies.GetProxies()[0], proxies.GetProxies()[1]
	assert.Equal(t, []any{"proxy-a", int64(3), int64(2), 2.0 / 3, 300.0}, []any{a.GetProxyUsed(), a.GetTotal(), a.GetSuccessCount(), a.GetSuccessRate(), a.GetMeanExecutionTimeMs()})
	assert.Equal(t, []any{"proxy-b", int64(2), int64(0), 0.0, 2000.0}, []any{b.GetProxyUsed(), b.GetTotal(), b.GetSuccessCount(), b.GetSuccessRate(), b.GetMeanExecutionTimeMs()})

	series, err := client.GetFailureRateSeries(ctx, &oplogv1.GetFailureRateSeriesRequest{
		Since: timestamppb.New(at), Until: timestamppb.New(clock), Bucket: oplogv1.TimeBucket_TIME_BUCKET_HOUR,
	})
	require.NoError(t, err)
	type point struct {
		hour          int
		op            oplogv1.OperationType
		total, failed int64
		rate          float64
	}
	var got []point
	for _, p := range series.GetPoints() {
		got = append(got, point{int(p.GetBucketStart().AsTime().Sub(at) / time.Hour), p.GetOperationType(), p.GetTotal(), p.GetFailed(), p.GetFailureRate()})
	}
	assert.Equal(t, []point{{0, get, 4, 1, 0.25}, {1, get, 1, 1, 1}, {1, add, 1, 1, 1}}, got)

	daily, err := client.GetFailureRateSeries(ctx, &oplogv1.GetFailureRateSeriesRequest{
		Since: timestamppb.New(at), Until: timestamppb.New(clock), Bucket: oplogv1.TimeBucket_TIME_BUCKET_DAY, OperationType: get,
	})
	require.NoError(t, err)
	require.Len(t, daily.GetPoints(), 1)
	assert.Equal(t, int64(5), daily.GetPoints()[0].GetTotal())
	assert.True(t, daily.GetSince().AsTime().Equal(at.Truncate(24*time.Hour)), "widened to whole days")
}

func TestListOperationLogsPagesThroughTies(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	client := serve(t, pool, testConfig(), func() time.Time { return clock })
	ctx := context.Background()
	user := uuid.NewString()
	same := clock.Add(-time.Hour)
	var logs []*oplogv1.OperationLog
	var failures []string
	for i := 0; i < 30; i++ {
		l := row(same) // 30 rows with one create_time: only ids order them
		l.UserId = user
		if i%3 == 0 {
			l.Outcome, l.ErrorType = commonv1.Outcome_OUTCOME_FAILED, "AUTH_REQUIRED"
			failures = append(failures, l.GetId())
		}
		logs = append(logs, l)
	}
	older := row(same.Add(-time.Minute))
	older.UserId = user
	logs = append(logs, older, row(same)) // and someone else's row
	ingestAll(t, client, logs)

	collect := func(req *oplogv1.ListOperationLogsRequest) ([]string, int) {
		return apptest.Pages(t, func(token string) ([]string, string, error) {
			req := proto.Clone(req).(*oplogv1.ListOperationLogsRequest)
			req.PageToken = token
			resp, err := client.ListOperationLogs(ctx, req)
			var ids []string
			for _, l := range resp.GetOperationLogs() {
				ids = append(ids, l.GetId())
			}
			return ids, resp.GetNextPageToken(), err
		})
	}
	ids, pages := collect(&oplogv1.ListOperationLogsRequest{UserId: user, PageSize: 4})
	assert.Len(t, ids, 31)
	assert.Equal(t, 8, pages)
	var tied []string
	for _, l := range logs[:30] {
		tied = append(tied, l.GetId())
	}
	sort.Sort(sort.Reverse(sort.StringSlice(tied)))
	assert.Equal(t, append(tied, older.GetId()), ids, "newest first, ties by id descending, each once")

	got, _ := collect(&oplogv1.ListOperationLogsRequest{UserId: user, Outcome: commonv1.Outcome_OUTCOME_FAILED, PageSize: 3})
	sort.Sort(sort.Reverse(sort.StringSlice(failures)))
	assert.Equal(t, failures, got, "a user's recent failures")
	got, _ = collect(&oplogv1.ListOperationLogsRequest{ErrorType: "AUTH_REQUIRED", Outcome: commonv1.Outcome_OUTCOME_FAILED})
	assert.Equal(t, failures, got)

	first, err := client.ListOperationLogs(ctx, &oplogv1.ListOperationLogsRequest{UserId: user, PageSize: 2})
	require.NoError(t, err)
	_, err = client.ListOperationLogs(ctx, &oplogv1.ListOperationLogsRequest{UserId: uuid.NewString(), PageSize: 2, PageToken: first.GetNextPageToken()})
	assert.Equal(t, []string{"page_token"}, apptest.ViolatedFields(t, err), "a token is bound to its filter")

	full, err := client.ListOperationLogs(ctx, &oplogv1.ListOperationLogsRequest{UserId: user, PageSize: 1})
	require.NoError(t, err)
	l := full.GetOperationLogs()[0]
	assert.Equal(t, user, l.GetUserId())
	assert.True(t, l.GetCreateTime().AsTime().Equal(same))
}

func TestListFiltersAndDefaultWindow(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	client := serve(t, pool, testConfig(), func() time.Time { return clock })
	ctx := context.Background()
	base := row(clock.Add(-time.Hour))
	variants := map[string]func(*oplogv1.OperationLog){
		"account":   func(l *oplogv1.OperationLog) { l.PlatformAccountId = "acct-9" },
		"operation": func(l *oplogv1.OperationLog) { l.OperationType = oplogv1.OperationType_OPERATION_TYPE_DELETE_REPLY },
		"proxy":     func(l *oplogv1.OperationLog) { l.ProxyUsed = "proxy-z" },
		"old":       func(l *oplogv1.OperationLog) { l.CreateTime = timestamppb.New(clock.Add(-8 * 24 * time.Hour)) },
	}
	ids := map[string]string{}
	var logs []*oplogv1.OperationLog
	for name, mutate := range variants {
		l := proto.Clone(base).(*oplogv1.OperationLog)
		l.Id = uuid.NewString()
		mutate(l)
		ids[name] = l.GetId()
		logs = append(logs, l)
	}
	logs = append(logs, base)
	ingestAll(t, client, logs)
	only := func(req *oplogv1.ListOperationLogsRequest) []string {
		resp, err := client.ListOperationLogs(ctx, req)
		require.NoError(t, err)
		var out []string
		for _, l := range resp.GetOperationLogs() {
			out = append(out, l.GetId())
		}
		return out
	}
	assert.Equal(t, []string{ids["account"]}, only(&oplogv1.ListOperationLogsRequest{PlatformAccountId: "acct-9"}))
	assert.Equal(t, []string{ids["operation"]}, only(&oplogv1.ListOperationLogsRequest{OperationType: oplogv1.OperationType_OPERATION_TYPE_DELETE_REPLY}))
	assert.Equal(t, []string{ids["proxy"]}, only(&oplogv1.ListOperationLogsRequest{ProxyUsed: "proxy-z"}))
	assert.Len(t, only(&oplogv1.ListOperationLogsRequest{}), 4, "the default window is the last 7 days")
	assert.Equal(t, []string{ids["old"]}, only(&oplogv1.ListOperationLogsRequest{
		Since: timestamppb.New(clock.Add(-9 * 24 * time.Hour)), Until: timestamppb.New(clock.Add(-7 * 24 * time.Hour)),
	}))
}

// Every value Ingest stores can be used as the filter that finds it: both
// follow the field kinds of services/kit/validate.
func TestStoredValuesAreUsableFilters(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	client := serve(t, pool, testConfig(), func() time.Time { return clock })
	ctx := context.Background()
	values := []string{"a b", "가게-7", "x" + strings.Repeat("y", 254), "tab\u200bzero-width", "E_" + strings.Repeat("Z", 62)}
	var logs []*oplogv1.OperationLog
	for _, v := range values {
		l := row(clock.Add(-time.Minute))
		l.Id, l.PlatformAccountId, l.ProxyUsed = uuid.NewString(), v, v
		l.Outcome, l.ErrorType = commonv1.Outcome_OUTCOME_FAILED, v[:min(len(v), validate.Code.MaxBytes())]
		logs = append(logs, l)
	}
	require.Equal(t, int64(len(values)), ingestAll(t, client, logs))
	for i, l := range logs {
		for field, req := range map[string]*oplogv1.ListOperationLogsRequest{
			"platform_account_id": {PlatformAccountId: l.GetPlatformAccountId()},
			"proxy_used":          {ProxyUsed: l.GetProxyUsed()},
			"error_type":          {ErrorType: l.GetErrorType(), Outcome: commonv1.Outcome_OUTCOME_FAILED},
		} {
			resp, err := client.ListOperationLogs(ctx, req)
			require.NoError(t, err, "%s %q", field, values[i])
			var ids []string
			for _, got := range resp.GetOperationLogs() {
				ids = append(ids, got.GetId())
			}
			assert.Contains(t, ids, l.GetId(), "%s %q", field, values[i])
		}
	}
}

// Windows asked to end beyond any possible row end at the server's clock
// plus the future skew, so the answer's until is a valid Timestamp that
// protojson (grpcurl) can print.
func TestStatsWindowsEndAtTheNewestPossibleRow(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	client := serve(t, pool, testConfig(), func() time.Time { return clock })
	ctx := context.Background()
	ingestAll(t, client, []*oplogv1.OperationLog{row(clock.Add(-time.Hour))})
	farFuture := timestamppb.New(time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC))
	since := timestamppb.New(clock.Add(-24 * time.Hour))
	latest := time.Date(2026, 11, 20, 16, 0, 0, 0, time.UTC) // clock + 5 minutes, widened to the hour
	var untils []*timestamppb.Timestamp
	stats, err := client.GetOperationStats(ctx, &oplogv1.GetOperationStatsRequest{Since: since, Until: farFuture})
	require.NoError(t, err)
	require.Len(t, stats.GetStats(), 1)
	assert.Equal(t, int64(1), stats.GetStats()[0].GetTotal())
	untils = append(untils, stats.GetUntil())
	proxies, err := client.GetProxyStats(ctx, &oplogv1.GetProxyStatsRequest{Since: since, Until: farFuture})
	require.NoError(t, err)
	untils = append(untils, proxies.GetUntil())
	series, err := client.GetFailureRateSeries(ctx, &oplogv1.GetFailureRateSeriesRequest{Since: since, Until: farFuture, Bucket: oplogv1.TimeBucket_TIME_BUCKET_HOUR})
	require.NoError(t, err)
	untils = append(untils, series.GetUntil())
	for _, u := range untils {
		require.NoError(t, u.CheckValid())
		assert.True(t, u.AsTime().Equal(latest), "until %s, want %s", u.AsTime(), latest)
	}
	for _, m := range []proto.Message{stats, proxies, series} {
		_, err := protojson.Marshal(m)
		assert.NoError(t, err, "grpcurl prints it")
	}
	list, err := client.ListOperationLogs(ctx, &oplogv1.ListOperationLogsRequest{Since: since, Until: farFuture})
	require.NoError(t, err, "a list window ending in year 9999 ends now")
	assert.Len(t, list.GetOperationLogs(), 1)
}

func TestQueryValidation(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	client := serve(t, pool, testConfig(), func() time.Time { return clock })
	ctx := context.Background()
	ts := timestamppb.New
	for name, tc := range map[string]struct {
		call  func() error
		field string
	}{
		"list: since after until": {func() error {
			_, err := client.ListOperationLogs(ctx, &oplogv1.ListOperationLogsRequest{Since: ts(clock), Until: ts(clock.Add(-time.Hour))})
			return err
		}, "since"},
		"list: window too wide": {func() error {
			_, err := client.ListOperationLogs(ctx, &oplogv1.ListOperationLogsRequest{Since: ts(clock.AddDate(0, -4, 0)), Until: ts(clock)})
			return err
		}, "since"},
		"list: bad user": {func() error {
			_, err := client.ListOperationLogs(ctx, &oplogv1.ListOperationLogsRequest{UserId: "x"})
			return err
		}, "user_id"},
		"list: unknown outcome": {func() error {
			_, err := client.ListOperationLogs(ctx, &oplogv1.ListOperationLogsRequest{Outcome: 5})
			return err
		}, "outcome"},
		"list: tampered token": {func() error {
			_, err := client.ListOperationLogs(ctx, &oplogv1.ListOperationLogsRequest{PageToken: "AAAA"})
			return err
		}, "page_token"},
		"stats: no since": {func() error {
			_, err := client.GetOperationStats(ctx, &oplogv1.GetOperationStatsRequest{Until: ts(clock)})
			return err
		}, "since"},
		"stats: unknown operation": {func() error {
			_, err := client.GetOperationStats(ctx, &oplogv1.GetOperationStatsRequest{Since: ts(clock.Add(-time.Hour)), Until: ts(clock), OperationType: 77})
			return err
		}, "operation_type"},
		"proxies: three years": {func() error {
			_, err := client.GetProxyStats(ctx, &oplogv1.GetProxyStatsRequest{Since: ts(clock.AddDate(-3, 0, 0)), Until: ts(clock)})
			return err
		}, "since"},
		"list: account not UTF-8": {func() error {
			_, err := client.ListOperationLogs(ctx, &oplogv1.ListOperationLogsRequest{PlatformAccountId: "acct-\xff"})
			return err
		}, "platform_account_id"},
		"list: error type not UTF-8": {func() error {
			_, err := client.ListOperationLogs(ctx, &oplogv1.ListOperationLogsRequest{ErrorType: "\xc3\x28"})
			return err
		}, "error_type"},
		"stats: since in the future": {func() error {
			_, err := client.GetOperationStats(ctx, &oplogv1.GetOperationStatsRequest{Since: ts(clock.Add(time.Hour)), Until: ts(clock.Add(2 * time.Hour))})
			return err
		}, "since"},
		"series: no bucket": {func() error {
			_, err := client.GetFailureRateSeries(ctx, &oplogv1.GetFailureRateSeriesRequest{Since: ts(clock.Add(-time.Hour)), Until: ts(clock)})
			return err
		}, "bucket"},
		"series: hourly for a year": {func() error {
			_, err := client.GetFailureRateSeries(ctx, &oplogv1.GetFailureRateSeriesRequest{
				Since: ts(clock.AddDate(-1, 0, 0)), Until: ts(clock), Bucket: oplogv1.TimeBucket_TIME_BUCKET_HOUR,
			})
			return err
		}, "since"},
	} {
		assert.Equal(t, []string{tc.field}, apptest.ViolatedFields(t, tc.call()), name)
	}
}

// The important queries use their index and scan only the partitions of
// the requested range.
func TestQueriesUseTheirIndexesAndPrunePartitions(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	client := serve(t, pool, testConfig(), func() time.Time { return clock })
	ctx := context.Background()
	// Ingest creates the partitions of the window (October to December);
	// then 230,000 rows go straight into November and a few into older
	// months.
	require.Equal(t, int64(1), ingestAll(t, client, []*oplogv1.OperationLog{row(clock)}))
	_, err := pool.Exec(ctx, `
		CREATE TABLE IF NOT EXISTS oplog.operation_logs_p202609 PARTITION OF oplog.operation_logs FOR VALUES FROM ('2026-09-01 00:00+00') TO ('2026-10-01 00:00+00');
		INSERT INTO oplog.operation_logs (id, create_time, user_id, operation_type, outcome, error_type, proxy_used)
		SELECT gen_random_uuid(), '2026-11-01'::timestamptz + make_interval(secs => g * 6),
			('00000000-0000-0000-0000-' || lpad((g % 500)::text, 12, '0'))::uuid,
			1 + g % 7, CASE WHEN g % 5 = 0 THEN 2 ELSE 1 END, CASE WHEN g % 5 = 0 THEN 'TIMEOUT' END, 'proxy-' || g % 20
		FROM generate_series(1, 230000) g;
		INSERT INTO oplog.operation_logs (id, create_time, user_id, operation_type, outcome)
		SELECT gen_random_uuid(), '2026-09-15'::timestamptz + make_interval(mins => g), gen_random_uuid(), 1, 1 FROM generate_series(1, 1000) g;
		ANALYZE oplog.operation_logs`)
	require.NoError(t, err)
	user := [16]byte(uuid.MustParse("00000000-0000-0000-0000-000000000042"))
	week := store.LogFilter{Since: clock.Add(-7 * 24 * time.Hour), Until: clock, Limit: 51}

	cases := []struct {
		name   string
		filter func(store.LogFilter) store.LogFilter
		index  string
	}{
		{"a user's recent failures", func(f store.LogFilter) store.LogFilter { f.UserID, f.Outcome = &user, 2; return f }, "operation_logs_user_idx"},
		{"a user's logs, next page", func(f store.LogFilter) store.LogFilter {
			f.UserID, f.BeforeTime, f.BeforeID = &user, clock.Add(-24*time.Hour), [16]byte{0xff}
			return f
		}, "operation_logs_user_idx"},
		{"recent failures of one type", func(f store.LogFilter) store.LogFilter { f.Outcome, f.ErrorType = 2, "TIMEOUT"; return f }, "operation_logs_failure_idx"},
		{"one proxy's logs", func(f store.LogFilter) store.LogFilter { f.ProxyUsed = "proxy-3"; return f }, "operation_logs_time_brin"},
	}
	for _, tc := range cases {
		sql, args := store.ListSQL(tc.filter(week))
		p := apptest.Plan(t, pool, sql, args...)
		assert.Contains(t, p, `"Index Name":"`+partitionIndex(t, pool, tc.index, "operation_logs_p202611")+`"`, tc.name)
		assert.Contains(t, p, `operation_logs_p202611`, tc.name)
		assert.NotContains(t, p, `operation_logs_p202609`, "%s: September is outside the range and pruned", tc.name)
		assert.NotContains(t, p, `"Node Type":"Seq Scan"`, tc.name)
	}
}

// partitionIndex is the name of the index of partition that the
// partitioned index parent created there.
func partitionIndex(t *testing.T, pool *pgxpool.Pool, parent, partition string) string {
	t.Helper()
	var name string
	require.NoError(t, pool.QueryRow(context.Background(), `
		SELECT c.relname FROM pg_inherits i
		JOIN pg_class c ON c.oid = i.inhrelid
		JOIN pg_index x ON x.indexrelid = c.oid
		WHERE i.inhparent = ('oplog.' || $1)::regclass AND x.indrelid = ('oplog.' || $2)::regclass`, parent, partition).Scan(&name))
	return name
}

// An archived month is read only when asked for, and otherwise named as
// missing; so is a month that is only in cold storage.
func TestListOperationLogsOverTheArchive(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	client := serve(t, pool, testConfig(), func() time.Time { return clock })
	ctx := context.Background()
	at := clock.Add(-20 * 24 * time.Hour)
	month := time.Date(at.Year(), at.Month(), 1, 0, 0, 0, 0, time.UTC)
	var logs []*oplogv1.OperationLog
	for i := 0; i < 5; i++ {
		logs = append(logs, row(at.Add(time.Duration(i)*time.Minute)))
	}
	ingestAll(t, client, logs)
	// What the life cycle does to a month (package lifecycle), by hand.
	part := "oplog." + store.PartitionName(month)
	_, err := pool.Exec(ctx, fmt.Sprintf(`ALTER TABLE oplog.operation_logs DETACH PARTITION %s;
		ALTER TABLE oplog.operation_logs_archive ATTACH PARTITION %[1]s FOR VALUES FROM ('%[2]s') TO ('%[3]s');
		INSERT INTO oplog.lifecycle_months (month, state) VALUES ('%[2]s', 'verified'), ('%[4]s', 'dropped')`,
		part, month.Format(time.DateOnly), month.AddDate(0, 1, 0).Format(time.DateOnly), month.AddDate(0, -1, 0).Format(time.DateOnly)))
	require.NoError(t, err)

	window := &oplogv1.ListOperationLogsRequest{Since: timestamppb.New(month.AddDate(0, -1, 0)), Until: timestamppb.New(clock)}
	resp, err := client.ListOperationLogs(ctx, window)
	require.NoError(t, err)
	assert.Empty(t, resp.GetOperationLogs())
	assert.Equal(t, []string{month.AddDate(0, -1, 0).Format("2006-01"), month.Format("2006-01")}, resp.GetMissingMonths())

	archived := proto.Clone(window).(*oplogv1.ListOperationLogsRequest)
	archived.IncludeArchived, archived.PageSize = true, 2
	all, pages := apptest.Pages(t, func(token string) ([]*oplogv1.OperationLog, string, error) {
		req := proto.Clone(archived).(*oplogv1.ListOperationLogsRequest)
		req.PageToken = token
		resp, err := client.ListOperationLogs(ctx, req)
		if err == nil {
			assert.Equal(t, []string{month.AddDate(0, -1, 0).Format("2006-01")}, resp.GetMissingMonths(), "only the dropped month")
		}
		return resp.GetOperationLogs(), resp.GetNextPageToken(), err
	})
	assert.Len(t, all, 5)
	assert.Equal(t, 3, pages)
	assert.Equal(t, logs[4].GetId(), all[0].GetId(), "newest first")
}
