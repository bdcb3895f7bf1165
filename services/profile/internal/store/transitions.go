package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/platforma/platforma/services/profile/internal/domain"
)

// Position is a place in the transition stream: (tx, id) of the last
// transition delivered, or (horizon, 0) where everything below the
// horizon has been delivered. Positions compare as (Tx, ID) pairs.
type Position struct {
	Tx uint64
	ID int64
}

// Less reports whether p is before q.
func (p Position) Less(q Position) bool { return p.Tx < q.Tx || p.Tx == q.Tx && p.ID < q.ID }

// Max is the later of p and q.
func (p Position) Max(q Position) Position {
	if p.Less(q) {
		return q
	}
	return p
}

func (p Position) tx() string { return strconv.FormatUint(p.Tx, 10) }

// Transition is one stored change of a profile's grade or refresh need.
type Transition struct {
	Pos                 Position
	ProfileID           uuid.UUID
	Account             Account
	AuthType            int16
	TotalLogins         int64
	SuccessLogins       int64
	ConsecutiveFailures int
	Version             int64
	UpdateTime          time.Time
	ScoreHundredths     int64
	OldGrade, NewGrade  int16
	OldRefresh          bool
	NewRefresh          bool
	EventID             uuid.UUID
	Success             bool
	OccurredAt          time.Time
	RecordedAt          time.Time
}

// TransitionFilter selects transitions (WatchProfileChanges' filters).
// The kinds (GradesEntered, RefreshBecameTrue, RefreshBecameFalse) are
// alternatives, all of them when none is set; the rest narrow.
type TransitionFilter struct {
	GradesEntered      []int16
	RefreshBecameTrue  bool
	RefreshBecameFalse bool
	UserID             *uuid.UUID
	PlatformAccountID  *string
	AuthType           int16
}

// AnyKind reports whether no kind is asked for: every transition matches.
func (f TransitionFilter) AnyKind() bool {
	return len(f.GradesEntered) == 0 && !f.RefreshBecameTrue && !f.RefreshBecameFalse
}

// Matches is the filter of transitionsAfter, for transitions a replica
// already holds in memory; the store's tests check both select the same.
func (f TransitionFilter) Matches(t Transition) bool {
	if f.UserID != nil && *f.UserID != t.Account.UserID ||
		f.PlatformAccountID != nil && *f.PlatformAccountID != t.Account.PlatformAccountID ||
		f.AuthType != 0 && f.AuthType != t.AuthType {
		return false
	}
	if f.AnyKind() {
		return true
	}
	if f.RefreshBecameTrue && t.NewRefresh && !t.OldRefresh ||
		f.RefreshBecameFalse && !t.NewRefresh && t.OldRefresh {
		return true
	}
	if t.NewGrade != t.OldGrade {
		for _, g := range f.GradesEntered {
			if g == t.NewGrade {
				return true
			}
		}
	}
	return false
}

const transitionColumns = `
	t.tx::text, t.id, t.profile_id, t.user_id, t.platform_account_id, t.auth_type,
	t.total_login_count, t.success_login_count, t.consecutive_failures, t.version, t.update_time,
	(t.session_stability_score * 100)::bigint, t.old_grade, t.new_grade,
	t.old_needs_session_refresh, t.new_needs_session_refresh,
	t.event_id, t.success, t.occurred_at, t.recorded_at`

// TransitionsAfter is the watch query: the transitions after a position,
// in (tx, id) order, up to the horizon, the xmin of this statement's
// snapshot. Every transaction below it has ended, so no transition can
// later appear before a position this returns (see 0004_transitions.sql).
// In the same snapshot it checks the position against the pruning
// watermark: the pruner deletes and moves the watermark in one
// transaction, so a position is either still complete or expired, never
// silently missing rows.
//
// $1, $2: the position; $3: the limit; $4: no kind asked for; $5 grades
// entered; $6, $7: refresh became true, false; $8 user, $9 account, $10
// auth type (0: any). It walks the primary key (tx, id) from the position.
const TransitionsAfter = `
SELECT w.expired, w.horizon::text,` + transitionColumns + `
FROM (
	SELECT ($1::text::xid8, $2::bigint) < (pruned_tx, pruned_id) AS expired,
		pg_snapshot_xmin(pg_current_snapshot()) AS horizon
	FROM profile.transition_watermark
	LIMIT 1 -- one row (the planner has no statistics of a one-row table)
) w
LEFT JOIN LATERAL (
	SELECT * FROM profile.profile_transitions t
	WHERE NOT w.expired
		AND (t.tx, t.id) > ($1::text::xid8, $2::bigint) AND t.tx < w.horizon
		AND ($4::boolean
			OR t.new_grade = ANY($5::smallint[]) AND t.new_grade <> t.old_grade
			OR $6::boolean AND t.new_needs_session_refresh AND NOT t.old_needs_session_refresh
			OR $7::boolean AND NOT t.new_needs_session_refresh AND t.old_needs_session_refresh)
		AND ($8::uuid IS NULL OR t.user_id = $8::uuid)
		AND ($9::text IS NULL OR t.platform_account_id = $9::text)
		AND ($10::smallint = 0 OR t.auth_type = $10::smallint)
	ORDER BY t.tx, t.id
	LIMIT $3
) t ON true
ORDER BY t.tx, t.id`

