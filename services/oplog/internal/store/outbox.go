package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	"github.com/platforma/platforma/services/oplog/internal/domain"
)

// outcomeSuccess is the Outcome number of a successful login.
const outcomeSuccess = int16(commonv1.Outcome_OUTCOME_SUCCESS)

var outboxColumns = []string{"event_id", "user_id", "platform_account_id", "success", "auth_type", "occurred_at", "trace_id", "span_id"}

// enqueueLogins adds the rows among rows (all new) that the login relay
// forwards (domain.IsRelayedLogin) to the outbox.
func enqueueLogins(ctx context.Context, tx pgx.Tx, rows []*Row) error {
	var logins [][]any
	for _, r := range rows {
		if !domain.IsRelayedLogin(r.OperationType, r.PlatformAccountID) {
			continue
		}
		logins = append(logins, []any{
			r.ID, r.UserID, string(r.PlatformAccountID), r.Outcome == outcomeSuccess,
			r.AuthTypeDetected, r.CreateTime, nullText(r.TraceID), nullText(r.SpanID),
		})
	}
	if len(logins) == 0 {
		return nil
	}
	_, err := tx.CopyFrom(ctx, pgx.Identifier{"oplog", "login_outbox"}, outboxColumns, pgx.CopyFromRows(logins))
	return err
}

func nullText(b []byte) *string {
	if b == nil {
		return nil
	}
	s := string(b)
	return &s
}

// OutboxEntry is one login waiting for ProfileService.
type OutboxEntry struct {
	Seq               int64
	EventID           [16]byte
	UserID            [16]byte
	PlatformAccountID string
	Success           bool
	AuthType          int16
	OccurredAt        time.Time
	TraceID, SpanID   string // "" when the row had none
}

// RelayConn is the relay's own connection: it holds the lock that makes
// its replica the only one delivering, and reads and deletes entries.
type RelayConn struct{ conn *pgx.Conn }

// relayLockKey names the session advisory lock of the relay.
const relayLockKey = "oplog.login_outbox relay"

// LockRelay opens a connection outside the pool and takes the relay lock
// on it. It returns nil, nil when another replica holds the lock. The
// lock lasts as long as the connection: if this process dies, or the
// connection breaks, Postgres releases it and another replica takes over.
func (s *Store) LockRelay(ctx context.Context) (*RelayConn, error) {
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return nil, err
	}
	var held bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock(hashtext($1))", relayLockKey).Scan(&held); err != nil || !held {
		_ = conn.Close(context.Background())
		return nil, err
	}
	return &RelayConn{conn: conn}, nil
}

// Close ends the connection, and with it the lock.
func (c *RelayConn) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = c.conn.Close(ctx)
}

// Pending returns up to limit entries, oldest first.
func (c *RelayConn) Pending(ctx context.Context, limit int) ([]OutboxEntry, error) {
	rows, err := c.conn.Query(ctx, `
SELECT seq, event_id, user_id, platform_account_id, success, auth_type, occurred_at,
	coalesce(trace_id, ''), coalesce(span_id, '')
FROM oplog.login_outbox ORDER BY seq LIMIT $1`, limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowToStructByPos[OutboxEntry])
}

// Refusal is ProfileService's final answer for one entry.
type Refusal struct {
	Seq     int64
	Code    string // gRPC code name
	Message string
	// ErrorReason is the answer's google.rpc.ErrorInfo reason, "" for
	// none.
	ErrorReason string
}

