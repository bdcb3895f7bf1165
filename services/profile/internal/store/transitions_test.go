package store

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/platforma/platforma/services/kit/apptest"
	"github.com/platforma/platforma/services/kit/db"
	"github.com/platforma/platforma/services/kit/pgtest"
	"github.com/platforma/platforma/services/profile/internal/domain"
)

// insertTransition is a transition row as the tests want it; tx and id
// come from their defaults.
const insertTransition = `
INSERT INTO profile.profile_transitions (profile_id, user_id, platform_account_id, auth_type,
	total_login_count, success_login_count, consecutive_failures, version, update_time,
	session_stability_score, old_grade, new_grade, old_needs_session_refresh, new_needs_session_refresh,
	event_id, success, occurred_at)
VALUES (gen_random_uuid(), $1, $2, $3, 1, 1, 0, 1, now(), 100, $4, $5, $6, $7, gen_random_uuid(), true, now())`

type row struct {
	user       uuid.UUID
	account    string
	auth       int16
	oldG, newG int16
	oldR, newR bool
}

// execer is a pool or a transaction.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

func insertRow(t *testing.T, q execer, r row) {
	t.Helper()
	_, err := q.Exec(context.Background(), insertTransition, [16]byte(r.user), r.account, r.auth, r.oldG, r.newG, r.oldR, r.newR)
	require.NoError(t, err)
}

func readAll(t *testing.T, st *Store, from Position, f TransitionFilter) Page {
	t.Helper()
	page, err := st.ReadTransitions(context.Background(), from, f, 100000)
	require.NoError(t, err)
	return page
}

func TestWatchQueryWalksThePrimaryKey(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	ctx := context.Background()
	_, err := pool.Exec(ctx, `
INSERT INTO profile.profile_transitions (profile_id, user_id, platform_account_id, auth_type,
	total_login_count, success_login_count, consecutive_failures, version, update_time,
	session_stability_score, old_grade, new_grade, old_needs_session_refresh, new_needs_session_refresh,
	event_id, success, occurred_at)
SELECT gen_random_uuid(), gen_random_uuid(), 'acct', g % 3, 1, 1, 0, 1, now(), 100, g % 4, 1 + g % 3, false, g % 5 = 0,
	gen_random_uuid(), true, now()
FROM generate_series(1, 20000) g`)
	require.NoError(t, err)
	// A second transaction, so the range from the cursor is a small part.
	_, err = pool.Exec(ctx, `
INSERT INTO profile.profile_transitions (profile_id, user_id, platform_account_id, auth_type,
	total_login_count, success_login_count, consecutive_failures, version, update_time,
	session_stability_score, old_grade, new_grade, old_needs_session_refresh, new_needs_session_refresh,
	event_id, success, occurred_at)
SELECT gen_random_uuid(), gen_random_uuid(), 'acct', g % 3, 1, 1, 0, 1, now(), 100, g % 4, 1 + g % 3, false, g % 5 = 0,
	gen_random_uuid(), true, now()
FROM generate_series(1, 1000) g;
ANALYZE profile.profile_transitions`)
	require.NoError(t, err)
	user := uuid.New()
	// A watch is near the end of the stream: from the 200th newest.
	var tx string
	var id int64
	require.NoError(t, pool.QueryRow(ctx, "SELECT tx::text, id FROM profile.profile_transitions ORDER BY tx DESC, id DESC OFFSET 200 LIMIT 1").Scan(&tx, &id))
	for _, args := range [][]any{
		{tx, id, 500, true, []int16{}, false, false, nil, nil, 0},
		{tx, id, 500, false, []int16{3}, true, false, nil, nil, 2},
		{tx, id, 500, true, []int16{}, false, false, [16]byte(user), "acct", 0},
	} {
		plan := apptest.Plan(t, pool, TransitionsAfter, args...)
		var nodes []map[string]any
		require.NoError(t, json.Unmarshal([]byte(plan), &nodes))
		scans := scansOf(nodes[0]["Plan"].(map[string]any), "profile_transitions")
		assert.Equal(t, []string{"Index Scan profile_transitions_pkey"}, scans, "%v", args)
	}
}

