-- POST a different body on each request: lines of "signature<TAB>body" from a file, each used
-- once. Arguments (after `--`): the file, the number of wrk threads; each thread takes every
-- n-th line. `wrapped` counts a thread going round its share again (then duplicates are sent).
bench_threads = {}
function setup(thread)
  thread:set("id", #bench_threads)
  table.insert(bench_threads, thread)
end

function init(args)
  local threads = tonumber(args[2])
  signatures, bodies = {}, {}
  local line_number = 0
  for line in io.lines(args[1]) do
    if line_number % threads == id then
      local tab = line:find("\t", 1, true)
      signatures[#signatures + 1] = line:sub(1, tab - 1)
      bodies[#bodies + 1] = line:sub(tab + 1)
    end
    line_number = line_number + 1
  end
  index, generated, wrapped = 0, 0, 0
end

function request()
  index = index + 1
  if index > #bodies then
    index, wrapped = 1, wrapped + 1
  end
  generated = generated + 1
  return wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["X-PARTNER-SIGN"] = signatures[index],
  }, bodies[index])
end
