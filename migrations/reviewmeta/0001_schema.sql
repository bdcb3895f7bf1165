-- +goose Up
-- The migrator creates schema reviewmeta before goose runs, because goose keeps its
-- version table (reviewmeta.goose_db_version) inside it. This migration states
-- ownership so the schema is self-describing; tables arrive with the issues
-- that need them.
CREATE SCHEMA IF NOT EXISTS reviewmeta;
COMMENT ON SCHEMA reviewmeta IS 'Owned by ReviewMetadataService. Other services use its gRPC API, never these tables.';
REVOKE ALL ON SCHEMA reviewmeta FROM PUBLIC;

-- +goose Down
COMMENT ON SCHEMA reviewmeta IS NULL;
