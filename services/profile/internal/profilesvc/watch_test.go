package profilesvc_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	profilev1 "github.com/platforma/platforma/gen/platforma/profile/v1"
	"github.com/platforma/platforma/services/kit/apptest"
	"github.com/platforma/platforma/services/kit/db"
	"github.com/platforma/platforma/services/kit/server"
	"github.com/platforma/platforma/services/profile/internal/profilesvc"
	"github.com/platforma/platforma/services/profile/internal/store"
)

const (
	stable   = profilev1.StabilityGrade_STABILITY_GRADE_STABLE
	unstable = profilev1.StabilityGrade_STABILITY_GRADE_UNSTABLE
	critical = profilev1.StabilityGrade_STABILITY_GRADE_CRITICAL
	noGrade  = profilev1.StabilityGrade_STABILITY_GRADE_UNSPECIFIED
)

// watchConfig is testConfig with short watch intervals.
func watchConfig(change func(*profilesvc.WatchConfig)) profilesvc.Config {
	cfg := testConfig
	cfg.Watch = profilesvc.WatchConfig{PollInterval: 20 * time.Millisecond, BookmarkInterval: 100 * time.Millisecond}
	if change != nil {
		change(&cfg.Watch)
	}
	return cfg
}

// replica serves ProfileService on pool's database: several replicas of
// one test share the database, as replicas of the service do.
func replica(t *testing.T, pool *pgxpool.Pool, cfg profilesvc.Config) profilev1.ProfileServiceClient {
	t.Helper()
	conn := apptest.Serve(t, pool, func(r server.Registrar) error { return profilesvc.Register(r, db.Pools{Primary: pool}, cfg) })
	return profilev1.NewProfileServiceClient(conn)
}

// transition is what the tests compare of an event.
type transition struct {
	profileID          string
	version            int64
	oldGrade, newGrade profilev1.StabilityGrade
	oldRefresh         bool
	newRefresh         bool
}

func (tr transition) String() string {
	return fmt.Sprintf("%s v%d %v->%v refresh %v->%v", tr.profileID[:8], tr.version, tr.oldGrade, tr.newGrade, tr.oldRefresh, tr.newRefresh)
}

func fromEvent(t *testing.T, e *profilev1.ProfileTransition) transition {
	t.Helper()
	v, err := strconv.ParseInt(e.GetProfile().GetEtag(), 10, 64)
	require.NoError(t, err)
	return transition{e.GetProfile().GetId(), v, e.GetOldGrade(), e.GetNewGrade(), e.GetOldNeedsSessionRefresh(), e.GetNewNeedsSessionRefresh()}
}

// stream is one open watch.
type stream struct {
	t      *testing.T
	s      grpc.ServerStreamingClient[profilev1.WatchProfileChangesResponse]
	cancel context.CancelFunc
	// cursor is the cursor of the last message received.
	cursor string
}

func openWatch(t *testing.T, client profilev1.ProfileServiceClient, req *profilev1.WatchProfileChangesRequest) *stream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, err := client.WatchProfileChanges(ctx, req)
	require.NoError(t, err)
	first, err := s.Recv()
	require.NoError(t, err)
	require.Nil(t, first.GetTransition(), "the first message is a bookmark")
	require.NotEmpty(t, first.GetCursor())
	return &stream{t: t, s: s, cancel: cancel, cursor: first.GetCursor()}
}

// next returns the next transition, skipping bookmarks, or nil when none
// comes within wait.
func (s *stream) next(wait time.Duration) *profilev1.ProfileTransition {
	s.t.Helper()
	type msg struct {
		r   *profilev1.WatchProfileChangesResponse
		err error
	}
	deadline := time.After(wait)
	for {
		ch := make(chan msg, 1)
		go func() { r, err := s.s.Recv(); ch <- msg{r, err} }()
		select {
		case m := <-ch:
			require.NoError(s.t, m.err)
			s.cursor = m.r.GetCursor()
			if m.r.GetTransition() != nil {
				return m.r.GetTransition()
			}
		case <-deadline:
			// The Recv goroutine ends when the stream is cancelled at cleanup;
			// a stream that timed out is not read again.
			return nil
		}
	}
}

