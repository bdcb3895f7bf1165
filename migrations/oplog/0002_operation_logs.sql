-- +goose Up

-- The append-only operation log, range-partitioned by month on
-- create_time. The service creates the monthly partitions
-- ahead of time (operation_logs_pYYYYMM, UTC months); there is no default
-- partition: a row whose month has no partition is refused, never parked.
--
-- The primary key (id, create_time) is the idempotency key of ingestion
-- and the only index for now: every secondary index is paid for on every
-- inserted row, so each one arrives with the query that needs it.
CREATE TABLE oplog.operation_logs (
    id                 uuid        NOT NULL,
    create_time        timestamptz NOT NULL,
    user_id            uuid        NOT NULL,
    platform_account_id text,
    -- OperationType enum number.
    operation_type     smallint    NOT NULL CHECK (operation_type BETWEEN 1 AND 7),
    resource_id        text,
    -- Outcome enum number: 1 SUCCESS, 2 FAILED.
    outcome            smallint    NOT NULL CHECK (outcome IN (1, 2)),
    error_code         integer,
    error_type         text,
    error_message      text,
    execution_time_ms  bigint      CHECK (execution_time_ms >= 0),
    retry_count        integer     NOT NULL DEFAULT 0 CHECK (retry_count >= 0),
    -- AuthType enum number; 0 when none was seen.
    auth_type_detected smallint    NOT NULL DEFAULT 0,
    session_refreshed  boolean     NOT NULL DEFAULT false,
    proxy_used         text,
    user_agent         text,
    request_payload    jsonb,
    response_summary   jsonb,
    -- W3C trace id, 32 hex characters.
    trace_id           text,
    PRIMARY KEY (id, create_time)
) PARTITION BY RANGE (create_time);

-- +goose Down
DROP TABLE oplog.operation_logs;
