-- +goose Up

-- The op log's life cycle: a month stays hot (in oplog.operation_logs,
-- with every index) for the hot window; then its partition is detached
-- whole and attached to the archive below; it is exported to cold storage
-- and the export read back and verified; past the retention it is
-- dropped, but only with a verified export. The roll-ups are kept
-- separately, so statistics still answer for dropped months. The
-- lifecycle (services/oplog/internal/lifecycle) runs as this schema's
-- owner: detaching, attaching and dropping partitions is DDL, which the
-- runtime role may not do.

-- The archive: the same columns, partitioned by month the same way, with
-- only the indexes its readers need: the primary key (restore inserts ON
-- CONFLICT DO NOTHING, so a repeated restore adds nothing) and a BRIN
-- index on create_time for time windows. A month's partition keeps its
-- name (operation_logs_pYYYYMM) wherever it is attached.
CREATE TABLE oplog.operation_logs_archive (
    LIKE oplog.operation_logs INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
    PRIMARY KEY (id, create_time)
) PARTITION BY RANGE (create_time);

CREATE INDEX operation_logs_archive_time_brin
    ON oplog.operation_logs_archive USING brin (create_time) WITH (pages_per_range = 32);

-- One row per month the lifecycle has touched: where the month is now and
-- what is known of its export. The lifecycle reads the catalog (which
-- parent a partition is attached to, if any) and cold storage as the
-- truth, and this table as the record: a crash at any point leaves a
-- state the next run recognises and finishes.
CREATE TABLE oplog.lifecycle_months (
    -- First day of the UTC month.
    month              date        PRIMARY KEY CHECK (extract(day FROM month) = 1),
    state              text        NOT NULL CHECK (state IN ('hot', 'archived', 'exported', 'verified', 'dropped')),
    -- Rows and newest create_time found in the partition by the last step
    -- that counted them.
    row_count          bigint,
    newest_create_time timestamptz,
    -- The export that counts (the verified one, once verified).
    export_id          text,
    export_rows        bigint,
    export_bytes       bigint,
    export_digest      text,
    verified_time      timestamptz,
    dropped_time       timestamptz,
    update_time        timestamptz NOT NULL DEFAULT now()
);

-- Every step the lifecycle took or planned, with its result: the audit
-- trail operators read (and the metrics' source of the last success).
CREATE TABLE oplog.lifecycle_steps (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id      uuid        NOT NULL,
    month       date,
    step        text        NOT NULL,
    dry_run     boolean     NOT NULL,
    start_time  timestamptz NOT NULL DEFAULT now(),
    finish_time timestamptz,
    ok          boolean,
    detail      text        NOT NULL DEFAULT ''
);

-- +goose Down
DROP TABLE oplog.lifecycle_steps;
DROP TABLE oplog.lifecycle_months;
DROP TABLE oplog.operation_logs_archive;
