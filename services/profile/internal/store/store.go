// Package store is all of ProfileService's SQL. Every change to a profile
// is one SQL statement that computes the new state from the stored one;
// no value is read into Go, changed and written back.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/platforma/platforma/services/kit/db"
	"github.com/platforma/platforma/services/profile/internal/domain"
)

// Store reads and writes the profile schema.
type Store struct {
	pool  *pgxpool.Pool
	reads *db.Reads
}

// New returns a Store on pool. reads, if not nil, serves the query RPCs'
// reads (ListProfiles, GradeRanges, Distribution) from a read replica
// while it is fresh; GetProfile and the writes always use pool: a worker
// reads its own profile right after recording a login.
func New(pool *pgxpool.Pool, reads *db.Reads) *Store { return &Store{pool: pool, reads: reads} }

// read runs a query RPC's read through reads, or on the pool.
func (s *Store) read(ctx context.Context, read func(db.Querier) error) error {
	if s.reads == nil {
		return read(s.pool)
	}
	return s.reads.Read(ctx, read)
}

// Account identifies a profile by its natural key.
type Account struct {
	UserID            uuid.UUID
	PlatformAccountID string
}

// LoginResult is one validated login outcome.
type LoginResult struct {
	EventID    uuid.UUID
	Account    Account
	Success    bool
	AuthType   int16 // AuthType enum number; 0 = not reported
	OccurredAt time.Time
}

// Profile is a stored profile.
type Profile struct {
	ID                  uuid.UUID
	Account             Account
	AuthType            int16
	TotalLogins         int64
	SuccessLogins       int64
	FailedLogins        int64
	ScoreHundredths     int64
	Grade               int16
	RecentLogins        []domain.Login // newest first
	ConsecutiveFailures int
	Version             int64
	CreateTime          time.Time
	UpdateTime          time.Time
}

// profileColumns is the select list every profile query scans with
// scanProfile.
const profileColumns = `
	id, user_id, platform_account_id, auth_type,
	total_login_count, success_login_count, failed_login_count,
	(session_stability_score * 100)::bigint, grade,
	to_json(recent_logins), consecutive_failures,
	version, create_time, update_time`

type loginJSON struct {
	OccurredAt time.Time `json:"occurred_at"`
	Success    bool      `json:"success"`
	EventID    uuid.UUID `json:"event_id"`
}

func scanProfile(row pgx.Row) (Profile, error) {
	var p Profile
	var logins []loginJSON
	err := row.Scan(&p.ID, &p.Account.UserID, &p.Account.PlatformAccountID, &p.AuthType,
		&p.TotalLogins, &p.SuccessLogins, &p.FailedLogins,
		&p.ScoreHundredths, &p.Grade,
		&logins, &p.ConsecutiveFailures,
		&p.Version, &p.CreateTime, &p.UpdateTime)
	p.RecentLogins = make([]domain.Login, len(logins))
	for i, l := range logins {
		p.RecentLogins[i] = domain.Login{OccurredAt: l.OccurredAt, Success: l.Success, EventID: l.EventID}
	}
	return p, err
}

