-- wrk script for the Keel serving benchmark.
-- POSTs the JSON file named by $BODY_FILE on every request. wrk's -d bounds the run in time;
-- this script bounds it in count: each thread stops after $MAX_REQUESTS responses.
-- At the end it prints one line "RESULT {json}" that bench.py parses.

local handle = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = handle:read("*a")
handle:close()
wrk.headers["Content-Type"] = "application/json"
local token = os.getenv("AUTH_TOKEN") or ""
if token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end

local limit = tonumber(os.getenv("MAX_REQUESTS") or "500000")
local seen = 0
local not_2xx = 0

function response(status, headers, body)
  seen = seen + 1
  if status < 200 or status > 299 then
    not_2xx = not_2xx + 1
  end
  if seen >= limit then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local fields = {
    string.format('"requests":%d', summary.requests),
    string.format('"duration_us":%d', summary.duration),
    string.format('"not_2xx":%d', not_2xx),
    string.format('"err_connect":%d', e.connect),
    string.format('"err_read":%d', e.read),
    string.format('"err_write":%d', e.write),
    string.format('"err_status":%d', e.status),
    string.format('"err_timeout":%d', e.timeout),
    string.format('"p50_us":%d', latency:percentile(50)),
    string.format('"p90_us":%d', latency:percentile(90)),
    string.format('"p99_us":%d', latency:percentile(99)),
    string.format('"max_us":%d', latency.max),
    string.format('"mean_us":%.1f', latency.mean),
  }
  io.write("RESULT {" .. table.concat(fields, ",") .. "}\n")
end
