package profilesvc_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	profilev1 "github.com/platforma/platforma/gen/platforma/profile/v1"
	"github.com/platforma/platforma/migrations"
	"github.com/platforma/platforma/services/kit/apierr"
	"github.com/platforma/platforma/services/kit/apptest"
	"github.com/platforma/platforma/services/kit/db"
	"github.com/platforma/platforma/services/kit/pagetoken"
	"github.com/platforma/platforma/services/kit/pgtest"
	"github.com/platforma/platforma/services/kit/server"
	"github.com/platforma/platforma/services/profile/internal/profilesvc"
)

func TestMain(m *testing.M) { pgtest.Main(m, migrations.Profile) }

// testConfig signs page tokens with apptest's key, so tests can sign
// tokens too.
var testConfig = profilesvc.Config{RefreshAfterFailures: 3, MaxEventAge: 35 * 24 * time.Hour, PageTokens: apptest.PageTokens()}

func newClient(t *testing.T) (profilev1.ProfileServiceClient, *pgxpool.Pool) {
	t.Helper()
	pool := pgtest.NewPool(t)
	conn := apptest.Serve(t, pool, func(r server.Registrar) error { return profilesvc.Register(r, db.Pools{Primary: pool}, testConfig) })
	return profilev1.NewProfileServiceClient(conn), pool
}

const (
	success = commonv1.Outcome_OUTCOME_SUCCESS
	failed  = commonv1.Outcome_OUTCOME_FAILED
)

// base is a recent time every test's logins are relative to.
var base = time.Now().Add(-time.Hour).Truncate(time.Second)

func login(user uuid.UUID, account string, o commonv1.Outcome, at time.Time) *profilev1.RecordLoginResultRequest {
	return &profilev1.RecordLoginResultRequest{
		EventId:           uuid.NewString(),
		UserId:            user.String(),
		PlatformAccountId: account,
		Outcome:           o,
		OccurredAt:        timestamppb.New(at),
	}
}

func outcomes(p *profilev1.Profile) []commonv1.Outcome {
	var out []commonv1.Outcome
	for _, l := range p.GetRecentLogins() {
		out = append(out, l.GetOutcome())
	}
	return out
}

func TestFirstLoginCreatesTheProfile(t *testing.T) {
	t.Parallel()
	client, _ := newClient(t)
	ctx := context.Background()
	user := uuid.New()
	req := login(user, "shop-owner@a", success, base)
	req.AuthType = commonv1.AuthType_AUTH_TYPE_TWO_FACTOR

	resp, err := client.RecordLoginResult(ctx, req)
	require.NoError(t, err)
	p := resp.GetProfile()
	assert.False(t, resp.GetDuplicate())
	assert.NotEmpty(t, p.GetId())
	assert.Equal(t, user.String(), p.GetUserId())
	assert.Equal(t, "shop-owner@a", p.GetPlatformAccountId())
	assert.Equal(t, commonv1.AuthType_AUTH_TYPE_TWO_FACTOR, p.GetAuthType())
	assert.Equal(t, int64(1), p.GetTotalLoginCount())
	assert.Equal(t, int64(1), p.GetSuccessLoginCount())
	assert.Equal(t, int64(0), p.GetFailedLoginCount())
	assert.Equal(t, 100.0, p.GetSessionStabilityScore())
	assert.Equal(t, profilev1.StabilityGrade_STABILITY_GRADE_STABLE, p.GetGrade())
	assert.True(t, p.GetLastLoginAt().AsTime().Equal(base))
	assert.Equal(t, success, p.GetLastLoginOutcome())
	assert.Equal(t, []commonv1.Outcome{success}, outcomes(p))
	assert.NotEmpty(t, p.GetEtag())

	// Same account, second outcome: updated in place, new etag.
	resp2, err := client.RecordLoginResult(ctx, login(user, "shop-owner@a", failed, base.Add(time.Minute)))
	require.NoError(t, err)
	p2 := resp2.GetProfile()
	assert.Equal(t, p.GetId(), p2.GetId())
	assert.Equal(t, int64(2), p2.GetTotalLoginCount())
	assert.Equal(t, 50.0, p2.GetSessionStabilityScore())
	assert.Equal(t, commonv1.AuthType_AUTH_TYPE_TWO_FACTOR, p2.GetAuthType(), "no auth_type given: unchanged")
	assert.NotEqual(t, p.GetEtag(), p2.GetEtag())
	assert.Equal(t, []commonv1.Outcome{failed, success}, outcomes(p2))
}

