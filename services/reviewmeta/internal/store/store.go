// Package store is all of ReviewMetadataService's SQL. Changes are single
// statements that compute new values from stored ones.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	reviewmetav1 "github.com/platforma/platforma/gen/platforma/reviewmeta/v1"
	"github.com/platforma/platforma/services/kit/db"
	"github.com/platforma/platforma/services/reviewmeta/internal/domain"
)

// Store reads and writes the reviewmeta schema.
type Store struct {
	pool *pgxpool.Pool
}

// New returns a Store on pool.
func New(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// Review is a stored review's metadata.
type Review struct {
	ReviewID             uuid.UUID
	ID                   uuid.UUID
	ShopID               uuid.UUID
	ExternalShopID       string
	ExternalBusinessID   string
	ReviewType           int16
	Source               string
	HasBookingDetail     bool
	ReplyAttempted       bool
	ReplySuccess         bool
	ReplyErrorType       string
	ReplyAttemptCount    int32
	LastReplyAttemptTime pgtype.Timestamptz
	FetchedAt            time.Time
	CreateTime           time.Time
	UpdateTime           time.Time
	AcceptsReplies       bool
}

// reviewColumns is the select list scanned by scanReview, over
// review_metadata m joined with review_types t.
const reviewColumns = `
	m.review_id, m.id, m.shop_id, coalesce(m.external_shop_id, ''), coalesce(m.external_business_id, ''),
	m.review_type, coalesce(m.source, ''), m.has_booking_detail,
	m.reply_attempted, m.reply_success, coalesce(m.reply_error_type, ''), m.reply_attempt_count,
	m.last_reply_attempt_time, m.fetched_at, m.create_time, m.update_time, t.accepts_replies`

const fromReviews = `
FROM reviewmeta.review_metadata m JOIN reviewmeta.review_types t ON t.review_type = m.review_type`

func scanReview(row pgx.Row) (Review, error) {
	var r Review
	err := row.Scan(&r.ReviewID, &r.ID, &r.ShopID, &r.ExternalShopID, &r.ExternalBusinessID,
		&r.ReviewType, &r.Source, &r.HasBookingDetail,
		&r.ReplyAttempted, &r.ReplySuccess, &r.ReplyErrorType, &r.ReplyAttemptCount,
		&r.LastReplyAttemptTime, &r.FetchedAt, &r.CreateTime, &r.UpdateTime, &r.AcceptsReplies)
	return r, err
}

func collectReviews(rows pgx.Rows, err error) ([]Review, error) {
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Review, error) { return scanReview(r) })
}

// Upsert is one validated review to create or update.
type Upsert struct {
	ReviewID           uuid.UUID
	ShopID             uuid.UUID
	ExternalShopID     string
	ExternalBusinessID string
	ReviewType         int16
	Source             string
	HasBookingDetail   bool
	FetchedAt          time.Time
}

// upsertReviews writes a page of reviews. Data fetched earlier than what
// is stored never replaces it; the reply columns are not in the SET list,
// so scraping never resets reply state. Rows are locked in review_id order.
const upsertReviews = `
WITH input AS (
	SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::smallint[], $6::text[], $7::boolean[], $8::timestamptz[])
		AS t(review_id, shop_id, external_shop_id, external_business_id, review_type, source, has_booking_detail, fetched_at)
)
INSERT INTO reviewmeta.review_metadata AS m (review_id, shop_id, external_shop_id, external_business_id,
	review_type, source, has_booking_detail, fetched_at)
SELECT review_id, shop_id, nullif(external_shop_id, ''), nullif(external_business_id, ''),
	review_type, nullif(source, ''), has_booking_detail, fetched_at
FROM input ORDER BY review_id
ON CONFLICT (review_id) DO UPDATE SET
	shop_id = excluded.shop_id,
	external_shop_id = excluded.external_shop_id,
	external_business_id = excluded.external_business_id,
	review_type = excluded.review_type,
	source = excluded.source,
	has_booking_detail = excluded.has_booking_detail,
	fetched_at = excluded.fetched_at,
	update_time = now()
WHERE excluded.fetched_at > m.fetched_at`

// reviewsByID reads reviews back after a write, in the same round trip;
// as its own statement it also sees rows written by concurrent calls the
// write waited for.
const reviewsByID = `SELECT` + reviewColumns + fromReviews + ` WHERE m.review_id = ANY($1::uuid[])`

