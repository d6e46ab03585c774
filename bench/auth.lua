-- wrk script for bench/run.py.
--
-- Headers (Authorization, X-Original-URI, X-Original-Method) come from wrk's -H flags.
-- Without script arguments the request is static (wrk builds it once): warm cache.
-- With arguments  -- TOKENS_FILE START  every request carries the next token of
-- TOKENS_FILE (one per line), starting at line START+1: cold cache, each token new.
-- With the argument  -- --vary-uri  every request has a new X-Original-URI (warm-uris).
-- done() prints one line "WRKJSON {...}" that run.py parses.

local threads = {}
local counter = 0

function setup(thread)
   thread:set("id", counter)
   counter = counter + 1
   table.insert(threads, thread)
end

local tokens = nil
local n = 0
local idx = 0
local step = 1
-- globals, so that done() can read them with thread:get()
used = 0
wrapped = 0

function init(args)
   if args[1] == nil then
      return
   end
   if args[1] == "--vary-uri" then
      -- warm-uris: the same token, a new X-Original-URI on every request
      request = function()
         used = used + 1
         wrk.headers["X-Original-URI"] = string.format("/api/orders/%d-%d?expand=items", id, used)
         return wrk.format()
      end
      return
   end
   tokens = {}
   for line in io.lines(args[1]) do
      if #line > 0 then
         n = n + 1
         tokens[n] = line
      end
   end
   step = tonumber(args[3] or "1")
   idx = (tonumber(args[2] or "0") + id) % n
   request = function()
      local t = tokens[idx + 1]
      idx = idx + step
      if idx >= n then
         idx = idx % n
         wrapped = wrapped + 1
      end
      used = used + 1
      wrk.headers["Authorization"] = "Bearer " .. t
      return wrk.format()
   end
end

function done(summary, latency, requests)
   local used_total, wrapped_total = 0, 0
   for _, t in ipairs(threads) do
      used_total = used_total + (t:get("used") or 0)
      wrapped_total = wrapped_total + (t:get("wrapped") or 0)
   end
   io.write(string.format(
      'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"errors_connect":%d,"errors_read":%d,"errors_write":%d,' ..
      '"errors_status":%d,"errors_timeout":%d,' ..
      '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d,' ..
      '"tokens_used":%d,"token_wraps":%d}\n',
      summary.requests, summary.duration, summary.bytes,
      summary.errors.connect, summary.errors.read, summary.errors.write,
      summary.errors.status, summary.errors.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.mean, latency.max, used_total, wrapped_total))
end
