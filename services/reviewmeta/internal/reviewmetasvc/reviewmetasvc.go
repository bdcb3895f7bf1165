// Package reviewmetasvc implements platforma.reviewmeta.v1.ReviewMetadataService:
// thin handlers that validate, call the store and convert.
package reviewmetasvc

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"

	reviewmetav1 "github.com/platforma/platforma/gen/platforma/reviewmeta/v1"
	"github.com/platforma/platforma/services/kit/apierr"
	"github.com/platforma/platforma/services/kit/metrics"
	"github.com/platforma/platforma/services/kit/pagetoken"
	"github.com/platforma/platforma/services/kit/server"
	"github.com/platforma/platforma/services/reviewmeta/internal/domain"
	"github.com/platforma/platforma/services/reviewmeta/internal/store"
)

// Limits of the API.
const (
	maxBatch = 1000
	// maxClockSkew is how far in the future fetched_at and attempted_at
	// may be.
	maxClockSkew = 5 * time.Minute
)

// Server implements ReviewMetadataService.
type Server struct {
	reviewmetav1.UnimplementedReviewMetadataServiceServer
	store    *store.Store
	tokens   *pagetoken.Keyring
	now      func() time.Time
	attempts *prometheus.CounterVec
}

// New returns a Server on st whose page tokens tokens signs and checks
// (nil: a random key of this Server).
func New(st *store.Store, tokens *pagetoken.Keyring) *Server {
	if tokens == nil {
		tokens = pagetoken.NewRandomKeyring()
	}
	return &Server{store: st, tokens: tokens, now: time.Now, attempts: newAttemptsCounter()}
}

// Register plugs the service into a platforma server; tokens is the key
// ring of the page tokens (app's -page-token-keys).
func Register(r server.Registrar, pool *pgxpool.Pool, tokens *pagetoken.Keyring) error {
	s := New(store.New(pool), tokens)
	reviewmetav1.RegisterReviewMetadataServiceServer(r.GRPC, s)
	return r.Metrics.Register(s.attempts)
}

// newAttemptsCounter counts recorded reply attempts; a retried
// attempt_id is not counted again.
func newAttemptsCounter() *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metrics.Namespace,
		Name:      "reply_attempts_total",
		Help:      "Reply attempts recorded, by the review's type and whether the reply was posted (success) or not (failure).",
	}, []string{"review_type", "result"})
	for n := range reviewmetav1.ReviewType_name {
		if n != 0 {
			c.WithLabelValues(metrics.EnumLabel(reviewmetav1.ReviewType(n)), "success")
			c.WithLabelValues(metrics.EnumLabel(reviewmetav1.ReviewType(n)), "failure")
		}
	}
	return c
}

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

// RecordReplyAttempt records one reply attempt.
func (s *Server) RecordReplyAttempt(ctx context.Context, req *reviewmetav1.RecordReplyAttemptRequest) (*reviewmetav1.RecordReplyAttemptResponse, error) {
	a, err := s.validateAttempt(req)
	if err != nil {
		return nil, err
	}
	r, duplicate, err := s.store.RecordReplyAttempt(ctx, a)
	if err != nil {
		return nil, err
	}
	if !duplicate {
		result := "failure"
		if a.Success {
			result = "success"
		}
		s.attempts.WithLabelValues(metrics.EnumLabel(reviewmetav1.ReviewType(r.ReviewType)), result).Inc()
	}
	return &reviewmetav1.RecordReplyAttemptResponse{ReviewMetadata: toProto(r), Duplicate: duplicate}, nil
}

// GetReplyStats counts reviews with reply attempts per review type.
func (s *Server) GetReplyStats(ctx context.Context, req *reviewmetav1.GetReplyStatsRequest) (*reviewmetav1.GetReplyStatsResponse, error) {
	var v apierr.Violations
	var shop *uuid.UUID
	if req.GetShopId() != "" {
		if id, ok := reviewID(&v, "shop_id", req.GetShopId()); ok {
			shop = &id
		}
	}
	var since *time.Time
	if req.GetSince() != nil {
		if err := req.GetSince().CheckValid(); err != nil {
			v.Add("since", "not a valid timestamp")
		} else {
			t := req.GetSince().AsTime()
			since = &t
		}
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	stats, err := s.store.ReplyStats(ctx, shop, since)
	if err != nil {
		return nil, err
	}
	resp := &reviewmetav1.GetReplyStatsResponse{}
	for _, st := range stats {
		resp.Stats = append(resp.Stats, &reviewmetav1.ReplyTypeStats{
			ReviewType: reviewmetav1.ReviewType(st.ReviewType),
			Attempted:  st.Attempted,
			Succeeded:  st.Succeeded,
			Failed:     st.Failed,
		})
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
