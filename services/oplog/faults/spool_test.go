//go:build faults

package faults

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"

	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	"github.com/platforma/platforma/services/oplog/oplogclient"
)

// The SDK's promises with a spool (WithSpool), as its documentation states
// them and these scenarios check them.
const (
	// servingToFirstAck: after an outage, however long, the first
	// acknowledgement comes within about a second of OpLogService's health
	// answering SERVING again (the SDK's retry waits end on its health
	// probe, every 200 ms, instead of running out a grown backoff).
	servingToFirstAck = time.Second
	// sdkLinger and spoolAttempt are the SDK's defaults with a spool: the
	// longest an entry waits for its batch, and the longest one delivery
	// attempt lasts before its batch goes to the spool.
	sdkLinger    = 200 * time.Millisecond
	spoolAttempt = 5 * time.Second
	// lossWindowDown: what a kill -9 may lose while the server is
	// unreachable. The first failed attempt marks the server down, and
	// from then on every batch goes to the spool (fsynced) as soon as it is
	// due, the linger after its first entry, without trying the server.
	// A batch is on disk about the linger plus one write after its first
	// entry was logged; a second covers that with room for the scheduling
	// of a two-core machine also running Postgres and the service.
	lossWindowDown = time.Second
	// lossWindowUp: what a kill -9 may lose while the server is up: the
	// memory buffer and the batches in flight, at most the linger plus
	// one attempt old, and a second of margin as above.
	lossWindowUp = sdkLinger + spoolAttempt + time.Second
)

// healthWatch asks OpLogService's health every 50 ms, as a load balancer
// or the SDK would, and notes when it first said NOT_SERVING and when it
// first said SERVING after that.
type healthWatch struct {
	mu         sync.Mutex
	notServing time.Time
	serving    time.Time
	done       chan struct{}
}

