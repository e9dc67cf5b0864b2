DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM relay_batches) THEN
        RAISE EXCEPTION 'stamped batches are waiting: let the running relay deliver them before reverting';
    END IF;
END $$;
DROP TABLE relay_batches;
ALTER TABLE rating_events ADD COLUMN part INTEGER, ADD COLUMN seq BIGINT,
    ADD CHECK ((part IS NULL) = (seq IS NULL));
CREATE UNIQUE INDEX rating_events_stamped_idx ON rating_events (part, seq) WHERE seq IS NOT NULL;
CREATE INDEX rating_events_unstamped_idx ON rating_events (id) WHERE seq IS NULL;
