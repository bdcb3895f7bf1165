-- What OpLogService's runtime role (`oplog serve`) may do in schema oplog:
-- what the SQL of services/oplog/internal/store and the login relay needs,
-- nothing more. `oplog migrate` applies this after the migrations, on
-- every run, to each runtime role of the schema (the roles the bootstrap
-- granted USAGE on it; {{runtime}} below), after revoking everything else
-- on the schema's tables, sequences and functions from them. Change it
-- with the store's SQL (TestRuntimeGrants pins it).

-- The log is append-only: COPY and INSERT ... ON CONFLICT DO NOTHING
-- RETURNING, and the queries. No UPDATE, no DELETE. The grant on the
-- partitioned table covers its partitions when reached through it.
GRANT SELECT, INSERT ON oplog.operation_logs TO {{runtime}};
-- Roll-ups are upserted in the ingest transaction and read by the
-- queries. Rebuilding them (store.RebuildRollups, DELETE) is maintenance,
-- done with the owner role.
GRANT SELECT, INSERT, UPDATE ON oplog.operation_stats_hourly, oplog.operation_stats_daily,
    oplog.proxy_stats_hourly, oplog.proxy_stats_daily, oplog.operation_counts_hourly TO {{runtime}};
-- The login outbox: written at ingest, read and deleted by the relay,
-- refilled by ReplayLoginDeadLetters. Its identity column needs no grant
-- on the sequence.
GRANT SELECT, INSERT, DELETE ON oplog.login_outbox TO {{runtime}};
-- Dead letters: moved in by the relay (ON CONFLICT ... DO UPDATE), listed,
-- moved back by a replay.
GRANT SELECT, INSERT, UPDATE, DELETE ON oplog.login_dead_letters TO {{runtime}};
-- The only DDL the runtime causes: a month's partition (0006).
GRANT EXECUTE ON FUNCTION oplog.create_operation_logs_partition(date) TO {{runtime}};
-- ListOperationLogs with include_archived reads the archive; every list
-- reads the life cycle's record of months to name the missing ones; the
-- life cycle's metrics read the months and the steps (its last success).
-- The life cycle itself runs as the owner.
GRANT SELECT ON oplog.operation_logs_archive, oplog.lifecycle_months, oplog.lifecycle_steps TO {{runtime}};
