package domain_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/platforma/platforma/services/profile/internal/domain"
)

func TestNeedsSessionRefresh(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                string
		consecutiveFailures int
		n                   int
		want                bool
	}{
		{"no logins", 0, 3, false},
		{"newest succeeded", 0, 3, false},
		{"two failures", 2, 3, false},
		{"three failures", 3, 3, true},
		{"more failures than N", 4, 3, true},
		{"N is configurable", 1, 1, true},
		{"N = 0 never asks", 1, 0, false},
		{"a whole window of failures", domain.WindowSize, domain.WindowSize, true},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, domain.NeedsSessionRefresh(tt.consecutiveFailures, tt.n), tt.name)
	}
}

func TestScoreIsHundredthsAsPoints(t *testing.T) {
	t.Parallel()
	assert.InDelta(t, 66.67, domain.Score(6667), 1e-9)
	assert.Equal(t, 100.0, domain.Score(10000))
	assert.Zero(t, domain.Score(0))
}
