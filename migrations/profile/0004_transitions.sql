-- +goose Up

-- WatchProfileChanges' stream: one row per change of a profile's grade or
-- needs_session_refresh (its creation included, as a change from no grade
-- and no refresh), written by the same statement that changes the profile
-- (services/profile/internal/store, applyLogins), so a change cannot exist
-- without its row or the other way round.
--
-- The stream's order is (tx, id): tx is the writing transaction's id. A
-- watcher reads only rows with tx below the xmin of its snapshot, the
-- oldest transaction still running: every transaction below it has ended,
-- so no row can later appear behind a position already delivered, and
-- writers are never serialised for it. Two changes of one profile are
-- ordered by tx because the writer takes the profile's advisory lock
-- before its first write (which assigns tx): the later writer gets its tx
-- after the earlier one committed.
CREATE TABLE profile.profile_transitions (
    id                    bigint      GENERATED ALWAYS AS IDENTITY,
    tx                    xid8        NOT NULL DEFAULT pg_current_xact_id(),
    profile_id            uuid        NOT NULL,
    user_id               uuid        NOT NULL,
    platform_account_id   text        NOT NULL,
    -- The profile right after the change.
    auth_type             smallint    NOT NULL,
    total_login_count     bigint      NOT NULL,
    success_login_count   bigint      NOT NULL,
    consecutive_failures  integer     NOT NULL,
    version               bigint      NOT NULL,
    update_time           timestamptz NOT NULL,
    session_stability_score numeric(5,2) NOT NULL,
    -- StabilityGrade numbers; old_grade 0 when the change created the profile.
    old_grade             smallint    NOT NULL,
    new_grade             smallint    NOT NULL,
    old_needs_session_refresh boolean NOT NULL,
    new_needs_session_refresh boolean NOT NULL,
    -- The outcome that caused it: of several in one batch for the account,
    -- the newest by occurred_at.
    event_id              uuid        NOT NULL,
    success               boolean     NOT NULL,
    occurred_at           timestamptz NOT NULL,
    recorded_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tx, id)
);

-- Filled by the service; no row is ever updated, so no dead tuples but the
-- pruned ones, which autovacuum handles.
COMMENT ON TABLE profile.profile_transitions IS 'WatchProfileChanges stream; rows older than the retention are pruned in (tx, id) order.';

-- The profile's grade and failure streak before its last change: the
-- upsert sets them from the row it locks, so its RETURNING has the state
-- before and after, exact under concurrency, without reading the profile
-- again. Existing rows get 0 (no fast default rewrites the table); their
-- next change sets them.
ALTER TABLE profile.profiles
    ADD COLUMN prev_grade smallint NOT NULL DEFAULT 0,
    ADD COLUMN prev_consecutive_failures integer NOT NULL DEFAULT 0;

-- The pruned-through position: every row at or below it has been deleted
-- (in the same transaction that moved it), so a cursor below it has lost
-- events and gets CURSOR_EXPIRED. Exactly one row.
CREATE TABLE profile.transition_watermark (
    one       boolean PRIMARY KEY DEFAULT true CHECK (one),
    pruned_tx xid8    NOT NULL DEFAULT '0',
    pruned_id bigint  NOT NULL DEFAULT 0
);
INSERT INTO profile.transition_watermark DEFAULT VALUES;

-- +goose Down
ALTER TABLE profile.profiles DROP COLUMN prev_grade, DROP COLUMN prev_consecutive_failures;
DROP TABLE profile.transition_watermark;
DROP TABLE profile.profile_transitions;
