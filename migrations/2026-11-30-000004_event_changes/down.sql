ALTER TABLE rating_events
    DROP COLUMN user_id, DROP COLUMN score, DROP COLUMN prev_score, DROP COLUMN weight,
    DROP COLUMN prev_weight;
