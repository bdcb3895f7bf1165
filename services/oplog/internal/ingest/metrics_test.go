package ingest_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	"github.com/platforma/platforma/services/kit/apptest"
	"github.com/platforma/platforma/services/kit/metrics"
	"github.com/platforma/platforma/services/kit/pgtest"
	"github.com/platforma/platforma/services/oplog"
	"github.com/platforma/platforma/services/oplog/internal/ingest"
	"github.com/platforma/platforma/services/oplog/internal/store"
)

// The scrape test starts the whole service on a throwaway database, which
// migrates itself; the unit tests need none.
func TestMain(m *testing.M) { pgtest.Main(m) }

// operationTypes are the label values of every OperationType but
// UNSPECIFIED.
func operationTypes() []string {
	var ops []string
	for n := range oplogv1.OperationType_name {
		if n != int32(oplogv1.OperationType_OPERATION_TYPE_UNSPECIFIED) {
			ops = append(ops, metrics.EnumLabel(oplogv1.OperationType(n)))
		}
	}
	sort.Strings(ops)
	return ops
}

// gather returns every counter of reg as `name{label="value",...}` (labels
// in name order, as on a /metrics page) → value.
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	out := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			if m.GetCounter() == nil {
				continue
			}
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			name := f.GetName()
			if len(labels) > 0 {
				name += "{" + strings.Join(labels, ",") + "}"
			}
			out[name] = m.GetCounter().GetValue()
		}
	}
	return out
}

func outcomeSeries(op, outcome string) string {
	return fmt.Sprintf(`platforma_operation_outcomes_total{operation_type=%q,outcome=%q}`, op, outcome)
}

func errorSeries(op, errorType string) string {
	return fmt.Sprintf(`platforma_operation_errors_total{error_type=%q,operation_type=%q}`, errorType, op)
}

// assertSeries checks that each series is exported with its value.
func assertSeries(t *testing.T, got map[string]float64, want map[string]float64) {
	t.Helper()
	for series, v := range want {
		value, found := got[series]
		if assert.True(t, found, "%s is exported", series) {
			assert.Equal(t, v, value, series)
		}
	}
}

// Every series that a rate, a ratio or an alert reads exists at 0 before
// its first count, or rate() never sees that count.
func TestSeriesExistBeforeTheirFirstCount(t *testing.T) {
	t.Parallel()
	m := ingest.NewMetrics(2, 1)
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.Collectors()...)

	want := map[string]float64{
		`platforma_ingest_rows_total{result="accepted"}`:                    0,
		`platforma_ingest_rows_total{result="duplicate"}`:                   0,
		`platforma_ingest_rows_total{result="rejected"}`:                    0,
		`platforma_proxy_operations_total{outcome="SUCCESS",proxy="other"}`: 0,
		`platforma_proxy_operations_total{outcome="FAILED",proxy="other"}`:  0,
		`platforma_ingest_batch_failures_total`:                             0,
	}
	for _, op := range operationTypes() {
		want[outcomeSeries(op, "SUCCESS")] = 0
		want[outcomeSeries(op, "FAILED")] = 0
		want[errorSeries(op, "AUTH_REQUIRED")] = 0
		want[errorSeries(op, "")] = 0
		want[errorSeries(op, "other")] = 0
		want[fmt.Sprintf(`platforma_operation_retries_total{operation_type=%q}`, op)] = 0
	}
	before := gather(t, reg)
	assertSeries(t, before, want)
	for series := range before {
		assert.NotContains(t, series, "UNSPECIFIED", "no series for OPERATION_TYPE_UNSPECIFIED")
	}

	row := func(op oplogv1.OperationType, outcome commonv1.Outcome, errorType, proxy string) *store.Row {
		return &store.Row{ID: uuid.New(), OperationType: int16(op), Outcome: int16(outcome), ErrorType: []byte(errorType), ProxyUsed: []byte(proxy)}
	}
	const reviews, reply = oplogv1.OperationType_OPERATION_TYPE_GET_REVIEWS, oplogv1.OperationType_OPERATION_TYPE_ADD_REPLY
	const ok, failed = commonv1.Outcome_OUTCOME_SUCCESS, commonv1.Outcome_OUTCOME_FAILED
	m.Committed([]*store.Row{
		row(reviews, ok, "", "p1"),
		row(reviews, ok, "", "p1"),
		row(reviews, failed, "CAPTCHA_WALL", ""), // never seen before
		row(reviews, failed, "CAPTCHA_WALL", ""),
		row(reviews, failed, "TIMEOUT", "p2"), // p2 beyond the proxy cap
		row(reply, failed, "AUTH_REQUIRED", ""),
		row(reply, failed, "NETWORK", ""), // beyond the error type cap of 2
		row(reply, failed, "", ""),
	}, 3, 0)
	m.Rejected("user_id")

	after := gather(t, reg)
	assertSeries(t, after, map[string]float64{
		outcomeSeries("GET_REVIEWS", "SUCCESS"):    2,
		outcomeSeries("GET_REVIEWS", "FAILED"):     3,
		outcomeSeries("ADD_REPLY", "SUCCESS"):      0,
		outcomeSeries("ADD_REPLY", "FAILED"):       3,
		outcomeSeries("CHECK_LOGIN", "FAILED"):     0,
		errorSeries("GET_REVIEWS", "CAPTCHA_WALL"): 2,
		errorSeries("GET_REVIEWS", "TIMEOUT"):      1,
		errorSeries("ADD_REPLY", "AUTH_REQUIRED"):  1, // never folded, not counted against the cap
		errorSeries("ADD_REPLY", "other"):          1,
		errorSeries("ADD_REPLY", ""):               1,
		// A new error type's series exist for every operation type from
		// its first sight on.
		errorSeries("CHECK_LOGIN", "CAPTCHA_WALL"): 0,
		errorSeries("ADD_REPLY", "CAPTCHA_WALL"):   0,
		// A proxy's failures exist once its first success was counted.
		`platforma_proxy_operations_total{outcome="SUCCESS",proxy="p1"}`:    2,
		`platforma_proxy_operations_total{outcome="FAILED",proxy="p1"}`:     0,
		`platforma_proxy_operations_total{outcome="FAILED",proxy="other"}`:  1,
		`platforma_proxy_operations_total{outcome="SUCCESS",proxy="other"}`: 0,
		`platforma_ingest_rows_total{result="accepted"}`:                    8,
		`platforma_ingest_rows_total{result="duplicate"}`:                   3,
		`platforma_ingest_rows_total{result="rejected"}`:                    1,
		`platforma_ingest_rejected_rows_total{reason="user_id"}`:            1,
	})
	_, found := after[errorSeries("ADD_REPLY", "NETWORK")]
	assert.False(t, found, "NETWORK is beyond the cap: counted as other")
	for series := range after {
		assert.False(t, strings.HasPrefix(series, "platforma_operation_errors_total") && strings.Contains(series, `"SUCCESS"`),
			"successes carry no error type: %s", series)
	}
}

