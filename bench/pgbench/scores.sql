-- pgbench on the PostgreSQL work of a signed-in posts page (src/db/posts.rs): the page of posts
-- comes from the page cache, so the one statement left is the reader's own scores of exactly
-- the posts shown, with the binds as pgbench variables. A unit test in src/db/posts.rs fails
-- when this file and the service's statement drift apart.
-- Variables: maxuser (viewers 1..maxuser), posts (the first page's ids, as '{1,2,...}').
\set viewer random(1, :maxuser)
SELECT p.id, (SELECT r.score FROM ratings r WHERE r.user_id = u.id AND r.post_id = p.id) FROM users u LEFT JOIN unnest(:posts::bigint[]) AS p(id) ON true WHERE u.id = :viewer;
