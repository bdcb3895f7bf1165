package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"time"
)

func runIngest(serverBin, baselineBin, profileBin string, clients int, duration time.Duration, streams int) error {
	ctx := context.Background()
	dsn, stopDB, err := database(ctx)
	if err != nil {
		return err
	}
	defer stopDB()

	fmt.Printf("oplogbench: %d clients, %s runs, on %d CPUs\n\n", clients, duration, cpus())

	// The baseline runs before and after the end-to-end run, on fresh
	// databases, and the figures are averaged: disk and neighbours on a
	// shared VM move it by tens of percent between minutes.
	copyBefore, err := copyRun(ctx, dsn, "bench_copy1", duration)
	if err != nil {
		return err
	}

	// This build secured (as deployed), plaintext, and secured with the
	// SDK's spool on, in the order secured, plaintext, spool, spool,
	// plaintext, secured: averaging the pairs cancels a drift of the
	// machine's speed over the runs.
	sec, plain := benchCredentials().secured, benchCredentials().plaintext
	type run struct {
		tr    transport
		spool bool
	}
	var runs [6]loadResult
	for i, r := range []run{{sec, false}, {plain, false}, {sec, true}, {sec, true}, {plain, false}, {sec, false}} {
		if runs[i], err = endToEnd(ctx, dsn, fmt.Sprintf("bench_e2e_%d", i), serverBin, serverBin, r.tr, clients, duration, r.spool); err != nil {
			return err
		}
	}
	res, resPlain, resSpool := meanResult(runs[0], runs[5]), meanResult(runs[1], runs[4]), meanResult(runs[2], runs[3])
	// The baseline build twice: on its own schema, and on this build's
	// (same indexes, but no roll-ups written): the difference between the
	// latter and this build is what maintaining the roll-ups costs. It runs
	// plaintext, so that builds from before TLS and authentication can be
	// compared, and is compared with this build's plaintext runs.
	var base, baseHere loadResult
	if baselineBin != "" {
		if base, err = endToEnd(ctx, dsn, "bench_e2e_baseline", baselineBin, baselineBin, plain, clients, duration, false); err != nil {
			return err
		}
		if baseHere, err = endToEnd(ctx, dsn, "bench_e2e_baseline_here", baselineBin, "", plain, clients, duration, false); err != nil {
			return err
		}
	}
	copyAfter, err := copyRun(ctx, dsn, "bench_copy2", duration)
	if err != nil {
		return err
	}
	copyRate := (copyBefore + copyAfter) / 2
	fmt.Printf("raw pgx COPY                 %9.0f rows/s   (before %.0f, after %.0f; 2 writers, batches of 5000)\n", copyRate, copyBefore, copyAfter)
	res.print("SDK → server → Postgres", sec.name, copyRate)
	resPlain.print("same, plaintext", plain.name, copyRate)
	fmt.Printf("                             secured: %.0f%% of the plaintext rate; unary p99 %.2f ms against %.2f ms\n",
		100*res.rate/resPlain.rate, res.unaryP99, resPlain.unaryP99)
	resSpool.print("same, SDK spool on", sec.name, copyRate)
	fmt.Printf("                             spool on: %.0f%% of the rate with it off; %d entries went through the spool\n",
		100*resSpool.rate/res.rate, resSpool.spooled)
	if baselineBin != "" {
		base.print("baseline build, its schema", plain.name, copyRate)
		baseHere.print("baseline build, this schema", plain.name, copyRate)
		fmt.Printf("                             this build (plaintext): %.0f%% of the baseline's rate; on this schema the\n"+
			"                             baseline reaches %.0f%%, so what this build adds to the write path costs %.0f%% of it\n",
			100*resPlain.rate/base.rate, 100*baseHere.rate/base.rate, 100*(baseHere.rate-resPlain.rate)/baseHere.rate)
	}

	if profileBin != "" {
		if err := outboxRun(ctx, dsn, serverBin, profileBin, clients, duration, copyRate, res.rate); err != nil {
			return err
		}
	}

	streamsDSN, err := freshDatabase(ctx, dsn, "bench_streams", serverBin)
	if err != nil {
		return err
	}
	srv, err := startServer(serverBin, streamsDSN, sec)
	if err != nil {
		return err
	}
	rows, sErr := concurrentStreams(srv.addr, sec.worker, streams, duration/2)
	rss := srv.peakRSS()
	srv.stop()
	if sErr != nil {
		return fmt.Errorf("concurrent streams: %w", sErr)
	}
	fmt.Printf("%d concurrent streams       %9.0f rows/s, server peak RSS %d MiB\n", streams, rows, rss>>20)
	return nil
}