func TestConcurrentOutcomesOnOneAccountAreExact(t *testing.T) {
	t.Parallel()
	const clients, perClient = 32, 500
	client, _ := newClient(t)
	user := uuid.New()
	// Login k (0..15999) happens at base + k ms and fails when k%3 == 0;
	// client c sends k = j*clients + c, so arrival order is interleaved.
	outcomeOf := func(k int) commonv1.Outcome {
		if k%3 == 0 {
			return failed
		}
		return success
	}
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < perClient; j++ {
				k := j*clients + c
				if _, err := client.RecordLoginResult(context.Background(),
					login(user, "hot", outcomeOf(k), base.Add(time.Duration(k)*time.Millisecond))); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	resp, err := client.GetProfile(context.Background(), &profilev1.GetProfileRequest{UserId: user.String(), PlatformAccountId: "hot"})
	require.NoError(t, err)
	p := resp.GetProfile()
	const total = clients * perClient
	failures := 0
	for k := 0; k < total; k++ {
		if outcomeOf(k) == failed {
			failures++
		}
	}
	assert.Equal(t, int64(total), p.GetTotalLoginCount())
	assert.Equal(t, int64(total-failures), p.GetSuccessLoginCount())
	assert.Equal(t, int64(failures), p.GetFailedLoginCount())
	// 10666 of 16000 → 66.6625 → 66.66
	assert.Equal(t, 66.66, p.GetSessionStabilityScore())
	var wantWindow []commonv1.Outcome
	for k := total - 1; k >= total-10; k-- {
		wantWindow = append(wantWindow, outcomeOf(k))
	}
	assert.Equal(t, wantWindow, outcomes(p), "the 10 newest by occurred_at")
	assert.True(t, p.GetLastLoginAt().AsTime().Equal(base.Add((total-1)*time.Millisecond)))
	assert.Equal(t, "16000", p.GetEtag(), "one version per applied outcome")
}

func TestSameEventFromConcurrentClientsCountsOnce(t *testing.T) {
	t.Parallel()
	client, _ := newClient(t)
	req := login(uuid.New(), "acct", failed, base)
	var wg sync.WaitGroup
	var mu sync.Mutex
	duplicates := 0
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.RecordLoginResult(context.Background(), req)
			if !assert.NoError(t, err) {
				return
			}
			assert.Equal(t, int64(1), resp.GetProfile().GetTotalLoginCount(), "every caller sees the one count")
			mu.Lock()
			defer mu.Unlock()
			if resp.GetDuplicate() {
				duplicates++
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, 7, duplicates, "one caller applied it, seven were told it was a repeat")

	resp, err := client.RecordLoginResult(context.Background(), req)
	require.NoError(t, err)
	assert.True(t, resp.GetDuplicate())
	assert.Equal(t, int64(1), resp.GetProfile().GetTotalLoginCount())
	assert.Equal(t, int64(1), resp.GetProfile().GetFailedLoginCount())
}

func TestOutOfOrderOutcomesLandByTime(t *testing.T) {
	t.Parallel()
	client, _ := newClient(t)
	ctx := context.Background()
	user := uuid.New()
	record := func(o commonv1.Outcome, minute int) *profilev1.Profile {
		resp, err := client.RecordLoginResult(ctx, login(user, "acct", o, base.Add(time.Duration(minute)*time.Minute)))
		require.NoError(t, err)
		return resp.GetProfile()
	}
	// Minutes 1..12 arrive newest first except minute 5, which comes last.
	for m := 12; m >= 1; m-- {
		if m != 5 {
			record(success, m)
		}
	}
	p := record(failed, 5)
	assert.True(t, p.GetLastLoginAt().AsTime().Equal(base.Add(12*time.Minute)), "a late login does not become the last one")
	assert.Equal(t, success, p.GetLastLoginOutcome())
	var minutes []int
	for _, l := range p.GetRecentLogins() {
		minutes = append(minutes, int(l.GetOccurredAt().AsTime().Sub(base)/time.Minute))
	}
	assert.Equal(t, []int{12, 11, 10, 9, 8, 7, 6, 5, 4, 3}, minutes)
	assert.Equal(t, failed, p.GetRecentLogins()[7].GetOutcome(), "the late failure sits at its time")
	assert.Equal(t, int32(0), p.GetConsecutiveFailures())

	// A login older than the whole window counts, but stays out of it.
	p = record(failed, 0)
	assert.Equal(t, int64(13), p.GetTotalLoginCount())
	assert.True(t, base.Add(3*time.Minute).Equal(p.GetRecentLogins()[9].GetOccurredAt().AsTime()))
}

func TestScoreGradeAndSessionRefresh(t *testing.T) {
	t.Parallel()
	client, _ := newClient(t)
	ctx := context.Background()
	user := uuid.New()
	var p *profilev1.Profile
	for i, o := range []commonv1.Outcome{success, success, failed} {
		resp, err := client.RecordLoginResult(ctx, login(user, "acct", o, base.Add(time.Duration(i)*time.Minute)))
		require.NoError(t, err)
		p = resp.GetProfile()
	}
	assert.Equal(t, 66.67, p.GetSessionStabilityScore(), "2 of 3")
	assert.Equal(t, profilev1.StabilityGrade_STABILITY_GRADE_UNSTABLE, p.GetGrade())
	assert.Equal(t, int32(1), p.GetConsecutiveFailures())
	assert.False(t, p.GetNeedsSessionRefresh())

	for i := 3; i < 5; i++ {
		resp, err := client.RecordLoginResult(ctx, login(user, "acct", failed, base.Add(time.Duration(i)*time.Minute)))
		require.NoError(t, err)
		p = resp.GetProfile()
	}
	assert.Equal(t, 40.0, p.GetSessionStabilityScore())
	assert.Equal(t, profilev1.StabilityGrade_STABILITY_GRADE_CRITICAL, p.GetGrade())
	assert.Equal(t, int32(3), p.GetConsecutiveFailures())
	assert.True(t, p.GetNeedsSessionRefresh(), "the newest 3 failed")
}

func TestNewestAuthTypeReportWins(t *testing.T) {
	t.Parallel()
	client, _ := newClient(t)
	ctx := context.Background()
	user := uuid.New()
	send := func(auth commonv1.AuthType, minute int) *profilev1.Profile {
		req := login(user, "acct", success, base.Add(time.Duration(minute)*time.Minute))
		req.AuthType = auth
		resp, err := client.RecordLoginResult(ctx, req)
		require.NoError(t, err)
		return resp.GetProfile()
	}
	assert.Equal(t, commonv1.AuthType_AUTH_TYPE_NORMAL, send(commonv1.AuthType_AUTH_TYPE_NORMAL, 1).GetAuthType())
	assert.Equal(t, commonv1.AuthType_AUTH_TYPE_TWO_FACTOR, send(commonv1.AuthType_AUTH_TYPE_TWO_FACTOR, 5).GetAuthType())
	assert.Equal(t, commonv1.AuthType_AUTH_TYPE_TWO_FACTOR, send(commonv1.AuthType_AUTH_TYPE_NORMAL, 3).GetAuthType(), "an older report arriving late does not win")
	assert.Equal(t, commonv1.AuthType_AUTH_TYPE_TWO_FACTOR, send(commonv1.AuthType_AUTH_TYPE_UNSPECIFIED, 9).GetAuthType(), "unspecified leaves it")
	assert.Equal(t, commonv1.AuthType_AUTH_TYPE_NORMAL, send(commonv1.AuthType_AUTH_TYPE_NORMAL, 7).GetAuthType())
}

func TestInvalidRequestsNameTheField(t *testing.T) {
	t.Parallel()
	client, _ := newClient(t)
	valid := func() *profilev1.RecordLoginResultRequest { return login(uuid.New(), "acct", success, base) }
	tests := []struct {
		name   string
		mutate func(*profilev1.RecordLoginResultRequest)
		field  string
	}{
		{"missing event id", func(r *profilev1.RecordLoginResultRequest) { r.EventId = "" }, "event_id"},
		{"event id not a uuid", func(r *profilev1.RecordLoginResultRequest) { r.EventId = "42" }, "event_id"},
		{"user id not a uuid", func(r *profilev1.RecordLoginResultRequest) { r.UserId = "alice" }, "user_id"},
		{"missing account", func(r *profilev1.RecordLoginResultRequest) { r.PlatformAccountId = "" }, "platform_account_id"},
		{"NUL in account", func(r *profilev1.RecordLoginResultRequest) { r.PlatformAccountId = "a\x00b" }, "platform_account_id"},
		{"huge account", func(r *profilev1.RecordLoginResultRequest) { r.PlatformAccountId = strings.Repeat("x", 256) }, "platform_account_id"},
		{"missing outcome", func(r *profilev1.RecordLoginResultRequest) { r.Outcome = 0 }, "outcome"},
		{"unknown outcome", func(r *profilev1.RecordLoginResultRequest) { r.Outcome = 7 }, "outcome"},
		{"unknown auth type", func(r *profilev1.RecordLoginResultRequest) { r.AuthType = 99 }, "auth_type"},
		{"missing occurred_at", func(r *profilev1.RecordLoginResultRequest) { r.OccurredAt = nil }, "occurred_at"},
		{"occurred_at in the future", func(r *profilev1.RecordLoginResultRequest) {
			r.OccurredAt = timestamppb.New(time.Now().Add(10 * time.Minute))
		}, "occurred_at"},
		{"occurred_at too old", func(r *profilev1.RecordLoginResultRequest) {
			r.OccurredAt = timestamppb.New(time.Now().Add(-36 * 24 * time.Hour))
		}, "occurred_at"},
		{"occurred_at out of range", func(r *profilev1.RecordLoginResultRequest) {
			r.OccurredAt = &timestamppb.Timestamp{Seconds: -99999999999999}
		}, "occurred_at"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req := valid()
			tt.mutate(req)
			_, err := client.RecordLoginResult(context.Background(), req)
			assert.Equal(t, []string{tt.field}, apptest.ViolatedFields(t, err))
			// Only a time too old has a reason: a client (the login relay)
			// gives up on it, where it would fix a malformed one.
			wantReason := ""
			if tt.name == "occurred_at too old" {
				wantReason = "EVENT_TOO_OLD"
			}
			assert.Equal(t, wantReason, apierr.Reason(status.Convert(err)))
		})
	}
}

