-- The OpenWrt package as installed by openwrt/test.sh (make openwrt-test):
-- not part of the busted suite (no _spec in the name; it needs the cross
-- tools). Under qemu-user, in the root file system the packages were
-- installed into, the installed `dps` provisions against the emulator on
-- the host, with Lua 5.1 (lua-azure-dps) and Lua 5.4 (lua5.4-azure-dps), and
-- the installed init script provisions as at boot.
local emulator = require "spec.support.emulator"
local shell = require "spec.support.shell"
local keys = require "spec.support.keys"
local cjson = require("cjson").new()

local q, read = shell.quote, shell.read
local ROOTFS = assert(os.getenv("OPENWRT_ROOTFS"), "run by openwrt/test.sh")
local QEMU = assert(os.getenv("OPENWRT_QEMU"))
local KEY = keys.KEY

-- The command line that runs LUA (a path inside the root) under qemu with
-- OpenWrt's module folders first.
local function lua_in_root(lua)
  return string.format("env LUA_PATH=%s LUA_CPATH=%s LUA_PATH_5_4=%s LUA_CPATH_5_4=%s %s -L %s %s",
    q("/usr/lib/lua/?.lua;/usr/lib/lua/?/init.lua;;"), q("/usr/lib/lua/?.so;;"),
    q("/usr/share/lua/5.4/?.lua;/usr/share/lua/5.4/?/init.lua;;"), q("/usr/lib/lua/5.4/?.so;;"),
    QEMU, q(ROOTFS), q(ROOTFS .. lua))
end

