-- GET a different path on each request, cycling through the lines of a file.
-- Arguments (after `--`): the file, the number of wrk threads. Each thread takes every n-th line.
bench_threads = {}
function setup(thread)
  thread:set("id", #bench_threads)
  table.insert(bench_threads, thread)
end

function init(args)
  local threads = tonumber(args[2])
  paths = {}
  local line_number = 0
  for line in io.lines(args[1]) do
    if line_number % threads == id then
      paths[#paths + 1] = line
    end
    line_number = line_number + 1
  end
  index, generated, wrapped = 0, 0, 0
end

function request()
  index = index + 1
  if index > #paths then
    index, wrapped = 1, wrapped + 1
  end
  generated = generated + 1
  return wrk.format("GET", paths[index])
end
