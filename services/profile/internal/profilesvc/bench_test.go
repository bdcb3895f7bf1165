package profilesvc_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	profilev1 "github.com/platforma/platforma/gen/platforma/profile/v1"
	"github.com/platforma/platforma/services/kit/apptest"
	"github.com/platforma/platforma/services/kit/db"
	"github.com/platforma/platforma/services/kit/server"
	"github.com/platforma/platforma/services/profile/internal/profilesvc"
	"github.com/platforma/platforma/services/profile/internal/store"
)

// Run with `make bench` (or go test -run '^$' -bench . ./internal/profilesvc/).
// Each path runs 64 concurrent callers against the same pool settings as
// the service (16 connections): through gRPC with the full interceptor
// chain, and the same store call (the same SQL) directly through pgx.

const callers = 64

// accounts spreads the load over this many accounts: workers report on
// many accounts at once, rarely the same one concurrently.
const accounts = 10000

type accountGen struct{ users [accounts]uuid.UUID }

func newAccounts() *accountGen {
	g := &accountGen{}
	for i := range g.users {
		g.users[i] = uuid.New()
	}
	return g
}

func (g *accountGen) request(rng *rand.Rand) *profilev1.RecordLoginResultRequest {
	o := commonv1.Outcome_OUTCOME_SUCCESS
	if rng.IntN(4) == 0 {
		o = commonv1.Outcome_OUTCOME_FAILED
	}
	return &profilev1.RecordLoginResultRequest{
		EventId:           uuid.NewString(),
		UserId:            g.users[rng.IntN(accounts)].String(),
		PlatformAccountId: "acct",
		Outcome:           o,
		OccurredAt:        timestamppb.New(time.Now().Add(-time.Duration(rng.IntN(3600)) * time.Second)),
	}
}

func toResult(r *profilev1.RecordLoginResultRequest) store.LoginResult {
	return store.LoginResult{
		EventID:    uuid.MustParse(r.GetEventId()),
		Account:    store.Account{UserID: uuid.MustParse(r.GetUserId()), PlatformAccountID: r.GetPlatformAccountId()},
		Success:    r.GetOutcome() == commonv1.Outcome_OUTCOME_SUCCESS,
		OccurredAt: r.GetOccurredAt().AsTime(),
	}
}

func parallel(b *testing.B, op func(rng *rand.Rand) error) { apptest.Parallel(b, callers, op) }

func BenchmarkRecordLoginResult(b *testing.B) {
	gen := newAccounts()
	b.Run("grpc", func(b *testing.B) {
		pool := apptest.BenchPool(b)
		conn := apptest.Serve(b, pool, func(r server.Registrar) error { return profilesvc.Register(r, db.Pools{Primary: pool}, testConfig) })
		client := profilev1.NewProfileServiceClient(conn)
		parallel(b, func(rng *rand.Rand) error {
			_, err := client.RecordLoginResult(context.Background(), gen.request(rng))
			return err
		})
	})
	b.Run("pgx", func(b *testing.B) {
		st := store.New(apptest.BenchPool(b), nil)
		parallel(b, func(rng *rand.Rand) error {
			_, err := st.RecordLoginResults(context.Background(), []store.LoginResult{toResult(gen.request(rng))}, 3)
			return err
		})
	})
}

func BenchmarkBatchRecordLoginResults500(b *testing.B) {
	gen := newAccounts()
	batch := func(rng *rand.Rand) []*profilev1.RecordLoginResultRequest {
		reqs := make([]*profilev1.RecordLoginResultRequest, 500)
		for i := range reqs {
			reqs[i] = gen.request(rng)
		}
		return reqs
	}
	b.Run("grpc", func(b *testing.B) {
		pool := apptest.BenchPool(b)
		conn := apptest.Serve(b, pool, func(r server.Registrar) error { return profilesvc.Register(r, db.Pools{Primary: pool}, testConfig) })
		client := profilev1.NewProfileServiceClient(conn)
		parallel(b, func(rng *rand.Rand) error {
			_, err := client.BatchRecordLoginResults(context.Background(), &profilev1.BatchRecordLoginResultsRequest{Requests: batch(rng)})
			return err
		})
		b.ReportMetric(float64(b.N*500)/b.Elapsed().Seconds(), "outcomes/s")
	})
	b.Run("pgx", func(b *testing.B) {
		st := store.New(apptest.BenchPool(b), nil)
		parallel(b, func(rng *rand.Rand) error {
			reqs := batch(rng)
			results := make([]store.LoginResult, len(reqs))
			for i, r := range reqs {
				results[i] = toResult(r)
			}
			_, err := st.RecordLoginResults(context.Background(), results, 3)
			return err
		})
		b.ReportMetric(float64(b.N*500)/b.Elapsed().Seconds(), "outcomes/s")
	})
}

