package reviewmetasvc

import (
	"encoding/binary"
	"time"

	"github.com/google/uuid"

	reviewmetav1 "github.com/platforma/platforma/gen/platforma/reviewmeta/v1"
	"github.com/platforma/platforma/services/kit/apierr"
	"github.com/platforma/platforma/services/kit/pagetoken"
	"github.com/platforma/platforma/services/kit/validate"
	"github.com/platforma/platforma/services/reviewmeta/internal/domain"
	"github.com/platforma/platforma/services/reviewmeta/internal/store"
)

// reviewID is validate.UUID; named for what it reads.
func reviewID(v *apierr.Violations, field, s string) (uuid.UUID, bool) {
	return validate.UUID(v, field, s)
}

// validateUpsert checks one review; prefix is its path ("items[3]." or
// "review_metadata."). Output-only fields are ignored. An unspecified type
// is derived by domain.ReviewType.
func (s *Server) validateUpsert(v *apierr.Violations, prefix string, in *reviewmetav1.ReviewMetadata) (store.Upsert, bool) {
	before := len(v.List())
	var u store.Upsert
	u.ReviewID, _ = validate.UUID(v, prefix+"review_id", in.GetReviewId())
	u.ShopID, _ = validate.UUID(v, prefix+"shop_id", in.GetShopId())
	if validate.Identifier.Check(v, prefix+"external_shop_id", in.GetExternalShopId()) {
		u.ExternalShopID = in.GetExternalShopId()
	}
	if validate.Identifier.Check(v, prefix+"external_business_id", in.GetExternalBusinessId()) {
		u.ExternalBusinessID = in.GetExternalBusinessId()
	}
	if validate.Code.Check(v, prefix+"source", in.GetSource()) {
		u.Source = in.GetSource()
	}
	u.HasBookingDetail = in.GetHasBookingDetail()
	if validate.Enum(v, prefix+"review_type", in.GetReviewType(), false) {
		u.ReviewType = int16(domain.ReviewType(in.GetReviewType(), u.Source, u.HasBookingDetail))
	}
	if at, ok := validate.Timestamp(v, prefix+"fetched_at", in.GetFetchedAt()); ok &&
		notInFuture(v, prefix+"fetched_at", at, s.now()) {
		u.FetchedAt = at
	}
	return u, len(v.List()) == before
}

// notInFuture allows any past time (re-sending old data is harmless: it
// never overwrites newer data) but nothing beyond the clock skew.
func notInFuture(v *apierr.Violations, field string, t, now time.Time) bool {
	if t.After(now.Add(maxClockSkew)) {
		v.Addf(field, "more than %s in the future", maxClockSkew)
		return false
	}
	return true
}

func (s *Server) validateAttempt(req *reviewmetav1.RecordReplyAttemptRequest) (store.Attempt, error) {
	var v apierr.Violations
	var a store.Attempt
	a.ReviewID, _ = validate.UUID(&v, "review_id", req.GetReviewId())
	a.Success = req.GetSuccess()
	if validate.Code.Check(&v, "error_type", req.GetErrorType()) && !a.Success {
		a.ErrorType = req.GetErrorType()
	}
	if at, ok := validate.Timestamp(&v, "attempted_at", req.GetAttemptedAt()); ok &&
		notInFuture(&v, "attempted_at", at, s.now()) {
		a.AttemptedAt = at
	}
	if req.GetAttemptId() != "" {
		a.AttemptID, _ = validate.UUID(&v, "attempt_id", req.GetAttemptId())
	}
	return a, v.Err()
}

// parseList validates the filter and turns the page token into the keyset
// position.
func (s *Server) parseList(req *reviewmetav1.ListReviewMetadataRequest) (store.ListQuery, error) {
	var v apierr.Violations
	q := store.ListQuery{Limit: validate.PageSize(&v, "page_size", req.GetPageSize())}
	switch {
	case req.GetShopId() != "" && req.GetExternalShopId() != "":
		v.Add("shop_id", "give either shop_id or external_shop_id, not both")
	case req.GetShopId() != "":
		q.ShopID, _ = validate.UUID(&v, "shop_id", req.GetShopId())
	case req.GetExternalShopId() != "":
		if validate.Identifier.Check(&v, "external_shop_id", req.GetExternalShopId()) {
			q.ExternalShopID = req.GetExternalShopId()
		}
	default:
		v.Add("shop_id", "required, or external_shop_id")
	}
	if validate.Enum(&v, "review_type", req.GetReviewType(), false) {
		q.ReviewType = int16(req.GetReviewType())
	}
	if validate.Enum(&v, "reply_state", req.GetReplyState(), false) {
		q.State = req.GetReplyState()
	}
	if tok := req.GetPageToken(); tok != "" {
		at, id, err := s.decodeCursor(req, tok)
		if err != nil {
			v.Add("page_token", err.Error())
		}
		q.BeforeTime, q.BeforeReviewID = at, id
	}
	return q, v.Err()
}

func (s *Server) encodeCursor(req *reviewmetav1.ListReviewMetadataRequest, createTime time.Time, id uuid.UUID) (string, error) {
	buf := binary.BigEndian.AppendUint64(nil, uint64(createTime.UnixMicro()))
	buf = append(buf, id[:]...)
	return s.tokens.EncodeFor(req, buf)
}

// cursorClockSlack is how far past the server's clock a cursor's
// create_time may be: create_time is the database's clock.
const cursorClockSlack = 24 * time.Hour

// decodeCursor checks the token's MAC and reads its cursor, which must be
// a create_time a row can have: from 1970 to the server's clock (plus
// cursorClockSlack). The filter needs no check: the MAC binds the token
// to it, and the position only narrows what the filter selects.
func (s *Server) decodeCursor(req *reviewmetav1.ListReviewMetadataRequest, token string) (time.Time, uuid.UUID, error) {
	raw, err := s.tokens.DecodeFor(req, token)
	if err != nil {
		return time.Time{}, uuid.Nil, err
	}
	if len(raw) != 8+16 {
		return time.Time{}, uuid.Nil, pagetoken.ErrInvalid
	}
	micros := int64(binary.BigEndian.Uint64(raw))
	at := time.UnixMicro(micros).UTC()
	if micros <= 0 || at.After(s.now().Add(cursorClockSlack)) {
		return time.Time{}, uuid.Nil, pagetoken.ErrInvalid
	}
	var id uuid.UUID
	copy(id[:], raw[8:])
	return at, id, nil
}
