-- wrk on the signed-in first page, GET /api/v1/posts?limit=20, each request as another
-- user: the bearer tokens of a file (loadgen --tokens-out) are used in turn, each thread
-- starting elsewhere. Requests are formatted once per token in init().
-- Arguments after `--`: TOKENS_FILE [LIMIT]
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local report = dofile(dir .. "report.lua")
setup = report.setup
done = report.done

local reqs, i = {}, 0

function init(args)
   local tokens = report.lines(args[1])
   local path = "/api/v1/posts?limit=" .. (args[2] or "20")
   for n, t in ipairs(tokens) do
      reqs[n] = wrk.format("GET", path, { ["Authorization"] = "Bearer " .. t })
   end
   i = ((thread_no or 1) * 7919) % #reqs
end

function request()
   i = i % #reqs + 1
   return reqs[i]
end
