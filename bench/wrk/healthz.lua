-- wrk on GET /healthz: static request; only the end-of-run report is scripted.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local report = dofile(dir .. "report.lua")
done = report.done