// collect reads n transitions, then checks that no other comes for a
// while.
func (s *stream) collect(n int) []transition {
	s.t.Helper()
	var out []transition
	for len(out) < n {
		e := s.next(10 * time.Second)
		if e == nil {
			s.t.Fatalf("got %d transitions, want %d: %v", len(out), n, out)
		}
		out = append(out, fromEvent(s.t, e))
	}
	if e := s.next(400 * time.Millisecond); e != nil {
		s.t.Fatalf("one transition too many: %v", fromEvent(s.t, e))
	}
	return out
}

func record(t *testing.T, client profilev1.ProfileServiceClient, req *profilev1.RecordLoginResultRequest) *profilev1.Profile {
	t.Helper()
	resp, err := client.RecordLoginResult(context.Background(), req)
	require.NoError(t, err)
	return resp.GetProfile()
}

func TestWatchFromNowSeesTransitionsInOrder(t *testing.T) {
	t.Parallel()
	pool := pgtestPool(t)
	client := replica(t, pool, watchConfig(nil))
	user := uuid.New()
	w := openWatch(t, client, &profilev1.WatchProfileChangesRequest{})
	req := login(user, "acct", success, base)
	req.AuthType = commonv1.AuthType_AUTH_TYPE_TWO_FACTOR
	p := record(t, client, req)                                           // created: STABLE
	record(t, client, login(user, "acct", failed, base.Add(time.Second))) // 50: UNSTABLE
	dup := login(user, "acct", failed, base.Add(2*time.Second))
	record(t, client, dup)                                                   // 33.33: CRITICAL
	record(t, client, dup)                                                   // a retry: nothing
	record(t, client, login(user, "acct", failed, base.Add(3*time.Second)))  // 25, 3 failures: refresh
	record(t, client, login(user, "acct", failed, base.Add(4*time.Second)))  // 20: no change
	record(t, client, login(user, "acct", success, base.Add(5*time.Second))) // 33.33: refresh off

	first := w.next(5 * time.Second)
	require.NotNil(t, first)
	assert.Equal(t, p.GetId(), first.GetProfile().GetId())
	assert.Equal(t, user.String(), first.GetProfile().GetUserId())
	assert.Equal(t, "acct", first.GetProfile().GetPlatformAccountId())
	assert.Equal(t, commonv1.AuthType_AUTH_TYPE_TWO_FACTOR, first.GetProfile().GetAuthType())
	assert.Equal(t, req.GetEventId(), first.GetEventId())
	assert.Equal(t, success, first.GetOutcome())
	assert.True(t, first.GetOccurredAt().AsTime().Equal(base))
	assert.Equal(t, 100.0, first.GetSessionStabilityScore())
	assert.NotNil(t, first.GetRecordTime())

	got := append([]transition{fromEvent(t, first)}, w.collect(4)...)
	id := p.GetId()
	assert.Equal(t, []transition{
		{id, 1, noGrade, stable, false, false},
		{id, 2, stable, unstable, false, false},
		{id, 3, unstable, critical, false, false},
		{id, 4, critical, critical, false, true},
		{id, 6, critical, critical, true, false},
	}, got)
}

// pgtestPool is a pool on a fresh database (the service's tests' one).
func pgtestPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	_, pool := newClient(t)
	return pool
}

