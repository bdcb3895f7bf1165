-- What ReviewMetadataService's runtime role (`reviewmeta serve`) may do in
-- schema reviewmeta: what the SQL of services/reviewmeta/internal/store
-- needs, nothing more. `reviewmeta migrate` applies this after the
-- migrations, on every run, to each runtime role of the schema (the roles
-- the bootstrap granted USAGE on it; {{runtime}} below), after revoking
-- everything else on the schema's tables, sequences and functions from
-- them. Change it with the store's SQL (TestRuntimeGrants pins it).

-- Which review types take replies: read only (operators change it).
GRANT SELECT ON reviewmeta.review_types TO {{runtime}};
-- Page upserts (ON CONFLICT ... DO UPDATE), reply updates (SELECT ... FOR
-- UPDATE needs UPDATE), listings. No DELETE.
GRANT SELECT, INSERT, UPDATE ON reviewmeta.review_metadata TO {{runtime}};
-- Reply attempts are recorded and looked up, never changed.
GRANT SELECT, INSERT ON reviewmeta.reply_attempts TO {{runtime}};
