//go:build faults

package faults

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Report is what one scenario measured and found.
type Report struct {
	Name string

	// SDK counters, summed over the producers (after Close).
	Enqueued, Acked, Duplicates, Rejected, Dropped, Failed, Retries int64
	// The spool's counters (producers with WithSpool), summed likewise;
	// SpoolLeft is what was still in the spools after Close.
	Spooled, SpoolReplayed, SpoolDropped, SpoolCorrupt, SpoolLeft int64
	// Raw (non-SDK) streams: rows sent and acknowledged.
	RawRows, RawAcked int64

	// From the database and the wire.
	Stored        int64 // rows in oplog.operation_logs
	Missing       int64 // acknowledged entries not stored (under the id they were sent with)
	DupByID       int64 // ids stored more than once
	DupByKey      int64 // producer keys stored more than once
	StoredUnacked int64 // stored, never acknowledged (sent, then given up: allowed, counted as failed)
	NeverSent     int64 // enqueued, never seen on the wire (dropped by the buffer, or left at Close)

	// Logins (scenarios with the relay): stored login rows, accounts, and
	// accounts whose profile does not count them exactly once.
	Logins, Accounts, WrongAccounts int64

	PeakServerRSS int64 // bytes, OpLogService, all incarnations
	PeakInBuffer  int64 // one producer's Stats().InBuffer
	PeakHeap      uint64

	// Figures are the scenario's own measurements, in order.
	Figures []string
	// Problems are broken promises; each fails the test.
	Problems []string
}

func (r *Report) problem(format string, args ...any) {
	r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
}

func (r *Report) figure(format string, args ...any) {
	r.Figures = append(r.Figures, fmt.Sprintf(format, args...))
}

// verifyOptions select the checks beyond the log's.
type verifyOptions struct {
	logins bool // outbox drained, each stored login counted once in its profile
	// expectNoLoss: every entry must be acknowledged (no drops, no
	// failures, nothing lost to or left in a spool), for scenarios whose
	// faults the buffer or the spool outlasts.
	expectNoLoss bool
	// reportMissing: acknowledged entries missing from the database are
	// counted (Report.Missing) and reported as a figure, not a problem —
	// for a failover with asynchronous replication, which may lose them.
	// Entries stored twice still fail.
	reportMissing bool
}

