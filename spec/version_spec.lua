-- One version everywhere: the C core (src/dps_core.h, the one place it is
-- written), dps._VERSION, `dps --version`, the release rockspec and the scm
-- one, CHANGELOG.md, the README's install lines and the OpenWrt package.
-- `make version-check` (and so `make dist` and `make rock`) runs this file.
local core = require "dps.core"
local dps = require "dps"
local shell = require "spec.support.shell"

local q = shell.quote

local function read(path)
  return assert(shell.read(path), "cannot read " .. path)
end

-- The version as src/dps_core.h defines it.
local VERSION = read("src/dps_core.h"):match('#define DPS_CORE_VERSION "([^"]+)"')

-- A rockspec's fields, loaded as luarocks does: in an empty environment.
local function rockspec(path)
  local env = {}
  local chunk
  local setfenv = rawget(_G, "setfenv")
  if setfenv then -- Lua 5.1, LuaJIT
    chunk = assert(rawget(_G, "loadstring")(read(path), "=" .. path))
    setfenv(chunk, env)
  else
    chunk = assert(load(read(path), "=" .. path, "t", env))
  end
  chunk()
  return env
end

-- Equal tables, compared deeply; false and the first path that differs.
local function same(a, b, path)
  path = path or ""
  if type(a) ~= "table" or type(b) ~= "table" then
    return a == b, path
  end
  for k, v in pairs(a) do
    local ok, where = same(v, b[k], path .. "." .. tostring(k))
    if not ok then return false, where end
  end
  for k in pairs(b) do
    if a[k] == nil then return false, path .. "." .. tostring(k) end
  end
  return true
end

describe("the version", function()
  it("is written once in src/dps_core.h as MAJOR.MINOR.PATCH", function()
    assert.is_string(VERSION)
    assert.is_truthy(VERSION:match("^%d+%.%d+%.%d+$"), VERSION)
  end)

  it("is dps.core's _VERSION and dps._VERSION", function()
    assert.are.equal(VERSION, core._VERSION)
    assert.are.equal(VERSION, core.version().dps)
    assert.are.equal(VERSION, dps._VERSION)
  end)

  it("is what `dps --version` prints", function()
    local out, ok = shell.run(string.format("LUA_PATH=%s LUA_CPATH=%s %s bin/dps --version 2>&1",
      q(package.path), q(package.cpath), shell.interpreter()))
    assert.is_true(ok, out)
    assert.are.equal("dps (lua-azure-dps) " .. VERSION .. ",", out:match("^(%S+ %S+ %S+,)"), out)
  end)

  it("names the release rockspec, whose version, source and folder follow it", function()
    local path = "lua-azure-dps-" .. VERSION .. "-1.rockspec"
    local spec = rockspec(path)
    assert.are.equal("lua-azure-dps", spec.package)
    assert.are.equal(VERSION .. "-1", spec.version)
    local tarball = "lua-azure-dps-" .. VERSION .. ".tar.gz"
    assert.are.equal(tarball, spec.source.url:match("[^/]+$"), spec.source.url)
    assert.is_truthy(spec.source.url:find("/v" .. VERSION .. "/", 1, true), spec.source.url)
    assert.are.equal("lua-azure-dps-" .. VERSION, spec.source.dir)
  end)

  it("is the only versioned rockspec, and the scm one differs from it only in version and source", function()
    local listing = shell.run("ls *.rockspec")
    local names = {}
    for name in listing:gmatch("%S+") do names[#names + 1] = name end
    table.sort(names)
    assert.are.same({ "lua-azure-dps-" .. VERSION .. "-1.rockspec", "lua-azure-dps-scm-1.rockspec" }, names)
    local release = rockspec(names[1])
    local scm = rockspec(names[2])
    assert.are.equal("scm-1", scm.version)
    release.version, release.source, scm.version, scm.source = nil, nil, nil, nil
    local ok, where = same(release, scm)
    assert(ok, "the rockspecs differ at " .. tostring(where))
  end)

  it("lists in the rockspec every C source of src/ and nothing else, and every Lua module", function()
    local modules = rockspec("lua-azure-dps-" .. VERSION .. "-1.rockspec").build.modules
    local listed = {}
    for _, file in ipairs(modules["dps.core"].sources) do
      assert.is_truthy(shell.read(file), file .. " is in the rockspec but not in src/")
      listed[file] = true
    end
    for file in shell.run("ls src/*.c"):gmatch("%S+") do
      -- luarocks builds the OpenSSL backend; the others are the Makefile's (CRYPTO=)
      local other_backend = file:match("^src/dps_crypto_.*%.c$") and file ~= "src/dps_crypto_openssl.c"
      assert.is_true(listed[file] == true or other_backend, file .. " is in src/ but not in the rockspec")
      assert.is_true(not (listed[file] and other_backend), file .. " is a second crypto backend in the rockspec")
    end
    local files = shell.run("cd lua && find . -name '*.lua' | sort")
    for file in files:gmatch("%S+") do
      local name = file:gsub("^%./", ""):gsub("%.lua$", ""):gsub("/", ".")
      assert.are.equal("lua/" .. file:gsub("^%./", ""), modules[name], "module " .. name .. " is not in the rockspec")
    end
  end)

  it("heads CHANGELOG.md", function()
    local first = read("CHANGELOG.md"):match("\n## %[([^%]]+)%]")
    assert.are.equal(VERSION, first)
  end)

  it("is the one the README and the OpenWrt package name", function()
    for v in read("README.md"):gmatch("lua%-azure%-dps%-(%d+%.%d+%.%d+)") do
      assert.are.equal(VERSION, v, "README.md names version " .. v)
    end
    local makefile = read("openwrt/lua-azure-dps/Makefile")
    assert.are.equal(VERSION, makefile:match("\nPKG_VERSION:=(%S+)"))
  end)
end)
