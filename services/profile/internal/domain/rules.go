// Package domain holds the session-stability rules as plain
// functions. The database applies the same rules (migrations/profile,
// functions profile.stability_score, stability_grade, leading_failures,
// merge_logins); store tests check both agree on the same inputs.
package domain

import (
	"bytes"
	"sort"
	"time"

	"github.com/google/uuid"

	profilev1 "github.com/platforma/platforma/gen/platforma/profile/v1"
)

// WindowSize is how many recent logins a profile keeps.
const WindowSize = 10

// ScoreHundredths is the session-stability score in hundredths of a
// point: round(success / total × 100, 2) × 100, rounding halves up, and 0
// when total is 0. Integer arithmetic, so it is exact where floating point
// would misround (3 of 800 is 0.375 %, which rounds to 0.38).
func ScoreHundredths(success, total int64) int64 {
	if total <= 0 {
		return 0
	}
	return (success*20000 + total) / (2 * total)
}

// Score is ScoreHundredths as the 0-100 value the API shows.
func Score(hundredths int64) float64 { return float64(hundredths) / 100 }

// Grade buckets a score: STABLE from 80, UNSTABLE from 50, CRITICAL below.
func Grade(hundredths int64) profilev1.StabilityGrade {
	switch {
	case hundredths >= 8000:
		return profilev1.StabilityGrade_STABILITY_GRADE_STABLE
	case hundredths >= 5000:
		return profilev1.StabilityGrade_STABILITY_GRADE_UNSTABLE
	default:
		return profilev1.StabilityGrade_STABILITY_GRADE_CRITICAL
	}
}

// GradeRange is the score range of a grade, in hundredths: [low, high).
// ok is false for UNSPECIFIED, which selects every score.
func GradeRange(g profilev1.StabilityGrade) (low, high int64, ok bool) {
	switch g {
	case profilev1.StabilityGrade_STABILITY_GRADE_STABLE:
		return 8000, 10001, true
	case profilev1.StabilityGrade_STABILITY_GRADE_UNSTABLE:
		return 5000, 8000, true
	case profilev1.StabilityGrade_STABILITY_GRADE_CRITICAL:
		return 0, 5000, true
	}
	return 0, 10001, false
}

// Login is one entry of the recent-login window.
type Login struct {
	OccurredAt time.Time
	Success    bool
	EventID    uuid.UUID
}

// Newer orders logins newest first: by time, then by event id, so equal
// times still give one order (the database sorts uuids bytewise too).
func Newer(a, b Login) bool {
	if !a.OccurredAt.Equal(b.OccurredAt) {
		return a.OccurredAt.After(b.OccurredAt)
	}
	return bytes.Compare(a.EventID[:], b.EventID[:]) > 0
}

// MergeWindow returns the WindowSize newest of the logins of a and b,
// newest first. Arrival order does not matter: a late login lands where
// its time puts it, or falls out when ten newer ones are known.
func MergeWindow(a, b []Login) []Login {
	all := make([]Login, 0, len(a)+len(b))
	all = append(append(all, a...), b...)
	sort.SliceStable(all, func(i, j int) bool { return Newer(all[i], all[j]) })
	if len(all) > WindowSize {
		all = all[:WindowSize]
	}
	return all
}

// ConsecutiveFailures counts the failures at the head of a newest-first
// window, before its first success (at most WindowSize).
func ConsecutiveFailures(window []Login) int {
	for i, l := range window {
		if l.Success {
			return i
		}
	}
	return len(window)
}

// NeedsSessionRefresh reports whether the newest n logins all failed.
func NeedsSessionRefresh(window []Login, n int) bool {
	return n > 0 && ConsecutiveFailures(window) >= n
}
