// Package profilesvc implements platforma.profile.v1.ProfileService: thin
// handlers that validate, call the store and convert.
package profilesvc

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	profilev1 "github.com/platforma/platforma/gen/platforma/profile/v1"
	"github.com/platforma/platforma/services/kit/apierr"
	"github.com/platforma/platforma/services/kit/pagetoken"
	"github.com/platforma/platforma/services/kit/server"
	"github.com/platforma/platforma/services/profile/internal/domain"
	"github.com/platforma/platforma/services/profile/internal/store"
)

// Config is ProfileService's own configuration.
type Config struct {
	// RefreshAfterFailures is N of needs_session_refresh: the newest N
	// logins all failed.
	RefreshAfterFailures int
	// MaxEventAge is how old an occurred_at may be. event_ids are
	// remembered for MaxEventAge plus a day, so a retry of any event that
	// is still accepted is recognised as a repeat.
	MaxEventAge time.Duration
	// PageTokens signs and checks ListProfiles' page tokens. Not a flag:
	// app passes the ring of -page-token-keys. nil: a random key of this
	// Server.
	PageTokens *pagetoken.Keyring
}

// RegisterFlags adds -refresh-after-failures and -max-event-age.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.IntVar(&c.RefreshAfterFailures, "refresh-after-failures", 3, "needs_session_refresh when the newest N logins all failed (1-10)")
	fs.DurationVar(&c.MaxEventAge, "max-event-age", 35*24*time.Hour, "oldest occurred_at accepted; event ids are kept this long plus a day")
}

// Validate checks the values.
func (c *Config) Validate() error {
	if c.RefreshAfterFailures < 1 || c.RefreshAfterFailures > domain.WindowSize {
		return fmt.Errorf("REFRESH_AFTER_FAILURES (-refresh-after-failures) must be between 1 and %d", domain.WindowSize)
	}
	if c.MaxEventAge < time.Hour {
		return fmt.Errorf("MAX_EVENT_AGE (-max-event-age) must be at least 1h")
	}
	return nil
}

// eventRetention is how long event ids are remembered: longer than any
// occurred_at that is still accepted can be old.
func (c Config) eventRetention() time.Duration { return c.MaxEventAge + 24*time.Hour }

// Limits of the API.
const (
	maxBatch = 1000
	// maxClockSkew is how far in the future occurred_at may be.
	maxClockSkew = 5 * time.Minute
)

// Server implements ProfileService.
type Server struct {
	profilev1.UnimplementedProfileServiceServer
	store  *store.Store
	cfg    Config
	now    func() time.Time
	logins *prometheus.CounterVec
}

// New returns a Server on st.
func New(st *store.Store, cfg Config) *Server {
	if cfg.PageTokens == nil {
		cfg.PageTokens = pagetoken.NewRandomKeyring()
	}
	return &Server{store: st, cfg: cfg, now: time.Now, logins: newLoginsCounter()}
}

// Register plugs the service and its idempotency-record janitor into a
// platforma server.
func Register(r server.Registrar, pool *pgxpool.Pool, cfg Config) error {
	st := store.New(pool)
	s := New(st, cfg)
	profilev1.RegisterProfileServiceServer(r.GRPC, s)
	if err := r.Metrics.Register(s.logins); err != nil {
		return err
	}
	if err := r.Metrics.Register(newProfilesGauge(st, r.Logger)); err != nil {
		return err
	}
	r.Background("login event janitor", func(ctx context.Context) {
		runJanitor(ctx, st, cfg.eventRetention(), time.Hour, s.now, r.Logger)
	})
	return nil
}

// RecordLoginResult applies one login outcome.
func (s *Server) RecordLoginResult(ctx context.Context, req *profilev1.RecordLoginResultRequest) (*profilev1.RecordLoginResultResponse, error) {
	var v apierr.Violations
	result, ok := s.validateLogin(&v, "", req)
	if !ok {
		return nil, v.Err()
	}
	items, err := s.record(ctx, []store.LoginResult{result}, []bool{true}, false)
	if err != nil {
		return nil, err
	}
	if items[0].err != nil {
		return nil, items[0].err
	}
	return &profilev1.RecordLoginResultResponse{Profile: s.toProto(items[0].profile), Duplicate: items[0].duplicate}, nil
}

