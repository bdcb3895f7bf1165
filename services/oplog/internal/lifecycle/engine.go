package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"gocloud.dev/blob"
	"golang.org/x/time/rate"

	"github.com/platforma/platforma/services/oplog/internal/coldstore"
	"github.com/platforma/platforma/services/oplog/internal/store"
)

// Engine runs the life cycle on one connection of the schema's owner.
type Engine struct {
	st *store.Lifecycle
	// replica, if set, is a streaming replica's connection that months
	// are read from (streamRows).
	replica *store.Lifecycle
	bucket  *blob.Bucket
	cfg     Config
	now     func() time.Time
	log     *slog.Logger
	// Progress, if set, hears of long steps as they go.
	Progress func(Progress)
	// Metrics, if set, counts what the engine does.
	Metrics *Metrics
}

// Progress is the state of a long step.
type Progress struct {
	Month      time.Time
	Step       Action
	Rows, Of   int64 // Of: the rows expected, 0 when unknown
	Bytes      int64
	Elapsed    time.Duration
	Done       bool
	RowsPerSec float64
}

// ETA is the time left at the current rate, 0 when unknown.
func (p Progress) ETA() time.Duration {
	if p.Of <= p.Rows || p.RowsPerSec <= 0 {
		return 0
	}
	return time.Duration(float64(p.Of-p.Rows) / p.RowsPerSec * float64(time.Second))
}

// NewEngine returns an Engine; now is its clock.
func NewEngine(conn *pgx.Conn, bucket *blob.Bucket, cfg Config, now func() time.Time, log *slog.Logger) *Engine {
	return &Engine{st: store.NewLifecycle(conn), bucket: bucket, cfg: cfg, now: now, log: log}
}

// ReadFrom makes the engine read months (exports, digests) from replica,
// a connection to a streaming replica of the primary, whenever it has
// caught up (see Config.ReadDatabaseURL).
func (e *Engine) ReadFrom(replica *pgx.Conn) { e.replica = store.NewLifecycle(replica) }

// Step is one planned or taken step.
type Step struct {
	Month  time.Time
	Action Action
	Reason string
	// Result, after a run: "ok", "dry run" or the error.
	Result string
}

// views reads what is known of every month: partitions, records, and,
// withFacts, the data's facts where the rules need them (a full read of
// such a partition).
func (e *Engine) views(ctx context.Context, withFacts bool) ([]MonthView, error) {
	parts, err := e.st.Partitions(ctx)
	if err != nil {
		return nil, err
	}
	records, err := e.st.Months(ctx)
	if err != nil {
		return nil, err
	}
	byMonth := map[time.Time]*MonthView{}
	for i := range parts {
		p := parts[i]
		byMonth[p.Month] = &MonthView{Month: p.Month, Partition: &p}
	}
	for m, r := range records {
		r := r
		v := byMonth[m]
		if v == nil {
			v = &MonthView{Month: m}
			byMonth[m] = v
		}
		v.Record = &r
	}
	out := make([]MonthView, 0, len(byMonth))
	for _, v := range byMonth {
		if withFacts && NeedsFacts(*v, e.now(), e.cfg) {
			f, err := e.st.Facts(ctx, v.Partition.Name)
			if err != nil {
				return nil, err
			}
			v.Newest, v.HasFacts = f.Newest, true
		}
		out = append(out, *v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Month.Before(out[j].Month) })
	return out, nil
}

// Plan lists the steps a run would take now, without taking any.
func (e *Engine) Plan(ctx context.Context) ([]Step, error) {
	vs, err := e.views(ctx, true)
	if err != nil {
		return nil, err
	}
	var steps []Step
	for _, v := range vs {
		// The steps a month goes through in one run, as if each succeeded.
		for range 4 {
			a, why := Decide(v, e.now(), e.cfg)
			if a == "" {
				break
			}
			steps = append(steps, Step{Month: v.Month, Action: a, Reason: why})
			v = assumeDone(v, a)
		}
	}
	if e.cfg.RollupRetention > 0 {
		steps = append(steps, Step{Action: "purge-rollups", Reason: fmt.Sprintf("roll-up buckets before %s", e.rollupCutoff().Format(time.DateOnly))})
	}
	return steps, nil
}

