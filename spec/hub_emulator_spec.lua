-- dps.connect and dps.hub end to end against the emulator's hub: real HTTPS,
-- real tokens and client certificates. Telemetry (one and batch) with its
-- properties as the hub saw them, cloud-to-device messages with lock
-- tokens, the hub's refusals, provisioning again once (device deleted or
-- moved, 401), and the requests and TLS handshakes of provision + 10 messages.
local dps = require "dps"
local dps_session = require "dps.session"
local emulator = require "spec.support.emulator"
local shell = require "spec.support.shell"
local keys = require "spec.support.keys"
local cjson = require("cjson").new()

local KEY, GROUP_KEY, OTHER_KEY = keys.KEY, keys.GROUP_KEY, keys.OTHER_KEY
local q = shell.quote

describe("the hub at the emulator", function()
  local emu, dir, admin

  setup(function()
    emu = emulator.start{ retry_after = "0", enrollments = {
      { type = "individual", registration_id = "hub-ten", symmetric_key = KEY },
      { type = "individual", registration_id = "hub-c2d", symmetric_key = KEY },
      { type = "individual", registration_id = "hub-move", symmetric_key = KEY },
      { type = "individual", registration_id = "hub-401", symmetric_key = KEY },
      { type = "individual", registration_id = "hub-loop", symmetric_key = KEY },
      { type = "individual", registration_id = "hub-plain", symmetric_key = KEY },
      { type = "individual", registration_id = "hub-cli", symmetric_key = KEY },
      { type = "individual", registration_id = "router-01", symmetric_key = KEY },
      { type = "group", group_id = "hub-group", symmetric_key = GROUP_KEY },
      { type = "group", attestation = "x509", group_id = "hub-x509" },
    }, scenarios = {
      ["hub-401"] = { hub = { { status = 401, error_code = "IotHubUnauthorizedAccess" } } },
      ["hub-loop"] = { hub = { { status = 404, error_code = "DeviceNotFound" },
        { status = 404, error_code = "DeviceNotFound" } } },
    }, cloud_to_device = {
      ["hub-c2d"] = { { body = "from the config file", properties = { source = "config" } } },
    } }
    dir = shell.tmpdir("dps-hub")
    admin = dps_session.new{ ca_file = emu.ca_file }
  end)

  teardown(function()
    if admin then admin:close() end
    if emu then emu:stop() end
    shell.succeeds("rm -rf " .. q(dir))
  end)

  local function connect(id, extra)
    local opts = { id_scope = emu.id_scope, registration_id = id, symmetric_key = KEY, endpoint = emu.endpoint,
      ca_file = emu.ca_file, hub_endpoint = emu.endpoint, cache = dir .. "/" .. id .. ".json" }
    for k, v in pairs(extra or {}) do
      if v == false then opts[k] = nil else opts[k] = v end
    end
    return dps.connect(opts)
  end

  -- The log entries of one event, waiting a little for the last (the
  -- emulator logs a request as it answers it).
  local function entries(event, filter, at_least)
    local out
    for _ = 1, 40 do
      out = {}
      for _, e in ipairs(emu:log()) do
        if e.event == event and (not filter or filter(e)) then out[#out + 1] = e end
      end
      if #out >= (at_least or 0) then break end
      os.execute("sleep 0.05")
    end
    return out
  end

  local function registrations(id)
    return #entries("request", function(e) return e.method == "PUT" and e.registration_id == id end)
  end

  it("provision + 10 messages: the messages arrive with their properties, on one TLS connection to the hub",
    function()
      local hub = assert(connect("hub-ten"))
      for i = 1, 10 do
        assert(hub:send(string.format('{"n":%d}', i), { properties = { seq = i, kind = "reading" },
          content_type = "application/json", message_id = "m-" .. i }))
      end
      local stats = hub:stats()
      assert.are.same({ requests = 10, connects = 1, reprovisions = 0, dps = { requests = 2, connects = 1 } }, stats)
      local got = entries("telemetry", function(e) return e.device_id == "hub-ten" end, 10)
      assert.are.equal(10, #got)
      for i, e in ipairs(got) do
        assert.are.equal(string.format('{"n":%d}', i), e.body)
        assert.are.same({ seq = tostring(i), kind = "reading" }, e.properties)
        assert.are.equal("m-" .. i, e.message_id)
      end
      local conns = {}
      for _, e in ipairs(entries("request", function(e) return e.kind == "hub_send" and e.device_id == "hub-ten" end,
        10)) do
        conns[e.conn] = true
        assert.are.equal("sas", e.auth)
      end
      assert.are.equal(1, #(function() local l = {} for c in pairs(conns) do l[#l + 1] = c end return l end)())
      hub:close()
      -- from the cache: no DPS request at all, still one connection to the hub
      local again = assert(connect("hub-ten"))
      assert.are.equal("cache", again.provisioned.source)
      assert(again:send("after a reboot"))
      assert.are.same({ requests = 1, connects = 1, reprovisions = 0, dps = { requests = 0, connects = 0 } },
        again:stats())
      again:close()
    end)

  it("a batch arrives as separate messages with their properties", function()
    local hub = assert(connect("hub-plain"))
    assert(hub:send_batch({
      { body = "one", properties = { k = "1" } },
      { body = "\0binary\255", properties = { k = "2" }, message_id = "b2" },
    }))
    local got = entries("telemetry", function(e) return e.device_id == "hub-plain" end, 2)
    assert.are.equal("one", got[1].body)
    assert.are.same({ k = "1" }, got[1].properties)
    assert.are.equal("\0binary\255", got[2].body)
    assert.are.equal("b2", got[2].message_id)
    assert.is_true(got[2].batch)
    hub:close()
  end)

  it("cloud-to-device: receive, complete, reject, abandon with lock tokens; nil when nothing waits", function()
    local hub = assert(connect("hub-c2d"))
    assert.are.equal(201, (emu:admin("POST", "/admin/devices/hub-c2d/c2d",
      { body = "open valve 3", properties = { valve = "3" }, message_id = "c-2", correlation_id = "k" })))
    assert.are.equal(201, (emu:admin("POST", "/admin/devices/hub-c2d/c2d", { body = "third" })))

    local first = assert(hub:receive())
    assert.are.equal("from the config file", first.body)
    assert.are.same({ source = "config" }, first.properties)
    assert(hub:abandon(first))
    local again = assert(hub:receive())
    assert.are.equal("from the config file", again.body)
    assert.are.equal(2, again.delivery_count)
    assert.are_not.equal(first.lock_token, again.lock_token)
    -- the old lock is gone: kind lock_lost
    local ok, err, info = hub:complete(first)
    assert.is_nil(ok)
    assert.are.equal("lock_lost", info.kind, err)
    assert.are.equal("DeviceMessageLockLost", info.error_code)
    assert(hub:complete(again))

    local second = assert(hub:receive())
    assert.are.same({ "open valve 3", { valve = "3" }, "c-2", "k", 1 },
      { second.body, second.properties, second.message_id, second.correlation_id, second.delivery_count })
    assert(hub:reject(second))
    local third = assert(hub:receive())
    assert(hub:complete(third.lock_token))
    local none, e2, i2 = hub:receive()
    assert.is_nil(none)
    assert.is_nil(e2)
    assert.is_nil(i2)
    local _, queue = emu:admin("GET", "/admin/devices/hub-c2d/c2d")
    local outcomes = {}
    for i, s in ipairs(queue.settled) do outcomes[i] = s.outcome end
    assert.are.same({ "abandon", "complete", "reject", "complete" }, outcomes)
    hub:close()
  end)

  it("a deleted, then moved device provisions again once, and the cache follows the new hub", function()
    local hub = assert(connect("hub-move"))
    assert(hub:send("before"))
    assert.are.equal(1, registrations("hub-move"))
    assert.are.equal(200, (emu:admin("DELETE", "/admin/devices/hub-move")))
    assert(hub:send("after a delete"))
    assert.are.equal(2, registrations("hub-move"))
    assert.are.equal(200, (emu:admin("POST", "/admin/devices/hub-move/move",
      { hub = "moved-hub.azure-devices.net" })))
    assert(hub:send("after a move"))
    assert.are.equal(3, registrations("hub-move"))
    assert.are.equal("moved-hub.azure-devices.net", hub.host)
    assert.are.equal(2, hub:stats().reprovisions)
    local cached = cjson.decode(shell.read(dir .. "/hub-move.json"))
    assert.are.equal("moved-hub.azure-devices.net", cached.state.assignedHub)
    -- the token named the new hub
    local sends = entries("request", function(e) return e.kind == "hub_send" and e.device_id == "hub-move" end, 5)
    assert.are.same({ 204, 404, 204, 404, 204 }, (function()
      local s = {} for i, e in ipairs(sends) do s[i] = e.status end return s end)())
    hub:close()
  end)

  it("a 401 with a correct clock provisions again once; two refusals in one call end it", function()
    local hub = assert(connect("hub-401"))
    assert(hub:send("x"))
    assert.are.equal(2, registrations("hub-401"))
    hub:close()

    local loop = assert(connect("hub-loop"))
    local ok, err, info = loop:send("x")
    assert.is_nil(ok)
    assert.are.equal("not_found", info.kind, err)
    assert.are.equal("DeviceNotFound", info.error_code)
    assert.are.equal(2, registrations("hub-loop"))
    assert(loop:send("the next call works"))
    loop:close()
  end)

  it("dps.hub (no provisioning): a wrong key is auth, never provisioning again", function()
    local state = assert(dps.provision{ id_scope = emu.id_scope, registration_id = "hub-plain", symmetric_key = KEY,
      endpoint = emu.endpoint, ca_file = emu.ca_file })
    local hub = dps.hub{ state = state, symmetric_key = OTHER_KEY, endpoint = emu.endpoint, ca_file = emu.ca_file }
    local ok, err, info = hub:send("x")
    assert.is_nil(ok)
    assert.are.equal("auth", info.kind, err)
    assert.are.equal(401, info.status)
    assert.are.equal("IotHubUnauthorizedAccess", info.error_code)
    hub:close()
    -- the right key, and a token for another agent that the hub takes
    local good = dps.hub{ state = state, symmetric_key = KEY, endpoint = emu.endpoint, ca_file = emu.ca_file }
    local token = good:token(60)
    local status = admin:request("POST", emu.endpoint .. "/devices/hub-plain/messages/events?api-version=2021-04-12",
      { authorization = token }, "with the token")
    assert.are.equal(204, status)
    good:close()
  end)

  it("a group member signs with its derived key", function()
    local hub = assert(connect("hub-member", { symmetric_key = false, group_key = GROUP_KEY }))
    assert(hub:send("member"))
    hub:close()
  end)

  describe("dps send and dps receive", function()
    local cli = require "dps.cli"
    local function run(argv, stdin)
      local out, err = {}, {}
      local full = { argv[1], "--id-scope", emu.id_scope, "--registration-id", "hub-cli", "--endpoint", emu.endpoint,
        "--ca-file", emu.ca_file, "--hub-endpoint", emu.endpoint, "--cache", dir .. "/hub-cli.json" }
      for i = 2, #argv do full[#full + 1] = argv[i] end
      local code = cli.main(full, { DPS_SYMMETRIC_KEY = KEY }, {
        stdout = { write = function(_, t) out[#out + 1] = t end },
        stderr = { write = function(_, t) err[#err + 1] = t end },
        stdin = { read = function() -- a file: the text, then the end
          local text = stdin
          stdin = nil
          return text
        end },
      })
      return code, table.concat(out), table.concat(err)
    end

    it("send: DATA or stdin, with properties and a content type; exit 0, nothing on stdout", function()
      local code, out, err = run({ "send", "--property", "room=kitchen", "--property", "unit=C", "--content-type",
        "application/json", "-v", '{"t":20}' })
      assert.are.equal(0, code, err)
      assert.are.equal("", out)
      assert.matches("sent 8 bytes; 1 request on 1 TLS connection to the hub", err)
      code, out, err = run({ "send", "-" }, "from stdin")
      assert.are.equal("", out)
      assert.are.equal(0, code, err)
      local got = entries("telemetry", function(e) return e.device_id == "hub-cli" end, 2)
      assert.are.same({ '{"t":20}', { room = "kitchen", unit = "C" } }, { got[1].body, got[1].properties })
      assert.are.equal("from stdin", got[2].body)
    end)

    it("receive: nothing printed when none waits; one message as JSON, settled as asked", function()
      local code, out, err = run({ "receive" })
      assert.are.same({ 0, "" }, { code, out }, err)
      emu:admin("POST", "/admin/devices/hub-cli/c2d", { body = "reboot", properties = { at = "now" } })
      code, out, err = run({ "receive", "--complete" })
      assert.are.equal(0, code, err)
      local doc = cjson.decode(out)
      assert.are.same({ "reboot", { at = "now" }, "complete", 1 },
        { doc.body, doc.properties, doc.settled, doc.delivery_count })
      local _, queue = emu:admin("GET", "/admin/devices/hub-cli/c2d")
      assert.are.equal(0, #queue.pending)
    end)

    it("usage errors exit 2; a refused key exits 4", function()
      assert.are.equal(2, (run({ "send", "--property", "novalue", "x" })))
      assert.are.equal(2, (run({ "send" })))
      assert.are.equal(2, (run({ "receive", "--complete", "--reject" })))
      assert.are.equal(2, (run({ "send", "x", "y" })))
      local out, err = {}, {}
      local code = cli.main({ "send", "--id-scope", emu.id_scope, "--registration-id", "hub-cli", "--endpoint",
        emu.endpoint, "--ca-file", emu.ca_file, "x" }, { DPS_SYMMETRIC_KEY = OTHER_KEY },
        { stdout = { write = function(_, t) out[#out + 1] = t end },
          stderr = { write = function(_, t) err[#err + 1] = t end } })
      assert.are.equal(4, code, table.concat(err))
    end)
  end)

  it("examples/router_telemetry.lua: provisions from the cache, then a reading per interval", function()
    local lua = shell.interpreter() -- this run's interpreter (or its ASan wrapper) for this run's build
    local function router()
      local out = dir .. "/router.out"
      local cmd = string.format("cd %s && env LUA_PATH=%s LUA_CPATH=%s DPS_ID_SCOPE=%s DPS_REGISTRATION_ID=router-01 "
        .. "DPS_SYMMETRIC_KEY=%s DPS_ENDPOINT=%s DPS_CA_FILE=%s DPS_CACHE=%s DPS_HUB_ENDPOINT=%s DPS_INTERVAL=0.05 "
        .. "DPS_COUNT=3 %s examples/router_telemetry.lua >%s 2>&1", q(emulator.root), q(package.path),
        q(package.cpath), q(emu.id_scope), q(KEY), q(emu.endpoint), q(emu.ca_file), q(dir .. "/router.json"),
        q(emu.endpoint), q(lua), q(out))
      local ok = shell.succeeds(cmd)
      return ok, shell.read(out) or ""
    end
    emu:admin("POST", "/admin/devices/router-01/c2d", { body = "set interval 120" })
    local ok, out = router()
    assert.is_true(ok, out)
    assert.matches("router: router%-01 on emulated%-hub%.azure%-devices%.net %(assignment from service%)", out)
    assert.matches("router: reading 3 sent", out)
    assert.matches("router: message [%w%-]+: set interval 120", out)
    assert.matches("router: 3 readings, 5 requests on 1 TLS connection%(s%) to the hub", out)
    ok, out = router()
    assert.is_true(ok, out)
    assert.matches("assignment from cache", out)
    assert.are.equal(1, registrations("router-01"))
    local got = entries("telemetry", function(e) return e.device_id == "router-01" end, 6)
    assert.are.equal(6, #got)
    assert.matches('^{"n":1,"load1":', got[1].body)
    assert.are.same({ kind = "reading" }, got[1].properties)
    assert.is_nil(out:find(KEY, 1, true))
  end)

  it("X.509: mutual TLS, no token", function()
    if not emu.x509 then
      pending("the emulator cannot ask for client certificates under this interpreter")
      return
    end
    local certs = emu.certs
    local hub = assert(connect("x509-device-01", { symmetric_key = false, cert_file = certs.x509_device_01_chain,
      key_file = certs.x509_device_01_key }))
    assert(hub:send("from a certificate"))
    local sends = entries("request", function(e) return e.kind == "hub_send" and e.device_id == "x509-device-01" end,
      1)
    assert.are.equal("x509", sends[1].auth)
    assert.matches("x509=true$", hub:connection_string())
    hub:close()
  end)
end)
