package lifecycle

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/platforma/platforma/services/kit/metrics"
	"github.com/platforma/platforma/services/oplog/internal/store"
)

// Metrics are the life cycle's Prometheus metrics. The gauges are read
// from the catalog and the life cycle's tables at every scrape (a few
// catalog rows, no log table is read), so they are current whichever
// replica ran the life cycle, and between runs; the counters count what
// this process's runs did.
type Metrics struct {
	st  *store.Lifecycle
	cfg Config
	now func() time.Time

	months, overdueHot, lastSuccess *prometheus.Desc

	exportRows     prometheus.Counter
	exportBytes    prometheus.Counter
	exportSeconds  prometheus.Histogram
	verifyFailures prometheus.Counter
}

// States every month gauge is exported for.
var states = []string{store.StateHot, store.StateArchived, store.StateExported, store.StateVerified, store.StateDropped}

// NewMetrics makes the metrics; db is read at each scrape (the service's
// pool: the runtime role may read the catalog and oplog.lifecycle_months).
func NewMetrics(db *store.Lifecycle, cfg Config, now func() time.Time) *Metrics {
	name := func(n string) string { return prometheus.BuildFQName(metrics.Namespace, "", n) }
	return &Metrics{
		st: db, cfg: cfg, now: now,
		lastSuccess: prometheus.NewDesc(name("lifecycle_last_success_timestamp_seconds"),
			"When the last life-cycle run (not a dry run) finished without a failed step; 0 before the first.", nil, nil),
		months: prometheus.NewDesc(name("lifecycle_months"),
			"Months of the op log per life-cycle state.", []string{"state"}, nil),
		overdueHot: prometheus.NewDesc(name("lifecycle_overdue_hot_months"),
			"Hot months that ended more than the hot window ago (the life cycle should have archived them).", nil, nil),
		exportRows: prometheus.NewCounter(prometheus.CounterOpts{Namespace: metrics.Namespace, Name: "lifecycle_export_rows_total",
			Help: "Rows written to cold storage."}),
		exportBytes: prometheus.NewCounter(prometheus.CounterOpts{Namespace: metrics.Namespace, Name: "lifecycle_export_bytes_total",
			Help: "Bytes of export files written to cold storage."}),
		exportSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: metrics.Namespace, Name: "lifecycle_export_duration_seconds",
			Help: "Time to write one month's export.", Buckets: prometheus.ExponentialBuckets(1, 4, 8)}),
		verifyFailures: prometheus.NewCounter(prometheus.CounterOpts{Namespace: metrics.Namespace, Name: "lifecycle_verification_failures_total",
			Help: "Exports that failed verification (checksum, row count or digest)."}),
	}
}

// Collectors are the metrics to register.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m, m.exportRows, m.exportBytes, m.exportSeconds, m.verifyFailures}
}

// Describe implements prometheus.Collector for the gauges.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.lastSuccess
	ch <- m.months
	ch <- m.overdueHot
}

// Collect reads the gauges. When the database does not answer, they are
// left out of the scrape (absent, not a false zero).
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	counts, overdue, err := m.monthStates(ctx)
	if err != nil {
		return
	}
	for _, s := range states {
		ch <- prometheus.MustNewConstMetric(m.months, prometheus.GaugeValue, counts[s], s)
	}
	ch <- prometheus.MustNewConstMetric(m.overdueHot, prometheus.GaugeValue, overdue)
	last, err := m.st.LastSuccess(ctx)
	if err != nil {
		return
	}
	var v float64
	if !last.IsZero() {
		v = float64(last.Unix())
	}
	ch <- prometheus.MustNewConstMetric(m.lastSuccess, prometheus.GaugeValue, v)
}

// monthStates counts months per state: hot partitions as hot, others by
// their record (archived when the life cycle has none).
func (m *Metrics) monthStates(ctx context.Context) (map[string]float64, float64, error) {
	parts, err := m.st.Partitions(ctx)
	if err != nil {
		return nil, 0, err
	}
	records, err := m.st.Months(ctx)
	if err != nil {
		return nil, 0, err
	}
	counts := map[string]float64{}
	var overdue float64
	seen := map[time.Time]bool{}
	for _, p := range parts {
		seen[p.Month] = true
		switch r, ok := records[p.Month]; {
		case p.Parent == store.AttachedHot && !p.DetachPending:
			counts[store.StateHot]++
			if !monthEnd(p.Month).After(m.now().Add(-m.cfg.HotWindow)) {
				overdue++
			}
		case ok:
			counts[r.State]++
		default:
			counts[store.StateArchived]++
		}
	}
	for month, r := range records {
		if !seen[month] {
			counts[r.State]++
		}
	}
	return counts, overdue, nil
}
