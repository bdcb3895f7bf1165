package store

// The test oracle of the reply-state filters, which execute in SQL
// (stateFilters): an independent Go statement of what each selects.

import (
	reviewmetav1 "github.com/platforma/platforma/gen/platforma/reviewmeta/v1"
	"github.com/platforma/platforma/services/reviewmeta/internal/domain"
)

// oracleMatches reports whether a review is selected by a reply-state
// filter: no filter selects all; PENDING selects what the reply worker
// still has to do, reviews whose type accepts replies and that have no
// successful reply; any other filter selects the reviews shown with that
// state (domain.State).
func oracleMatches(filter reviewmetav1.ReplyState, attempted, success, acceptsReplies bool) bool {
	switch filter {
	case reviewmetav1.ReplyState_REPLY_STATE_UNSPECIFIED:
		return true
	case reviewmetav1.ReplyState_REPLY_STATE_PENDING:
		return acceptsReplies && !success
	default:
		return domain.State(attempted, success) == filter
	}
}
