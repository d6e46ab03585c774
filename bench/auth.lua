-- wrk script for bench/run.py.
--
-- Static headers come from wrk's -H flags. The script arguments (after --) pick the mode:
--   (none)                      static request (wrk builds it once): the same bytes each time
--   --vary-uri                  a new X-Original-URI on every request (forward auth)
--   --vary-path                 a new request path on every request (the sidecar proxy)
--   tokens FILE START STEP      every request the next token of FILE (one per line) as
--                               Authorization: Bearer, from line START+1, STEP lines apart
--   requests FILE START         every request the next pre-built request of FILE, from line
--                               START+1; a line is "METHOD TARGET<TAB>Name: value<TAB>...",
--                               sent as it is (each line once, unless the file runs out)
--   mem FILE REPEAT             a new X-Original-URI on every request, and the token of
--                               line (used / REPEAT) mod n + 1 of FILE: every token REPEAT
--                               times in a row, all tokens in turn (the memory run)
-- done() prints one line "WRKJSON {...}" that run.py parses; "tokens_used" counts the
-- requests that took a token, URI or pre-built request, "token_wraps" how often a file
-- ran out and started again.

local threads = {}
local counter = 0

function setup(thread)
   thread:set("id", counter)
   counter = counter + 1
   table.insert(threads, thread)
end

-- globals, so that done() can read them with thread:get()
used = 0
wrapped = 0

local function read_lines(path)
   local lines, n = {}, 0
   for line in io.lines(path) do
      if #line > 0 then
         n = n + 1
         lines[n] = line
      end
   end
   return lines, n
end

function init(args)
   local mode = args[1]
   if mode == nil then
      return
   end
   if mode == "--vary-uri" then
      request = function()
         used = used + 1
         wrk.headers["X-Original-URI"] = string.format("/api/orders/%d-%d?expand=items", id, used)
         return wrk.format()
      end
   elseif mode == "--vary-path" then
      request = function()
         used = used + 1
         return wrk.format(nil, string.format("/api/orders/%d-%d?expand=items", id, used))
      end
   elseif mode == "tokens" then
      local tokens, n = read_lines(args[2])
      local step = tonumber(args[4] or "1")
      local idx = (tonumber(args[3] or "0") + id) % n
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
   elseif mode == "requests" then
      local raw, n = read_lines(args[2])
      local host = wrk.headers["Host"] or (wrk.host .. ":" .. wrk.port)
      for i = 1, n do
         local head = raw[i]:gsub("\t", "\r\n", 1)
         local line_end = head:find("\r\n", 1, true) or (#head + 1)
         raw[i] = head:sub(1, line_end - 1) .. " HTTP/1.1\r\nHost: " .. host
            .. head:sub(line_end):gsub("\t", "\r\n") .. "\r\n\r\n"
      end
      local idx = tonumber(args[3] or "0") % n
      request = function()
         local r = raw[idx + 1]
         idx = idx + 1
         if idx >= n then
            idx = 0
            wrapped = wrapped + 1
         end
         used = used + 1
         return r
      end
   elseif mode == "mem" then
      local tokens, n = read_lines(args[2])
      local repeat_each = tonumber(args[3] or "1")
      request = function()
         local t = tokens[math.floor(used / repeat_each) % n + 1]
         used = used + 1
         wrk.headers["Authorization"] = "Bearer " .. t
         wrk.headers["X-Original-URI"] = string.format("/api/mem/%d-%d?page=%d", id, used, used)
         return wrk.format()
      end
   else
      error("unknown mode " .. mode)
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