// BatchRecordLoginResults applies up to maxBatch outcomes.
func (s *Server) BatchRecordLoginResults(ctx context.Context, req *profilev1.BatchRecordLoginResultsRequest) (*profilev1.BatchRecordLoginResultsResponse, error) {
	n := len(req.GetRequests())
	if n == 0 || n > maxBatch {
		return nil, apierr.InvalidArgument(apierr.FieldViolation("requests", fmt.Sprintf("must hold 1 to %d items, got %d", maxBatch, n)))
	}
	results := make([]store.LoginResult, n)
	valid := make([]bool, n)
	itemErrs := make([]*apierr.Violations, n)
	for i, item := range req.GetRequests() {
		itemErrs[i] = &apierr.Violations{}
		results[i], valid[i] = s.validateLogin(itemErrs[i], fieldPrefix(true, i), item)
	}
	items, err := s.record(ctx, results, valid, true)
	if err != nil {
		return nil, err
	}
	resp := &profilev1.BatchRecordLoginResultsResponse{Results: make([]*profilev1.RecordLoginResultResult, n)}
	for i := range items {
		switch {
		case !valid[i]:
			resp.Results[i] = &profilev1.RecordLoginResultResult{Result: &profilev1.RecordLoginResultResult_Error{Error: apierr.ItemError(itemErrs[i].Err())}}
		case items[i].err != nil:
			resp.Results[i] = &profilev1.RecordLoginResultResult{Result: &profilev1.RecordLoginResultResult_Error{Error: apierr.ItemError(items[i].err)}}
		default:
			resp.Results[i] = &profilev1.RecordLoginResultResult{
				Result:    &profilev1.RecordLoginResultResult_Profile{Profile: s.toProto(items[i].profile)},
				Duplicate: items[i].duplicate,
			}
		}
	}
	return resp, nil
}

// recordedItem is the outcome of one item.
type recordedItem struct {
	profile   store.Profile
	duplicate bool
	err       error
}

// record applies the valid results. An event id repeated within the call
// is applied once; its later occurrences are duplicates. An event id
// already recorded for another account is refused for the item.
func (s *Server) record(ctx context.Context, results []store.LoginResult, valid []bool, batch bool) ([]recordedItem, error) {
	items := make([]recordedItem, len(results))
	firstSeen := map[[16]byte]int{}
	var send []store.LoginResult
	for i, r := range results {
		if !valid[i] {
			continue
		}
		if _, seen := firstSeen[r.EventID]; !seen {
			firstSeen[r.EventID] = i
			send = append(send, r)
		}
	}
	if len(send) == 0 {
		return items, nil
	}
	rec, err := s.store.RecordLoginResults(ctx, send)
	if err != nil {
		return nil, err
	}
	for i, r := range results {
		if !valid[i] {
			continue
		}
		first := firstSeen[r.EventID]
		owner := r.Account
		switch {
		case first != i:
			owner = results[first].Account
			items[i].duplicate = true
		case !rec.Applied[r.EventID]:
			if o, ok := rec.Owners[r.EventID]; ok {
				owner = o
			}
			items[i].duplicate = true
		}
		if owner != r.Account {
			items[i].err = domain.ErrEventIDConflict.Field(fieldPrefix(batch, i)+"event_id",
				"already recorded for a different user_id and platform_account_id")
			continue
		}
		p, ok := rec.Profiles[r.Account]
		if !ok {
			// Cannot happen: the event is recorded, so is its profile.
			return nil, fmt.Errorf("profile of %v missing after recording event %s", r.Account, r.EventID)
		}
		items[i].profile = p
		if !items[i].duplicate {
			s.countLogin(r)
		}
	}
	return items, nil
}

// fieldPrefix is the path of item i's fields in a violation.
func fieldPrefix(batch bool, i int) string {
	if !batch {
		return ""
	}
	return fmt.Sprintf("requests[%d].", i)
}

// GetProfile looks a profile up by id or by account.
func (s *Server) GetProfile(ctx context.Context, req *profilev1.GetProfileRequest) (*profilev1.GetProfileResponse, error) {
	q, err := validateGet(req)
	if err != nil {
		return nil, err
	}
	var p store.Profile
	if q.byID {
		p, err = s.store.GetProfile(ctx, q.id)
	} else {
		p, err = s.store.GetProfileByAccount(ctx, q.account)
	}
	if err != nil {
		return nil, err
	}
	return &profilev1.GetProfileResponse{Profile: s.toProto(p)}, nil
}