// Upsert writes items, whose review ids must be distinct, in one
// transaction and one round trip, and returns every review as stored
// afterwards.
func (s *Store) Upsert(ctx context.Context, items []Upsert) (map[uuid.UUID]Review, error) {
	n := len(items)
	reviewIDs, shopIDs := make([]uuid.UUID, n), make([]uuid.UUID, n)
	extShops, extBiz, sources := make([]string, n), make([]string, n), make([]string, n)
	types, booking, fetched := make([]int16, n), make([]bool, n), make([]time.Time, n)
	for i, it := range items {
		reviewIDs[i], shopIDs[i] = it.ReviewID, it.ShopID
		extShops[i], extBiz[i], sources[i] = it.ExternalShopID, it.ExternalBusinessID, it.Source
		types[i], booking[i], fetched[i] = it.ReviewType, it.HasBookingDetail, it.FetchedAt
	}
	out := make(map[uuid.UUID]Review, n)
	batch := &pgx.Batch{}
	batch.Queue(upsertReviews, db.UUIDs(reviewIDs), db.UUIDs(shopIDs), extShops, extBiz, types, sources, booking, fetched)
	batch.Queue(reviewsByID, db.UUIDs(reviewIDs)).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			r, err := scanReview(rows)
			if err != nil {
				return err
			}
			out[r.ReviewID] = r
		}
		return rows.Err()
	})
	if err := s.pool.SendBatch(ctx, batch).Close(); err != nil {
		return nil, fmt.Errorf("upsert reviews: %w", err)
	}
	return out, nil
}

// Get returns one review, or domain.ErrReviewNotFound.
func (s *Store) Get(ctx context.Context, reviewID uuid.UUID) (Review, error) {
	r, err := scanReview(s.pool.QueryRow(ctx, `SELECT`+reviewColumns+fromReviews+` WHERE m.review_id = $1`, [16]byte(reviewID)))
	if errors.Is(err, pgx.ErrNoRows) {
		return Review{}, notFound(reviewID)
	}
	return r, err
}

func notFound(reviewID uuid.UUID) error {
	return domain.ErrReviewNotFound.Errorf("review metadata for review_id %s not found", reviewID)
}

// Attempt is one validated reply attempt.
type Attempt struct {
	ReviewID    uuid.UUID
	Success     bool
	ErrorType   string // empty when Success
	AttemptedAt time.Time
	AttemptID   uuid.UUID // uuid.Nil: none given
}

// recordAttempt locks the review, records the attempt (unless its id was
// recorded before), and folds it into the review. The latest attempt by
// attempted_at decides success and error type; every new attempt counts.
// The main query says whether the review exists, takes replies, and
// whether this attempt was new.
const recordAttempt = `
WITH target AS (
	SELECT m.review_id, t.accepts_replies` + fromReviews + `
	WHERE m.review_id = $1
	FOR UPDATE OF m
),
attempt AS (
	INSERT INTO reviewmeta.reply_attempts (attempt_id, review_id, success, error_type, attempted_at)
	SELECT coalesce($5::uuid, gen_random_uuid()), review_id, $2, nullif($3, ''), $4 FROM target WHERE accepts_replies
	ON CONFLICT (attempt_id) DO NOTHING
	RETURNING review_id
),
updated AS (
	UPDATE reviewmeta.review_metadata m SET
		reply_attempted = true,
		reply_attempt_count = m.reply_attempt_count + 1,
		reply_success = CASE WHEN $4 >= coalesce(m.last_reply_attempt_time, '-infinity') THEN $2 ELSE m.reply_success END,
		reply_error_type = CASE WHEN $4 >= coalesce(m.last_reply_attempt_time, '-infinity') THEN nullif($3, '') ELSE m.reply_error_type END,
		last_reply_attempt_time = greatest(m.last_reply_attempt_time, $4),
		update_time = now()
	FROM attempt a WHERE m.review_id = a.review_id
	RETURNING 1
)
SELECT t.accepts_replies, EXISTS (SELECT 1 FROM updated) FROM target t`

const attemptOwner = `SELECT review_id FROM reviewmeta.reply_attempts WHERE attempt_id = $1`

// RecordReplyAttempt applies a in one round trip and returns the review
// afterwards and whether a was a repeat of a recorded attempt; or
// domain.ErrReviewNotFound, ErrReviewTypeTakesNoReplies or
// ErrAttemptIDConflict.
func (s *Store) RecordReplyAttempt(ctx context.Context, a Attempt) (Review, bool, error) {
	var attemptID *uuid.UUID
	if a.AttemptID != uuid.Nil {
		attemptID = &a.AttemptID
	}
	var found, accepts, applied bool
	var review Review
	var owner *uuid.UUID
	batch := &pgx.Batch{}
	batch.Queue(recordAttempt, [16]byte(a.ReviewID), a.Success, a.ErrorType, a.AttemptedAt, attemptID).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			found = true
			if err := rows.Scan(&accepts, &applied); err != nil {
				return err
			}
		}
		return rows.Err()
	})
	batch.Queue(`SELECT`+reviewColumns+fromReviews+` WHERE m.review_id = $1`, [16]byte(a.ReviewID)).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var err error
			if review, err = scanReview(rows); err != nil {
				return err
			}
		}
		return rows.Err()
	})
	if attemptID != nil {
		batch.Queue(attemptOwner, attemptID).Query(func(rows pgx.Rows) error {
			for rows.Next() {
				owner = new(uuid.UUID)
				if err := rows.Scan(owner); err != nil {
					return err
				}
			}
			return rows.Err()
		})
	}
	if err := s.pool.SendBatch(ctx, batch).Close(); err != nil {
		return Review{}, false, fmt.Errorf("record reply attempt: %w", err)
	}
	switch {
	case !found:
		return Review{}, false, notFound(a.ReviewID)
	case !accepts:
		return Review{}, false, domain.ErrReviewTypeTakesNoReplies.Errorf("reviews of type %s do not accept replies",
			reviewmetav1.ReviewType(review.ReviewType).String())
	case !applied && owner != nil && *owner != a.ReviewID:
		return Review{}, false, domain.ErrAttemptIDConflict.Field("attempt_id", "already recorded for another review")
	}
	return review, !applied, nil
}

