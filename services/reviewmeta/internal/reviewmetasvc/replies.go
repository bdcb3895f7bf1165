package reviewmetasvc

import (
	"context"
	"time"

	"github.com/google/uuid"

	reviewmetav1 "github.com/platforma/platforma/gen/platforma/reviewmeta/v1"
	"github.com/platforma/platforma/services/kit/apierr"
	"github.com/platforma/platforma/services/kit/metrics"
	"github.com/platforma/platforma/services/kit/validate"
	"github.com/platforma/platforma/services/reviewmeta/internal/store"
)

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
