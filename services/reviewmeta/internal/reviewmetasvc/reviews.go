package reviewmetasvc

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	reviewmetav1 "github.com/platforma/platforma/gen/platforma/reviewmeta/v1"
	"github.com/platforma/platforma/services/kit/apierr"
	"github.com/platforma/platforma/services/kit/pagetoken"
	"github.com/platforma/platforma/services/kit/validate"
	"github.com/platforma/platforma/services/reviewmeta/internal/domain"
	"github.com/platforma/platforma/services/reviewmeta/internal/store"
)

// UpsertReviewMetadata creates or updates one review's metadata.
func (s *Server) UpsertReviewMetadata(ctx context.Context, req *reviewmetav1.UpsertReviewMetadataRequest) (*reviewmetav1.UpsertReviewMetadataResponse, error) {
	var v apierr.Violations
	if req.GetReviewMetadata() == nil {
		v.Add("review_metadata", "required")
		return nil, v.Err()
	}
	item, ok := s.validateUpsert(&v, "review_metadata.", req.GetReviewMetadata())
	if !ok {
		return nil, v.Err()
	}
	stored, err := s.store.Upsert(ctx, []store.Upsert{item})
	if err != nil {
		return nil, err
	}
	return &reviewmetav1.UpsertReviewMetadataResponse{ReviewMetadata: toProto(stored[item.ReviewID])}, nil
}

// BatchUpsertReviewMetadata upserts a scraped page of up to maxBatch
// reviews. A review repeated in the page is written once, with its newest
// data (the last one among equal fetched_at).
func (s *Server) BatchUpsertReviewMetadata(ctx context.Context, req *reviewmetav1.BatchUpsertReviewMetadataRequest) (*reviewmetav1.BatchUpsertReviewMetadataResponse, error) {
	n := len(req.GetItems())
	if n == 0 || n > maxBatch {
		return nil, apierr.InvalidArgument(apierr.FieldViolation("items", fmt.Sprintf("must hold 1 to %d items, got %d", maxBatch, n)))
	}
	resp := &reviewmetav1.BatchUpsertReviewMetadataResponse{Results: make([]*reviewmetav1.UpsertReviewMetadataResult, n)}
	newest := map[uuid.UUID]int{} // review id → index of the item to write
	items := make([]store.Upsert, n)
	for i, in := range req.GetItems() {
		var v apierr.Violations
		item, ok := s.validateUpsert(&v, fmt.Sprintf("items[%d].", i), in)
		if !ok {
			resp.Results[i] = &reviewmetav1.UpsertReviewMetadataResult{Result: &reviewmetav1.UpsertReviewMetadataResult_Error{Error: apierr.ItemError(v.Err())}}
			continue
		}
		items[i] = item
		if j, seen := newest[item.ReviewID]; !seen || !item.FetchedAt.Before(items[j].FetchedAt) {
			newest[item.ReviewID] = i
		}
	}
	if len(newest) == 0 {
		return resp, nil
	}
	write := make([]store.Upsert, 0, len(newest))
	for _, i := range newest {
		write = append(write, items[i])
	}
	stored, err := s.store.Upsert(ctx, write)
	if err != nil {
		return nil, err
	}
	for i := range resp.Results {
		if resp.Results[i] == nil {
			resp.Results[i] = &reviewmetav1.UpsertReviewMetadataResult{
				Result: &reviewmetav1.UpsertReviewMetadataResult_ReviewMetadata{ReviewMetadata: toProto(stored[items[i].ReviewID])},
			}
		}
	}
	return resp, nil
}

// GetReviewMetadata returns one review's metadata.
func (s *Server) GetReviewMetadata(ctx context.Context, req *reviewmetav1.GetReviewMetadataRequest) (*reviewmetav1.GetReviewMetadataResponse, error) {
	var v apierr.Violations
	id, _ := reviewID(&v, "review_id", req.GetReviewId())
	if err := v.Err(); err != nil {
		return nil, err
	}
	r, err := s.store.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	return &reviewmetav1.GetReviewMetadataResponse{ReviewMetadata: toProto(r)}, nil
}

// ListReviewMetadata lists one shop's reviews, newest first.
func (s *Server) ListReviewMetadata(ctx context.Context, req *reviewmetav1.ListReviewMetadataRequest) (*reviewmetav1.ListReviewMetadataResponse, error) {
	q, err := s.parseList(req)
	if err != nil {
		return nil, err
	}
	rows, next, err := pagetoken.Page(q.Limit,
		func(limit int) ([]store.Review, error) {
			q.Limit = limit
			return s.store.List(ctx, q)
		},
		func(last store.Review) (string, error) { return s.encodeCursor(req, last.CreateTime, last.ReviewID) })
	if err != nil {
		return nil, err
	}
	resp := &reviewmetav1.ListReviewMetadataResponse{NextPageToken: next}
	for _, r := range rows {
		resp.ReviewMetadata = append(resp.ReviewMetadata, toProto(r))
	}
	return resp, nil
}

func toProto(r store.Review) *reviewmetav1.ReviewMetadata {
	out := &reviewmetav1.ReviewMetadata{
		Id:                 r.ID.String(),
		ReviewId:           r.ReviewID.String(),
		ShopId:             r.ShopID.String(),
		ExternalShopId:     r.ExternalShopID,
		ExternalBusinessId: r.ExternalBusinessID,
		ReviewType:         reviewmetav1.ReviewType(r.ReviewType),
		Source:             r.Source,
		HasBookingDetail:   r.HasBookingDetail,
		ReplyAttempted:     r.ReplyAttempted,
		ReplySuccess:       r.ReplySuccess,
		ReplyErrorType:     r.ReplyErrorType,
		ReplyAttemptCount:  r.ReplyAttemptCount,
		FetchedAt:          timestamppb.New(r.FetchedAt),
		CreateTime:         timestamppb.New(r.CreateTime),
		UpdateTime:         timestamppb.New(r.UpdateTime),
		ReplyState:         domain.State(r.ReplyAttempted, r.ReplySuccess),
	}
	if r.LastReplyAttemptTime.Valid {
		out.LastReplyAttemptTime = timestamppb.New(r.LastReplyAttemptTime.Time)
	}
	return out
}

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
	return s.cfg.PageTokens.EncodeFor(req, buf)
}

// cursorClockSlack is how far past the server's clock a cursor's
// create_time may be: create_time is the database's clock.
const cursorClockSlack = 24 * time.Hour

// decodeCursor checks the token's MAC and reads its cursor, which must be
// a create_time a row can have: from 1970 to the server's clock (plus
// cursorClockSlack). The filter needs no check: the MAC binds the token
// to it, and the position only narrows what the filter selects.
func (s *Server) decodeCursor(req *reviewmetav1.ListReviewMetadataRequest, token string) (time.Time, uuid.UUID, error) {
	raw, err := s.cfg.PageTokens.DecodeFor(req, token)
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