// The test: 64 concurrent writers over a few dozen profiles, 4
// watchers on two replicas that disconnect and resume (on either replica)
// at random. Every watcher sees every transition exactly once, in order
// per profile, and the transitions are those an independent replay of the
// committed outcomes gives.
func TestWatchersResumingAtRandomSeeEveryTransitionOnce(t *testing.T) {
	t.Parallel()
	const writers, perWriter, profiles, watchers = 64, 40, 30, 4
	pool := pgtestPool(t)
	replicas := []profilev1.ProfileServiceClient{replica(t, pool, watchConfig(nil)), replica(t, pool, watchConfig(nil))}
	user := uuid.New()

	start := openWatch(t, replicas[0], &profilev1.WatchProfileChangesRequest{}).cursor

	// The writers. Each response is the profile right after its outcome;
	// its etag (the version) numbers the outcomes of the profile in commit
	// order.
	type applied struct {
		version    int64
		eventID    uuid.UUID
		success    bool
		occurredAt time.Time
		resp       *profilev1.Profile
	}
	var mu sync.Mutex
	byAccount := map[string][]applied{}
	var clock atomic.Int64
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for range perWriter {
				account := fmt.Sprintf("acct-%d", rng.IntN(profiles))
				o := success
				if rng.IntN(2) == 0 {
					o = failed
				}
				// Distinct times, mostly but not always in arrival order.
				at := base.Add(time.Duration(clock.Add(1)+int64(rng.IntN(20))) * time.Millisecond)
				req := login(user, account, o, at)
				resp, err := replicas[w%2].RecordLoginResult(context.Background(), req)
				if !assert.NoError(t, err) {
					return
				}
				v, _ := strconv.ParseInt(resp.GetProfile().GetEtag(), 10, 64)
				mu.Lock()
				byAccount[account] = append(byAccount[account], applied{v, uuid.MustParse(req.GetEventId()), o == success, at, resp.GetProfile()})
				mu.Unlock()
			}
		}()
	}

	// The watchers, running while the writers write.
	type result struct {
		got     []transition
		resumes int
		err     error
	}
	results := make([]result, watchers)
	var watchWG sync.WaitGroup
	want := atomic.Int64{}
	want.Store(-1) // known once the writers are done
	for i := range watchers {
		watchWG.Add(1)
		go func() {
			defer watchWG.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 2))
			r := &results[i]
			cursor := start
			deadline := time.Now().Add(60 * time.Second)
			for time.Now().Before(deadline) {
				ctx, cancel := context.WithCancel(context.Background())
				s, err := replicas[rng.IntN(2)].WatchProfileChanges(ctx, &profilev1.WatchProfileChangesRequest{Cursor: cursor})
				if err != nil {
					cancel()
					r.err = err
					return
				}
				// Disconnect after a random number of messages.
				for n := rng.IntN(30); ; n-- {
					if w := want.Load(); w >= 0 && int64(len(r.got)) >= w {
						cancel()
						return
					}
					if n == 0 {
						break
					}
					msg, err := s.Recv()
					if err != nil {
						cancel()
						r.err = err
						return
					}
					cursor = msg.GetCursor()
					if e := msg.GetTransition(); e != nil {
						r.got = append(r.got, fromEvent(t, e))
					}
				}
				cancel()
				r.resumes++
			}
			r.err = errors.New("timed out")
		}()
	}
	wg.Wait()

	// The independent replay: per account, the outcomes in commit order
	// (by version), folded with the rules written out here (score and
	// grade from the counters, the window of the ten newest by occurred_at,
	// the refresh after 3 failures at its head).
	var expected []transition
	for account, list := range byAccount {
		sort.Slice(list, func(i, j int) bool { return list[i].version < list[j].version })
		oldGrade, oldRefresh := noGrade, false
		var succ int64
		var window []applied
		for k, a := range list {
			require.Equal(t, int64(k+1), a.version, "%s: versions count the outcomes", account)
			if a.success {
				succ++
			}
			total := int64(k + 1)
			score := (succ*10000*2 + total) / (total * 2) // hundredths, half up
			grade := critical
			switch {
			case score >= 8000:
				grade = stable
			case score >= 5000:
				grade = unstable
			}
			window = append(window, a)
			// Newest first; ties by event id, descending.
			sort.Slice(window, func(i, j int) bool {
				if !window[i].occurredAt.Equal(window[j].occurredAt) {
					return window[i].occurredAt.After(window[j].occurredAt)
				}
				return bytes.Compare(window[i].eventID[:], window[j].eventID[:]) > 0
			})
			if len(window) > 10 {
				window = window[:10]
			}
			lead := 0
			for _, l := range window {
				if l.success {
					break
				}
				lead++
			}
			refresh := lead >= 3
			require.Equal(t, grade, a.resp.GetGrade(), "%s v%d: grade", account, a.version)
			require.Equal(t, refresh, a.resp.GetNeedsSessionRefresh(), "%s v%d: refresh", account, a.version)
			if grade != oldGrade || refresh != oldRefresh {
				expected = append(expected, transition{a.resp.GetId(), a.version, oldGrade, grade, oldRefresh, refresh})
			}
			oldGrade, oldRefresh = grade, refresh
		}
	}
	want.Store(int64(len(expected)))
	watchWG.Wait()

	perProfile := func(list []transition) map[string][]transition {
		out := map[string][]transition{}
		for _, tr := range list {
			out[tr.profileID] = append(out[tr.profileID], tr)
		}
		return out
	}
	wantPer := perProfile(expected)
	for _, tr := range wantPer {
		sort.Slice(tr, func(i, j int) bool { return tr[i].version < tr[j].version })
	}
	for i, r := range results {
		require.NoError(t, r.err, "watcher %d", i)
		assert.Len(t, r.got, len(expected), "watcher %d: every transition once", i)
		gotPer := perProfile(r.got)
		for id, want := range wantPer {
			// One profile at a time: the whole map would be pages long.
			assert.Equal(t, want, gotPer[id], "watcher %d, profile %s: every transition once, in order", i, id)
		}
		assert.Len(t, gotPer, len(wantPer), "watcher %d: no other profiles", i)
		assert.Positive(t, r.resumes, "watcher %d resumed", i)
		t.Logf("watcher %d: %d transitions, %d resumes", i, len(r.got), r.resumes)
	}
	// Watchers saw one order, whatever the replica.
	for i := 1; i < watchers; i++ {
		assert.Equal(t, results[0].got, results[i].got, "watcher %d sees watcher 0's stream", i)
	}
}

