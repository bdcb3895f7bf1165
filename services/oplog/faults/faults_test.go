//go:build faults

package faults

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
)

// The stated memory bounds. OpLogService holds at most 64 MiB of accepted
// rows waiting for their commit (-ingest-buffer-mib) plus 32 messages of
// at most 1 MiB being decoded (-ingest-receive-slots); 256 MiB leaves room
// for the Go runtime and the pool. An SDK client holds at most its buffer
// (10,000 entries) plus the flushes in flight (2 × 500).
const (
	serverRSSBound = 256 << 20
	// sdkHeapGrowthBound bounds how much the test process's Go heap (four
	// SDK clients, and the ledger, which does not grow while nothing is
	// acknowledged) may grow while the database is down.
	sdkHeapGrowthBound = 64 << 20
)

func TestMain(m *testing.M) {
	// The test binary run again as a worker (worker.go).
	if spec := os.Getenv(spoolWorkerEnv); spec != "" {
		os.Exit(spoolWorkerMain(spec))
	}
	start := time.Now()
	code := m.Run()
	printSummary(time.Since(start))
	os.Exit(code)
}

// finish closes the fleet with everything healthy, waits for the outbox
// to drain when logins are checked, and verifies; oplogs are the
// OpLogService processes (replicas) whose memory is bounded.
func finish(t *testing.T, e *Env, f *Fleet, opts verifyOptions, oplogs ...*Proc) *Report {
	t.Helper()
	closeStart := time.Now()
	errs := f.Close(2 * time.Minute)
	closeTook := time.Since(closeStart)
	var drain time.Duration
	if opts.logins {
		drain = waitFor(t, 2*time.Minute, "oplog.login_outbox to empty after the producers stopped", func() bool {
			return e.mustCount(`SELECT count(*) FROM oplog.login_outbox`) == 0
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r := verify(ctx, e, f, opts)
	for _, err := range errs {
		r.problem("SDK Close: %v", err)
	}
	for _, p := range oplogs {
		r.PeakServerRSS = max(r.PeakServerRSS, p.PeakRSS())
	}
	if r.PeakServerRSS > serverRSSBound {
		r.problem("OpLogService peak RSS %s above the bound of %s", mib(r.PeakServerRSS), mib(serverRSSBound))
	}
	if bound := int64(f.cfg.effectiveBufferSize() + sdkFlushers*f.cfg.effectiveFlushSize()); r.PeakInBuffer > bound {
		r.problem("an SDK client held %d entries, above its bound of %d", r.PeakInBuffer, bound)
	}
	r.figure("SDK Close delivered the rest in %.1fs; failed Ingest attempts by code: %s", closeTook.Seconds(), f.ledger.errorSummary())
	if opts.logins {
		r.figure("outbox empty %.1fs after the producers stopped", drain.Seconds())
	}
	return r
}

func secs(d time.Duration) string { return fmt.Sprintf("%.1fs", d.Seconds()) }

// TestKill9OpLog: OpLogService is killed with SIGKILL three times under
// load and restarted each time; the producers keep logging through it.
func TestKill9OpLog(t *testing.T) {
	e := newEnv(t)
	oplog := e.Oplog()
	oplog.Start(t, 30*time.Second)
	f := newFleet(t, oplog.Addr, fleetConfig{producers: 4, rate: 500})
	f.Start()
	time.Sleep(3 * time.Second)

	var recoveries []string
	for i := 1; i <= 3; i++ {
		killed := time.Now()
		oplog.Kill9()
		time.Sleep(time.Second) // the producers keep logging into their buffers
		oplog.Start(t, 30*time.Second)
		ready := time.Now()
		ack := f.waitAckAfter(ready, time.Minute, fmt.Sprintf("after restart %d", i))
		caught := f.waitCaughtUp(ready, time.Minute)
		recoveries = append(recoveries, fmt.Sprintf("#%d: down %s, first ack %s after the restart, backlog drained after %s",
			i, secs(ready.Sub(killed)), secs(ack), secs(caught)))
		time.Sleep(2 * time.Second)
	}
	r := finish(t, e, f, verifyOptions{expectNoLoss: true}, oplog)
	for _, s := range recoveries {
		r.figure("kill -9 %s", s)
	}
	r.finish(t)
}

// TestPostgresRestart: Postgres restarts under load, once with a fast
// shutdown (pg_ctl restart -m fast) and once with an immediate one (-m
// immediate: crash recovery from the WAL on start). OpLogService stays up.
func TestPostgresRestart(t *testing.T) {
	e := newEnv(t)
	oplog := e.Oplog()
	oplog.Start(t, 30*time.Second)
	f := newFleet(t, oplog.Addr, fleetConfig{producers: 4, rate: 500})
	f.Start()
	time.Sleep(3 * time.Second)

	var recoveries []string
	for _, mode := range []string{"fast", "immediate"} {
		down := time.Now()
		if mode == "fast" {
			e.StopPG()
		} else {
			e.CrashPG()
		}
		time.Sleep(time.Second)
		e.StartPG()
		up := time.Now()
		ack := f.waitAckAfter(up, 2*time.Minute, "after Postgres came back ("+mode+")")
		caught := f.waitCaughtUp(up, 2*time.Minute)
		recoveries = append(recoveries, fmt.Sprintf("restart -m %s: down %s, first ack %s after it was back, backlog drained after %s",
			mode, secs(up.Sub(down)), secs(ack), secs(caught)))
		time.Sleep(3 * time.Second)
	}
	if !oplog.Running() {
		t.Errorf("OpLogService exited while Postgres restarted")
	}
	r := finish(t, e, f, verifyOptions{expectNoLoss: true}, oplog)
	for _, s := range recoveries {
		r.figure("postgres %s", s)
	}
	r.finish(t)
}

// TestSIGTERMOpLog: SIGTERM under load. Streams open when the signal
// arrives keep sending and are acknowledged in full (graceful shutdown);
// the process exits 0; new streams are refused until the restart, and the
// SDK resends them.
func TestSIGTERMOpLog(t *testing.T) {
	e := newEnv(t)
	oplog := e.Oplog()
	oplog.Start(t, 30*time.Second)
	f := newFleet(t, oplog.Addr, fleetConfig{producers: 4, rate: 500})
	f.Start()
	time.Sleep(3 * time.Second)

	// Four raw streams, each one message in before the signal and one
	// after it.
	const streams, rowsPerMessage = 4, 100
	client := oplogv1.NewOpLogServiceClient(f.dialRaw(oplog.Addr))
	type open struct {
		p      int32
		stream oplogv1.OpLogService_IngestClient
		cancel context.CancelFunc
	}
	var opened []open
	for i := 0; i < streams; i++ {
		p := int32(100 + i)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		stream, err := client.Ingest(ctx)
		if err != nil {
			t.Fatalf("open raw stream: %v", err)
		}
		if err := stream.Send(rawMessage(f, p, rowsPerMessage)); err != nil {
			t.Fatalf("raw stream, first message: %v", err)
		}
		opened = append(opened, open{p, stream, cancel})
	}
	time.Sleep(2 * time.Second) // the streams are open on the server (localhost: milliseconds)

	type exit struct {
		code int
		took time.Duration
		err  error
	}
	exited := make(chan exit, 1)
	go func() {
		code, took, err := oplog.Term(45 * time.Second)
		exited <- exit{code, took, err}
	}()
	time.Sleep(1500 * time.Millisecond) // shutting down, waiting for our streams
	if !oplog.Running() {
		t.Fatalf("OpLogService exited with streams still open")
	}
	var acked int64
	for _, o := range opened {
		if err := o.stream.Send(rawMessage(f, o.p, rowsPerMessage)); err != nil {
			t.Errorf("raw stream %d: second message after SIGTERM: %v", o.p, err)
			continue
		}
		resp, err := o.stream.CloseAndRecv()
		if err != nil {
			t.Errorf("raw stream %d: not acknowledged after SIGTERM: %v", o.p, err)
			continue
		}
		acked += resp.GetAccepted() + resp.GetDuplicates()
	}
	var x exit
	select {
	case x = <-exited:
	case <-time.After(time.Minute):
		t.Fatalf("OpLogService did not exit within a minute of SIGTERM")
	}
	if x.err != nil || x.code != 0 {
		t.Errorf("SIGTERM: exit code %d, %v; want 0", x.code, x.err)
	}
	oplog.Start(t, 30*time.Second)
	ready := time.Now()
	ack := f.waitAckAfter(ready, time.Minute, "after the restart")
	caught := f.waitCaughtUp(ready, time.Minute)
	time.Sleep(2 * time.Second)

	r := finish(t, e, f, verifyOptions{expectNoLoss: true}, oplog)
	r.figure("SIGTERM: %d streams open at the signal sent their second message after it and were acknowledged (%d of %d rows); exit code %d after %s",
		streams, acked, streams*2*rowsPerMessage, x.code, secs(x.took))
	r.figure("restart: first ack %s after it, backlog drained after %s", secs(ack), secs(caught))
	r.finish(t)
}

// rawMessage is one IngestRequest of n rows with fresh ids and keys of raw
// producer p.
func rawMessage(f *Fleet, p int32, n int32) *oplogv1.IngestRequest {
	first := f.rawKeys(p, n)
	req := &oplogv1.IngestRequest{}
	for i := int32(0); i < n; i++ {
		id := uuid.Must(uuid.NewV7())
		req.Logs = append(req.Logs, &oplogv1.OperationLog{
			Id:            id.String(),
			UserId:        "0193a0c2-0000-7000-8000-000000000999",
			OperationType: oplogv1.OperationType_OPERATION_TYPE_GET_REVIEWS,
			ResourceId:    key{p, first + i}.String(),
			Outcome:       commonv1.Outcome_OUTCOME_SUCCESS,
			CreateTime:    timestamppb.Now(),
		})
	}
	return req
}

// TestLostAcknowledgements: a proxy between the SDK and OpLogService
// forwards what the SDK sends but swallows the server's answers for 3 s
// (the server commits, the SDK never hears), then cuts every connection.
// The SDK resends; the ids make the resends duplicates, never second rows.
func TestLostAcknowledgements(t *testing.T) {
	e := newEnv(t)
	oplog := e.Oplog()
	oplog.Start(t, 30*time.Second)
	proxy := newProxy(t, oplog.Addr)
	f := newFleet(t, proxy.Addr(), fleetConfig{producers: 4, rate: 500, flushSize: 200})
	f.Start()
	time.Sleep(3 * time.Second)

	var rounds []string
	for i := 1; i <= 3; i++ {
		before := proxy.swallowed.Load()
		proxy.Swallow()
		time.Sleep(3 * time.Second)
		cut := proxy.CutAndRestore()
		restored := time.Now()
		ack := f.waitAckAfter(restored, time.Minute, "after the connections were cut")
		caught := f.waitCaughtUp(restored, time.Minute)
		rounds = append(rounds, fmt.Sprintf("#%d: %d bytes of answers swallowed, %d connections cut; first ack %s later, backlog drained after %s",
			i, proxy.swallowed.Load()-before, cut/2, secs(ack), secs(caught)))
		time.Sleep(2 * time.Second)
	}
	r := finish(t, e, f, verifyOptions{expectNoLoss: true}, oplog)
	for _, s := range rounds {
		r.figure("lost answers %s", s)
	}
	if r.Duplicates == 0 {
		r.problem("no resend was a duplicate: the swallowed answers were never for committed rows, so the scenario tested nothing")
	}
	r.figure("%d entries were stored, their answers lost, resent and recognised as duplicates", r.Duplicates)
	r.finish(t)
}

// TestDatabaseDown20s: Postgres stops for 20 s under a steady 6,000
// entries/s from four SDK clients without a spool. The SDK's bounded
// buffers overflow and drop (counted; TestDatabaseDown60sWithSpool is the
// same fault with a disk spool, which loses nothing), OpLogService refuses
// streams with UNAVAILABLE and acknowledges nothing, memory on both sides
// stays bounded, and everything recovers by itself.
func TestDatabaseDown20s(t *testing.T) {
	e := newEnv(t)
	oplog := e.Oplog()
	oplog.Start(t, 30*time.Second)
	cfg := fleetConfig{producers: 4, rate: 1500}
	f := newFleet(t, oplog.Addr, cfg)
	f.Start()
	time.Sleep(5 * time.Second)

	rssBefore := oplog.PeakRSS()
	ackedBefore := f.ledger.ackCount()
	f.openWindow()
	e.StopPG()
	down := time.Now()
	time.Sleep(20 * time.Second)
	ackedDuring := f.ledger.ackCount() - ackedBefore
	e.StartPG()
	up := time.Now()
	ack := f.waitAckAfter(up, 2*time.Minute, "after Postgres came back")
	caught := f.waitCaughtUp(up, 2*time.Minute)
	w := f.closeWindow()
	time.Sleep(3 * time.Second)

	r := finish(t, e, f, verifyOptions{}, oplog)
	if bound := int64(cfg.effectiveBufferSize() + sdkFlushers*cfg.effectiveFlushSize()); w.inBuffer > bound {
		r.problem("while the database was down an SDK client held %d entries, above its bound of %d", w.inBuffer, bound)
	}
	if growth := int64(w.heap) - int64(w.heapBefore); growth > sdkHeapGrowthBound {
		r.problem("while the database was down the test process's heap grew by %s, above the bound of %s", mib(growth), mib(sdkHeapGrowthBound))
	}
	r.figure("database down %s at %d entries/s; streams acknowledged meanwhile: %d; first ack %s after it was back, backlog drained after %s",
		secs(up.Sub(down)), cfg.producers*cfg.rate, ackedDuring, secs(ack), secs(caught))
	r.figure("memory while down and catching up: SDK peak %d entries per client (bound %d), heap %s → peak %s (growth bound %s); OpLogService peak RSS %s before, %s after (bound %s)",
		w.inBuffer, cfg.effectiveBufferSize()+sdkFlushers*cfg.effectiveFlushSize(), mib(int64(w.heapBefore)), mib(int64(w.heap)),
		mib(sdkHeapGrowthBound), mib(rssBefore), mib(oplog.PeakRSS()), mib(serverRSSBound))
	r.figure("dropped by the SDK's full buffers: %d of %d entries (%.1f%%), every one counted", r.Dropped, r.Enqueued, 100*float64(r.Dropped)/float64(max(r.Enqueued, 1)))
	r.finish(t)
}

// TestProfileKilledWhileOutboxFills: ProfileService is killed with
// SIGKILL while logins keep coming; the outbox holds them; once it is back
// the relay delivers the backlog, and every stored login is counted once.
func TestProfileKilledWhileOutboxFills(t *testing.T) {
	e := newEnv(t)
	profile := e.Profile()
	profile.Start(t, 30*time.Second)
	oplog := e.Oplog("PROFILE_ADDR=" + profile.Addr)
	oplog.Start(t, 30*time.Second)
	f := newFleet(t, oplog.Addr, fleetConfig{producers: 4, rate: 500, logins: 0.3})
	f.Start()
	time.Sleep(3 * time.Second)

	profile.Kill9()
	time.Sleep(8 * time.Second)
	var backlog, last int64
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := e.conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = conn.QueryRow(ctx, `SELECT count(*), coalesce(max(seq), 0) FROM oplog.login_outbox`).Scan(&backlog, &last)
	conn.Close(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if backlog == 0 {
		t.Fatalf("the outbox is empty with ProfileService dead for 8 s: logins were not queued")
	}
	profile.Start(t, 30*time.Second)
	drained := waitFor(t, 2*time.Minute, "the outbox backlog to be delivered after ProfileService's restart", func() bool {
		return e.mustCount(`SELECT count(*) FROM oplog.login_outbox WHERE seq <= $1`, last) == 0
	})
	time.Sleep(2 * time.Second)

	r := finish(t, e, f, verifyOptions{logins: true, expectNoLoss: true}, oplog)
	r.figure("ProfileService down 8s: %d login outcomes waiting in the outbox; delivered %s after its restart", backlog, secs(drained))
	r.finish(t)
}

// TestOpLogKilledBetweenDeliveryAndDelete: the relay drains a backlog
// into ProfileService through a proxy, and OpLogService is killed with
// SIGKILL the moment ProfileService's answer to a delivery arrives: the
// outcomes are applied in the profiles and still in the outbox. Three
// times; each restarted relay resends them and ProfileService recognises
// the event ids.
func TestOpLogKilledBetweenDeliveryAndDelete(t *testing.T) {
	e := newEnv(t)
	profile := e.Profile()
	proxy := newProxy(t, profile.Addr)
	oplog := e.Oplog("PROFILE_ADDR=" + proxy.Addr())
	oplog.Start(t, 30*time.Second)
	f := newFleet(t, oplog.Addr, fleetConfig{producers: 4, rate: 500, logins: 0.3})
	f.Start()
	time.Sleep(6 * time.Second) // a backlog builds: ProfileService is not running yet
	backlog := e.mustCount(`SELECT count(*) FROM oplog.login_outbox`)
	profile.Start(t, 30*time.Second)

	var kills []string
	var resentTotal int64
	for i := 1; i <= 3; i++ {
		killed := make(chan struct{})
		var once sync.Once
		proxy.OnAnswer(func(b []byte) bool {
			// HTTP/2 control frames are a few dozen bytes; an answer to a
			// delivery carries a profile per outcome.
			if len(b) < 512 {
				return true
			}
			once.Do(func() {
				proxy.OnAnswer(nil)
				oplog.Kill9()
				close(killed)
			})
			return false // the relay never hears the answer
		})
		select {
		case <-killed:
		case <-time.After(time.Minute):
			t.Fatalf("kill %d: the relay delivered nothing within a minute", i)
		}
		// Applied by ProfileService, still in the outbox: to be resent.
		resent := e.mustCount(`SELECT count(*) FROM oplog.login_outbox o
			WHERE EXISTS (SELECT 1 FROM profile.login_events e WHERE e.event_id = o.event_id)`)
		resentTotal += resent
		oplog.Start(t, 30*time.Second)
		kills = append(kills, fmt.Sprintf("#%d: %d outcomes applied by ProfileService and still in the outbox", i, resent))
		time.Sleep(time.Second)
	}
	var last int64
	last = e.mustCount(`SELECT coalesce(max(seq), 0) FROM oplog.login_outbox`)
	drained := waitFor(t, 2*time.Minute, "the outbox to be delivered after the last restart", func() bool {
		return e.mustCount(`SELECT count(*) FROM oplog.login_outbox WHERE seq <= $1`, last) == 0
	})
	time.Sleep(time.Second)

	r := finish(t, e, f, verifyOptions{logins: true, expectNoLoss: true}, oplog)
	r.figure("backlog of %d login outcomes before ProfileService started", backlog)
	for _, k := range kills {
		r.figure("kill -9 between delivery and delete %s", k)
	}
	r.figure("outbox delivered %s after the last restart", secs(drained))
	if resentTotal == 0 {
		r.problem("no kill landed between a delivery and its delete: the scenario tested nothing")
	}
	r.finish(t)
}

// TestVerifierCatchesBrokenPromises checks the checks: on a clean run the
// verifier finds nothing, and each kind of broken promise, made on
// purpose, is reported.
func TestVerifierCatchesBrokenPromises(t *testing.T) {
	e := newEnv(t)
	profile := e.Profile()
	profile.Start(t, 30*time.Second)
	oplog := e.Oplog("PROFILE_ADDR=" + profile.Addr)
	oplog.Start(t, 30*time.Second)
	f := newFleet(t, oplog.Addr, fleetConfig{producers: 2, rate: 300, logins: 0.5})
	f.Start()
	time.Sleep(2 * time.Second)
	clean := finish(t, e, f, verifyOptions{logins: true, expectNoLoss: true}, oplog)
	if len(clean.Problems) > 0 {
		t.Fatalf("the clean run is not clean: %v", clean.Problems)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	expect := func(what, want string, opts verifyOptions) {
		t.Helper()
		r := verify(ctx, e, f, opts)
		for _, p := range r.Problems {
			if strings.Contains(p, want) {
				t.Logf("%s: caught (%s)", what, p)
				return
			}
		}
		t.Errorf("%s: not caught; the verifier reported %v", what, r.Problems)
	}
	opts := verifyOptions{logins: true, expectNoLoss: true}

	// An acknowledged id the database does not have.
	l := f.ledger
	var k key
	var id uuid16
	for k, id = range l.acked {
		break
	}
	l.acked[k] = uuid16{0x01, 0x93}
	expect("an acknowledged id missing", "acknowledged entries missing", opts)
	l.acked[k] = id

	// The SDK's counters not adding up.
	f.producers[0].stats.Dropped++
	expect("counters off by one", "not the", opts)
	f.producers[0].stats.Dropped--

	// A spool that found damaged records, and one that lost an entry.
	f.producers[0].stats.SpoolCorrupt++
	expect("a damaged spool record", "damaged spool records", opts)
	f.producers[0].stats.SpoolCorrupt--
	f.producers[0].stats.SpoolDropped++
	expect("an entry dropped by the spool", "dropped by the spool", opts)
	f.producers[0].stats.SpoolDropped--

	// A row stored twice: once under a new id with the same producer key,
	// once under the same id at another time.
	twin := uuid.New()
	e.exec(ctx, database, `INSERT INTO oplog.operation_logs (id, create_time, user_id, operation_type, outcome, resource_id)
		SELECT $1, create_time, user_id, operation_type, outcome, resource_id
		FROM oplog.operation_logs WHERE operation_type >= 3 ORDER BY id LIMIT 1`, twin)
	expect("a producer key stored twice", "producer keys stored more than once", verifyOptions{})
	e.exec(ctx, database, `DELETE FROM oplog.operation_logs WHERE id = $1`, twin)
	e.exec(ctx, database, `INSERT INTO oplog.operation_logs (id, create_time, user_id, operation_type, outcome, resource_id)
		SELECT id, create_time + interval '1 second', user_id, operation_type, outcome, 'faults-p999-0'
		FROM oplog.operation_logs WHERE operation_type >= 3 ORDER BY id LIMIT 1`)
	expect("an id stored twice", "ids stored more than once", verifyOptions{})
	e.exec(ctx, database, `DELETE FROM oplog.operation_logs WHERE resource_id = 'faults-p999-0'`)

	// A profile that counts a login twice.
	e.exec(ctx, database, `UPDATE profile.profiles SET total_login_count = total_login_count + 1
		WHERE id = (SELECT id FROM profile.profiles ORDER BY id LIMIT 1)`)
	expect("a login counted twice", "do not count their stored logins exactly once", opts)
	e.exec(ctx, database, `UPDATE profile.profiles SET total_login_count = total_login_count - 1
		WHERE id = (SELECT id FROM profile.profiles ORDER BY id LIMIT 1)`)

	// An outbox that did not drain.
	e.exec(ctx, database, `INSERT INTO oplog.login_outbox (event_id, user_id, platform_account_id, success, auth_type, occurred_at)
		VALUES (gen_random_uuid(), gen_random_uuid(), 'x', true, 0, now())`)
	expect("an outbox not drained", "still in oplog.login_outbox", opts)
	e.exec(ctx, database, `DELETE FROM oplog.login_outbox`)

	// An acknowledged row lost (last: not undone).
	e.exec(ctx, database, `DELETE FROM oplog.operation_logs WHERE id = (
		SELECT id FROM oplog.operation_logs WHERE operation_type >= 3 ORDER BY id LIMIT 1)`)
	expect("an acknowledged row deleted", "acknowledged entries missing", opts)

	if r := verify(ctx, e, f, verifyOptions{}); len(r.Problems) != 1 {
		t.Errorf("after the last sabotage the verifier should report exactly the one missing row, got %v", r.Problems)
	}
}
