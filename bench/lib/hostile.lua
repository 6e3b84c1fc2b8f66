-- wrk script for bench/soak: each connection cycles through the hostile paths of mixed.http.wasm.
local paths = { "/spin", "/trap", "/memhog" }
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1])
end
