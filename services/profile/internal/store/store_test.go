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

// The SQL functions behind the generated columns and their Go oracle
// (oracle_test.go) must give the same answers on the same inputs.
func TestSQLRulesAgreeWithTheOracle(t *testing.T) {
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
		got := sqlScores(t, pool, successes, totals)
		for i := range got {
			require.Equal(t, oracleScoreHundredths(successes[i], totals[i]), got[i], "%d/%d", successes[i], totals[i])
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
			require.Equal(t, oracleGrade(r.Hundredths), r.Grade, "score %d hundredths", r.Hundredths)
		}
	})

	t.Run("grade ranges hold exactly their grade", func(t *testing.T) {
		t.Parallel()
		// ListProfiles' grade filter and the stored grade read the same
		// thresholds: every score is inside the range of its own grade
		// and of no other; grade 0 (any) holds every score.
		var outside int
		require.NoError(t, pool.QueryRow(ctx, `
			SELECT count(*) FROM generate_series(0, 10000) h, generate_series(0, 3) g
			WHERE (h / 100.0 >= profile.grade_floor(g) AND h / 100.0 < profile.grade_ceiling(g))
				<> (g = 0 OR g = profile.stability_grade(h / 100.0))`).Scan(&outside))
		assert.Zero(t, outside)
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
			a := oracleMergeWindow(nil, randomLogins(rng.IntN(11)))
			b := randomLogins(rng.IntN(15))
			want := oracleMergeWindow(a, b)
			if len(want) == 0 {
				want = nil
			}
			got, streak := sqlMerge(t, pool, a, b)
			require.Equal(t, want, got, "round %d", round)
			require.Equal(t, oracleLeadingFailures(want), streak, "round %d", round)
		}
	})
}

// The rules' defining cases, asserted on the SQL that executes them.
func TestScoreRounding(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	tests := []struct {
		success, total int64
		want           int64
	}{
		{0, 0, 0},
		{0, 5, 0},
		{5, 5, 10000},
		{2, 3, 6667}, // 66.666… → 66.67
		{1, 3, 3333}, // 33.333… → 33.33
		{1, 8, 1250},
		{1, 32, 313}, // 3.125 → 3.13: halves round up
		{3, 800, 38}, // 0.375 → 0.38, where float64 arithmetic gives 0.37
		{4999, 10000, 4999},
		{7999, 10000, 7999},
		{1, 20000, 1},  // 0.005 → 0.01: half a hundredth rounds up
		{1, 200000, 0}, // 0.0005 → 0.00
		{999999, 1000000, 10000},
	}
	var successes, totals []int64
	for _, tt := range tests {
		successes, totals = append(successes, tt.success), append(totals, tt.total)
	}
	got := sqlScores(t, pool, successes, totals)
	for i, tt := range tests {
		assert.Equal(t, tt.want, got[i], "%d/%d", tt.success, tt.total)
		assert.Equal(t, tt.want, oracleScoreHundredths(tt.success, tt.total), "oracle %d/%d", tt.success, tt.total)
	}
}

// rule:grade-thresholds, pinned from the API's side.
func TestGradeBoundaries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.NewPool(t)
	tests := []struct {
		hundredths int64
		want       int16
	}{
		{0, gradeCritical},
		{4999, gradeCritical},
		{5000, gradeUnstable},
		{7999, gradeUnstable},
		{8000, gradeStable},
		{10000, gradeStable},
	}
	for _, tt := range tests {
		var grade int16
		var inRange bool
		require.NoError(t, pool.QueryRow(ctx, `
			SELECT profile.stability_grade($1 / 100.0),
				$1 / 100.0 >= profile.grade_floor($2) AND $1 / 100.0 < profile.grade_ceiling($2)`,
			tt.hundredths, int32(tt.want)).Scan(&grade, &inRange))
		assert.Equal(t, tt.want, grade, "%d", tt.hundredths)
		assert.True(t, inRange, "%d inside the range of its grade", tt.hundredths)
		assert.Equal(t, tt.want, oracleGrade(tt.hundredths), "oracle %d", tt.hundredths)
	}
}

func TestGradeRangesComeFromTheDatabase(t *testing.T) {
	t.Parallel()
	ranges, err := New(pgtest.NewPool(t), nil).GradeRanges(context.Background())
	require.NoError(t, err)
	assert.Equal(t, map[int16]GradeRange{
		0:             {0, 100000},
		gradeStable:   {8000, 100000},
		gradeUnstable: {5000, 8000},
		gradeCritical: {0, 5000},
	}, ranges)
}