func TestWatchersOnTwoReplicasSeeTheSameStream(t *testing.T) {
	t.Parallel()
	pool := pgtestPool(t)
	a, b := replica(t, pool, watchConfig(nil)), replica(t, pool, watchConfig(nil))
	wa := openWatch(t, a, &profilev1.WatchProfileChangesRequest{})
	wb := openWatch(t, b, &profilev1.WatchProfileChangesRequest{})
	user := uuid.New()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := []profilev1.ProfileServiceClient{a, b}[i%2]
			for k := range 6 {
				o := success
				if k%2 == 1 {
					o = failed
				}
				record(t, client, login(user, fmt.Sprintf("acct-%d", i%3), o, base.Add(time.Duration(i*10+k)*time.Second)))
			}
		}()
	}
	wg.Wait()
	var n int
	require.NoError(t, pool.QueryRow(context.Background(), "SELECT count(*) FROM profile.profile_transitions").Scan(&n))
	require.Positive(t, n)
	gotA, gotB := wa.collect(n), wb.collect(n)
	assert.Equal(t, gotA, gotB)
	// And a resume on the other replica goes on where the first stopped.
	assert.NotEmpty(t, wa.cursor)
}

func TestWatchCursorErrors(t *testing.T) {
	t.Parallel()
	pool := pgtestPool(t)
	client := replica(t, pool, watchConfig(nil))
	ctx := context.Background()
	recvErr := func(req *profilev1.WatchProfileChangesRequest) error {
		s, err := client.WatchProfileChanges(ctx, req)
		require.NoError(t, err)
		_, err = s.Recv()
		require.Error(t, err)
		return err
	}

	for _, bad := range []string{"not base64!", "AAAA", "AgAAAAAAAAAAAAAAAAAAAAAA"} {
		err := recvErr(&profilev1.WatchProfileChangesRequest{Cursor: bad})
		assert.Equal(t, codes.InvalidArgument, status.Code(err), bad)
		assert.Equal(t, []string{"cursor"}, apptest.ViolatedFields(t, err), bad)
	}
	// A cursor ahead of every transaction: not this stream's.
	ahead := base64.RawURLEncoding.EncodeToString([]byte{1, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 1})
	err := recvErr(&profilev1.WatchProfileChangesRequest{Cursor: ahead})
	assert.Equal(t, codes.InvalidArgument, status.Code(err))

	// A cursor from before the pruned transitions: expired.
	w := openWatch(t, client, &profilev1.WatchProfileChangesRequest{})
	old := w.cursor
	user := uuid.New()
	record(t, client, login(user, "acct", success, base))
	record(t, client, login(user, "acct", failed, base.Add(time.Second)))
	require.Len(t, w.collect(2), 2)
	atWatermark := w.cursor
	n, err := store.New(pool, nil).PruneTransitions(ctx, time.Now().Add(time.Hour), 1000)
	require.NoError(t, err)
	require.Equal(t, int64(2), n)

	err = recvErr(&profilev1.WatchProfileChangesRequest{Cursor: old})
	assert.Equal(t, codes.OutOfRange, status.Code(err))
	assert.Contains(t, status.Convert(err).Message(), "ListProfiles")
	var reason string
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			reason = info.GetReason()
		}
	}
	assert.Equal(t, "CURSOR_EXPIRED", reason)

	// The cursor of the last transition pruned misses nothing: it resumes.
	resumed := openWatch(t, client, &profilev1.WatchProfileChangesRequest{Cursor: atWatermark})
	record(t, client, login(user, "acct", failed, base.Add(2*time.Second)))
	assert.Len(t, resumed.collect(1), 1)
}

