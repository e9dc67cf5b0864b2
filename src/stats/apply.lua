-- Applies a batch of rating events to the per-post stats hashes, atomically, fenced twice:
-- per partition by the relay sequence (the fence is the highest sequence applied; sequences
-- are gap-free, so an event at or below it is a duplicate), and per post by its version
-- (field `v` of its hash: the number of its events counted; versions are gap-free too, so a
-- post whose first event here is not v + 1 has lost events and is repaired from PostgreSQL).
--
-- KEYS: the fence of each partition in the batch (a string: the highest applied sequence)
-- and the stats hashes of the posts in the batch, in any order. In a Redis Cluster the
-- caller sends one partition per call: its keys share the partition's hash tag.
-- ARGV[1]: number of segments; then per segment: partition, the index of its fence in KEYS,
-- first seq, last seq, number of posts, and per post: the index of its key in KEYS, its
-- number of events, its first and last version (first 0: events stamped before versions
-- existed) and its 10 summed deltas. A segment is a run of consecutive sequences of one
-- partition.
--
-- Per segment: all at or below the fence -> duplicate; starts right after the fence ->
-- applied post by post; starts beyond it, or the partition has no fence and this is not its
-- first sequence -> events are missing that nothing will deliver again (a store rolled back
-- or wiped) -> skipped, and the partition is reported for repair; overlaps the fence ->
-- nothing is written and {-1, segment, fence} tells the caller to trim it and call again.
-- Per post of an applied segment: last version <= v -> already counted (by a repair);
-- first version = v + 1 -> applied; first version <= v < last -> nothing is written and
-- {-2, key index, v, ...} tells the caller to drop the events at or below v and call again;
-- otherwise (or first version 0) -> skipped, and the post is reported for repair.
--
-- Returns {0, applied, duplicates, gaps, unfollowed, n, (partition, last seq) x n,
-- m, (key index, first version, last version) x m}: the partitions and posts to repair.
local FIELDS = {'c', 's', 'h0', 'h1', 'h2', 'h3', 'h4', 'h5', 'w', 'ws'}
local PER_POST = 14
local nseg = tonumber(ARGV[1])
local fences = {}
local fence_keys = {}
local plan = {}
local broken_parts = {}
local i = 2
for s = 1, nseg do
  local part = ARGV[i]
  fence_keys[part] = KEYS[tonumber(ARGV[i + 1])]
  local first = tonumber(ARGV[i + 2])
  local last = tonumber(ARGV[i + 3])
  local nposts = tonumber(ARGV[i + 4])
  local fence = fences[part]
  if fence == nil then
    local stored = redis.call('GET', fence_keys[part])
    fence = stored and tonumber(stored) or false
  end
  local action
  if fence == false and first == 1 then
    -- A partition's very first events: nothing can be missing before them.
    action = 1
    fence = last
  elseif fence == false or first > fence + 1 then
    action = 2
    broken_parts[#broken_parts + 1] = {part, last}
  elseif last <= fence then
    action = 0
  elseif first == fence + 1 then
    action = 1
    fence = last
  else
    return {-1, s, fence}
  end
  fences[part] = fence
  plan[s] = {action, i + 5, nposts, last - first + 1}
  i = i + 5 + nposts * PER_POST
end

-- The version each post of an applied segment has reached, and what to do with it.
local versions = {}
local overlaps = {}
for s = 1, nseg do
  local action, start, nposts = unpack(plan[s])
  if action == 1 then
    for p = 0, nposts - 1 do
      local base = start + p * PER_POST
      local key = KEYS[tonumber(ARGV[base])]
      if versions[key] == nil then
        versions[key] = tonumber(redis.call('HGET', key, 'v') or '0')
      end
      local v = versions[key]
      local vmin = tonumber(ARGV[base + 2])
      local vmax = tonumber(ARGV[base + 3])
      if vmin > 0 and vmin <= v and vmax > v then
        overlaps[#overlaps + 1] = ARGV[base]
        overlaps[#overlaps + 1] = v
      end
    end
  end
end
if #overlaps > 0 then
  return {-2, unpack(overlaps)}
end

local applied, duplicates, gaps, unfollowed = 0, 0, 0, 0
local broken_posts = {}
for s = 1, nseg do
  local action, start, nposts, events = unpack(plan[s])
  if action == 1 then
    for p = 0, nposts - 1 do
      local base = start + p * PER_POST
      local key = KEYS[tonumber(ARGV[base])]
      local n = tonumber(ARGV[base + 1])
      local vmin = tonumber(ARGV[base + 2])
      local vmax = tonumber(ARGV[base + 3])
      local v = versions[key]
      if vmin > 0 and vmax <= v then
        duplicates = duplicates + n
      elseif vmin == v + 1 then
        applied = applied + n
        for f = 1, 10 do
          local delta = ARGV[base + 3 + f]
          if delta ~= '0' then
            redis.call('HINCRBY', key, FIELDS[f], delta)
          end
        end
        redis.call('HSET', key, 'v', vmax)
        versions[key] = vmax
      else
        unfollowed = unfollowed + n
        broken_posts[#broken_posts + 1] = {ARGV[base], vmin, vmax}
      end
    end
  elseif action == 0 then
    duplicates = duplicates + events
  else
    gaps = gaps + events
  end
end
for part, fence in pairs(fences) do
  if fence ~= false then
    redis.call('SET', fence_keys[part], fence)
  end
end
local out = {0, applied, duplicates, gaps, unfollowed, #broken_parts}
for _, b in ipairs(broken_parts) do
  out[#out + 1] = tonumber(b[1])
  out[#out + 1] = b[2]
end
out[#out + 1] = #broken_posts
for _, b in ipairs(broken_posts) do
  out[#out + 1] = tonumber(b[1])
  out[#out + 1] = b[2]
  out[#out + 1] = b[3]
end
return out
