package ingest

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/semaphore"

	"github.com/platforma/platforma/services/oplog/internal/store"
)

// WriterConfig tunes the group-commit writer.
type WriterConfig struct {
	// BatchRows ends a batch at this many rows.
	BatchRows int
	// BatchDelay ends a batch this long after its first rows arrived.
	BatchDelay time.Duration
	// Writers is how many batches are written at once.
	Writers int
	// BufferBytes bounds the rows accepted from streams but not committed
	// yet. A stream that finds it full waits up to BufferWait.
	BufferBytes int64
	BufferWait  time.Duration
}

// ErrBusy means the buffer stayed full for BufferWait: the database is
// slower than the producers. Clients should back off and resend.
var ErrBusy = errors.New("ingest buffer full")

// Writer gathers the rows of many concurrent streams into large COPY
// transactions and tells each stream when its rows are committed.
type Writer struct {
	store   *store.Store
	parts   *store.Partitions
	cfg     WriterConfig
	log     *slog.Logger
	metrics *Metrics
	queue   chan *Chunk
	budget  *semaphore.Weighted
}

// NewWriter returns a writer; Run must be running for Submit to complete.
func NewWriter(st *store.Store, parts *store.Partitions, cfg WriterConfig, m *Metrics, log *slog.Logger) *Writer {
	return &Writer{
		store:   st,
		parts:   parts,
		cfg:     cfg,
		log:     log,
		metrics: m,
		queue:   make(chan *Chunk, 4096),
		budget:  semaphore.NewWeighted(cfg.BufferBytes),
	}
}

// tracer makes the commit spans. Obtained through the global provider,
// which the binary sets up before anything runs.
var tracer = otel.Tracer("github.com/platforma/platforma/services/oplog/internal/ingest")

// maxCommitLinks bounds the links of a commit span to the streams it
// wrote beyond the first (the SDK's default limit is 128).
const maxCommitLinks = 100

// Chunk is the rows one stream message contributed. Wait tells when they
// are committed and how many were new.
type Chunk struct {
	rows  []store.Row
	bytes int64
	// span is the sending stream's: the commit span continues its trace.
	span trace.SpanContext
	done chan struct{}
	// Set before done closes.
	inserted, duplicates int
	err                  error
}

// Submit queues rows for writing. It waits for buffer space up to
// BufferWait and returns ErrBusy when there is none.
func (w *Writer) Submit(ctx context.Context, rows []store.Row) (*Chunk, error) {
	c := &Chunk{rows: rows, span: trace.SpanContextFromContext(ctx), done: make(chan struct{})}
	for i := range rows {
		c.bytes += rows[i].Size()
	}
	c.bytes = min(c.bytes, w.cfg.BufferBytes)
	waitCtx, cancel := context.WithTimeout(ctx, w.cfg.BufferWait)
	defer cancel()
	if err := w.budget.Acquire(waitCtx, c.bytes); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, ErrBusy
	}
	select {
	case w.queue <- c:
		return c, nil
	case <-waitCtx.Done():
		w.budget.Release(c.bytes)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, ErrBusy
	}
}

// Wait blocks until the chunk is committed (or failed) and returns how
// many of its rows were new and how many were already stored.
func (c *Chunk) Wait(ctx context.Context) (inserted, duplicates int, err error) {
	select {
	case <-c.done:
		return c.inserted, c.duplicates, c.err
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	}
}

// Run writes batches until ctx ends, then writes what is still queued and
// returns. The server cancels ctx only after every stream has finished,
// so nothing waits on a chunk that will not be written.
func (w *Writer) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for i := 0; i < w.cfg.Writers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.loop(ctx)
		}()
	}
	wg.Wait()
}

func (w *Writer) loop(ctx context.Context) {
	for {
		var first *Chunk
		select {
		case first = <-w.queue:
		case <-ctx.Done():
			for {
				select {
				case c := <-w.queue:
					w.commit([]*Chunk{c})
				default:
					return
				}
			}
		}
		batch, n := []*Chunk{first}, len(first.rows)
		timer := time.NewTimer(w.cfg.BatchDelay)
	collect:
		for n < w.cfg.BatchRows {
			select {
			case c := <-w.queue:
				batch, n = append(batch, c), n+len(c.rows)
			case <-timer.C:
				break collect
			}
		}
		timer.Stop()
		w.commit(batch)
	}
}

// commit writes one batch and reports to its chunks.
func (w *Writer) commit(batch []*Chunk) {
	var rows []*store.Row
	for _, c := range batch {
		for i := range c.rows {
			rows = append(rows, &c.rows[i])
		}
	}
	ctx, span := startCommitSpan(batch, len(rows))
	defer span.End()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()

	start := time.Now()
	err := w.parts.EnsureFor(ctx, rows)
	var fresh []*store.Row
	var inserted map[store.Key]int
	if err == nil {
		fresh, inserted, err = w.store.WriteRows(ctx, rows)
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "write failed")
		w.metrics.Failed()
	} else {
		duplicates := len(rows) - len(fresh)
		if duplicates > 0 {
			span.SetAttributes(attribute.Int("oplog.duplicates", duplicates))
		}
		w.metrics.Committed(fresh, duplicates, time.Since(start))
	}
	for _, c := range batch {
		switch {
		case err != nil:
			c.err = err
		case inserted == nil: // fast path: every row was new
			c.inserted = len(c.rows)
		default:
			for i := range c.rows {
				k := c.rows[i].Key()
				if inserted[k] > 0 {
					inserted[k]--
					c.inserted++
				} else {
					c.duplicates++
				}
			}
		}
		w.budget.Release(c.bytes)
		close(c.done)
	}
	if err != nil {
		w.log.WarnContext(ctx, "ingest batch failed; its streams get an error and resend", "rows", len(rows), "error", err)
	}
}

// startCommitSpan starts the span of one transaction. It belongs to the
// trace of the batch's first stream, so a worker's trace shows its rows'
// commit and the database calls under it, and links to the other streams
// whose rows it carries.
func startCommitSpan(batch []*Chunk, rows int) (context.Context, trace.Span) {
	parent := trace.ContextWithSpanContext(context.Background(), batch[0].span)
	var links []trace.Link
	seen := map[trace.SpanID]bool{batch[0].span.SpanID(): true}
	for _, c := range batch[1:] {
		if c.span.IsValid() && !seen[c.span.SpanID()] && len(links) < maxCommitLinks {
			seen[c.span.SpanID()] = true
			links = append(links, trace.Link{SpanContext: c.span})
		}
	}
	return tracer.Start(parent, "oplog.ingest.commit",
		trace.WithLinks(links...),
		trace.WithAttributes(attribute.Int("oplog.rows", rows), attribute.Int("oplog.streams", len(batch))))
}
