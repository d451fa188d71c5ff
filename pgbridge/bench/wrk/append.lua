-- `pgbridge bench --durable-streams`: the append-throughput workload, driven by wrk.
--
--   wrk -t THREADS -c STREAMS -d SECONDS -s append.lua BASE_URL -- PATH_PREFIX STREAMS THREADS BODY
--
-- Every request POSTs BODY (one JSON message, Content-Type application/json) to one
-- of the STREAMS streams PATH_PREFIX0 ... PATH_PREFIX<STREAMS-1>, which exist already.
-- Thread i (of THREADS) owns streams i, i + THREADS, i + 2 * THREADS, ... and takes
-- them in turn; each connection sends its next request once the previous one was
-- answered, so with as many connections as streams about one append per stream is
-- in flight (wrk's Lua cannot tie a stream to a connection, so this is not exact).
-- wrk counts a status of 400 or more as an error ("status"); the benchmark refuses a
-- run with any error. At the end one line for the benchmark to parse:
--   pgbridge-wrk {"requests": ..., "duration_us": ..., "errors": {...}, "latency_us": {...}}

local next_thread = 0

function setup(thread)
  thread:set("thread_index", next_thread)
  next_thread = next_thread + 1
end

function init(args)
  local prefix, streams, threads = args[1], tonumber(args[2]), tonumber(args[3])
  paths = {}
  for stream = thread_index, streams - 1, threads do
    paths[#paths + 1] = prefix .. stream
  end
  turn = 0
  wrk.method = "POST"
  wrk.body = args[4]
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  turn = turn % #paths + 1
  return wrk.format(nil, paths[turn])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'pgbridge-wrk {"requests": %d, "duration_us": %d, "bytes": %d, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
      .. '"latency_us": {"mean": %.1f, "p50": %d, "p90": %d, "p99": %d, "max": %d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
