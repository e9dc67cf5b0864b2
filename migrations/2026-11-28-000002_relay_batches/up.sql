-- Stamping moves events out of the outbox into one row per relay batch, instead of updating
-- every event row with its partition and sequence: an event is now written once and deleted
-- once, and the outbox keeps only its primary key.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM rating_events WHERE seq IS NOT NULL) THEN
        RAISE EXCEPTION 'stamped events are waiting: let the running relay deliver them before migrating';
    END IF;
END $$;

-- Dropping the columns drops their indexes and the check that ties them together.
ALTER TABLE rating_events DROP COLUMN part, DROP COLUMN seq;

-- A stamped batch, in delivery order: `payload` holds `events` events in the wire format
-- (src/events/wire.rs), each with its partition and sequence. Deleted once delivered.
CREATE TABLE relay_batches (
    id BIGSERIAL PRIMARY KEY,
    events INTEGER NOT NULL CHECK (events > 0),
    payload BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
