// Package oplogclient is the worker SDK of OpLogService.
//
// Log never blocks and does no I/O: it stamps the entry with an id
// (UUIDv7), its time and the trace id of the context, redacts sensitive
// payload keys, and puts it in a bounded in-memory buffer. Background
// flushers send the buffer over Ingest streams, a batch when it is full or
// when its oldest entry has waited the linger, and retry with exponential
// backoff until the server acknowledges; the server acknowledges only
// committed rows and recognises resent ids, so a retry never stores a row
// twice. A retry waiting for a server that was down is cut short when the
// server's health turns SERVING again. When the buffer is full the oldest
// entries are dropped and counted. Close flushes what is left.
//
// With WithSpool, batches the server cannot take go to a crash-safe spool
// on disk instead of being retried in memory, and are replayed from it, so
// an outage longer than the buffer lasts loses nothing (spool.go).
//
//	client, err := oplogclient.New(conn)
//	defer client.Close(ctx)
//	client.Log(ctx, oplogclient.Entry{UserID: u, OperationType: oplogv1.OperationType_OPERATION_TYPE_GET_REVIEWS, Outcome: commonv1.Outcome_OUTCOME_SUCCESS})
//	err = client.Track(ctx, entry, func(ctx context.Context) error { return scrape(ctx) })
package oplogclient

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	"github.com/platforma/platforma/services/kit/balance"
	"github.com/platforma/platforma/services/oplog/internal/wire"
	"github.com/platforma/platforma/services/oplog/redact"
)

// Entry is one operation to log. Only UserID, OperationType and Outcome
// are required.
type Entry struct {
	UserID            string // UUID
	PlatformAccountID string
	OperationType     oplogv1.OperationType
	ResourceID        string
	Outcome           commonv1.Outcome
	ErrorCode         *int32
	ErrorType         string
	ErrorMessage      string
	// ExecutionTime is sent when positive (Track always sets it).
	ExecutionTime    time.Duration
	RetryCount       int
	AuthTypeDetected commonv1.AuthType
	SessionRefreshed bool
	ProxyUsed        string
	UserAgent        string
	// Payloads are copied (and redacted) by Log; the caller may reuse the
	// maps afterwards. Values: strings, numbers, bools, nil, time.Time,
	// maps and slices of them; anything else is sent as its fmt.Sprint text.
	RequestPayload  map[string]any
	ResponseSummary map[string]any
	// CreateTime is when the operation happened; zero means now.
	CreateTime time.Time
}

// Rejected is an entry the server refused; resending it cannot help.
type Rejected struct {
	ID            string
	OperationType oplogv1.OperationType
	Field         string
	Reason        string
}

// Stats are the client's counters since New.
type Stats struct {
	Enqueued     int64 // accepted by Log
	Acknowledged int64 // confirmed stored by the server (new or duplicate)
	Duplicates   int64 // acknowledged rows the server already had (a retry of a lost answer)
	Rejected     int64 // refused by the server as invalid
	Dropped      int64 // pushed out of a full buffer, or logged after Close
	Failed       int64 // given up after non-retryable errors, or at Close without a spool
	Retries      int64 // resend attempts
	InBuffer     int64 // waiting in the memory buffer or in flight from it

	// The spool (WithSpool); all zero without one. Entries a previous
	// run left in the spool are replayed too: they count in
	// SpoolReplayed and Acknowledged, not in Enqueued.
	Spooled       int64         // entries written to the spool
	SpoolReplayed int64         // entries from the spool acknowledged by the server
	SpoolDropped  int64         // entries lost to a full spool (oldest first) or a failed write
	SpoolCorrupt  int64         // damaged records or segment tails skipped when reading
	SpoolEntries  int64         // entries in the spool now, waiting for delivery
	SpoolBytes    int64         // size of the spool's files now
	SpoolOldest   time.Duration // how long the spool's oldest entry has been waiting (by its segment's first entry)
}

// FlushResult describes one acknowledged flush, for the caller's metrics.
type FlushResult struct {
	Rows, Accepted, Duplicates, Rejected int
	Attempts                             int
	// Latency is from the first attempt to the acknowledgement.
	Latency time.Duration
	// Delivery is from the Log of the flush's oldest entry to the
	// acknowledgement: how late the server got it.
	Delivery time.Duration
	// FromSpool: the flush was a replay from the spool.
	FromSpool bool
}

