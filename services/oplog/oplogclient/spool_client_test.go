package oplogclient_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/platforma/platforma/services/kit/apptest"
	"github.com/platforma/platforma/services/kit/db"
	"github.com/platforma/platforma/services/kit/pgtest"
	"github.com/platforma/platforma/services/kit/server"
	"github.com/platforma/platforma/services/oplog/internal/oplogsvc"
	"github.com/platforma/platforma/services/oplog/internal/wire"
	"github.com/platforma/platforma/services/oplog/oplogclient"
)

// downAddr is an address nothing listens on yet, and a connection to it
// that retries connecting quickly (as a worker's would, tuned for tests).
func downAddr(t *testing.T) (string, *grpc.ClientConn) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := lis.Addr().String()
	require.NoError(t, lis.Close())
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 10 * time.Millisecond, Multiplier: 1.5, MaxDelay: 100 * time.Millisecond}}))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return addr, conn
}

// serveOn starts OpLogService on addr as the binary registers it
// (oplogsvc.Register), over plaintext and without authentication (the
// tests' clients dial with insecure credentials), with the standard
// health service answering SERVING while pool answers, and returns when
// it listens. stop shuts it down; it also runs when the test ends.
func serveOn(t *testing.T, addr string, pool *pgxpool.Pool) (stop func()) {
	t.Helper()
	return apptest.ServePlaintextAt(t, addr, pool, wire.Codec{}, func(r server.Registrar) error {
		return oplogsvc.Register(r, db.Pools{Primary: pool}, serverConfig())
	})
}