// A string that is not UTF-8 is refused like any other bad value: the
// field named, and in a batch that item alone. (Our stubs no longer refuse
// to encode such strings, so the test sends what any client could.)
func TestInvalidUTF8IsRefusedByField(t *testing.T) {
	t.Parallel()
	client, pool := newClient(t)
	user := uuid.New()
	_, err := client.RecordLoginResult(context.Background(), login(user, "a\xffb", success, base))
	assert.Equal(t, []string{"platform_account_id"}, apptest.ViolatedFields(t, err))
	_, err = client.GetProfile(context.Background(), &profilev1.GetProfileRequest{UserId: user.String(), PlatformAccountId: "\xc3\x28"})
	assert.Equal(t, []string{"platform_account_id"}, apptest.ViolatedFields(t, err))
	_, err = client.ListProfiles(context.Background(), &profilev1.ListProfilesRequest{PageToken: "\xff\xfe"})
	assert.Equal(t, []string{"page_token"}, apptest.ViolatedFields(t, err))

	resp, err := client.BatchRecordLoginResults(context.Background(), &profilev1.BatchRecordLoginResultsRequest{
		Requests: []*profilev1.RecordLoginResultRequest{
			login(user, "acct-1", success, base),
			login(user, "acct-\xff", success, base),
			login(user, "acct-1", failed, base.Add(time.Second)),
		},
	})
	require.NoError(t, err)
	require.Len(t, resp.GetResults(), 3)
	assert.Nil(t, resp.GetResults()[0].GetError())
	bad := resp.GetResults()[1].GetError()
	require.NotNil(t, bad)
	assert.Equal(t, int32(codes.InvalidArgument), bad.GetCode())
	require.Len(t, bad.GetFieldViolations(), 1)
	assert.Equal(t, "requests[1].platform_account_id", bad.GetFieldViolations()[0].GetField())
	assert.Equal(t, int64(2), resp.GetResults()[2].GetProfile().GetTotalLoginCount())
	var n int
	require.NoError(t, pool.QueryRow(context.Background(), "SELECT count(*) FROM profile.login_events").Scan(&n))
	assert.Equal(t, 2, n)
}

