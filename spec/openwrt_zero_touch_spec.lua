-- Zero-touch provisioning on OpenWrt (issue 25): the package's init script,
-- its procd instance, the NTP hotplug hook and the uci-defaults script
-- (examples/openwrt/), run as OpenWrt would in a router's root file system
-- in a temporary folder (spec/support/openwrt_root.lua): OpenWrt's commands
-- are stand-ins that record what they are asked (openwrt/standins/), procd
-- is played by the spec, and `dps` provisions against the emulator. One
-- image for many routers: the ID scope, a group key file and
-- registration_id_source mac:wan in /etc/config/dps.
--
-- The dps command is this checkout's on this busted's interpreter (on the
-- host, or the OpenWrt-like stack: make stack-test); with OPENWRT_ROOTFS and
-- OPENWRT_QEMU set (openwrt/test.sh), the package's installed files and its
-- `dps` under qemu-user. A router's 1970 clock is dps's clock moved by
-- faketime, or by the stand-in clock where faketime cannot (musl, qemu-user).
local dps = require("dps")
local emulator = require("spec.support.emulator")
local shell = require("spec.support.shell")
local keys = require("spec.support.keys")
local openwrt_root = require("spec.support.openwrt_root")
local cjson = require("cjson").new()

local q, read = shell.quote, shell.read
local KEY, GROUP_KEY = keys.KEY, keys.GROUP_KEY
local HUB = "emulated-hub.azure-devices.net"
local ROOTFS, QEMU = os.getenv("OPENWRT_ROOTFS"), os.getenv("OPENWRT_QEMU")