func watchHealth(t *testing.T, addr string) *healthWatch {
	t.Helper()
	conn, err := grpc.NewClient(addr, workerCreds(t))
	if err != nil {
		t.Fatal(err)
	}
	h := &healthWatch{done: make(chan struct{})}
	stop := make(chan struct{})
	t.Cleanup(func() {
		close(stop)
		<-h.done
		_ = conn.Close()
	})
	client := healthgrpc.NewHealthClient(conn)
	go func() {
		defer close(h.done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			resp, err := client.Check(ctx, &healthgrpc.HealthCheckRequest{Service: oplogv1.OpLogService_ServiceDesc.ServiceName})
			cancel()
			now := time.Now()
			up := err == nil && resp.GetStatus() == healthgrpc.HealthCheckResponse_SERVING
			h.mu.Lock()
			switch {
			case !up && h.notServing.IsZero():
				h.notServing = now
			case up && !h.notServing.IsZero() && h.serving.IsZero():
				h.serving = now
			}
			found := !h.serving.IsZero()
			h.mu.Unlock()
			if found {
				return
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	return h
}

// times returns when health was first seen NOT_SERVING and then SERVING
// (zero when not yet).
func (h *healthWatch) times() (notServing, serving time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.notServing, h.serving
}

// TestDatabaseDown60sWithSpool: Postgres stops for 60 s under a steady
// 8,000 entries/s from four SDK clients, each with a disk spool. The
// memory buffers would overflow within seconds (TestDatabaseDown20s); with
// the spool nothing is dropped: what the server cannot take goes to disk
// and is replayed once Postgres is back, every entry stored exactly once.
// After a minute of failed attempts the SDK's backoff has grown to its
// cap, yet the first acknowledgement must come within a second of the
// service's health answering SERVING again.
func TestDatabaseDown60sWithSpool(t *testing.T) {
	e := newEnv(t)
	oplog := e.Oplog()
	oplog.Start(t, 30*time.Second)
	cfg := fleetConfig{producers: 4, rate: 2000, spoolBytes: 256 << 20}
	f := newFleet(t, oplog.Addr, cfg)
	f.Start()
	time.Sleep(time.Second)
	flushes0, rows0, steadyStart := f.flushes.Load(), f.flushRows.Load(), time.Now()
	time.Sleep(4 * time.Second)
	flushes, rows, steady := f.flushes.Load()-flushes0, f.flushRows.Load()-rows0, time.Since(steadyStart)

	health := watchHealth(t, oplog.Addr)
	rssBefore := oplog.PeakRSS()
	ackedBefore := f.ledger.ackCount()
	f.openWindow()
	stopping := time.Now()
	e.StopPG()
	down := time.Now()
	time.Sleep(60 * time.Second)
	ackedDuring := f.ledger.ackCount() - ackedBefore
	spoolEntries, spoolBytes, spoolOldest := f.spoolTotals()
	var droppedDuring int64
	for _, p := range f.producers {
		st := p.client.Stats()
		droppedDuring += st.Dropped + st.SpoolDropped
	}
	// Memory while down is the SDK's alone: nothing is acknowledged, so
	// the ledger does not grow. While catching up the ledger records
	// every replayed row, so that stretch's heap is reported, not bounded.
	wDown := f.closeWindow()
	f.openWindow()
	starting := time.Now()
	e.StartPG()
	up := time.Now()
	waitFor(t, time.Minute, "OpLogService's health to answer SERVING after Postgres came back", func() bool {
		_, s := health.times()
		return !s.IsZero()
	})
	notServing, serving := health.times()
	// No acknowledgement is possible before Postgres starts: the first
	// one after that is the first after the outage.
	ack := f.waitAckAfter(starting, time.Minute, "after Postgres came back")
	firstAck := starting.Add(ack)
	drained := f.waitSpoolsDrained(up, 2*time.Minute)
	wUp := f.closeWindow()
	time.Sleep(3 * time.Second)

	r := finish(t, e, f, verifyOptions{expectNoLoss: true}, oplog)
	if notServing.IsZero() || notServing.Before(stopping) || notServing.After(starting) {
		r.problem("OpLogService's health never said NOT_SERVING while Postgres was down: the recovery time below measures nothing")
	}
	// The promise is each client's: every producer's first
	// acknowledgement, not only the fleet's first, must come in time.
	firstBy := f.ledger.firstAckAfterBy(starting)
	var slowest time.Time
	for _, p := range f.producers {
		at, ok := firstBy[p.idx]
		if !ok {
			r.problem("producer %d: no acknowledgement after Postgres came back", p.idx)
			continue
		}
		if gap := at.Sub(serving); gap > servingToFirstAck {
			r.problem("producer %d: its first acknowledgement came %s after OpLogService's health answered SERVING again, above the bound of %s",
				p.idx, gap.Round(time.Millisecond), servingToFirstAck)
		}
		if at.After(slowest) {
			slowest = at
		}
	}
	if r.Spooled == 0 || spoolEntries == 0 {
		r.problem("nothing was spooled during a 60 s outage: the scenario tested nothing")
	}
	if r.SpoolReplayed != r.Spooled {
		r.problem("%d entries written to the spool, %d replayed and acknowledged", r.Spooled, r.SpoolReplayed)
	}
	bound := int64(cfg.effectiveBufferSize() + sdkFlushers*cfg.effectiveFlushSize())
	if peak := max(wDown.inBuffer, wUp.inBuffer); peak > bound {
		r.problem("while the database was down or the spools replayed an SDK client held %d entries, above its bound of %d", peak, bound)
	}
	if growth := int64(wDown.heap) - int64(wDown.heapBefore); growth > sdkHeapGrowthBound {
		r.problem("while the database was down the test process's heap grew by %s, above the bound of %s", mib(growth), mib(sdkHeapGrowthBound))
	}
	if spoolBytes > int64(cfg.producers)*cfg.spoolBytes {
		r.problem("the spools held %s, above their bound of %d × %s", mib(spoolBytes), cfg.producers, mib(cfg.spoolBytes))
	}
	r.figure("before the outage: %.0f rows per stream, %.1f streams/s (%d entries/s logged)",
		float64(rows)/float64(max(flushes, 1)), float64(flushes)/steady.Seconds(), cfg.producers*cfg.rate)
	r.figure("database down %s at %d entries/s; streams acknowledged meanwhile: %d; entries dropped meanwhile: %d",
		secs(up.Sub(down)), cfg.producers*cfg.rate, ackedDuring, droppedDuring)
	r.figure("spooled at the end of the outage: %d entries, %s on disk, the oldest waiting %s",
		spoolEntries, mib(spoolBytes), secs(spoolOldest))
	r.figure("Postgres back → OpLogService SERVING: %s (health polled every 50 ms; it said NOT_SERVING %s after the stop began)",
		signedMs(serving.Sub(up)), signedMs(notServing.Sub(stopping)))
	r.figure("SERVING → first acknowledgement: %s, every producer's first by %s (bound %s; negative: the SDK's own probe saw SERVING before the test's); Postgres back → first acknowledgement: %s",
		signedMs(firstAck.Sub(serving)), signedMs(slowest.Sub(serving)), servingToFirstAck, signedMs(firstAck.Sub(up)))
	r.figure("spools replayed %s after Postgres was back: %d entries in %d streams (%.0f rows per stream), %.0f entries/s",
		secs(drained), f.replayRows.Load(), f.replays.Load(),
		float64(f.replayRows.Load())/float64(max(f.replays.Load(), 1)), float64(f.replayRows.Load())/drained.Seconds())
	r.figure("memory while down: SDK peak %d entries per client (bound %d), heap %s → peak %s (growth bound %s)",
		wDown.inBuffer, bound, mib(int64(wDown.heapBefore)), mib(int64(wDown.heap)), mib(sdkHeapGrowthBound))
	r.figure("memory while catching up: SDK peak %d entries per client, heap peak %s (the ledger records every replayed row); OpLogService peak RSS %s before, %s after (bound %s)",
		wUp.inBuffer, mib(int64(wUp.heap)), mib(rssBefore), mib(oplog.PeakRSS()), mib(serverRSSBound))
	r.finish(t)
}

// signedMs is a duration in milliseconds with its sign ("+240ms").
func signedMs(d time.Duration) string { return fmt.Sprintf("%+dms", d.Milliseconds()) }

// TestWorkerKilledWithSpool: a worker process with a spool is killed with
// SIGKILL, and the next one on the same directory delivers what it left.
//
//  1. OpLogService is killed under the worker's load; the worker spools
//     for 5 s, then is killed itself. Every entry logged more than
//     lossWindowDown before that kill must be stored exactly once.
//     A worker started on the spool while the service is still down is
//     closed after a second: Close must say that the spool's entries stay
//     for the next start, and leave them there.
//  2. With the service back, a worker starts on the spool only to deliver
//     it, and is killed as soon as its first replayed batch is
//     acknowledged: the spool deletes a segment only once all of it is
//     acknowledged, so the next start resends rows already stored, which
//     the server must answer as duplicates, never store twice.
//  3. A worker logs new keys with the service up (and replays the rest),
//     and is killed after 12 s: everything logged more than lossWindowUp
//     before the kill must be stored exactly once.
//  4. A last worker delivers whatever is left and closes; the spool ends
//     empty.
func TestWorkerKilledWithSpool(t *testing.T) {
	const rate = 2000
	e := newEnv(t)
	oplog := e.Oplog()
	oplog.Start(t, 30*time.Second)
	dir := t.TempDir()
	r := &Report{Name: t.Name()}
	// Every start replays what is left from the start of its segments, and
	// a kill in the middle of a write leaves a torn record at the end of
	// one: each start may find at most one per kill before it.
	corruptBound := func(st oplogclient.Stats, kills int64, who string) {
		r.SpoolCorrupt += st.SpoolCorrupt
		if st.SpoolCorrupt > kills {
			r.problem("%s found %d damaged spool records, more than one torn write per kill before it (%d)", who, st.SpoolCorrupt, kills)
		}
	}
	noLoss := func(st oplogclient.Stats, who string) {
		r.Dropped += st.Dropped
		r.Failed += st.Failed
		r.SpoolDropped += st.SpoolDropped
		r.Acked += st.Acknowledged
		r.Duplicates += st.Duplicates
		r.Rejected += st.Rejected
		r.Retries += st.Retries
		r.Spooled += st.Spooled
		r.SpoolReplayed += st.SpoolReplayed
		if st.Dropped != 0 || st.Failed != 0 || st.SpoolDropped != 0 || st.Rejected != 0 {
			r.problem("%s: dropped %d, failed %d, dropped by the spool %d, rejected %d; none expected",
				who, st.Dropped, st.Failed, st.SpoolDropped, st.Rejected)
		}
	}

	// 1. The service dies under load; the worker spools, then dies too.
	w1 := startWorker(t, e, "worker-1", workerConfig{Addr: oplog.Addr, Dir: dir, Producer: 0, Rate: rate})
	w1.waitStats(30*time.Second, "worker 1's first acknowledgement", func(st oplogclient.Stats) bool { return st.Acknowledged > 0 })
	time.Sleep(3 * time.Second)
	oplog.Kill9()
	serviceDown := time.Now()
	w1.waitStats(30*time.Second, "worker 1 to spool two seconds' worth", func(st oplogclient.Stats) bool { return st.SpoolEntries >= 2*rate })
	time.Sleep(time.Until(serviceDown.Add(5 * time.Second)))
	k1 := w1.Kill9()
	st1 := w1.Stats()
	noLoss(st1, "worker 1")
	if st1.SpoolEntries == 0 {
		t.Fatalf("worker 1 spooled nothing with the service down: %+v", st1)
	}

	// 1b. A worker that starts with the service still down cannot deliver
	// the spool and is closed with a deadline: Close says what stays in
	// the spool, and it stays there.
	wb := startWorker(t, e, "worker-1b", workerConfig{Addr: oplog.Addr, Dir: dir, Drain: true, CloseTimeout: time.Second})
	closing := wb.waitFinal(time.Minute)
	noLoss(closing.Stats, "worker 1b")
	corruptBound(closing.Stats, 1, "worker 1b")
	switch ce := closing.CloseError; {
	case ce == nil:
		r.problem("worker 1b: Close with the service down returned %q, not a *CloseError", closing.Err)
	case ce.Failed != 0 || ce.Spooled != closing.Stats.SpoolEntries || ce.SpooledBytes != closing.Stats.SpoolBytes:
		r.problem("worker 1b: Close's error says %d failed, %d (%d bytes) spooled; its Stats say %d failed, %d (%d bytes) spooled",
			ce.Failed, ce.Spooled, ce.SpooledBytes, closing.Stats.Failed, closing.Stats.SpoolEntries, closing.Stats.SpoolBytes)
	case ce.Spooled < st1.SpoolEntries:
		// Whatever worker 1 wrote after its last report only adds.
		r.problem("worker 1b found %d entries in the spool, fewer than the %d worker 1 reported spooled before its kill", ce.Spooled, st1.SpoolEntries)
	case !strings.Contains(closing.Err, "stay in the spool"):
		r.problem("worker 1b: Close's error does not say the entries stay in the spool: %q", closing.Err)
	}
	if segs, _ := filepath.Glob(filepath.Join(dir, "*.seg")); len(segs) == 0 {
		r.problem("worker 1b's Close with the service down left no segment files: the spool is gone")
	}

	// 2. A worker delivers the spool and is killed mid-way.
	oplog.Start(t, 30*time.Second)
	w2 := startWorker(t, e, "worker-2", workerConfig{Addr: oplog.Addr, Dir: dir, Drain: true, CloseTimeout: time.Minute, Tick: time.Millisecond})
	var once sync.Once
	var st2 oplogclient.Stats
	killed := make(chan error, 1)
	w2.OnStats(func(st oplogclient.Stats) {
		if st.SpoolReplayed > 0 {
			once.Do(func() {
				st2 = st
				_, err := w2.signalKill()
				killed <- err
			})
		}
	})
	select {
	case err := <-killed:
		if err != nil {
			t.Fatalf("kill worker 2: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatalf("worker 2 acknowledged no replayed batch within a minute: %+v", w2.Stats())
	}
	<-w2.done
	noLoss(st2, "worker 2")
	corruptBound(st2, 1, "worker 2")
	if st2.SpoolEntries == 0 {
		r.problem("worker 2 replayed the whole spool before the kill landed: the resend after a kill during replay was not tested")
	}

	// 3. A worker logs with the service up, and is killed.
	w3 := startWorker(t, e, "worker-3", workerConfig{Addr: oplog.Addr, Dir: dir, Producer: 1, Rate: rate})
	w3started := time.Now()
	w3.waitStats(time.Minute, "worker 3 to replay what worker 2 left", func(st oplogclient.Stats) bool {
		return st.SpoolReplayed > 0 && st.SpoolEntries == 0
	})
	replayedBy3 := time.Since(w3started)
	// One client per spool directory: a second one must be refused, or
	// both would replay the same records.
	conn, err := grpc.NewClient(oplog.Addr, workerCreds(t))
	if err != nil {
		t.Fatal(err)
	}
	if c, err := oplogclient.New(conn, oplogclient.WithSpool(dir, 256<<20)); err == nil {
		r.problem("a second client opened the spool directory worker 3 is using")
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		_ = c.Close(ctx)
		cancel()
	}
	_ = conn.Close()
	time.Sleep(time.Until(w3started.Add(12 * time.Second)))
	k3 := w3.Kill9()
	st3 := w3.Stats()
	noLoss(st3, "worker 3")
	corruptBound(st3, 2, "worker 3")
	if st3.Duplicates == 0 {
		r.problem("worker 3 resent nothing that worker 2 had delivered before its kill: no duplicates")
	}

	// 4. The last worker delivers the rest and closes.
	w4 := startWorker(t, e, "worker-4", workerConfig{Addr: oplog.Addr, Dir: dir, Drain: true, CloseTimeout: 2 * time.Minute})
	fin := w4.waitFinal(3 * time.Minute)
	noLoss(fin.Stats, "worker 4")
	corruptBound(fin.Stats, 3, "worker 4")
	if fin.Err != "" {
		r.problem("worker 4: Close: %s", fin.Err)
	}
	if fin.Stats.SpoolEntries != 0 {
		r.problem("worker 4 closed with %d entries still in the spool", fin.Stats.SpoolEntries)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*.seg")); len(left) > 0 {
		r.problem("the spool is delivered but %d segment files are left in it", len(left))
	}
	for _, w := range []*Worker{w1, wb, w2, w3, w4} {
		if err := w.errors(); err != nil {
			r.problem("%s wrote unexpected lines: %v", w.name, err)
		}
	}

	// The database: what each kill may have lost, and nothing twice.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	stored, err := storedKeys(ctx, e, r)
	if err != nil {
		t.Fatalf("reading the log: %v", err)
	}
	lost1 := checkKilledWorker(r, stored, w1, 0, k1, lossWindowDown)
	lost3 := checkKilledWorker(r, stored, w3, 1, k3, lossWindowUp)
	// The summary's "enqueued" is what the two logging workers may have
	// logged; its "acked" sums the workers' last reports, replays and
	// duplicates included.
	r.Enqueued = int64(w1.mayHaveLogged() + w3.mayHaveLogged())
	// The check checks itself: a key lost, and one stored twice, among
	// those worker 1 logged long before its kill, are reported.
	probe := &Report{}
	k := key{0, 0}
	n := stored[k]
	stored[k] = 0
	checkKilledWorker(probe, stored, w1, 0, k1, lossWindowDown)
	stored[k] = 2
	checkKilledWorker(probe, stored, w1, 0, k1, lossWindowDown)
	stored[k] = n
	if len(probe.Problems) != 2 || probe.Missing != 1 {
		t.Errorf("the kill check misses a lost or a doubled key: %v", probe.Problems)
	}
	var strays []string
	for k := range stored {
		if k.p != 0 && k.p != 1 {
			strays = append(strays, k.String())
		}
	}
	if len(strays) > 0 {
		sort.Strings(strays)
		r.problem("stored keys no worker logged, e.g. %s", strings.Join(strays[:min(5, len(strays))], ", "))
	}
	for _, w := range []*Worker{w1, wb, w2, w3, w4} {
		inBuffer, heap := w.peaks()
		r.PeakInBuffer, r.PeakHeap = max(r.PeakInBuffer, inBuffer), max(r.PeakHeap, heap)
	}
	if bound := int64(10000 + sdkFlushers*500); r.PeakInBuffer > bound {
		r.problem("a worker held %d entries in memory, above the SDK's bound of %d", r.PeakInBuffer, bound)
	}
	r.PeakServerRSS = oplog.PeakRSS()
	if r.PeakServerRSS > serverRSSBound {
		r.problem("OpLogService peak RSS %s above the bound of %s", mib(r.PeakServerRSS), mib(serverRSSBound))
	}

	r.figure("worker 1: %d entries/s, 3s delivered, then OpLogService killed; spooled for %s: %d entries, %s at the kill (oldest %s)",
		rate, secs(k1.Sub(serviceDown)), st1.SpoolEntries, mib(st1.SpoolBytes), secs(st1.SpoolOldest))
	r.figure("kill -9 with the service down: %s", lost1)
	r.figure("a worker started with the service still down closed after 1s: %q", closing.Err)
	r.figure("kill -9 during the replay: %d entries replayed and acknowledged, %d still spooled; the next worker resent and had answered as duplicates %d",
		st2.SpoolReplayed, st2.SpoolEntries, st3.Duplicates)
	r.figure("worker 3 replayed the spool (%d entries) within %s of its start while logging %d entries/s with the service up",
		st3.SpoolReplayed, secs(replayedBy3), rate)
	r.figure("kill -9 with the service up: %s", lost3)
	r.figure("worker 4 replayed %d entries (%d duplicates) and closed %s after worker 3's kill; damaged spool records found by workers 1b, 2, 3, 4: %d, %d, %d, %d",
		fin.Stats.SpoolReplayed, fin.Stats.Duplicates, secs(fin.at.Sub(k3)), closing.Stats.SpoolCorrupt, st2.SpoolCorrupt, st3.SpoolCorrupt, fin.Stats.SpoolCorrupt)
	r.finish(t)
}

// storedKeys reads every stored row's producer key, with how many times
// it is stored, and counts ids and keys stored more than once into r.
func storedKeys(ctx context.Context, e *Env, r *Report) (map[key]int, error) {
	conn, err := e.conn(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM (SELECT id FROM oplog.operation_logs GROUP BY id HAVING count(*) > 1) d`).Scan(&r.DupByID); err != nil {
		return nil, err
	}
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM (SELECT resource_id FROM oplog.operation_logs GROUP BY resource_id HAVING count(*) > 1) d`).Scan(&r.DupByKey); err != nil {
		return nil, err
	}
	if r.DupByID != 0 {
		r.problem("%d ids stored more than once", r.DupByID)
	}
	if r.DupByKey != 0 {
		r.problem("%d producer keys stored more than once", r.DupByKey)
	}
	rows, err := conn.Query(ctx, `SELECT coalesce(resource_id, '') FROM oplog.operation_logs`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	stored := map[key]int{}
	var bad []string
	for rows.Next() {
		var res string
		if err := rows.Scan(&res); err != nil {
			return nil, err
		}
		r.Stored++
		k, ok := parseKey(res)
		if !ok {
			if len(bad) < 5 {
				bad = append(bad, fmt.Sprintf("%q", res))
			}
			continue
		}
		stored[k]++
	}
	if len(bad) > 0 {
		r.problem("stored rows without a producer key, e.g. %s", strings.Join(bad, ", "))
	}
	return stored, rows.Err()
}

// checkKilledWorker checks the keys of producer p, logged by w until it
// was killed at killed: each logged more than window before the kill must
// be stored exactly once, none may be stored that w never logged. It
// returns a sentence on what the kill cost.
func checkKilledWorker(r *Report, stored map[key]int, w *Worker, p int32, killed time.Time, window time.Duration) string {
	must := w.loggedBy(killed.Add(-window))
	may := w.mayHaveLogged()
	if must == 0 {
		r.problem("%s logged nothing more than %s before its kill: nothing to check", w.name, window)
	}
	var missing, twice []string
	var nMissing int
	for n := int32(0); n < must; n++ {
		switch c := stored[key{p, n}]; {
		case c == 0:
			nMissing++
			if len(missing) < 5 {
				missing = append(missing, fmt.Sprintf("%s (logged %s before the kill)", key{p, n}, secs(killed.Sub(w.loggedAt(n)))))
			}
		case c > 1:
			twice = append(twice, fmt.Sprintf("%s (%d times)", key{p, n}, c))
		}
	}
	r.Missing += int64(nMissing)
	if nMissing > 0 {
		r.problem("%s: %d keys logged more than %s before its kill are not stored, e.g. %s",
			w.name, nMissing, window, strings.Join(missing, ", "))
	}
	if len(twice) > 0 {
		r.problem("%s: %d keys stored more than once, e.g. %s", w.name, len(twice), strings.Join(twice[:min(5, len(twice))], ", "))
	}
	var lost int32
	oldest := int32(-1)
	for n := must; n < may; n++ {
		if stored[key{p, n}] == 0 {
			lost++
			if oldest < 0 {
				oldest = n
			}
		}
	}
	var unknown []string
	for k := range stored {
		if k.p == p && (k.n < 0 || k.n >= may) {
			unknown = append(unknown, k.String())
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		r.problem("%s: %d stored keys it never logged, e.g. %s", w.name, len(unknown), strings.Join(unknown[:min(5, len(unknown))], ", "))
	}
	s := fmt.Sprintf("%s logged %d keys; all %d logged more than %s before the kill are stored once; of the %d logged in the last %s, %d were lost",
		w.name, may, must, window, may-must, window, lost)
	if oldest >= 0 {
		if at := w.loggedAt(oldest); !at.IsZero() {
			s += fmt.Sprintf(", the oldest of them logged %s before the kill", signedMs(killed.Sub(at)))
		} else {
			s += " (logged after the worker's last report)"
		}
	}
	return s
}
