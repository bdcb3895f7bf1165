package profilesvc

import (
	"encoding/binary"

	"github.com/google/uuid"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	profilev1 "github.com/platforma/platforma/gen/platforma/profile/v1"
	"github.com/platforma/platforma/services/kit/apierr"
	"github.com/platforma/platforma/services/kit/pagetoken"
	"github.com/platforma/platforma/services/kit/validate"
	"github.com/platforma/platforma/services/profile/internal/domain"
	"github.com/platforma/platforma/services/profile/internal/store"
)

// validateLogin checks one login outcome; prefix is the path of the item
// in a batch ("requests[3].") or "".
func (s *Server) validateLogin(v *apierr.Violations, prefix string, req *profilev1.RecordLoginResultRequest) (store.LoginResult, bool) {
	before := len(v.List())
	var r store.LoginResult
	r.EventID, _ = validate.UUID(v, prefix+"event_id", req.GetEventId())
	r.Account.UserID, _ = validate.UUID(v, prefix+"user_id", req.GetUserId())
	if validate.Identifier.Require(v, prefix+"platform_account_id", req.GetPlatformAccountId()) {
		r.Account.PlatformAccountID = req.GetPlatformAccountId()
	}
	if validate.Enum(v, prefix+"outcome", req.GetOutcome(), true) {
		r.Success = req.GetOutcome() == commonv1.Outcome_OUTCOME_SUCCESS
	}
	if validate.Enum(v, prefix+"auth_type", req.GetAuthType(), false) {
		r.AuthType = int16(req.GetAuthType())
	}
	if at, ok := validate.Timestamp(v, prefix+"occurred_at", req.GetOccurredAt()); ok &&
		validate.Within(v, prefix+"occurred_at", at, s.now(), s.cfg.MaxEventAge, maxClockSkew, domain.ErrEventTooOld) {
		r.OccurredAt = at
	}
	return r, len(v.List()) == before
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
	authType        int16
	pageSize        int
}

// parseList turns the filter into one (score, id) range on the index: the
// grade and max_score narrow the score range, the page token moves its
// start.
func (s *Server) parseList(req *profilev1.ListProfilesRequest) (listQuery, error) {
	var v apierr.Violations
	q := listQuery{pageSize: validate.PageSize(&v, "page_size", req.GetPageSize())}
	validate.Enum(&v, "grade", req.GetGrade(), false)
	if validate.Enum(&v, "auth_type", req.GetAuthType(), false) {
		q.authType = int16(req.GetAuthType())
	}
	low, high, _ := domain.GradeRange(req.GetGrade())
	if req.MaxScore != nil {
		m := req.GetMaxScore()
		if !(m >= 0 && m <= 100) { // also refuses NaN
			v.Add("max_score", "must be between 0 and 100")
		} else if limit := hundredthsFloor(m) + 1; limit < high {
			high = limit
		}
	}
	// Start just below the lowest score of the range: every profile with
	// that score sorts after (low - 0.01, max uuid).
	q.after = cursor{hundredths: low - 1, id: uuid.Max}
	q.belowHundredths = high
	if tok := req.GetPageToken(); tok != "" {
		c, err := s.decodeCursor(req, tok)
		// Every page checks the cursor against this request's range again:
		// a token says where the previous page ended, never which scores
		// the request may see. A cursor below the range would start the
		// page in a lower grade.
		if err == nil && (c.hundredths < low || c.hundredths >= high) {
			err = pagetoken.ErrInvalid
		}
		if err != nil {
			v.Add("page_token", err.Error())
		} else {
			q.after = c
		}
	}
	return q, v.Err()
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