// assumeDone is v after a succeeded, for planning.
func assumeDone(v MonthView, a Action) MonthView {
	switch a {
	case Archive:
		p := *v.Partition
		p.Parent, p.DetachPending = store.AttachedArchive, false
		v.Partition = &p
	case Export:
		id := "planned"
		v.Record = &store.Month{Month: v.Month, State: store.StateVerified, ExportID: &id}
	case Drop, DropUnexported, RecordDropped:
		v = dropped(v)
	}
	return v
}

func (e *Engine) rollupCutoff() time.Time { return e.now().Add(-e.cfg.RollupRetention) }

// Run takes the steps every month needs now, holding the lifecycle's
// lock, and returns them with their results. With dryRun it only plans,
// recording the plan as a dry run. A failed step stops that month, not
// the others; the error names every failure.
func (e *Engine) Run(ctx context.Context, dryRun bool) ([]Step, error) {
	ok, err := e.st.TryLock(ctx)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, store.ErrLocked
	}
	defer func() { _ = e.st.Unlock(context.WithoutCancel(ctx)) }()
	runID := uuid.Must(uuid.NewV7())
	runStep, err := e.st.StartStep(ctx, runID, time.Time{}, "run", dryRun)
	if err != nil {
		return nil, err
	}
	steps, runErr := e.run(ctx, runID, dryRun)
	detail := fmt.Sprintf("%d steps", len(steps))
	if runErr != nil {
		detail = runErr.Error()
	}
	if err := e.st.FinishStep(context.WithoutCancel(ctx), runStep, runErr == nil, detail); err != nil {
		return steps, errors.Join(runErr, err)
	}
	return steps, runErr
}

func (e *Engine) run(ctx context.Context, runID uuid.UUID, dryRun bool) ([]Step, error) {
	if dryRun {
		steps, err := e.Plan(ctx)
		for i := range steps {
			steps[i].Result = "dry run"
			id, serr := e.st.StartStep(ctx, runID, steps[i].Month, string(steps[i].Action), true)
			if serr == nil {
				serr = e.st.FinishStep(ctx, id, true, steps[i].Reason)
			}
			err = errors.Join(err, serr)
		}
		return steps, err
	}
	vs, err := e.views(ctx, true)
	if err != nil {
		return nil, err
	}
	var steps []Step
	var errs []error
	for _, v := range vs {
		for range 4 {
			a, why := Decide(v, e.now(), e.cfg)
			if a == "" {
				break
			}
			step := Step{Month: v.Month, Action: a, Reason: why}
			id, err := e.st.StartStep(ctx, runID, v.Month, string(a), false)
			if err != nil {
				return steps, err
			}
			next, detail, err := e.take(ctx, v, a)
			step.Result = "ok"
			if err != nil {
				step.Result = err.Error()
				detail = err.Error()
				errs = append(errs, fmt.Errorf("%s %s: %w", a, v.Month.Format("2006-01"), err))
			}
			if ferr := e.st.FinishStep(context.WithoutCancel(ctx), id, err == nil, detail); ferr != nil {
				errs = append(errs, ferr)
			}
			steps = append(steps, step)
			if err != nil || ctx.Err() != nil {
				break
			}
			v = next
		}
	}
	if e.cfg.RollupRetention > 0 && ctx.Err() == nil {
		id, err := e.st.StartStep(ctx, runID, time.Time{}, "purge-rollups", false)
		if err != nil {
			return steps, err
		}
		n, err := e.st.PurgeRollups(ctx, e.rollupCutoff(), false)
		step := Step{Action: "purge-rollups", Reason: fmt.Sprintf("%d roll-up rows before %s", n, e.rollupCutoff().Format(time.DateOnly)), Result: "ok"}
		if err != nil {
			step.Result = err.Error()
			errs = append(errs, fmt.Errorf("purge-rollups: %w", err))
		}
		_ = e.st.FinishStep(context.WithoutCancel(ctx), id, err == nil, step.Reason)
		steps = append(steps, step)
	}
	return steps, errors.Join(errs...)
}