// BenchmarkGetProfile1M looks up random profiles among a million, by id
// and by account, and reports latency percentiles as seen by the caller.
func BenchmarkGetProfile1M(b *testing.B) {
	pool := apptest.BenchPool(b)
	ctx := context.Background()
	seedStart := time.Now()
	_, err := pool.Exec(ctx, `
		INSERT INTO profile.profiles (user_id, platform_account_id, auth_type, total_login_count, success_login_count, recent_logins)
		SELECT gen_random_uuid(), 'acct-' || g, g % 3, 40, g % 41,
			ARRAY(SELECT ROW(now() - make_interval(mins => k), k % 3 > 0, gen_random_uuid())::profile.login FROM generate_series(1, 10) k)
		FROM generate_series(1, 1000000) g;
		ANALYZE profile.profiles`)
	require.NoError(b, err)
	b.Logf("seeded 1M profiles in %s", time.Since(seedStart).Round(time.Second))
	rows, err := pool.Query(ctx, `SELECT id::text, user_id::text, platform_account_id FROM profile.profiles TABLESAMPLE SYSTEM (2) LIMIT 20000`)
	require.NoError(b, err)
	var sample [][3]string
	for rows.Next() {
		var r [3]string
		require.NoError(b, rows.Scan(&r[0], &r[1], &r[2]))
		sample = append(sample, r)
	}
	require.NoError(b, rows.Err())

	conn := apptest.Serve(b, pool, func(r server.Registrar) error { return profilesvc.Register(r, db.Pools{Primary: pool}, testConfig) })
	client := profilev1.NewProfileServiceClient(conn)
	for _, bc := range []struct {
		mode    string
		callers int
	}{{"by-id", 1}, {"by-account", 1}, {"by-id", callers}, {"by-account", callers}} {
		b.Run(fmt.Sprintf("%s/callers=%d", bc.mode, bc.callers), func(b *testing.B) {
			var lat apptest.Latencies
			apptest.Parallel(b, bc.callers, func(rng *rand.Rand) error {
				s := sample[rng.IntN(len(sample))]
				req := &profilev1.GetProfileRequest{Id: s[0]}
				if bc.mode == "by-account" {
					req = &profilev1.GetProfileRequest{UserId: s[1], PlatformAccountId: s[2]}
				}
				return lat.Time(func() error {
					_, err := client.GetProfile(context.Background(), req)
					return err
				})
			})
			lat.Report(b)
		})
	}
}

// BenchmarkWatchDeliveryLatency measures how long after its commit a
// transition reaches a watcher, with 64 concurrent writers through gRPC
// (every call creates a profile, so every call is a transition) and 4
// watchers on the same replica, at the default poll interval and a
// shorter one. The commit happens between the request's sending and the
// response's arrival, so the latency is reported between two bounds:
// from the response (lower, "from-resp") and from the request (upper,
// "from-req"), p50 and p99 over all watchers' deliveries.
//
// Run: go test -run '^$' -bench WatchDeliveryLatency -benchtime 20000x ./internal/profilesvc/
func BenchmarkWatchDeliveryLatency(b *testing.B) {
	for _, poll := range []time.Duration{50 * time.Millisecond, 10 * time.Millisecond} {
		b.Run(fmt.Sprintf("poll=%s", poll), func(b *testing.B) {
			pool := apptest.BenchPool(b)
			cfg := testConfig
			cfg.Watch = profilesvc.WatchConfig{PollInterval: poll}
			conn := apptest.Serve(b, pool, func(r server.Registrar) error { return profilesvc.Register(r, db.Pools{Primary: pool}, cfg) })
			client := profilev1.NewProfileServiceClient(conn)

			type times struct{ sent, answered time.Time }
			var sent sync.Map // event id -> times
			const watchers = 4
			var mu sync.Mutex
			var fromResp, fromReq []time.Duration
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var ready, done sync.WaitGroup
			var received atomic.Int64
			for range watchers {
				ready.Add(1)
				done.Add(1)
				go func() {
					defer done.Done()
					s, err := client.WatchProfileChanges(ctx, &profilev1.WatchProfileChangesRequest{})
					if err == nil {
						_, err = s.Recv()
					}
					ready.Done()
					if err != nil {
						b.Error(err)
						return
					}
					for {
						msg, err := s.Recv()
						if err != nil {
							return
						}
						at := time.Now()
						if tr := msg.GetTransition(); tr != nil {
							v, ok := sent.Load(tr.GetEventId())
							for !ok { // the writer has not stored its times yet
								time.Sleep(time.Millisecond)
								v, ok = sent.Load(tr.GetEventId())
							}
							t := v.(*times)
							mu.Lock()
							fromReq = append(fromReq, at.Sub(t.sent))
							fromResp = append(fromResp, at.Sub(t.answered))
							mu.Unlock()
							if received.Add(1) == int64(watchers*b.N) {
								cancel()
							}
						}
					}
				}()
			}
			ready.Wait()
			apptest.Parallel(b, callers, func(rng *rand.Rand) error {
				req := &profilev1.RecordLoginResultRequest{
					EventId: uuid.NewString(), UserId: uuid.NewString(), PlatformAccountId: "acct",
					Outcome: commonv1.Outcome_OUTCOME_FAILED, OccurredAt: timestamppb.Now(),
				}
				t := &times{sent: time.Now()}
				_, err := client.RecordLoginResult(context.Background(), req)
				t.answered = time.Now()
				sent.Store(req.GetEventId(), t)
				return err
			})
			b.StopTimer()
			waited := make(chan struct{})
			go func() { done.Wait(); close(waited) }()
			select {
			case <-waited:
			case <-time.After(30 * time.Second):
				b.Fatalf("watchers got %d of %d transitions", received.Load(), watchers*b.N)
			}
			pct := func(d []time.Duration, p float64) float64 {
				slices.Sort(d)
				return float64(d[int(p*float64(len(d)-1))]) / 1e6
			}
			b.ReportMetric(pct(fromResp, .5), "p50-ms-from-resp")
			b.ReportMetric(pct(fromResp, .99), "p99-ms-from-resp")
			b.ReportMetric(pct(fromReq, .5), "p50-ms-from-req")
			b.ReportMetric(pct(fromReq, .99), "p99-ms-from-req")
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
		})
	}
}