func TestWatchFilterValidation(t *testing.T) {
	t.Parallel()
	pool := pgtestPool(t)
	client := replica(t, pool, watchConfig(nil))
	for _, tt := range []struct {
		req    *profilev1.WatchProfileChangesRequest
		fields []string
	}{
		{&profilev1.WatchProfileChangesRequest{GradesEntered: []profilev1.StabilityGrade{stable, 0}}, []string{"grades_entered[1]"}},
		{&profilev1.WatchProfileChangesRequest{GradesEntered: []profilev1.StabilityGrade{9}}, []string{"grades_entered[0]"}},
		{&profilev1.WatchProfileChangesRequest{UserId: "nope"}, []string{"user_id"}},
		{&profilev1.WatchProfileChangesRequest{PlatformAccountId: "acct"}, []string{"platform_account_id"}},
		{&profilev1.WatchProfileChangesRequest{UserId: uuid.NewString(), PlatformAccountId: " padded"}, []string{"platform_account_id"}},
		{&profilev1.WatchProfileChangesRequest{AuthType: 7}, []string{"auth_type"}},
	} {
		s, err := client.WatchProfileChanges(context.Background(), tt.req)
		require.NoError(t, err)
		_, err = s.Recv()
		assert.Equal(t, codes.InvalidArgument, status.Code(err), "%v", tt.req)
		assert.Equal(t, tt.fields, apptest.ViolatedFields(t, err), "%v", tt.req)
	}
}

