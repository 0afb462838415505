-- The one version and the release files that carry it, checked in one place:
-- the C core (src/dps_core.h, where it is written), dps._VERSION,
-- `dps --version`, the release rockspec and the scm one, CHANGELOG.md, the
-- install lines of README.md and docs/, and the OpenWrt package.
--
-- `make version-check` (and so `make dist`, `make rock`, `make release`)
-- runs every check with Lua 5.4 and lua-cjson alone:
--   lua5.4 -e 'os.exit(require("tools.version_check").run("lua5.4"))'
-- spec/version_spec.lua runs each one as a spec.
-- Each check raises with a message when its rule is broken.
local shell = require "spec.support.shell"

local M = {}

local function read(path)
  return assert(shell.read(path), "cannot read " .. path)
end

--- The version as src/dps_core.h defines it.
function M.version()
  return read("src/dps_core.h"):match('#define DPS_CORE_VERSION "([^"]+)"')
end

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

local function equal(want, got, what)
  if want ~= got then
    error(string.format("%s: expected %s, got %s", what, tostring(want), tostring(got)), 0)
  end
end

-- The files under docs/ (none before the docs exist).
local function docs()
  local files = {}
  for f in (shell.run("ls docs/*.md 2>/dev/null") or ""):gmatch("%S+") do files[#files + 1] = f end
  return files
end

--- The checks, in order: { name, function(interpreter) }.
M.checks = {
  { "is written once in src/dps_core.h as MAJOR.MINOR.PATCH", function()
    local v = M.version()
    assert(v and v:match("^%d+%.%d+%.%d+$"), "no MAJOR.MINOR.PATCH DPS_CORE_VERSION in src/dps_core.h")
  end },

  { "is dps.core's _VERSION and dps._VERSION", function()
    local core, dps = require "dps.core", require "dps"
    equal(M.version(), core._VERSION, "dps.core._VERSION")
    equal(M.version(), core.version().dps, "dps.core.version().dps")
    equal(M.version(), dps._VERSION, "dps._VERSION")
  end },

  { "is what `dps --version` prints", function(interpreter)
    local out, ok = shell.run(string.format("LUA_PATH=%s LUA_CPATH=%s %s bin/dps --version 2>&1",
      shell.quote(package.path), shell.quote(package.cpath), interpreter))
    assert(ok, out)
    equal("dps (lua-azure-dps) " .. M.version() .. ",", out:match("^(%S+ %S+ %S+,)"), "dps --version")
  end },

  { "names the release rockspec, whose version, source and folder follow it", function()
    local v = M.version()
    local spec = rockspec("lua-azure-dps-" .. v .. "-1.rockspec")
    equal("lua-azure-dps", spec.package, "package")
    equal(v .. "-1", spec.version, "version")
    equal("lua-azure-dps-" .. v .. ".tar.gz", spec.source.url:match("[^/]+$"), "source.url's file")
    assert(spec.source.url:find("/v" .. v .. "/", 1, true), "source.url names no /v" .. v .. "/: " .. spec.source.url)
    equal("lua-azure-dps-" .. v, spec.source.dir, "source.dir")
  end },

  { "is the only versioned rockspec, and the scm one differs from it only in version and source", function()
    local names = {}
    for name in shell.run("ls *.rockspec"):gmatch("%S+") do names[#names + 1] = name end
    table.sort(names)
    equal("lua-azure-dps-" .. M.version() .. "-1.rockspec lua-azure-dps-scm-1.rockspec",
      table.concat(names, " "), "rockspecs")
    local release, scm = rockspec(names[1]), rockspec(names[2])
    equal("scm-1", scm.version, "the scm rockspec's version")
    release.version, release.source, scm.version, scm.source = nil, nil, nil, nil
    local ok, where = same(release, scm)
    assert(ok, "the rockspecs differ at " .. tostring(where))
  end },

  { "lists in the rockspec every C source of src/ and nothing else, and every Lua module", function()
    local modules = rockspec("lua-azure-dps-" .. M.version() .. "-1.rockspec").build.modules
    local listed = {}
    for _, file in ipairs(modules["dps.core"].sources) do
      assert(shell.read(file), file .. " is in the rockspec but not in src/")
      listed[file] = true
    end
    for file in shell.run("ls src/*.c"):gmatch("%S+") do
      -- luarocks builds the OpenSSL backend; the others are the Makefile's (CRYPTO=)
      local other_backend = file:match("^src/dps_crypto_.*%.c$") and file ~= "src/dps_crypto_openssl.c"
      assert(listed[file] or other_backend, file .. " is in src/ but not in the rockspec")
      assert(not (listed[file] and other_backend), file .. " is a second crypto backend in the rockspec")
    end
    for file in shell.run("cd lua && find . -name '*.lua' | sort"):gmatch("%S+") do
      file = file:gsub("^%./", "")
      local name = file:gsub("%.lua$", ""):gsub("/", ".")
      equal("lua/" .. file, modules[name], "the rockspec's module " .. name)
    end
  end },

  { "heads CHANGELOG.md", function()
    equal(M.version(), read("CHANGELOG.md"):match("\n## %[([^%]]+)%]"), "CHANGELOG.md's first version")
  end },

  { "CHANGELOG.md's first release adds, changing nothing before it", function()
    local changelog = read("CHANGELOG.md")
    local versions = {}
    for v in changelog:gmatch("\n## %[([^%]]+)%]") do versions[#versions + 1] = v end
    local oldest = changelog:match("\n## %[" .. versions[#versions]:gsub("%p", "%%%0") .. "%][^\n]*\n(.*)$")
    for section in oldest:gmatch("\n### ([^\n]+)") do
      equal("Added", section, "a section of the first release " .. versions[#versions])
    end
  end },

  { "is the one README.md, docs/ and the OpenWrt package name", function()
    local v = M.version()
    local files = docs()
    table.insert(files, 1, "README.md")
    for _, path in ipairs(files) do
      for named in read(path):gmatch("lua%-azure%-dps%-(%d+%.%d+%.%d+)") do
        equal(v, named, path .. " names a version")
      end
    end
    equal(v, read("openwrt/lua-azure-dps/Makefile"):match("\nPKG_VERSION:=(%S+)"),
      "openwrt/lua-azure-dps/Makefile's PKG_VERSION")
  end },
}

--- Every check; prints each failure and returns the exit status (0 when all pass).
function M.run(interpreter)
  local failed = 0
  for _, check in ipairs(M.checks) do
    local ok, err = pcall(check[2], interpreter)
    if not ok then
      failed = failed + 1
      io.stderr:write("version-check: the version " .. check[1] .. ": " .. tostring(err) .. "\n")
    end
  end
  if failed == 0 then print("version-check: " .. M.version() .. ", " .. #M.checks .. " checks passed") end
  return failed == 0 and 0 or 1
end

return M
