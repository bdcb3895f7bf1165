package store

import (
	"context"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/platforma/platforma/services/kit/apptest"
	"github.com/platforma/platforma/services/kit/db"
)

// applyLoginsWithoutTransitions is applyLogins as it was before
// WatchProfileChanges (no account locks, no transitions): the baseline
// of BenchmarkRecordTransitions.
const applyLoginsWithoutTransitions = `
WITH input AS (
	SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::boolean[], $5::smallint[], $6::timestamptz[])
		AS t(event_id, user_id, platform_account_id, success, auth_type, occurred_at)
),
fresh AS (
	INSERT INTO profile.login_events (event_id, user_id, platform_account_id)
	SELECT event_id, user_id, platform_account_id FROM input ORDER BY event_id
	ON CONFLICT (event_id) DO NOTHING
	RETURNING event_id
),
per_account AS (
	SELECT i.user_id, i.platform_account_id,
		count(*) AS total,
		count(*) FILTER (WHERE i.success) AS successes,
		(array_agg(ROW(i.occurred_at, i.success, i.event_id)::profile.login
			ORDER BY i.occurred_at DESC, i.event_id DESC))[1:10] AS logins,
		(array_agg(i.auth_type ORDER BY i.occurred_at DESC, i.event_id DESC)
			FILTER (WHERE i.auth_type <> 0))[1] AS auth_type,
		max(i.occurred_at) FILTER (WHERE i.auth_type <> 0) AS auth_type_reported_at
	FROM input i JOIN fresh f ON f.event_id = i.event_id
	GROUP BY i.user_id, i.platform_account_id
),
upserted AS (
	INSERT INTO profile.profiles AS p (user_id, platform_account_id, auth_type, auth_type_reported_at,
		total_login_count, success_login_count, recent_logins)
	SELECT user_id, platform_account_id, coalesce(auth_type, 0), auth_type_reported_at, total, successes, logins
	FROM per_account
	ORDER BY user_id, platform_account_id
	ON CONFLICT (user_id, platform_account_id) DO UPDATE SET
		total_login_count = p.total_login_count + excluded.total_login_count,
		success_login_count = p.success_login_count + excluded.success_login_count,
		recent_logins = profile.merge_logins(p.recent_logins, excluded.recent_logins),
		auth_type = CASE WHEN excluded.auth_type_reported_at >= coalesce(p.auth_type_reported_at, '-infinity')
			THEN excluded.auth_type ELSE p.auth_type END,
		auth_type_reported_at = greatest(p.auth_type_reported_at, excluded.auth_type_reported_at),
		version = p.version + 1,
		update_time = now()
	RETURNING 1
)
SELECT event_id FROM fresh`

// recordWithoutTransitions is RecordLoginResults for one result as it was
// before: the same round trip, the old statement.
func recordWithoutTransitions(ctx context.Context, pool *pgxpool.Pool, r LoginResult) error {
	batch := &pgx.Batch{}
	batch.Queue(applyLoginsWithoutTransitions, db.UUIDs([]uuid.UUID{r.EventID}), db.UUIDs([]uuid.UUID{r.Account.UserID}),
		[]string{r.Account.PlatformAccountID}, []bool{r.Success}, []int16{r.AuthType}, []time.Time{r.OccurredAt}).Query(func(rows pgx.Rows) error {
		_, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
		return err
	})
	batch.Queue(profilesByAccount, db.UUIDs([]uuid.UUID{r.Account.UserID}), []string{r.Account.PlatformAccountID}).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			if _, err := scanProfile(rows); err != nil {
				return err
			}
		}
		return rows.Err()
	})
	return pool.SendBatch(ctx, batch).Close()
}

