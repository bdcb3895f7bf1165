//go:build faults

package faults

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	"github.com/platforma/platforma/services/oplog/oplogclient"
)

// fleetConfig is the load of one scenario.
type fleetConfig struct {
	producers int     // SDK clients, one connection each
	rate      int     // entries per second per producer
	logins    float64 // share of entries that are logins (CHECK_LOGIN/VALIDATE_SESSION with an account)
	// flushSize and bufferSize: 0 keeps the SDK's defaults (500, 10,000).
	flushSize, bufferSize int
	// spoolBytes > 0 gives each producer a disk spool of that size in a
	// directory of its own (WithSpool), fresh for the scenario: whatever
	// the spool replays was logged by this fleet.
	spoolBytes int64
}

func (c fleetConfig) effectiveFlushSize() int {
	if c.flushSize == 0 {
		return 500
	}
	return c.flushSize
}

func (c fleetConfig) effectiveBufferSize() int {
	if c.bufferSize == 0 {
		return 10000
	}
	return c.bufferSize
}

// sdkFlushers is the SDK's default number of flushes in flight.
const sdkFlushers = 2

// Fleet is a set of SDK producers logging at a steady rate through
// connections the ledger watches.
type Fleet struct {
	t         *testing.T
	cfg       fleetConfig
	ledger    *Ledger
	producers []*producer

	stop     chan struct{}
	running  sync.WaitGroup
	sampling sync.WaitGroup
	stopped  bool
	closed   bool

	// rejectedCallbacks counts OnRejected calls (none expected).
	rejectedCallbacks atomic.Int64
	// Acknowledged flushes (OnFlush) and their rows: from memory, and
	// replays from the spool.
	flushes, flushRows, replays, replayRows atomic.Int64

	// Peaks since Start: one producer's InBuffer, and this process's heap.
	peakInBuffer atomic.Int64
	peakHeap     atomic.Uint64
	winMu        sync.Mutex
	win          *window

	// raw counts the rows of raw (non-SDK) producers by producer number:
	// their keys are 0..n-1, all expected acknowledged.
	rawMu sync.Mutex
	raw   map[int32]int32
}

type producer struct {
	idx    int32
	user   string
	conn   *grpc.ClientConn
	client *oplogclient.Client
	rng    *rand.Rand
	spool  string       // its spool directory ("" without one)
	next   int32        // next key number (only the producer's goroutine writes it)
	logged atomic.Int32 // Log calls made
	stats  oplogclient.Stats
}

// newFleet connects cfg.producers SDK clients to addr.
func newFleet(t *testing.T, addr string, cfg fleetConfig) *Fleet {
	t.Helper()
	f := &Fleet{t: t, cfg: cfg, ledger: newLedger(), stop: make(chan struct{}), raw: map[int32]int32{}}
	for i := 0; i < cfg.producers; i++ {
		conn, err := oplogclient.Dial(addr,
			workerCreds(t),
			grpc.WithChainStreamInterceptor(f.ledger.interceptor()))
		if err != nil {
			t.Fatal(err)
		}
		opts := []oplogclient.Option{
			oplogclient.OnRejected(func(oplogclient.Rejected) { f.rejectedCallbacks.Add(1) }),
			oplogclient.OnFlush(f.countFlush),
		}
		if cfg.flushSize > 0 {
			opts = append(opts, oplogclient.WithFlushSize(cfg.flushSize))
		}
		if cfg.bufferSize > 0 {
			opts = append(opts, oplogclient.WithBufferSize(cfg.bufferSize))
		}
		var spool string
		if cfg.spoolBytes > 0 {
			spool = t.TempDir()
			opts = append(opts, oplogclient.WithSpool(spool, cfg.spoolBytes))
		}
		client, err := oplogclient.New(conn, opts...)
		if err != nil {
			t.Fatal(err)
		}
		f.producers = append(f.producers, &producer{
			idx: int32(i), conn: conn, client: client, spool: spool,
			user: fmt.Sprintf("0193a0c2-0000-7000-8000-%012d", 100+i),
			rng:  rand.New(rand.NewPCG(uint64(i), 42)),
		})
	}
	t.Cleanup(func() {
		// A test that failed half-way: do not leave goroutines behind.
		f.Stop()
		if !f.closed {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			for _, p := range f.producers {
				_ = p.client.Close(ctx)
				_ = p.conn.Close()
			}
		}
	})
	return f
}