describe("the OpenWrt packages under qemu", function()
  local emu, dir

  setup(function()
    dir = shell.tmpdir("dps-openwrt")
    emu = emulator.start({ enrollments = {
      { type = "individual", registration_id = "router-51", symmetric_key = KEY },
      { type = "individual", registration_id = "router-54", symmetric_key = KEY },
      { type = "individual", registration_id = "router-boot", symmetric_key = KEY },
      { type = "individual", registration_id = "router-cert", symmetric_key = KEY,
        certificate_policy = { validity_days = 30, curves = { "P-384" } } },
    } })
    shell.write(dir .. "/device.key", KEY .. "\n", "600")
  end)

  teardown(function()
    if emu then emu:stop() end
    shell.succeeds("rm -rf " .. q(dir))
  end)

  it("lists the packages' files and conffiles as opkg does", function()
    local info = ROOTFS .. "/usr/lib/opkg/info/"
    assert.is_truthy(read(info .. "lua-azure-dps.list"):find("/usr/lib/lua/dps/core.so\n", 1, true))
    assert.is_truthy(read(info .. "lua5.4-azure-dps.list"):find("/usr/lib/lua/5.4/dps/core.so\n", 1, true))
    assert.are.equal("/etc/config/dps\n", read(info .. "dps.conffiles"))
    local control = read(info .. "lua-azure-dps.control")
    local crypto = os.getenv("OPENWRT_CRYPTO") == "openssl" and "libopenssl" or "libmbedtls"
    assert.is_truthy(control:find("\nDepends: libcurl, ca-bundle, " .. crypto .. ", liblua, lua-cjson\n", 1, true),
      control)
    assert.is_truthy(read(info .. "dps.control"):find("\nDepends: lua, lua-azure-dps\n", 1, true))
    assert.are.equal("#!/usr/bin/lua", read(ROOTFS .. "/usr/bin/dps"):match("^[^\n]*"))
  end)

  for _, case in ipairs({ { lua = "/usr/bin/lua", id = "router-51", version = "Lua 5.1" },
                          { lua = "/usr/bin/lua5.4", id = "router-54", version = "Lua 5.4" } }) do
    it("provisions with the installed dps on " .. case.version, function()
      local out, ok = shell.run(lua_in_root(case.lua) .. " /usr/bin/dps --version")
      assert.is_true(ok, out)
      assert.is_truthy(out:find(case.version, 1, true), out)
      out, ok = shell.run(string.format("%s /usr/bin/dps provision --id-scope %s --registration-id %s"
        .. " --symmetric-key-file %s --endpoint %s --ca-file %s --timeout 20 2>&1",
        lua_in_root(case.lua), emu.id_scope, case.id, q(dir .. "/device.key"), emu.endpoint, q(emu.ca_file)))
      assert.is_true(ok, out)
      local state = cjson.decode(out)
      assert.are.equal(case.id, state.deviceId)
      assert.is_string(state.assignedHub)
      assert.is_nil(out:find(KEY, 1, true))
    end)
  end

  -- The installed init script run as procd would, with `options` in
  -- /etc/config/dps; its extra command `command`.
  local function init_script(options, command)
    shell.write(dir .. "/functions.sh", assert(shell.read("spec/support/openwrt-functions.sh")), "644")
    local config = assert(read(ROOTFS .. "/etc/config/dps"))
    for name, value in pairs(options) do
      local n
      config, n = config:gsub("\n\t#?option " .. name .. " '[^\n]*'", "\n\toption " .. name .. " '" .. value .. "'")
      if n == 0 then config = config .. "\toption " .. name .. " '" .. value .. "'\n" end
    end
    os.execute("mkdir -p " .. q(dir .. "/config") .. " " .. q(dir .. "/state"))
    shell.write(dir .. "/config/dps", config, "644")
    shell.write(dir .. "/dps", "#!/bin/sh\nexec " .. lua_in_root("/usr/bin/lua") .. " /usr/bin/dps \"$@\"\n", "755")
    return shell.run(string.format("cd %s && UCI_CONFIG_DIR=%s DPS_DIR=%s DPS_BIN=%s sh -c %s 2>&1",
      q(dir), q(dir .. "/config"), q(dir .. "/state"), q(dir .. "/dps"),
      q(". ./functions.sh; . " .. ROOTFS .. "/etc/init.d/dps; " .. command)))
  end

  it("provisions at boot through the installed init script and /etc/config/dps", function()
    local out, ok = init_script({ id_scope = emu.id_scope, registration_id = "router-boot",
      key_file = dir .. "/device.key", endpoint = emu.endpoint, ca_file = emu.ca_file, enabled = "1",
      timeout = "20", attempts = "1" }, "provision")
    assert.is_true(ok, out)
    -- the init script keeps the library's assignment cache (dps.cache)
    local cache = cjson.decode((assert(read(dir .. "/state/assignment.json"), out)))
    assert.are.equal("router-boot", cache.state.deviceId)
  end)

  it("renew: earns a certificate (issue_cert_dir), then nothing while it is good; a daily cron line", function()
    local options = { id_scope = emu.id_scope, registration_id = "router-cert", key_file = dir .. "/device.key",
      endpoint = emu.endpoint, ca_file = emu.ca_file, enabled = "1", timeout = "30", attempts = "1",
      assignment = dir .. "/state/cert-assignment.json", issue_cert_dir = dir .. "/state/cert" }
    local out, ok = init_script(options, "renew")
    assert.is_true(ok, out)
    assert.is_truthy(out:find("issued now", 1, true), out)
    assert.is_truthy(read(dir .. "/state/cert/cert.pem"))
    assert.is_truthy(read(dir .. "/state/cert/key.pem"))
    local requests = #emu:requests("router-cert")
    out, ok = init_script(options, "renew")
    assert.is_true(ok, out)
    assert.are.equal(requests, #emu:requests("router-cert")) -- good: nothing sent
    -- the package's uci-defaults adds the cron line, once
    local crontab = dir .. "/crontab"
    for _ = 1, 2 do
      assert.is_true(shell.succeeds(string.format("CRONTAB=%s sh %s", q(crontab),
        q(ROOTFS .. "/etc/uci-defaults/90-dps-renew"))))
    end
    assert.are.equal("17 4 * * * /etc/init.d/dps renew\n", read(crontab))
  end)
end)