// verify checks the fleet's entries id by id against the database. The
// fleet must be closed.
func verify(ctx context.Context, e *Env, f *Fleet, opts verifyOptions) *Report {
	r := &Report{Name: e.t.Name()}
	r.PeakInBuffer, r.PeakHeap = f.peakInBuffer.Load(), f.peakHeap.Load()

	// 1. The SDK's counters reconcile, per producer.
	l := f.ledger
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, a := range l.anomalies {
		r.problem("on the wire: %s", a)
	}
	ackedBy := map[int32]int64{}
	rejectedBy := map[int32]int64{}
	sentBy := map[int32]int64{}
	for k := range l.acked {
		ackedBy[k.p]++
	}
	for k := range l.rejected {
		rejectedBy[k.p]++
	}
	for k := range l.sent {
		if _, ok := l.acked[k]; !ok {
			sentBy[k.p]++ // sent, not acknowledged
		}
	}
	for _, p := range f.producers {
		st, logged := p.stats, int64(p.logged.Load())
		r.Enqueued += st.Enqueued
		r.Acked += st.Acknowledged
		r.Duplicates += st.Duplicates
		r.Rejected += st.Rejected
		r.Dropped += st.Dropped
		r.Failed += st.Failed
		r.Retries += st.Retries
		r.Spooled += st.Spooled
		r.SpoolReplayed += st.SpoolReplayed
		r.SpoolDropped += st.SpoolDropped
		r.SpoolCorrupt += st.SpoolCorrupt
		r.SpoolLeft += st.SpoolEntries
		// Entries that are neither acknowledged, refused, dropped from
		// memory nor failed were lost to the spool (dropped when full, or
		// a failed write) or are still in it after Close. Without a spool
		// both are zero. Each fleet's spool starts empty, so everything
		// the spool replayed was enqueued by this producer and is counted
		// in Acknowledged like any other entry.
		spoolLost := st.SpoolDropped + st.SpoolEntries
		if st.Enqueued != logged {
			r.problem("producer %d: SDK enqueued %d, the producer logged %d", p.idx, st.Enqueued, logged)
		}
		if st.InBuffer != 0 {
			r.problem("producer %d: %d entries still in the SDK after Close", p.idx, st.InBuffer)
		}
		if sum := st.Acknowledged + st.Rejected + st.Dropped + st.Failed + spoolLost; sum != st.Enqueued {
			r.problem("producer %d: acknowledged %d + rejected %d + dropped %d + failed %d + lost to or left in the spool %d = %d, not the %d enqueued",
				p.idx, st.Acknowledged, st.Rejected, st.Dropped, st.Failed, spoolLost, sum, st.Enqueued)
		}
		if st.SpoolReplayed > st.Spooled {
			r.problem("producer %d: %d entries replayed from the spool, more than the %d written to it", p.idx, st.SpoolReplayed, st.Spooled)
		}
		// Nothing here crashes mid-write, so no record can be damaged.
		if st.SpoolCorrupt != 0 {
			r.problem("producer %d: %d damaged spool records or segment tails", p.idx, st.SpoolCorrupt)
		}
		if p.spool != "" && st.SpoolEntries == 0 {
			// A drained spool keeps no segment files: leftovers would be
			// replayed again by the next client on the directory.
			if left, _ := filepath.Glob(filepath.Join(p.spool, "*.seg")); len(left) > 0 {
				r.problem("producer %d: the spool is empty but %d segment files are left in it", p.idx, len(left))
			}
		}
		// Id by id: what the wire saw acknowledged is what the SDK counted.
		if ackedBy[p.idx] != st.Acknowledged {
			r.problem("producer %d: %d entries acknowledged on the wire, the SDK counted %d", p.idx, ackedBy[p.idx], st.Acknowledged)
		}
		if rejectedBy[p.idx] != st.Rejected {
			r.problem("producer %d: %d entries refused on the wire, the SDK counted %d", p.idx, rejectedBy[p.idx], st.Rejected)
		}
		// The rest, by the set difference: never acknowledged entries are
		// exactly the dropped, failed and spool-lost ones; a dropped entry
		// was never sent, a failed one may have been, and so may one the
		// spool lost (its first attempt failed before it was spooled).
		unacked := logged - ackedBy[p.idx] - rejectedBy[p.idx]
		if unacked != st.Dropped+st.Failed+spoolLost {
			r.problem("producer %d: %d entries never acknowledged, the SDK counted %d dropped + %d failed + %d lost to or left in the spool",
				p.idx, unacked, st.Dropped, st.Failed, spoolLost)
		}
		neverSent := unacked - sentBy[p.idx]
		r.NeverSent += neverSent
		if neverSent < st.Dropped || neverSent > st.Dropped+st.Failed+spoolLost {
			r.problem("producer %d: %d entries never sent, not between dropped %d and dropped + failed + spool-lost %d",
				p.idx, neverSent, st.Dropped, st.Dropped+st.Failed+spoolLost)
		}
		if opts.expectNoLoss && (st.Dropped != 0 || st.Failed != 0 || spoolLost != 0) {
			r.problem("producer %d: %d dropped, %d failed, %d dropped by the spool and %d left in it; this fault should cost no entry",
				p.idx, st.Dropped, st.Failed, st.SpoolDropped, st.SpoolEntries)
		}
	}
	if n := f.rejectedCallbacks.Load(); n != r.Rejected {
		r.problem("OnRejected called %d times for %d rejected entries", n, r.Rejected)
	}
	if r.Rejected != 0 {
		r.problem("%d entries rejected: the producers log only valid entries", r.Rejected)
	}
	if l.duplicates != r.Duplicates {
		r.problem("answers on the wire counted %d duplicates, the SDK %d", l.duplicates, r.Duplicates)
	}
	// Raw producers: every row acknowledged.
	f.rawMu.Lock()
	raw := make(map[int32]int32, len(f.raw))
	for p, n := range f.raw {
		raw[p] = n
		r.RawRows += int64(n)
	}
	f.rawMu.Unlock()
	for k := range l.acked {
		if _, ok := raw[k.p]; ok {
			r.RawAcked++
		}
	}
	if r.RawAcked != r.RawRows {
		r.problem("raw streams: %d of %d rows acknowledged", r.RawAcked, r.RawRows)
	}

	// 2. The database: nothing acknowledged missing, nothing twice.
	enqueued := func(k key) bool {
		if n, ok := raw[k.p]; ok {
			return k.n >= 0 && k.n < n
		}
		return k.p >= 0 && int(k.p) < len(f.producers) && k.n >= 0 && k.n < f.producers[k.p].logged.Load()
	}
	if err := checkStored(ctx, e, l, r, enqueued, opts.reportMissing); err != nil {
		r.problem("reading the log: %v", err)
	}
	if opts.logins {
		if err := checkLogins(ctx, e, r); err != nil {
			r.problem("reading the profiles: %v", err)
		}
	}
	return r
}