// applyLogins records the events that are new and folds them into their
// profiles, creating profiles on first sight, in one statement. It returns
// the ids of the events it applied (event_id set) and the new grade of
// every transition it recorded (new_grade set); the other events were
// already recorded.
//
// A transition is recorded when the update changes the profile's grade or
// needs_session_refresh ($7 is -refresh-after-failures), or creates the
// profile (version 1). The update keeps the grade and streak it replaces
// (prev_grade, prev_consecutive_failures) from the row it locked, so the
// state before is exact whatever ran concurrently.
//
// locked takes the transaction-level advisory lock of every account of
// the input, in one fixed order, before the statement writes anything:
// fresh reads it, so every lock is held before the first event is
// inserted. Writing is what assigns the transaction its id, the tx of the
// transitions it records (migrations/profile/0004): a later writer of the
// same profile waits here, with no id yet, until the earlier one has
// committed, and so gets a larger tx. An advisory lock assigns no
// transaction id; the profile's row lock would, too late. Key: the
// (classid, objid) form, in a class of its own; accounts whose hashes
// collide merely wait for each other.
//
// Locks are taken in a fixed order (accounts' advisory locks, then events
// by id, then profiles by account), so concurrent batches wait for each
// other but never deadlock.
const applyLogins = `
WITH input AS (
	SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::boolean[], $5::smallint[], $6::timestamptz[])
		AS t(event_id, user_id, platform_account_id, success, auth_type, occurred_at)
),
locked AS (
	SELECT count(pg_advisory_xact_lock(hashtext('profile.profiles'), k)) AS n
	FROM (
		SELECT DISTINCT hashtext(user_id::text || '/' || platform_account_id) AS k FROM input ORDER BY k
	) keys
),
fresh AS (
	INSERT INTO profile.login_events (event_id, user_id, platform_account_id)
	SELECT event_id, user_id, platform_account_id FROM input, locked ORDER BY event_id
	ON CONFLICT (event_id) DO NOTHING
	RETURNING event_id
),
per_account AS (
	SELECT i.user_id, i.platform_account_id,
		count(*) AS total,
		count(*) FILTER (WHERE i.success) AS successes,
		(array_agg(ROW(i.occurred_at, i.success, i.event_id)::profile.login
			ORDER BY i.occurred_at DESC, i.event_id DESC))[1:10] AS logins,
		(array_agg(i.auth_type ORDER BY i.occurred_at DESC, i.event_id DESC)
			FILTER (WHERE i.auth_type <> 0))[1] AS auth_type,
		max(i.occurred_at) FILTER (WHERE i.auth_type <> 0) AS auth_type_reported_at
	FROM input i JOIN fresh f ON f.event_id = i.event_id
	GROUP BY i.user_id, i.platform_account_id
),
upserted AS (
	INSERT INTO profile.profiles AS p (user_id, platform_account_id, auth_type, auth_type_reported_at,
		total_login_count, success_login_count, recent_logins)
	SELECT user_id, platform_account_id, coalesce(auth_type, 0), auth_type_reported_at, total, successes, logins
	FROM per_account
	ORDER BY user_id, platform_account_id
	ON CONFLICT (user_id, platform_account_id) DO UPDATE SET
		total_login_count = p.total_login_count + excluded.total_login_count,
		success_login_count = p.success_login_count + excluded.success_login_count,
		recent_logins = profile.merge_logins(p.recent_logins, excluded.recent_logins),
		-- The newest report of the auth type wins, whatever the arrival order.
		auth_type = CASE WHEN excluded.auth_type_reported_at >= coalesce(p.auth_type_reported_at, '-infinity')
			THEN excluded.auth_type ELSE p.auth_type END,
		auth_type_reported_at = greatest(p.auth_type_reported_at, excluded.auth_type_reported_at),
		version = p.version + 1,
		update_time = now(),
		prev_grade = p.grade,
		prev_consecutive_failures = p.consecutive_failures
	RETURNING p.id, p.user_id, p.platform_account_id, p.auth_type, p.total_login_count, p.success_login_count,
		p.consecutive_failures, p.version, p.update_time, p.session_stability_score, p.grade,
		-- domain.NeedsSessionRefresh with n = $7 (at least 1): the refresh
		-- rule, which the API's needs_session_refresh reads in Go; the
		-- watch tests check both agree.
		p.prev_grade, p.prev_consecutive_failures >= $7 AS prev_needs_refresh,
		p.consecutive_failures >= $7 AS needs_refresh
),
transitions AS (
	INSERT INTO profile.profile_transitions (profile_id, user_id, platform_account_id, auth_type,
		total_login_count, success_login_count, consecutive_failures, version, update_time,
		session_stability_score, old_grade, new_grade, old_needs_session_refresh, new_needs_session_refresh,
		event_id, success, occurred_at)
	SELECT u.id, u.user_id, u.platform_account_id, u.auth_type,
		u.total_login_count, u.success_login_count, u.consecutive_failures, u.version, u.update_time,
		u.session_stability_score, u.prev_grade, u.grade, u.prev_needs_refresh, u.needs_refresh,
		(a.logins[1]).event_id, (a.logins[1]).success, (a.logins[1]).occurred_at
	FROM upserted u
	JOIN per_account a USING (user_id, platform_account_id)
	WHERE u.version = 1 OR u.prev_grade <> u.grade OR u.prev_needs_refresh <> u.needs_refresh
	ORDER BY u.user_id, u.platform_account_id
	RETURNING new_grade
)
SELECT event_id, NULL::smallint FROM fresh
UNION ALL
SELECT NULL, new_grade FROM transitions`

// profilesByAccount runs after applyLogins in the same round trip; as a
// separate statement it sees profiles created by concurrent calls that
// applyLogins had to wait for.
const profilesByAccount = `
SELECT` + profileColumns + `
FROM profile.profiles
WHERE (user_id, platform_account_id) IN (SELECT * FROM unnest($1::uuid[], $2::text[]))`

const eventOwners = `
SELECT event_id, user_id, platform_account_id FROM profile.login_events WHERE event_id = ANY($1::uuid[])`