// Option configures a Client.
type Option func(*options)

type options struct {
	bufferSize, flushSize, flushers int
	linger                          time.Duration
	spoolDir                        string
	spoolMaxBytes                   int64
	initialBackoff, maxBackoff      time.Duration
	attemptTimeout                  time.Duration
	keys                            redact.Keys
	onRejected                      func(Rejected)
	onFlush                         func(FlushResult)
	now                             func() time.Time
	callOptions                     []grpc.CallOption
	tracer                          trace.Tracer
}

// WithBufferSize bounds the entries held in memory (default 10,000).
func WithBufferSize(n int) Option { return func(o *options) { o.bufferSize = n } }

// WithFlushSize sets how many entries one flush sends, and how many
// buffered entries start a flush before the linger ends (default 500, at
// most 1,000).
func WithFlushSize(n int) Option { return func(o *options) { o.flushSize = n } }

// WithLinger sets how long an entry may wait in the buffer for its batch
// to fill (default 200ms): a batch is sent when it holds the flush size,
// or when its oldest entry has waited this long. Longer means fuller
// streams (fewer commits on the server) and later delivery.
func WithLinger(d time.Duration) Option { return func(o *options) { o.linger = d } }

// WithSpool keeps what the server cannot take on disk, in dir (created
// 0700; one client per directory at a time), up to maxBytes of files.
// A batch whose delivery fails is written there (and fsynced) instead of
// being retried in memory, and so is everything logged while the server
// stays unreachable, a batch at a time; a replayer sends it back in
// order and deletes it only once acknowledged. Entries left by a previous
// run, also one killed with -9, are sent by the next New on dir. When the
// spool is full its oldest entries are dropped (Stats.SpoolDropped). What
// a kill -9 can lose is what had not reached the spool or the server: the
// memory buffer and the batches in flight, at most the linger plus one
// attempt's time (5s with a spool) old.
func WithSpool(dir string, maxBytes int64) Option {
	return func(o *options) { o.spoolDir, o.spoolMaxBytes = dir, maxBytes }
}

// WithFlushers sets how many flushes may be in flight at once (default 2).
func WithFlushers(n int) Option { return func(o *options) { o.flushers = n } }

// WithBackoff sets the first and the longest wait between retries
// (default 100ms and 10s); waits double, with jitter.
func WithBackoff(initial, max time.Duration) Option {
	return func(o *options) { o.initialBackoff, o.maxBackoff = initial, max }
}

// WithRedactKeys replaces the default words (redact.DefaultKeys).
func WithRedactKeys(words ...string) Option { return func(o *options) { o.keys = redact.New(words) } }

// OnRejected is called (from a flusher goroutine) for every entry the
// server refuses.
func OnRejected(f func(Rejected)) Option { return func(o *options) { o.onRejected = f } }

// OnFlush is called (from a flusher goroutine) after every acknowledged
// flush.
func OnFlush(f func(FlushResult)) Option { return func(o *options) { o.onFlush = f } }

// WithCallOptions adds gRPC call options to every Ingest stream.
func WithCallOptions(opts ...grpc.CallOption) Option {
	return func(o *options) { o.callOptions = append(o.callOptions, opts...) }
}

// WithTracerProvider sets where flush spans go (default: the global
// provider, otel.GetTracerProvider()).
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(o *options) { o.tracer = tp.Tracer(instrumentationName) }
}

const instrumentationName = "github.com/platforma/platforma/services/oplog/oplogclient"

// Dial opens a connection to OpLogService at target with OpenTelemetry's
// gRPC client instrumentation, so that each flush's trace continues into
// the server, and round_robin balancing, so that a target naming several
// replicas (dns:///oplog.example:50053 with one address per replica)
// spreads the flushes over all of them and moves off a replica that goes
// away. opts come after these; they must include transport credentials,
// e.g. grpc.WithTransportCredentials(insecure.NewCredentials()). A
// connection made otherwise works too, without the server-side spans
// joining the workers' traces.
func Dial(target string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	return grpc.NewClient(target, append([]grpc.DialOption{grpc.WithStatsHandler(otelgrpc.NewClientHandler()), balance.RoundRobin()}, opts...)...)
}