func TestWindowMergeCases(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	at := func(minute int, success bool) domain.Login {
		return domain.Login{
			OccurredAt: time.Date(2026, 11, 21, 10, minute, 0, 0, time.UTC),
			Success:    success,
			EventID:    uuid.NewSHA1(uuid.NameSpaceOID, []byte{byte(minute), 1}),
		}
	}
	minutes := func(w []domain.Login) []int {
		out := make([]int, len(w))
		for i, l := range w {
			out[i] = l.OccurredAt.Minute()
		}
		return out
	}
	merge := func(a, b []domain.Login) []domain.Login {
		got, _ := sqlMerge(t, pool, a, b)
		return got
	}
	var window []domain.Login
	for m := 1; m <= 12; m++ {
		window = merge(window, []domain.Login{at(m, true)})
	}
	assert.Equal(t, []int{12, 11, 10, 9, 8, 7, 6, 5, 4, 3}, minutes(window), "keeps the 10 newest, newest first")
	assert.Len(t, window, domain.WindowSize, "rule:login-window")

	late := merge(window, []domain.Login{at(7, false)})
	assert.Equal(t, []int{12, 11, 10, 9, 8, 7, 7, 6, 5, 4}, minutes(late), "a late login lands by its time")

	tooOld := merge(window, []domain.Login{at(2, false)})
	assert.Equal(t, minutes(window), minutes(tooOld), "a login older than the whole full window falls out")

	batch := merge(nil, []domain.Login{at(3, true), at(9, false), at(1, true)})
	assert.Equal(t, []int{9, 3, 1}, minutes(batch), "a batch in any order")

	same := at(5, true)
	other := same
	other.EventID = uuid.Max
	tie := merge([]domain.Login{same}, []domain.Login{other})
	assert.Equal(t, uuid.Max, tie[0].EventID, "equal times: the larger event id counts as newer")
}

func TestLeadingFailuresCases(t *testing.T) {
	t.Parallel()
	pool := pgtest.NewPool(t)
	at := func(minute int, success bool) domain.Login {
		return domain.Login{OccurredAt: time.Date(2026, 11, 21, 10, minute, 0, 0, time.UTC), Success: success, EventID: uuid.New()}
	}
	tests := []struct {
		name   string
		window []domain.Login // newest first
		streak int
	}{
		{"empty", nil, 0},
		{"newest succeeded", []domain.Login{at(5, true), at(4, false), at(3, false)}, 0},
		{"two failures", []domain.Login{at(5, false), at(4, false), at(3, true)}, 2},
		{"three failures", []domain.Login{at(5, false), at(4, false), at(3, false), at(2, true)}, 3},
		{"only failures", []domain.Login{at(5, false), at(4, false), at(3, false), at(2, false)}, 4},
	}
	for _, tt := range tests {
		_, streak := sqlMerge(t, pool, tt.window, nil)
		assert.Equal(t, tt.streak, streak, tt.name)
		assert.Equal(t, tt.streak, oracleLeadingFailures(tt.window), "oracle: "+tt.name)
	}
}

// sqlScores runs profile.stability_score on each pair, in hundredths.
func sqlScores(t *testing.T, pool *pgxpool.Pool, successes, totals []int64) []int64 {
	t.Helper()
	rows, err := pool.Query(context.Background(), `
		SELECT (profile.stability_score(s, t) * 100)::bigint
		FROM unnest($1::bigint[], $2::bigint[]) WITH ORDINALITY AS u(s, t, n) ORDER BY n`, successes, totals)
	require.NoError(t, err)
	got, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	require.NoError(t, err)
	require.Len(t, got, len(totals))
	return got
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
	st := New(pool, nil)

	results := make([]LoginResult, 1000)
	for i := range results {
		results[i] = LoginResult{
			EventID:    uuid.New(),
			Account:    Account{UserID: uuid.New(), PlatformAccountID: "acct"},
			Success:    i%2 == 0,
			OccurredAt: time.Now().Add(-time.Duration(i) * time.Second),
		}
	}
	rec, err := st.RecordLoginResults(ctx, results, 3)
	require.NoError(t, err)
	assert.Len(t, rec.Applied, 1000)
	assert.Len(t, rec.Profiles, 1000)
	assert.Equal(t, int64(1), tracer.batches.Load(), "all new: one round trip")
	assert.Equal(t, int64(0), tracer.queries.Load())

	rec, err = st.RecordLoginResults(ctx, results, 3)
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
	st := New(pool, nil)

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
			{AfterHundredths: -1, AfterID: uuid.Max, BelowHundredths: 10001, Grade: gradeUnstable, AuthType: 1, Limit: 51},
			{AfterHundredths: 2500, AfterID: someID, BelowHundredths: 10001, Grade: gradeCritical, Limit: 1001},
			{AfterHundredths: 2500, AfterID: someID, BelowHundredths: 5000, Limit: 1001},
		} {
			p := apptest.Plan(t, pool, listProfiles, q.AfterHundredths, q.AfterID, q.BelowHundredths, q.AuthType, q.Limit, q.Grade)
			assert.Contains(t, p, `"Index Name":"profiles_score_id_idx"`, p)
			assert.Contains(t, p, `"Index Cond"`, p)
			assert.NotContains(t, p, `"Node Type":"Sort"`, p)
			assert.NotContains(t, p, `"Seq Scan"`, p)
		}
		// The grade's range bounds the scan itself (the thresholds folded
		// into the index condition), rather than filtering rows read.
		p := apptest.Plan(t, pool, listProfiles, int64(-1), uuid.Max, int64(10001), int16(0), 51, int16(gradeUnstable))
		assert.Contains(t, p, `session_stability_score \u003e= '50'::numeric`, p)
		assert.Contains(t, p, `session_stability_score \u003c '80'::numeric`, p)
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
