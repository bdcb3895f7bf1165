package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/platforma/platforma/services/kit/db"
	"github.com/platforma/platforma/services/kit/pgerr"
)

// Store is all of OpLogService's SQL.
type Store struct {
	pool  *pgxpool.Pool
	opts  Options
	parts *Partitions
}

// Options are what a Store does besides storing rows, fixed when it is
// made.
type Options struct {
	// LoginOutbox makes WriteRows put every new row the login relay
	// forwards (domain.IsRelayedLogin) into oplog.login_outbox, in the
	// rows' transaction. On when OpLogService has a ProfileAddr.
	LoginOutbox bool
	// Reads serves the query RPCs' reads (ListLogs, the statistics and
	// MissingMonths) from a read replica while it is fresh; nil: the pool
	// serves them.
	Reads *db.Reads
}

// read runs a query RPC's read through Options.Reads, or on the pool.
func (s *Store) read(ctx context.Context, read func(db.Querier) error) error {
	if s.opts.Reads == nil {
		return read(s.pool)
	}
	return s.opts.Reads.Read(ctx, read)
}

// New returns a Store on pool.
//
// The Store owns the pool's Partitions (see Partitions): which months
// have a partition is a fact about the database the Store writes to, so
// the write path and partition maintenance share one memory of it
// instead of each keeping its own.
func New(pool *pgxpool.Pool, opts Options) *Store {
	return &Store{pool: pool, opts: opts, parts: newPartitions(pool)}
}

// Partitions creates the monthly partitions of the rows this Store
// writes, and remembers which exist.
func (s *Store) Partitions() *Partitions { return s.parts }

// WriteRows stores rows and, in the same transaction, adds the rows that
// were new to the roll-ups (and their logins to the outbox, with
// Options.LoginOutbox). The fast path COPYs them into the table; when
// some were stored already (a retry) the COPY fails on the primary key, and the batch goes again
// through a staging table with INSERT ... ON CONFLICT DO NOTHING, which
// says which rows were new. It returns the rows that were new, and the
// keys inserted with their counts: nil when every row was new.
func (s *Store) WriteRows(ctx context.Context, rows []*Row) (fresh []*Row, inserted map[Key]int, err error) {
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := copyRows(ctx, tx, "oplog.operation_logs", rows); err != nil {
			return err
		}
		return s.addNew(ctx, tx, rows)
	})
	if err == nil {
		return rows, nil, nil
	}
	// Some rows are stored already (a duplicate key), or the COPY lost a
	// deadlock to a concurrent one over the same keys: the staging path
	// below tells new rows from duplicates. Anything else is a failure.
	if !pgerr.Is(err, pgerr.UniqueViolation, pgerr.DeadlockDetected) {
		return nil, nil, err
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		inserted = map[Key]int{}
		if _, err := tx.Exec(ctx, createStaging); err != nil {
			return err
		}
		if _, err := copyRows(ctx, tx, "operation_logs_staging", rows); err != nil {
			return err
		}
		res, err := tx.Query(ctx, insertFromStaging)
		if err != nil {
			return err
		}
		for res.Next() {
			var k Key
			var t time.Time
			if err := res.Scan(&k.ID, &t); err != nil {
				res.Close()
				return err
			}
			k.Time = t.UnixMicro()
			inserted[k]++
		}
		res.Close()
		if err := res.Err(); err != nil {
			return err
		}
		fresh = newRows(rows, inserted)
		return s.addNew(ctx, tx, fresh)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("idempotent insert: %w", err)
	}
	return fresh, inserted, nil
}

// addNew adds the rows just inserted to the roll-ups and the outbox.
func (s *Store) addNew(ctx context.Context, tx pgx.Tx, rows []*Row) error {
	if err := addToRollups(ctx, tx, rows); err != nil {
		return err
	}
	if s.opts.LoginOutbox {
		return enqueueLogins(ctx, tx, rows)
	}
	return nil
}

// newRows picks, for each inserted key, one row carrying it: the rows
// that were new.
func newRows(rows []*Row, inserted map[Key]int) []*Row {
	left := make(map[Key]int, len(inserted))
	for k, n := range inserted {
		left[k] = n
	}
	var out []*Row
	for _, r := range rows {
		if k := r.Key(); left[k] > 0 {
			left[k]--
			out = append(out, r)
		}
	}
	return out
}

// A session-lifetime temporary table, emptied at every commit.
const createStaging = `
CREATE TEMP TABLE IF NOT EXISTS operation_logs_staging
	(LIKE oplog.operation_logs INCLUDING DEFAULTS) ON COMMIT DELETE ROWS`

// insertFromStaging inserts in key order, so two batches holding the same
// rows wait for each other instead of deadlocking; a row repeated inside
// the batch is inserted once.
const insertFromStaging = `
INSERT INTO oplog.operation_logs SELECT * FROM operation_logs_staging ORDER BY id, create_time
ON CONFLICT (id, create_time) DO NOTHING
RETURNING id, create_time`
