-- +goose Up

-- The span that performed the operation, beside its trace: what the login
-- relay's spans link to. Nullable without a default, so adding it
-- rewrites nothing.
ALTER TABLE oplog.operation_logs ADD COLUMN span_id text;

-- Login outcomes on their way to ProfileService (a transactional
-- outbox). A CHECK_LOGIN or VALIDATE_SESSION row with an
-- account gets its entry here in the transaction that stores the row, so
-- a stored login cannot miss its profile, and a resent row (a duplicate)
-- adds nothing. The relay deletes entries once ProfileService has applied
-- them; ProfileService's idempotency on event_id makes a resend after a
-- crash harmless. Written only while PROFILE_ADDR is configured.
CREATE TABLE oplog.login_outbox (
    -- Delivery order; the relay reads the lowest first (the primary key is
    -- the only index the relay needs).
    seq                 bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The log row's id: ProfileService's event_id.
    event_id            uuid        NOT NULL,
    user_id             uuid        NOT NULL,
    platform_account_id text        NOT NULL,
    success             boolean     NOT NULL,
    -- The AuthType number the worker detected, 0 when it saw none.
    auth_type           smallint    NOT NULL,
    -- The row's create_time: when the login happened.
    occurred_at         timestamptz NOT NULL,
    -- The row's trace and span, for the relay's span links.
    trace_id            text,
    span_id             text,
    enqueued_at         timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE oplog.login_outbox;
ALTER TABLE oplog.operation_logs DROP COLUMN span_id;
