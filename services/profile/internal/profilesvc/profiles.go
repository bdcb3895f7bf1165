package profilesvc

import (
	"context"
	"encoding/binary"
	"fmt"
	"strconv"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	profilev1 "github.com/platforma/platforma/gen/platforma/profile/v1"
	"github.com/platforma/platforma/services/kit/apierr"
	"github.com/platforma/platforma/services/kit/pagetoken"
	"github.com/platforma/platforma/services/kit/validate"
	"github.com/platforma/platforma/services/profile/internal/domain"
	"github.com/platforma/platforma/services/profile/internal/store"
)

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
	q, err := s.parseList(ctx, req)
	if err != nil {
		return nil, err
	}
	rows, next, err := pagetoken.Page(q.pageSize,
		func(limit int) ([]store.Profile, error) {
			return s.store.ListProfiles(ctx, store.ListQuery{
				AfterHundredths: q.after.hundredths,
				AfterID:         q.after.id,
				BelowHundredths: q.belowHundredths,
				Grade:           q.grade,
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
		NeedsSessionRefresh:   domain.NeedsSessionRefresh(p.ConsecutiveFailures, s.cfg.RefreshAfterFailures),
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

type getQuery struct {
	byID    bool
	id      uuid.UUID
	account store.Account
}

// validateGet accepts either id, or user_id with platform_account_id.
func validateGet(req *profilev1.GetProfileRequest) (getQuery, error) {
	var v apierr.Violations
	var q getQuery
	hasKey := req.GetUserId() != "" || req.GetPlatformAccountId() != ""
	switch {
	case req.GetId() != "" && hasKey:
		v.Add("id", "give either id, or user_id and platform_account_id, not both")
	case req.GetId() != "":
		q.byID = true
		q.id, _ = validate.UUID(&v, "id", req.GetId())
	case hasKey:
		q.account.UserID, _ = validate.UUID(&v, "user_id", req.GetUserId())
		if validate.Identifier.Require(&v, "platform_account_id", req.GetPlatformAccountId()) {
			q.account.PlatformAccountID = req.GetPlatformAccountId()
		}
	default:
		v.Add("id", "required, or user_id and platform_account_id")
	}
	return q, v.Err()
}

// cursor is the keyset position after the last profile of a page.
type cursor struct {
	hundredths int64
	id         uuid.UUID
}

type listQuery struct {
	after           cursor
	belowHundredths int64
	grade           int16
	authType        int16
	pageSize        int
}

// maxHundredths is the highest score, 100, in hundredths.
const maxHundredths = 10000

// parseList turns the filter into one (score, id) range on the index:
// max_score narrows the score range and the page token moves its start;
// the grade narrows it in SQL, where the grade thresholds live.
func (s *Server) parseList(ctx context.Context, req *profilev1.ListProfilesRequest) (listQuery, error) {
	var v apierr.Violations
	q := listQuery{pageSize: validate.PageSize(&v, "page_size", req.GetPageSize())}
	if validate.Enum(&v, "grade", req.GetGrade(), false) {
		q.grade = int16(req.GetGrade())
	}
	if validate.Enum(&v, "auth_type", req.GetAuthType(), false) {
		q.authType = int16(req.GetAuthType())
	}
	high := int64(maxHundredths + 1)
	if req.MaxScore != nil {
		m := req.GetMaxScore()
		if !(m >= 0 && m <= 100) { // also refuses NaN
			v.Add("max_score", "must be between 0 and 100")
		} else {
			high = hundredthsFloor(m) + 1
		}
	}
	// Start just below the lowest score: every profile sorts after
	// (-0.01, max uuid).
	q.after = cursor{hundredths: -1, id: uuid.Max}
	q.belowHundredths = high
	if tok := req.GetPageToken(); tok != "" && v.Err() == nil {
		c, err := s.decodeCursor(req, tok)
		if err == nil {
			// Every page checks the cursor against this request's range
			// again: a token says where the previous page ended, never
			// which scores the request may see. A cursor below the range
			// would start the page in a lower grade.
			var r store.GradeRange
			if r, err = s.gradeRange(ctx, q.grade); err != nil {
				return listQuery{}, err
			}
			if c.hundredths < r.Low || c.hundredths >= min(high, r.High) {
				err = pagetoken.ErrInvalid
			}
		}
		if err != nil {
			v.Add("page_token", err.Error())
		} else {
			q.after = c
		}
	}
	return q, v.Err()
}

// gradeRange is the score range of grade, read once (Server.gradeRanges).
func (s *Server) gradeRange(ctx context.Context, grade int16) (store.GradeRange, error) {
	ranges := s.gradeRanges.Load()
	if ranges == nil {
		m, err := s.store.GradeRanges(ctx)
		if err != nil {
			return store.GradeRange{}, err
		}
		s.gradeRanges.Store(&m)
		ranges = &m
	}
	r, ok := (*ranges)[grade]
	if !ok {
		return store.GradeRange{}, fmt.Errorf("no score range for grade %d", grade)
	}
	return r, nil
}

// hundredthsFloor is the largest whole hundredth at or below score.
func hundredthsFloor(score float64) int64 {
	h := int64(score * 100)
	// score*100 can land just below an integer (0.29*100 = 28.999…).
	if float64(h+1) <= score*100+1e-9 {
		h++
	}
	return h
}

func (s *Server) encodeCursor(req *profilev1.ListProfilesRequest, c cursor) (string, error) {
	buf := binary.BigEndian.AppendUint64(nil, uint64(c.hundredths))
	buf = append(buf, c.id[:]...)
	return s.cfg.PageTokens.EncodeFor(req, buf)
}

// decodeCursor checks the token's MAC and reads its cursor.
func (s *Server) decodeCursor(req *profilev1.ListProfilesRequest, token string) (cursor, error) {
	raw, err := s.cfg.PageTokens.DecodeFor(req, token)
	if err != nil {
		return cursor{}, err
	}
	if len(raw) != 8+16 {
		return cursor{}, pagetoken.ErrInvalid
	}
	c := cursor{hundredths: int64(binary.BigEndian.Uint64(raw))}
	copy(c.id[:], raw[8:])
	return c, nil
}
