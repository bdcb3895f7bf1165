-- +goose Up

-- OpLogService creates the monthly partitions of oplog.operation_logs while
-- it runs (a maintenance task, and the write path for a month it has not
-- seen), but its runtime role may not create tables: it has DML grants
-- only (README, "Database roles"). This function is the one piece of DDL
-- the runtime role may cause. It is owned by the schema's owner and runs
-- with the owner's rights (SECURITY DEFINER), with a fixed search_path so
-- a caller cannot substitute objects, and it creates exactly one thing:
-- the partition of one UTC month, operation_logs_pYYYYMM, bounded by that
-- month, as the service has always named them. The month must be the
-- first day of a month from 2000-01 to two years ahead, so a caller
-- cannot fill the schema with partitions either. The migrator grants
-- EXECUTE to the runtime role (migrations/grants/oplog.sql); PUBLIC has
-- none.
--
-- Replicas serialise on an advisory lock; CREATE ... PARTITION OF briefly
-- locks the parent, so lock_timeout keeps it from queueing behind long
-- writes (the caller retries later). Indexes of the parent are created on
-- the new partition by Postgres itself.
-- +goose StatementBegin
CREATE FUNCTION oplog.create_operation_logs_partition(month date) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '10s'
AS $fn$
DECLARE
    partition text;
BEGIN
    IF month IS NULL OR NOT isfinite(month) OR extract(day FROM month) <> 1 THEN
        RAISE EXCEPTION 'partition month % is not the first day of a month', month
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF month < DATE '2000-01-01'
        OR month > (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '2 years')::date THEN
        RAISE EXCEPTION 'partition month % is not between 2000-01 and two years ahead', month
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    partition := 'operation_logs_p' || to_char(month, 'YYYYMM');
    PERFORM pg_advisory_xact_lock(hashtext('oplog.operation_logs partitions'));
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS oplog.%I PARTITION OF oplog.operation_logs FOR VALUES FROM (%L) TO (%L)',
        partition,
        to_char(month, 'YYYY-MM-DD') || ' 00:00:00+00',
        to_char((month + interval '1 month')::date, 'YYYY-MM-DD') || ' 00:00:00+00');
    RETURN partition;
END
$fn$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION oplog.create_operation_logs_partition(date) FROM PUBLIC;

-- +goose Down
DROP FUNCTION oplog.create_operation_logs_partition(date);
