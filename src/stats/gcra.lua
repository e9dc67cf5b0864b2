--! gcra.lua: one check of a GCRA rate limit kept in Redis (RATE_LIMIT_STORE=redis), the same
-- algorithm as the in-memory limits: a client may spend `burst` requests at once, then one
-- request per `interval` comes back.
--
-- KEYS[1]  the client's theoretical arrival time (TAT), microseconds of Redis' clock
-- ARGV[1]  interval: microseconds per request (60,000,000 / limit per minute)
-- ARGV[2]  burst: requests that may come at once (the limit per minute)
-- Returns 0 when the request is allowed (and counted), else the microseconds until one more
-- request would be. Redis' own clock (TIME), so every instance judges by the same one.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then
  tat = now
end
local next_tat = tat + interval
local over = next_tat - now - burst * interval
if over > 0 then
  return over
end
-- The key is as good as absent once the TAT has passed: let Redis forget it then.
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX',
  math.max(1, math.ceil((next_tat - now) / 1000)))
return 0
