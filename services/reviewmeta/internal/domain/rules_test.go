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

func TestReplyState(t *testing.T) {
	t.Parallel()
	tests := []struct {
		attempted, success bool
		want               reviewmetav1.ReplyState
	}{
		{false, false, reviewmetav1.ReplyState_REPLY_STATE_NOT_ATTEMPTED},
		{true, false, reviewmetav1.ReplyState_REPLY_STATE_FAILED},
		{true, true, reviewmetav1.ReplyState_REPLY_STATE_SUCCEEDED},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, domain.State(tt.attempted, tt.success), "attempted=%v success=%v", tt.attempted, tt.success)
	}
}
