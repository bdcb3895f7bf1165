package oplogclient

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
)

var benchEntry = Entry{
	UserID:        "0193a0c2-0000-7000-8000-0000000000aa",
	OperationType: oplogv1.OperationType_OPERATION_TYPE_GET_REVIEWS,
	Outcome:       commonv1.Outcome_OUTCOME_FAILED,
	ErrorType:     "TIMEOUT",
	ExecutionTime: 350 * time.Millisecond,
	ProxyUsed:     "proxy-eu-3",
}

// BenchmarkLogSpool: Log's cost with a spool configured. memory: the
// server takes the connection but never answers, so the flushers wait in
// their attempts and entries stay in memory (Log's path is the same as
// without a spool: it never touches the spool). spooling: the server is
// known to be down, so flushers write every batch to the spool while Log
// runs; Log outpaces the disk in this loop, and what does not fit the
// buffer is dropped as without a spool. Log's own cost is what is measured.
func BenchmarkLogSpool(b *testing.B) {
	for _, spooling := range []bool{false, true} {
		name := "memory"
		if spooling {
			name = "spooling"
		}
		b.Run(name, func(b *testing.B) {
			var c *Client
			if spooling {
				c = idleClient(b, WithBufferSize(1<<16), WithLinger(time.Millisecond), WithFlushSize(500), WithSpool(b.TempDir(), 1<<30))
				c.down.Store(true) // as after the first failed attempt
			} else {
				c = silentServerClient(b, WithBufferSize(1<<16), WithLinger(time.Hour), WithFlushSize(1000), WithSpool(b.TempDir(), 1<<30))
			}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				c.Log(ctx, benchEntry)
			}
			b.StopTimer()
			b.ReportMetric(float64(c.Stats().Spooled)/float64(b.N), "spooled/op")
		})
	}
}

// silentServerClient is a client of a server that accepts connections
// and never answers.
func silentServerClient(b *testing.B, opts ...Option) *Client {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var held []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, conn)
			mu.Unlock()
		}
	}()
	b.Cleanup(func() {
		_ = lis.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			_ = c.Close()
		}
	})
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	c, err := New(conn, opts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		defer cancel()
		_ = c.Close(ctx)
		_ = conn.Close()
	})
	return c
}

// benchRows are encoded rows as the SDK spools them.
func benchRows(n int) ([][]byte, []time.Time) {
	rows := make([][]byte, n)
	at := make([]time.Time, n)
	now := time.Now()
	for i := range rows {
		r := record{at: now, queued: now, entry: benchEntry}
		r.id = [16]byte{byte(i), byte(i >> 8), 0x70}
		rows[i] = appendLog(nil, &r)
		at[i] = now
	}
	return rows, at
}

// BenchmarkSpoolWrite: batches of 500 rows written and fsynced.
func BenchmarkSpoolWrite(b *testing.B) {
	rows, at := benchRows(500)
	bytes := 0
	for _, r := range rows {
		bytes += len(r) + recordHeader + loggedAtBytes
	}
	s, err := openSpool(b.TempDir(), 1<<40)
	if err != nil {
		b.Fatal(err)
	}
	defer s.close()
	b.SetBytes(int64(bytes))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.write(rows, at); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*len(rows))/b.Elapsed().Seconds(), "entries/s")
}

// BenchmarkSpoolReplay: reading batches of 500 back and deleting them.
func BenchmarkSpoolReplay(b *testing.B) {
	rows, at := benchRows(500)
	bytes := 0
	for _, r := range rows {
		bytes += len(r) + recordHeader + loggedAtBytes
	}
	s, err := openSpool(b.TempDir(), 1<<40)
	if err != nil {
		b.Fatal(err)
	}
	defer s.close()
	for i := 0; i < b.N; i++ {
		if _, err := s.write(rows, at); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(bytes))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		recs := s.next(500)
		if len(recs) != 500 {
			b.Fatalf("read %d records", len(recs))
		}
		s.done(recs, int64(len(recs)))
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*len(rows))/b.Elapsed().Seconds(), "entries/s")
}
