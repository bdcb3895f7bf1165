package ingest

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	"github.com/platforma/platforma/services/kit/metrics"
	"github.com/platforma/platforma/services/oplog/internal/store"
)

// AuthRequired is the error type the PlatformaAuthErrorSpike alert reads:
// its series exist from the start and it is never folded into "other".
const AuthRequired = "AUTH_REQUIRED"

// Metrics are the series the operators' dashboard and alerts are drawn from,
// counted from the rows as they are committed: only new rows,
// so a client's retry never counts twice, and only once they are stored.
//
// Every series a rate, a ratio or an alert reads exists, at 0, before the
// first row it counts: Prometheus' rate() and increase() only see what a
// series gained after its first scrape, so a series born with its first
// count hides that count (the first failures of a new error type read as
// 100% success). Hence outcomes are counted apart from error types: the
// operation type × outcome combinations are all known at start, error
// types and proxies are not.
type Metrics struct {
	outcomes      *prometheus.CounterVec
	errors        *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	retries       *prometheus.CounterVec
	proxies       *prometheus.CounterVec
	rows          *prometheus.CounterVec
	rejections    *prometheus.CounterVec
	rejectedRows  prometheus.Counter
	batchRows     prometheus.Histogram
	commitSeconds prometheus.Histogram
	batchFailures prometheus.Counter

	errorTypeCap, proxyCap  *metrics.Cap
	opLabels, outcomeLabels []string
	// ops are the operation types' labels, UNSPECIFIED left out.
	ops []string
	// errorTypesSeen and proxiesSeen hold the label values whose series
	// exist for every operation type, or both outcomes.
	errorTypesSeen, proxiesSeen sync.Map
}

// NewMetrics builds the collectors. Error types and proxy names are the
// clients' free text: beyond maxErrorTypes and maxProxies distinct values
// they are counted as "other".
func NewMetrics(maxErrorTypes, maxProxies int) *Metrics {
	ns := metrics.Namespace
	m := &Metrics{
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "operation_outcomes_total",
			Help: "Operations logged by workers, by type and outcome; every combination exported from the start.",
		}, []string{"operation_type", "outcome"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "operation_errors_total",
			Help: "Failed operations by type and error type (\"\" when none given, \"other\" beyond the cap). An error type's series appear when it is first seen: use for distributions, operation_outcomes_total for rates.",
		}, []string{"operation_type", "error_type"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Name: "operation_duration_seconds",
			Help:    "Execution time the workers reported for their operations.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}, []string{"operation_type"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "operation_retries_total",
			Help: "Retries the workers reported (sum of retry_count); divided by operation_outcomes_total, the average per operation.",
		}, []string{"operation_type"}),
		proxies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "proxy_operations_total",
			Help: "Operations that went through a proxy, by proxy (\"other\" beyond the cap) and outcome; both outcomes exported from a proxy's first row.",
		}, []string{"proxy", "outcome"}),
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "ingest_rows_total",
			Help: "Rows received by Ingest: accepted (newly stored), duplicate (already stored), rejected (invalid, not stored); every result exported from the start.",
		}, []string{"result"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "ingest_rejected_rows_total",
			Help: "Rows rejected by Ingest, by the field at fault (reason). A reason's series appears when it is first seen: use for distributions, ingest_rows_total for rates.",
		}, []string{"reason"}),
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
	for n, op := range m.opLabels {
		if n != int(oplogv1.OperationType_OPERATION_TYPE_UNSPECIFIED) && op != "" {
			m.ops = append(m.ops, op)
		}
	}

	// Every series that a rate, a ratio or an alert reads exists from the
	// start, at 0.
	for _, result := range []string{"accepted", "duplicate", "rejected"} {
		m.rows.WithLabelValues(result)
	}
	m.rejectedRows = m.rows.WithLabelValues("rejected")
	for _, op := range m.ops {
		m.outcomes.WithLabelValues(op, m.outcomeLabel(int16(commonv1.Outcome_OUTCOME_SUCCESS)))
		m.outcomes.WithLabelValues(op, m.outcomeLabel(int16(commonv1.Outcome_OUTCOME_FAILED)))
		m.duration.WithLabelValues(op)
		m.retries.WithLabelValues(op)
	}
	for _, errorType := range []string{"", AuthRequired, metrics.Other} {
		m.initErrorType(errorType)
	}
	m.initProxy(metrics.Other)
	return m
}

