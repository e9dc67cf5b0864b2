-- Shared by the bench wrk scripts: prints one machine-readable line at the end of a run,
-- which scripts/bench parses (req/s, latency percentiles in ms, non-2xx and socket errors).
local M = {}

function M.done(summary, latency, requests)
   local secs = summary.duration / 1e6
   local e = summary.errors
   io.write(string.format(
      'WRK_JSON {"requests":%d,"secs":%.3f,"rps":%.1f,"mean_ms":%.3f,"p50_ms":%.3f,' ..
      '"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,"non_2xx":%d,"socket_errors":%d}\n',
      summary.requests, secs, summary.requests / secs, latency.mean / 1000,
      latency:percentile(50) / 1000, latency:percentile(90) / 1000,
      latency:percentile(99) / 1000, latency.max / 1000, e.status,
      e.connect + e.read + e.write + e.timeout))
end

-- Non-empty lines of a file.
function M.lines(path)
   local t = {}
   for line in io.lines(path) do
      if #line > 0 then t[#t + 1] = line end
   end
   return t
end

-- Which thread this is (1..n), set from the main state in setup().
local threads = 0
function M.setup(thread)
   threads = threads + 1
   thread:set("thread_no", threads)
end

return M
