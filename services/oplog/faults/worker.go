//go:build faults

package faults

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/platforma/platforma/services/oplog/oplogclient"
)

// A worker with a disk spool has to be killed with SIGKILL to test what
// the spool promises across a crash, and the test process cannot kill
// itself: the test binary runs itself again as the worker. TestMain hands
// over to spoolWorkerMain when spoolWorkerEnv is set; its value is the
// worker's configuration as JSON.
const spoolWorkerEnv = "FAULTS_SPOOL_WORKER"

// workerConfig is what one worker process does.
type workerConfig struct {
	Addr string // OpLogService
	// CA, Cert, Key: the suite's worker credentials (files).
	CA, Cert, Key string
	Dir           string // the spool directory
	SpoolBytes    int64
	// Producer numbers the keys the worker logs, "faults-p<Producer>-<n>"
	// from n = 0, at Rate entries a second until it is killed.
	Producer int32
	Rate     int
	// Drain: log nothing, Close at once (delivering what a previous run
	// left in the spool) with up to CloseTimeout, print the final counters
	// and exit.
	Drain        bool
	CloseTimeout time.Duration
	// Tick is how often the worker logs and reports (10 ms unless set).
	Tick time.Duration
}

// The worker reports on stdout, a line per event, each written with one
// write(2) so that a kill never leaves half a line behind:
//
//	I <n>             keys below n may be logged from now on (said
//	                  before the Log calls, so no key is ever stored
//	                  that the parent has not heard of)
//	L <n> <unixnano>  keys below n had been logged by then (said after
//	                  the Log calls returned)
//	S <stats>         the client's Stats as JSON, every tick
//	M <bytes>         the Go heap in use (HeapAlloc), every 25 ticks
//	F <final>         drain mode: Stats after Close and what Close
//	                  returned, as JSON (workerFinal)
//	E <text>          the worker could not start
const (
	lineIntent = "I"
	lineLogged = "L"
	lineStats  = "S"
	lineHeap   = "M"
	lineFinal  = "F"
	lineError  = "E"
)

// spoolWorkerMain is the worker process's main; it returns the exit code.
func spoolWorkerMain(spec string) int {
	say := func(format string, args ...any) {
		_, _ = os.Stdout.WriteString(fmt.Sprintf(format, args...) + "\n")
	}
	var cfg workerConfig
	if err := json.Unmarshal([]byte(spec), &cfg); err != nil {
		say("%s %s: %v", lineError, spoolWorkerEnv, err)
		return 2
	}
	if cfg.Tick <= 0 {
		cfg.Tick = 10 * time.Millisecond
	}
	creds, err := oplogclient.TLSFromFiles(cfg.CA, cfg.Cert, cfg.Key)
	if err != nil {
		say("%s credentials: %v", lineError, err)
		return 2
	}
	conn, err := oplogclient.Dial(cfg.Addr, creds)
	if err != nil {
		say("%s dial: %v", lineError, err)
		return 2
	}
	client, err := oplogclient.New(conn, oplogclient.WithSpool(cfg.Dir, cfg.SpoolBytes))
	if err != nil {
		say("%s %v", lineError, err)
		return 2
	}
	ticks := 0
	report := func() {
		b, _ := json.Marshal(client.Stats())
		say("%s %s", lineStats, b)
		// Reading the heap stops the world: not every tick.
		if ticks%25 == 0 {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			say("%s %d", lineHeap, ms.HeapAlloc)
		}
		ticks++
	}

	if cfg.Drain {
		closed := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), cfg.CloseTimeout)
			defer cancel()
			closed <- client.Close(ctx)
		}()
		tick := time.NewTicker(cfg.Tick)
		defer tick.Stop()
		for {
			select {
			case err := <-closed:
				fin := workerFinal{Stats: client.Stats()}
				if err != nil {
					fin.Err = err.Error()
				}
				var ce *oplogclient.CloseError
				if errors.As(err, &ce) {
					fin.CloseError = &workerCloseError{Failed: ce.Failed, Spooled: ce.Spooled, SpooledBytes: ce.SpooledBytes}
				}
				b, _ := json.Marshal(fin)
				say("%s %s", lineFinal, b)
				return 0
			case <-tick.C:
				report()
			}
		}
	}

	// The parent kills the worker; should it never do so (a test that
	// failed half-way and lost track of it), the worker ends by itself.
	deadline := time.Now().Add(5 * time.Minute)
	p := &producer{
		idx: cfg.Producer, client: client,
		user: fmt.Sprintf("0193a0c2-0000-7000-8000-%012d", 100+cfg.Producer),
		rng:  rand.New(rand.NewPCG(uint64(cfg.Producer), 42)),
	}
	tick := time.NewTicker(cfg.Tick)
	defer tick.Stop()
	last, owed := time.Now(), 0.0
	for now := range tick.C {
		if now.After(deadline) {
			return 3
		}
		// As the fleet's producers do: a stalled tick does not turn
		// into a burst later.
		owed += float64(cfg.Rate) * min(now.Sub(last), 100*time.Millisecond).Seconds()
		last = now
		n := int32(owed)
		owed -= float64(n)
		if n > 0 {
			say("%s %d", lineIntent, p.next+n)
			for i := int32(0); i < n; i++ {
				p.log(0)
			}
			say("%s %d %d", lineLogged, p.next, time.Now().UnixNano())
		}
		report()
	}
	return 0
}