// take performs one step and returns the month as it is after it.
func (e *Engine) take(ctx context.Context, v MonthView, a Action) (MonthView, string, error) {
	switch a {
	case Archive:
		p := *v.Partition
		if p.Parent == store.AttachedHot || p.DetachPending {
			if err := e.st.Detach(ctx, p); err != nil {
				return v, "", fmt.Errorf("detach: %w", err)
			}
		}
		if err := e.st.AttachArchive(ctx, p, e.cfg.ArchiveTablespace); err != nil {
			return v, "", fmt.Errorf("attach to the archive: %w", err)
		}
		if err := e.st.SetMonth(ctx, store.Month{Month: v.Month, State: store.StateArchived}); err != nil {
			return v, "", err
		}
		p.Parent, p.DetachPending = store.AttachedArchive, false
		v.Partition = &p
		return v, "detached and attached to the archive", nil
	case Export:
		m, err := e.ExportMonth(ctx, v.Month)
		if err != nil {
			return v, "", err
		}
		rec := store.Month{Month: v.Month, State: store.StateVerified, ExportID: &m.ExportID}
		v.Record = &rec
		v.Newest, v.HasFacts = m.MaxCreateTime, true
		return v, fmt.Sprintf("export %s: %d rows, %d files, verified", m.ExportID, m.Rows, len(m.Files)), nil
	case Drop:
		m, err := e.VerifyMonth(ctx, v.Month)
		if err != nil {
			return v, "", fmt.Errorf("the export did not verify, so the month is kept: %w", err)
		}
		if err := e.drop(ctx, v); err != nil {
			return v, "", err
		}
		return dropped(v), fmt.Sprintf("dropped; export %s (%d rows) verified first", m.ExportID, m.Rows), nil
	case DropUnexported:
		e.log.WarnContext(ctx, "lifecycle: dropping a month without a verified export (LIFECYCLE_DROP_WITHOUT_EXPORT)", "month", v.Month.Format("2006-01"))
		if err := e.drop(ctx, v); err != nil {
			return v, "", err
		}
		return dropped(v), "dropped WITHOUT a verified export", nil
	case RecordDropped:
		now := e.now()
		if err := e.st.SetMonth(ctx, store.Month{Month: v.Month, State: store.StateDropped, DroppedTime: &now}); err != nil {
			return v, "", err
		}
		v.Record.State = store.StateDropped
		return v, "recorded as dropped", nil
	}
	return v, "", fmt.Errorf("unknown step %q", a)
}

func (e *Engine) drop(ctx context.Context, v MonthView) error {
	if err := e.st.DropPartition(ctx, v.Partition.Name); err != nil {
		return fmt.Errorf("drop: %w", err)
	}
	now := e.now()
	return e.st.SetMonth(ctx, store.Month{Month: v.Month, State: store.StateDropped, DroppedTime: &now})
}

// dropped is v after its partition was dropped.
func dropped(v MonthView) MonthView {
	v.Partition = nil
	rec := store.Month{Month: v.Month, State: store.StateDropped}
	if v.Record != nil {
		rec = *v.Record
		rec.State = store.StateDropped
	}
	v.Record = &rec
	return v
}

// partitionOf finds a month's partition, nil when it has none.
func (e *Engine) partitionOf(ctx context.Context, month time.Time) (*store.MonthPartition, error) {
	parts, err := e.st.Partitions(ctx)
	if err != nil {
		return nil, err
	}
	for i := range parts {
		if parts[i].Month.Equal(month) {
			return &parts[i], nil
		}
	}
	return nil, nil
}

// pgDigest digests a month's rows as they are in Postgres, as exports of
// schema version digest them.
func (e *Engine) pgDigest(ctx context.Context, name string, month time.Time, version int) (*coldstore.Digest, error) {
	d, err := coldstore.NewDigest(version)
	if err != nil {
		return nil, err
	}
	err = e.streamRows(ctx, name, month, coldstore.NeedsSortedRows(version), func() func(*coldstore.Row) error {
		d.Reset() // a read started over digests from the start
		return func(r *coldstore.Row) error { d.Add(r); return nil }
	})
	return d, err
}