-- Paths of this checkout, absolute (the scripts run in the root's folder).
local function absolute(path)
  return ((";" .. path):gsub(";%./", ";" .. emulator.root .. "/"):sub(2))
end

-- The command line that runs the dps command (under qemu: with the
-- interpreter's default paths, as on the router, and qemu's `options`).
local function dps_command(options)
  if ROOTFS then
    return string.format("env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_4 -u LUA_CPATH_5_4 -u LUA_INIT %s %s-L %s %s "
      .. "/usr/bin/dps", QEMU, options and options .. " " or "", q(ROOTFS), q(ROOTFS .. "/usr/bin/lua"))
  end
  local lua, cpath = shell.plain()
  return string.format("env LUA_PATH=%s LUA_CPATH=%s %s %s", q(absolute(package.path)), q(absolute(cpath)), lua,
    q(emulator.root .. "/bin/dps"))
end

-- 1970-01-02 03:04:05 UTC: a router's clock before NTP
local EARLY = 93845

-- Whether COMMAND (the dps command line, or one of its interpreter) with
-- $offset set to move the clock to EARLY sees that time.
local function moves(command)
  local out = shell.run(string.format("offset=%+d; %s 2>/dev/null", EARLY - os.time(), command))
  return math.abs((tonumber(out) or os.time()) - EARLY) < 3600
end

-- The command line that runs dps with its wall clock moved by "$offset"
-- seconds (openwrt_root's `clock`): faketime where it can (a glibc process on
-- this CPU), else the stand-in clock (openwrt/standins/clock.c) built in
-- `dir` for the process's CPU and preloaded: with no C library of its own it
-- loads into a musl process (make stack-test), and built by the cross
-- compiler (CROSS_CC, openwrt/test.sh) under qemu-user. nil when neither can.
local function clock_command(dir)
  local source = q(emulator.root .. "/openwrt/standins/clock.c")
  local library = dir .. "/clock.so"
  if ROOTFS then
    local cc = os.getenv("CROSS_CC")
    local command = dps_command('-E LD_PRELOAD=' .. q(library) .. ' -E STANDIN_CLOCK_OFFSET="$offset"')
    if cc and shell.succeeds(string.format("%s -shared -fPIC -O2 -nostdlib -o %s %s 2>/dev/null", cc,
      q(library), source)) and moves((command:gsub("/usr/bin/dps$", "-e 'print(os.time())'"))) then
      return command
    end
    return nil
  end
  local lua = shell.plain()
  local faketime = 'env FAKETIME_DONT_FAKE_MONOTONIC=1 faketime -f "$offset" '
  if shell.succeeds("command -v faketime >/dev/null") and moves(faketime .. lua .. " -e 'print(os.time())'") then
    return faketime .. dps_command()
  end
  local preload = "env LD_PRELOAD=" .. q(library) .. ' STANDIN_CLOCK_OFFSET="$offset" '
  if shell.succeeds(string.format("cc -shared -fPIC -O2 -nostdlib -o %s %s 2>/dev/null", q(library), source))
    and moves(preload .. lua .. " -e 'print(os.time())'") then
    return preload .. dps_command()
  end
end

describe("zero-touch provisioning on OpenWrt #router", function()
  local emu, roots, outputs, clock, dir = nil, {}, {}, nil, nil

  setup(function()
    dir = shell.tmpdir("dps-zero-touch")
    clock = clock_command(dir)
    emu = emulator.start({ retry_after = "0", polls_before_assignment = 0, enrollments = {
      { type = "group", group_id = "routers", symmetric_key = GROUP_KEY },
      { type = "individual", registration_id = "router-old", symmetric_key = KEY },
      { type = "individual", registration_id = "router-key", symmetric_key = KEY, secondary_key = keys.KEY_32 },
      { type = "individual", registration_id = "router-cert", symmetric_key = KEY,
        certificate_policy = { validity_days = 30, curves = { "P-384" } } },
    } })
  end)

  -- Everything a router's scripts let out: every call of a stand-in (its
  -- arguments and environment: dps's too), the log, the state files, the
  -- cache, and what /etc/init.d/dps printed.
  local swept_outputs = 0
  local function seen(root)
    local texts = {}
    for _, call in ipairs(root:calls()) do
      -- the strings as they were (JSON would escape the keys' slashes)
      for _, a in ipairs(call.args) do texts[#texts + 1] = a end
      for _, v in pairs(call.env) do texts[#texts + 1] = v end
      texts[#texts + 1] = call.environ
    end
    for _, line in ipairs(root:log()) do texts[#texts + 1] = line.message end
    texts[#texts + 1] = shell.run("cat " .. q(root.dir) .. "/var/run/dps/* " .. q(root.dir)
      .. "/etc/dps/assignment.json 2>/dev/null")
    for i = swept_outputs + 1, #outputs do texts[#texts + 1] = outputs[i] end
    return table.concat(texts, "\n")
  end

  -- The keys: the test keys, and the key each registration ID dps was asked
  -- for derives from the group key.
  local function leaked(root, text)
    local list = { KEY, GROUP_KEY, keys.KEY_32 }
    for _, call in ipairs(root:calls("dps")) do
      for i, a in ipairs(call.args) do
        if a == "--registration-id" then list[#list + 1] = dps.derive_key(GROUP_KEY, call.args[i + 1]) end
      end
    end
    for _, secret in ipairs(list) do
      if text:find(secret, 1, true) then return secret end
    end
  end

  after_each(function()
    for _, root in ipairs(roots) do
      assert.is_nil(leaked(root, seen(root)), "a key leaked from a router")
    end
    swept_outputs = #outputs
  end)

  teardown(function()
    if emu then emu:stop() end
    shell.succeeds("rm -rf " .. q(dir))
    if not os.getenv("DPS_SPEC_KEEP") then
      for _, root in ipairs(roots) do root:remove() end
    end
  end)

  -- A router fresh from the image: /etc/config/dps as the package installs
  -- it with `changes` (uci commands), the group key in /etc/dps/group.key,
  -- wan on eth1 with MAC `mac` (up unless `wan_down`); with `files`, the
  -- image's own files over the package's, as they are.
  local function router(changes, opts)
    opts = opts or {}
    local root = openwrt_root.new({ dps = dps_command(), clock = clock, files = opts.files,
      package = ROOTFS and function(path) return ROOTFS .. path end or nil })
    roots[#roots + 1] = root
    root:network("wan", { up = not opts.wan_down, device = "eth1" }, opts.mac or "02:AB:cd:00:00:51")
    if opts.files then return root end
    shell.write(root.dir .. "/etc/dps/group.key", GROUP_KEY .. "\n", "600")
    local all = { "set dps.main.enabled=1", "set dps.main.id_scope=" .. emu.id_scope,
      "set dps.main.endpoint=" .. emu.endpoint, "set dps.main.ca_file=" .. emu.ca_file,
      "set dps.main.group_key_file=" .. root.dir .. "/etc/dps/group.key",
      "set dps.main.assignment=" .. root.dir .. "/etc/dps/assignment.json",
      "set dps.main.timeout=20", "set dps.main.retry_delay=30", "set dps.main.attempts=3" }
    for _, c in ipairs(changes or {}) do all[#all + 1] = c end
    root:uci(all)
    return root
  end

  local function count(list, pred)
    local n = 0
    for _, x in ipairs(list) do
      if pred(x) then n = n + 1 end
    end
    return n
  end

  -- The events of ACTION: hotplug-call dps calls and ubus service events.
  local function events(root, action)
    local hotplug, ubus = {}, {}
    for _, c in ipairs(root:calls("hotplug-call")) do
      if c.args[1] == "dps" and c.env.ACTION == action then hotplug[#hotplug + 1] = c.env end
    end
    for _, c in ipairs(root:calls("ubus")) do
      if c.args[2] == "service" and c.args[3] == "event" then
        local e = cjson.decode(c.args[4])
        if e.type == "dps." .. action then ubus[#ubus + 1] = e.data end
      end
    end
    return hotplug, ubus
  end

  local function messages(root, priority)
    local out = {}
    for _, l in ipairs(root:log()) do
      if not priority or l.priority == "daemon." .. priority then out[#out + 1] = l.message end
    end
    return out
  end

  local function registrations(id)
    return count(emu:requests(id), function(e) return e.method == "PUT" end)
  end

  local function cache(root)
    return cjson.decode((assert(read(root.dir .. "/etc/dps/assignment.json"))))
  end

  -- /etc/init.d/dps ACTION; what it printed is kept for the secrets sweep
  local function init(root, action)
    local status, out, err = root:init(action)
    outputs[#outputs + 1] = out .. err
    return status, out, err
  end

  local ID = "router-02abcd000051"

  describe("first boot and the next", function()
    local root

    it("first boot: registers under the MAC-derived ID once and fires provisioned", function()
      root = router({ "set dps.main.registration_id_source=mac:wan", "set dps.main.registration_id_prefix=router-" })
      root:boot()
      assert.are.equal("provisioned", root:state(), table.concat(messages(root), "\n"))
      assert.are.equal(1, registrations(ID))
      local state = cache(root).state
      assert.are.equal(ID, state.deviceId)
      assert.are.equal(HUB, state.assignedHub)
      -- told once: hotplug-call dps and the ubus event, hub and device ID
      local hotplug, ubus = events(root, "provisioned")
      assert.are.same({ { ACTION = "provisioned", DPS_HUB = HUB, DPS_DEVICE_ID = ID, DPS_REGISTRATION_ID = ID } },
        hotplug)
      assert.are.same({ { hub = HUB, device_id = ID, registration_id = ID } }, ubus)
      -- procd: one instance, respawned after 30 s up to 2 times (3 attempts),
      -- watching the settings and the key; triggers: the config, wan coming up
      local agent = root:instance("agent")
      assert.are.same({ "3600", "30", "2" }, agent.params.respawn)
      assert.are.same({ root.dir .. "/etc/config/dps", root.dir .. "/etc/dps/group.key" }, agent.params.file)
      assert.are.equal("idle", agent.state)
      assert.are.equal(1, agent.runs)
      local triggers = root.services.dps.triggers
      assert.are.same({ type = "config.change", package = "dps", script = { "/etc/init.d/dps", "reload" } },
        triggers[1])
      assert.are.same({ type = "interface.*.up", interface = "wan",
        script = { root.dir .. "/etc/init.d/dps", "reload" } }, triggers[2])
      assert.are.equal(2, #triggers)
      assert.are.same({}, messages(root, "err"))
      assert.are.equal(1, count(messages(root, "notice"), function(m)
        return m == "provisioned: assigned to " .. HUB .. " as device " .. ID .. "; assignment in "
          .. root.dir .. "/etc/dps/assignment.json"
      end))
    end)

    it("the next boot makes no request and fires nothing", function()
      local requests, calls = #emu:requests(ID), #root:calls("dps")
      root:reboot()
      assert.are.equal("provisioned", root:state())
      assert.are.equal(calls + 1, #root:calls("dps")) -- the agent ran dps: its cache answered
      assert.are.equal(requests, #emu:requests(ID))
      local hotplug = events(root, "provisioned")
      assert.are.equal(1, #hotplug)
    end)

    it("reprovision registers again and fires reprovisioned", function()
      local before = registrations(ID)
      local status, _, err = init(root, "reprovision")
      assert.are.equal(0, status, err)
      assert.are.equal(before + 1, registrations(ID))
      local hotplug, ubus = events(root, "reprovisioned")
      assert.are.same({ { ACTION = "reprovisioned", DPS_HUB = HUB, DPS_DEVICE_ID = ID, DPS_REGISTRATION_ID = ID } },
        hotplug)
      assert.are.same({ { hub = HUB, device_id = ID, registration_id = ID } }, ubus)
      assert.are.equal(1, #events(root, "provisioned"))
      -- run by hand: the log line on stderr too
      assert.truthy(err:find("dps: reprovisioned: assigned to " .. HUB .. " as device " .. ID, 1, true), err)
    end)

    it("status prints the assignment as JSON from the cache", function()
      local status, out, err = init(root, "status")
      assert.are.equal(0, status, err)
      local state = cjson.decode(out)
      assert.are.equal(ID, state.deviceId)
      assert.are.equal(HUB, state.assignedHub)
    end)
  end)

  it("WAN down at boot: no attempt; when wan comes up, procd's trigger provisions, once", function()
    local id = "router-020000000a01"
    local root = router({}, { wan_down = true, mac = "02:00:00:00:0A:01" })
    root:boot()
    assert.are.equal("interface", root:state())
    assert.is_nil(root:instance("agent"))
    assert.are.same({}, root:calls("dps"))
    assert.are.same({ "waiting for wan to come up" }, messages(root))
    root:interface_up("wan")
    assert.are.equal("provisioned", root:state())
    assert.are.equal(1, registrations(id))
    local hotplug = events(root, "provisioned")
    assert.are.equal(1, #hotplug)
    assert.are.equal(id, hotplug[1].DPS_DEVICE_ID)
    -- wan up again (a flap): the agent is provisioned, procd leaves it be
    root:interface_up("wan")
    assert.are.equal(1, #root:calls("dps"))
    assert.are.equal(1, root:instance("agent").runs)
  end)

  it("a 1970 clock: waits for NTP, not counted against the attempts, then provisions at once", function()
    if not clock then
      pending("neither faketime nor the stand-in clock moves the clock of this dps")
      return
    end
    local id = "router-020000000a02"
    local root = router({}, { mac = "02:00:00:00:0a:02" })
    root:set_clock(EARLY)
    root:boot()
    assert.are.equal("clock", root:state())
    local agent = root:instance("agent")
    assert.are.equal("idle", agent.state)
    assert.are.equal(1, agent.runs)
    assert.are.equal(0, agent.respawn_count)
    assert.are.same({}, root.procd_log)
    assert.are.equal(0, #emu:requests(id)) -- TLS refused the emulator's certificate
    local lines = messages(root)
    assert.are.equal(1, #lines, table.concat(lines, "\n"))
    assert.truthy(lines[1]:find("^waiting for NTP to set the clock, which may explain: .*1970"), lines[1])
    -- sysntpd's hook, still unsynchronized (stratum 16): nothing
    root:hotplug("ntp", { ACTION = "stratum", stratum = "16" })
    assert.are.equal(1, #root:calls("dps"))
    -- NTP sets the clock, then says so: provisioned at once
    root:set_clock(nil)
    root:hotplug("ntp", { ACTION = "stratum", stratum = "2" })
    assert.are.equal("provisioned", root:state())
    assert.are.equal(1, registrations(id))
    assert.are.equal(1, #events(root, "provisioned"))
    assert.are.equal(2, #root:calls("dps"))
    -- later reports change nothing
    root:hotplug("ntp", { ACTION = "stratum", stratum = "3" })
    root:hotplug("ntp", { ACTION = "periodic", stratum = "3" })
    assert.are.equal(2, #root:calls("dps"))
  end)

  it("a 1970 clock with the NTP client off: no NTP to wait for, the failure counts as any other", function()
    if not clock then
      pending("neither faketime nor the stand-in clock moves the clock of this dps")
      return
    end
    local root = router({ "set dps.main.registration_id=router-no-ntp" })
    shell.write(root.dir .. "/etc/config/system", "config timeserver 'ntp'\n\toption enabled '0'\n", "644")
    root:set_clock(EARLY)
    root:boot()
    assert.are.equal("failed", root:state())
    assert.are.equal(3, root:instance("agent").runs)
  end)

  it("DPS out of reach: procd respawns the agent after retry_delay, `attempts` times, then waits for wan", function()
    local root = router({ "set dps.main.endpoint=https://localhost:1", "set dps.main.registration_id=router-net",
      "set dps.main.timeout=1" })
    root:boot()
    local agent = root:instance("agent")
    assert.are.equal(3, agent.runs)
    assert.are.equal(2, agent.respawn_count)
    assert.are.equal("idle", agent.state)
    assert.are.same({ "respawn dps::agent in 30 s", "respawn dps::agent in 30 s" }, root.procd_log)
    assert.are.equal("failed", root:state())
    local warnings, errs = messages(root, "warn"), messages(root, "err")
    assert.are.equal(2, #warnings)
    assert.truthy(warnings[1]:find("^attempt 1 of 3 failed: .+; next in 30 s$"), warnings[1])
    assert.truthy(warnings[2]:find("^attempt 2 of 3 failed: .+; next in 30 s$"), warnings[2])
    assert.are.equal(1, #errs)
    assert.truthy(errs[1]:find("^attempt 3 of 3 failed: .+; trying again when wan comes up, or on "
      .. "/etc/init.d/dps restart$"), errs[1])
    -- wan comes up: another round
    root:interface_up("wan")
    assert.are.equal(6, #root:calls("dps"))
    assert.are.equal("failed", root:state())
  end)

  for _, case in ipairs({
    { what = "a missing key file", changes = { "set dps.main.group_key_file=/etc/dps/nowhere.key" },
      line = "option group_key_file: /etc/dps/nowhere.key does not exist (/etc/config/dps); "
        .. "not provisioning until it is fixed" },
    { what = "a malformed ID scope", changes = { "set dps.main.id_scope=0ne 0001" },
      line = "option id_scope '0ne 0001' is not an ID scope (A-Z a-z 0-9 - . _) (/etc/config/dps); "
        .. "not provisioning until it is fixed" },
    { what = "a disabled config", changes = { "set dps.main.enabled=0" },
      line = "disabled: option enabled is not '1' in /etc/config/dps" },
  }) do
    it(case.what .. ": one log line, no instance, no attempt, even when wan comes up", function()
      local root = router(case.changes)
      root:boot()
      assert.are.same({ case.line }, messages(root))
      assert.is_nil(root:instance("agent"))
      root:interface_up("wan")
      root:interface_up("wan")
      assert.are.same({}, root:calls("dps"))
      assert.are.same({ case.line }, messages(root))
    end)
  end

  it("an ID scope DPS does not know: one attempt, one log line, no retry", function()
    local root = router({ "set dps.main.id_scope=0ne99999999", "set dps.main.registration_id=router-scope" })
    root:boot()
    local agent = root:instance("agent")
    assert.are.equal("idle", agent.state)
    assert.are.equal(1, agent.runs)
    assert.are.equal("stopped", root:state())
    local lines = messages(root)
    assert.are.equal(1, #lines, table.concat(lines, "\n"))
    assert.truthy(lines[1]:find("^provisioning failed: register: HTTP 404.*%(exit status 1%); not retried: fix it, "
      .. "then /etc/init.d/dps restart$"), lines[1])
    -- wan coming up again does not retry what needs a person
    root:interface_up("wan")
    assert.are.equal(1, #root:calls("dps"))
  end)

  it("registration IDs from the board's serial, the host name, or a device's MAC", function()
    for _, case in ipairs({
      { source = "board", prefix = "router-", id = "router-SN-0042",
        setup = function(root)
          os.execute("mkdir -p " .. q(root.dir .. "/proc/device-tree"))
          shell.write(root.dir .. "/proc/device-tree/serial-number", "SN-0042\0")
        end },
      { source = "hostname", prefix = "", id = "gw-17",
        setup = function(root) shell.write(root.dir .. "/proc/sys/kernel/hostname", "gw-17\n") end },
      { source = "mac:eth1", prefix = "r", id = "r020000000a03" },
    }) do
      local root = router({ "set dps.main.registration_id_source=" .. case.source,
        "set dps.main.registration_id_prefix=" .. case.prefix }, { mac = "02:00:00:00:0a:03" })
      if case.setup then case.setup(root) end
      local status, _, err = init(root, "provision")
      assert.are.equal(0, status, err)
      assert.are.equal(case.id, cache(root).state.deviceId)
    end
    -- one that this router does not have: one line, no attempt
    local root = router({ "set dps.main.registration_id_source=mac:wan2" })
    root:boot()
    assert.are.same({ "registration_id_source 'mac:wan2': wan2 has no MAC address here (/etc/config/dps); "
      .. "not provisioning until it is fixed" }, messages(root))
    assert.are.same({}, root:calls("dps"))
  end)

  it("uci-defaults gives the settings of before their new names, once; the router provisions with them", function()
    local root = router({ "delete dps.main.group_key_file", "delete dps.main.registration_id_source",
      "set dps.main.registration_id=router-old", "delete dps.main.interfaces", "set dps.main.interface=wan" })
    shell.write(root.dir .. "/etc/dps/device.key", KEY .. "\n", "600")
    root:uci({ "set dps.main.key_file=" .. root.dir .. "/etc/dps/device.key" })
    root:boot()
    local config = read(root.dir .. "/etc/config/dps")
    assert.truthy(config:find("\toption symmetric_key_file '" .. root.dir .. "/etc/dps/device.key'\n", 1, true), config)
    assert.truthy(config:find("\tlist interfaces 'wan'\n", 1, true), config)
    assert.is_nil(config:find("option key_file", 1, true), config)
    assert.is_nil(config:find("option interface ", 1, true), config)
    assert.is_nil(read(root.dir .. "/etc/uci-defaults/90-dps")) -- it ran once
    assert.are.equal("17 4 * * * /etc/init.d/dps renew\n", read(root.dir .. "/etc/crontabs/root"))
    assert.are.equal("provisioned", root:state())
    assert.are.equal("router-old", cache(root).state.deviceId)
    -- run again (a later install): nothing changes
    shell.write(root.dir .. "/etc/uci-defaults/90-dps", read(emulator.root .. "/examples/openwrt/dps.uci-defaults"),
      "755")
    root:reboot()
    assert.are.equal(config, read(root.dir .. "/etc/config/dps"))
    assert.are.equal("17 4 * * * /etc/init.d/dps renew\n", read(root.dir .. "/etc/crontabs/root"))
  end)

  it("a certificate earned at provisioning fires cert-renewed; renew while it is good does nothing", function()
    local root = router({ "delete dps.main.group_key_file", "set dps.main.registration_id=router-cert" })
    shell.write(root.dir .. "/etc/dps/device.key", KEY .. "\n", "600")
    root:uci({ "set dps.main.symmetric_key_file=" .. root.dir .. "/etc/dps/device.key",
      "set dps.main.issue_cert_dir=" .. root.dir .. "/etc/dps/cert" })
    root:boot()
    assert.are.equal("provisioned", root:state())
    assert.are.equal(1, #events(root, "provisioned"))
    local hotplug, ubus = events(root, "cert-renewed")
    assert.are.same({ { ACTION = "cert-renewed", DPS_HUB = HUB, DPS_DEVICE_ID = "router-cert",
      DPS_REGISTRATION_ID = "router-cert" } }, hotplug)
    assert.are.equal(1, #ubus)
    assert.truthy(read(root.dir .. "/etc/dps/cert/cert.pem"))
    local status, _, err = init(root, "renew")
    assert.are.equal(0, status, err)
    assert.are.equal(1, #events(root, "cert-renewed"))
  end)

  describe("the ImageBuilder recipe of docs/openwrt.md", function()
    local image, first

    -- The block the page marks as run here.
    local function recipe()
      local page = assert(read(emulator.root .. "/docs/openwrt.md"))
      return assert(page:match("<!%-%- spec/openwrt_zero_touch_spec%.lua runs this block %-%->\n```sh\n(.-)\n```"),
        "docs/openwrt.md has no block marked for spec/openwrt_zero_touch_spec.lua")
    end

    -- The files sysupgrade keeps (its -l list): the package's conffiles, and
    -- what /lib/upgrade/keep.d/ names (files, or folders: their files).
    local function kept(root)
      local names = { "/etc/config/dps" }
      local list = shell.run("cat " .. q(root.dir) .. "/lib/upgrade/keep.d/* 2>/dev/null")
      for entry in list:gmatch("[^\n]+") do
        if not entry:match("^%s*#") and entry:match("%S") then
          local found = shell.run(string.format("cd %s && find .%s -type f 2>/dev/null", q(root.dir), q(entry)))
          for path in found:gmatch("[^\n]+") do names[#names + 1] = path:sub(2) end
        end
      end
      return names
    end

    it("makes an image's files: the settings and the key from FILES=, over the package's", function()
      local work = dir .. "/imagebuilder"
      os.execute("mkdir -p " .. q(work .. "/bin"))
      shell.write(work .. "/group.key", GROUP_KEY .. "\n", "600")
      -- the ImageBuilder's make image: its arguments recorded
      shell.write(work .. "/bin/make", '#!/bin/sh\nprintf "%s\\n" "$@" >"$(dirname "$0")/../make-image.args"\n', "755")
      local out, ok = shell.run(string.format("cd %s && PATH=%s PROFILE=glinet_gl-mt300n-v2 sh -e -c %s 2>&1", q(work),
        q(work .. "/bin:" .. os.getenv("PATH")), q(recipe())))
      assert.is_true(ok, out)
      local args = {}
      for line in assert(read(work .. "/make-image.args")):gmatch("[^\n]+") do
        local k, v = line:match("^([A-Z]+)=(.*)$")
        args[k or line] = v or true
      end
      assert.is_true(args.image)
      assert.are.equal("glinet_gl-mt300n-v2", args.PROFILE)
      local packages = {}
      for name in args.PACKAGES:gmatch("%S+") do packages[name] = true end
      assert.is_true(packages.dps and packages["ca-bundle"] and packages["lua-azure-dps-mbedtls"])
      assert.are.equal("files", args.FILES)
      -- the image's root: the package's files, FILES= over them
      image = work .. "/" .. args.FILES
      first = router({}, { files = image, mac = "02:00:00:00:0b:01" })
      local config = read(first.dir .. "/etc/config/dps")
      assert.truthy(config:find("option registration_id_source 'mac:wan'", 1, true), config)
      assert.are.equal(GROUP_KEY .. "\n", read(first.dir .. "/etc/dps/group.key"))
      assert.are.equal("600", shell.run("stat -c %a " .. q(first.dir .. "/etc/dps/group.key")):match("%d+"))
      assert.are.equal("700", shell.run("stat -c %a " .. q(first.dir .. "/etc/dps")):match("%d+"))
      for _, file in ipairs(openwrt_root.FILES) do
        assert.truthy(read(first.dir .. file.path), file.path)
      end
      assert.truthy(shell.succeeds("test -L " .. q(first.dir .. "/etc/rc.d/S95dps")))
    end)

    it("first boot of the image registers the router under router-MAC and tells the system", function()
      assert.truthy(first, "no image")
      -- the emulator for Azure: its endpoint, CA and ID scope; the key where the root has /etc/dps
      first:uci({ "set dps.main.id_scope=" .. emu.id_scope, "set dps.main.endpoint=" .. emu.endpoint,
        "set dps.main.ca_file=" .. emu.ca_file, "set dps.main.group_key_file=" .. first.dir .. "/etc/dps/group.key" })
      first:boot()
      assert.are.equal("provisioned", first:state())
      assert.are.equal("router-020000000b01", cache(first).state.deviceId)
      assert.are.equal(1, #events(first, "provisioned"))
      assert.are.equal("17 4 * * * /etc/init.d/dps renew\n", read(first.dir .. "/etc/crontabs/root"))
    end)

    it("a sysupgrade that keeps settings keeps the registration: the next boot makes no request", function()
      assert.truthy(first and first:state() == "provisioned", "no provisioned router")
      local requests = #emu:requests("router-020000000b01")
      local upgraded = router({}, { files = image, mac = "02:00:00:00:0b:01" })
      for _, path in ipairs(kept(first)) do
        os.execute("mkdir -p " .. q((upgraded.dir .. path):match("^(.*)/")))
        assert.truthy(shell.succeeds(string.format("cp -p %s %s", q(first.dir .. path), q(upgraded.dir .. path))))
      end
      -- the settings name files under the root they were made in (the spec's
      -- absolute paths): this root's now, as /etc/dps is the same folder on a router
      local config = read(upgraded.dir .. "/etc/config/dps")
      local at = config:find(first.dir, 1, true)
      while at do
        config = config:sub(1, at - 1) .. upgraded.dir .. config:sub(at + #first.dir)
        at = config:find(first.dir, at + #upgraded.dir, true)
      end
      shell.write(upgraded.dir .. "/etc/config/dps", config, "600")
      upgraded:boot()
      assert.are.equal("provisioned", upgraded:state())
      assert.are.equal(requests, #emu:requests("router-020000000b01"))
      assert.are.equal(0, #events(upgraded, "provisioned"))
    end)
  end)

  it("the package dps installs each file where these routers have it (under qemu: make openwrt-test)", function()
    if not ROOTFS then
      pending("run by openwrt/test.sh, on the packages it built")
      return
    end
    local list = assert(read(ROOTFS .. "/usr/lib/opkg/info/dps.list"))
    for _, file in ipairs(openwrt_root.FILES) do
      assert.truthy(list:find("\n" .. file.path .. "\n", 1, true) or list:find("^" .. file.path .. "\n"), file.path)
      assert.are.equal(read(emulator.root .. "/" .. file.source), read(ROOTFS .. file.path), file.path)
      local mode = shell.run("stat -c %a " .. q(ROOTFS .. file.path)):match("%d+")
      assert.are.equal(file.mode, mode, file.path)
    end
    assert.are.equal("/etc/config/dps\n", read(ROOTFS .. "/usr/lib/opkg/info/dps.conffiles"))
  end)

  it("dps.sh reads every option that dps.config shows", function()
    local config = assert(read(emulator.root .. "/examples/openwrt/dps.config"))
    local script = assert(read(emulator.root .. "/examples/openwrt/dps.sh"))
    local n = 0
    for _, kind in ipairs({ "option", "list" }) do
      for name in config:gmatch("\n\t#?" .. kind .. " ([%w_]+) ") do
        n = n + 1
        assert.truthy(script:find("\n\tconfig_get%S* " .. name .. " main " .. name .. "[ \n]"), name)
      end
    end
    assert.is_true(n >= 20, n)
    assert.truthy(config:find("\nconfig dps 'main'\n", 1, true))
  end)

  it("a new key file: a reload restarts the agent (procd watches it), which registers with that key", function()
    local root = router({ "delete dps.main.group_key_file", "set dps.main.registration_id=router-key",
      "set dps.main.model_id=dtmi:com:example:Router;1" })
    shell.write(root.dir .. "/etc/dps/device.key", KEY .. "\n", "600")
    root:uci({ "set dps.main.symmetric_key_file=" .. root.dir .. "/etc/dps/device.key" })
    root:boot()
    assert.are.equal("provisioned", root:state())
    local puts = {}
    for _, e in ipairs(emu:requests("router-key")) do
      if e.method == "PUT" then puts[#puts + 1] = e end
    end
    assert.are.equal(1, #puts)
    assert.are.same({ modelId = "dtmi:com:example:Router;1" }, puts[1].payload)
    assert.are.equal("-rw-------", shell.run("ls -l " .. q(root.dir .. "/etc/dps/assignment.json")):match("^(%S+)"))
    -- a reload with nothing changed: procd leaves the agent be
    init(root, "reload")
    assert.are.equal(1, root:instance("agent").runs)
    -- the enrollment's secondary key in the file, then a reload
    shell.write(root.dir .. "/etc/dps/device.key", keys.KEY_32 .. "\n", "600")
    init(root, "reload")
    assert.are.equal(1, root:instance("agent").runs) -- a new instance, run once
    assert.are.equal("provisioned", root:state())
    assert.are.equal(2, registrations("router-key"))
    assert.are.equal(2, #events(root, "provisioned"))
  end)

  it("no key in any log line, process argument, environment, file or output", function()
    local root = router({})
    root:boot()
    init(root, "reprovision")
    init(root, "status")
    local text = seen(root)
    assert.truthy(text:find("--group-key-file", 1, true)) -- the sweep sees dps's arguments,
    assert.truthy(text:find("provisioned: assigned to", 1, true)) -- the log,
    assert.truthy(text:find('"assignedHub"', 1, true)) -- the cache and the status
    -- and every case's router is swept after it (after_each)
  end)
end)