func storedOnce(t *testing.T, pool *pgxpool.Pool) (total, distinct int) {
	t.Helper()
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT count(*), count(DISTINCT id) FROM oplog.operation_logs`).Scan(&total, &distinct))
	return total, distinct
}

// An outage that outlasts the memory buffer: with a spool nothing is
// dropped, and everything is stored once the server is back.
func TestSpoolCarriesAnOutageLongerThanTheBuffer(t *testing.T) {
	t.Parallel()
	const buffer, logged = 1000, 30000
	addr, conn := downAddr(t)
	client := newClient(t, conn, oplogclient.WithBufferSize(buffer), oplogclient.WithSpool(t.TempDir(), 64<<20))
	for i := 0; i < logged; i++ {
		client.Log(context.Background(), entry())
		if i%100 == 99 {
			// About 10,000 entries/s: a busy worker's pace.
			time.Sleep(10 * time.Millisecond)
		}
	}
	require.Eventually(t, func() bool { return client.Stats().InBuffer == 0 }, 20*time.Second, 10*time.Millisecond)
	st := client.Stats()
	assert.Zero(t, st.Dropped, "nothing dropped from memory: the spool took it")
	assert.Equal(t, int64(logged), st.Spooled)
	assert.Equal(t, int64(logged), st.SpoolEntries)
	assert.Positive(t, st.SpoolBytes)
	assert.Positive(t, st.SpoolOldest)

	pool := pgtest.NewPool(t)
	serveOn(t, addr, pool)
	require.Eventually(t, func() bool { return client.Stats().SpoolEntries == 0 }, 60*time.Second, 20*time.Millisecond)
	require.NoError(t, client.Close(context.Background()))
	st = client.Stats()
	assert.Equal(t, int64(logged), st.Acknowledged)
	assert.Equal(t, int64(logged), st.SpoolReplayed)
	assert.Zero(t, st.SpoolBytes, "a drained spool keeps no files")
	total, distinct := storedOnce(t, pool)
	assert.Equal(t, logged, total)
	assert.Equal(t, logged, distinct)
}

// Close with the server down: what is left stays spooled, Close says how
// much, and the next client on the directory delivers it.
func TestSpoolOutlivesTheClient(t *testing.T) {
	t.Parallel()
	const logged = 2500
	dir := t.TempDir()
	addr, conn := downAddr(t)
	first := newClient(t, conn, oplogclient.WithSpool(dir, 16<<20))
	for i := 0; i < logged; i++ {
		first.Log(context.Background(), entry())
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := first.Close(ctx)
	var ce *oplogclient.CloseError
	require.ErrorAs(t, err, &ce)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Equal(t, int64(logged), ce.Spooled, "everything stays in the spool")
	assert.Zero(t, ce.Failed)
	assert.Positive(t, ce.SpooledBytes)
	assert.Contains(t, err.Error(), "stay in the spool for the next start")

	pool := pgtest.NewPool(t)
	serveOn(t, addr, pool)
	second := newClient(t, conn, oplogclient.WithSpool(dir, 16<<20))
	require.NoError(t, second.Close(context.Background()), "Close delivers the spool left by the first client")
	st := second.Stats()
	assert.Zero(t, st.Enqueued)
	assert.Equal(t, int64(logged), st.SpoolReplayed)
	assert.Zero(t, st.SpoolEntries)
	total, distinct := storedOnce(t, pool)
	assert.Equal(t, logged, total)
	assert.Equal(t, logged, distinct)
}

// A full spool drops its oldest entries, counts them, and neither the
// disk nor the memory grows past their bounds.
func TestFullSpoolDropsAreCountedAndMemoryIsBounded(t *testing.T) {
	t.Parallel()
	const buffer, spoolBytes, logged = 2000, 1 << 20, 40000
	_, conn := downAddr(t)
	client := newClient(t, conn, oplogclient.WithBufferSize(buffer), oplogclient.WithSpool(t.TempDir(), spoolBytes))
	for i := 0; i < logged; i++ {
		client.Log(context.Background(), entry())
		if i%100 == 99 {
			time.Sleep(5 * time.Millisecond)
		}
		require.LessOrEqual(t, client.Stats().InBuffer, int64(buffer+2*500), "memory: the buffer and the batches in flight")
	}
	require.Eventually(t, func() bool { return client.Stats().InBuffer == 0 }, 20*time.Second, 10*time.Millisecond)
	st := client.Stats()
	assert.LessOrEqual(t, st.SpoolBytes, int64(spoolBytes))
	assert.Positive(t, st.SpoolDropped)
	assert.Equal(t, int64(logged), st.Dropped+st.SpoolDropped+st.SpoolEntries, "every entry is spooled or counted as dropped: %+v", st)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_ = client.Close(ctx)
}

// After an outage long enough for the backoff (the SDK's and gRPC's
// reconnect backoff) to grow to seconds, the first acknowledgement comes
// promptly once the server is back: the health check cuts the backoff
// short, and asks gRPC to reconnect at once.
func TestBackoffEndsWhenTheServerIsBack(t *testing.T) {
	t.Parallel()
	for _, spool := range []bool{false, true} {
		name := "in memory"
		if spool {
			name = "spool"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			addr, _ := downAddr(t)
			// gRPC's default reconnect backoff, as a worker's connection
			// has: it grows to seconds while the server is down.
			conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			require.NoError(t, err)
			defer conn.Close()
			var firstAck atomic.Int64
			opts := []oplogclient.Option{
				oplogclient.WithBackoff(50*time.Millisecond, 30*time.Second),
				oplogclient.OnFlush(func(oplogclient.FlushResult) { firstAck.CompareAndSwap(0, time.Now().UnixNano()) }),
			}
			if spool {
				opts = append(opts, oplogclient.WithSpool(t.TempDir(), 16<<20))
			}
			client, err := oplogclient.New(conn, opts...)
			require.NoError(t, err)
			client.Log(context.Background(), entry())
			// Seven doublings from 50 ms: the next wait is 3.2 to 6.4 s.
			require.Eventually(t, func() bool { return client.Stats().Retries >= 7 }, 30*time.Second, 10*time.Millisecond)

			pool := pgtest.NewPool(t)
			back := time.Now()
			serveOn(t, addr, pool)
			require.Eventually(t, func() bool { return firstAck.Load() != 0 }, 10*time.Second, 5*time.Millisecond)
			took := time.Duration(firstAck.Load() - back.UnixNano())
			assert.Less(t, took, 1500*time.Millisecond, "first acknowledgement %s after the server came back", took)
			require.NoError(t, client.Close(context.Background()))
			total, _ := storedOnce(t, pool)
			assert.Equal(t, 1, total)
		})
	}
}

// A trickle of entries is sent as one batch after the linger, not one
// stream each; a full batch goes at once, whatever the linger.
func TestLingerFillsBatches(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	conn := startServer(t, pool, nil)
	flushes := make(chan oplogclient.FlushResult, 100)
	onFlush := oplogclient.OnFlush(func(r oplogclient.FlushResult) { flushes <- r })

	trickle := newClient(t, conn, onFlush, oplogclient.WithLinger(400*time.Millisecond))
	for i := 0; i < 5; i++ {
		trickle.Log(context.Background(), entry())
		time.Sleep(20 * time.Millisecond)
	}
	r := <-flushes
	assert.Equal(t, 5, r.Rows, "five entries logged within the linger go in one stream")
	assert.GreaterOrEqual(t, r.Delivery, 400*time.Millisecond, "the first waited the linger")
	require.NoError(t, trickle.Close(context.Background()))

	full := newClient(t, conn, onFlush, oplogclient.WithLinger(time.Hour), oplogclient.WithFlushSize(100))
	for i := 0; i < 100; i++ {
		full.Log(context.Background(), entry())
	}
	select {
	case r := <-flushes:
		assert.Equal(t, 100, r.Rows)
	case <-time.After(10 * time.Second):
		t.Fatal("a full batch waited for the linger")
	}
	require.NoError(t, full.Close(context.Background()))
}
