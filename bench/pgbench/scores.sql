-- pgbench on the PostgreSQL work of a signed-in posts page (src/db/posts.rs): the page of posts
-- comes from the page cache, so the one statement left is the reader's own scores of exactly
-- the posts shown, here as a statement of one lookup (the service coalesces the lookups of
-- concurrent requests into one statement), with the binds as pgbench variables. A unit test
-- in src/db/posts.rs fails when this file and the service's statement drift apart.
-- Variables: maxuser (viewers 1..maxuser), posts (the first page's ids, as '{1,2,...}').
\set viewer random(1, :maxuser)
SELECT q.i, q.known, p.post, (SELECT r.score FROM ratings r WHERE r.user_id = q.viewer AND r.post_id = p.post) FROM (SELECT x.i, x.viewer, x.lo, x.hi, (SELECT true FROM users u WHERE u.id = x.viewer) AS known FROM unnest('{0}'::int4[], ARRAY[:viewer]::int8[], '{1}'::int4[], ARRAY[array_length(:posts::int8[], 1)]::int4[]) AS x(i, viewer, lo, hi) OFFSET 0) q LEFT JOIN LATERAL unnest((:posts::int8[])[q.lo : q.hi]) AS p(post) ON true;
