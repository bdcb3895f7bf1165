package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/platforma/platforma/services/oplog/internal/coldstore"
	"github.com/platforma/platforma/services/oplog/internal/store"
)

// ApplicationName is the life cycle's application_name in Postgres.
const ApplicationName = "oplog lifecycle"

// Open connects to the schema owner's database and opens the cold
// storage; close releases both.
func Open(ctx context.Context, cfg Config, now func() time.Time, log *slog.Logger) (e *Engine, close func(), err error) {
	conn, err := connect(ctx, cfg.DatabaseURL)
	if err != nil {
		return nil, nil, fmt.Errorf("LIFECYCLE_DATABASE_URL: %w", err)
	}
	var replica *pgx.Conn
	if cfg.ReadDatabaseURL != "" {
		if replica, err = connect(ctx, cfg.ReadDatabaseURL); err != nil {
			// The primary can do the reads: a replica that is down
			// slows ingest during exports, it stops nothing.
			log.WarnContext(ctx, "lifecycle: read replica unreachable; reading months from the primary", "error", err)
			replica = nil
		}
	}
	bucket, err := coldstore.OpenBucket(ctx, cfg.Store)
	if err != nil {
		_ = conn.Close(ctx)
		if replica != nil {
			_ = replica.Close(ctx)
		}
		return nil, nil, fmt.Errorf("LIFECYCLE_STORE: %w", err)
	}
	e = NewEngine(conn, bucket, cfg, now, log)
	if replica != nil {
		e.ReadFrom(replica)
	}
	return e, func() {
		_ = bucket.Close()
		_ = conn.Close(context.Background())
		if replica != nil {
			_ = replica.Close(context.Background())
		}
	}, nil
}

// connect opens one connection of the life cycle.
func connect(ctx context.Context, dsn string) (*pgx.Conn, error) {
	pcfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	// Operators (and pg_stat_activity) see which session is the life
	// cycle, unless the DSN names it itself (say, after its replica).
	if _, set := pcfg.RuntimeParams["application_name"]; !set {
		pcfg.RuntimeParams["application_name"] = ApplicationName
	}
	// Exports sort a day of rows at a time: in memory, rather than in
	// temporary files written next to ingest.
	if _, set := pcfg.RuntimeParams["work_mem"]; !set {
		pcfg.RuntimeParams["work_mem"] = "256MB"
	}
	return pgx.ConnectConfig(ctx, pcfg)
}

// Loop runs the life cycle every day at cfg.RunAt until ctx ends, as one
// of `serve`'s background tasks. Replicas all run it; the advisory lock
// lets one of them work and the others find it held.
func Loop(ctx context.Context, cfg Config, m *Metrics, now func() time.Time, log *slog.Logger) {
	for {
		next := cfg.NextRun(now())
		log.InfoContext(ctx, "lifecycle: next run", "at", next)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(next)):
		}
		RunOnce(ctx, cfg, m, now, log)
	}
}

// RunOnce is one run of the loop, logged.
func RunOnce(ctx context.Context, cfg Config, m *Metrics, now func() time.Time, log *slog.Logger) {
	e, closeEngine, err := Open(ctx, cfg, now, log)
	if err != nil {
		log.ErrorContext(ctx, "lifecycle: run failed", "error", err)
		return
	}
	defer closeEngine()
	e.Metrics = m
	start := time.Now()
	steps, err := e.Run(ctx, false)
	for _, s := range steps {
		log.InfoContext(ctx, "lifecycle step", "month", monthLabel(s.Month), "step", s.Action, "reason", s.Reason, "result", s.Result)
	}
	switch {
	case errors.Is(err, store.ErrLocked):
		log.InfoContext(ctx, "lifecycle: another replica is running it")
	case err != nil:
		log.ErrorContext(ctx, "lifecycle: run failed", "error", err, "steps", len(steps), "duration", time.Since(start))
	default:
		log.InfoContext(ctx, "lifecycle: run done", "steps", len(steps), "duration", time.Since(start))
	}
}

func monthLabel(m time.Time) string {
	if m.IsZero() {
		return ""
	}
	return m.Format("2006-01")
}
