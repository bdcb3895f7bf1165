package db

import (
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
)

// poolCollector reads pgxpool's statistics at scrape time, so the values
// are never stale and nothing polls between scrapes.
type poolCollector struct {
	pool                                          *pgxpool.Pool
	conns, maxConns                               *prometheus.Desc
	acquires, emptyAcquires, waitSeconds, cancels *prometheus.Desc
	newConns                                      *prometheus.Desc
}

// NewPoolCollector exports the pool's connection counts and how often,
// and how long, callers waited for a connection: the first thing to look
// at when latency rises with load.
func NewPoolCollector(pool *pgxpool.Pool) prometheus.Collector {
	return &poolCollector{
		pool: pool,
		conns: prometheus.NewDesc("platforma_db_pool_connections",
			"Connections in the pool by state: acquired (in use), idle, constructing.", []string{"state"}, nil),
		maxConns: prometheus.NewDesc("platforma_db_pool_max_connections",
			"The pool's connection limit.", nil, nil),
		acquires: prometheus.NewDesc("platforma_db_pool_acquires_total",
			"Connections handed out.", nil, nil),
		emptyAcquires: prometheus.NewDesc("platforma_db_pool_empty_acquires_total",
			"Acquires that found no idle connection and had to wait for one.", nil, nil),
		waitSeconds: prometheus.NewDesc("platforma_db_pool_acquire_wait_seconds_total",
			"Time spent acquiring connections.", nil, nil),
		cancels: prometheus.NewDesc("platforma_db_pool_canceled_acquires_total",
			"Acquires given up because the caller's context ended.", nil, nil),
		newConns: prometheus.NewDesc("platforma_db_pool_new_connections_total",
			"Connections opened to the server.", nil, nil),
	}
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.conns, c.maxConns, c.acquires, c.emptyAcquires, c.waitSeconds, c.cancels, c.newConns} {
		ch <- d
	}
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.pool.Stat()
	ch <- prometheus.MustNewConstMetric(c.conns, prometheus.GaugeValue, float64(s.AcquiredConns()), "acquired")
	ch <- prometheus.MustNewConstMetric(c.conns, prometheus.GaugeValue, float64(s.IdleConns()), "idle")
	ch <- prometheus.MustNewConstMetric(c.conns, prometheus.GaugeValue, float64(s.ConstructingConns()), "constructing")
	ch <- prometheus.MustNewConstMetric(c.maxConns, prometheus.GaugeValue, float64(s.MaxConns()))
	ch <- prometheus.MustNewConstMetric(c.acquires, prometheus.CounterValue, float64(s.AcquireCount()))
	ch <- prometheus.MustNewConstMetric(c.emptyAcquires, prometheus.CounterValue, float64(s.EmptyAcquireCount()))
	ch <- prometheus.MustNewConstMetric(c.waitSeconds, prometheus.CounterValue, s.AcquireDuration().Seconds())
	ch <- prometheus.MustNewConstMetric(c.cancels, prometheus.CounterValue, float64(s.CanceledAcquireCount()))
	ch <- prometheus.MustNewConstMetric(c.newConns, prometheus.CounterValue, float64(s.NewConnsCount()))
}