// Each filter selects exactly what it says, whether the watch is live
// (filtered from the replica's memory) or resumes from an older cursor
// (filtered by the table's query).
func TestWatchFilters(t *testing.T) {
	t.Parallel()
	pool := pgtestPool(t)
	client := replica(t, pool, watchConfig(nil))
	u1, u2 := uuid.New(), uuid.New()
	twoFactor, normal := commonv1.AuthType_AUTH_TYPE_TWO_FACTOR, commonv1.AuthType_AUTH_TYPE_NORMAL

	type account struct {
		user uuid.UUID
		name string
	}
	cases := []struct {
		name  string
		req   *profilev1.WatchProfileChangesRequest
		match func(tr transition, a account, auth commonv1.AuthType) bool
	}{
		{"everything", &profilev1.WatchProfileChangesRequest{}, func(transition, account, commonv1.AuthType) bool { return true }},
		{"entered critical", &profilev1.WatchProfileChangesRequest{GradesEntered: []profilev1.StabilityGrade{critical}},
			func(tr transition, _ account, _ commonv1.AuthType) bool {
				return tr.newGrade == critical && tr.oldGrade != critical
			}},
		{"entered stable or unstable", &profilev1.WatchProfileChangesRequest{GradesEntered: []profilev1.StabilityGrade{stable, unstable, stable}},
			func(tr transition, _ account, _ commonv1.AuthType) bool {
				return tr.newGrade != tr.oldGrade && (tr.newGrade == stable || tr.newGrade == unstable)
			}},
		{"refresh became true", &profilev1.WatchProfileChangesRequest{RefreshBecameTrue: true},
			func(tr transition, _ account, _ commonv1.AuthType) bool { return tr.newRefresh && !tr.oldRefresh }},
		{"refresh became false", &profilev1.WatchProfileChangesRequest{RefreshBecameFalse: true},
			func(tr transition, _ account, _ commonv1.AuthType) bool { return !tr.newRefresh && tr.oldRefresh }},
		{"refresh changed", &profilev1.WatchProfileChangesRequest{RefreshBecameTrue: true, RefreshBecameFalse: true},
			func(tr transition, _ account, _ commonv1.AuthType) bool { return tr.newRefresh != tr.oldRefresh }},
		{"entered critical or refresh on", &profilev1.WatchProfileChangesRequest{GradesEntered: []profilev1.StabilityGrade{critical}, RefreshBecameTrue: true},
			func(tr transition, _ account, _ commonv1.AuthType) bool {
				return tr.newGrade == critical && tr.oldGrade != critical || tr.newRefresh && !tr.oldRefresh
			}},
		{"one user", &profilev1.WatchProfileChangesRequest{UserId: u1.String()},
			func(_ transition, a account, _ commonv1.AuthType) bool { return a.user == u1 }},
		{"one account", &profilev1.WatchProfileChangesRequest{UserId: u1.String(), PlatformAccountId: "b"},
			func(_ transition, a account, _ commonv1.AuthType) bool { return a == account{u1, "b"} }},
		{"two-factor", &profilev1.WatchProfileChangesRequest{AuthType: twoFactor},
			func(_ transition, _ account, auth commonv1.AuthType) bool { return auth == twoFactor }},
		{"normal, entered critical", &profilev1.WatchProfileChangesRequest{AuthType: normal, GradesEntered: []profilev1.StabilityGrade{critical}},
			func(tr transition, _ account, auth commonv1.AuthType) bool {
				return auth == normal && tr.newGrade == critical && tr.oldGrade != critical
			}},
	}

	all := openWatch(t, client, &profilev1.WatchProfileChangesRequest{})
	start := all.cursor
	live := make([]*stream, len(cases))
	for i, c := range cases {
		live[i] = openWatch(t, client, c.req)
	}

	// The script: each account's outcomes (s: success, f: failure).
	script := []struct {
		acct account
		auth commonv1.AuthType
		outs string
	}{
		{account{u1, "a"}, twoFactor, "sffffsss"},   // STABLE, UNSTABLE, CRITICAL, refresh on, off, ...
		{account{u1, "b"}, normal, "fssssfff"},      // CRITICAL, UNSTABLE, STABLE?, refresh on
		{account{u2, "c"}, 0, "fffss"},              // CRITICAL, refresh on, off
		{account{u2, "d"}, twoFactor, "ssfsfffffs"}, // STABLE, UNSTABLE, CRITICAL, refresh on, off
	}
	profileOf := map[string]account{}
	authOf := map[string]commonv1.AuthType{}
	for k := range 10 {
		for _, s := range script {
			if k >= len(s.outs) {
				continue
			}
			o := success
			if s.outs[k] == 'f' {
				o = failed
			}
			req := login(s.acct.user, s.acct.name, o, base.Add(time.Duration(k)*time.Second))
			req.AuthType = s.auth
			p := record(t, client, req)
			profileOf[p.GetId()] = s.acct
			authOf[p.GetId()] = s.auth
		}
	}
	var n int
	require.NoError(t, pool.QueryRow(context.Background(), "SELECT count(*) FROM profile.profile_transitions").Scan(&n))
	everything := all.collect(n)

	// A replica started now holds nothing older in memory: watches from
	// start read the table.
	later := replica(t, pool, watchConfig(nil))
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var want []transition
			for _, tr := range everything {
				if c.match(tr, profileOf[tr.profileID], authOf[tr.profileID]) {
					want = append(want, tr)
				}
			}
			require.NotEmpty(t, want, "the script has transitions for every case")
			if c.name != "everything" {
				require.Less(t, len(want), len(everything), "the filter leaves some out")
			}
			live[i].t = t
			assert.Equal(t, want, live[i].collect(len(want)), "live")
			req := proto.Clone(c.req).(*profilev1.WatchProfileChangesRequest)
			req.Cursor = start
			fromTable := openWatch(t, later, req)
			assert.Equal(t, want, fromTable.collect(len(want)), "from the table")
		})
	}
}

