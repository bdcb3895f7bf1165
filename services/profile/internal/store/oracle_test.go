package store

// The test oracle of the session-stability rules. The rules execute in
// Postgres (migrations/profile: stability_score, stability_grade through
// grade_floor, merge_logins, leading_failures); these are independent Go
// versions of them, written from the rules' definitions, which the tests
// compare with the SQL on the same inputs. Nothing outside tests calls
// them.

import (
	"bytes"
	"sort"

	"github.com/platforma/platforma/services/profile/internal/domain"
)

// oracleScoreHundredths is round(success / total × 100, 2) × 100, halves
// up, and 0 when total is 0, in integer arithmetic, so it is exact where
// floating point would misround (3 of 800 is 0.375 %, which rounds to
// 0.38).
func oracleScoreHundredths(success, total int64) int64 {
	if total <= 0 {
		return 0
	}
	return (success*20000 + total) / (2 * total)
}

// Grade numbers (StabilityGrade).
const (
	gradeStable   = 1
	gradeUnstable = 2
	gradeCritical = 3
)

// oracleGrade buckets a score in hundredths: STABLE from 80, UNSTABLE
// from 50, CRITICAL below (rule:grade-thresholds, pinned here from the
// API's side).
func oracleGrade(hundredths int64) int16 {
	switch {
	case hundredths >= 8000:
		return gradeStable
	case hundredths >= 5000:
		return gradeUnstable
	default:
		return gradeCritical
	}
}

// oracleNewer orders logins newest first: by time, then by event id, so
// equal times still give one order (Postgres sorts uuids bytewise too).
func oracleNewer(a, b domain.Login) bool {
	if !a.OccurredAt.Equal(b.OccurredAt) {
		return a.OccurredAt.After(b.OccurredAt)
	}
	return bytes.Compare(a.EventID[:], b.EventID[:]) > 0
}

// oracleMergeWindow is the domain.WindowSize newest of the logins of a
// and b, newest first, whatever their arrival order.
func oracleMergeWindow(a, b []domain.Login) []domain.Login {
	all := make([]domain.Login, 0, len(a)+len(b))
	all = append(append(all, a...), b...)
	sort.SliceStable(all, func(i, j int) bool { return oracleNewer(all[i], all[j]) })
	if len(all) > domain.WindowSize {
		all = all[:domain.WindowSize]
	}
	return all
}

// oracleLeadingFailures counts the failures at the head of a newest-first
// window, before its first success.
func oracleLeadingFailures(window []domain.Login) int {
	for i, l := range window {
		if l.Success {
			return i
		}
	}
	return len(window)
}
