package store

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Partitions creates the monthly partitions of oplog.operation_logs
// (UTC months) and remembers which exist. A Store has one
// (Store.Partitions).
type Partitions struct {
	pool  *pgxpool.Pool
	mu    sync.Mutex
	known map[int]bool // year*100 + month
}

// newPartitions returns a Partitions on pool that knows of none yet.
func newPartitions(pool *pgxpool.Pool) *Partitions {
	return &Partitions{pool: pool, known: map[int]bool{}}
}

func monthKey(t time.Time) int {
	t = t.UTC()
	return t.Year()*100 + int(t.Month())
}

// PartitionName is the partition holding month t.
func PartitionName(t time.Time) string {
	return fmt.Sprintf("operation_logs_p%06d", monthKey(t))
}

// EnsureRange creates the partitions of every month from from to to.
func (p *Partitions) EnsureRange(ctx context.Context, from, to time.Time) error {
	for m := monthStart(from); !m.After(to); m = m.AddDate(0, 1, 0) {
		if err := p.ensure(ctx, m); err != nil {
			return err
		}
	}
	return nil
}

// EnsureFor creates the partitions the rows need that are not known yet.
func (p *Partitions) EnsureFor(ctx context.Context, rows []*Row) error {
	var missing []time.Time
	p.mu.Lock()
	seen := map[int]bool{}
	for _, r := range rows {
		k := monthKey(r.CreateTime)
		if !p.known[k] && !seen[k] {
			seen[k] = true
			missing = append(missing, r.CreateTime)
		}
	}
	p.mu.Unlock()
	for _, t := range missing {
		if err := p.ensure(ctx, monthStart(t)); err != nil {
			return err
		}
	}
	return nil
}

func monthStart(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
}

// ensure creates the partition of the month starting at start, through
// oplog.create_operation_logs_partition (migration 0006): the runtime role
// may not create tables, the function (its owner's) creates exactly this
// partition. It serialises replicas on an advisory lock and bounds its
// wait for the parent's lock (lock_timeout), so it never queues behind
// long writes.
func (p *Partitions) ensure(ctx context.Context, start time.Time) error {
	k := monthKey(start)
	p.mu.Lock()
	done := p.known[k]
	p.mu.Unlock()
	if done {
		return nil
	}
	month := pgtype.Date{Time: time.Date(start.Year(), start.Month(), 1, 0, 0, 0, 0, time.UTC), Valid: true}
	if _, err := p.pool.Exec(ctx, `SELECT oplog.create_operation_logs_partition($1)`, month); err != nil {
		return fmt.Errorf("create partition oplog.%s: %w", PartitionName(start), err)
	}
	p.mu.Lock()
	p.known[k] = true
	p.mu.Unlock()
	return nil
}
