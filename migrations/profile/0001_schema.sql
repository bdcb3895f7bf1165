-- +goose Up
-- The migrator creates schema profile before goose runs, because goose keeps its
-- version table (profile.goose_db_version) inside it. This migration states
-- ownership so the schema is self-describing; tables arrive with the issues
-- that need them.
CREATE SCHEMA IF NOT EXISTS profile;
COMMENT ON SCHEMA profile IS 'Owned by ProfileService. Other services use its gRPC API, never these tables.';
REVOKE ALL ON SCHEMA profile FROM PUBLIC;

-- +goose Down
COMMENT ON SCHEMA profile IS NULL;