// ListQuery selects a page of one shop's reviews, newest first.
type ListQuery struct {
	// ShopID or ExternalShopID (exactly one is set).
	ShopID         uuid.UUID
	ExternalShopID string
	ReviewType     int16 // 0: any
	State          reviewmetav1.ReplyState
	// Before is the exclusive keyset position; the zero value starts at
	// the newest review.
	BeforeTime     time.Time
	BeforeReviewID uuid.UUID
	Limit          int
}

// stateFilters are the reply-state conditions: the one place the filter
// rule executes (its test oracle is oracleMatches, in the tests). Each one
// that selects reviews without a successful reply says
// "NOT m.reply_success" literally, so the planner can use
// review_metadata_shop_unreplied_idx.
var stateFilters = map[reviewmetav1.ReplyState]string{
	reviewmetav1.ReplyState_REPLY_STATE_UNSPECIFIED:   ``,
	reviewmetav1.ReplyState_REPLY_STATE_NOT_ATTEMPTED: ` AND NOT m.reply_success AND NOT m.reply_attempted`,
	reviewmetav1.ReplyState_REPLY_STATE_SUCCEEDED:     ` AND m.reply_success`,
	reviewmetav1.ReplyState_REPLY_STATE_FAILED:        ` AND NOT m.reply_success AND m.reply_attempted`,
	reviewmetav1.ReplyState_REPLY_STATE_PENDING:       ` AND NOT m.reply_success AND t.accepts_replies`,
}

// listSQL is the list query for a shop key column and a state.
func listSQL(keyColumn string, state reviewmetav1.ReplyState) (string, error) {
	filter, ok := stateFilters[state]
	if !ok {
		return "", fmt.Errorf("no filter for reply state %v", state)
	}
	return `SELECT` + reviewColumns + fromReviews + `
WHERE m.` + keyColumn + ` = $1
	AND (m.create_time, m.review_id) < ($2::timestamptz, $3::uuid)
	AND ($4::smallint = 0 OR m.review_type = $4::smallint)` + filter + `
ORDER BY m.create_time DESC, m.review_id DESC
LIMIT $5`, nil
}

var infinity = pgtype.Timestamptz{InfinityModifier: pgtype.Infinity, Valid: true}

// List returns up to q.Limit reviews.
func (s *Store) List(ctx context.Context, q ListQuery) ([]Review, error) {
	var key any = [16]byte(q.ShopID)
	column := "shop_id"
	if q.ExternalShopID != "" {
		key, column = q.ExternalShopID, "external_shop_id"
	}
	sql, err := listSQL(column, q.State)
	if err != nil {
		return nil, err
	}
	var before any = infinity
	if !q.BeforeTime.IsZero() {
		before = q.BeforeTime
	}
	beforeID := q.BeforeReviewID
	if q.BeforeTime.IsZero() {
		beforeID = uuid.Max
	}
	return collectReviews(s.pool.Query(ctx, sql, key, before, [16]byte(beforeID), q.ReviewType, q.Limit))
}

// TypeStats counts reviews with reply attempts of one type.
type TypeStats struct {
	ReviewType int16
	Attempted  int64
	Succeeded  int64
	Failed     int64
}

// ReplyStats counts attempted, succeeded and failed reviews per type,
// optionally of one shop and with a latest attempt at or after since. The
// conditions not asked for are left out of the SQL, so each combination
// gets its index: shop_id's, or the partial last-reply index for since.
func (s *Store) ReplyStats(ctx context.Context, shopID *uuid.UUID, since *time.Time) ([]TypeStats, error) {
	where, args := `WHERE reply_attempted`, []any{}
	if shopID != nil {
		args = append(args, [16]byte(*shopID))
		where += fmt.Sprintf(` AND shop_id = $%d`, len(args))
	}
	if since != nil {
		args = append(args, *since)
		where += fmt.Sprintf(` AND last_reply_attempt_time >= $%d`, len(args))
	}
	rows, err := s.pool.Query(ctx, `
SELECT review_type, count(*), count(*) FILTER (WHERE reply_success), count(*) FILTER (WHERE NOT reply_success)
FROM reviewmeta.review_metadata `+where+`
GROUP BY review_type ORDER BY review_type`, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowToStructByPos[TypeStats])
}