// Page is what TransitionsAfter returned.
type Page struct {
	Transitions []Transition
	// Next is where the next read starts: after the last transition when
	// the page is full, else the horizon (or the position asked for, if
	// later).
	Next Position
}

// ReadTransitions returns up to limit transitions after pos that match
// f, or domain.ErrCursorExpired when transitions after pos have been
// pruned. It reads the primary: a standby's snapshot horizon is not the
// primary's.
func (s *Store) ReadTransitions(ctx context.Context, pos Position, f TransitionFilter, limit int) (Page, error) {
	grades := f.GradesEntered
	if grades == nil {
		grades = []int16{}
	}
	var user any
	if f.UserID != nil {
		user = [16]byte(*f.UserID)
	}
	rows, err := s.pool.Query(ctx, TransitionsAfter, pos.tx(), pos.ID, limit,
		f.AnyKind(), grades, f.RefreshBecameTrue, f.RefreshBecameFalse, user, f.PlatformAccountID, f.AuthType)
	if err != nil {
		return Page{}, fmt.Errorf("read transitions: %w", err)
	}
	defer rows.Close()
	var page Page
	var expired bool
	var horizon string
	for rows.Next() {
		var t transitionRow
		if err := rows.Scan(append([]any{&expired, &horizon}, t.dest()...)...); err != nil {
			return Page{}, err
		}
		if t.tx == nil {
			continue // no transition: the LEFT JOIN's empty row
		}
		tr, err := t.transition()
		if err != nil {
			return Page{}, err
		}
		page.Transitions = append(page.Transitions, tr)
	}
	if err := rows.Err(); err != nil {
		return Page{}, err
	}
	if expired {
		return Page{}, domain.ErrCursorExpired.Errorf("transitions after this cursor were pruned (older than the retention): " +
			"resynchronise with ListProfiles, then watch from now (no cursor)")
	}
	h, err := strconv.ParseUint(horizon, 10, 64)
	if err != nil {
		return Page{}, fmt.Errorf("horizon %q: %w", horizon, err)
	}
	page.Next = pos.Max(Position{Tx: h})
	if n := len(page.Transitions); n == limit {
		page.Next = page.Transitions[n-1].Pos
	}
	return page, nil
}

// transitionRow scans transitionColumns; every column is nullable, for the
// LEFT JOIN of TransitionsAfter.
type transitionRow struct {
	tx                                       *string
	id                                       *int64
	profileID, userID, eventID               *uuid.UUID
	account                                  *string
	authType, oldGrade, newGrade             *int16
	total, success, version, scoreHundredths *int64
	consecutive                              *int32
	updateTime, occurredAt, recordedAt       *time.Time
	oldRefresh, newRefresh, outcome          *bool
}

func (r *transitionRow) dest() []any {
	return []any{&r.tx, &r.id, &r.profileID, &r.userID, &r.account, &r.authType,
		&r.total, &r.success, &r.consecutive, &r.version, &r.updateTime,
		&r.scoreHundredths, &r.oldGrade, &r.newGrade, &r.oldRefresh, &r.newRefresh,
		&r.eventID, &r.outcome, &r.occurredAt, &r.recordedAt}
}

