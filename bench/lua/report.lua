-- Appended to every wrk script by bench/wrk.py: prints one JSON line the harness parses.
-- Threads are collected in setup() so done() can read each thread's counters.
bench_threads = bench_threads or {}

local function thread_total(name)
  local total = 0
  for _, thread in ipairs(bench_threads) do
    total = total + (tonumber(thread:get(name)) or 0)
  end
  return total
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f},'
      .. '"generated":%d,"wrapped":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean,
    thread_total("generated"), thread_total("wrapped")))
end
