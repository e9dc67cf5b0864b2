-- Writes stats rebuilt from PostgreSQL for a chunk of posts, and sets partition fences,
-- atomically. The caller holds the relay's stamp lock: no event exists beyond the snapshot
-- the targets come from, so each target is the truth at its version, every event at or
-- below that version is skipped by apply, and every later one follows on.
--
-- KEYS[1..n]: the fences to set (n = ARGV[2]); KEYS[n+1..]: the posts' stats hashes. In a
-- Redis Cluster the caller sends one partition per call: its keys share the partition's tag.
-- ARGV[1]: '1' for a dry run (compare only); ARGV[2]: n; then the n sequences, one per fence
-- (the fence is set to exactly that); then per post, in KEYS order, its 10 stats values and
-- its version.
-- Returns {the number of posts whose stored stats or version differed from their target,
-- 1 if anything was written else 0}: the caller then raises the repair epoch, which tells
-- every instance to drop its cached stats.
local FIELDS = {'c', 's', 'h0', 'h1', 'h2', 'h3', 'h4', 'h5', 'w', 'ws', 'v'}
local dry = ARGV[1] == '1'
local nfences = tonumber(ARGV[2])
local base = 3 + nfences
local drift = 0
for k = nfences + 1, #KEYS do
  local at = base + (k - nfences - 1) * 11
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
  for n = 1, nfences do
    local seq = ARGV[2 + n]
    if redis.call('GET', KEYS[n]) ~= seq then
      redis.call('SET', KEYS[n], seq)
      changed = true
    end
  end
end
if dry then
  changed = false
end
return {drift, changed and 1 or 0}
