--- Lua child processes for specs that need a process of their own: an
-- environment variable the library reads (NO_PROXY, SSLKEYLOGFILE), or a
-- private mount and network namespace (`unshare`).
--
--     local child = require "spec.support.child"
--     local out, ok = child.run(dir, "print(require'dps.core'.version().dps)",
--                               { env = { NO_PROXY = "*" } })
--
-- The child runs on the interpreter of this busted run (shell.interpreter)
-- with this run's package.path and package.cpath, so it loads the same
-- build of dps.core.  Loads on Lua 5.1-5.4 and LuaJIT.
local shell = require "spec.support.shell"

local child = {}

local q = shell.quote

--- Runs the Lua source `code` in a child process; `opts.env` adds
-- environment variables, `opts.prefix` is a command the interpreter runs
-- under (e.g. `unshare -mn sh script`, which gets the interpreter and the
-- script's path as its arguments).  The script is written to dir.  Returns
-- the child's output (stdout and stderr) and whether it exited 0.
function child.run(dir, code, opts)
  opts = opts or {}
  local script = dir .. "/child-" .. tostring(os.time()) .. "-" .. tostring(math.random(1e9)) .. ".lua"
  shell.write(script, table.concat({
    "package.path = " .. string.format("%q", package.path),
    "package.cpath = " .. string.format("%q", package.cpath),
    code,
  }, "\n"))
  local env = {}
  for name, value in pairs(opts.env or {}) do env[#env + 1] = name .. "=" .. q(value) end
  local command = table.concat(env, " ") .. " " .. (opts.prefix and (opts.prefix .. " ") or "")
    .. q(shell.interpreter()) .. " " .. q(script) .. " 2>&1"
  local out, ok = shell.run(command)
  os.remove(script)
  return out, ok
end

return child
