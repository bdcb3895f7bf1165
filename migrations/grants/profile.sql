-- What ProfileService's runtime role (`profile serve`) may do in schema
-- profile: what the SQL of services/profile/internal/store needs, nothing
-- more. `profile migrate` applies this after the migrations, on every run,
-- to each runtime role of the schema (the roles the bootstrap granted
-- USAGE on it; {{runtime}} below), after revoking everything else on the
-- schema's tables, sequences and functions from them. Change it with the
-- store's SQL (TestRuntimeGrants pins it).

-- RecordLoginResult upserts (ON CONFLICT ... DO UPDATE); the reads.
-- No DELETE: profiles are never removed by the service.
GRANT SELECT, INSERT, UPDATE ON profile.profiles TO {{runtime}};
-- The idempotency record: insert, look up, and the janitor's purge.
GRANT SELECT, INSERT, DELETE ON profile.login_events TO {{runtime}};
-- Called by the upsert (the generated columns' functions are run by
-- Postgres on the table's behalf).
GRANT EXECUTE ON FUNCTION profile.merge_logins(profile.login[], profile.login[]) TO {{runtime}};
-- ListProfiles' grade filter (rule:grade-thresholds).
GRANT EXECUTE ON FUNCTION profile.grade_floor(integer), profile.grade_ceiling(integer) TO {{runtime}};
-- WatchProfileChanges: the login upsert inserts the transitions; watchers
-- read them; the pruner deletes old ones and moves the watermark.
GRANT SELECT, INSERT, DELETE ON profile.profile_transitions TO {{runtime}};
GRANT SELECT, UPDATE ON profile.transition_watermark TO {{runtime}};
