-- Writes stats rebuilt from PostgreSQL for a chunk of posts, and sets partition fences,
-- atomically. The caller holds the relay's stamp lock: no event exists beyond the snapshot
-- the targets come from, so each target is the truth at its version, every event at or
-- below that version is skipped by apply, and every later one follows on.
--
-- KEYS[1]: the fence hash; KEYS[2]: the repair epoch; KEYS[3..]: the posts' stats hashes.
-- ARGV[1]: '1' for a dry run (compare only); ARGV[2]: number of fences; then partition and
-- sequence pairs (the fence is set to exactly that); then per post, in KEYS order, its 10
-- stats values and its version.
-- Returns the number of posts whose stored stats or version differed from their target.
-- A change raises the epoch, which tells every instance to drop its cached stats.
local FIELDS = {'c', 's', 'h0', 'h1', 'h2', 'h3', 'h4', 'h5', 'w', 'ws', 'v'}
local dry = ARGV[1] == '1'
local nfences = tonumber(ARGV[2])
local base = 3 + nfences * 2
local drift = 0
for k = 3, #KEYS do
  local at = base + (k - 3) * 11
  local current = redis.call('HMGET', KEYS[k], unpack(FIELDS))
  local same, zero = true, true
  for f = 1, 11 do
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
        for f = 1, 11 do
          args[#args + 1] = FIELDS[f]
          args[#args + 1] = ARGV[at + f - 1]
        end
        redis.call('HSET', KEYS[k], unpack(args))
      end
    end
  end
end
local changed = drift > 0
if not dry then
  for n = 0, nfences - 1 do
    local part = ARGV[3 + n * 2]
    local seq = ARGV[4 + n * 2]
    if redis.call('HGET', KEYS[1], part) ~= seq then
      redis.call('HSET', KEYS[1], part, seq)
      changed = true
    end
  end
  if changed then
    redis.call('INCR', KEYS[2])
  end
end
return drift
