package ingest

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	"github.com/platforma/platforma/services/kit/metrics"
	"github.com/platforma/platforma/services/oplog/internal/store"
)

// Metrics are the series the seed's dashboard and alerts are drawn from
// (seed §7), counted from the rows as they are committed: only new rows,
// so a client's retry never counts twice, and only once they are stored.
type Metrics struct {
	operations    *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	retries       *prometheus.CounterVec
	proxies       *prometheus.CounterVec
	rows          *prometheus.CounterVec
	batchRows     prometheus.Histogram
	commitSeconds prometheus.Histogram
	batchFailures prometheus.Counter

	errorTypeCap, proxyCap  *metrics.Cap
	opLabels, outcomeLabels []string
}

// NewMetrics builds the collectors. Error types and proxy names are the
// clients' free text: beyond maxErrorTypes and maxProxies distinct values
// they are counted as "other".
func NewMetrics(maxErrorTypes, maxProxies int) *Metrics {
	ns := metrics.Namespace
	m := &Metrics{
		operations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "operations_total",
			Help: "Operations logged by workers, by type, outcome and error type (\"other\" beyond the cap).",
		}, []string{"operation_type", "outcome", "error_type"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Name: "operation_duration_seconds",
			Help:    "Execution time the workers reported for their operations.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}, []string{"operation_type"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "operation_retries_total",
			Help: "Retries the workers reported (sum of retry_count); divided by operations_total, the average per operation.",
		}, []string{"operation_type"}),
		proxies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "proxy_operations_total",
			Help: "Operations that went through a proxy, by proxy (\"other\" beyond the cap) and outcome.",
		}, []string{"proxy", "outcome"}),
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "ingest_rows_total",
			Help: "Rows received by Ingest: accepted (newly stored), duplicate (already stored), rejected (reason: the field at fault).",
		}, []string{"result", "reason"}),
		batchRows: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Name: "ingest_batch_rows",
			Help:    "Rows per group-commit transaction.",
			Buckets: []float64{1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000},
		}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Name: "ingest_commit_seconds",
			Help:    "Time to write and commit one group-commit transaction.",
			Buckets: []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5},
		}),
		batchFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "ingest_batch_failures_total",
			Help: "Group-commit transactions that failed; their streams got an error and resend.",
		}),
		errorTypeCap: metrics.NewCap(maxErrorTypes),
		proxyCap:     metrics.NewCap(maxProxies),
	}
	for n := range oplogv1.OperationType_name {
		m.opLabels = growTo(m.opLabels, int(n))
		m.opLabels[n] = metrics.EnumLabel(oplogv1.OperationType(n))
	}
	for n := range commonv1.Outcome_name {
		m.outcomeLabels = growTo(m.outcomeLabels, int(n))
		m.outcomeLabels[n] = metrics.EnumLabel(commonv1.Outcome(n))
	}
	// Series that dashboards divide by exist from the start.
	m.rows.WithLabelValues("accepted", "")
	m.rows.WithLabelValues("duplicate", "")
	for n := range oplogv1.OperationType_name {
		if n != 0 {
			op := m.opLabels[n]
			m.operations.WithLabelValues(op, "SUCCESS", "")
			m.duration.WithLabelValues(op)
			m.retries.WithLabelValues(op)
		}
	}
	return m
}

func growTo(s []string, i int) []string {
	for len(s) <= i {
		s = append(s, "")
	}
	return s
}

// Collectors are what the server registers.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.operations, m.duration, m.retries, m.proxies, m.rows, m.batchRows, m.commitSeconds, m.batchFailures}
}

func (m *Metrics) opLabel(n int16) string {
	if n >= 0 && int(n) < len(m.opLabels) {
		return m.opLabels[n]
	}
	return metrics.EnumLabel(oplogv1.OperationType(n))
}

func (m *Metrics) outcomeLabel(n int16) string {
	if n >= 0 && int(n) < len(m.outcomeLabels) {
		return m.outcomeLabels[n]
	}
	return metrics.EnumLabel(commonv1.Outcome(n))
}

// Rejected counts one row refused for field.
func (m *Metrics) Rejected(field string) { m.rows.WithLabelValues("rejected", field).Inc() }

type opCount struct {
	op, outcome int16
	errorType   string
}

type proxyCount struct {
	proxy   string
	outcome int16
}

// Committed counts a committed transaction: its new rows, aggregated
// before they touch the collectors, and its duplicates.
func (m *Metrics) Committed(newRows []*store.Row, duplicates int, elapsed time.Duration) {
	m.batchRows.Observe(float64(len(newRows) + duplicates))
	m.commitSeconds.Observe(elapsed.Seconds())
	m.rows.WithLabelValues("accepted", "").Add(float64(len(newRows)))
	if duplicates > 0 {
		m.rows.WithLabelValues("duplicate", "").Add(float64(duplicates))
	}
	ops := map[opCount]int{}
	proxies := map[proxyCount]int{}
	retries := map[int16]int{}
	durations := map[int16]prometheus.Observer{}
	// Capped in row order: the first values seen are the ones kept.
	for _, r := range newRows {
		ops[opCount{r.OperationType, r.Outcome, m.errorTypeCap.Value(string(r.ErrorType))}]++
		if len(r.ProxyUsed) > 0 {
			proxies[proxyCount{m.proxyCap.Value(string(r.ProxyUsed)), r.Outcome}]++
		}
		if r.RetryCount > 0 {
			retries[r.OperationType] += int(r.RetryCount)
		}
		if r.ExecutionTimeMs != nil {
			o, ok := durations[r.OperationType]
			if !ok {
				o = m.duration.WithLabelValues(m.opLabel(r.OperationType))
				durations[r.OperationType] = o
			}
			o.Observe(float64(*r.ExecutionTimeMs) / 1000)
		}
	}
	for k, n := range ops {
		m.operations.WithLabelValues(m.opLabel(k.op), m.outcomeLabel(k.outcome), k.errorType).Add(float64(n))
	}
	for k, n := range proxies {
		m.proxies.WithLabelValues(k.proxy, m.outcomeLabel(k.outcome)).Add(float64(n))
	}
	for op, n := range retries {
		m.retries.WithLabelValues(m.opLabel(op)).Add(float64(n))
	}
}

// Failed counts a transaction that did not commit.
func (m *Metrics) Failed() { m.batchFailures.Inc() }
