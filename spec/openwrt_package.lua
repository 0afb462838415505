-- The OpenWrt packages as installed by openwrt/test.sh (make openwrt-test):
-- not part of the busted suite (no _spec in the name; it needs the cross
-- tools). In a root file system with the release's own interpreters and
-- cjson (openwrt/feeds.lua) and the library packages on one crypto library
-- and dps installed as opkg would, under qemu-user and with the
-- interpreters' default paths (no LUA_PATH): the installed `dps` provisions
-- against the emulator on the host on Lua 5.1, and the library does on Lua
-- 5.4. The installed init script and its helpers provision as at boot in
-- spec/openwrt_zero_touch_spec.lua, which openwrt/test.sh runs next on the
-- same root file system.
local emulator = require "spec.support.emulator"
local shell = require "spec.support.shell"
local keys = require "spec.support.keys"
local cjson = require("cjson").new()

local q, read = shell.quote, shell.read
local ROOTFS = assert(os.getenv("OPENWRT_ROOTFS"), "run by openwrt/test.sh")
local QEMU = assert(os.getenv("OPENWRT_QEMU"))
local CRYPTO = assert(os.getenv("OPENWRT_CRYPTO"))
local RELEASE = dofile("openwrt/feeds.lua")[assert(os.getenv("OPENWRT_RELEASE"))]
local KEY = keys.KEY

-- The command line that runs LUA (a path inside the root) under qemu, in
-- the folder DIR (for ./?.lua), with the interpreter's default paths.
local function lua_in_root(lua, dir)
  return string.format("cd %s && env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_4 -u LUA_CPATH_5_4 -u LUA_INIT %s -L %s %s",
    q(dir), QEMU, q(ROOTFS), q(ROOTFS .. lua))
end

-- The folder of a path's first absolute template ("./?.so;/usr/lib/lua/?.so;..." -> "/usr/lib/lua").
local function first_dir(path)
  return (";" .. path):match(";(/[^;]*)/%?")
end

describe("the OpenWrt packages under qemu", function()
  local emu, dir

  setup(function()
    dir = shell.tmpdir("dps-openwrt")
    emu = emulator.start({ enrollments = {
      { type = "individual", registration_id = "router-51", symmetric_key = KEY },
      { type = "individual", registration_id = "router-54", symmetric_key = KEY },
    } })
    shell.write(dir .. "/device.key", KEY .. "\n", "600")
  end)

  teardown(function()
    if emu then emu:stop() end
    shell.succeeds("rm -rf " .. q(dir))
  end)

  it("lists the packages' files and conffiles as opkg does: the library's apart from the command's", function()
    local info = ROOTFS .. "/usr/lib/opkg/info/"
    local lib51, lib54 = "lua-azure-dps-" .. CRYPTO, "lua-azure-dps-lua5.4-" .. CRYPTO
    local crypto = CRYPTO == "openssl" and "libopenssl" or "libmbedtls"
    local list = {
      [lib51] = assert(read(info .. lib51 .. ".list")),
      [lib54] = assert(read(info .. lib54 .. ".list")),
      dps = assert(read(info .. "dps.list")),
    }
    assert.is_truthy(list[lib51]:find(first_dir(RELEASE.lua["5.1"].cpath) .. "/dps/core.so\n", 1, true), list[lib51])
    assert.is_truthy(list[lib54]:find(first_dir(RELEASE.lua["5.4"].cpath) .. "/dps/core.so\n", 1, true), list[lib54])
    for name, files in pairs(list) do
      local cli = files:find("/dps/cli.lua\n", 1, true) or files:find("/dps/cli/", 1, true)
        or files:find("/usr/bin/dps\n", 1, true)
      if name == "dps" then
        assert.is_truthy(cli, files)
        assert.is_nil(files:find("core.so", 1, true), files)
      else
        assert.is_nil(cli, name .. " carries the command: " .. files)
      end
    end
    assert.are.equal("/etc/config/dps\n", read(info .. "dps.conffiles"))
    local control = read(info .. lib51 .. ".control")
    assert.is_truthy(control:find("\nDepends: libcurl, ca-bundle, liblua, lua-cjson, " .. crypto .. "\n", 1, true),
      control)
    assert.is_truthy(control:find("\nProvides: lua-azure-dps\n", 1, true), control)
    control = read(info .. lib54 .. ".control")
    assert.is_truthy(control:find("\nDepends: libcurl, ca-bundle, liblua5.4, lua-cjson-lua5.4, " .. crypto .. "\n", 1,
      true), control)
    assert.is_truthy(read(info .. "dps.control"):find("\nDepends: lua, lua-azure-dps\n", 1, true))
    assert.are.equal("#!/usr/bin/lua", read(ROOTFS .. "/usr/bin/dps"):match("^[^\n]*"))
  end)

  it("provisions with the installed dps on Lua 5.1", function()
    local out, ok = shell.run(lua_in_root("/usr/bin/lua", dir) .. " /usr/bin/dps --version")
    assert.is_true(ok, out)
    assert.is_truthy(out:find("Lua 5.1", 1, true), out)
    out, ok = shell.run(string.format("%s /usr/bin/dps provision --id-scope %s --registration-id router-51"
      .. " --symmetric-key-file %s --endpoint %s --ca-file %s --timeout 20 2>&1",
      lua_in_root("/usr/bin/lua", dir), emu.id_scope, q(dir .. "/device.key"), emu.endpoint, q(emu.ca_file)))
    assert.is_true(ok, out)
    local state = cjson.decode(out)
    assert.are.equal("router-51", state.deviceId)
    assert.is_string(state.assignedHub)
    assert.is_nil(out:find(KEY, 1, true))
  end)

  it("provisions with the installed library on Lua 5.4", function()
    local script = shell.write(dir .. "/provision54.lua", string.format([[
      local dps = require "dps"
      local f = assert(io.open(%q))
      local key = f:read("*l")
      f:close()
      local state, err, info = dps.provision{ id_scope = %q, registration_id = "router-54", symmetric_key = key,
        endpoint = %q, ca_file = %q, timeout = 20 }
      if not state then error(err .. " [" .. info.kind .. "]") end
      print(_VERSION, require("dps.core").version().backend, require("cjson").encode(state))
    ]], dir .. "/device.key", emu.id_scope, emu.endpoint, emu.ca_file))
    local out, ok = shell.run(lua_in_root("/usr/bin/lua5.4", dir) .. " " .. q(script) .. " 2>&1")
    assert.is_true(ok, out)
    local version, backend, json = out:match("^(Lua %S+)\t(%S+)\t(.-)%s*$")
    assert.are.equal("Lua 5.4", version, out)
    assert.are.equal(CRYPTO, backend)
    local state = cjson.decode(json)
    assert.are.equal("router-54", state.deviceId)
    assert.is_string(state.assignedHub)
  end)
end)