func TestWatchLimitAndIdleTimeout(t *testing.T) {
	t.Parallel()
	pool := pgtestPool(t)
	client := replica(t, pool, watchConfig(func(c *profilesvc.WatchConfig) {
		c.MaxWatchers = 2
		c.IdleTimeout = 1500 * time.Millisecond
	}))
	a := openWatch(t, client, &profilev1.WatchProfileChangesRequest{})
	openWatch(t, client, &profilev1.WatchProfileChangesRequest{})

	s, err := client.WatchProfileChanges(context.Background(), &profilev1.WatchProfileChangesRequest{})
	require.NoError(t, err)
	_, err = s.Recv()
	assert.Equal(t, codes.ResourceExhausted, status.Code(err), "a third watch on this replica")

	// A transition delivered restarts a's idle time; then, with nothing to
	// send, both end with OK after the idle timeout; their cursors resume.
	user := uuid.New()
	time.Sleep(500 * time.Millisecond)
	record(t, client, login(user, "acct", success, base))
	require.NotNil(t, a.next(time.Second), "delivered before a's idle timeout")
	sentAt := time.Now()
	for {
		msg, err := a.s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		require.Nil(t, msg.GetTransition())
		a.cursor = msg.GetCursor()
	}
	// The transition came 0.5 s into the watch: an idle time counted from
	// the start would have ended it 1 s later.
	assert.GreaterOrEqual(t, time.Since(sentAt), 1200*time.Millisecond, "idle time counts from the last transition")
	assert.Less(t, time.Since(sentAt), 5*time.Second)

	// The slots are free again once watches end.
	require.Eventually(t, func() bool {
		s, err := client.WatchProfileChanges(context.Background(), &profilev1.WatchProfileChangesRequest{Cursor: a.cursor})
		if err != nil {
			return false
		}
		_, err = s.Recv()
		return err == nil
	}, 5*time.Second, 50*time.Millisecond)
}

// A server that shuts down ends its watches at once, with UNAVAILABLE, so
// clients resume elsewhere, rather than holding the shutdown until its
// timeout (10 s in tests).
func TestShutdownEndsWatchesAtOnce(t *testing.T) {
	t.Parallel()
	pool := pgtestPool(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := lis.Addr().String()
	require.NoError(t, lis.Close())
	stop := apptest.ServePlaintextAt(t, addr, pool, nil, func(r server.Registrar) error {
		return profilesvc.Register(r, db.Pools{Primary: pool}, watchConfig(nil))
	})
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	w := openWatch(t, profilev1.NewProfileServiceClient(conn), &profilev1.WatchProfileChangesRequest{})

	start := time.Now()
	stop()
	assert.Less(t, time.Since(start), 3*time.Second, "the shutdown did not wait for the watch")
	_, err = w.s.Recv()
	assert.Equal(t, codes.Unavailable, status.Code(err))
}
