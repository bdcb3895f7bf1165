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
	// ErrCursorExpired: WatchProfileChanges was asked to resume from a
	// cursor older than the transitions kept (-watch-retention): some
	// transitions after it are gone. OUT_OF_RANGE, as etcd answers a watch
	// from a compacted revision: the request is well-formed but asks for
	// a position outside the stream's retained range, and resending it
	// can never succeed. The client resynchronises with ListProfiles, then
	// watches from now.
	ErrCursorExpired = apierr.NewOutcome(codes.OutOfRange, "CURSOR_EXPIRED")
	// ErrTooManyWatchers: this replica already serves -watch-max-watchers
	// watches. Another replica, or this one later, may accept it.
	ErrTooManyWatchers = apierr.NewOutcome(codes.ResourceExhausted, "TOO_MANY_WATCHERS")
)
