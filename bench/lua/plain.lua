-- One fixed GET request (wrk builds it once, no Lua per request); report.lua prints the numbers.
bench_threads = {}
function setup(thread)
  table.insert(bench_threads, thread)
end