// checkStored compares the stored rows with the ledger. Called with l.mu
// held.
func checkStored(ctx context.Context, e *Env, l *Ledger, r *Report, enqueued func(key) bool, reportMissing bool) error {
	conn, err := e.conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	// Uniqueness, in SQL: by id alone (the primary key is (id,
	// create_time)), and by the producer's own key.
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM (SELECT id FROM oplog.operation_logs GROUP BY id HAVING count(*) > 1) d`).Scan(&r.DupByID); err != nil {
		return err
	}
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM (SELECT resource_id FROM oplog.operation_logs GROUP BY resource_id HAVING count(*) > 1) d`).Scan(&r.DupByKey); err != nil {
		return err
	}
	if r.DupByID != 0 {
		r.problem("%d ids stored more than once", r.DupByID)
	}
	if r.DupByKey != 0 {
		r.problem("%d producer keys stored more than once", r.DupByKey)
	}

	rows, err := conn.Query(ctx, `SELECT id, coalesce(resource_id, '') FROM oplog.operation_logs`)
	if err != nil {
		return err
	}
	stored := map[key]uuid16{}
	var bad []string
	for rows.Next() {
		var id uuid16
		var res string
		if err := rows.Scan(&id, &res); err != nil {
			rows.Close()
			return err
		}
		r.Stored++
		k, ok := parseKey(res)
		if !ok || !enqueued(k) {
			if len(bad) < 5 {
				bad = append(bad, fmt.Sprintf("%s (resource_id %q)", formatUUID(id), res))
			}
			continue
		}
		stored[k] = id
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	if len(bad) > 0 {
		r.problem("stored rows no producer enqueued, e.g. %s", strings.Join(bad, ", "))
	}
	var missing []string
	for k, id := range l.acked {
		got, ok := stored[k]
		if ok && got == id {
			continue
		}
		r.Missing++
		if len(missing) < 5 {
			if ok {
				missing = append(missing, fmt.Sprintf("%s acknowledged as %s, stored as %s", k, formatUUID(id), formatUUID(got)))
			} else {
				missing = append(missing, fmt.Sprintf("%s (id %s)", k, formatUUID(id)))
			}
		}
	}
	if r.Missing > 0 && reportMissing {
		r.figure("LOST: %d acknowledged entries missing from oplog.operation_logs, e.g. %s", r.Missing, strings.Join(missing, "; "))
	} else if r.Missing > 0 {
		r.problem("%d acknowledged entries missing from oplog.operation_logs, e.g. %s", r.Missing, strings.Join(missing, "; "))
	}
	var neverSent []string
	for k, id := range stored {
		if _, ok := l.acked[k]; ok {
			continue
		}
		r.StoredUnacked++
		if sent, ok := l.sent[k]; !ok || sent != id {
			if len(neverSent) < 5 {
				neverSent = append(neverSent, k.String())
			}
		}
	}
	if len(neverSent) > 0 {
		r.problem("stored entries that were never sent under that id, e.g. %s", strings.Join(neverSent, ", "))
	}
	// A stored, unacknowledged entry was sent and then given up on: the
	// SDK must have counted it failed, or its spool lost it after a first
	// attempt that the server committed but never answered in time.
	if lost := r.Failed + r.SpoolDropped + r.SpoolLeft; r.StoredUnacked > lost {
		r.problem("%d entries stored without acknowledgement, more than the %d the SDK counted failed or lost to its spool", r.StoredUnacked, lost)
	}
	return nil
}

