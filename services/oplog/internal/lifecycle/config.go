// Package lifecycle moves the op log through its life: a month stays hot
// (in oplog.operation_logs with every index) for the hot window; then its
// partition is detached whole and attached to oplog.operation_logs_archive;
// it is exported to cold storage (coldstore) and the export is read back
// and verified against the rows in Postgres; past the retention it is
// dropped, only when a verified export of it exists. The roll-ups have a
// retention of their own, so statistics answer for dropped months. No step
// DELETEs from the hot table.
//
// rules.go decides what a month needs (plain functions); engine.go does
// it, recording every step in oplog.lifecycle_steps and each month's state
// in oplog.lifecycle_months, so that a crash at any point is finished by
// the next run. The SQL is in ../store (lifecycle.go).
package lifecycle

import (
	"errors"
	"flag"
	"fmt"
	"time"
)

// Config is the life cycle's policy and where its exports go.
type Config struct {
	// DatabaseURL is the schema owner's DSN (the role `oplog migrate`
	// uses): the lifecycle detaches, attaches and drops partitions, which
	// the runtime role may not.
	DatabaseURL string
	// Store is the cold storage: a local directory (a path or file:///dir)
	// or an S3-compatible bucket (s3://bucket?endpoint=...).
	Store string
	// HotWindow: a month is archived once it ended this long ago.
	HotWindow time.Duration
	// Retention: an archived month is dropped once its newest row is this
	// old, and only with a verified export.
	Retention time.Duration
	// RollupRetention: roll-up buckets older than this are deleted; 0
	// keeps them forever.
	RollupRetention time.Duration
	// ArchiveTablespace, if set, is where archived partitions are moved.
	ArchiveTablespace string
	// DropWithoutExport allows dropping a month past the retention that
	// has no verified export (logged as a warning for each month).
	DropWithoutExport bool
	// RunAt is the time of day (UTC, "15:04") of the daily run of `serve`.
	RunAt string
	// ExportRate caps the rows per second an export reads, so that it
	// leaves CPU to ingest on a shared host; 0: no cap.
	ExportRate int
	// ReadDatabaseURL, if set, is a streaming replica (as the schema's
	// owner) that exports and digests read a month's rows from, once it
	// has replayed everything the primary had written when the read
	// starts: reading a month passes every page of it through the
	// buffer cache, which on the primary evicts what ingest is writing.
	ReadDatabaseURL string
	// ReplicaWait bounds how long a read waits for the replica to catch
	// up before it reads from the primary instead; 0: a minute.
	ReplicaWait time.Duration
}

// Defaults: 90 days hot, two years kept, five years of statistics.
const (
	DefaultHotWindow       = 90 * 24 * time.Hour
	DefaultRetention       = 730 * 24 * time.Hour
	DefaultRollupRetention = 1826 * 24 * time.Hour
)

// RegisterFlags adds the life cycle's flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.DatabaseURL, "lifecycle-database-url", "", "DSN of the oplog schema's owner for the life cycle (archive, export, drop); empty: `serve` runs no life cycle")
	fs.StringVar(&c.Store, "lifecycle-store", "", "cold storage of exports: a directory, file:///dir or s3://bucket?endpoint=...&region=...")
	fs.DurationVar(&c.HotWindow, "lifecycle-hot-window", DefaultHotWindow, "months that ended longer ago are archived")
	fs.DurationVar(&c.Retention, "lifecycle-retention", DefaultRetention, "archived months whose newest row is older are dropped (with a verified export)")
	fs.DurationVar(&c.RollupRetention, "lifecycle-rollup-retention", DefaultRollupRetention, "roll-up buckets older than this are deleted (0: kept forever)")
	fs.StringVar(&c.ArchiveTablespace, "lifecycle-archive-tablespace", "", "tablespace archived partitions move to (empty: stay where they are)")
	fs.BoolVar(&c.DropWithoutExport, "lifecycle-drop-without-export", false, "drop months past the retention even without a verified export (each is logged as a warning)")
	fs.StringVar(&c.RunAt, "lifecycle-run-at", "03:30", "time of day (UTC, HH:MM) of `serve`'s daily run")
	fs.IntVar(&c.ExportRate, "lifecycle-export-rate", 0, "rows per second an export reads at most, to leave CPU to ingest (0: no cap)")
	fs.StringVar(&c.ReadDatabaseURL, "lifecycle-read-database-url", "", "DSN of a streaming replica, as the schema's owner, that exports and digests read months from, so that their reads take no I/O or CPU from the primary (empty: the primary)")
}

// Validate checks the policy against backfill, the oldest create_time
// Ingest accepts: a month must stop receiving rows before it is archived.
func (c Config) Validate(backfill time.Duration) error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(c.HotWindow > backfill, "LIFECYCLE_HOT_WINDOW (-lifecycle-hot-window, %s) must be longer than BACKFILL_WINDOW (-backfill-window, %s): "+
		"a month still accepting backfilled rows cannot be archived", c.HotWindow, backfill)
	check(c.Retention > c.HotWindow, "LIFECYCLE_RETENTION (-lifecycle-retention, %s) must be longer than LIFECYCLE_HOT_WINDOW (%s)", c.Retention, c.HotWindow)
	check(c.RollupRetention == 0 || c.RollupRetention >= c.Retention,
		"LIFECYCLE_ROLLUP_RETENTION (-lifecycle-rollup-retention, %s) must be 0 (forever) or at least LIFECYCLE_RETENTION (%s): statistics outlive the rows", c.RollupRetention, c.Retention)
	_, err := c.runAt()
	check(err == nil, "LIFECYCLE_RUN_AT (-lifecycle-run-at) must be HH:MM, got %q", c.RunAt)
	check(c.ExportRate >= 0, "LIFECYCLE_EXPORT_RATE (-lifecycle-export-rate) must not be negative")
	check(c.DatabaseURL == "" || c.Store != "", "LIFECYCLE_STORE (-lifecycle-store) is required with LIFECYCLE_DATABASE_URL")
	check(c.ReadDatabaseURL == "" || c.DatabaseURL != "", "LIFECYCLE_READ_DATABASE_URL (-lifecycle-read-database-url) needs LIFECYCLE_DATABASE_URL")
	return errors.Join(errs...)
}

// runAt is RunAt as an offset into the UTC day.
func (c Config) runAt() (time.Duration, error) {
	t, err := time.Parse("15:04", c.RunAt)
	if err != nil {
		return 0, err
	}
	return time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute, nil
}

// NextRun is the first daily run time after now.
func (c Config) NextRun(now time.Time) time.Time {
	at, _ := c.runAt()
	day := now.UTC().Truncate(24 * time.Hour)
	next := day.Add(at)
	if !next.After(now) {
		next = next.Add(24 * time.Hour)
	}
	return next
}
