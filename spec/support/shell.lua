-- Small helpers for specs that run real programs (openssl, curl, nm).
local shell = {}

--- Quote one argument for /bin/sh.
function shell.quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

--- Run a command; returns its standard output and whether it exited 0.
function shell.run(command)
  local p = assert(io.popen(command .. "; echo \"~$?\"", "r"))
  local out = p:read("*a")
  p:close()
  local body, code = out:match("^(.-)~(%d+)%s*$")
  return body, code == "0"
end

--- Write a file and return its path.
function shell.write(path, content, mode)
  local f = assert(io.open(path, "wb"))
  f:write(content)
  f:close()
  if mode then
    assert(os.execute("chmod " .. mode .. " " .. shell.quote(path)))
  end
  return path
end

--- A fresh temporary directory.
function shell.tmpdir()
  local out = shell.run("mktemp -d")
  return (out:gsub("%s+$", ""))
end

--- Where `require(name)` finds a C module (package.searchpath is not in 5.1).
function shell.module_path(name)
  local file = name:gsub("%.", "/")
  for template in package.cpath:gmatch("[^;]+") do
    local path = template:gsub("%?", file)
    local f = io.open(path, "rb")
    if f then
      f:close()
      return path
    end
  end
end

return shell
