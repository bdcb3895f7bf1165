package domain

import (
	"google.golang.org/grpc/codes"

	"github.com/platforma/platforma/services/kit/apierr"
)

// The outcomes ProfileService's clients may branch on, each with its
// google.rpc.ErrorInfo reason (per-item results of a batch carry it in
// ItemError.reason).
var (
	// ErrProfileNotFound: no profile has the id, or the user and account,
	// asked for.
	ErrProfileNotFound = apierr.NewOutcome(codes.NotFound, "PROFILE_NOT_FOUND")
	// ErrEventIDConflict: the event_id was recorded for another user and
	// account; the same id cannot stand for two logins.
	ErrEventIDConflict = apierr.NewOutcome(codes.InvalidArgument, "EVENT_ID_CONFLICT")
	// ErrEventTooOld: occurred_at is older than the service accepts
	// (-max-event-age). Sending it again can never succeed: the login
	// relay keeps such outcomes as dead letters.
	ErrEventTooOld = apierr.NewOutcome(codes.InvalidArgument, "EVENT_TOO_OLD")
)
