-- +goose Up

-- One entry of a profile's recent-login window. event_id breaks ties
-- between logins at the same instant, so the window is deterministic.
CREATE TYPE profile.login AS (
    occurred_at timestamptz,
    success     boolean,
    event_id    uuid
);

-- The session-stability rules, as immutable SQL functions: generated columns
-- use them, so score, grade and streak can never disagree with the
-- counters and the window (last_login_at is the window's first entry).
-- These functions are where the rules execute; the tests of
-- services/profile/internal/store hold an independent Go version of each
-- (the test oracle) and check both agree on the same inputs.

-- round(success / total * 100, 2); 0 when total is 0.
CREATE FUNCTION profile.stability_score(success bigint, total bigint) RETURNS numeric(5,2)
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN CASE WHEN total = 0 THEN 0 ELSE round(success * 100.0 / total, 2) END;

-- StabilityGrade enum numbers: 1 STABLE (>= 80), 2 UNSTABLE (>= 50), 3 CRITICAL.
-- rule:grade-thresholds: 0003_grade_floor.sql replaces this function with one
-- that reads profile.grade_floor.
CREATE FUNCTION profile.stability_grade(score numeric) RETURNS smallint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN CASE WHEN score >= 80 THEN 1 WHEN score >= 50 THEN 2 ELSE 3 END;

-- Failures at the head of a newest-first window, before the first success.
CREATE FUNCTION profile.leading_failures(logins profile.login[]) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN coalesce(
    (SELECT min(u.n) - 1 FROM unnest(logins) WITH ORDINALITY AS u(occurred_at, success, event_id, n) WHERE u.success),
    cardinality(logins));

-- rule:login-window: the 10 newest of two windows' logins, newest first
-- (domain.WindowSize in Go bounds -refresh-after-failures by it).
CREATE FUNCTION profile.merge_logins(a profile.login[], b profile.login[]) RETURNS profile.login[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN ARRAY(
    SELECT ROW(u.occurred_at, u.success, u.event_id)::profile.login
    FROM unnest(a || b) AS u(occurred_at, success, event_id)
    ORDER BY u.occurred_at DESC, u.event_id DESC
    LIMIT 10);

CREATE TABLE profile.profiles (
    id                    uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id               uuid        NOT NULL,
    platform_account_id   text        NOT NULL CHECK (octet_length(platform_account_id) BETWEEN 1 AND 255),
    -- AuthType enum number; 0 until a login reports one.
    auth_type             smallint    NOT NULL DEFAULT 0 CHECK (auth_type BETWEEN 0 AND 2),
    -- occurred_at of the login that set auth_type: a late, older report
    -- does not overwrite a newer one.
    auth_type_reported_at timestamptz,
    total_login_count     bigint      NOT NULL DEFAULT 0,
    success_login_count   bigint      NOT NULL DEFAULT 0,
    failed_login_count    bigint      GENERATED ALWAYS AS (total_login_count - success_login_count) STORED,
    session_stability_score numeric(5,2) GENERATED ALWAYS AS (profile.stability_score(success_login_count, total_login_count)) STORED,
    grade                 smallint    GENERATED ALWAYS AS (profile.stability_grade(profile.stability_score(success_login_count, total_login_count))) STORED,
    -- Newest first, at most 10, ordered by occurred_at (not arrival).
    recent_logins         profile.login[] NOT NULL DEFAULT '{}',
    consecutive_failures  integer     GENERATED ALWAYS AS (profile.leading_failures(recent_logins)) STORED,
    -- Incremented by every change; the etag.
    version               bigint      NOT NULL DEFAULT 1,
    create_time           timestamptz NOT NULL DEFAULT now(),
    update_time           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT profiles_account_key UNIQUE (user_id, platform_account_id),
    CHECK (success_login_count BETWEEN 0 AND total_login_count),
    CHECK (cardinality(recent_logins) <= 10) -- rule:login-window
);

-- ListProfiles: lowest score first, keyset (score, id); grade filters are
-- score ranges on the same index. GetProfile uses the primary key or
-- profiles_account_key; no other index: every update changes the score,
-- so every index is written on every login.
CREATE INDEX profiles_score_id_idx ON profile.profiles (session_stability_score, id);

-- Idempotency record of RecordLoginResult: one row per applied event_id,
-- kept for the retention the service is configured with (README), then
-- deleted by the service's janitor.
CREATE TABLE profile.login_events (
    event_id            uuid        PRIMARY KEY,
    user_id             uuid        NOT NULL,
    platform_account_id text        NOT NULL,
    recorded_at         timestamptz NOT NULL DEFAULT now()
);

-- The janitor's "older than the retention" scan. Rows arrive in
-- recorded_at order, so a BRIN index is tiny and enough.
CREATE INDEX login_events_recorded_at_brin ON profile.login_events USING brin (recorded_at);

-- +goose Down
DROP TABLE profile.login_events;
DROP TABLE profile.profiles;
DROP FUNCTION profile.merge_logins(profile.login[], profile.login[]);
DROP FUNCTION profile.leading_failures(profile.login[]);
DROP FUNCTION profile.stability_grade(numeric);
DROP FUNCTION profile.stability_score(bigint, bigint);
DROP TYPE profile.login;
