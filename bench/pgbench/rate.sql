-- pgbench on the service's rating write (src/db/ratings.rs): the same statement, with the
-- binds as pgbench variables: it upserts the rating and inserts its outbox row. A unit test
-- in src/db/ratings.rs fails when this file and the service's statement drift apart.
-- Variables: nposts, nusers (posts 1..nposts by user 1; raters 2..nusers+1), weight 1000.
\set post random(1, :nposts)
\set uid random(2, :nusers + 1)
\set score random(0, 5)
WITH v AS (SELECT :post::bigint AS post_id, :uid::bigint AS user_id, :score::smallint AS score, 1000::integer AS weight),
up AS (
    INSERT INTO ratings AS r (post_id, user_id, score, weight)
    SELECT p.id, v.user_id, v.score, v.weight FROM posts p, v
    WHERE p.id = v.post_id AND p.created_by <> v.user_id
    ON CONFLICT (post_id, user_id) DO UPDATE
        SET score = EXCLUDED.score, weight = EXCLUDED.weight,
            prev_score = r.score, prev_weight = r.weight, updated_at = now()
        WHERE r.score <> EXCLUDED.score
    RETURNING r.post_id, r.user_id, r.score, r.weight, r.prev_score, r.prev_weight, r.updated_at
), ev AS (
    INSERT INTO rating_events
        (post_id, user_id, score, prev_score, weight, prev_weight,
         d_count, d_score_sum, bucket_out, bucket_in, d_weight_sum, d_weighted_sum)
    SELECT post_id, user_id, score, prev_score, weight, prev_weight,
           CASE WHEN prev_score IS NULL THEN 1 ELSE 0 END,
           score - COALESCE(prev_score, 0),
           prev_score,
           score,
           weight - COALESCE(prev_weight, 0),
           score * weight - COALESCE(prev_score * prev_weight, 0)
    FROM up
)
SELECT post_id, score, updated_at FROM up;