// scansOf lists how plan reads relation: node type and index.
func scansOf(plan map[string]any, relation string) []string {
	var out []string
	if plan["Relation Name"] == relation {
		out = append(out, fmt.Sprint(plan["Node Type"], " ", plan["Index Name"]))
	}
	children, _ := plan["Plans"].([]any)
	for _, c := range children {
		out = append(out, scansOf(c.(map[string]any), relation)...)
	}
	return out
}

// The order of one profile's transitions is the order of its writers:
// a writer waiting for the profile holds no transaction id yet, so it
// gets one larger than the writer it waited for.
func TestAWriterWaitingForAProfileHasNoTransactionIDYet(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	st := New(pool, nil)
	ctx := context.Background()
	a := Account{UserID: uuid.New(), PlatformAccountID: "acct"}
	now := time.Now().Truncate(time.Second)

	// The first writer, held open after its statements.
	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	_, err = tx.Exec(ctx, applyLogins, db.UUIDs([]uuid.UUID{uuid.New()}), db.UUIDs([]uuid.UUID{a.UserID}), []string{a.PlatformAccountID},
		[]bool{true}, []int16{0}, []time.Time{now}, 3)
	require.NoError(t, err)
	var firstXID string
	require.NoError(t, tx.QueryRow(ctx, "SELECT pg_current_xact_id()::text").Scan(&firstXID))

	// The second writer: a failure, which makes the profile UNSTABLE.
	done := make(chan error, 1)
	go func() {
		_, err := st.RecordLoginResults(ctx, []LoginResult{{EventID: uuid.New(), Account: a, Success: false, OccurredAt: now.Add(time.Second)}}, 3)
		done <- err
	}()
	var waitingXID *string
	require.Eventually(t, func() bool {
		err := pool.QueryRow(ctx, `
SELECT backend_xid::text FROM pg_stat_activity
WHERE datname = current_database() AND wait_event_type = 'Lock' AND wait_event = 'advisory'`).Scan(&waitingXID)
		return err == nil
	}, 10*time.Second, 10*time.Millisecond, "the second writer waits for the profile's advisory lock")
	assert.Nil(t, waitingXID, "waiting with no transaction id")

	require.NoError(t, tx.Commit(ctx))
	require.NoError(t, <-done)

	page := Page{Transitions: waitForAll(t, st, 2)}
	assert.Equal(t, firstXID, strconv.FormatUint(page.Transitions[0].Pos.Tx, 10))
	assert.Less(t, page.Transitions[0].Pos.Tx, page.Transitions[1].Pos.Tx)
	assert.Equal(t, []int64{1, 2}, []int64{page.Transitions[0].Version, page.Transitions[1].Version})
	assert.Equal(t, [2]int16{0, 1}, [2]int16{page.Transitions[0].OldGrade, page.Transitions[0].NewGrade})
	assert.Equal(t, [2]int16{1, 2}, [2]int16{page.Transitions[1].OldGrade, page.Transitions[1].NewGrade})
}

// Nothing is delivered past a transaction still running: once it commits,
// its transition comes before the later ones, not behind a cursor already
// handed out.
func TestReadsStopBelowTheOldestRunningTransaction(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	st := New(pool, nil)
	ctx := context.Background()
	user := uuid.New()

	slow, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = slow.Rollback(ctx) }()
	insertRow(t, slow, row{user: user, account: "slow", newG: 1})
	insertRow(t, pool, row{user: user, account: "fast", newG: 1})

	page := readAll(t, st, Position{}, TransitionFilter{})
	assert.Empty(t, page.Transitions, "the fast one waits behind the slow one")
	require.NoError(t, slow.Commit(ctx))

	// pg_current_snapshot's xmin may lag for other databases' transactions
	// of the cluster (parallel tests): wait for both.
	var got []Transition
	pos := page.Next
	require.Eventually(t, func() bool {
		p := readAll(t, st, pos, TransitionFilter{})
		got, pos = append(got, p.Transitions...), p.Next
		return len(got) >= 2
	}, 10*time.Second, 10*time.Millisecond)
	require.Len(t, got, 2)
	assert.Equal(t, []string{"slow", "fast"}, []string{got[0].Account.PlatformAccountID, got[1].Account.PlatformAccountID})
}

