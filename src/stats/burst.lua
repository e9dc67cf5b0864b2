--! burst.lua: the per-post burst detector of DESIGN §5, one atomic step per rating.
--
-- KEYS[1]  the post's burst-state hash ({REDIS_KEY_PREFIX}burst:{post_id})
-- KEYS[2]  the raters of its current bucket ({REDIS_KEY_PREFIX}burst:{post_id}:raters)
-- ARGV[1]  now_ms: the caller's clock (never Redis TIME, so tests drive a virtual clock)
-- ARGV[2]  bucket_secs   ARGV[3] half_life_buckets   ARGV[4] k   ARGV[5] floor (c)
-- ARGV[6]  the rater (user id)
-- Returns {weight in thousandths 0..1000, 1 if this call counted a new arrival else 0,
-- the bucket it was recorded in}; burst_undo.lua takes that bucket back.
--
-- State hash fields: b = current bucket index, x = arrivals in it, p = arrivals in bucket
-- b - 1 (0 if that bucket was idle or unseen), mu / var = exponentially weighted mean and
-- variance of arrivals per finished bucket. A hash written before p existed reads it as 0.
--
-- Arrivals count raters, not requests: the raters hash maps each rater of bucket b to the
-- number of their calls in b that wrote a rating or may still do so (the service undoes
-- the calls whose write turned out to be a no-op). A rater counts in x while that number is
-- above 0, so repeating or flipping a rating within a bucket counts once, and only a rater
-- whose every call was a no-op (an unchanged score) counts nothing.
--
-- A rating is judged against x_est = x + p * (1 - f), f the elapsed fraction of bucket b:
-- an estimate of the arrivals in the last bucket_secs, so a burst that straddles a bucket
-- boundary is not forgiven when x restarts at 0. The fold into mu / var still uses x.
-- This must stay arithmetically identical to BurstState::observe in burst.rs (a test
-- runs both on the same arrivals): same operations, same order.

local now_ms = tonumber(ARGV[1])
local bucket_secs = tonumber(ARGV[2])
local half_life = tonumber(ARGV[3])
local k = tonumber(ARGV[4])
local c = tonumber(ARGV[5])

local bucket_ms = bucket_secs * 1000
local bucket = math.floor(now_ms / bucket_ms)
local alpha = 1 - 2 ^ (-1 / half_life)
local keep = 1 - alpha

local st = redis.call('HMGET', KEYS[1], 'b', 'x', 'mu', 'var', 'p')
local b = tonumber(st[1])
local x = tonumber(st[2]) or 0
local mu = tonumber(st[3]) or 0
local var = tonumber(st[4]) or 0
local p = tonumber(st[5]) or 0

if b == nil then
  -- A new (or expired) post: no history, so mu = var = 0 and UCL = c for its first bucket.
  b = bucket
  x = 0
  p = 0
  redis.call('UNLINK', KEYS[2])
elseif bucket > b then
  -- Fold the finished bucket, capped at its own UCL so an attack can lift the
  -- baseline by at most (UCL - mu) per bucket, never by its full size.
  local ucl = mu + k * math.sqrt(var) + c
  local d = math.min(x, ucl) - mu
  mu = mu + alpha * d
  var = keep * (var + alpha * d * d)
  -- Idle buckets (0 arrivals) in closed form instead of a loop: n zero folds give
  -- mu_n = r*mu and var_n = r*var + mu^2 * r * (1 - r), with r = keep^n.
  local idle = bucket - b - 1
  if idle > 0 then
    local r = keep ^ idle
    var = r * var + mu * mu * r * (1 - r)
    mu = r * mu
  end
  -- The finished bucket is the previous one only if no idle bucket came in between.
  if idle > 0 then
    p = 0
  else
    p = x
  end
  b = bucket
  x = 0
  redis.call('UNLINK', KEYS[2])
end
-- bucket < b (a writer whose clock lags another's) counts into the current bucket:
-- the state never moves backwards.

local counted = 0
if redis.call('HINCRBY', KEYS[2], ARGV[6], 1) == 1 then
  counted = 1
  x = x + 1
end
-- Elapsed fraction of bucket b, in [0, 1); a lagging clock gives f < 0, taken as 0 (the
-- rating is judged as if at the start of bucket b: p counts in full, the strictest choice).
local f = (now_ms - b * bucket_ms) / bucket_ms
if f < 0 then
  f = 0
end
local x_est = x + p * (1 - f)
local ucl = mu + k * math.sqrt(var) + c
local w = 1000
if x_est > ucl then
  w = math.floor(1000 * ucl / x_est + 0.5)
end

-- %.17g round-trips a double exactly, so the stored state loses nothing between calls.
redis.call('HSET', KEYS[1], 'b', string.format('%.0f', b), 'x', string.format('%.0f', x),
  'mu', string.format('%.17g', mu), 'var', string.format('%.17g', var),
  'p', string.format('%.0f', p))
-- After 32 half-lives mu has decayed by 2^-32 and sqrt(var) by at least 2^-16 of
-- sqrt(var + mu^2): the state is as good as a fresh one, so Redis may forget it.
local ttl = math.ceil(bucket_secs * half_life * 32)
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
return {w, counted, b}
