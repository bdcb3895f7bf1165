package db

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/platforma/platforma/services/kit/pgcluster"
	"github.com/platforma/platforma/services/kit/pgerr"
	"github.com/platforma/platforma/services/kit/pgtest"
)

// pair is a private primary with a streaming standby, and pools on both.
type pair struct {
	primary, standby         *pgcluster.Cluster
	primaryPool, replicaPool *pgxpool.Pool
}

func startPair(t *testing.T) pair {
	t.Helper()
	ctx := context.Background()
	p := pair{primary: pgtest.StartCluster(t)}
	p.primaryPool = newTestPool(t, p.primary.DSN("postgres"))
	_, err := p.primaryPool.Exec(ctx, "CREATE TABLE t (x int)")
	require.NoError(t, err)
	p.standby = pgtest.StartStandbyOf(t, p.primary)
	p.replicaPool = newTestPool(t, p.standby.DSN("postgres"))
	// A transaction replayed, so that the standby knows a replay time.
	_, err = p.primaryPool.Exec(ctx, "INSERT INTO t VALUES (1)")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		var n int
		return p.replicaPool.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n) == nil && n == 1
	}, 20*time.Second, 20*time.Millisecond, "the standby never replayed the insert")
	return p
}

func newTestPool(t *testing.T, dsn string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), dsn)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

func (p pair) reads(maxLag time.Duration) *Reads {
	return NewReads(p.primaryPool, p.replicaPool, ReadsConfig{MaxLag: maxLag, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
}

// rows counts t's rows where Reads sends the read, and tells whether a
// standby answered.
func rows(t *testing.T, r *Reads) (n int, onStandby bool) {
	t.Helper()
	require.NoError(t, r.Read(context.Background(), func(q Querier) error {
		rs, err := q.Query(context.Background(), "SELECT count(*), pg_is_in_recovery() FROM t")
		if err != nil {
			return err
		}
		_, err = pgx.ForEachRow(rs, []any{&n, &onStandby}, func() error { return nil })
		return err
	}))
	return n, onStandby
}

func served(r *Reads, target string) float64 {
	return testutil.ToFloat64(r.served.WithLabelValues(target))
}

// freshSoon checks until the replica is fresh: WAL the primary writes by
// itself (checkpoints, snapshots of running transactions) may be in
// flight at any one check.
func freshSoon(t *testing.T, r *Reads) {
	t.Helper()
	require.Eventually(t, func() bool {
		r.check(context.Background())
		return r.Fresh()
	}, 20*time.Second, 20*time.Millisecond, "the replica never fresh")
}

// A standby of an idle primary has replayed everything: lag 0, though its
// last replayed transaction is older than the bound, and reads go to it.
func TestReadsUseACaughtUpStandbyOfAnIdlePrimary(t *testing.T) {
	t.Parallel()
	p := startPair(t)
	r := p.reads(time.Second)
	assert.False(t, r.Fresh(), "before the first check the primary serves")
	n, onStandby := rows(t, r)
	assert.Equal(t, 1, n)
	assert.False(t, onStandby)

	var age float64
	require.Eventually(t, func() bool {
		return p.replicaPool.QueryRow(context.Background(),
			"SELECT coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8, 0)").Scan(&age) == nil && age > 1.5
	}, 20*time.Second, 50*time.Millisecond, "the last replayed transaction older than the bound")
	freshSoon(t, r)
	assert.Equal(t, 0.0, testutil.ToFloat64(r.lag), "nothing left to replay")
	assert.Equal(t, 1.0, testutil.ToFloat64(r.up))
	n, onStandby = rows(t, r)
	assert.Equal(t, 1, n)
	assert.True(t, onStandby, "the replica serves")
	assert.Equal(t, 1.0, served(r, TargetReplica))
	assert.Equal(t, 1.0, served(r, TargetPrimary))

	// The statement's own errors are not the replica's: the primary
	// would fail it the same, so it does not run there too.
	err := r.Read(context.Background(), func(q Querier) error {
		rs, err := q.Query(context.Background(), "SELECT 1/0")
		if err != nil {
			return err
		}
		rs.Close()
		return rs.Err()
	})
	assert.Equal(t, pgerr.ClassDataException, pgerr.Class(pgerr.Code(err)), "division by zero: %v", err)
	assert.Equal(t, 2.0, served(r, TargetReplica))
	assert.Equal(t, 1.0, served(r, TargetPrimary))
	assert.True(t, r.Fresh())
}

// With replay paused, a write on the primary is not on the replica: within
// the bound reads still see the replica's older state; once the replica is
// further behind than the bound they go to the primary and see the write.
func TestReadsFollowTheBoundWhileReplayIsPaused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := startPair(t)
	tight, loose := p.reads(time.Second), p.reads(time.Hour)
	freshSoon(t, loose)

	_, err := p.replicaPool.Exec(ctx, "SELECT pg_wal_replay_pause()")
	require.NoError(t, err)
	_, err = p.primaryPool.Exec(ctx, "INSERT INTO t VALUES (2)")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		var behind bool
		return p.replicaPool.QueryRow(ctx, "SELECT pg_last_wal_receive_lsn() > pg_last_wal_replay_lsn()").Scan(&behind) == nil && behind
	}, 20*time.Second, 20*time.Millisecond, "the standby received the write")

	loose.check(ctx)
	require.True(t, loose.Fresh(), "behind, but within an hour")
	n, onStandby := rows(t, loose)
	assert.True(t, onStandby)
	assert.Equal(t, 1, n, "the write is not replayed yet")

	require.Eventually(t, func() bool {
		tight.check(ctx)
		return !tight.Fresh() && testutil.ToFloat64(tight.lag) > 1
	}, 20*time.Second, 50*time.Millisecond, "more than a second behind")
	assert.Equal(t, 1.0, testutil.ToFloat64(tight.up), "the check succeeded")
	n, onStandby = rows(t, tight)
	assert.False(t, onStandby, "the primary serves")
	assert.Equal(t, 2, n, "and has the write")
	assert.Equal(t, 1.0, served(tight, TargetPrimary))
	assert.Equal(t, 0.0, served(tight, TargetReplica))

	_, err = p.replicaPool.Exec(ctx, "SELECT pg_wal_replay_resume()")
	require.NoError(t, err)
	freshSoon(t, tight)
	n, onStandby = rows(t, tight)
	assert.True(t, onStandby, "caught up: the replica serves again")
	assert.Equal(t, 2, n)
}

