package profilesvc

import (
	"context"
	"fmt"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	profilev1 "github.com/platforma/platforma/gen/platforma/profile/v1"
	"github.com/platforma/platforma/services/kit/apierr"
	"github.com/platforma/platforma/services/kit/validate"
	"github.com/platforma/platforma/services/profile/internal/domain"
	"github.com/platforma/platforma/services/profile/internal/store"
)

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
	rec, err := s.store.RecordLoginResults(ctx, send, s.cfg.RefreshAfterFailures)
	if err != nil {
		return nil, err
	}
	s.countTransitions(rec.Transitions)
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
