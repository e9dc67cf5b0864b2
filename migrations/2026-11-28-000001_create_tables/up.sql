CREATE TABLE users (
    id BIGSERIAL PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE posts (
    id BIGSERIAL PRIMARY KEY,
    title TEXT NOT NULL,
    content TEXT NOT NULL,
    created_by BIGINT NOT NULL REFERENCES users (id),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- Newest-first keyset pagination.
CREATE INDEX posts_newest_idx ON posts (created_at DESC, id DESC);

CREATE TABLE ratings (
    post_id BIGINT NOT NULL REFERENCES posts (id) ON DELETE CASCADE,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    score SMALLINT NOT NULL CHECK (score BETWEEN 0 AND 5),
    -- Burst-damping weight in thousandths, fixed when the rating was written.
    weight INTEGER NOT NULL CHECK (weight BETWEEN 0 AND 1000),
    -- The score and weight this row replaced, set by the upsert itself so that one
    -- statement both changes the rating and learns what it replaced (PostgreSQL 15 has no
    -- RETURNING old.*). NULL when the row was inserted.
    prev_score SMALLINT,
    prev_weight INTEGER,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (post_id, user_id)
);
-- "This user's ratings for these posts" is an index-only scan.
CREATE INDEX ratings_user_idx ON ratings (user_id, post_id) INCLUDE (score);

-- The transactional outbox: one row per change of a rating, with the exact deltas it makes
-- to the post's stats. `bucket_out`/`bucket_in` are the histogram buckets left and entered.
-- The relay stamps `part`/`seq` (gap-free and increasing per partition) before publishing.
CREATE TABLE rating_events (
    id BIGSERIAL PRIMARY KEY,
    post_id BIGINT NOT NULL,
    d_count SMALLINT NOT NULL,
    d_score_sum INTEGER NOT NULL,
    bucket_out SMALLINT CHECK (bucket_out BETWEEN 0 AND 5),
    bucket_in SMALLINT CHECK (bucket_in BETWEEN 0 AND 5),
    d_weight_sum INTEGER NOT NULL,
    d_weighted_sum INTEGER NOT NULL,
    part INTEGER,
    seq BIGINT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((part IS NULL) = (seq IS NULL))
);
CREATE UNIQUE INDEX rating_events_stamped_idx ON rating_events (part, seq) WHERE seq IS NOT NULL;
CREATE INDEX rating_events_unstamped_idx ON rating_events (id) WHERE seq IS NULL;

-- The last relay sequence handed out per partition.
CREATE TABLE relay_partitions (
    part INTEGER PRIMARY KEY,
    last_seq BIGINT NOT NULL DEFAULT 0
);