// Recorded is the outcome of RecordLoginResults.
type Recorded struct {
	// Applied holds the events that were new and are now counted.
	Applied map[uuid.UUID]bool
	// Owners holds, for events that were already recorded, the account
	// they were recorded for.
	Owners map[uuid.UUID]Account
	// Profiles holds the current profile of every account of the input.
	Profiles map[Account]Profile
	// Transitions counts the transitions recorded, by new grade.
	Transitions map[int16]int
}

// RecordLoginResults applies results, whose event ids must be distinct, in
// one transaction and (without repeated events) one round trip, and
// records the transitions they cause; refreshAfter is
// -refresh-after-failures (domain.NeedsSessionRefresh's n, at least 1).
func (s *Store) RecordLoginResults(ctx context.Context, results []LoginResult, refreshAfter int) (Recorded, error) {
	n := len(results)
	eventIDs, userIDs := make([]uuid.UUID, n), make([]uuid.UUID, n)
	accountIDs, successes := make([]string, n), make([]bool, n)
	authTypes, occurredAts := make([]int16, n), make([]time.Time, n)
	accounts := map[Account]bool{}
	var keyUsers []uuid.UUID
	var keyAccounts []string
	for i, r := range results {
		eventIDs[i], userIDs[i], accountIDs[i] = r.EventID, r.Account.UserID, r.Account.PlatformAccountID
		successes[i], authTypes[i], occurredAts[i] = r.Success, r.AuthType, r.OccurredAt
		if !accounts[r.Account] {
			accounts[r.Account] = true
			keyUsers = append(keyUsers, r.Account.UserID)
			keyAccounts = append(keyAccounts, r.Account.PlatformAccountID)
		}
	}

	out := Recorded{Applied: map[uuid.UUID]bool{}, Owners: map[uuid.UUID]Account{}, Profiles: map[Account]Profile{}, Transitions: map[int16]int{}}
	batch := &pgx.Batch{}
	batch.Queue(applyLogins, db.UUIDs(eventIDs), db.UUIDs(userIDs), accountIDs, successes, authTypes, occurredAts, refreshAfter).Query(func(rows pgx.Rows) error {
		var id *uuid.UUID
		var grade *int16
		_, err := pgx.ForEachRow(rows, []any{&id, &grade}, func() error {
			if id != nil {
				out.Applied[*id] = true
			}
			if grade != nil {
				out.Transitions[*grade]++
			}
			return nil
		})
		return err
	})
	batch.Queue(profilesByAccount, db.UUIDs(keyUsers), keyAccounts).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			p, err := scanProfile(rows)
			if err != nil {
				return err
			}
			out.Profiles[p.Account] = p
		}
		return rows.Err()
	})
	// SendBatch runs both statements in one implicit transaction.
	if err := s.pool.SendBatch(ctx, batch).Close(); err != nil {
		return Recorded{}, fmt.Errorf("record login results: %w", err)
	}

	var repeated []uuid.UUID
	for _, id := range eventIDs {
		if !out.Applied[id] {
			repeated = append(repeated, id)
		}
	}
	if len(repeated) == 0 {
		return out, nil
	}
	rows, err := s.pool.Query(ctx, eventOwners, db.UUIDs(repeated))
	if err != nil {
		return Recorded{}, fmt.Errorf("look up repeated events: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id uuid.UUID
		var owner Account
		if err := rows.Scan(&id, &owner.UserID, &owner.PlatformAccountID); err != nil {
			return Recorded{}, err
		}
		out.Owners[id] = owner
	}
	return out, rows.Err()
}

// GetProfile returns the profile with id, or domain.ErrProfileNotFound.
func (s *Store) GetProfile(ctx context.Context, id uuid.UUID) (Profile, error) {
	p, err := scanProfile(s.pool.QueryRow(ctx, `SELECT`+profileColumns+` FROM profile.profiles WHERE id = $1`, [16]byte(id)))
	if errors.Is(err, pgx.ErrNoRows) {
		return Profile{}, domain.ErrProfileNotFound.Errorf("profile with id %s not found", id)
	}
	return p, err
}

// GetProfileByAccount returns the profile of account, or
// domain.ErrProfileNotFound.
func (s *Store) GetProfileByAccount(ctx context.Context, a Account) (Profile, error) {
	p, err := scanProfile(s.pool.QueryRow(ctx,
		`SELECT`+profileColumns+` FROM profile.profiles WHERE user_id = $1 AND platform_account_id = $2`,
		[16]byte(a.UserID), a.PlatformAccountID))
	if errors.Is(err, pgx.ErrNoRows) {
		return Profile{}, domain.ErrProfileNotFound.Errorf("profile of user %s and account %q not found", a.UserID, a.PlatformAccountID)
	}
	return p, err
}