// BenchmarkRecordTransitions compares RecordLoginResult's statements with
// transition recording against the one before them, in the same run, with
// 64 concurrent callers on pools like the service's (16 connections):
//
//   - mix: 10,000 accounts with a history (40 logins, success rates spread
//     over every grade), outcomes 80 % successes: a few percent of calls
//     change a grade or the refresh need (reported as transitions/op);
//   - every-call: every call creates a profile, so every call records a
//     transition: the worst case.
//
// with and without run one after the other. alternating runs them in
// turns of 1,000 calls each (64 callers, each variant on its own
// database) for as long as the benchmark runs, so both meet the same
// machine: on a shared machine its with/without-% is the figure to trust.
//
// Run: go test -run '^$' -bench RecordTransitions -benchtime 10s ./internal/store/
func BenchmarkRecordTransitions(b *testing.B) {
	for _, load := range []string{"mix", "every-call"} {
		for _, variant := range []string{"with", "without"} {
			b.Run(load+"/"+variant, func(b *testing.B) {
				r := newRecorder(b, load)
				var transitions atomic.Int64
				apptest.Parallel(b, 64, func(rng *rand.Rand) error {
					n, err := r.record(rng, variant == "with")
					transitions.Add(int64(n))
					return err
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
				if variant == "with" {
					b.ReportMetric(float64(transitions.Load())/float64(b.N), "transitions/op")
				}
			})
		}
		b.Run(load+"/alternating", func(b *testing.B) {
			recs := [2]*recorder{newRecorder(b, load), newRecorder(b, load)}
			var took [2]time.Duration
			var calls [2]int
			b.ResetTimer()
			for done := 0; done < b.N; {
				for v, r := range recs {
					n := min(1000, max(b.N-done, 1))
					start := time.Now()
					if err := r.run(n, v == 0); err != nil {
						b.Fatal(err)
					}
					took[v] += time.Since(start)
					calls[v] += n
					done += n
				}
			}
			perSec := func(v int) float64 { return float64(calls[v]) / took[v].Seconds() }
			b.ReportMetric(perSec(0), "calls/s-with")
			b.ReportMetric(perSec(1), "calls/s-without")
			b.ReportMetric(100*perSec(0)/perSec(1), "with/without-%")
		})
	}
}

// recorder records random outcomes on a fresh database.
type recorder struct {
	pool  *pgxpool.Pool
	st    *Store
	load  string
	users []uuid.UUID
}

func newRecorder(b *testing.B, load string) *recorder {
	b.Helper()
	const accounts = 10000
	pool := apptest.BenchPool(b)
	r := &recorder{pool: pool, st: New(pool, nil), load: load}
	if load != "mix" {
		return r
	}
	ctx := context.Background()
	_, err := pool.Exec(ctx, `
INSERT INTO profile.profiles (user_id, platform_account_id, total_login_count, success_login_count, recent_logins)
SELECT gen_random_uuid(), 'acct', 40, 10 + g % 31,
	ARRAY(SELECT ROW(now() - make_interval(hours => 2, mins => k), (g + k) % 4 > 0, gen_random_uuid())::profile.login FROM generate_series(1, 10) k)
FROM generate_series(1, $1::int) g`, accounts)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "ANALYZE profile.profiles"); err != nil {
		b.Fatal(err)
	}
	rows, err := pool.Query(ctx, "SELECT user_id FROM profile.profiles")
	if err != nil {
		b.Fatal(err)
	}
	if r.users, err = pgx.CollectRows(rows, pgx.RowTo[uuid.UUID]); err != nil {
		b.Fatal(err)
	}
	return r
}

// record records one outcome, with transitions or the old way, and
// returns the transitions recorded.
func (r *recorder) record(rng *rand.Rand, with bool) (int, error) {
	ctx := context.Background()
	res := LoginResult{
		EventID:    uuid.New(),
		Account:    Account{UserID: uuid.New(), PlatformAccountID: "acct"},
		Success:    rng.IntN(5) > 0,
		OccurredAt: time.Now().Add(-time.Duration(rng.IntN(3600)) * time.Second),
	}
	if r.load == "mix" {
		res.Account.UserID = r.users[rng.IntN(len(r.users))]
	}
	if !with {
		return 0, recordWithoutTransitions(ctx, r.pool, res)
	}
	rec, err := r.st.RecordLoginResults(ctx, []LoginResult{res}, 3)
	n := 0
	for _, c := range rec.Transitions {
		n += c
	}
	return n, err
}

// run makes n calls from 64 callers.
func (r *recorder) run(n int, with bool) error {
	var next atomic.Int64
	errs := make(chan error, 64)
	for c := range 64 {
		go func() {
			rng := rand.New(rand.NewPCG(uint64(c), uint64(time.Now().UnixNano())))
			for next.Add(1) <= int64(n) {
				if _, err := r.record(rng, with); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	var first error
	for range 64 {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}