func growTo(s []string, i int) []string {
	for len(s) <= i {
		s = append(s, "")
	}
	return s
}

// initErrorType makes errorType's series exist for every operation type,
// so once an error type has been seen, its first failure on another
// operation type is counted exactly.
func (m *Metrics) initErrorType(errorType string) {
	if _, done := m.errorTypesSeen.Load(errorType); done {
		return
	}
	for _, op := range m.ops {
		m.errors.WithLabelValues(op, errorType)
	}
	m.errorTypesSeen.Store(errorType, struct{}{})
}

// initProxy makes both outcomes of proxy exist, so its first failure
// after its first success (or the reverse) is counted exactly.
func (m *Metrics) initProxy(proxy string) {
	if _, done := m.proxiesSeen.Load(proxy); done {
		return
	}
	m.proxies.WithLabelValues(proxy, m.outcomeLabel(int16(commonv1.Outcome_OUTCOME_SUCCESS)))
	m.proxies.WithLabelValues(proxy, m.outcomeLabel(int16(commonv1.Outcome_OUTCOME_FAILED)))
	m.proxiesSeen.Store(proxy, struct{}{})
}

// Collectors are what the server registers.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.outcomes, m.errors, m.duration, m.retries, m.proxies, m.rows, m.rejections, m.batchRows, m.commitSeconds, m.batchFailures}
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

// errorTypeLabel is the label value of errorType: itself, or "other"
// beyond the cap. The alerted error type is always itself.
func (m *Metrics) errorTypeLabel(errorType []byte) string {
	if string(errorType) == AuthRequired {
		return AuthRequired
	}
	return m.errorTypeCap.Value(string(errorType))
}

// Rejected counts one row refused for field.
func (m *Metrics) Rejected(field string) {
	m.rejectedRows.Inc()
	m.rejections.WithLabelValues(field).Inc()
}

type opCount struct {
	op, outcome int16
}

type errorCount struct {
	op        int16
	errorType string
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
	m.rows.WithLabelValues("accepted").Add(float64(len(newRows)))
	if duplicates > 0 {
		m.rows.WithLabelValues("duplicate").Add(float64(duplicates))
	}
	ops := map[opCount]int{}
	errs := map[errorCount]int{}
	proxies := map[proxyCount]int{}
	retries := map[int16]int{}
	durations := map[int16]prometheus.Observer{}
	// Capped in row order: the first values seen are the ones kept.
	for _, r := range newRows {
		ops[opCount{r.OperationType, r.Outcome}]++
		if r.Outcome == int16(commonv1.Outcome_OUTCOME_FAILED) {
			errs[errorCount{r.OperationType, m.errorTypeLabel(r.ErrorType)}]++
		}
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
		m.outcomes.WithLabelValues(m.opLabel(k.op), m.outcomeLabel(k.outcome)).Add(float64(n))
	}
	for k, n := range errs {
		m.initErrorType(k.errorType)
		m.errors.WithLabelValues(m.opLabel(k.op), k.errorType).Add(float64(n))
	}
	for k, n := range proxies {
		m.initProxy(k.proxy)
		m.proxies.WithLabelValues(k.proxy, m.outcomeLabel(k.outcome)).Add(float64(n))
	}
	for op, n := range retries {
		m.retries.WithLabelValues(m.opLabel(op)).Add(float64(n))
	}
}

// Failed counts a transaction that did not commit.
func (m *Metrics) Failed() { m.batchFailures.Inc() }
