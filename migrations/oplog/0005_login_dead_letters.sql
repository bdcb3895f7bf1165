-- +goose Up

-- Login outcomes ProfileService refused for good, kept instead of dropped.
-- Ingest refuses everything ProfileService would refuse as malformed (both
-- apply the same field rules), so what lands here was refused for a reason
-- Ingest could not know: typically an outcome older than ProfileService's
-- -max-event-age by the time the relay delivered it (ProfileService was
-- down for long), or the two services configured differently. Operators
-- list them (ListLoginDeadLetters) and, once the cause is fixed, move them
-- back to the outbox (ReplayLoginDeadLetters). The relay moves an entry
-- here in the statement that deletes it from the outbox, so an outcome is
-- always in exactly one of the two tables until it is delivered.
CREATE TABLE oplog.login_dead_letters (
    -- The log row's id (ProfileService's event_id); listing pages by it.
    event_id            uuid        PRIMARY KEY,
    user_id             uuid        NOT NULL,
    platform_account_id text        NOT NULL,
    success             boolean     NOT NULL,
    auth_type           smallint    NOT NULL,
    occurred_at         timestamptz NOT NULL,
    trace_id            text,
    span_id             text,
    -- ProfileService's answer: the gRPC code name and its message.
    code                text        NOT NULL,
    reason              text        NOT NULL,
    dead_lettered_at    timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE oplog.login_dead_letters;
