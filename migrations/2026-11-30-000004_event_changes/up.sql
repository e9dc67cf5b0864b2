-- Each outbox row also records the change itself (who rated, the new and the previous score
-- and weight), which the relay publishes as a JSON `rating.changed` event that any service can
-- read. The delta columns stay: the stats snapshot sums them, and rows written by a release
-- before this one (during a rolling upgrade) have only them, with these columns NULL.
ALTER TABLE rating_events
    ADD COLUMN user_id BIGINT,
    ADD COLUMN score SMALLINT CHECK (score BETWEEN 0 AND 5),
    ADD COLUMN prev_score SMALLINT CHECK (prev_score BETWEEN 0 AND 5),
    ADD COLUMN weight INTEGER CHECK (weight BETWEEN 0 AND 1000),
    ADD COLUMN prev_weight INTEGER CHECK (prev_weight BETWEEN 0 AND 1000);
