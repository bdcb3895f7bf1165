// Package oplogprom exports a worker SDK client's Stats as Prometheus
// metrics. It is a package of its own so that workers that do not use
// Prometheus do not depend on it.
//
//	prometheus.MustRegister(oplogprom.NewCollector(client, prometheus.Labels{"worker": name}))
package oplogprom

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/platforma/platforma/services/oplog/oplogclient"
)

// Collector reads a client's Stats at every scrape.
type Collector struct {
	client  *oplogclient.Client
	metrics []metric
}

type metric struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	value func(oplogclient.Stats) float64
}

// NewCollector returns a Collector of client's Stats; labels are added to
// every metric (e.g. which worker process it is).
func NewCollector(client *oplogclient.Client, labels prometheus.Labels) *Collector {
	m := func(name, help string, kind prometheus.ValueType, value func(oplogclient.Stats) float64) metric {
		return metric{desc: prometheus.NewDesc("oplogclient_"+name, help, nil, labels), kind: kind, value: value}
	}
	counter, gauge := prometheus.CounterValue, prometheus.GaugeValue
	return &Collector{client: client, metrics: []metric{
		m("enqueued_total", "Entries accepted by Log.", counter, func(s oplogclient.Stats) float64 { return float64(s.Enqueued) }),
		m("acknowledged_total", "Entries the server confirmed stored (new or duplicate), spool replays included.", counter, func(s oplogclient.Stats) float64 { return float64(s.Acknowledged) }),
		m("duplicates_total", "Acknowledged entries the server already had.", counter, func(s oplogclient.Stats) float64 { return float64(s.Duplicates) }),
		m("rejected_total", "Entries the server refused as invalid.", counter, func(s oplogclient.Stats) float64 { return float64(s.Rejected) }),
		m("dropped_total", "Entries pushed out of a full memory buffer, or logged after Close.", counter, func(s oplogclient.Stats) float64 { return float64(s.Dropped) }),
		m("failed_total", "Entries given up on.", counter, func(s oplogclient.Stats) float64 { return float64(s.Failed) }),
		m("retries_total", "Resend attempts.", counter, func(s oplogclient.Stats) float64 { return float64(s.Retries) }),
		m("buffered_entries", "Entries in the memory buffer or in flight from it.", gauge, func(s oplogclient.Stats) float64 { return float64(s.InBuffer) }),
		m("spooled_total", "Entries written to the disk spool.", counter, func(s oplogclient.Stats) float64 { return float64(s.Spooled) }),
		m("spool_replayed_total", "Entries from the spool acknowledged by the server.", counter, func(s oplogclient.Stats) float64 { return float64(s.SpoolReplayed) }),
		m("spool_dropped_total", "Entries lost to a full spool (oldest first) or a failed write.", counter, func(s oplogclient.Stats) float64 { return float64(s.SpoolDropped) }),
		m("spool_corrupt_total", "Damaged spool records or segment tails skipped.", counter, func(s oplogclient.Stats) float64 { return float64(s.SpoolCorrupt) }),
		m("spool_entries", "Entries in the spool waiting for delivery.", gauge, func(s oplogclient.Stats) float64 { return float64(s.SpoolEntries) }),
		m("spool_bytes", "Size of the spool's files.", gauge, func(s oplogclient.Stats) float64 { return float64(s.SpoolBytes) }),
		m("spool_oldest_seconds", "How long the spool's oldest entry has been waiting.", gauge, func(s oplogclient.Stats) float64 { return s.SpoolOldest.Seconds() }),
	}}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range c.metrics {
		ch <- m.desc
	}
}

// Collect implements prometheus.Collector: one Stats call per scrape.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st := c.client.Stats()
	for _, m := range c.metrics {
		ch <- prometheus.MustNewConstMetric(m.desc, m.kind, m.value(st))
	}
}