func TestBatchAppliesEveryValidItem(t *testing.T) {
	t.Parallel()
	client, _ := newClient(t)
	ctx := context.Background()
	user := uuid.New()
	other := uuid.New()
	reqs := []*profilev1.RecordLoginResultRequest{
		login(user, "a", success, base.Add(1*time.Minute)),
		login(user, "a", failed, base.Add(2*time.Minute)),
		login(user, "a", failed, base.Add(3*time.Minute)),
		login(other, "b", success, base.Add(1*time.Minute)),
	}
	bad := login(user, "a", success, base)
	bad.UserId = "not-a-uuid"
	reqs = append(reqs, bad)
	repeat := proto.Clone(reqs[1]).(*profilev1.RecordLoginResultRequest)
	reqs = append(reqs, repeat)
	hijack := proto.Clone(reqs[3]).(*profilev1.RecordLoginResultRequest)
	hijack.PlatformAccountId = "a"
	hijack.UserId = user.String()
	reqs = append(reqs, hijack)

	resp, err := client.BatchRecordLoginResults(ctx, &profilev1.BatchRecordLoginResultsRequest{Requests: reqs})
	require.NoError(t, err)
	results := resp.GetResults()
	require.Len(t, results, len(reqs))

	for i := 0; i < 3; i++ {
		p := results[i].GetProfile()
		require.NotNil(t, p, "item %d", i)
		assert.Equal(t, int64(3), p.GetTotalLoginCount(), "all three items of account a are applied")
		assert.False(t, results[i].GetDuplicate())
	}
	assert.Equal(t, []commonv1.Outcome{failed, failed, success}, outcomes(results[0].GetProfile()))
	assert.Equal(t, int64(1), results[3].GetProfile().GetTotalLoginCount())

	assert.Equal(t, int32(codes.InvalidArgument), results[4].GetError().GetCode())
	assert.Equal(t, "requests[4].user_id", results[4].GetError().GetFieldViolations()[0].GetField())

	assert.True(t, results[5].GetDuplicate(), "repeat of item 1 in the same batch")
	assert.Equal(t, int64(3), results[5].GetProfile().GetTotalLoginCount())

	assert.Equal(t, int32(codes.InvalidArgument), results[6].GetError().GetCode(), "event id of account b reused for account a")
	assert.Equal(t, "EVENT_ID_CONFLICT", results[6].GetError().GetReason())
	assert.Equal(t, "requests[6].event_id", results[6].GetError().GetFieldViolations()[0].GetField())

	// The whole batch again: nothing changes, everything is a duplicate.
	again, err := client.BatchRecordLoginResults(ctx, &profilev1.BatchRecordLoginResultsRequest{Requests: reqs[:4]})
	require.NoError(t, err)
	for i, r := range again.GetResults() {
		assert.True(t, r.GetDuplicate(), "item %d", i)
	}
	assert.Equal(t, int64(3), again.GetResults()[0].GetProfile().GetTotalLoginCount())

	// A lone repeat of an event recorded for another account is refused too.
	_, err = client.RecordLoginResult(ctx, hijack)
	assert.Equal(t, []string{"event_id"}, apptest.ViolatedFields(t, err))
}

