-- wrk on rating writes: PUT /api/v1/posts/{id}/rating as many users (the bearer tokens of
-- a file, loadgen --tokens-out), on random posts (loadgen --posts-out), with random scores.
-- Each thread owns its own share of the users and never sends the score it last sent for
-- the same (user, post), so nearly every request changes a rating and writes an event.
-- Arguments after `--`: TOKENS_FILE POSTS_FILE THREADS
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local report = dofile(dir .. "report.lua")
setup = report.setup
done = report.done

local auth, paths, last = {}, {}, {}
local headers = { ["Content-Type"] = "application/json" }
local bodies = {}

function init(args)
   local tokens = report.lines(args[1])
   local posts = report.lines(args[2])
   local threads = tonumber(args[3] or "1")
   local me = thread_no or 1
   for n, t in ipairs(tokens) do
      if n % threads == me % threads then auth[#auth + 1] = "Bearer " .. t end
   end
   for n, id in ipairs(posts) do paths[n] = "/api/v1/posts/" .. id .. "/rating" end
   for s = 0, 5 do bodies[s] = '{"score":' .. s .. '}' end
   math.randomseed(me * 104729 + os.time())
end

function request()
   local u = math.random(#auth)
   local p = math.random(#paths)
   local key = u * 1000003 + p
   local score = math.random(0, 5)
   if last[key] == score then score = (score + 1) % 6 end
   last[key] = score
   headers["Authorization"] = auth[u]
   return wrk.format("PUT", paths[p], headers, bodies[score])
end
