package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/platforma/platforma/services/oplog/oplogclient"
)

// runSteady is a worker fleet at a steady rate well below saturation:
// clients SDK clients logging rate entries/s in all, with the SDK's
// default options, for d. What it shows is how the SDK batches when it is
// not pushed: rows per Ingest stream, streams/s (each is a commit wait on
// the server), and how long entries take from Log to acknowledgement.
func runSteady(serverBin string, clients, rate int, d time.Duration) error {
	ctx := context.Background()
	adminDSN, stopDB, err := database(ctx)
	if err != nil {
		return err
	}
	defer stopDB()
	dsn, err := freshDatabase(ctx, adminDSN, "bench_steady", serverBin)
	if err != nil {
		return err
	}
	sec := benchCredentials().secured
	srv, err := startServer(serverBin, dsn, sec)
	if err != nil {
		return err
	}
	defer srv.stop()
	res, err := steadyLoad(srv.addr, sec.worker, clients, rate, d)
	if err != nil {
		return err
	}
	stored, err := countRows(ctx, dsn, "oplog.operation_logs")
	if err != nil {
		return err
	}
	fmt.Printf("oplogbench steady: %d clients, %d entries/s in all, %s, on %d CPUs\n\n", clients, rate, d, cpus())
	fmt.Printf("streams                      %d for %d acknowledged rows: %.1f rows per stream, %.1f streams/s\n",
		res.streams, res.rows, float64(res.rows)/float64(max(res.streams, 1)), float64(res.streams)/d.Seconds())
	fmt.Printf("delivery (Log → ack)         p50 %.0f ms, p99 %.0f ms, max %.0f ms (per flush, its oldest entry)\n",
		res.p50, res.p99, res.max)
	fmt.Printf("                             %d logged, %d acknowledged = %d stored; %d dropped, %d failed\n",
		res.logged, res.acked, stored, res.dropped, res.failed)
	return nil
}

type steadyResult struct {
	streams, rows                  int64
	logged, acked, dropped, failed int64
	p50, p99, max                  float64 // milliseconds
}

// steadyLoad paces clients SDK clients at rate entries/s in all for d,
// then closes them.
func steadyLoad(addr string, dial []grpc.DialOption, clients, rate int, d time.Duration, opts ...oplogclient.Option) (steadyResult, error) {
	var res steadyResult
	var streams, rows atomic.Int64
	var mu sync.Mutex
	var delivery []time.Duration
	opts = append(opts, oplogclient.OnFlush(func(r oplogclient.FlushResult) {
		streams.Add(int64(r.Attempts))
		rows.Add(int64(r.Rows))
		mu.Lock()
		delivery = append(delivery, r.Delivery)
		mu.Unlock()
	}))
	var all []*oplogclient.Client
	for i := 0; i < clients; i++ {
		conn, err := grpc.NewClient(addr, dial...)
		if err != nil {
			return res, err
		}
		defer conn.Close()
		c, err := oplogclient.New(conn, opts...)
		if err != nil {
			return res, err
		}
		all = append(all, c)
	}
	// Every 10 ms each client logs its share of the rate.
	const tick = 10 * time.Millisecond
	perTick := float64(rate) / float64(clients) * tick.Seconds()
	var wg sync.WaitGroup
	deadline := time.Now().Add(d)
	for i, c := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(tick)
			defer t.Stop()
			owed, n := 0.0, i*7919
			for now := range t.C {
				if now.After(deadline) {
					return
				}
				for owed += perTick; owed >= 1; owed-- {
					c.Log(context.Background(), entries[n%len(entries)])
					n++
				}
			}
		}()
	}
	wg.Wait()
	st, err := closeAll(all)
	if err != nil {
		return res, err
	}
	res.logged, res.acked, res.dropped, res.failed = st.Enqueued, st.Acknowledged, st.Dropped, st.Failed
	res.streams, res.rows = streams.Load(), rows.Load()
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(delivery)
	ms := func(x time.Duration) float64 { return float64(x.Microseconds()) / 1000 }
	if n := len(delivery); n > 0 {
		res.p50, res.p99, res.max = ms(delivery[n/2]), ms(delivery[n*99/100]), ms(delivery[n-1])
	}
	return res, nil
}