// Finish removes delivered entries and moves refused ones to the dead
// letters, in one statement: an outcome is never in neither table.
func (c *RelayConn) Finish(ctx context.Context, delivered []int64, refused []Refusal) error {
	seqs := append([]int64(nil), delivered...)
	deadSeqs := make([]int64, len(refused))
	deadCodes := make([]string, len(refused))
	deadMessages := make([]string, len(refused))
	deadReasons := make([]string, len(refused))
	for i, r := range refused {
		seqs = append(seqs, r.Seq)
		deadSeqs[i], deadCodes[i], deadMessages[i], deadReasons[i] = r.Seq, r.Code, r.Message, r.ErrorReason
	}
	if len(seqs) == 0 {
		return nil
	}
	var gone, dead int
	err := c.conn.QueryRow(ctx, `
WITH gone AS (
	DELETE FROM oplog.login_outbox WHERE seq = ANY($1)
	RETURNING seq, event_id, user_id, platform_account_id, success, auth_type, occurred_at, trace_id, span_id
), dead AS (
	INSERT INTO oplog.login_dead_letters AS d
		(event_id, user_id, platform_account_id, success, auth_type, occurred_at, trace_id, span_id, code, reason, error_reason)
	SELECT g.event_id, g.user_id, g.platform_account_id, g.success, g.auth_type, g.occurred_at, g.trace_id, g.span_id,
		r.code, r.message, r.error_reason
	FROM gone g JOIN unnest($2::bigint[], $3::text[], $4::text[], $5::text[]) AS r(seq, code, message, error_reason) ON r.seq = g.seq
	ON CONFLICT (event_id) DO UPDATE
		SET code = excluded.code, reason = excluded.reason, error_reason = excluded.error_reason, dead_lettered_at = now()
	RETURNING 1
)
SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM dead)`,
		seqs, deadSeqs, deadCodes, deadMessages, deadReasons).Scan(&gone, &dead)
	if err == nil && (gone != len(seqs) || dead != len(refused)) {
		// Only the lock holder deletes; anything else is a bug worth seeing.
		return fmt.Errorf("finished %d outbox entries (%d dead letters), expected %d (%d)", gone, dead, len(seqs), len(refused))
	}
	return err
}

// Broken reports whether the connection is gone (and so is the lock).
func (c *RelayConn) Broken() bool { return c.conn.IsClosed() }

// Backlog is the state of the relay's tables.
type Backlog struct {
	// Waiting is the number of outbox entries, Oldest the age of the
	// oldest (0 when none).
	Waiting int64
	Oldest  time.Duration
	// DeadLetters is the number of outcomes ProfileService refused.
	DeadLetters int64
}

// OutboxBacklog reads the backlog.
func (s *Store) OutboxBacklog(ctx context.Context) (Backlog, error) {
	var b Backlog
	var seconds float64
	err := s.pool.QueryRow(ctx, `
SELECT count(*), coalesce(extract(epoch FROM now() - min(enqueued_at)), 0)::float8,
	(SELECT count(*) FROM oplog.login_dead_letters)
FROM oplog.login_outbox`).Scan(&b.Waiting, &seconds, &b.DeadLetters)
	b.Oldest = time.Duration(seconds * float64(time.Second))
	return b, err
}

// DeadLetter is a login outcome ProfileService refused for good.
type DeadLetter struct {
	EventID           [16]byte
	UserID            [16]byte
	PlatformAccountID string
	Success           bool
	AuthType          int16
	OccurredAt        time.Time
	Code, Message     string
	DeadLetteredAt    time.Time
	ErrorReason       string
}

// ListDeadLetters returns up to limit dead letters with an event id
// greater than after, in event id order (the primary key).
func (s *Store) ListDeadLetters(ctx context.Context, after [16]byte, limit int) ([]DeadLetter, error) {
	rows, err := s.pool.Query(ctx, `
SELECT event_id, user_id, platform_account_id, success, auth_type, occurred_at, code, reason, dead_lettered_at, error_reason
FROM oplog.login_dead_letters WHERE event_id > $1 ORDER BY event_id LIMIT $2`, after, limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowToStructByPos[DeadLetter])
}

// ReplayDeadLetters moves dead letters back to the outbox, those with the
// given event ids or, with all, every one. It returns how many moved.
func (s *Store) ReplayDeadLetters(ctx context.Context, eventIDs [][16]byte, all bool) (int64, error) {
	tag, err := s.pool.Exec(ctx, `
WITH moved AS (
	DELETE FROM oplog.login_dead_letters WHERE $2 OR event_id = ANY($1)
	RETURNING event_id, user_id, platform_account_id, success, auth_type, occurred_at, trace_id, span_id
)
INSERT INTO oplog.login_outbox (event_id, user_id, platform_account_id, success, auth_type, occurred_at, trace_id, span_id)
SELECT event_id, user_id, platform_account_id, success, auth_type, occurred_at, trace_id, span_id
FROM moved ORDER BY occurred_at`, eventIDs, all)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}