// withClock replaces time.Now, for tests.
func withClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// Client buffers entries and ships them to OpLogService.
type Client struct {
	rpc    oplogv1.OpLogServiceClient
	health healthpb.HealthClient
	// reconnect is conn when it can be told to reconnect now (a
	// *grpc.ClientConn does).
	reconnect interface{ ResetConnectBackoff() }
	opts      options
	spool     *spool // nil without WithSpool
	// down: with a spool, a delivery failed and none has succeeded since,
	// so flushers spool batches without trying the server.
	down atomic.Bool

	mu     sync.Mutex
	ring   []record
	head   int
	n      int
	closed bool
	rng    *rand.ChaCha8
	lastMs int64
	seq    uint16

	kick     chan struct{}
	closing  chan struct{}
	stopping context.Context // ends when Close's deadline passes
	stop     context.CancelFunc
	flushers sync.WaitGroup
	// flushed closes when the flushers are done at Close: nothing more
	// will be spooled, so the replayer may stop once the spool is empty.
	flushed  chan struct{}
	replayed chan struct{} // closes when the replayers have returned
	inFlight atomic.Int64

	enqueued, acknowledged, duplicates, rejected, dropped, failed, retries atomic.Int64
}

// record is a buffered entry, stamped by Log.
type record struct {
	id [16]byte
	// span is the context's span when Log was called: the row keeps its
	// trace and span ids, and the flush that sends it links to it.
	span trace.SpanContext
	at   time.Time
	// queued is when Log took it: the linger counts from here.
	queued   time.Time
	entry    Entry
	request  []byte // encoded google.protobuf.Struct, nil for none
	response []byte
}

// New starts a client on conn (a *grpc.ClientConn to OpLogService).
func New(conn grpc.ClientConnInterface, opts ...Option) (*Client, error) {
	o := options{
		bufferSize: 10000, flushSize: 500, flushers: 2, linger: 200 * time.Millisecond,
		initialBackoff: 100 * time.Millisecond, maxBackoff: 10 * time.Second,
		attemptTimeout: 30 * time.Second, keys: redact.Default(), now: time.Now,
		tracer: otel.GetTracerProvider().Tracer(instrumentationName),
	}
	for _, opt := range opts {
		opt(&o)
	}
	switch {
	case o.bufferSize < 1:
		return nil, errors.New("oplogclient: buffer size must be positive")
	case o.flushSize < 1 || o.flushSize > wire.MaxRowsPerMessage:
		return nil, fmt.Errorf("oplogclient: flush size must be between 1 and %d", wire.MaxRowsPerMessage)
	case o.flushers < 1 || o.linger <= 0 || o.initialBackoff <= 0 || o.maxBackoff < o.initialBackoff:
		return nil, errors.New("oplogclient: flushers, linger and backoff must be positive")
	case o.spoolDir != "" && o.spoolMaxBytes < 1<<20:
		return nil, errors.New("oplogclient: a spool needs at least 1 MiB")
	}
	var seed [32]byte
	if _, err := crand.Read(seed[:]); err != nil {
		return nil, fmt.Errorf("oplogclient: seed ids: %w", err)
	}
	c := &Client{
		rpc:      oplogv1.NewOpLogServiceClient(conn),
		health:   healthpb.NewHealthClient(conn),
		opts:     o,
		ring:     make([]record, o.bufferSize),
		rng:      rand.NewChaCha8(seed),
		kick:     make(chan struct{}, 1),
		closing:  make(chan struct{}),
		flushed:  make(chan struct{}),
		replayed: make(chan struct{}),
	}
	if r, ok := conn.(interface{ ResetConnectBackoff() }); ok {
		c.reconnect = r
	}
	if o.spoolDir != "" {
		sp, err := openSpool(o.spoolDir, o.spoolMaxBytes)
		if err != nil {
			return nil, fmt.Errorf("oplogclient: spool: %w", err)
		}
		c.spool = sp
		// An attempt that hangs holds its batch in memory only; with a
		// spool it is cut short sooner, so the batch reaches the disk.
		c.opts.attemptTimeout = min(c.opts.attemptTimeout, spoolAttemptTimeout)
	}
	c.stopping, c.stop = context.WithCancel(context.Background())
	for i := 0; i < o.flushers; i++ {
		c.flushers.Add(1)
		go c.flusher()
	}
	var replayers sync.WaitGroup
	if c.spool != nil {
		for i := 0; i < o.flushers; i++ {
			replayers.Add(1)
			go func() {
				defer replayers.Done()
				c.replayer()
			}()
		}
	}
	go func() {
		replayers.Wait()
		close(c.replayed)
	}()
	return c, nil
}

