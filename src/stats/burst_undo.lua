--! burst_undo.lua: takes back one call of burst.lua whose rating write was a no-op.
--
-- KEYS[1]  the post's burst-state hash     KEYS[2]  the raters of its current bucket
-- ARGV[1]  the bucket burst.lua reported   ARGV[2]  the rater (user id)
-- Returns 1 if the rater's arrival was withdrawn (x fell by one), else 0.
--
-- Only while the state is still in that bucket: once it has moved on, the bucket was folded
-- into the baseline with the arrival in it, and the raters hash belongs to another bucket.
-- A rater with other calls in the bucket that wrote (or may still write) stays counted.

local b = tonumber(redis.call('HGET', KEYS[1], 'b'))
if b == nil or b ~= tonumber(ARGV[1]) then
  return 0
end
local calls = tonumber(redis.call('HGET', KEYS[2], ARGV[2]))
if calls == nil then
  return 0
end
if calls > 1 then
  redis.call('HINCRBY', KEYS[2], ARGV[2], -1)
  return 0
end
redis.call('HDEL', KEYS[2], ARGV[2])
if (tonumber(redis.call('HGET', KEYS[1], 'x')) or 0) > 0 then
  redis.call('HINCRBY', KEYS[1], 'x', -1)
end
return 1
