-- Writes recomputed stats for a chunk of posts and raises the partition fences, atomically.
-- The caller holds the relay's stamp lock, so no sequence above `last` exists yet: raising
-- a fence to `last` makes the consumer skip events already counted in the recomputed totals.
--
-- KEYS[1]: the fence hash; KEYS[2..]: the stats hashes of the posts in this chunk.
-- ARGV[1]: '1' for a dry run (compare only); ARGV[2]: number of fences; then partition and
-- last sequence pairs; then 10 target values per post, in KEYS order.
-- Returns the number of posts whose stored stats differed from their target.
local FIELDS = {'c', 's', 'h0', 'h1', 'h2', 'h3', 'h4', 'h5', 'w', 'ws'}
local dry = ARGV[1] == '1'
local nfences = tonumber(ARGV[2])
local base = 3 + nfences * 2
local drift = 0
for k = 2, #KEYS do
  local at = base + (k - 2) * 10
  local current = redis.call('HMGET', KEYS[k], unpack(FIELDS))
  local same, zero = true, true
  for f = 1, 10 do
    local want = ARGV[at + f - 1]
    if (current[f] or '0') ~= want then
      same = false
    end
    if want ~= '0' then
      zero = false
    end
  end
  if not same then
    drift = drift + 1
    if not dry then
      if zero then
        redis.call('DEL', KEYS[k])
      else
        local args = {}
        for f = 1, 10 do
          args[#args + 1] = FIELDS[f]
          args[#args + 1] = ARGV[at + f - 1]
        end
        redis.call('HSET', KEYS[k], unpack(args))
      end
    end
  end
end
if not dry then
  for n = 0, nfences - 1 do
    local part = ARGV[3 + n * 2]
    local last = tonumber(ARGV[4 + n * 2])
    local stored = tonumber(redis.call('HGET', KEYS[1], part) or '0')
    if last > stored then
      redis.call('HSET', KEYS[1], part, ARGV[4 + n * 2])
    end
  end
end
return drift