// spoolAttemptTimeout bounds one delivery attempt when a spool is there
// to take the batch instead.
const spoolAttemptTimeout = 5 * time.Second

// Log buffers e. It never blocks on the network and never fails: problems
// show up in Stats and the OnRejected callback.
func (c *Client) Log(ctx context.Context, e Entry) {
	at := e.CreateTime
	if at.IsZero() {
		at = c.opts.now()
	}
	queued := time.Now()
	span := trace.SpanContextFromContext(ctx)
	var req, resp []byte
	if e.RequestPayload != nil {
		req = encodePayload(e.RequestPayload, c.opts.keys)
	}
	if e.ResponseSummary != nil {
		resp = encodePayload(e.ResponseSummary, c.opts.keys)
	}
	e.RequestPayload, e.ResponseSummary = nil, nil

	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		c.dropped.Add(1)
		return
	}
	if c.n == len(c.ring) {
		// Full: the oldest entry makes room.
		c.ring[c.head] = record{}
		c.head = (c.head + 1) % len(c.ring)
		c.n--
		c.dropped.Add(1)
	}
	slot := &c.ring[(c.head+c.n)%len(c.ring)]
	slot.id = c.newID(at)
	slot.span, slot.at, slot.queued, slot.entry, slot.request, slot.response = span, at, queued, e, req, resp
	c.n++
	// A flusher wakes for the first entry (its linger starts) and for a
	// full batch.
	wake := c.n == 1 || c.n >= c.opts.flushSize
	c.mu.Unlock()
	c.enqueued.Add(1)
	if wake {
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
}

// newID returns a UUIDv7: 48 bits of Unix milliseconds, a 12-bit sequence
// that keeps ids of one client increasing within a millisecond, and 62
// random bits. Called with c.mu held.
func (c *Client) newID(at time.Time) [16]byte {
	ms := at.UnixMilli()
	if ms <= c.lastMs {
		// Same (or an earlier) millisecond: count on from the last id.
		c.seq++
		if c.seq > 0xfff {
			c.lastMs++
			c.seq = 0
		}
		ms = c.lastMs
	} else {
		c.lastMs, c.seq = ms, uint16(c.rng.Uint64()&0x3ff)
	}
	var id [16]byte
	binary.BigEndian.PutUint64(id[8:], c.rng.Uint64())
	id[0], id[1], id[2], id[3], id[4], id[5] = byte(ms>>40), byte(ms>>32), byte(ms>>24), byte(ms>>16), byte(ms>>8), byte(ms)
	id[6] = 0x70 | byte(c.seq>>8)&0x0f
	id[7] = byte(c.seq)
	id[8] = 0x80 | id[8]&0x3f
	return id
}

// take removes up to max records from the buffer.
func (c *Client) take(max int) []record {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.takeLocked(max)
}

func (c *Client) takeLocked(max int) []record {
	k := min(max, c.n)
	if k == 0 {
		return nil
	}
	out := make([]record, k)
	for i := range out {
		j := (c.head + i) % len(c.ring)
		out[i], c.ring[j] = c.ring[j], record{}
	}
	c.head = (c.head + k) % len(c.ring)
	c.n -= k
	c.inFlight.Add(int64(k))
	return out
}