// streamRows streams a month's rows (store.StreamRows) into the function
// start returns: from the replica when there is one that has caught up
// with the primary, else from the primary. A read the replica fails for
// a reason of its own (a conflict with recovery cancels long queries, a
// restart) starts again, from the primary, with a fresh function.
func (e *Engine) streamRows(ctx context.Context, name string, month time.Time, sorted bool, start func() func(*coldstore.Row) error) error {
	if e.replica != nil {
		if e.replicaReady(ctx, name) {
			e.log.InfoContext(ctx, "lifecycle: reading the month from the read replica", "month", month.Format("2006-01"))
			err := e.replica.StreamRows(ctx, name, month, sorted, start())
			if err == nil || ctx.Err() != nil || errors.Is(err, errRowSink) {
				return err
			}
			e.log.WarnContext(ctx, "lifecycle: reading from the replica failed; reading from the primary", "month", month.Format("2006-01"), "error", err)
		}
	}
	return e.st.StreamRows(ctx, name, month, sorted, start())
}

// errRowSink marks errors of the function rows are streamed into (the
// exporter's), which reading from elsewhere would not cure.
var errRowSink = errors.New("lifecycle: row sink")

// replicaReady waits until the replica has replayed all the primary had
// written when it was asked (the months the life cycle reads no longer
// change, so the replica then holds exactly the primary's rows), at most
// cfg.ReplicaWait; and checks that it is a replica of this database: a
// DSN pointing elsewhere must never supply the rows an export, and so a
// drop, is verified against.
func (e *Engine) replicaReady(ctx context.Context, partition string) bool {
	lsn, err := e.st.CurrentLSN(ctx)
	if err != nil {
		e.log.WarnContext(ctx, "lifecycle: reading the primary's WAL position failed; reading from the primary", "error", err)
		return false
	}
	if !e.waitReplay(ctx, lsn) {
		return false
	}
	want, err := e.st.Identity(ctx, partition)
	if err != nil {
		e.log.WarnContext(ctx, "lifecycle: reading the partition's identity failed; reading from the primary", "error", err)
		return false
	}
	if got, err := e.replica.Identity(ctx, partition); err != nil || got != want {
		e.log.ErrorContext(ctx, "lifecycle: LIFECYCLE_READ_DATABASE_URL is not a replica of this database; reading from the primary",
			"partition", partition, "primary", want, "replica", got, "error", err)
		return false
	}
	return true
}

