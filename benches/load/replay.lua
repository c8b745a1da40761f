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
-- With RATE_PER_SEC, each connection waits between requests so that all of
-- them together send about that many a second (wrk's delay(); wrk2 is not in
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
local pause_ms = 0

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
    local conns = tonumber(os.getenv("WRK_CONNECTIONS") or "1")
    if rate > 0 then
        -- Each connection sends one request per pause: conns/rate seconds.
        pause_ms = math.floor(conns * 1000 / rate)
    end
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
    function delay()
        return pause_ms
    end
end

local function code_of(body)
    -- The dialects' error codes: Alibaba/Oracle JSON "Code", EC2 XML <Code>,
    -- Huawei "error_code", Marketplace "errorCode", native {"error":{"code"}},
    -- Nova's faults ("itemNotFound": {"code": 404} -> the fault's name).
    return body:match('"Code"%s*:%s*"([^"]+)"')
        or body:match("<Code>([^<]+)</Code>")
        or body:match('"error_code"%s*:%s*"([^"]+)"')
        or body:match('"errorCode"%s*:%s*"([^"]+)"')
        or body:match('"code"%s*:%s*"([^"]+)"')
        or body:match('^{%s*"([%w_]+)"%s*:%s*{')
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