// ListQuery selects a page of profiles in (score, id) order.
type ListQuery struct {
	// After is the exclusive lower bound of (score, id); the zero value
	// starts before every profile.
	AfterHundredths int64
	AfterID         uuid.UUID
	// BelowHundredths is the exclusive upper bound of the score.
	BelowHundredths int64
	// Grade (a StabilityGrade number) narrows the score range to the
	// grade's, when not 0.
	Grade int16
	// AuthType filters by auth type when not 0.
	AuthType int16
	Limit    int
}

// listProfiles walks profiles_score_id_idx from the keyset position; the
// upper score bound ends the scan, the auth type filters on the way. The
// grade is a score range from profile.grade_floor and grade_ceiling
// (rule:grade-thresholds), so it narrows the same index scan.
const listProfiles = `
SELECT` + profileColumns + `
FROM profile.profiles
WHERE (session_stability_score, id) > ($1::numeric / 100, $2::uuid)
	AND session_stability_score < $3::numeric / 100
	AND session_stability_score >= profile.grade_floor($6::smallint)
	AND session_stability_score < profile.grade_ceiling($6::smallint)
	AND ($4::smallint = 0 OR auth_type = $4::smallint)
ORDER BY session_stability_score, id
LIMIT $5`

// ListProfiles returns up to q.Limit profiles.
func (s *Store) ListProfiles(ctx context.Context, q ListQuery) (out []Profile, err error) {
	err = s.read(ctx, func(conn db.Querier) error {
		rows, err := conn.Query(ctx, listProfiles, q.AfterHundredths, [16]byte(q.AfterID), q.BelowHundredths, q.AuthType, q.Limit, q.Grade)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Profile, error) { return scanProfile(r) })
		return err
	})
	return out, err
}

// GradeRange is a grade's score range in hundredths: [Low, High).
type GradeRange struct{ Low, High int64 }

// GradeRanges reads the score range of every grade number, 0 (any grade)
// included, from profile.grade_floor and grade_ceiling
// (rule:grade-thresholds): Go keeps no thresholds of its own.
func (s *Store) GradeRanges(ctx context.Context) (map[int16]GradeRange, error) {
	out := map[int16]GradeRange{}
	err := s.read(ctx, func(q db.Querier) error {
		rows, err := q.Query(ctx, `
SELECT g::smallint, (profile.grade_floor(g) * 100)::bigint, (profile.grade_ceiling(g) * 100)::bigint
FROM generate_series(0, 3) g`)
		if err != nil {
			return err
		}
		var grade int16
		var r GradeRange
		_, err = pgx.ForEachRow(rows, []any{&grade, &r.Low, &r.High}, func() error {
			out[grade] = r
			return nil
		})
		return err
	})
	return out, err
}

// GradeAuthCount is the number of profiles of one grade and auth type, with
// the sum of their scores.
type GradeAuthCount struct {
	Grade         int16
	AuthType      int16
	Profiles      int64
	SumHundredths int64
}

// Distribution counts all profiles by grade and auth type: one pass over
// the table, which is what operators' dashboards ask for every few
// minutes, not per request of a worker.
func (s *Store) Distribution(ctx context.Context) (out []GradeAuthCount, err error) {
	err = s.read(ctx, func(q db.Querier) error {
		rows, err := q.Query(ctx, `
SELECT grade, auth_type, count(*), coalesce(sum(session_stability_score * 100), 0)::bigint
FROM profile.profiles GROUP BY grade, auth_type`)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, pgx.RowToStructByPos[GradeAuthCount])
		return err
	})
	return out, err
}

// purgeEvents deletes one batch of idempotency records older than the
// retention, if no other replica is doing the same right now.
const purgeEvents = `
WITH lock AS (SELECT pg_try_advisory_xact_lock(hashtext('profile.login_events purge')) AS held)
DELETE FROM profile.login_events
WHERE event_id IN (
	SELECT event_id FROM profile.login_events, lock
	WHERE lock.held AND recorded_at < $1
	LIMIT $2)`

// PurgeEvents deletes idempotency records recorded before cutoff, in
// batches of batchSize, and returns how many it deleted.
func (s *Store) PurgeEvents(ctx context.Context, cutoff time.Time, batchSize int) (int64, error) {
	var total int64
	for {
		tag, err := s.pool.Exec(ctx, purgeEvents, cutoff, batchSize)
		if err != nil {
			return total, err
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < int64(batchSize) {
			return total, nil
		}
	}
}
