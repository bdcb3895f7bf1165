package domain

import (
	"google.golang.org/grpc/codes"

	"github.com/platforma/platforma/services/kit/apierr"
)

// The outcomes ReviewMetadataService's clients may branch on, each with
// its google.rpc.ErrorInfo reason.
var (
	// ErrReviewNotFound: no review has the review_id asked for.
	ErrReviewNotFound = apierr.NewOutcome(codes.NotFound, "REVIEW_NOT_FOUND")
	// ErrReviewTypeTakesNoReplies: the review's type takes no replies
	// (table reviewmeta.review_types); the reply worker should drop it.
	ErrReviewTypeTakesNoReplies = apierr.NewOutcome(codes.FailedPrecondition, "REVIEW_TYPE_TAKES_NO_REPLIES")
	// ErrAttemptIDConflict: the attempt_id was recorded for another
	// review; the same id cannot stand for two attempts.
	ErrAttemptIDConflict = apierr.NewOutcome(codes.InvalidArgument, "ATTEMPT_ID_CONFLICT")
)