// checkLogins checks that the outbox is empty and that each account's
// profile counts exactly its stored login rows.
func checkLogins(ctx context.Context, e *Env, r *Report) error {
	conn, err := e.conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var backlog int64
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM oplog.login_outbox`).Scan(&backlog); err != nil {
		return err
	}
	if backlog != 0 {
		r.problem("%d login outcomes still in oplog.login_outbox", backlog)
	}
	rows, err := conn.Query(ctx, `
		WITH logs AS (
			SELECT user_id, platform_account_id, count(*) AS total, count(*) FILTER (WHERE outcome = 1) AS success
			FROM oplog.operation_logs
			WHERE operation_type IN (1, 2) AND platform_account_id IS NOT NULL
			GROUP BY user_id, platform_account_id)
		SELECT user_id::text, platform_account_id,
			coalesce(l.total, 0), coalesce(l.success, 0),
			coalesce(p.total_login_count, 0), coalesce(p.success_login_count, 0), coalesce(p.failed_login_count, 0)
		FROM logs l FULL JOIN profile.profiles p USING (user_id, platform_account_id)
		ORDER BY 1, 2`)
	if err != nil {
		return err
	}
	var wrong []string
	for rows.Next() {
		var user, account string
		var total, success, pTotal, pSuccess, pFailed int64
		if err := rows.Scan(&user, &account, &total, &success, &pTotal, &pSuccess, &pFailed); err != nil {
			rows.Close()
			return err
		}
		r.Accounts++
		r.Logins += total
		if pTotal != total || pSuccess != success || pFailed != total-success {
			r.WrongAccounts++
			if len(wrong) < 5 {
				wrong = append(wrong, fmt.Sprintf("%s/%s: %d stored logins (%d successful), profile counts %d (%d successful, %d failed)",
					user[len(user)-4:], account, total, success, pTotal, pSuccess, pFailed))
			}
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	if r.WrongAccounts > 0 {
		r.problem("%d of %d accounts' profiles do not count their stored logins exactly once: %s", r.WrongAccounts, r.Accounts, strings.Join(wrong, "; "))
	}
	if r.Logins == 0 {
		r.problem("no login rows stored: the scenario did not exercise the relay")
	}
	// Id by id: every stored login applied once, nothing applied that is
	// not stored.
	var unapplied, unknown int64
	if err := conn.QueryRow(ctx, `
		SELECT count(*) FROM oplog.operation_logs l
		WHERE l.operation_type IN (1, 2) AND l.platform_account_id IS NOT NULL
		  AND NOT EXISTS (SELECT 1 FROM profile.login_events e WHERE e.event_id = l.id)`).Scan(&unapplied); err != nil {
		return err
	}
	if err := conn.QueryRow(ctx, `
		SELECT count(*) FROM profile.login_events e
		WHERE NOT EXISTS (SELECT 1 FROM oplog.operation_logs l WHERE l.id = e.event_id)`).Scan(&unknown); err != nil {
		return err
	}
	if unapplied != 0 {
		r.problem("%d stored logins have no event in profile.login_events", unapplied)
	}
	if unknown != 0 {
		r.problem("%d events in profile.login_events have no stored log row", unknown)
	}
	return nil
}

// summary collects every scenario's report for the table TestMain prints.
var summary struct {
	sync.Mutex
	reports []*Report
}

// finish logs the report, fails the test for each problem and keeps the
// report for the summary.
func (r *Report) finish(t *testing.T) {
	t.Helper()
	t.Logf("entries: enqueued %d, acknowledged %d (of which duplicates %d), rejected %d, dropped %d, failed %d; retries %d",
		r.Enqueued, r.Acked, r.Duplicates, r.Rejected, r.Dropped, r.Failed, r.Retries)
	if r.Spooled > 0 || r.SpoolDropped > 0 || r.SpoolCorrupt > 0 {
		t.Logf("spool: %d entries written, %d replayed and acknowledged, %d dropped, %d damaged records, %d left after Close",
			r.Spooled, r.SpoolReplayed, r.SpoolDropped, r.SpoolCorrupt, r.SpoolLeft)
	}
	if r.RawRows > 0 {
		t.Logf("raw streams: %d rows sent, %d acknowledged", r.RawRows, r.RawAcked)
	}
	t.Logf("stored %d rows; missing %d, duplicates by id %d, by producer key %d; stored but unacknowledged %d; never sent %d",
		r.Stored, r.Missing, r.DupByID, r.DupByKey, r.StoredUnacked, r.NeverSent)
	if r.Accounts > 0 {
		t.Logf("logins: %d stored login rows over %d accounts; accounts whose profile does not count them exactly once: %d", r.Logins, r.Accounts, r.WrongAccounts)
	}
	t.Logf("memory: OpLogService peak RSS %s, SDK peak buffer %d entries (one producer), test process peak heap %s",
		mib(r.PeakServerRSS), r.PeakInBuffer, mib(int64(r.PeakHeap)))
	for _, f := range r.Figures {
		t.Log(f)
	}
	for _, p := range r.Problems {
		t.Errorf("BROKEN: %s", p)
	}
	summary.Lock()
	summary.reports = append(summary.reports, r)
	summary.Unlock()
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

// printSummary prints one line per scenario.
func printSummary(total time.Duration) {
	summary.Lock()
	defer summary.Unlock()
	if len(summary.reports) == 0 {
		return
	}
	fmt.Printf("\nfault suite summary (%s in all)\n", total.Round(time.Second))
	fmt.Printf("%-40s %9s %9s %6s %8s %6s %7s %6s %9s %8s\n", "scenario", "enqueued", "acked", "dups", "dropped", "failed", "missing", "twice", "peak RSS", "result")
	for _, r := range summary.reports {
		result := "ok"
		if len(r.Problems) > 0 {
			result = "BROKEN"
		}
		fmt.Printf("%-40s %9d %9d %6d %8d %6d %7d %6d %9s %8s\n", r.Name, r.Enqueued+r.RawRows, r.Acked+r.RawAcked, r.Duplicates,
			r.Dropped+r.SpoolDropped, r.Failed, r.Missing, r.DupByID+r.DupByKey, mib(r.PeakServerRSS), result)
	}
}
