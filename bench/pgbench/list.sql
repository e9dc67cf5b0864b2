-- pgbench on the signed-in posts page (src/db/posts.rs, the first page): the statement the
-- service runs for GET /api/v1/posts?limit=20 as a signed-in reader, with the binds as pgbench
-- variables. It is the PostgreSQL ceiling of the list: no HTTP, no JSON, no stats. A unit test
-- in src/db/posts.rs fails when this file and the service's statement drift apart.
-- Variables: maxuser (viewers 1..maxuser), limit (the page size + 1, as the service asks).
\set viewer random(1, :maxuser)
SELECT p.id, p.title, p.content, p.created_by, u.username, p.created_at, (SELECT r.score FROM ratings r WHERE r.user_id = :viewer AND r.post_id = p.id) FROM posts p JOIN users u ON u.id = p.created_by ORDER BY p.created_at DESC, p.id DESC LIMIT :limit;
