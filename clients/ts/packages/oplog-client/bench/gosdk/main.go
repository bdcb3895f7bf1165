// Command gosdk drives OpLogService with the Go SDK as fast as it takes
// entries, for the comparison with the TypeScript client (bench.mjs): one
// client (one connection), the SDK's default flush settings, entries
// logged while the buffer has room (no drops), for a duration; prints one
// JSON line with the acknowledged rate.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"time"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	"github.com/platforma/platforma/services/oplog/oplogclient"
)

func main() {
	addr := flag.String("addr", "", "OpLogService host:port")
	ca := flag.String("ca", "", "CA file")
	cert := flag.String("cert", "", "worker certificate")
	key := flag.String("key", "", "worker key")
	user := flag.String("user", "", "user id of the entries")
	duration := flag.Duration("duration", 10*time.Second, "how long to log")
	payload := flag.Bool("payload", true, "give each entry a small payload")
	flag.Parse()
	if err := run(*addr, *ca, *cert, *key, *user, *duration, *payload); err != nil {
		fmt.Fprintln(os.Stderr, "gosdk:", err)
		os.Exit(1)
	}
}

func run(addr, ca, cert, key, user string, d time.Duration, payload bool) error {
	creds, err := oplogclient.TLSFromFiles(ca, cert, key)
	if err != nil {
		return err
	}
	conn, err := oplogclient.Dial(addr, creds)
	if err != nil {
		return err
	}
	defer conn.Close()
	const buffer = 10000
	c, err := oplogclient.New(conn, oplogclient.WithBufferSize(buffer))
	if err != nil {
		return err
	}
	ctx := context.Background()
	start := time.Now()
	n := 0
	for time.Since(start) < d {
		if c.Stats().InBuffer >= buffer-500 {
			time.Sleep(time.Millisecond) // full: wait for a flush, as bench.mjs does
			continue
		}
		for i := 0; i < 100; i++ {
			e := oplogclient.Entry{UserID: user, OperationType: oplogv1.OperationType_OPERATION_TYPE_GET_REVIEWS,
				Outcome: commonv1.Outcome_OUTCOME_SUCCESS, ResourceID: fmt.Sprintf("r-%d", n), ProxyUsed: "proxy-eu-3"}
			if payload {
				e.RequestPayload = map[string]any{"url": "https://platform.example/reviews?page=2", "page": n, "cookie": "x"}
			}
			c.Log(ctx, e)
			n++
		}
	}
	closeCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	err = c.Close(closeCtx)
	elapsed := time.Since(start)
	st := c.Stats()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return firstErr(err, json.NewEncoder(os.Stdout).Encode(map[string]any{
		"sdk": "go", "logged": n, "acknowledged": st.Acknowledged, "dropped": st.Dropped, "failed": st.Failed,
		"seconds": elapsed.Seconds(), "events_per_s": float64(st.Acknowledged) / elapsed.Seconds(),
	}))
}

func firstErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}