func TestFiltersInSQLAndInMemoryAgree(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	st := New(pool, nil)
	rng := rand.New(rand.NewPCG(1, 2))
	users := []uuid.UUID{uuid.New(), uuid.New(), uuid.New()}
	accounts := []string{"a", "b"}
	var rows []row
	for range 400 {
		old := int16(rng.IntN(4))
		rows = append(rows, row{
			user: users[rng.IntN(3)], account: accounts[rng.IntN(2)], auth: int16(rng.IntN(3)),
			oldG: old, newG: int16(1 + rng.IntN(3)), oldR: rng.IntN(2) == 0, newR: rng.IntN(2) == 0,
		})
	}
	for _, r := range rows {
		insertRow(t, pool, r)
	}
	all := waitForAll(t, st, len(rows))

	for range 300 {
		var f TransitionFilter
		for g := int16(1); g <= 3; g++ {
			if rng.IntN(3) == 0 {
				f.GradesEntered = append(f.GradesEntered, g)
			}
		}
		f.RefreshBecameTrue, f.RefreshBecameFalse = rng.IntN(3) == 0, rng.IntN(3) == 0
		if rng.IntN(3) == 0 {
			u := users[rng.IntN(3)]
			f.UserID = &u
			if rng.IntN(2) == 0 {
				a := accounts[rng.IntN(2)]
				f.PlatformAccountID = &a
			}
		}
		if rng.IntN(3) == 0 {
			f.AuthType = int16(1 + rng.IntN(2))
		}
		var want []Transition
		for _, tr := range all {
			if f.Matches(tr) {
				want = append(want, tr)
			}
		}
		got := readAll(t, st, Position{}, f).Transitions
		require.Equal(t, len(want), len(got), "%+v", f)
		for i := range want {
			require.Equal(t, want[i].Pos, got[i].Pos, "%+v", f)
		}
	}
}

// waitForAll reads from the start until n transitions are readable.
func waitForAll(t *testing.T, st *Store, n int) []Transition {
	t.Helper()
	var all []Transition
	require.Eventually(t, func() bool {
		all = readAll(t, st, Position{}, TransitionFilter{}).Transitions
		return len(all) == n
	}, 10*time.Second, 10*time.Millisecond)
	return all
}

func TestPruningDeletesAPrefixAndMovesTheWatermark(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	st := New(pool, nil)
	ctx := context.Background()
	user := uuid.New()
	for range 10 {
		insertRow(t, pool, row{user: user, account: "a", newG: 1})
	}
	all := waitForAll(t, st, 10)
	// The first seven are old, but the fifth is recent: pruning stops there
	// (a prefix of the stream, or the watermark would lie).
	for i, tr := range all {
		age := time.Hour
		if i < 7 && i != 4 {
			age = 8 * 24 * time.Hour
		}
		_, err := pool.Exec(ctx, "UPDATE profile.profile_transitions SET recorded_at = now() - $1::interval WHERE id = $2", age, tr.Pos.ID)
		require.NoError(t, err)
	}
	n, err := st.PruneTransitions(ctx, time.Now().Add(-7*24*time.Hour), 3)
	require.NoError(t, err)
	assert.Equal(t, int64(4), n)
	b, err := st.Bounds(ctx)
	require.NoError(t, err)
	assert.Equal(t, all[3].Pos, b.Watermark)

	_, err = st.ReadTransitions(ctx, Position{}, TransitionFilter{}, 100)
	assert.ErrorIs(t, err, domain.ErrCursorExpired)
	_, err = st.ReadTransitions(ctx, all[2].Pos, TransitionFilter{}, 100)
	assert.ErrorIs(t, err, domain.ErrCursorExpired, "a transition after it is gone")
	page, err := st.ReadTransitions(ctx, all[3].Pos, TransitionFilter{}, 100)
	require.NoError(t, err, "nothing after the watermark is gone")
	assert.Equal(t, positions(all[4:]), positions(page.Transitions))

	// Pages: a full page ends at its last transition.
	page, err = st.ReadTransitions(ctx, all[3].Pos, TransitionFilter{}, 2)
	require.NoError(t, err)
	assert.Equal(t, all[5].Pos, page.Next)

	// Nothing more is old enough.
	n, err = st.PruneTransitions(ctx, time.Now().Add(-7*24*time.Hour), 3)
	require.NoError(t, err)
	assert.Zero(t, n)
}

func positions(list []Transition) []Position {
	out := make([]Position, len(list))
	for i, t := range list {
		out[i] = t.Pos
	}
	return out
}
