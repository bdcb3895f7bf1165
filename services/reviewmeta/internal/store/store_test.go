package store

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	reviewmetav1 "github.com/platforma/platforma/gen/platforma/reviewmeta/v1"
	"github.com/platforma/platforma/migrations"
	"github.com/platforma/platforma/services/kit/apptest"
	"github.com/platforma/platforma/services/kit/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m, migrations.ReviewMeta) }

var states = []reviewmetav1.ReplyState{
	reviewmetav1.ReplyState_REPLY_STATE_UNSPECIFIED,
	reviewmetav1.ReplyState_REPLY_STATE_NOT_ATTEMPTED,
	reviewmetav1.ReplyState_REPLY_STATE_SUCCEEDED,
	reviewmetav1.ReplyState_REPLY_STATE_FAILED,
	reviewmetav1.ReplyState_REPLY_STATE_PENDING,
}

// Each reply-state filter selects, in SQL, the reviews the rule's
// defining cases say.
func TestStateFilterCases(t *testing.T) {
	t.Parallel()
	const (
		anyState     = reviewmetav1.ReplyState_REPLY_STATE_UNSPECIFIED
		notAttempted = reviewmetav1.ReplyState_REPLY_STATE_NOT_ATTEMPTED
		succeeded    = reviewmetav1.ReplyState_REPLY_STATE_SUCCEEDED
		failed       = reviewmetav1.ReplyState_REPLY_STATE_FAILED
		pending      = reviewmetav1.ReplyState_REPLY_STATE_PENDING
		booking      = int16(reviewmetav1.ReviewType_REVIEW_TYPE_BOOKING) // takes replies
		pickup       = int16(reviewmetav1.ReviewType_REVIEW_TYPE_PICKUP)  // takes none
	)
	tests := []struct {
		attempted, success bool
		reviewType         int16
		matches            []reviewmetav1.ReplyState
	}{
		{false, false, booking, []reviewmetav1.ReplyState{anyState, notAttempted, pending}},
		{false, false, pickup, []reviewmetav1.ReplyState{anyState, notAttempted}},
		{true, false, booking, []reviewmetav1.ReplyState{anyState, failed, pending}},
		{true, false, pickup, []reviewmetav1.ReplyState{anyState, failed}},
		{true, true, booking, []reviewmetav1.ReplyState{anyState, succeeded}},
	}
	ctx := context.Background()
	pool := pgtest.NewPool(t)
	st := New(pool)
	for _, tt := range tests {
		shop := uuid.New()
		_, err := pool.Exec(ctx, `
			INSERT INTO reviewmeta.review_metadata (review_id, shop_id, review_type, has_booking_detail, fetched_at,
				reply_attempted, reply_success, reply_attempt_count)
			VALUES ($1, $2, $3, false, now(), $4, $5, $6)`,
			uuid.New(), shop, tt.reviewType, tt.attempted, tt.success, map[bool]int{true: 1}[tt.attempted])
		require.NoError(t, err)
		var got, oracle []reviewmetav1.ReplyState
		for _, f := range states {
			rows, err := st.List(ctx, ListQuery{ShopID: shop, State: f, Limit: 10})
			require.NoError(t, err)
			if len(rows) == 1 {
				got = append(got, f)
			}
			if oracleMatches(f, tt.attempted, tt.success, tt.reviewType == booking) {
				oracle = append(oracle, f)
			}
		}
		assert.Equal(t, tt.matches, got, "attempted=%v success=%v type=%d", tt.attempted, tt.success, tt.reviewType)
		assert.Equal(t, tt.matches, oracle, "oracle: attempted=%v success=%v type=%d", tt.attempted, tt.success, tt.reviewType)
	}
}

// The SQL state filters select exactly what the oracle selects.
func TestStateFiltersAgreeWithTheOracle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewPool(t)
	shop := uuid.New()
	rng := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 300; i++ {
		attempted := rng.IntN(3) > 0
		_, err := pool.Exec(ctx, `
			INSERT INTO reviewmeta.review_metadata (review_id, shop_id, review_type, has_booking_detail, fetched_at,
				reply_attempted, reply_success, reply_attempt_count)
			VALUES ($1, $2, $3, false, now(), $4, $5, $6)`,
			uuid.New(), shop, int16(1+rng.IntN(3)), attempted, attempted && rng.IntN(2) == 0, map[bool]int{true: 1}[attempted])
		require.NoError(t, err)
	}
	st := New(pool)
	all, err := st.List(ctx, ListQuery{ShopID: shop, Limit: 1000})
	require.NoError(t, err)
	require.Len(t, all, 300)
	for _, state := range states {
		got, err := st.List(ctx, ListQuery{ShopID: shop, State: state, Limit: 1000})
		require.NoError(t, err)
		var want []uuid.UUID
		for _, r := range all {
			if oracleMatches(state, r.ReplyAttempted, r.ReplySuccess, r.AcceptsReplies) {
				want = append(want, r.ReviewID)
			}
		}
		var ids []uuid.UUID
		for _, r := range got {
			ids = append(ids, r.ReviewID)
		}
		assert.Equal(t, want, ids, state.String())
	}
}