// A replica that goes down between two checks fails no read: the read
// runs again on the primary, and the next ones go there until a check
// finds the replica back.
func TestReadsFallBackWhenTheStandbyIsDown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := startPair(t)
	r := p.reads(time.Minute)
	freshSoon(t, r)
	require.NoError(t, p.standby.Stop(ctx))

	n, onStandby := rows(t, r)
	assert.Equal(t, 1, n)
	assert.False(t, onStandby)
	assert.Equal(t, 1.0, served(r, TargetPrimary))
	assert.Equal(t, 0.0, served(r, TargetReplica), "the failed attempt served nothing")
	assert.False(t, r.Fresh(), "the failure took the replica out")

	r.check(ctx)
	assert.Equal(t, 0.0, testutil.ToFloat64(r.up))
	assert.False(t, r.Fresh())
	rows(t, r)
	assert.Equal(t, 2.0, served(r, TargetPrimary))

	require.NoError(t, p.standby.Start(ctx))
	freshSoon(t, r)
	_, onStandby = rows(t, r)
	assert.True(t, onStandby, "back")
}

// Run checks at once, so that reads move to a fresh replica within one
// interval, and returns when its context ends.
func TestReadsRunChecksUntilCancelled(t *testing.T) {
	t.Parallel()
	p := startPair(t)
	r := NewReads(p.primaryPool, p.replicaPool, ReadsConfig{MaxLag: time.Minute, Interval: 20 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	assert.Eventually(t, r.Fresh, 20*time.Second, 10*time.Millisecond)
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}