// waitReplay waits until the replica has replayed the WAL up to lsn, at
// most cfg.ReplicaWait.
func (e *Engine) waitReplay(ctx context.Context, lsn string) bool {
	wait := e.cfg.ReplicaWait
	if wait <= 0 {
		wait = time.Minute
	}
	deadline := time.Now().Add(wait)
	for {
		ok, err := e.replica.ReplayedPast(ctx, lsn)
		switch {
		case err != nil:
			e.log.WarnContext(ctx, "lifecycle: read replica unusable; reading from the primary", "error", err)
			return false
		case ok:
			return true
		case time.Now().After(deadline):
			e.log.WarnContext(ctx, "lifecycle: read replica still behind; reading from the primary", "waited", wait.String(), "lsn", lsn)
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ExportMonth writes a month, hot or archived, to cold storage, reads the
// export back and verifies it against the digest of the rows as they
// streamed out of Postgres, and records it as the month's verified export.
// An earlier export of the month that verifies against the same rows (one
// whose record a crash lost) is adopted instead of writing another.
func (e *Engine) ExportMonth(ctx context.Context, month time.Time) (coldstore.Manifest, error) {
	p, err := e.partitionOf(ctx, month)
	if err != nil {
		return coldstore.Manifest{}, err
	}
	if p == nil {
		return coldstore.Manifest{}, fmt.Errorf("month %s has no partition to export", month.Format("2006-01"))
	}
	existing, err := coldstore.Exports(ctx, e.bucket, month)
	if err != nil {
		return coldstore.Manifest{}, err
	}
	pgDigests := map[int]*coldstore.Digest{} // by schema version
	for _, id := range existing {
		m, err := coldstore.Verify(ctx, e.bucket, month, id)
		if err != nil {
			continue
		}
		pg, ok := pgDigests[m.SchemaVersion]
		if !ok {
			if pg, err = e.pgDigest(ctx, p.Name, month, m.SchemaVersion); err != nil {
				return coldstore.Manifest{}, err
			}
			pgDigests[m.SchemaVersion] = pg
		}
		if m.Digest == pg.Sum() && m.Rows == pg.Rows() {
			return m, e.recordVerified(ctx, month, m)
		}
	}

	start := time.Now()
	expected := e.st.EstimatedRows(ctx, p.Name) // for the time left; 0 when unknown
	// Each read of the month writes an export of its own: a read from the
	// replica that failed half-way is started over, from the primary. The
	// Exporter digests the rows it is given, as they come out of
	// Postgres: the manifest's digest is the rows' in Postgres.
	var exp *coldstore.Exporter
	var openErr error
	err = e.streamRows(ctx, p.Name, p.Month, false, func() func(*coldstore.Row) error {
		if exp != nil {
			exp.Abort()
		}
		exp, openErr = coldstore.NewExporter(ctx, e.bucket, month, uuid.Must(uuid.NewV7()).String(), coldstore.ExportOptions{
			Progress: func(rows, bytes int64) { e.report(month, Export, rows, expected, bytes, start, false) },
		})
		if openErr != nil {
			exp = nil
			return func(*coldstore.Row) error { return fmt.Errorf("%w: %w", errRowSink, openErr) }
		}
		write := exp.Write
		if e.cfg.ExportRate > 0 {
			write = throttled(ctx, e.cfg.ExportRate, exp.Write)
		}
		return func(r *coldstore.Row) error {
			if err := write(r); err != nil {
				return fmt.Errorf("%w: %w", errRowSink, err)
			}
			return nil
		}
	})
	if err == nil {
		err = openErr // a month without rows never called the sink
	}
	if err != nil {
		if exp != nil {
			exp.Abort()
		}
		return coldstore.Manifest{}, fmt.Errorf("export: %w", err)
	}
	m, err := exp.Close()
	if err != nil {
		exp.Abort()
		return coldstore.Manifest{}, fmt.Errorf("export: %w", err)
	}
	size := m.Bytes()
	e.report(month, Export, m.Rows, m.Rows, size, start, true)
	if e.Metrics != nil {
		e.Metrics.exportRows.Add(float64(m.Rows))
		e.Metrics.exportBytes.Add(float64(size))
		e.Metrics.exportSeconds.Observe(time.Since(start).Seconds())
	}
	exportRows, digest := m.Rows, m.Digest
	if err := e.st.SetMonth(ctx, store.Month{Month: month, State: store.StateExported, ExportID: &m.ExportID,
		ExportRows: &exportRows, ExportBytes: &size, ExportDigest: &digest}); err != nil {
		return m, err
	}
	// Only what was read back counts.
	back, err := coldstore.Verify(ctx, e.bucket, month, m.ExportID)
	if err == nil && (back.Digest != digest || back.Rows != exportRows) {
		err = fmt.Errorf("%w: read back %d rows with digest %s, Postgres gave %d rows with digest %s",
			coldstore.ErrCorrupt, back.Rows, back.Digest, exportRows, digest)
	}
	if err != nil {
		if e.Metrics != nil {
			e.Metrics.verifyFailures.Inc()
		}
		return m, fmt.Errorf("verify: %w", err)
	}
	return back, e.recordVerified(ctx, month, back)
}

// recordVerified records m as the month's verified export; the month's
// row count and newest row are the export's.
func (e *Engine) recordVerified(ctx context.Context, month time.Time, m coldstore.Manifest) error {
	size := m.Bytes()
	now := e.now()
	rows, digest := m.Rows, m.Digest
	newest := m.MaxCreateTime
	return e.st.SetMonth(ctx, store.Month{Month: month, State: store.StateVerified, RowCount: &rows, NewestCreateTime: &newest,
		ExportID: &m.ExportID, ExportRows: &rows, ExportBytes: &size, ExportDigest: &digest, VerifiedTime: &now})
}

// VerifyMonth verifies a month's recorded export: every file's checksum
// and row count, the digest of its rows, and, while the month's
// partition exists, that the digest equals the rows' in Postgres.
func (e *Engine) VerifyMonth(ctx context.Context, month time.Time) (coldstore.Manifest, error) {
	recs, err := e.st.Months(ctx)
	if err != nil {
		return coldstore.Manifest{}, err
	}
	rec, ok := recs[month]
	if !ok || rec.ExportID == nil {
		return coldstore.Manifest{}, fmt.Errorf("month %s has no recorded export", month.Format("2006-01"))
	}
	m, err := coldstore.Verify(ctx, e.bucket, month, *rec.ExportID)
	if err == nil && rec.ExportDigest != nil && m.Digest != *rec.ExportDigest {
		err = fmt.Errorf("%w: digest %s, recorded at export %s", coldstore.ErrCorrupt, m.Digest, *rec.ExportDigest)
	}
	if err == nil {
		var p *store.MonthPartition
		if p, err = e.partitionOf(ctx, month); err == nil && p != nil {
			var pg *coldstore.Digest
			if pg, err = e.pgDigest(ctx, p.Name, month, m.SchemaVersion); err == nil && (pg.Sum() != m.Digest || pg.Rows() != m.Rows) {
				err = fmt.Errorf("%w: Postgres has %d rows with digest %s, the export %d with %s",
					coldstore.ErrCorrupt, pg.Rows(), pg.Sum(), m.Rows, m.Digest)
			}
		}
	}
	if err != nil && e.Metrics != nil {
		e.Metrics.verifyFailures.Inc()
	}
	return m, err
}

// RestoreMonth brings a month back from its recorded export (or exportID)
// into the archive, and verifies the partition's rows against the
// manifest's digest. Rows already there are kept, so it may be repeated.
// A restored month past the retention is dropped again by the next run
// unless the retention is raised first.
func (e *Engine) RestoreMonth(ctx context.Context, month time.Time, exportID string) (coldstore.Manifest, int64, error) {
	if exportID == "" {
		recs, err := e.st.Months(ctx)
		if err != nil {
			return coldstore.Manifest{}, 0, err
		}
		if rec, ok := recs[month]; ok && rec.ExportID != nil {
			exportID = *rec.ExportID
		} else {
			return coldstore.Manifest{}, 0, fmt.Errorf("month %s has no recorded export; name one", month.Format("2006-01"))
		}
	}
	p, err := e.partitionOf(ctx, month)
	if err != nil {
		return coldstore.Manifest{}, 0, err
	}
	if p != nil && p.Parent != store.AttachedArchive {
		return coldstore.Manifest{}, 0, fmt.Errorf("month %s is %s, not archived: restore only fills the archive", month.Format("2006-01"), p.Parent)
	}
	rest, err := e.st.NewRestorer(ctx, month)
	if err != nil {
		return coldstore.Manifest{}, 0, err
	}
	start := time.Now()
	var n int64
	m, err := coldstore.Read(ctx, e.bucket, month, exportID, func(r *coldstore.Row) error {
		n++
		if n%100_000 == 0 {
			e.report(month, "restore", n, 0, 0, start, false)
		}
		return rest.Add(ctx, r)
	})
	if err == nil {
		err = rest.Flush(ctx)
	}
	if err != nil {
		return m, rest.Added(), fmt.Errorf("restore: %w", err)
	}
	e.report(month, "restore", n, m.Rows, 0, start, true)
	pg, err := e.pgDigest(ctx, store.PartitionName(month), month, m.SchemaVersion)
	if err != nil {
		return m, rest.Added(), err
	}
	if pg.Sum() != m.Digest || pg.Rows() != m.Rows {
		return m, rest.Added(), fmt.Errorf("restored partition has %d rows with digest %s, the export %d with %s",
			pg.Rows(), pg.Sum(), m.Rows, m.Digest)
	}
	return m, rest.Added(), e.recordVerified(ctx, month, m)
}

func (e *Engine) report(month time.Time, step Action, rows, of, bytes int64, start time.Time, done bool) {
	if e.Progress == nil {
		return
	}
	el := time.Since(start)
	p := Progress{Month: month, Step: step, Rows: rows, Of: of, Bytes: bytes, Elapsed: el, Done: done}
	if el > 0 {
		p.RowsPerSec = float64(rows) / el.Seconds()
	}
	e.Progress(p)
}

// throttled is write at most perSecond rows a second, waiting in steps
// of a tenth of that.
func throttled(ctx context.Context, perSecond int, write func(*coldstore.Row) error) func(*coldstore.Row) error {
	step := max(perSecond/10, 1)
	lim := rate.NewLimiter(rate.Limit(perSecond), step)
	n := 0
	return func(r *coldstore.Row) error {
		if n++; n == step {
			n = 0
			if err := lim.WaitN(ctx, step); err != nil {
				return err
			}
		}
		return write(r)
	}
}