func TestQueriesUseTheirIndexes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewPool(t)
	// 200 shops × 500 reviews, nine in ten replied, and one big shop of
	// 30,000 reviews of which a third still wait for a reply.
	_, err := pool.Exec(ctx, `
		INSERT INTO reviewmeta.review_metadata (review_id, shop_id, external_shop_id, review_type, has_booking_detail,
			fetched_at, create_time, reply_attempted, reply_success, reply_attempt_count, last_reply_attempt_time)
		SELECT gen_random_uuid(), s.id, 'ext-' || s.n, 1 + g % 3, g % 3 = 0,
			now(), now() - make_interval(secs => g), g % 10 <> 0, g % 10 <> 0, (g % 10 <> 0)::int,
			CASE WHEN g % 10 <> 0 THEN now() - make_interval(mins => g) END
		FROM (SELECT n, gen_random_uuid() AS id FROM generate_series(1, 200) n) s, generate_series(1, 500) g;
		INSERT INTO reviewmeta.review_metadata (review_id, shop_id, external_shop_id, review_type, has_booking_detail,
			fetched_at, create_time, reply_attempted, reply_success, reply_attempt_count, last_reply_attempt_time)
		SELECT gen_random_uuid(), '00000000-0000-0000-0000-00000000b16b', 'ext-big', 1 + g % 3, g % 3 = 0,
			now(), now() - make_interval(secs => g), g % 3 <> 0, g % 3 <> 0, (g % 3 <> 0)::int,
			CASE WHEN g % 3 <> 0 THEN now() - make_interval(mins => g) END
		FROM generate_series(1, 30000) g;
		ANALYZE reviewmeta.review_metadata`)
	require.NoError(t, err)
	var small uuid.UUID
	require.NoError(t, pool.QueryRow(ctx, `SELECT shop_id FROM reviewmeta.review_metadata WHERE external_shop_id = 'ext-7' LIMIT 1`).Scan(&small))
	big := uuid.MustParse("00000000-0000-0000-0000-00000000b16b")

	for _, tc := range []struct {
		state reviewmetav1.ReplyState
		index string
	}{
		{reviewmetav1.ReplyState_REPLY_STATE_UNSPECIFIED, "review_metadata_shop_idx"},
		{reviewmetav1.ReplyState_REPLY_STATE_SUCCEEDED, "review_metadata_shop_idx"},
		{reviewmetav1.ReplyState_REPLY_STATE_PENDING, "review_metadata_shop_unreplied_idx"},
		{reviewmetav1.ReplyState_REPLY_STATE_FAILED, "review_metadata_shop_unreplied_idx"},
		{reviewmetav1.ReplyState_REPLY_STATE_NOT_ATTEMPTED, "review_metadata_shop_unreplied_idx"},
	} {
		sql, err := listSQL("shop_id", tc.state)
		require.NoError(t, err)
		for _, before := range []any{infinity, time.Now().Add(-5000 * time.Second)} {
			p := apptest.Plan(t, pool, sql, small, before, uuid.Max, int16(0), 51)
			assert.Contains(t, p, `"Index Name":"`+tc.index+`"`, "%s, small shop", tc.state)
			// A big shop: walk the index in order and stop after a page.
			p = apptest.Plan(t, pool, sql, big, before, uuid.Max, int16(0), 51)
			assert.Contains(t, p, `"Index Name":"`+tc.index+`"`, "%s, big shop", tc.state)
			assert.Contains(t, p, `"Node Type":"Index Scan"`, "%s, big shop", tc.state)
			assert.NotContains(t, p, `"Node Type":"Sort"`, "%s, big shop: the index gives the order", tc.state)
		}
	}
	sql, err := listSQL("external_shop_id", reviewmetav1.ReplyState_REPLY_STATE_UNSPECIFIED)
	require.NoError(t, err)
	p := apptest.Plan(t, pool, sql, "ext-big", infinity, uuid.Max, int16(0), 51)
	assert.Contains(t, p, `"Index Name":"review_metadata_external_shop_idx"`)
	assert.NotContains(t, p, `"Node Type":"Sort"`)

	p = apptest.Plan(t, pool, `SELECT review_type, count(*) FROM reviewmeta.review_metadata
		WHERE reply_attempted AND last_reply_attempt_time >= $1 GROUP BY review_type`, time.Now().Add(-time.Hour))
	assert.Contains(t, p, `"Index Name":"review_metadata_last_reply_idx"`, "GetReplyStats since")
	p = apptest.Plan(t, pool, `SELECT review_type, count(*) FROM reviewmeta.review_metadata
		WHERE reply_attempted AND shop_id = $1 GROUP BY review_type`, small)
	assert.Contains(t, p, `"Index Name":"review_metadata_shop_idx"`, "GetReplyStats of a shop")
}