func TestBatchLimits(t *testing.T) {
	t.Parallel()
	client, _ := newClient(t)
	ctx := context.Background()
	_, err := client.BatchRecordLoginResults(ctx, &profilev1.BatchRecordLoginResultsRequest{})
	assert.Equal(t, []string{"requests"}, apptest.ViolatedFields(t, err))

	user := uuid.New()
	var reqs []*profilev1.RecordLoginResultRequest
	for i := 0; i < 1001; i++ {
		reqs = append(reqs, login(user, "a", success, base.Add(time.Duration(i)*time.Second)))
	}
	_, err = client.BatchRecordLoginResults(ctx, &profilev1.BatchRecordLoginResultsRequest{Requests: reqs})
	assert.Equal(t, []string{"requests"}, apptest.ViolatedFields(t, err))

	resp, err := client.BatchRecordLoginResults(ctx, &profilev1.BatchRecordLoginResultsRequest{Requests: reqs[:1000]})
	require.NoError(t, err)
	assert.Equal(t, int64(1000), resp.GetResults()[999].GetProfile().GetTotalLoginCount())
}

func TestGetProfile(t *testing.T) {
	t.Parallel()
	client, _ := newClient(t)
	ctx := context.Background()
	user := uuid.New()
	created, err := client.RecordLoginResult(ctx, login(user, "acct", success, base))
	require.NoError(t, err)
	id := created.GetProfile().GetId()

	byID, err := client.GetProfile(ctx, &profilev1.GetProfileRequest{Id: id})
	require.NoError(t, err)
	assert.True(t, proto.Equal(created.GetProfile(), byID.GetProfile()))
	byKey, err := client.GetProfile(ctx, &profilev1.GetProfileRequest{UserId: user.String(), PlatformAccountId: "acct"})
	require.NoError(t, err)
	assert.Equal(t, id, byKey.GetProfile().GetId())

	_, err = client.GetProfile(ctx, &profilev1.GetProfileRequest{Id: uuid.NewString()})
	assert.Equal(t, codes.NotFound, status.Code(err))
	assert.Equal(t, "PROFILE_NOT_FOUND", apierr.Reason(status.Convert(err)))
	_, err = client.GetProfile(ctx, &profilev1.GetProfileRequest{UserId: user.String(), PlatformAccountId: "other"})
	assert.Equal(t, codes.NotFound, status.Code(err))
	assert.Equal(t, "PROFILE_NOT_FOUND", apierr.Reason(status.Convert(err)))

	for name, tc := range map[string]struct {
		req   *profilev1.GetProfileRequest
		field string
	}{
		"nothing":          {&profilev1.GetProfileRequest{}, "id"},
		"both":             {&profilev1.GetProfileRequest{Id: id, UserId: user.String(), PlatformAccountId: "acct"}, "id"},
		"bad id":           {&profilev1.GetProfileRequest{Id: "1"}, "id"},
		"key without acct": {&profilev1.GetProfileRequest{UserId: user.String()}, "platform_account_id"},
		"key without user": {&profilev1.GetProfileRequest{PlatformAccountId: "acct"}, "user_id"},
	} {
		_, err := client.GetProfile(ctx, tc.req)
		assert.Equal(t, []string{tc.field}, apptest.ViolatedFields(t, err), name)
	}
}

