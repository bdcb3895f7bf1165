-- +goose Up

-- ProfileService's google.rpc.ErrorInfo reason for a dead letter (e.g.
-- EVENT_TOO_OLD), which the relay decides on; '' when it gave none, and
-- for the dead letters kept before the relay recorded it.
ALTER TABLE oplog.login_dead_letters ADD COLUMN error_reason text NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE oplog.login_dead_letters DROP COLUMN error_reason;
