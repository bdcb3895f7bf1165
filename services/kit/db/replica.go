package db

import (
	"context"
	"log/slog"
	"math"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/platforma/platforma/services/kit/pgerr"
)

// Querier is what a read needs of a database; *pgxpool.Pool has it.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Pools are the databases a service's Register gets: Primary for the
// writes and for the reads that must see them (read-after-write), Reads
// for the query RPCs, which may be served by a read replica.
type Pools struct {
	Primary *pgxpool.Pool
	// Reads is nil without a read replica: every read uses Primary.
	Reads *Reads
}

// ReadsConfig configures Reads.
type ReadsConfig struct {
	// MaxLag is the staleness bound: the replica serves reads only while
	// its last check found it at most this far behind the primary.
	MaxLag time.Duration
	// Interval is how often the replica's lag is checked; 0: every second.
	Interval time.Duration
	// Logger receives the replica's changes of state; nil: slog.Default.
	Logger *slog.Logger
}

// Target label values of platforma_db_reads_total.
const (
	TargetReplica = "replica"
	TargetPrimary = "primary"
)

// Reads sends the query RPCs' reads to a streaming replica while it is
// fresh enough, so that operators' queries do not compete with ingest on
// the primary, and to the primary otherwise. Run keeps its view of the
// replica's lag current.
type Reads struct {
	primary, replica *pgxpool.Pool
	maxLag, interval time.Duration
	log              *slog.Logger

	// fresh: the last check succeeded and found the lag within maxLag,
	// and no read failed on the replica since. Before the first check
	// reads go to the primary: nothing is known of the replica yet.
	fresh atomic.Bool

	lag    prometheus.Gauge
	up     prometheus.Gauge
	served *prometheus.CounterVec
}

// NewReads routes reads between primary and replica. It does not check
// the replica: Run does.
func NewReads(primary, replica *pgxpool.Pool, cfg ReadsConfig) *Reads {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	r := &Reads{
		primary: primary, replica: replica, maxLag: cfg.MaxLag, interval: cfg.Interval, log: cfg.Logger,
		lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "platforma_db_replica_lag_seconds",
			Help: "How far the read replica was behind the primary at its last successful check (0 when it had nothing left to replay).",
		}),
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "platforma_db_replica_up",
			Help: "1 when the last check of the read replica's lag succeeded, else 0.",
		}),
		served: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "platforma_db_reads_total",
			Help: "Reads of the query RPCs by the database that served them: replica, or primary when the replica was too far behind, down, or failed the read.",
		}, []string{"target"}),
	}
	// Both series from the start: a rate over a series that appears
	// with its first read misses that read.
	r.served.WithLabelValues(TargetReplica)
	r.served.WithLabelValues(TargetPrimary)
	return r
}

// Collectors are Reads' metrics, for the server's registry.
func (r *Reads) Collectors() []prometheus.Collector {
	return []prometheus.Collector{r.lag, r.up, r.served}
}

// Fresh reports whether the replica serves reads now.
func (r *Reads) Fresh() bool { return r.fresh.Load() }

// Read runs read on the replica while it is fresh, else on the primary.
// When the replica fails read for a reason of its own (down, restarting,
// missing the database, a conflict with recovery), read runs again on
// the primary: a replica never fails a read the primary would answer. So
// read may run twice, and must only read.
func (r *Reads) Read(ctx context.Context, read func(Querier) error) error {
	if r.fresh.Load() {
		err := read(r.replica)
		if err == nil || !replicaFault(ctx, err) {
			r.served.WithLabelValues(TargetReplica).Inc()
			return err
		}
		// Until the next check finds it fresh again: while it is down,
		// one read per check pays for the attempt, not every read.
		if r.fresh.CompareAndSwap(true, false) {
			r.log.Warn("read replica failed a read: reading from the primary", "error", err)
		}
	}
	r.served.WithLabelValues(TargetPrimary).Inc()
	return read(r.primary)
}

// replicaFault reports whether err, from a read on the replica, is the
// replica's: the primary may answer. Not when the caller gave up, nor
// for errors of the statement itself (bad data, bad SQL, missing
// privilege, a statement timeout), which the primary would repeat.
func replicaFault(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	code := pgerr.Code(err)
	if code == pgerr.QueryCanceled {
		return false
	}
	switch pgerr.Class(code) {
	case pgerr.ClassDataException, pgerr.ClassSyntaxErrorOrAccessRule:
		return false
	}
	return true
}

// lagQuery is how far the server is behind its primary, in seconds: 0
// when it is no standby (pointed at a primary, or promoted), and 0 when
// it streams and has replayed all it received. The replay timestamp
// alone would not do: it is the commit time of the last transaction
// replayed, which ages while the primary is idle though nothing is
// missing. Without a WAL receiver (the primary unreachable) nobody knows
// what is missing, so the age of the last replayed transaction counts;
// nothing replayed since start-up counts as infinitely behind.
const lagQuery = `
SELECT CASE
	WHEN NOT pg_is_in_recovery() THEN 0
	WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() AND EXISTS (SELECT FROM pg_stat_wal_receiver) THEN 0
	ELSE greatest(0, coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8, 'Infinity'))
END`

// Run checks the replica's lag at once and then every interval until
// ctx ends.
func (r *Reads) Run(ctx context.Context) {
	ticker := time.NewTicker(r.interval)
	defer ticker.Stop()
	for {
		r.check(ctx)
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// check asks the replica for its lag and decides whether it serves the
// next reads.
func (r *Reads) check(ctx context.Context) {
	// A replica that cannot answer this within the interval is too slow
	// to serve reads anyway.
	cctx, cancel := context.WithTimeout(ctx, r.interval)
	defer cancel()
	var lag float64
	err := r.replica.QueryRow(cctx, lagQuery).Scan(&lag)
	if ctx.Err() != nil {
		return // shutting down
	}
	fresh := err == nil && lag <= r.maxLag.Seconds()
	if err != nil {
		r.up.Set(0)
	} else {
		r.up.Set(1)
		r.lag.Set(lag)
	}
	if was := r.fresh.Swap(fresh); was != fresh {
		switch {
		case fresh:
			r.log.Info("read replica fresh: query RPCs read from it", "lag_seconds", lag)
		case err != nil:
			r.log.Warn("read replica unreachable: query RPCs read from the primary", "error", err)
		default:
			r.log.Warn("read replica behind the bound: query RPCs read from the primary",
				"lag_seconds", lagString(lag), "max_lag", r.maxLag.String())
		}
	}
}

func lagString(lag float64) any {
	if math.IsInf(lag, 1) {
		return "unknown (nothing replayed since start-up)"
	}
	return lag
}