func (c *Client) buffered() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// nextBatch takes a batch if one is due: a full one, one whose oldest
// entry has waited the linger, or anything once Close was called.
// Otherwise it returns how long until one is due, and -1 when none ever
// will be (closed and empty, or stopping).
func (c *Client) nextBatch() ([]record, time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopping.Err() != nil {
		return nil, -1
	}
	if c.n == 0 {
		if c.closed {
			return nil, -1
		}
		return nil, c.opts.linger // until Log wakes a flusher
	}
	waited := time.Since(c.ring[c.head].queued)
	if c.n >= c.opts.flushSize || c.closed || waited >= c.opts.linger {
		return c.takeLocked(c.opts.flushSize), 0
	}
	return nil, c.opts.linger - waited
}

// flusher sends batches as they become due, until Close has drained the
// buffer or given up.
func (c *Client) flusher() {
	defer c.flushers.Done()
	timer := time.NewTimer(c.opts.linger)
	defer timer.Stop()
	for {
		batch, wait := c.nextBatch()
		if batch != nil {
			c.flush(batch)
			continue
		}
		if wait < 0 {
			return
		}
		timer.Reset(wait)
		select {
		case <-c.kick:
		case <-timer.C:
		case <-c.closing:
		}
	}
}

// Stats returns the counters.
func (c *Client) Stats() Stats {
	st := Stats{
		Enqueued:     c.enqueued.Load(),
		Acknowledged: c.acknowledged.Load(),
		Duplicates:   c.duplicates.Load(),
		Rejected:     c.rejected.Load(),
		Dropped:      c.dropped.Load(),
		Failed:       c.failed.Load(),
		Retries:      c.retries.Load(),
		InBuffer:     int64(c.buffered()) + c.inFlight.Load(),
	}
	if c.spool != nil {
		sp := c.spool.stats()
		st.Spooled, st.SpoolReplayed = sp.written, sp.replayed
		st.SpoolDropped, st.SpoolCorrupt = c.spool.dropped.Load(), c.spool.corrupt.Load()
		st.SpoolEntries, st.SpoolBytes = sp.entries, sp.bytes
		if !sp.oldest.IsZero() {
			st.SpoolOldest = time.Since(sp.oldest)
		}
	}
	return st
}

// CloseError is what Close returns when its context ended before
// everything was delivered.
type CloseError struct {
	// Failed entries are lost: given up on (all of them since New).
	Failed int64
	// Spooled entries stay in the spool, and are sent by the next New on
	// the same directory; SpooledBytes is the size of its files.
	Spooled, SpooledBytes int64
	Err                   error // the context's error
}

func (e *CloseError) Error() string {
	msg := fmt.Sprintf("oplogclient: closed before everything was delivered: %d entries failed in all", e.Failed)
	if e.Spooled > 0 {
		msg += fmt.Sprintf(", %d (%d bytes) stay in the spool for the next start", e.Spooled, e.SpooledBytes)
	}
	return msg + ": " + e.Err.Error()
}

func (e *CloseError) Unwrap() error { return e.Err }

// Close stops accepting entries and delivers the buffer (and the spool),
// retrying until ctx ends. When ctx ends first it returns a *CloseError
// saying how many entries were lost and how many stay spooled; with a
// spool, what is still in memory then is spooled rather than lost.
func (c *Client) Close(ctx context.Context) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return errors.New("oplogclient: already closed")
	}
	c.closed = true
	c.mu.Unlock()
	close(c.closing)

	done := make(chan struct{})
	go func() {
		c.flushers.Wait()
		close(c.flushed)
		<-c.replayed
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		c.stop() // in-flight retries give up (to the spool, if there is one)
		<-done
	}
	c.stop()
	if left := c.take(c.buffered()); len(left) > 0 {
		if c.spool != nil {
			c.toSpool(encodeBatch(left))
		} else {
			c.failed.Add(int64(len(left)))
		}
		c.inFlight.Add(-int64(len(left)))
	}
	if c.spool != nil {
		c.spool.close()
	}
	st := c.Stats()
	if ctx.Err() != nil && (st.Failed > 0 || st.SpoolEntries > 0) {
		return &CloseError{Failed: st.Failed, Spooled: st.SpoolEntries, SpooledBytes: st.SpoolBytes, Err: ctx.Err()}
	}
	return nil
}