// seedScores creates one profile per score, each from a batch of
// outcomes: score s% is s successes of 100 (or 2 of 3 for 66.67).
func seedScores(t *testing.T, client profilev1.ProfileServiceClient, auth commonv1.AuthType, scores ...int) {
	t.Helper()
	var reqs []*profilev1.RecordLoginResultRequest
	for i, s := range scores {
		user := uuid.New()
		for k := 0; k < 100; k++ {
			o := failed
			if k < s {
				o = success
			}
			r := login(user, fmt.Sprintf("acct-%d", i), o, base.Add(time.Duration(k)*time.Second))
			r.AuthType = auth
			reqs = append(reqs, r)
		}
	}
	for len(reqs) > 0 {
		n := min(len(reqs), 1000)
		_, err := client.BatchRecordLoginResults(context.Background(), &profilev1.BatchRecordLoginResultsRequest{Requests: reqs[:n]})
		require.NoError(t, err)
		reqs = reqs[n:]
	}
}

func listAll(t *testing.T, client profilev1.ProfileServiceClient, req *profilev1.ListProfilesRequest) ([]float64, int) {
	t.Helper()
	return apptest.Pages(t, func(token string) ([]float64, string, error) {
		req := proto.Clone(req).(*profilev1.ListProfilesRequest)
		req.PageToken = token
		resp, err := client.ListProfiles(context.Background(), req)
		var scores []float64
		for _, p := range resp.GetProfiles() {
			scores = append(scores, p.GetSessionStabilityScore())
		}
		return scores, resp.GetNextPageToken(), err
	})
}

func TestListProfilesPagesThroughTiesInScoreOrder(t *testing.T) {
	t.Parallel()
	client, _ := newClient(t)
	// Seven profiles at 49 (ties across page boundaries), and around the
	// grade boundaries.
	seedScores(t, client, commonv1.AuthType_AUTH_TYPE_NORMAL, 49, 49, 49, 49, 49, 49, 49, 50, 79, 80, 12, 100)
	seedScores(t, client, commonv1.AuthType_AUTH_TYPE_TWO_FACTOR, 30, 90)

	scores, pages := listAll(t, client, &profilev1.ListProfilesRequest{PageSize: 3})
	assert.Equal(t, []float64{12, 30, 49, 49, 49, 49, 49, 49, 49, 50, 79, 80, 90, 100}, scores)
	assert.Equal(t, 5, pages)

	ids := map[string]bool{}
	req := &profilev1.ListProfilesRequest{PageSize: 2}
	for {
		resp, err := client.ListProfiles(context.Background(), req)
		require.NoError(t, err)
		for _, p := range resp.GetProfiles() {
			assert.False(t, ids[p.GetId()], "profile %s on two pages", p.GetId())
			ids[p.GetId()] = true
		}
		if resp.GetNextPageToken() == "" {
			break
		}
		req.PageToken = resp.GetNextPageToken()
	}
	assert.Len(t, ids, 14, "every profile exactly once")

	critical, _ := listAll(t, client, &profilev1.ListProfilesRequest{Grade: profilev1.StabilityGrade_STABILITY_GRADE_CRITICAL, PageSize: 4})
	assert.Equal(t, []float64{12, 30, 49, 49, 49, 49, 49, 49, 49}, critical)
	unstable, _ := listAll(t, client, &profilev1.ListProfilesRequest{Grade: profilev1.StabilityGrade_STABILITY_GRADE_UNSTABLE})
	assert.Equal(t, []float64{50, 79}, unstable)
	stable, _ := listAll(t, client, &profilev1.ListProfilesRequest{Grade: profilev1.StabilityGrade_STABILITY_GRADE_STABLE})
	assert.Equal(t, []float64{80, 90, 100}, stable)
	twoFactor, _ := listAll(t, client, &profilev1.ListProfilesRequest{AuthType: commonv1.AuthType_AUTH_TYPE_TWO_FACTOR})
	assert.Equal(t, []float64{30, 90}, twoFactor)
	upTo50, _ := listAll(t, client, &profilev1.ListProfilesRequest{MaxScore: proto.Float64(50)})
	assert.Equal(t, []float64{12, 30, 49, 49, 49, 49, 49, 49, 49, 50}, upTo50)
	zero, _ := listAll(t, client, &profilev1.ListProfilesRequest{MaxScore: proto.Float64(0)})
	assert.Empty(t, zero, "max_score 0 is a filter, not 'unset'")
	stableUpTo85, _ := listAll(t, client, &profilev1.ListProfilesRequest{Grade: profilev1.StabilityGrade_STABILITY_GRADE_STABLE, MaxScore: proto.Float64(85)})
	assert.Equal(t, []float64{80}, stableUpTo85)
}

