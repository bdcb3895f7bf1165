// Package domain holds the review-metadata rules that run in Go: the
// review type a review is stored with, and the reply state it is shown
// with.
//
// Which reviews a reply-state filter selects executes in SQL
// (store.stateFilters, written so that the planner can use the partial
// index of unreplied reviews); its test oracle is in the store's tests
// (services/reviewmeta/internal/store/oracle_test.go), and it is defined
// by State: a filter selects the reviews shown with that state.
package domain

import (
	reviewmetav1 "github.com/platforma/platforma/gen/platforma/reviewmeta/v1"
)

// PickupSource is the source value the platform gives delivery and pickup
// reviews.
const PickupSource = "PICKUP"

// DeriveReviewType is the platform's review type rule: a PICKUP source makes
// a PICKUP review (TYPE_C), booking detail a BOOKING review (TYPE_A),
// anything else a RECEIPT review (TYPE_B). The source is compared exactly,
// as the platform sends it.
func DeriveReviewType(source string, hasBookingDetail bool) reviewmetav1.ReviewType {
	switch {
	case source == PickupSource:
		return reviewmetav1.ReviewType_REVIEW_TYPE_PICKUP
	case hasBookingDetail:
		return reviewmetav1.ReviewType_REVIEW_TYPE_BOOKING
	default:
		return reviewmetav1.ReviewType_REVIEW_TYPE_RECEIPT
	}
}

// ReviewType is the type to store: the one given, or the derived one when
// none is.
func ReviewType(given reviewmetav1.ReviewType, source string, hasBookingDetail bool) reviewmetav1.ReviewType {
	if given != reviewmetav1.ReviewType_REVIEW_TYPE_UNSPECIFIED {
		return given
	}
	return DeriveReviewType(source, hasBookingDetail)
}

// State is a review's reply state by its latest attempt.
func State(attempted, success bool) reviewmetav1.ReplyState {
	switch {
	case success:
		return reviewmetav1.ReplyState_REPLY_STATE_SUCCEEDED
	case attempted:
		return reviewmetav1.ReplyState_REPLY_STATE_FAILED
	default:
		return reviewmetav1.ReplyState_REPLY_STATE_NOT_ATTEMPTED
	}
}
