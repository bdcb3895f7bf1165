package store

import (
	"context"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/platforma/platforma/migrations"
	"github.com/platforma/platforma/services/kit/apptest"
	"github.com/platforma/platforma/services/kit/pgtest"
	"github.com/platforma/platforma/services/profile/internal/domain"
)

func TestMain(m *testing.M) { pgtest.Main(m, migrations.Profile) }

// The SQL functions behind the generated columns and the Go rules must
// give the same answers on the same inputs.
func TestSQLRulesAgreeWithGo(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewPool(t)

	t.Run("score", func(t *testing.T) {
		t.Parallel()
		var successes, totals []int64
		for total := int64(0); total <= 80; total++ {
			for success := int64(0); success <= total; success++ {
				successes, totals = append(successes, success), append(totals, total)
			}
		}
		rng := rand.New(rand.NewPCG(1, 2))
		for i := 0; i < 5000; i++ {
			total := rng.Int64N(10_000_000) + 1
			successes, totals = append(successes, rng.Int64N(total+1)), append(totals, total)
		}
		successes, totals = append(successes, 3, 1, 4999, 7999, 1), append(totals, 800, 32, 10000, 10000, 20000)
		rows, err := pool.Query(ctx, `
			SELECT (profile.stability_score(s, t) * 100)::bigint
			FROM unnest($1::bigint[], $2::bigint[]) WITH ORDINALITY AS u(s, t, n) ORDER BY n`, successes, totals)
		require.NoError(t, err)
		got, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		require.NoError(t, err)
		require.Len(t, got, len(totals))
		for i := range got {
			require.Equal(t, domain.ScoreHundredths(successes[i], totals[i]), got[i], "%d/%d", successes[i], totals[i])
		}
	})

	t.Run("grade", func(t *testing.T) {
		t.Parallel()
		rows, err := pool.Query(ctx, `SELECT h, profile.stability_grade(h / 100.0) FROM generate_series(0, 10000) h`)
		require.NoError(t, err)
		type row struct {
			Hundredths int64
			Grade      int16
		}
		got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[row])
		require.NoError(t, err)
		require.Len(t, got, 10001)
		for _, r := range got {
			require.Equal(t, int16(domain.Grade(r.Hundredths)), r.Grade, "score %d hundredths", r.Hundredths)
		}
	})

	t.Run("window merge and streak", func(t *testing.T) {
		t.Parallel()
		rng := rand.New(rand.NewPCG(3, 4))
		randomLogins := func(n int) []domain.Login {
			out := make([]domain.Login, n)
			for i := range out {
				// Few distinct times, so equal times and tie-breaks are common.
				out[i] = domain.Login{
					OccurredAt: time.Unix(1_790_000_000+rng.Int64N(8), 0).UTC(),
					Success:    rng.IntN(3) > 0,
					EventID:    uuid.New(),
				}
			}
			return out
		}
		for round := 0; round < 300; round++ {
			a := domain.MergeWindow(nil, randomLogins(rng.IntN(11)))
			b := randomLogins(rng.IntN(15))
			want := domain.MergeWindow(a, b)
			if len(want) == 0 {
				want = nil
			}
			got, streak := sqlMerge(t, pool, a, b)
			require.Equal(t, want, got, "round %d", round)
			require.Equal(t, domain.ConsecutiveFailures(want), streak, "round %d", round)
		}
	})
}

// sqlMerge runs profile.merge_logins and profile.leading_failures.
func sqlMerge(t *testing.T, pool *pgxpool.Pool, a, b []domain.Login) ([]domain.Login, int) {
	t.Helper()
	parts := func(w []domain.Login) ([]time.Time, []bool, []uuid.UUID) {
		ts, ok, ids := make([]time.Time, len(w)), make([]bool, len(w)), make([]uuid.UUID, len(w))
		for i, l := range w {
			ts[i], ok[i], ids[i] = l.OccurredAt, l.Success, l.EventID
		}
		return ts, ok, ids
	}
	at, as, ai := parts(a)
	bt, bs, bi := parts(b)
	const asArray = `ARRAY(SELECT ROW(t, s, e)::profile.login FROM unnest(%s::timestamptz[], %s::boolean[], %s::uuid[]) WITH ORDINALITY AS u(t, s, e, n) ORDER BY n)`
	sql := `WITH m AS (SELECT profile.merge_logins(` +
		strings.NewReplacer("%s::timestamptz", "$1::timestamptz", "%s::boolean", "$2::boolean", "%s::uuid", "$3::uuid").Replace(asArray) + `, ` +
		strings.NewReplacer("%s::timestamptz", "$4::timestamptz", "%s::boolean", "$5::boolean", "%s::uuid", "$6::uuid").Replace(asArray) +
		`) AS w) SELECT to_json(w), profile.leading_failures(w) FROM m`
	var logins []loginJSON
	var streak int
	require.NoError(t, pool.QueryRow(context.Background(), sql, at, as, ai, bt, bs, bi).Scan(&logins, &streak))
	out := make([]domain.Login, len(logins))
	for i, l := range logins {
		out[i] = domain.Login{OccurredAt: l.OccurredAt.UTC(), Success: l.Success, EventID: l.EventID}
	}
	if len(out) == 0 {
		out = nil
	}
	return out, streak
}

// countingTracer counts round trips: each query outside a batch, and each
// batch as a whole.
type countingTracer struct{ queries, batches atomic.Int64 }

func (c *countingTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.queries.Add(1)
	return ctx
}
func (c *countingTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (c *countingTracer) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	c.batches.Add(1)
	return ctx
}
func (c *countingTracer) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (c *countingTracer) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}

func TestBatchOfAThousandIsOneRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(pgtest.NewDatabase(t))
	require.NoError(t, err)
	tracer := &countingTracer{}
	cfg.ConnConfig.Tracer = tracer
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer pool.Close()
	st := New(pool)

	results := make([]LoginResult, 1000)
	for i := range results {
		results[i] = LoginResult{
			EventID:    uuid.New(),
			Account:    Account{UserID: uuid.New(), PlatformAccountID: "acct"},
			Success:    i%2 == 0,
			OccurredAt: time.Now().Add(-time.Duration(i) * time.Second),
		}
	}
	rec, err := st.RecordLoginResults(ctx, results)
	require.NoError(t, err)
	assert.Len(t, rec.Applied, 1000)
	assert.Len(t, rec.Profiles, 1000)
	assert.Equal(t, int64(1), tracer.batches.Load(), "all new: one round trip")
	assert.Equal(t, int64(0), tracer.queries.Load())

	rec, err = st.RecordLoginResults(ctx, results)
	require.NoError(t, err)
	assert.Empty(t, rec.Applied)
	assert.Len(t, rec.Owners, 1000)
	assert.Equal(t, int64(2), tracer.batches.Load())
	assert.Equal(t, int64(1), tracer.queries.Load(), "repeats: one more round trip for their owners")
}

func TestPurgeEventsDeletesOnlyExpiredAndTakesTurns(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewPool(t)
	_, err := pool.Exec(ctx, `
		INSERT INTO profile.login_events (event_id, user_id, platform_account_id, recorded_at)
		SELECT gen_random_uuid(), gen_random_uuid(), 'a', now() - make_interval(days => g)
		FROM generate_series(1, 50) g`)
	require.NoError(t, err)
	st := New(pool)

	// Another replica is purging: this one leaves it alone.
	holder, err := pool.Acquire(ctx)
	require.NoError(t, err)
	_, err = holder.Exec(ctx, `SELECT pg_advisory_lock(hashtext('profile.login_events purge'))`)
	require.NoError(t, err)
	n, err := st.PurgeEvents(ctx, time.Now().Add(-30*24*time.Hour), 7)
	require.NoError(t, err)
	assert.Zero(t, n)
	_, err = holder.Exec(ctx, `SELECT pg_advisory_unlock(hashtext('profile.login_events purge'))`)
	require.NoError(t, err)
	holder.Release()

	n, err = st.PurgeEvents(ctx, time.Now().Add(-30*24*time.Hour+time.Minute), 7)
	require.NoError(t, err)
	assert.Equal(t, int64(21), n, "days 30..50, in batches of 7")
	var left int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM profile.login_events`).Scan(&left))
	assert.Equal(t, 29, left)
}

func TestQueriesUseTheirIndexes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewPool(t)
	_, err := pool.Exec(ctx, `
		INSERT INTO profile.profiles (user_id, platform_account_id, auth_type, total_login_count, success_login_count)
		SELECT gen_random_uuid(), 'acct-' || g, g % 3, 100, (random() * 100)::int FROM generate_series(1, 50000) g;
		INSERT INTO profile.login_events (event_id, user_id, platform_account_id, recorded_at)
		SELECT gen_random_uuid(), gen_random_uuid(), 'a', now() - make_interval(mins => g) FROM generate_series(1, 100000) g;
		ANALYZE profile.profiles;
		ANALYZE profile.login_events`)
	require.NoError(t, err)
	var someID, someUser uuid.UUID
	require.NoError(t, pool.QueryRow(ctx, `SELECT id, user_id FROM profile.profiles LIMIT 1`).Scan(&someID, &someUser))

	t.Run("list: index range scan in order, no sort", func(t *testing.T) {
		t.Parallel()
		for _, q := range []ListQuery{
			{AfterHundredths: -1, AfterID: uuid.Max, BelowHundredths: 10001, Limit: 51},
			{AfterHundredths: 4999, AfterID: uuid.Max, BelowHundredths: 8000, AuthType: 1, Limit: 51},
			{AfterHundredths: 2500, AfterID: someID, BelowHundredths: 5000, Limit: 1001},
		} {
			p := apptest.Plan(t, pool, listProfiles, q.AfterHundredths, q.AfterID, q.BelowHundredths, q.AuthType, q.Limit)
			assert.Contains(t, p, `"Index Name":"profiles_score_id_idx"`, p)
			assert.Contains(t, p, `"Index Cond"`, p)
			assert.NotContains(t, p, `"Node Type":"Sort"`, p)
			assert.NotContains(t, p, `"Seq Scan"`, p)
		}
	})
	t.Run("get by id", func(t *testing.T) {
		t.Parallel()
		p := apptest.Plan(t, pool, `SELECT`+profileColumns+` FROM profile.profiles WHERE id = $1`, someID)
		assert.Contains(t, p, `"Index Name":"profiles_pkey"`, p)
	})
	t.Run("get by account", func(t *testing.T) {
		t.Parallel()
		p := apptest.Plan(t, pool, `SELECT`+profileColumns+` FROM profile.profiles WHERE user_id = $1 AND platform_account_id = $2`, someUser, "acct-1")
		assert.Contains(t, p, `"Index Name":"profiles_account_key"`, p)
	})
	t.Run("apply: account lookups by the unique key", func(t *testing.T) {
		t.Parallel()
		p := apptest.Plan(t, pool, profilesByAccount, []uuid.UUID{someUser}, []string{"acct-1"})
		assert.Contains(t, p, `"Index Name":"profiles_account_key"`, p)
	})
	t.Run("purge: BRIN range of old events", func(t *testing.T) {
		t.Parallel()
		p := apptest.Plan(t, pool, purgeEvents, time.Now().Add(-1600*time.Hour), 10000)
		assert.Contains(t, p, `"Index Name":"login_events_recorded_at_brin"`, p)
	})
}