// loggedMark is one "L" line: keys below upto were logged by at.
type loggedMark struct {
	upto int32
	at   time.Time
}

// Worker is a worker process as the parent sees it.
type Worker struct {
	t    *testing.T
	name string
	cfg  workerConfig
	cmd  *exec.Cmd
	done chan struct{} // closes when its stdout ended and it was reaped

	mu     sync.Mutex
	intent int32 // the highest "I"
	marks  []loggedMark
	stats  oplogclient.Stats
	nStats int // "S" lines seen
	// Peaks over the reports: InBuffer, and the heap.
	peakInBuffer int64
	peakHeap     uint64
	final        *workerFinal
	errs         []string
	// onStats, when set, sees every "S" line as it arrives (from the
	// reading goroutine, so it can act within a tick of the worker).
	onStats func(oplogclient.Stats)

	exitErr error
}

// workerFinal is a drain worker's last word.
type workerFinal struct {
	Stats oplogclient.Stats
	Err   string // Close's error, "" for none
	// CloseError: Close returned a *oplogclient.CloseError, with these.
	CloseError *workerCloseError
	at         time.Time // when the parent read it
}

type workerCloseError struct{ Failed, Spooled, SpooledBytes int64 }

// startWorker runs the test binary as a worker with cfg (the address,
// credentials and rate filled in by the caller, the rest defaulted here).
func startWorker(t *testing.T, e *Env, name string, cfg workerConfig) *Worker {
	t.Helper()
	pki := suitePKI(t)
	cfg.CA, cfg.Cert, cfg.Key = pki.CA, pki.WorkerCert, pki.WorkerKey
	if cfg.SpoolBytes == 0 {
		cfg.SpoolBytes = 256 << 20
	}
	spec, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	w := &Worker{t: t, name: name, cfg: cfg, done: make(chan struct{})}
	// TestMain hands over to the worker before any test runs; should the
	// variable not arrive, the flag keeps the child from running the
	// suite again.
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), spoolWorkerEnv+"="+string(spec))
	logPath := filepath.Join(e.dir, name+".log")
	stderr, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	// The worker dies with the test process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start worker %s: %v", name, err)
	}
	stderr.Close() // the child has its own descriptor
	w.cmd = cmd
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			w.line(sc.Text())
		}
		err := cmd.Wait()
		w.mu.Lock()
		w.exitErr = err
		w.mu.Unlock()
		close(w.done)
	}()
	t.Cleanup(func() {
		select {
		case <-w.done:
		default:
			_ = w.cmd.Process.Kill()
		}
		<-w.done
		if t.Failed() {
			t.Logf("worker %s's stderr (%s):\n%s", name, logPath, tailFile(logPath, 25))
		}
	})
	return w
}

