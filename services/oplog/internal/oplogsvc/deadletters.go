package oplogsvc

import (
	"context"
	"strconv"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
	"github.com/platforma/platforma/services/kit/apierr"
	"github.com/platforma/platforma/services/kit/pagetoken"
	"github.com/platforma/platforma/services/kit/validate"
	"github.com/platforma/platforma/services/oplog/internal/store"
)

// maxReplayIDs bounds the event ids of one ReplayLoginDeadLetters call.
const maxReplayIDs = 1000

// ListLoginDeadLetters returns the login outcomes ProfileService refused
// for good, in event id order.
func (s *Server) ListLoginDeadLetters(ctx context.Context, req *oplogv1.ListLoginDeadLettersRequest) (*oplogv1.ListLoginDeadLettersResponse, error) {
	var v apierr.Violations
	pageSize := validate.PageSize(&v, "page_size", req.GetPageSize())
	var after uuid.UUID // the nil UUID sorts first
	if tok := req.GetPageToken(); tok != "" {
		// The MAC proves the server made the token; the cursor must
		// still be an event id, and never the nil UUID the first page
		// starts after.
		raw, err := s.tokens.Decode(tok, &oplogv1.ListLoginDeadLettersRequest{})
		if err != nil || len(raw) != len(after) || uuid.UUID(raw) == uuid.Nil {
			v.Add("page_token", pagetoken.ErrInvalid.Error())
		} else {
			copy(after[:], raw)
		}
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	letters, err := s.store.ListDeadLetters(ctx, after, pageSize+1)
	if err != nil {
		return nil, err
	}
	resp := &oplogv1.ListLoginDeadLettersResponse{}
	if len(letters) > pageSize {
		letters = letters[:pageSize]
		last := letters[len(letters)-1].EventID
		if resp.NextPageToken, err = s.tokens.Encode(&oplogv1.ListLoginDeadLettersRequest{}, last[:]); err != nil {
			return nil, err
		}
	}
	for i := range letters {
		resp.LoginDeadLetters = append(resp.LoginDeadLetters, deadLetterProto(&letters[i]))
	}
	return resp, nil
}

// ReplayLoginDeadLetters moves dead letters back to the outbox.
func (s *Server) ReplayLoginDeadLetters(ctx context.Context, req *oplogv1.ReplayLoginDeadLettersRequest) (*oplogv1.ReplayLoginDeadLettersResponse, error) {
	var v apierr.Violations
	ids := req.GetEventIds()
	switch {
	case req.GetAll() && len(ids) > 0:
		v.Add("event_ids", "must be empty when all is set")
	case !req.GetAll() && len(ids) == 0:
		v.Add("event_ids", "required, or all")
	case len(ids) > maxReplayIDs:
		v.Addf("event_ids", "at most %d per call", maxReplayIDs)
	}
	eventIDs := make([][16]byte, 0, len(ids))
	if v.Empty() {
		for i, id := range ids {
			if u, ok := validate.UUID(&v, "event_ids["+strconv.Itoa(i)+"]", id); ok {
				eventIDs = append(eventIDs, u)
			}
		}
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	n, err := s.store.ReplayDeadLetters(ctx, eventIDs, req.GetAll())
	if err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "login dead letters replayed", "replayed", n, "all", req.GetAll())
	return &oplogv1.ReplayLoginDeadLettersResponse{Replayed: n}, nil
}

func deadLetterProto(d *store.DeadLetter) *oplogv1.LoginDeadLetter {
	outcome := commonv1.Outcome_OUTCOME_FAILED
	if d.Success {
		outcome = commonv1.Outcome_OUTCOME_SUCCESS
	}
	return &oplogv1.LoginDeadLetter{
		EventId:           uuid.UUID(d.EventID).String(),
		UserId:            uuid.UUID(d.UserID).String(),
		PlatformAccountId: d.PlatformAccountID,
		Outcome:           outcome,
		AuthType:          commonv1.AuthType(d.AuthType),
		OccurredAt:        timestamppb.New(d.OccurredAt),
		Code:              d.Code,
		Reason:            d.Message,
		ErrorReason:       d.ErrorReason,
		DeadLetterTime:    timestamppb.New(d.DeadLetteredAt),
	}
}
