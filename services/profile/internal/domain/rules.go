// Package domain holds ProfileService's rules that run in Go: the refresh
// rule, whose threshold is a flag, and the outcomes clients branch on.
//
// The session-stability rules (the login window, score, grade and failure
// streak) execute in Postgres, as the functions behind the profile's
// generated columns (migrations/profile): a profile's score and grade are
// then always those of its counters, whatever the concurrency. Their test
// oracle, an independent Go version of each, is in the store's tests
// (services/profile/internal/store/oracle_test.go).
package domain

import (
	"time"

	"github.com/google/uuid"
)

// WindowSize is how many recent logins a profile keeps
// (rule:login-window: profile.merge_logins keeps that many; the store's
// tests check it). -refresh-after-failures cannot exceed it.
const WindowSize = 10

// Score is a score in hundredths, as stored, as the 0-100 value the API
// shows.
func Score(hundredths int64) float64 { return float64(hundredths) / 100 }

// Login is one entry of the recent-login window.
type Login struct {
	OccurredAt time.Time
	Success    bool
	EventID    uuid.UUID
}

// NeedsSessionRefresh is the refresh rule: a profile needs its session
// refreshed when its newest n logins all failed, that is when its
// consecutive failures (profile.leading_failures, stored with the
// profile) reach n, the service's -refresh-after-failures.
func NeedsSessionRefresh(consecutiveFailures, n int) bool {
	return n > 0 && consecutiveFailures >= n
}
