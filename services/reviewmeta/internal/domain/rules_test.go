package domain_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	reviewmetav1 "github.com/platforma/platforma/gen/platforma/reviewmeta/v1"
	"github.com/platforma/platforma/services/reviewmeta/internal/domain"
)

const (
	booking = reviewmetav1.ReviewType_REVIEW_TYPE_BOOKING
	receipt = reviewmetav1.ReviewType_REVIEW_TYPE_RECEIPT
	pickup  = reviewmetav1.ReviewType_REVIEW_TYPE_PICKUP
	unset   = reviewmetav1.ReviewType_REVIEW_TYPE_UNSPECIFIED
)

func TestReviewTypeDerivation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		given   reviewmetav1.ReviewType
		source  string
		booking bool
		want    reviewmetav1.ReviewType
	}{
		{"pickup source", unset, "PICKUP", false, pickup},
		{"pickup source wins over booking detail", unset, "PICKUP", true, pickup},
		{"booking detail", unset, "STORE", true, booking},
		{"booking detail, no source", unset, "", true, booking},
		{"neither: receipt", unset, "STORE", false, receipt},
		{"nothing at all: receipt", unset, "", false, receipt},
		{"source compared exactly", unset, "pickup", false, receipt},
		{"source with spaces is not PICKUP", unset, "PICKUP ", false, receipt},
		{"given type kept", booking, "PICKUP", false, booking},
		{"given receipt kept despite booking detail", receipt, "", true, receipt},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, domain.ReviewType(tt.given, tt.source, tt.booking), tt.name)
	}
}

func TestReplyStateAndFilters(t *testing.T) {
	t.Parallel()
	const (
		anyState     = reviewmetav1.ReplyState_REPLY_STATE_UNSPECIFIED
		notAttempted = reviewmetav1.ReplyState_REPLY_STATE_NOT_ATTEMPTED
		succeeded    = reviewmetav1.ReplyState_REPLY_STATE_SUCCEEDED
		failed       = reviewmetav1.ReplyState_REPLY_STATE_FAILED
		pending      = reviewmetav1.ReplyState_REPLY_STATE_PENDING
	)
	tests := []struct {
		attempted, success, accepts bool
		state                       reviewmetav1.ReplyState
		matches                     []reviewmetav1.ReplyState
	}{
		{false, false, true, notAttempted, []reviewmetav1.ReplyState{anyState, notAttempted, pending}},
		{false, false, false, notAttempted, []reviewmetav1.ReplyState{anyState, notAttempted}},
		{true, false, true, failed, []reviewmetav1.ReplyState{anyState, failed, pending}},
		{true, false, false, failed, []reviewmetav1.ReplyState{anyState, failed}},
		{true, true, true, succeeded, []reviewmetav1.ReplyState{anyState, succeeded}},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.state, domain.State(tt.attempted, tt.success))
		var got []reviewmetav1.ReplyState
		for _, f := range []reviewmetav1.ReplyState{anyState, notAttempted, succeeded, failed, pending} {
			if domain.Matches(f, tt.attempted, tt.success, tt.accepts) {
				got = append(got, f)
			}
		}
		assert.Equal(t, tt.matches, got, "attempted=%v success=%v accepts=%v", tt.attempted, tt.success, tt.accepts)
	}
}