func (w *Worker) line(s string) {
	kind, rest, _ := strings.Cut(s, " ")
	w.mu.Lock()
	defer w.mu.Unlock()
	switch kind {
	case lineIntent:
		n, err := strconv.ParseInt(rest, 10, 32)
		if err != nil {
			w.errs = append(w.errs, "bad line: "+s)
			return
		}
		w.intent = max(w.intent, int32(n))
	case lineLogged:
		ns, at, _ := strings.Cut(rest, " ")
		n, err1 := strconv.ParseInt(ns, 10, 32)
		nano, err2 := strconv.ParseInt(at, 10, 64)
		if err1 != nil || err2 != nil {
			w.errs = append(w.errs, "bad line: "+s)
			return
		}
		w.marks = append(w.marks, loggedMark{int32(n), time.Unix(0, nano)})
	case lineStats:
		var st oplogclient.Stats
		if err := json.Unmarshal([]byte(rest), &st); err != nil {
			w.errs = append(w.errs, "bad line: "+s)
			return
		}
		w.stats = st
		w.nStats++
		w.peakInBuffer = max(w.peakInBuffer, st.InBuffer)
		if w.onStats != nil {
			w.onStats(st)
		}
	case lineHeap:
		n, err := strconv.ParseUint(rest, 10, 64)
		if err != nil {
			w.errs = append(w.errs, "bad line: "+s)
			return
		}
		w.peakHeap = max(w.peakHeap, n)
	case lineFinal:
		var fin workerFinal
		if err := json.Unmarshal([]byte(rest), &fin); err != nil {
			w.errs = append(w.errs, "bad line: "+s)
			return
		}
		fin.at = time.Now()
		w.stats = fin.Stats
		w.final = &fin
	default:
		w.errs = append(w.errs, s)
	}
}

// Stats are the worker's counters as of its last report.
func (w *Worker) Stats() oplogclient.Stats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stats
}

// peaks are the highest InBuffer and heap the worker reported.
func (w *Worker) peaks() (inBuffer int64, heap uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.peakInBuffer, w.peakHeap
}

// OnStats installs f on every later report (nil removes it).
func (w *Worker) OnStats(f func(oplogclient.Stats)) {
	w.mu.Lock()
	w.onStats = f
	w.mu.Unlock()
}

// waitStats waits for a report that satisfies cond (or for the worker to
// end, which fails the test).
func (w *Worker) waitStats(timeout time.Duration, what string, cond func(oplogclient.Stats) bool) oplogclient.Stats {
	w.t.Helper()
	var st oplogclient.Stats
	waitFor(w.t, timeout, what, func() bool {
		select {
		case <-w.done:
			w.t.Fatalf("worker %s ended while waiting for %s: %v %v", w.name, what, w.exitErr, w.errors())
		default:
		}
		w.mu.Lock()
		st = w.stats
		seen := w.nStats > 0
		w.mu.Unlock()
		return seen && cond(st)
	})
	return st
}

// Kill9 kills the worker with SIGKILL, waits until it is reaped and every
// line it wrote is read, and returns when the signal was sent.
func (w *Worker) Kill9() time.Time {
	w.t.Helper()
	at, err := w.signalKill()
	if err != nil {
		w.t.Fatalf("kill worker %s: %v", w.name, err)
	}
	<-w.done
	return at
}

// signalKill sends SIGKILL without waiting (safe from an OnStats hook)
// and returns when it was sent.
func (w *Worker) signalKill() (time.Time, error) {
	at := time.Now()
	return at, w.cmd.Process.Signal(syscall.SIGKILL)
}

// exited reports whether the worker has ended and been reaped.
func (w *Worker) exited() bool {
	select {
	case <-w.done:
		return true
	default:
		return false
	}
}

// waitFinal waits for a drain worker to exit and returns its last word.
func (w *Worker) waitFinal(timeout time.Duration) workerFinal {
	w.t.Helper()
	select {
	case <-w.done:
	case <-time.After(timeout):
		w.t.Fatalf("drain worker %s did not exit within %s", w.name, timeout)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.final == nil || w.exitErr != nil {
		w.t.Fatalf("drain worker %s ended without its final counters (exit: %v; %v)", w.name, w.exitErr, w.errs)
	}
	return *w.final
}

// loggedBy is the number of keys the worker had certainly logged by t:
// every key below it.
func (w *Worker) loggedBy(t time.Time) int32 {
	w.mu.Lock()
	defer w.mu.Unlock()
	var n int32
	for _, m := range w.marks {
		if m.at.After(t) {
			break
		}
		n = m.upto
	}
	return n
}

// loggedAt is when key n was logged, as far as the worker said: the time
// of the first "L" line covering it (zero if none did).
func (w *Worker) loggedAt(n int32) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, m := range w.marks {
		if m.upto > n {
			return m.at
		}
	}
	return time.Time{}
}

// mayHaveLogged is how many keys the worker may have logged: every stored
// key of its producer must be below it.
func (w *Worker) mayHaveLogged() int32 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.intent
}

// errors are lines the worker should not have written.
func (w *Worker) errors() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.errs) == 0 {
		return nil
	}
	return errors.New(strings.Join(w.errs, "; "))
}