// endToEnd runs the SDK load against a fresh server process of bin, run
// and reached as tr says, on a fresh database migrated by migrateBin (""
// for this build's migrations); then the unary latency on what it stored.
func endToEnd(ctx context.Context, adminDSN, name, bin, migrateBin string, tr transport, clients int, d time.Duration, spool bool) (loadResult, error) {
	dsn, err := freshDatabase(ctx, adminDSN, name, migrateBin)
	if err != nil {
		return loadResult{}, err
	}
	srv, err := startServer(bin, dsn, tr)
	if err != nil {
		return loadResult{}, err
	}
	defer srv.stop()
	res, err := sdkLoad(srv.addr, tr.worker, clients, d, spool)
	if err != nil {
		return res, fmt.Errorf("sdk load: %w", err)
	}
	if res.stored, err = countRows(ctx, dsn, "oplog.operation_logs"); err != nil {
		return res, err
	}
	res.rss = srv.peakRSS()
	if res.unaryP50, res.unaryP99, err = unaryLatency(ctx, srv.addr, tr.operator); err != nil {
		return res, fmt.Errorf("unary calls: %w", err)
	}
	return res, nil
}

func (r loadResult) print(label, transport string, copyRate float64) {
	fmt.Printf("%-28s %9.0f events/s (%.0f%% of raw COPY), ack p50 %.1f ms, p99 %.1f ms, server peak RSS %d MiB\n",
		label, r.rate, 100*r.rate/copyRate, r.p50, r.p99, r.rss>>20)
	fmt.Printf("                             %s; %d acknowledged = %d stored; %d dropped, %d failed, %d retries\n",
		transport, r.acked, r.stored, r.dropped, r.failed, r.retries)
	if r.unaryP50 > 0 {
		fmt.Printf("                             unary ListOperationLogs (one user, 20 rows) p50 %.2f ms, p99 %.2f ms\n", r.unaryP50, r.unaryP99)
	}
}

// meanResult is the mean of two runs of the same set-up: rates and
// latencies averaged, counts added, the higher peak RSS.
func meanResult(a, b loadResult) loadResult {
	avg := func(x, y float64) float64 { return (x + y) / 2 }
	return loadResult{
		rate: avg(a.rate, b.rate), p50: avg(a.p50, b.p50), p99: avg(a.p99, b.p99),
		unaryP50: avg(a.unaryP50, b.unaryP50), unaryP99: avg(a.unaryP99, b.unaryP99),
		acked: a.acked + b.acked, dropped: a.dropped + b.dropped, failed: a.failed + b.failed,
		retries: a.retries + b.retries, stored: a.stored + b.stored, rss: max(a.rss, b.rss),
		spooled: a.spooled + b.spooled, replayed: a.replayed + b.replayed,
	}
}

// outboxRun is the end-to-end load with PROFILE_ADDR set, so the login
// rows' outcomes go into the outbox in the rows' transactions. The address
// has no ProfileService during the load: the outbox only grows, and the
// rate shows what writing it costs. Then ProfileService starts and the
// relay drains the backlog into it: the relay's delivery rate.
func outboxRun(ctx context.Context, adminDSN, serverBin, profileBin string, clients int, d time.Duration, copyRate, withoutRate float64) error {
	dsn, err := freshDatabase(ctx, adminDSN, "bench_e2e_outbox", serverBin)
	if err != nil {
		return err
	}
	profileAddr, err := freeAddr()
	if err != nil {
		return err
	}
	sec := benchCredentials().secured
	srv, err := startServer(serverBin, dsn, sec, append(benchCredentials().relayEnv, "PROFILE_ADDR="+profileAddr, "LOG_LEVEL=error")...) // the relay warns of every failed delivery
	if err != nil {
		return err
	}
	defer srv.stop()
	res, err := sdkLoad(srv.addr, sec.worker, clients, d, false)
	if err != nil {
		return fmt.Errorf("sdk load: %w", err)
	}
	if res.stored, err = countRows(ctx, dsn, "oplog.operation_logs"); err != nil {
		return err
	}
	res.rss = srv.peakRSS()
	res.print("same, login outbox on", sec.name, copyRate)
	backlog, err := countRows(ctx, dsn, "oplog.login_outbox")
	if err != nil {
		return err
	}
	fmt.Printf("                             %.0f%% of the rate without the outbox; %d login outcomes queued (%.0f%% of the rows)\n",
		100*res.rate/withoutRate, backlog, 100*float64(backlog)/float64(res.stored))

	cmd := exec.Command(profileBin, "migrate")
	cmd.Env = append(os.Environ(), "DATABASE_URL="+dsn, "LOG_LEVEL=warn")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s migrate: %w\n%s", profileBin, err, out)
	}
	start := time.Now()
	prof, err := startServerOn(profileAddr, profileBin, dsn, sec)
	if err != nil {
		return err
	}
	defer prof.stop()
	for {
		left, err := countRows(ctx, dsn, "oplog.login_outbox")
		if err != nil {
			return err
		}
		if left == 0 {
			break
		}
		if time.Since(start) > 10*time.Minute {
			return fmt.Errorf("the relay left %d of %d outcomes after 10 minutes", left, backlog)
		}
		time.Sleep(100 * time.Millisecond)
	}
	elapsed := time.Since(start)
	fmt.Printf("login relay                  %9.0f outcomes/s delivered into ProfileService (%d in %.1fs, incl. its start-up)\n",
		float64(backlog)/elapsed.Seconds(), backlog, elapsed.Seconds())
	return nil
}
