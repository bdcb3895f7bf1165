package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	commonv1 "github.com/platforma/platforma/gen/platforma/common/v1"
	oplogv1 "github.com/platforma/platforma/gen/platforma/oplog/v1"
)

// Operation types whose rows are login outcomes for ProfileService.
const (
	opCheckLogin      = int16(oplogv1.OperationType_OPERATION_TYPE_CHECK_LOGIN)
	opValidateSession = int16(oplogv1.OperationType_OPERATION_TYPE_VALIDATE_SESSION)
	outcomeSuccess    = int16(commonv1.Outcome_OUTCOME_SUCCESS)
)

// EnableLoginOutbox makes WriteRows put every new login row with an
// account into oplog.login_outbox, in the rows' transaction. Call it
// before the first write.
func (s *Store) EnableLoginOutbox() { s.loginOutbox = true }

// isLogin reports whether a row is a login outcome ProfileService can
// apply: a CHECK_LOGIN or VALIDATE_SESSION of a known account.
func isLogin(r *Row) bool {
	return (r.OperationType == opCheckLogin || r.OperationType == opValidateSession) && len(r.PlatformAccountID) > 0
}

var outboxColumns = []string{"event_id", "user_id", "platform_account_id", "success", "auth_type", "occurred_at", "trace_id", "span_id"}

// enqueueLogins adds the login rows among rows (all new) to the outbox.
func enqueueLogins(ctx context.Context, tx pgx.Tx, rows []*Row) error {
	var logins [][]any
	for _, r := range rows {
		if !isLogin(r) {
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

// Delete removes delivered (or undeliverable) entries.
func (c *RelayConn) Delete(ctx context.Context, seqs []int64) error {
	if len(seqs) == 0 {
		return nil
	}
	tag, err := c.conn.Exec(ctx, "DELETE FROM oplog.login_outbox WHERE seq = ANY($1)", seqs)
	if err == nil && tag.RowsAffected() != int64(len(seqs)) {
		// Only the lock holder deletes; anything else is a bug worth seeing.
		return fmt.Errorf("deleted %d outbox entries, expected %d", tag.RowsAffected(), len(seqs))
	}
	return err
}

// Broken reports whether the connection is gone (and so is the lock).
func (c *RelayConn) Broken() bool { return c.conn.IsClosed() }

// OutboxBacklog counts the waiting entries and the age of the oldest.
func (s *Store) OutboxBacklog(ctx context.Context) (count int64, oldest time.Duration, err error) {
	var seconds float64
	err = s.pool.QueryRow(ctx, `
SELECT count(*), coalesce(extract(epoch FROM now() - min(enqueued_at)), 0)::float8
FROM oplog.login_outbox`).Scan(&count, &seconds)
	return count, time.Duration(seconds * float64(time.Second)), err
}
