-- +goose Up
-- The migrator creates schema oplog before goose runs, because goose keeps its
-- version table (oplog.goose_db_version) inside it. This migration states
-- ownership so the schema is self-describing; tables arrive with the issues
-- that need them.
CREATE SCHEMA IF NOT EXISTS oplog;
COMMENT ON SCHEMA oplog IS 'Owned by OpLogService. Other services use its gRPC API, never these tables.';
REVOKE ALL ON SCHEMA oplog FROM PUBLIC;

-- +goose Down
COMMENT ON SCHEMA oplog IS NULL;
