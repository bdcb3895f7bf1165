package relay

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"google.golang.org/grpc/codes"
)

// The relay decides by ProfileService's reason when it knows it, and by
// the code only when there is no reason it knows.
func TestRefusedForGood(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		code   codes.Code
		reason string
		want   bool
	}{
		{"too old: final", codes.InvalidArgument, "EVENT_TOO_OLD", true},
		{"event id of another account: final", codes.InvalidArgument, "EVENT_ID_CONFLICT", true},
		{"a final reason wins over a code that would retry", codes.Unavailable, "EVENT_TOO_OLD", true},
		{"field refused without a reason: by its code", codes.InvalidArgument, "", true},
		{"unknown reason, permanent code", codes.FailedPrecondition, "SOMETHING_NEW", true},
		{"unavailable: retried", codes.Unavailable, "", false},
		{"internal: retried", codes.Internal, "", false},
		{"unknown reason, transient code: retried", codes.ResourceExhausted, "SOMETHING_NEW", false},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, refusedForGood(tt.code, tt.reason), tt.name)
	}
}
