package domain_test

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"

	profilev1 "github.com/platforma/platforma/gen/platforma/profile/v1"
	"github.com/platforma/platforma/services/profile/internal/domain"
)

func TestScoreHundredths(t *testing.T) {
	t.Parallel()
	tests := []struct {
		success, total int64
		want           int64
	}{
		{0, 0, 0},
		{0, 5, 0},
		{5, 5, 10000},
		{2, 3, 6667}, // 66.666… → 66.67
		{1, 3, 3333}, // 33.333… → 33.33
		{1, 8, 1250},
		{1, 32, 313}, // 3.125 → 3.13: halves round up
		{3, 800, 38}, // 0.375 → 0.38, where float64 arithmetic gives 0.37
		{4999, 10000, 4999},
		{7999, 10000, 7999},
		{1, 20000, 1},  // 0.005 → 0.01: half a hundredth rounds up
		{1, 200000, 0}, // 0.0005 → 0.00
		{999999, 1000000, 10000},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, domain.ScoreHundredths(tt.success, tt.total), "%d/%d", tt.success, tt.total)
	}
	assert.InDelta(t, 66.67, domain.Score(domain.ScoreHundredths(2, 3)), 1e-9)
}

func TestGradeBoundaries(t *testing.T) {
	t.Parallel()
	tests := []struct {
		hundredths int64
		want       profilev1.StabilityGrade
	}{
		{0, profilev1.StabilityGrade_STABILITY_GRADE_CRITICAL},
		{4999, profilev1.StabilityGrade_STABILITY_GRADE_CRITICAL},
		{5000, profilev1.StabilityGrade_STABILITY_GRADE_UNSTABLE},
		{7999, profilev1.StabilityGrade_STABILITY_GRADE_UNSTABLE},
		{8000, profilev1.StabilityGrade_STABILITY_GRADE_STABLE},
		{10000, profilev1.StabilityGrade_STABILITY_GRADE_STABLE},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, domain.Grade(tt.hundredths), "%d", tt.hundredths)
		low, high, ok := domain.GradeRange(tt.want)
		assert.True(t, ok)
		assert.True(t, tt.hundredths >= low && tt.hundredths < high, "%d inside the range of its grade", tt.hundredths)
	}
	_, _, ok := domain.GradeRange(profilev1.StabilityGrade_STABILITY_GRADE_UNSPECIFIED)
	assert.False(t, ok)
}

func at(minute int, success bool) domain.Login {
	return domain.Login{
		OccurredAt: time.Date(2026, 11, 21, 10, minute, 0, 0, time.UTC),
		Success:    success,
		EventID:    uuid.NewSHA1(uuid.NameSpaceOID, []byte{byte(minute), byte(len("x"))}),
	}
}

func minutes(w []domain.Login) []int {
	out := make([]int, len(w))
	for i, l := range w {
		out[i] = l.OccurredAt.Minute()
	}
	return out
}

func TestMergeWindow(t *testing.T) {
	t.Parallel()
	var window []domain.Login
	for m := 1; m <= 12; m++ {
		window = domain.MergeWindow(window, []domain.Login{at(m, true)})
	}
	assert.Equal(t, []int{12, 11, 10, 9, 8, 7, 6, 5, 4, 3}, minutes(window), "keeps the 10 newest, newest first")

	late := domain.MergeWindow(window, []domain.Login{at(7, false)})
	assert.Equal(t, []int{12, 11, 10, 9, 8, 7, 7, 6, 5, 4}, minutes(late), "a late login lands by its time")

	tooOld := domain.MergeWindow(window, []domain.Login{at(2, false)})
	assert.Equal(t, minutes(window), minutes(tooOld), "a login older than the whole full window falls out")

	batch := domain.MergeWindow(nil, []domain.Login{at(3, true), at(9, false), at(1, true)})
	assert.Equal(t, []int{9, 3, 1}, minutes(batch), "a batch in any order")

	same := at(5, true)
	other := same
	other.EventID = uuid.Max
	tie := domain.MergeWindow([]domain.Login{same}, []domain.Login{other})
	assert.Equal(t, uuid.Max, tie[0].EventID, "equal times: the larger event id counts as newer")
}

func TestConsecutiveFailuresAndRefresh(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		window  []domain.Login // newest first
		streak  int
		refresh bool // with N = 3
	}{
		{"empty", nil, 0, false},
		{"newest succeeded", []domain.Login{at(5, true), at(4, false), at(3, false)}, 0, false},
		{"two failures", []domain.Login{at(5, false), at(4, false), at(3, true)}, 2, false},
		{"three failures", []domain.Login{at(5, false), at(4, false), at(3, false), at(2, true)}, 3, true},
		{"only failures", []domain.Login{at(5, false), at(4, false), at(3, false), at(2, false)}, 4, true},
		{"fewer logins than N", []domain.Login{at(5, false), at(4, false)}, 2, false},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.streak, domain.ConsecutiveFailures(tt.window), tt.name)
		assert.Equal(t, tt.refresh, domain.NeedsSessionRefresh(tt.window, 3), tt.name)
	}
	assert.True(t, domain.NeedsSessionRefresh([]domain.Login{at(1, false)}, 1), "N is configurable")
	assert.False(t, domain.NeedsSessionRefresh([]domain.Login{at(1, false)}, 0), "N = 0 never asks")
}
