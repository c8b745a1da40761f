-- wrk script: sends pre-built raw HTTP requests, each exactly once, and counts
-- every answer by status and the dialect's error code.
--
--   wrk -t T -c C -d D -s replay.lua URL -- REQUESTS_FILE [RATE_PER_SEC]
--
-- REQUESTS_FILE holds one request a line, "\r\n" written as "|" (signed
-- requests are single-use: Alibaba's nonces, Huawei's signatures; SigV4 has a
-- time window), made by benches/load/requests.py. Thread n of T takes lines
-- n, n+T, ...: no request goes out twice. A thread that runs out starts over
-- and says so ("wrapped"): the run is then invalid, not quietly repeated.
-- With RATE_PER_SEC, requests are sent on a schedule of that many a second
-- (wrk's delay() waits for each one's slot; wrk2, which does this, is not in
-- Debian). At the end one line "RESULT {json}" on stdout.

local threads = {}
local counter = 0

function setup(thread)
    -- Runs in the main thread, once per wrk thread, before init().
    thread:set("id", counter)
    table.insert(threads, thread)
    counter = counter + 1
end

local reqs = {}
local n = 0
local i = 0
counts = {}
wrapped = 0
local slot_ms = 0

function init(args)
    local path = args[1]
    local nthreads = tonumber(os.getenv("WRK_THREADS") or "1")
    local line_no = 0
    for line in io.lines(path) do
        if line_no % nthreads == id then
            n = n + 1
            reqs[n] = line:gsub("|", "\r\n")
        end
        line_no = line_no + 1
    end
    if n == 0 then
        error("no requests for thread " .. id .. " in " .. path)
    end
    local rate = tonumber(args[2] or "0")
    if rate > 0 then
        -- This thread's share of the rate: its k-th request is due k slots
        -- after its first, whatever the answers' latency (an open schedule,
        -- as wrk2 keeps; a connection still busy sends its slot late).
        slot_ms = nthreads * 1000 / rate
    end
end

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } replay_timespec;
int clock_gettime(int clock, replay_timespec *ts);
]]
local ts = ffi.new("replay_timespec")
local function now_ms()
    ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
    return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

function request()
    i = i + 1
    if i > n then
        i = 1
        wrapped = wrapped + 1
    end
    return reqs[i]
end

if os.getenv("WRK_PACED") == "1" then
    local first, sent = nil, 0
    function delay()
        local now = now_ms()
        first = first or now
        sent = sent + 1
        local wait = first + sent * slot_ms - now
        return wait > 0 and math.floor(wait) or 0
    end
end

local function code_of(body)
    -- The dialects' error codes: Alibaba/Oracle JSON "Code", EC2 XML <Code>,
    -- Huawei "error_code", Marketplace "errorCode", native {"error":{"code"}},
    -- Nova's faults ("itemNotFound": {"code": 404} -> the fault's name),
    -- Oracle's {"message"} (its first words).
    return body:match('"Code"%s*:%s*"([^"]+)"')
        or body:match("<Code>([^<]+)</Code>")
        or body:match('"error_code"%s*:%s*"([^"]+)"')
        or body:match('"errorCode"%s*:%s*"([^"]+)"')
        or body:match('"code"%s*:%s*"([^"]+)"')
        or body:match('^{%s*"([%w_]+)"%s*:%s*{')
        -- Oracle's errors carry a message only: its first words.
        or body:match('"message"%s*:%s*"([^".;:]+)')
        or "-"
end

function response(status, headers, body)
    local key
    if status < 300 then
        key = tostring(status)
    else
        key = status .. " " .. code_of(body or "")
    end
    counts[key] = (counts[key] or 0) + 1
end

function done(summary, latency, requests)
    local all = {}
    local wraps = 0
    for _, thread in ipairs(threads) do
        local c = thread:get("counts")
        for k, v in pairs(c) do
            all[k] = (all[k] or 0) + v
        end
        wraps = wraps + thread:get("wrapped")
    end
    local parts = {}
    for k, v in pairs(all) do
        table.insert(parts, string.format('"%s": %d', k, v))
    end
    local e = summary.errors
    io.write(string.format(
        'RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, '
            .. '"max_us": %d, "connect_errors": %d, "read_errors": %d, "write_errors": %d, '
            .. '"timeouts": %d, "wrapped": %d, "statuses": {%s}}\n',
        summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
        latency:percentile(99), latency.max, e.connect, e.read, e.write, e.timeout, wraps,
        table.concat(parts, ", ")))
end