func TestListProfilesRefusesMisusedTokens(t *testing.T) {
	t.Parallel()
	client, _ := newClient(t)
	seedScores(t, client, commonv1.AuthType_AUTH_TYPE_NORMAL, 10, 20, 30)
	first, err := client.ListProfiles(context.Background(), &profilev1.ListProfilesRequest{PageSize: 1, MaxScore: proto.Float64(50)})
	require.NoError(t, err)
	token := first.GetNextPageToken()
	require.NotEmpty(t, token)

	// Same filter, other page size: fine.
	_, err = client.ListProfiles(context.Background(), &profilev1.ListProfilesRequest{PageSize: 5, MaxScore: proto.Float64(50), PageToken: token})
	require.NoError(t, err)

	tampered := []byte(token)
	tampered[len(tampered)/2] ^= 1
	for name, req := range map[string]*profilev1.ListProfilesRequest{
		"other filter": {PageSize: 1, MaxScore: proto.Float64(60), PageToken: token},
		"filter lost":  {PageSize: 1, PageToken: token},
		"tampered":     {PageSize: 1, MaxScore: proto.Float64(50), PageToken: string(tampered)},
		"garbage":      {PageSize: 1, PageToken: "not a token"},
	} {
		_, err := client.ListProfiles(context.Background(), req)
		assert.Equal(t, []string{"page_token"}, apptest.ViolatedFields(t, err), name)
	}
	for name, tc := range map[string]struct {
		req   *profilev1.ListProfilesRequest
		field string
	}{
		"page too big":    {&profilev1.ListProfilesRequest{PageSize: 1001}, "page_size"},
		"negative page":   {&profilev1.ListProfilesRequest{PageSize: -1}, "page_size"},
		"score above 100": {&profilev1.ListProfilesRequest{MaxScore: proto.Float64(100.5)}, "max_score"},
		"unknown grade":   {&profilev1.ListProfilesRequest{Grade: 9}, "grade"},
		"unknown auth":    {&profilev1.ListProfilesRequest{AuthType: 9}, "auth_type"},
	} {
		_, err := client.ListProfiles(context.Background(), tc.req)
		assert.Equal(t, []string{tc.field}, apptest.ViolatedFields(t, err), name)
	}
}

// profileCursor is ListProfiles' cursor: score in hundredths, then id.
func profileCursor(hundredths int64, id uuid.UUID) []byte {
	return append(binary.BigEndian.AppendUint64(nil, uint64(hundredths)), id[:]...)
}