// ListProfiles pages through profiles, lowest score first.
func (s *Server) ListProfiles(ctx context.Context, req *profilev1.ListProfilesRequest) (*profilev1.ListProfilesResponse, error) {
	q, err := s.parseList(req)
	if err != nil {
		return nil, err
	}
	rows, next, err := pagetoken.Page(q.pageSize,
		func(limit int) ([]store.Profile, error) {
			return s.store.ListProfiles(ctx, store.ListQuery{
				AfterHundredths: q.after.hundredths,
				AfterID:         q.after.id,
				BelowHundredths: q.belowHundredths,
				AuthType:        q.authType,
				Limit:           limit,
			})
		},
		func(last store.Profile) (string, error) {
			return s.encodeCursor(req, cursor{hundredths: last.ScoreHundredths, id: last.ID})
		})
	if err != nil {
		return nil, err
	}
	resp := &profilev1.ListProfilesResponse{NextPageToken: next}
	for _, p := range rows {
		resp.Profiles = append(resp.Profiles, s.toProto(p))
	}
	return resp, nil
}

// GetStabilityDistribution summarises all profiles.
func (s *Server) GetStabilityDistribution(ctx context.Context, _ *profilev1.GetStabilityDistributionRequest) (*profilev1.GetStabilityDistributionResponse, error) {
	counts, err := s.store.Distribution(ctx)
	if err != nil {
		return nil, err
	}
	return distribution(counts), nil
}

// distribution folds the (grade, auth type) counts into the response:
// every grade and every auth type present, zeros included.
func distribution(counts []store.GradeAuthCount) *profilev1.GetStabilityDistributionResponse {
	grades := map[int16]int64{}
	type acc struct{ n, sum int64 }
	auth := map[int16]acc{}
	var total int64
	for _, c := range counts {
		grades[c.Grade] += c.Profiles
		a := auth[c.AuthType]
		a.n += c.Profiles
		a.sum += c.SumHundredths
		auth[c.AuthType] = a
		total += c.Profiles
	}
	resp := &profilev1.GetStabilityDistributionResponse{TotalProfiles: total}
	for _, g := range []profilev1.StabilityGrade{
		profilev1.StabilityGrade_STABILITY_GRADE_STABLE,
		profilev1.StabilityGrade_STABILITY_GRADE_UNSTABLE,
		profilev1.StabilityGrade_STABILITY_GRADE_CRITICAL,
	} {
		resp.Grades = append(resp.Grades, &profilev1.GradeCount{Grade: g, ProfileCount: grades[int16(g)]})
	}
	for _, t := range []commonv1.AuthType{
		commonv1.AuthType_AUTH_TYPE_TWO_FACTOR,
		commonv1.AuthType_AUTH_TYPE_NORMAL,
		commonv1.AuthType_AUTH_TYPE_UNSPECIFIED,
	} {
		a := auth[int16(t)]
		var mean float64
		if a.n > 0 {
			// Mean of hundredths, rounded to a whole hundredth.
			mean = domain.Score((a.sum*2 + a.n) / (2 * a.n))
		}
		resp.AuthTypes = append(resp.AuthTypes, &profilev1.AuthTypeStats{AuthType: t, ProfileCount: a.n, MeanScore: mean})
	}
	return resp
}

func (s *Server) toProto(p store.Profile) *profilev1.Profile {
	out := &profilev1.Profile{
		Id:                    p.ID.String(),
		UserId:                p.Account.UserID.String(),
		PlatformAccountId:     p.Account.PlatformAccountID,
		AuthType:              commonv1.AuthType(p.AuthType),
		SessionStabilityScore: domain.Score(p.ScoreHundredths),
		Grade:                 profilev1.StabilityGrade(p.Grade),
		TotalLoginCount:       p.TotalLogins,
		SuccessLoginCount:     p.SuccessLogins,
		FailedLoginCount:      p.FailedLogins,
		ConsecutiveFailures:   int32(p.ConsecutiveFailures),
		NeedsSessionRefresh:   domain.NeedsSessionRefresh(p.RecentLogins, s.cfg.RefreshAfterFailures),
		CreateTime:            timestamppb.New(p.CreateTime),
		UpdateTime:            timestamppb.New(p.UpdateTime),
		Etag:                  strconv.FormatInt(p.Version, 10),
	}
	for _, l := range p.RecentLogins {
		out.RecentLogins = append(out.RecentLogins, &profilev1.LoginAttempt{Outcome: outcome(l.Success), OccurredAt: timestamppb.New(l.OccurredAt)})
	}
	if len(p.RecentLogins) > 0 {
		newest := p.RecentLogins[0]
		out.LastLoginAt = timestamppb.New(newest.OccurredAt)
		out.LastLoginOutcome = outcome(newest.Success)
	}
	return out
}

func outcome(success bool) commonv1.Outcome {
	if success {
		return commonv1.Outcome_OUTCOME_SUCCESS
	}
	return commonv1.Outcome_OUTCOME_FAILED
}