func (r *transitionRow) transition() (Transition, error) {
	tx, err := strconv.ParseUint(*r.tx, 10, 64)
	if err != nil {
		return Transition{}, fmt.Errorf("transition tx %q: %w", *r.tx, err)
	}
	return Transition{
		Pos:                 Position{Tx: tx, ID: *r.id},
		ProfileID:           *r.profileID,
		Account:             Account{UserID: *r.userID, PlatformAccountID: *r.account},
		AuthType:            *r.authType,
		TotalLogins:         *r.total,
		SuccessLogins:       *r.success,
		ConsecutiveFailures: int(*r.consecutive),
		Version:             *r.version,
		UpdateTime:          *r.updateTime,
		ScoreHundredths:     *r.scoreHundredths,
		OldGrade:            *r.oldGrade,
		NewGrade:            *r.newGrade,
		OldRefresh:          *r.oldRefresh,
		NewRefresh:          *r.newRefresh,
		EventID:             *r.eventID,
		Success:             *r.outcome,
		OccurredAt:          *r.occurredAt,
		RecordedAt:          *r.recordedAt,
	}, nil
}

// StreamBounds are where the transition stream stands now.
type StreamBounds struct {
	// Horizon: every transition before it is readable, none will appear
	// before it. Watching "from now" starts here.
	Horizon Position
	// NextTx is above every transaction id assigned so far: no valid
	// position has a larger Tx.
	NextTx uint64
	// Watermark is the pruned-through position.
	Watermark Position
}

// Bounds reads the stream's bounds from the primary.
func (s *Store) Bounds(ctx context.Context) (StreamBounds, error) {
	var horizon, next, pruned string
	var b StreamBounds
	err := s.pool.QueryRow(ctx, `
SELECT pg_snapshot_xmin(pg_current_snapshot())::text, pg_snapshot_xmax(pg_current_snapshot())::text,
	pruned_tx::text, pruned_id
FROM profile.transition_watermark`).Scan(&horizon, &next, &pruned, &b.Watermark.ID)
	if err != nil {
		return StreamBounds{}, fmt.Errorf("read stream bounds: %w", err)
	}
	for _, p := range []struct {
		s   string
		dst *uint64
	}{{horizon, &b.Horizon.Tx}, {next, &b.NextTx}, {pruned, &b.Watermark.Tx}} {
		if *p.dst, err = strconv.ParseUint(p.s, 10, 64); err != nil {
			return StreamBounds{}, fmt.Errorf("stream bounds: %q: %w", p.s, err)
		}
	}
	return b, nil
}

// pruneTransitions deletes, if no other replica is pruning right now, the
// oldest transitions recorded before $1, at most $2 of them, as a prefix
// of the stream's (tx, id) order, and moves the watermark to the last one
// deleted in the same statement. Only transitions below the horizon are
// looked at: the others are not delivered yet. It returns the number
// deleted.
const pruneTransitions = `
WITH lock AS (SELECT pg_try_advisory_xact_lock(hashtext('profile.profile_transitions prune')) AS held),
head AS (
	SELECT t.tx, t.id, t.recorded_at FROM profile.profile_transitions t, lock
	WHERE lock.held AND t.tx < pg_snapshot_xmin(pg_current_snapshot())
	ORDER BY t.tx, t.id
	LIMIT $2
),
stop AS (SELECT tx, id FROM head WHERE recorded_at >= $1 ORDER BY tx, id LIMIT 1),
doomed AS (
	SELECT h.tx, h.id FROM head h
	WHERE NOT EXISTS (SELECT 1 FROM stop WHERE (h.tx, h.id) >= (stop.tx, stop.id))
),
deleted AS (
	DELETE FROM profile.profile_transitions t USING doomed d
	WHERE t.tx = d.tx AND t.id = d.id
	RETURNING t.tx, t.id
),
last AS (SELECT tx, id FROM deleted ORDER BY tx DESC, id DESC LIMIT 1),
moved AS (
	UPDATE profile.transition_watermark w SET pruned_tx = last.tx, pruned_id = last.id
	FROM last
	RETURNING 1
)
SELECT (SELECT count(*) FROM deleted), (SELECT count(*) FROM moved)`

// PruneTransitions deletes transitions recorded before cutoff, in batches
// of batchSize (each its own transaction, so the table is never locked
// for long), and returns how many it deleted.
func (s *Store) PruneTransitions(ctx context.Context, cutoff time.Time, batchSize int) (int64, error) {
	var total int64
	for {
		var n, moved int64
		if err := s.pool.QueryRow(ctx, pruneTransitions, cutoff, batchSize).Scan(&n, &moved); err != nil {
			return total, fmt.Errorf("prune transitions: %w", err)
		}
		if n > 0 && moved != 1 {
			return total, errors.New("prune transitions: the watermark did not move")
		}
		total += n
		if n < int64(batchSize) {
			return total, nil
		}
	}
}
