-- How many events of each post the relay has stamped: each event carries the post's version
-- after it (1, 2, 3, ...), and each Redis stats hash records the version it has reached, so
-- the stats store can tell a post whose hash does not follow on from its events (lost,
-- evicted, rolled back) and repair just that post. Posts never rated have no row (version 0).
CREATE TABLE post_versions (
    post_id BIGINT PRIMARY KEY,
    version BIGINT NOT NULL CHECK (version > 0)
);
