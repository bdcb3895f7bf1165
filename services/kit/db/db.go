// Package db opens the Postgres connection pool every service uses.
package db

import (
	"context"
	"fmt"
	"time"

	"github.com/exaring/otelpgx"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PoolConfig are the pool limits. Explicit rather than pgx's defaults (which
// size the pool by CPU count) so a deployment knows how many connections
// each replica can open: replicas × MaxConns must stay below the server's
// max_connections.
type PoolConfig struct {
	URL             string
	ApplicationName string
	MaxConns        int32
	MinConns        int32
	ConnectTimeout  time.Duration
}

// NewPool builds a pool with the otelpgx tracer (a span per query). It does
// not connect: a service starts while the database is down and reports
// NOT_SERVING until it comes up.
func NewPool(ctx context.Context, c PoolConfig) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(c.URL)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	cfg.MaxConns = c.MaxConns
	cfg.MinConns = c.MinConns
	// Recycle connections so server-side memory and failovers are picked
	// up; jitter keeps replicas from reconnecting all at once.
	cfg.MaxConnLifetime = time.Hour
	cfg.MaxConnLifetimeJitter = 5 * time.Minute
	cfg.MaxConnIdleTime = 10 * time.Minute
	cfg.HealthCheckPeriod = 30 * time.Second
	if c.ConnectTimeout > 0 {
		cfg.ConnConfig.ConnectTimeout = c.ConnectTimeout
	}
	// The DSN's own application_name wins: replicas that set theirs
	// (application_name=oplog-2) can be told apart in pg_stat_activity.
	if _, set := cfg.ConnConfig.RuntimeParams["application_name"]; !set && c.ApplicationName != "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = c.ApplicationName
	}
	cfg.ConnConfig.Tracer = otelpgx.NewTracer(otelpgx.WithTrimSQLInSpanName())
	return pgxpool.NewWithConfig(ctx, cfg)
}

// UUIDs converts ids for use as a uuid[] parameter. google/uuid's UUID is
// a driver.Valuer that yields text, which pgx first tries, and fails, to
// send in binary for every element; plain [16]byte goes straight out.
func UUIDs(ids []uuid.UUID) [][16]byte {
	out := make([][16]byte, len(ids))
	for i, id := range ids {
		out[i] = id
	}
	return out
}