// TestListProfilesRefusesForgedTokens: a token for grade=STABLE minted
// with a cursor below the grade used to list profiles of other grades.
// Now a token must carry the server's MAC, and even a signed token's
// cursor must lie in the request's score range.
func TestListProfilesRefusesForgedTokens(t *testing.T) {
	t.Parallel()
	client, _ := newClient(t)
	seedScores(t, client, commonv1.AuthType_AUTH_TYPE_NORMAL, 10, 20, 60, 85, 90)
	stable := &profilev1.ListProfilesRequest{Grade: profilev1.StabilityGrade_STABILITY_GRADE_STABLE}
	upTo50 := &profilev1.ListProfilesRequest{MaxScore: proto.Float64(50)}
	all := &profilev1.ListProfilesRequest{}
	sign := func(keys *pagetoken.Keyring, filter *profilev1.ListProfilesRequest, hundredths int64) string {
		token, err := keys.Encode(filter, profileCursor(hundredths, uuid.Max))
		require.NoError(t, err)
		return token
	}
	withToken := func(filter *profilev1.ListProfilesRequest, token string) *profilev1.ListProfilesRequest {
		req := proto.Clone(filter).(*profilev1.ListProfilesRequest)
		req.PageSize, req.PageToken = 10, token
		return req
	}

	// Controls: signed with the server's key, inside the range.
	resp, err := client.ListProfiles(context.Background(), withToken(stable, sign(apptest.PageTokens(), stable, 8500)))
	require.NoError(t, err)
	require.Len(t, resp.GetProfiles(), 1)
	assert.Equal(t, 90.0, resp.GetProfiles()[0].GetSessionStabilityScore())
	resp, err = client.ListProfiles(context.Background(), withToken(upTo50, sign(apptest.PageTokens(), upTo50, 5000)))
	require.NoError(t, err)
	assert.Empty(t, resp.GetProfiles())

	sameKidOtherSecret, err := pagetoken.NewKeyring(pagetoken.Key{ID: "apptest", Secret: []byte(strings.Repeat("s", 32))})
	require.NoError(t, err)
	for name, req := range map[string]*profilev1.ListProfilesRequest{
		"unkeyed token (the issue's)": withToken(stable, apptest.UnkeyedPageToken(stable, profileCursor(-1, uuid.Nil))),
		"unkeyed token, in range":     withToken(stable, apptest.UnkeyedPageToken(stable, profileCursor(8500, uuid.Nil))),
		"another key, same kid":       withToken(stable, sign(sameKidOtherSecret, stable, 8500)),
		"another process's key":       withToken(stable, sign(pagetoken.NewRandomKeyring(), stable, 8500)),
		"signed, below the grade":     withToken(stable, sign(apptest.PageTokens(), stable, 0)),
		"signed, just below":          withToken(stable, sign(apptest.PageTokens(), stable, 7999)),
		"signed, above max_score":     withToken(upTo50, sign(apptest.PageTokens(), upTo50, 5001)),
		"signed, above 100":           withToken(all, sign(apptest.PageTokens(), all, 10001)),
		"signed, negative":            withToken(all, sign(apptest.PageTokens(), all, -1)),
	} {
		_, err := client.ListProfiles(context.Background(), req)
		apptest.RefusedPageToken(t, err, name)
	}
}

func TestStabilityDistribution(t *testing.T) {
	t.Parallel()
	client, _ := newClient(t)
	empty, err := client.GetStabilityDistribution(context.Background(), &profilev1.GetStabilityDistributionRequest{})
	require.NoError(t, err)
	assert.Len(t, empty.GetGrades(), 3, "every grade, zeros included")
	assert.Zero(t, empty.GetTotalProfiles())

	seedScores(t, client, commonv1.AuthType_AUTH_TYPE_TWO_FACTOR, 90, 85, 40)
	seedScores(t, client, commonv1.AuthType_AUTH_TYPE_NORMAL, 60, 95)
	seedScores(t, client, commonv1.AuthType_AUTH_TYPE_UNSPECIFIED, 10)
	resp, err := client.GetStabilityDistribution(context.Background(), &profilev1.GetStabilityDistributionRequest{})
	require.NoError(t, err)
	assert.Equal(t, int64(6), resp.GetTotalProfiles())
	grades := map[profilev1.StabilityGrade]int64{}
	for _, g := range resp.GetGrades() {
		grades[g.GetGrade()] = g.GetProfileCount()
	}
	assert.Equal(t, map[profilev1.StabilityGrade]int64{
		profilev1.StabilityGrade_STABILITY_GRADE_STABLE:   3,
		profilev1.StabilityGrade_STABILITY_GRADE_UNSTABLE: 1,
		profilev1.StabilityGrade_STABILITY_GRADE_CRITICAL: 2,
	}, grades)
	auth := map[commonv1.AuthType]*profilev1.AuthTypeStats{}
	for _, a := range resp.GetAuthTypes() {
		auth[a.GetAuthType()] = a
	}
	assert.Equal(t, int64(3), auth[commonv1.AuthType_AUTH_TYPE_TWO_FACTOR].GetProfileCount())
	assert.Equal(t, 71.67, auth[commonv1.AuthType_AUTH_TYPE_TWO_FACTOR].GetMeanScore(), "(90+85+40)/3")
	assert.Equal(t, 77.5, auth[commonv1.AuthType_AUTH_TYPE_NORMAL].GetMeanScore())
	assert.Equal(t, 10.0, auth[commonv1.AuthType_AUTH_TYPE_UNSPECIFIED].GetMeanScore())
}