// The reproduction of "metrics blind to the first failures" against a
// running server: 40 rows, 10 of them failed with an error type never
// seen before. Scraped before and after, the outcome counter reads the
// exact counts, so rate() sees all 10 failures (success rate 75%, not
// 100%).
func TestScrapeCountsTheFirstFailuresOfANewErrorType(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t, oplog.Service(), oplogv1.OpLogService_ServiceDesc.ServiceName)
	const errorType = "CAPTCHA_WALL_NEVER_SEEN"

	before := apptest.Scrape(t, s.MetricsAddr)
	for _, op := range operationTypes() {
		for _, outcome := range []string{"SUCCESS", "FAILED"} {
			v, found := apptest.MetricValue(before, outcomeSeries(op, outcome))
			assert.True(t, found, "%s exported before the first operation", outcomeSeries(op, outcome))
			assert.Zero(t, v, outcomeSeries(op, outcome))
		}
	}
	for _, series := range []string{
		`platforma_operation_outcomes_total{operation_type="CHECK_LOGIN",outcome="FAILED"}`,
		`platforma_operation_errors_total{error_type="AUTH_REQUIRED",operation_type="CHECK_LOGIN"}`,
		`platforma_ingest_rows_total{result="accepted"}`,
		`platforma_ingest_rows_total{result="rejected"}`,
	} {
		v, found := apptest.MetricValue(before, series)
		assert.True(t, found, "%s exported before the first row", series)
		assert.Zero(t, v, series)
	}
	assert.NotContains(t, before, errorType)

	user, now := uuid.NewString(), timestamppb.Now()
	var logs []*oplogv1.OperationLog
	for i := range 40 {
		l := &oplogv1.OperationLog{
			Id: uuid.NewString(), UserId: user, PlatformAccountId: "acct-1",
			OperationType: oplogv1.OperationType_OPERATION_TYPE_CHECK_LOGIN,
			Outcome:       commonv1.Outcome_OUTCOME_SUCCESS, CreateTime: now,
		}
		if i%4 == 3 {
			l.Outcome, l.ErrorType = commonv1.Outcome_OUTCOME_FAILED, errorType
		}
		logs = append(logs, l)
	}
	stream, err := oplogv1.NewOpLogServiceClient(s.Conn).Ingest(context.Background())
	require.NoError(t, err)
	require.NoError(t, stream.Send(&oplogv1.IngestRequest{Logs: logs}))
	resp, err := stream.CloseAndRecv()
	require.NoError(t, err)
	require.Equal(t, int64(40), resp.GetAccepted(), "acknowledged means committed, and counted")

	after := apptest.Scrape(t, s.MetricsAddr)
	for series, want := range map[string]float64{
		`platforma_operation_outcomes_total{operation_type="CHECK_LOGIN",outcome="SUCCESS"}`:        30,
		`platforma_operation_outcomes_total{operation_type="CHECK_LOGIN",outcome="FAILED"}`:         10,
		`platforma_operation_outcomes_total{operation_type="GET_REVIEWS",outcome="FAILED"}`:         0,
		errorSeries("CHECK_LOGIN", errorType):                                                       10,
		errorSeries("GET_REVIEWS", errorType):                                                       0,
		`platforma_ingest_rows_total{result="accepted"}`:                                            40,
		`platforma_ingest_rows_total{result="rejected"}`:                                            0,
		`platforma_operation_errors_total{error_type="AUTH_REQUIRED",operation_type="CHECK_LOGIN"}`: 0,
	} {
		got, found := apptest.MetricValue(after, series)
		assert.True(t, found, "%s exported", series)
		assert.Equal(t, want, got, series)
	}
}
