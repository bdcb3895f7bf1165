// Package migrate applies a service's goose migrations to its own schema.
package migrate

import (
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/platforma/platforma/migrations"
)

// VersionTable is where goose records applied migrations, inside the
// service's own schema, so services never share a version table.
func VersionTable(schema string) string { return schema + ".goose_db_version" }

// Up applies every pending migration of set and returns the versions it
// applied. Concurrent runs (several replicas starting at once) are
// serialised by an advisory lock per schema. logger may be nil.
func Up(ctx context.Context, dsn string, set migrations.Set, logger *slog.Logger) ([]int64, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	db := stdlib.OpenDB(*cfg)
	defer db.Close()

	lockID := advisoryLockID(set.Schema)
	// goose creates its version table before running migration 0001, so the
	// schema has to exist first. Under the same lock as goose uses, so two
	// replicas do not race on CREATE SCHEMA.
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", lockID); err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{set.Schema}.Sanitize()); err != nil {
		return nil, fmt.Errorf("create schema %s: %w", set.Schema, err)
	}
	if err := tx.Commit(); err != nil {
		return nil, err
	}

	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(lockID), lock.WithLockTimeout(1, 300))
	if err != nil {
		return nil, err
	}
	provider, err := goose.NewProvider(goose.DialectPostgres, db, set.FS,
		goose.WithTableName(VersionTable(set.Schema)),
		goose.WithSessionLocker(locker),
		goose.WithDisableGlobalRegistry(true),
		goose.WithSlog(logger),
	)
	if err != nil {
		return nil, fmt.Errorf("load migrations of %s: %w", set.Schema, err)
	}
	results, err := provider.Up(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrate %s: %w", set.Schema, err)
	}
	applied := make([]int64, 0, len(results))
	for _, r := range results {
		applied = append(applied, r.Source.Version)
	}
	return applied, nil
}

// advisoryLockID derives a stable lock id per schema, so migrating
// different services at the same time does not serialise them.
func advisoryLockID(schema string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte("platforma/migrate/" + schema))
	return int64(h.Sum64() >> 1)
}
