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

--- Run a command; true when it exited 0, under every Lua version.
function shell.succeeds(command)
  local a, _, c = os.execute(command)
  if type(a) == "number" then return a == 0 end -- 5.1, LuaJIT without 5.2 compat
  return a == true and (c == nil or c == 0)
end

--- Sleep (fractions allowed) without the C core, for helpers that must not need it.
function shell.sleep(seconds)
  shell.succeeds("sleep " .. seconds)
end

--- A file's whole content, or nil when it cannot be read.
function shell.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

--- Write a file (chmod to `mode` when given) and return its path.
function shell.write(path, content, mode)
  local f = assert(io.open(path, "wb"))
  f:write(content)
  f:close()
  if mode then
    assert(os.execute("chmod " .. mode .. " " .. shell.quote(path)))
  end
  return path
end

--- A fresh temporary directory, $TMPDIR/PREFIX.XXXXXX (PREFIX: "dps-spec").
function shell.tmpdir(prefix)
  local out = shell.run("mktemp -d " .. shell.quote((os.getenv("TMPDIR") or "/tmp") .. "/"
    .. (prefix or "dps-spec") .. ".XXXXXX"))
  local dir = out:gsub("%s+$", "")
  assert(dir ~= "", "mktemp -d failed")
  return dir
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

--- The interpreter to run Lua child processes with: the one this busted run
-- uses (`--lua=X`, a plain interpreter or the ASan wrapper, which the
-- current cpath's build needs), except that under the valgrind wrapper the
-- children run on the plain interpreter: valgrind traces no children.
function shell.interpreter()
  for _, a in ipairs(arg or {}) do
    local lua = type(a) == "string" and a:match("^%-%-lua=(.+)$")
    if lua then
      if lua:find("build/valgrind/", 1, true) then return lua:match("([^/]+)$") end
      if lua:find("/", 1, true) and lua:sub(1, 1) ~= "/" then
        lua = shell.run("pwd"):gsub("%s+$", "") .. "/" .. lua
      end
      return lua
    end
  end
  local a = arg and arg[-1]
  if type(a) == "string" and a:match("lua") then return a end
  if rawget(_G, "jit") then return "luajit" end
  return "lua" .. _VERSION:match("%d+%.%d+")
end

--- The interpreter and C path for child processes that must run without
-- sanitizers (under faketime, whose preload the ASan wrapper's loader
-- drops; or timed, like the kill -9 spec): the plain interpreter of this
-- run's Lua version with its plain build of dps.core.
-- @treturn string interpreter
-- @treturn string value for LUA_CPATH
function shell.plain()
  local lua = shell.interpreter()
  if lua:find("build/asan/", 1, true) then
    return "lua5.4", "./build/5.4/?.so;" .. package.cpath:gsub("[^;]*build/asan/[^;]*;?", "")
  end
  return lua, package.cpath
end

-- The ELF header's class, byte order and machine of a program: "32 le 8".
local MACHINES = { [3] = "i386", [8] = "mips", [20] = "powerpc", [21] = "powerpc64", [40] = "arm",
  [62] = "x86_64", [183] = "aarch64", [243] = "riscv" }
local function elf_kind(header)
  if not header or #header < 20 or header:sub(1, 4) ~= "\127ELF" then return nil end
  local little = header:byte(6) == 1
  local lo, hi = header:byte(19), header:byte(20)
  local machine = little and lo + 256 * hi or hi + 256 * lo
  return string.format("%s-bit %s-endian %s", header:byte(5) == 2 and "64" or "32",
    little and "little" or "big", MACHINES[machine] or ("machine " .. machine))
end

--- Whether this interpreter runs under CPU emulation (qemu-user, as `make
-- cross-test` runs it): its own program (/proc/self/exe, which qemu shows
-- as the emulated program) is not of the machine a child process of the
-- host runs on. Such a process makes its system calls through the
-- emulator, so preloaded libraries of the host (faketime) cannot reach it.
-- @treturn string|nil what runs on what ("32-bit little-endian mips on
--   64-bit little-endian x86_64"), nil when native or where /proc is missing
function shell.emulated()
  if shell._emulated == nil then
    local f = io.open("/proc/self/exe", "rb")
    local ours = f and elf_kind(f:read(20))
    if f then f:close() end
    local out = shell.run("od -An -v -tu1 -N20 /proc/self/exe 2>/dev/null")
    local bytes = {}
    for b in (out or ""):gmatch("%d+") do bytes[#bytes + 1] = string.char(tonumber(b)) end
    local host = elf_kind(table.concat(bytes))
    shell._emulated = (ours and host and ours ~= host) and (ours .. " on " .. host) or false
  end
  return shell._emulated or nil
end

return shell
