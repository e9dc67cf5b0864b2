-- Applies a batch of rating events to the per-post stats hashes, atomically, fenced by the
-- relay sequence: per partition, the fence is the highest sequence applied, and the relay's
-- sequences are gap-free, so an event at or below the fence is a duplicate.
--
-- KEYS[1]: the fence hash (partition -> highest applied sequence).
-- KEYS[2..]: the stats hashes of the posts in the batch.
-- ARGV[1]: number of segments; then per segment: partition, first seq, last seq, number of
-- posts, and per post: the index of its key in KEYS and its 10 summed deltas. A segment is a
-- run of consecutive sequences of one partition.
--
-- Per segment: all at or below the fence -> duplicate; starts right after the fence ->
-- applied; starts beyond it -> a gap (an earlier event is still to come, and the relay will
-- publish this one again after it) -> skipped; overlaps the fence -> nothing is written and
-- {-1, segment, fence} tells the caller to trim the segment and call again.
-- No fence at all (a new or flushed store) accepts the first segment as it comes.
local FIELDS = {'c', 's', 'h0', 'h1', 'h2', 'h3', 'h4', 'h5', 'w', 'ws'}
local nseg = tonumber(ARGV[1])
local fences = {}
local plan = {}
local i = 2
for s = 1, nseg do
  local part = ARGV[i]
  local first = tonumber(ARGV[i + 1])
  local last = tonumber(ARGV[i + 2])
  local nposts = tonumber(ARGV[i + 3])
  local fence = fences[part]
  if fence == nil then
    local stored = redis.call('HGET', KEYS[1], part)
    fence = stored and tonumber(stored) or false
  end
  local action
  if fence == false then
    action = 1
    fence = last
  elseif last <= fence then
    action = 0
  elseif first == fence + 1 then
    action = 1
    fence = last
  elseif first > fence + 1 then
    action = 2
  else
    return {-1, s, fence}
  end
  fences[part] = fence
  plan[s] = {action, i + 4, nposts, last - first + 1}
  i = i + 4 + nposts * 11
end

local applied, duplicates, gaps = 0, 0, 0
for s = 1, nseg do
  local action, start, nposts, events = unpack(plan[s])
  if action == 1 then
    applied = applied + events
    for p = 0, nposts - 1 do
      local base = start + p * 11
      local key = KEYS[tonumber(ARGV[base])]
      for f = 1, 10 do
        local delta = ARGV[base + f]
        if delta ~= '0' then
          redis.call('HINCRBY', key, FIELDS[f], delta)
        end
      end
    end
  elseif action == 0 then
    duplicates = duplicates + events
  else
    gaps = gaps + events
  end
end
for part, fence in pairs(fences) do
  redis.call('HSET', KEYS[1], part, fence)
end
return {0, applied, duplicates, gaps}
