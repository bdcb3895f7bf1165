-- +goose Up

-- Which review types accept replies is data: change it with an UPDATE, no
-- deploy. review_type holds the ReviewType enum number.
CREATE TABLE reviewmeta.review_types (
    review_type     smallint PRIMARY KEY CHECK (review_type BETWEEN 1 AND 3),
    name            text     NOT NULL UNIQUE,
    accepts_replies boolean  NOT NULL
);
-- Booking (TYPE_A) and receipt (TYPE_B) reviews take replies on the
-- platform; delivery/pickup reviews (TYPE_C) are answered through the
-- delivery partner, not by our reply worker.
INSERT INTO reviewmeta.review_types (review_type, name, accepts_replies) VALUES
    (1, 'BOOKING', true),
    (2, 'RECEIPT', true),
    (3, 'PICKUP', false);

CREATE TABLE reviewmeta.review_metadata (
    review_id               uuid        PRIMARY KEY,
    -- The API's server-assigned id; nothing looks rows up by it.
    id                      uuid        NOT NULL DEFAULT gen_random_uuid(),
    shop_id                 uuid        NOT NULL,
    external_shop_id        text,
    external_business_id    text,
    review_type             smallint    NOT NULL REFERENCES reviewmeta.review_types,
    source                  text,
    has_booking_detail      boolean     NOT NULL,
    reply_attempted         boolean     NOT NULL DEFAULT false,
    reply_success           boolean     NOT NULL DEFAULT false,
    reply_error_type        text,
    reply_attempt_count     integer     NOT NULL DEFAULT 0,
    last_reply_attempt_time timestamptz,
    fetched_at              timestamptz NOT NULL,
    create_time             timestamptz NOT NULL DEFAULT now(),
    update_time             timestamptz NOT NULL DEFAULT now(),
    CHECK (octet_length(external_shop_id) <= 255),
    CHECK (octet_length(external_business_id) <= 255),
    CHECK (octet_length(source) <= 64),
    CHECK (octet_length(reply_error_type) <= 64),
    CHECK (reply_attempted OR (NOT reply_success AND reply_attempt_count = 0))
)
-- Re-scraped pages rewrite fetched_at and update_time, which no index
-- covers: free space in each page keeps those updates HOT.
WITH (fillfactor = 90);

-- ListReviewMetadata by shop, newest first, keyset (create_time, review_id).
CREATE INDEX review_metadata_shop_idx
    ON reviewmeta.review_metadata (shop_id, create_time DESC, review_id DESC);
-- The same listing for the states the reply worker asks for (not
-- attempted, failed, pending): only reviews without a successful reply,
-- which is what is left to do and shrinks as replies succeed.
CREATE INDEX review_metadata_shop_unreplied_idx
    ON reviewmeta.review_metadata (shop_id, create_time DESC, review_id DESC)
    WHERE NOT reply_success;
-- ListReviewMetadata by the platform's shop id: scrapers know that id first.
CREATE INDEX review_metadata_external_shop_idx
    ON reviewmeta.review_metadata (external_shop_id, create_time DESC, review_id DESC)
    WHERE external_shop_id IS NOT NULL;
-- GetReplyStats since a time, across all shops.
CREATE INDEX review_metadata_last_reply_idx
    ON reviewmeta.review_metadata (last_reply_attempt_time)
    WHERE reply_attempted;

-- Every recorded reply attempt; attempt_id makes RecordReplyAttempt
-- idempotent when the caller supplies one.
CREATE TABLE reviewmeta.reply_attempts (
    attempt_id   uuid        PRIMARY KEY,
    review_id    uuid        NOT NULL,
    success      boolean     NOT NULL,
    error_type   text,
    attempted_at timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE reviewmeta.reply_attempts;
DROP TABLE reviewmeta.review_metadata;
DROP TABLE reviewmeta.review_types;