// countFlush counts an acknowledged flush (called by the SDK's goroutines).
func (f *Fleet) countFlush(r oplogclient.FlushResult) {
	if r.FromSpool {
		f.replays.Add(1)
		f.replayRows.Add(int64(r.Rows))
		return
	}
	f.flushes.Add(1)
	f.flushRows.Add(int64(r.Rows))
}

// Start begins logging.
func (f *Fleet) Start() {
	for _, p := range f.producers {
		f.running.Add(1)
		go func() {
			defer f.running.Done()
			p.run(f.stop, f.cfg)
		}()
	}
	f.sampling.Add(1)
	go func() {
		defer f.sampling.Done()
		f.sample()
	}()
}

// run logs cfg.rate entries a second, in steps of 10 ms.
func (p *producer) run(stop <-chan struct{}, cfg fleetConfig) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	last, owed := time.Now(), 0.0
	for {
		select {
		case <-stop:
			return
		case now := <-tick.C:
			// A stalled tick does not turn into a burst later.
			owed += float64(cfg.rate) * min(now.Sub(last), 100*time.Millisecond).Seconds()
			last = now
			for ; owed >= 1; owed-- {
				p.log(cfg.logins)
			}
		}
	}
}

var accounts = func() []string {
	out := make([]string, 16)
	for i := range out {
		out[i] = fmt.Sprintf("shop-%02d", i)
	}
	return out
}()

// log logs the producer's next entry: its key in resource_id, a login
// with an account for a share of them.
func (p *producer) log(logins float64) {
	k := key{p.idx, p.next}
	p.next++
	e := oplogclient.Entry{
		UserID:        p.user,
		OperationType: oplogv1.OperationType(3 + k.n%5), // GET_REVIEWS .. GET_STORES
		ResourceID:    k.String(),
		Outcome:       commonv1.Outcome_OUTCOME_SUCCESS,
		ExecutionTime: time.Duration(20+p.rng.IntN(2000)) * time.Millisecond,
		ProxyUsed:     fmt.Sprintf("proxy-%d", p.rng.IntN(8)),
	}
	if p.rng.Float64() < logins {
		e.OperationType = oplogv1.OperationType_OPERATION_TYPE_CHECK_LOGIN
		if p.rng.IntN(3) == 0 {
			e.OperationType = oplogv1.OperationType_OPERATION_TYPE_VALIDATE_SESSION
		}
		e.PlatformAccountID = accounts[p.rng.IntN(len(accounts))]
		e.AuthTypeDetected = commonv1.AuthType(1 + p.rng.IntN(2))
	}
	if p.rng.IntN(4) == 0 {
		e.Outcome = commonv1.Outcome_OUTCOME_FAILED
		e.ErrorType = "AUTH_REQUIRED"
	}
	p.client.Log(context.Background(), e)
	p.logged.Add(1)
}

// sample follows the peaks every 50 ms (the heap every 250 ms: reading it
// stops the world).
func (f *Fleet) sample() {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		var inBuffer int64
		for _, p := range f.producers {
			inBuffer = max(inBuffer, p.client.Stats().InBuffer)
		}
		var heap uint64
		if i%5 == 0 {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			heap = ms.HeapAlloc
		}
		raise64(&f.peakInBuffer, inBuffer)
		raiseU64(&f.peakHeap, heap)
		f.winMu.Lock()
		if w := f.win; w != nil {
			w.inBuffer = max(w.inBuffer, inBuffer)
			w.heap = max(w.heap, heap)
		}
		f.winMu.Unlock()
		select {
		case <-f.stop:
			return
		case <-tick.C:
		}
	}
}

func raise64(a *atomic.Int64, v int64) {
	for old := a.Load(); v > old && !a.CompareAndSwap(old, v); old = a.Load() {
	}
}

func raiseU64(a *atomic.Uint64, v uint64) {
	for old := a.Load(); v > old && !a.CompareAndSwap(old, v); old = a.Load() {
	}
}

// window holds the peaks of a stretch of the scenario.
type window struct {
	inBuffer   int64  // one producer's InBuffer
	heap       uint64 // HeapAlloc
	heapBefore uint64 // HeapAlloc when the window opened
}

