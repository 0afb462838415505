-- `make install` as a distribution packager runs it: into a DESTDIR, with
-- the Lua version, folders, interpreter line and compiler settings chosen on
-- the command line; and the installed command runs from there. The module is
-- the one `make build` made (make -o: never rebuilt here, so suites running
-- side by side do not race on it).
local shell = require "spec.support.shell"
local dps = require "dps"

local q = shell.quote

-- make ARGS in the checkout; the output and whether it succeeded.
local function make(args)
  return shell.run("make --no-print-directory " .. args .. " 2>&1")
end

local function mode(path)
  return (shell.run("stat -c %A " .. q(path)):gsub("%s+$", ""))
end

local LUA_FILES = {}
do
  local out = shell.run("cd lua && find . -name '*.lua' | sort")
  for f in out:gmatch("%S+") do LUA_FILES[#LUA_FILES + 1] = f:gsub("^%./", "") end
end

describe("make install", function()
  local dir

  before_each(function()
    dir = shell.tmpdir("dps-install")
  end)

  after_each(function()
    shell.succeeds("rm -rf " .. q(dir))
  end)

  -- make install into DIR/DEST for LUA_VERSION=V with more make variables.
  local function install(version, extra)
    local dest = dir .. "/dest"
    local core = "build/" .. version .. "/dps/core.so"
    assert(shell.read(core), core .. " is missing: run make build first")
    local out, ok = make(string.format("-o %s install LUA_VERSION=%s PREFIX=/usr DESTDIR=%s %s",
      core, version, q(dest), extra or ""))
    assert(ok, out)
    return dest
  end

  it("puts the module, every Lua file and the command where Lua 5.4 looks, the command naming lua5.4", function()
    local dest = install("5.4")
    assert.are.equal("-rwxr-xr-x", mode(dest .. "/usr/lib/lua/5.4/dps/core.so"))
    for _, f in ipairs(LUA_FILES) do
      assert.are.equal(shell.read("lua/" .. f), shell.read(dest .. "/usr/share/lua/5.4/" .. f), f)
      assert.are.equal("-rw-r--r--", mode(dest .. "/usr/share/lua/5.4/" .. f))
    end
    local bin = dest .. "/usr/bin/dps"
    assert.are.equal("-rwxr-xr-x", mode(bin))
    assert.are.equal("#!/usr/bin/env lua5.4", shell.read(bin):match("^[^\n]*"))
    -- run through its own first line, from the installed folders alone
    local out, ok = shell.run(string.format("cd / && LUA_PATH=%s LUA_CPATH=%s %s --version",
      q(dest .. "/usr/share/lua/5.4/?.lua;/usr/share/lua/5.4/?.lua"),
      q(dest .. "/usr/lib/lua/5.4/?.so;/usr/lib/x86_64-linux-gnu/lua/5.4/?.so;/usr/lib/lua/5.4/?.so"), q(bin)))
    assert.is_true(ok, out)
    assert.are.equal("dps (lua-azure-dps) " .. dps._VERSION .. ", Lua 5.4\n", out)
  end)

  it("install-lib installs the library alone, install-cli the command alone (OpenWrt's two packages)", function()
    local function files(target)
      local dest = dir .. "/" .. target
      local out, ok = make(string.format("-o build/5.4/dps/core.so %s LUA_VERSION=5.4 PREFIX=/usr DESTDIR=%s",
        target, q(dest)))
      assert(ok, out)
      local list = {}
      for f in shell.run("cd " .. q(dest) .. " && find . -type f | sort"):gmatch("%S+") do
        list[#list + 1] = f:gsub("^%./", "")
      end
      return list
    end
    local lib, cli = {}, { "usr/bin/dps" }
    for _, f in ipairs(LUA_FILES) do
      local to = f:match("^dps/cli[/.]") and cli or lib
      to[#to + 1] = "usr/share/lua/5.4/" .. f
    end
    lib[#lib + 1] = "usr/lib/lua/5.4/dps/core.so"
    table.sort(lib)
    table.sort(cli)
    assert.are.same(lib, files("install-lib"))
    assert.are.same(cli, files("install-cli"))
  end)

  it("with LUA_VERSION=jit, installs into the 5.1 folders LuaJIT searches and names luajit", function()
    local dest = install("jit", "PREFIX=/usr/local")
    assert.is_truthy(shell.read(dest .. "/usr/local/lib/lua/5.1/dps/core.so"))
    assert.is_truthy(shell.read(dest .. "/usr/local/share/lua/5.1/dps/cli/help.lua"))
    assert.are.equal("#!/usr/bin/env luajit", shell.read(dest .. "/usr/local/bin/dps"):match("^[^\n]*"))
    local paths = shell.run("luajit -e 'print(package.path) print(package.cpath)'")
    assert.is_truthy(paths:find("/usr/local/share/lua/5.1/?.lua", 1, true), paths)
    assert.is_truthy(paths:find("/usr/local/lib/lua/5.1/?.so", 1, true), paths)
  end)

  it("takes the interpreter line, the folders and LUA_STRIP as OpenWrt needs them", function()
    local dest = install("5.1", "SHEBANG='#!/usr/bin/lua' LUA_CMOD_DIR=/usr/lib/lua LUA_LMOD_DIR=/usr/lib/lua"
      .. " LUA_STRIP=lua5.1")
    assert.are.equal("#!/usr/bin/lua", shell.read(dest .. "/usr/bin/dps"):match("^[^\n]*"))
    local plain, stripped = 0, 0
    for _, f in ipairs(LUA_FILES) do
      local text = assert(shell.read(dest .. "/usr/lib/lua/" .. f), f)
      plain, stripped = plain + #shell.read("lua/" .. f), stripped + #text
      assert.is_nil(("\n" .. text):find("\n%-%-%- "), f .. " still has its LDoc comments")
    end
    assert.is_true(stripped < plain * 0.8, stripped .. " of " .. plain .. " bytes")
    local out, ok = shell.run(string.format("cd / && LUA_PATH=%s LUA_CPATH=%s lua5.1 %s --help",
      q(dest .. "/usr/lib/lua/?.lua;;"), q(dest .. "/usr/lib/lua/?.so;;"), q(dest .. "/usr/bin/dps")))
    assert.is_true(ok, out)
    -- the help text is all there, byte for byte
    assert.are.equal(require("dps.cli.help").USAGE, out)
  end)

  it("compiles with the packager's CC, CFLAGS, CPPFLAGS, LDFLAGS and LUA_INC, -Werror only by default", function()
    local out, ok = make("-n -B core OUT=" .. q(dir) .. " LUA_VERSION=5.1 CC=xcc CFLAGS=-Os CPPFLAGS=-DX=1"
      .. " LDFLAGS=-Wl,-z,now LUA_INC=/opt/lua WERROR=")
    assert(ok, out)
    local cmd = out:match("xcc [^\n]*")
    assert.is_truthy(cmd, out)
    local parts = { "xcc -Os ", " -DX=1 ", " -I/opt/lua ", " -Wl,-z,now ", " -o " .. dir .. "/dps/core.so " }
    for _, part in ipairs(parts) do
      assert.is_truthy(cmd:find(part, 1, true), part .. " not in: " .. cmd)
    end
    assert.is_nil(cmd:find("-Werror", 1, true), cmd)
    out = make("-n -B core OUT=" .. q(dir))
    assert.is_truthy(out:find(" -Werror ", 1, true), out)
  end)

  -- LuaJIT loads Lua 5.1 modules (it searches the same folders) and unwinds
  -- its errors through the C frames between lua_error and the pcall (on
  -- x86_64 and arm64): a frame without unwind tables ends the process in a
  -- PANIC instead of the pcall returning false.
  it("builds the Lua 5.1 module so that LuaJIT can raise through it", function()
    local out, ok = shell.run("luajit -e " .. q([[
      package.cpath = "./build/5.1/?.so;" .. package.cpath
      local core = require "dps.core"
      print(pcall(core.sas_token, 1, "a2V5", 0))
      print(pcall(core.derive_key, "not base64!", "id"))]]) .. " 2>&1")
    assert.is_true(ok, out)
    assert.matches("^false\t[^\n]*resource_uri must be a string", out)
    assert.matches("\nfalse\t[^\n]*group_key", out)
  end)
end)
