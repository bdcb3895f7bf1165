-- +goose Up

-- Indexes of ListOperationLogs, each for one of its queries. Created on
-- the partitioned table, so every partition has them. Each costs ingest
-- throughput; README lists what each one costs.

-- A user's logs, newest first ("a user's recent
-- failures": the outcome is checked on the rows the index yields).
CREATE INDEX operation_logs_user_idx
    ON oplog.operation_logs (user_id, create_time DESC);

-- Recent failures of one error type (the CS team's "who got AUTH_REQUIRED
-- today"). Partial: failures are the minority of rows.
CREATE INDEX operation_logs_failure_idx
    ON oplog.operation_logs (error_type, create_time DESC)
    WHERE outcome = 2;

-- Any other filter walks the requested time range: rows arrive in time
-- order, so a BRIN index finds that range in a few pages at almost no
-- ingest cost.
CREATE INDEX operation_logs_time_brin
    ON oplog.operation_logs USING brin (create_time) WITH (pages_per_range = 32);

-- Roll-ups, maintained in the transaction that inserts the rows they
-- count (duplicates are never counted), so statistics never scan the log
-- (a log scan grows with the log; roll-ups do not). Each is the projection of
-- hour × operation type × outcome × error type × proxy that one query
-- needs: fewer dimensions, fewer rows to read. The daily twins let a
-- 30-day window read 30 rows per key instead of 720.
--
-- execution_ms_histogram counts rows per latency bucket; the bucket bounds
-- (ms) are fixed in the service (internal/stats) and README:
-- [0,50) [50,100) [100,200) [200,300) [300,500) [500,750) [750,1000)
-- [1000,1500) [1500,2000) [2000,3000) [3000,5000) [5000,7500)
-- [7500,10000) [10000,15000) [15000,20000) [20000,30000) [30000,60000)
-- [60000,∞). execution_ms_count counts the rows that reported a time.
CREATE TABLE oplog.operation_stats_hourly (
    bucket_start           timestamptz NOT NULL,
    operation_type         smallint    NOT NULL,
    outcome                smallint    NOT NULL,
    error_type             text        NOT NULL, -- '' for none
    total                  bigint      NOT NULL,
    execution_ms_count     bigint      NOT NULL,
    execution_ms_sum       bigint      NOT NULL,
    execution_ms_histogram bigint[]    NOT NULL,
    PRIMARY KEY (bucket_start, operation_type, outcome, error_type)
);
CREATE TABLE oplog.operation_stats_daily (LIKE oplog.operation_stats_hourly INCLUDING ALL);

-- GetProxyStats: per proxy and outcome (rows without a proxy are not
-- counted).
CREATE TABLE oplog.proxy_stats_hourly (
    bucket_start       timestamptz NOT NULL,
    proxy_used         text        NOT NULL,
    outcome            smallint    NOT NULL,
    total              bigint      NOT NULL,
    execution_ms_count bigint      NOT NULL,
    execution_ms_sum   bigint      NOT NULL,
    PRIMARY KEY (bucket_start, proxy_used, outcome)
);
CREATE TABLE oplog.proxy_stats_daily (LIKE oplog.proxy_stats_hourly INCLUDING ALL);

-- GetFailureRateSeries by the hour: per operation type only.
CREATE TABLE oplog.operation_counts_hourly (
    bucket_start   timestamptz NOT NULL,
    operation_type smallint    NOT NULL,
    total          bigint      NOT NULL,
    failed         bigint      NOT NULL,
    PRIMARY KEY (bucket_start, operation_type)
);

-- +goose Down
DROP TABLE oplog.operation_counts_hourly;
DROP TABLE oplog.proxy_stats_daily;
DROP TABLE oplog.proxy_stats_hourly;
DROP TABLE oplog.operation_stats_daily;
DROP TABLE oplog.operation_stats_hourly;
DROP INDEX oplog.operation_logs_time_brin;
DROP INDEX oplog.operation_logs_failure_idx;
DROP INDEX oplog.operation_logs_user_idx;