// openWindow starts following peaks for a stretch (one at a time).
func (f *Fleet) openWindow() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	f.winMu.Lock()
	f.win = &window{heapBefore: ms.HeapAlloc, heap: ms.HeapAlloc}
	f.winMu.Unlock()
}

// closeWindow returns the peaks since openWindow.
func (f *Fleet) closeWindow() window {
	f.winMu.Lock()
	defer f.winMu.Unlock()
	w := *f.win
	f.win = nil
	return w
}

// Stop ends logging (Close comes separately).
func (f *Fleet) Stop() {
	if f.stopped {
		return
	}
	f.stopped = true
	close(f.stop)
	f.running.Wait()
	f.sampling.Wait()
}

// Close stops logging and closes every SDK client with up to timeout to
// deliver what is left; it returns Close's errors.
func (f *Fleet) Close(timeout time.Duration) []error {
	f.Stop()
	f.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var errs []error
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, p := range f.producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.client.Close(ctx); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("producer %d: %w", p.idx, err))
				mu.Unlock()
			}
			p.stats = p.client.Stats()
			_ = p.conn.Close()
		}()
	}
	wg.Wait()
	return errs
}

// totalInBuffer is what the producers still hold (buffered or in flight).
func (f *Fleet) totalInBuffer() int64 {
	var n int64
	for _, p := range f.producers {
		n += p.client.Stats().InBuffer
	}
	return n
}

// waitAckAfter waits for the first acknowledgement after t0 and returns
// how long after t0 it came.
func (f *Fleet) waitAckAfter(t0 time.Time, timeout time.Duration, what string) time.Duration {
	f.t.Helper()
	var at time.Time
	waitFor(f.t, timeout, "an acknowledgement "+what, func() bool {
		at = f.ledger.firstAckAfter(t0)
		return !at.IsZero()
	})
	return at.Sub(t0)
}

// waitCaughtUp waits until no producer holds more than two flushes'
// worth (the steady state) and returns how long that took from t0.
func (f *Fleet) waitCaughtUp(t0 time.Time, timeout time.Duration) time.Duration {
	f.t.Helper()
	limit := int64(2 * f.cfg.effectiveFlushSize())
	waitFor(f.t, timeout, fmt.Sprintf("every producer's backlog to fall to %d entries or fewer", limit), func() bool {
		for _, p := range f.producers {
			if p.client.Stats().InBuffer > limit {
				return false
			}
		}
		return true
	})
	return time.Since(t0)
}

// spoolTotals sums the producers' spool counters now: entries and bytes
// waiting, and the age of the oldest entry of any.
func (f *Fleet) spoolTotals() (entries, bytes int64, oldest time.Duration) {
	for _, p := range f.producers {
		st := p.client.Stats()
		entries += st.SpoolEntries
		bytes += st.SpoolBytes
		oldest = max(oldest, st.SpoolOldest)
	}
	return entries, bytes, oldest
}

// waitSpoolsDrained waits until every producer's spool is empty and its
// memory holds no more than two flushes' worth, and returns how long that
// took from t0.
func (f *Fleet) waitSpoolsDrained(t0 time.Time, timeout time.Duration) time.Duration {
	f.t.Helper()
	limit := int64(2 * f.cfg.effectiveFlushSize())
	waitFor(f.t, timeout, "every producer's spool to be replayed", func() bool {
		for _, p := range f.producers {
			if st := p.client.Stats(); st.SpoolEntries > 0 || st.InBuffer > limit {
				return false
			}
		}
		return true
	})
	return time.Since(t0)
}

// dialRaw is a connection for raw Ingest streams (the generated stub),
// watched by the fleet's ledger.
func (f *Fleet) dialRaw(addr string) *grpc.ClientConn {
	f.t.Helper()
	conn, err := grpc.NewClient(addr, workerCreds(f.t),
		grpc.WithChainStreamInterceptor(f.ledger.interceptor()))
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// rawKeys reserves n keys of raw producer p (p >= 100) and returns the
// first key number.
func (f *Fleet) rawKeys(p int32, n int32) int32 {
	f.rawMu.Lock()
	defer f.rawMu.Unlock()
	first := f.raw[p]
	f.raw[p] = first + n
	return first
}
