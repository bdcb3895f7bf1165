// Package oplogsvc implements platforma.oplog.v1.OpLogService: Ingest
// (ingest.go) with its group-commit writer and partition maintenance
// (partitions.go), the operators' queries (query.go) and dead letters
// (deadletters.go), and the login relay to ProfileService (relay.go,
// profiletls.go). Its configuration is config.go.
package oplogsvc

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/platforma/platforma/services/oplog/internal/lifecycle"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/semaphore"

	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	"github.com/platforma/platforma/services/kit/db"
	"github.com/platforma/platforma/services/kit/pagetoken"
	"github.com/platforma/platforma/services/kit/server"
	"github.com/platforma/platforma/services/oplog/internal/ingest"
	"github.com/platforma/platforma/services/oplog/internal/store"
	"github.com/platforma/platforma/services/oplog/redact"
)

// Server implements OpLogService.
type Server struct {
	oplogv1.UnimplementedOpLogServiceServer
	convert  ingest.Converter
	store    *store.Store
	parts    *store.Partitions
	writer   *ingest.Writer
	metrics  *ingest.Metrics
	receive  *semaphore.Weighted
	slotWait time.Duration
	now      func() time.Time
	log      *slog.Logger
	tokens   *pagetoken.Keyring
}

// New returns a Server on st. Ingest needs its group-commit writer
// running, which only Register starts: serve a Server through Register.
func New(st *store.Store, cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.PageTokens == nil {
		cfg.PageTokens = pagetoken.NewRandomKeyring()
	}
	wait := cfg.BufferWait
	if wait <= 0 {
		wait = 5 * time.Second
	}
	m := ingest.NewMetrics(cfg.MetricsMaxErrorTypes, cfg.MetricsMaxProxies)
	return &Server{
		store: st,
		parts: st.Partitions(),
		convert: ingest.Converter{
			Window: ingest.Window{Backfill: cfg.Backfill, FutureSkew: futureSkew},
			Keys:   redact.New(strings.Split(cfg.RedactKeys, ",")),
		},
		writer: ingest.NewWriter(st, st.Partitions(), ingest.WriterConfig{
			BatchRows:   cfg.BatchRows,
			BatchDelay:  cfg.BatchDelay,
			Writers:     cfg.Writers,
			BufferBytes: int64(cfg.BufferMiB) << 20,
			BufferWait:  wait,
		}, m, cfg.Logger),
		metrics:  m,
		receive:  semaphore.NewWeighted(int64(cfg.ReceiveSlots)),
		slotWait: wait,
		now:      cfg.Now,
		log:      cfg.Logger,
		tokens:   cfg.PageTokens,
	}
}

// Register plugs the service, its group-commit writer, its partition
// maintenance, its metrics and, with a ProfileAddr, the login relay into
// a platforma server. The query RPCs read through pools.Reads (a read
// replica, while fresh); ingest, the dead letters and the life cycle use
// pools.Primary. A nil cfg.Logger is the server's.
func Register(r server.Registrar, pools db.Pools, cfg Config) error {
	if cfg.Logger == nil {
		cfg.Logger = r.Logger
	}
	// The outbox is filled only where a relay empties it.
	st := store.New(pools.Primary, store.Options{LoginOutbox: cfg.ProfileAddr != "", Reads: pools.Reads})
	s := New(st, cfg)
	oplogv1.RegisterOpLogServiceServer(r.GRPC, s)
	r.Background("ingest writer", s.writer.Run)
	r.Background("partition maintenance", func(ctx context.Context) {
		maintainPartitions(ctx, s.parts, s.convert.Window.Backfill, time.Hour, s.now, s.log)
	})
	if err := registerAll(r.Metrics, s.metrics.Collectors()); err != nil {
		return err
	}
	if cfg.Lifecycle.DatabaseURL == "" {
		s.log.Info("LIFECYCLE_DATABASE_URL not set: this replica runs no life cycle (no archive, export or retention)")
	} else {
		lm := lifecycle.NewMetrics(store.NewLifecycle(pools.Primary), cfg.Lifecycle, s.now)
		if err := registerAll(r.Metrics, lm.Collectors()); err != nil {
			return err
		}
		r.Background("lifecycle", func(ctx context.Context) { lifecycle.Loop(ctx, cfg.Lifecycle, lm, s.now, s.log) })
	}
	if cfg.ProfileAddr == "" {
		s.log.Info("PROFILE_ADDR not set: login outcomes are not forwarded to ProfileService")
		return nil
	}
	return s.registerRelay(r, cfg)
}

func registerAll(reg prometheus.Registerer, cs []prometheus.Collector) error {
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register metrics: %w", err)
		}
	}
	return nil
}
