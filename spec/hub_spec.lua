-- dps.hub in milliseconds: a scripted session and a fake clock, no network,
-- no sleeping. Every call's request on the wire (paths, headers, batch
-- encoding, lock tokens), the answers (properties round trip, 204, errors),
-- retries within the call's timeout, the wrong-clock rule, and provisioning
-- again when the hub refuses the device (once per call, never a loop).
local core = require "dps.core"
local base64 = require "spec.support.base64"
local dps_session = require "dps.session"
local dps = require "dps"
local Hub = require "dps.hub"
local connect = require "dps.connect"
local json = require("cjson").new()

local KEY = core.base64_encode(string.rep("k", 32))
local STATE = { assignedHub = "hub-a.azure-devices.net", deviceId = "dev(1)!", registrationId = "dev-1" }
local T0 = 1800000000

-- A scripted session: each request takes the next answer of `script`
-- (`{ status, headers, body }`, `{ fail = message, kind = … }`, or a
-- function of the request).
local function session(script)
  local s = { sent = {}, closed = false }
  function s.request(_, method, url, headers, body, timeout)
    local req = { method = method, url = url, headers = headers, body = body, timeout = timeout }
    s.sent[#s.sent + 1] = req
    local a = table.remove(script, 1)
    assert(a, "no answer scripted for request " .. #s.sent .. ": " .. method .. " " .. url)
    if type(a) == "function" then a = a(req) end
    if a.fail then return nil, a.fail, { kind = a.kind } end
    return a.status, a.headers or {}, a.body or ""
  end
  function s.stats() return { requests = #s.sent, connects = 1 } end
  function s.close() s.closed = true end
  return s
end

local function runtime(script)
  local rt = { wall = T0, mono = 100, sleeps = {} }
  rt.transport = session(script)
  rt.now = function() return rt.wall end
  rt.monotime = function() return rt.mono end
  rt.sleep = function(d)
    rt.sleeps[#rt.sleeps + 1] = d
    rt.wall, rt.mono = rt.wall + d, rt.mono + d
  end
  rt.jitter = function(_, high) return high end
  return rt
end

local function hub_with(script, opts)
  local rt = runtime(script)
  local o = { state = STATE, symmetric_key = KEY }
  for k, v in pairs(opts or {}) do o[k] = v end
  return Hub.new(o, rt), rt
end

local function sas_fields(header)
  local f = {}
  for k, v in header:gmatch("([%w]+)=([^&]+)") do f[k] = v end
  return f
end

local NO_CONTENT = { status = 204 }
local BASE = "https://hub-a.azure-devices.net/devices/dev%281%29%21"

local function hub_error(status, code, extra)
  local headers = { ["iothub-errorcode"] = code, ["content-type"] = "application/json" }
  for k, v in pairs(extra or {}) do headers[k] = v end
  return { status = status, headers = headers,
    body = json.encode({ Message = "ErrorCode:" .. code .. ";refused",
      ExceptionMessage = "Tracking ID:abc123-G:0-TimeStamp:01/01/2027 00:00:00" }) }
end

describe("dps.hub", function()
  describe("send", function()
    it("POSTs the body to /devices/{id}/messages/events with properties as iothub-app-* headers", function()
      local hub, rt = hub_with({ NO_CONTENT })
      local ok, meta = hub:send('{"t":21.5}', { properties = { kind = "reading", n = 3 },
        content_type = "application/json", content_encoding = "utf-8", message_id = "m-1", correlation_id = "c-1" })
      assert.is_true(ok)
      assert.are.equal(204, meta.status)
      local req = rt.transport.sent[1]
      assert.are.equal("POST", req.method)
      assert.are.equal(BASE .. "/messages/events?api-version=2021-04-12", req.url)
      assert.are.equal('{"t":21.5}', req.body)
      assert.are.same({
        ["iothub-to"] = "/devices/dev%281%29%21/messages/events",
        ["iothub-app-kind"] = "reading", ["iothub-app-n"] = "3",
        ["iothub-contenttype"] = "application/json", ["iothub-contentencoding"] = "utf-8",
        ["iothub-messageid"] = "m-1", ["iothub-correlationid"] = "c-1",
        ["authorization"] = req.headers.authorization,
      }, req.headers)
    end)

    it("signs a hub token: sr = {hub}/devices/{id}, no skn, over the local clock plus the offset", function()
      local hub, rt = hub_with({ NO_CONTENT }, { clock_offset = 7200, token_ttl = 600 })
      assert.is_true((hub:send("x")))
      local auth = rt.transport.sent[1].headers.authorization
      local f = sas_fields(auth)
      assert.is_nil(f.skn)
      assert.are.equal("hub-a.azure-devices.net%2Fdevices%2Fdev%281%29%21", f.sr)
      assert.are.equal(tostring(T0 + 7200 + 600), f.se)
      assert.are.equal(dps.hub_token(STATE.assignedHub, STATE.deviceId, KEY, T0 + 7200 + 600), auth)
    end)

    it("keeps the token until a minute before expiry, then signs a new one", function()
      local hub, rt = hub_with({ NO_CONTENT, NO_CONTENT, NO_CONTENT }, { token_ttl = 300 })
      hub:send("a")
      rt.wall = T0 + 230
      hub:send("b")
      rt.wall = T0 + 241
      hub:send("c")
      local se = {}
      for i, req in ipairs(rt.transport.sent) do se[i] = sas_fields(req.headers.authorization).se end
      assert.are.same({ tostring(T0 + 300), tostring(T0 + 300), tostring(T0 + 241 + 300) }, se)
    end)

    it("sends no Authorization with X.509 (mutual TLS)", function()
      local rt = runtime({ NO_CONTENT })
      local hub = Hub.new({ state = STATE, cert_file = "/nonexistent.pem", key_file = "/nonexistent.key" }, rt)
      assert.is_true((hub:send("x")))
      assert.is_nil(rt.transport.sent[1].headers.authorization)
      assert.are.equal("HostName=hub-a.azure-devices.net;DeviceId=dev(1)!;x509=true", hub:connection_string())
      assert.has_error(function() hub:token() end, "dps.hub: token: an X.509 device has no SAS token")
    end)

    it("connects where endpoint says while tokens name the assigned hub", function()
      local hub, rt = hub_with({ NO_CONTENT }, { endpoint = "https://localhost:8443" })
      hub:send("x")
      local req = rt.transport.sent[1]
      assert.are.equal("https://localhost:8443/devices/dev%281%29%21/messages/events?api-version=2021-04-12",
        req.url)
      assert.are.equal("hub-a.azure-devices.net%2Fdevices%2Fdev%281%29%21", sas_fields(req.headers.authorization).sr)
    end)

    it("raises on misuse: a body that is no string or too large, bad properties, unknown options", function()
      local hub = hub_with({})
      assert.has_error(function() hub:send(42) end, "send: the body must be a string, got number")
      assert.has_error(function() hub:send(string.rep("x", 256 * 1024 + 1)) end,
        "send: 262145 bytes; the hub takes at most 262144")
      assert.has_error(function() hub:send("x", { properties = { ["a b"] = "v" } }) end)
      assert.has_error(function() hub:send("x", { properties = { k = "line\nbreak" } }) end,
        "send: property k must not contain control characters")
      assert.has_error(function() hub:send("x", { priority = 1 }) end, "send: unknown option 'priority'")
      assert.has_error(function() Hub.new({ state = STATE, symmetric_key = KEY, colour = "red" }, runtime({})) end,
        "dps.hub: unknown option 'colour'")
      assert.has_error(function() Hub.new({ state = { assignedHub = "bad host", deviceId = "d" },
        symmetric_key = KEY }, runtime({})) end)
      hub:close()
      hub:close()
      assert.has_error(function() hub:send("x") end, "dps.hub: the hub client is closed")
    end)
  end)

  describe("send_batch", function()
    it("sends one application/vnd.microsoft.iothub.json array: bodies base64, iothub-app- names kept", function()
      local hub, rt = hub_with({ NO_CONTENT })
      local bin = "\0\1\2\255 binary"
      assert.is_true((hub:send_batch({
        { body = '{"t":1}', properties = { kind = "reading" }, message_id = "b-1" },
        { body = bin },
      })))
      local req = rt.transport.sent[1]
      assert.are.equal("POST", req.method)
      assert.are.equal(BASE .. "/messages/events?api-version=2021-04-12", req.url)
      assert.are.equal("application/vnd.microsoft.iothub.json", req.headers["content-type"])
      local doc = json.decode(req.body)
      assert.are.equal(2, #doc)
      assert.are.equal('{"t":1}', base64.decode(doc[1].body))
      assert.are.same({ ["iothub-app-kind"] = "reading", ["iothub-messageid"] = "b-1" }, doc[1].properties)
      assert.are.equal(bin, base64.decode(doc[2].body))
      assert.truthy(req.body:find('"properties":{}', 1, true), req.body)
    end)

    it("raises on an empty list or a message that is not a table", function()
      local hub = hub_with({})
      assert.has_error(function() hub:send_batch({}) end, "send_batch: give a non-empty list of messages")
      assert.has_error(function() hub:send_batch({ "x" }) end)
    end)
  end)

  describe("receive and settling", function()
    it("answers nil and no error when nothing waits (204)", function()
      local hub, rt = hub_with({ NO_CONTENT })
      local msg, err, info = hub:receive()
      assert.is_nil(msg)
      assert.is_nil(err)
      assert.is_nil(info)
      local req = rt.transport.sent[1]
      assert.are.equal("GET", req.method)
      assert.are.equal(BASE .. "/messages/devicebound?api-version=2021-04-12", req.url)
      assert.are.equal("/devices/dev%281%29%21/messages/devicebound", req.headers["iothub-to"])
    end)

    it("returns the message: body, properties, the lock token from ETag without quotes, system fields", function()
      local hub = hub_with({ { status = 200, body = "open the valve", headers = {
        etag = '"lock/1+2"', ["iothub-messageid"] = "c2d-1", ["iothub-correlationid"] = "corr",
        ["iothub-sequencenumber"] = "17", ["iothub-enqueuedtime"] = "Tue, 01 Jun 2027 10:00:00 GMT",
        ["iothub-expiry"] = "Wed, 02 Jun 2027 10:00:00 GMT", ["iothub-deliverycount"] = "2",
        ["iothub-to"] = "/devices/dev%281%29%21/messages/devicebound", ["iothub-ack"] = "full",
        ["iothub-app-valve"] = "3", ["iothub-app-mode"] = "open",
      } } })
      local msg = hub:receive()
      assert.are.same({
        body = "open the valve", lock_token = "lock/1+2", message_id = "c2d-1", correlation_id = "corr",
        sequence_number = "17", enqueued_time = "Tue, 01 Jun 2027 10:00:00 GMT",
        expiry = "Wed, 02 Jun 2027 10:00:00 GMT", delivery_count = 2,
        to = "/devices/dev%281%29%21/messages/devicebound", ack = "full",
        properties = { valve = "3", mode = "open" },
      }, msg)
    end)

    it("ends as kind protocol on a 200 without a usable lock token", function()
      local hub = hub_with({ { status = 200, body = "x", headers = {} } })
      local msg, err, info = hub:receive()
      assert.is_nil(msg)
      assert.are.equal("protocol", info.kind, err)
    end)

    it("complete DELETEs …/devicebound/{lockToken}, reject adds &reject, abandon POSTs …/abandon", function()
      local hub, rt = hub_with({ NO_CONTENT, NO_CONTENT, NO_CONTENT })
      local msg = { lock_token = "lock/1+2" }
      assert.is_true((hub:complete(msg)))
      assert.is_true((hub:reject(msg)))
      assert.is_true((hub:abandon("lock/1+2")))
      local sent = rt.transport.sent
      local path = BASE .. "/messages/devicebound/lock%2F1%2B2"
      assert.are.same({ "DELETE", path .. "?api-version=2021-04-12" }, { sent[1].method, sent[1].url })
      assert.are.same({ "DELETE", path .. "?api-version=2021-04-12&reject" }, { sent[2].method, sent[2].url })
      assert.are.same({ "POST", path .. "/abandon?api-version=2021-04-12" }, { sent[3].method, sent[3].url })
      assert.are.equal('"lock/1+2"', sent[1].headers["if-match"])
      assert.is_nil(sent[1].body)
      assert.are.equal("", sent[3].body)
    end)

    it("says kind lock_lost when the lock expired (412)", function()
      local hub = hub_with({ hub_error(412, "DeviceMessageLockLost") })
      local ok, err, info = hub:complete({ lock_token = "t" })
      assert.is_nil(ok)
      assert.are.equal("lock_lost", info.kind)
      assert.are.equal("DeviceMessageLockLost", info.error_code)
      assert.is_false(info.retryable)
      assert.truthy(err:find("complete: HTTP 412", 1, true), err)
    end)

    it("raises when settling something that is no message", function()
      local hub = hub_with({})
      assert.has_error(function() hub:complete({}) end,
        "dps.hub: complete needs a message from receive (or its lock_token)")
    end)
  end)

  describe("failures", function()
    it("are nil, message, info with kind, status, error_code and tracking_id; no retry for a refusal", function()
      local hub, rt = hub_with({ hub_error(404, "DeviceNotFound") })
      local ok, err, info = hub:send("x")
      assert.is_nil(ok)
      assert.are.equal("send: HTTP 404 ErrorCode:DeviceNotFound;refused (trackingId abc123)", err)
      assert.are.same({ kind = "not_found", status = 404, error_code = "DeviceNotFound", tracking_id = "abc123",
        retryable = false, step = "send", local_time = T0 }, info)
      assert.are.equal(1, #rt.transport.sent)
    end)

    it("a full quota is kind quota, not auth", function()
      local hub = hub_with({ hub_error(403, "IotHubQuotaExceeded") })
      local _, _, info = hub:send("x")
      assert.are.equal("quota", info.kind)
    end)

    it("429 and 5xx are sent again after Retry-After or a back-off", function()
      local hub, rt = hub_with({ hub_error(429, "ThrottlingException", { ["retry-after"] = "3" }),
        hub_error(503, "ServerBusy"), NO_CONTENT })
      assert.is_true((hub:send("x")))
      assert.are.same({ 3, 2 }, rt.sleeps) -- the second failure backs off 2 s
      assert.are.equal(3, #rt.transport.sent)
    end)

    it("connection failures worth another try too; a TLS failure is not", function()
      local hub, rt = hub_with({ { fail = "could not connect", kind = "connect" }, NO_CONTENT })
      assert.is_true((hub:send("x")))
      assert.are.equal(2, #rt.transport.sent)
      local hub2, rt2 = hub_with({ { fail = "certificate problem", kind = "tls" } })
      local ok, err, info = hub2:send("x")
      assert.is_nil(ok)
      assert.are.equal("tls", info.kind)
      assert.truthy(err:find("the local clock says", 1, true), err)
      assert.are.equal(1, #rt2.transport.sent)
    end)

    it("retry only within the call's timeout, then end with the last failure", function()
      local script = {}
      for i = 1, 20 do script[i] = hub_error(503, "ServerBusy") end
      local hub, rt = hub_with(script, { timeout = 10 })
      local ok, _, info = hub:send("x")
      assert.is_nil(ok)
      assert.are.equal("service", info.kind)
      local slept = 0
      for _, d in ipairs(rt.sleeps) do slept = slept + d end
      assert.is_true(slept < 10, slept)
      assert.are.same({ 1, 2, 4 }, rt.sleeps) -- the next (8) would pass the deadline
      for _, req in ipairs(rt.transport.sent) do assert.is_true(req.timeout <= 10) end
    end)

    it("a 401 whose Date shows the clock wrong is signed again with the server's time, once", function()
      local server_date = os.date("!%a, %d %b %Y %H:%M:%S GMT", T0 + 7200)
      local hub, rt = hub_with({ hub_error(401, "IotHubUnauthorizedAccess", { date = server_date }), NO_CONTENT },
        { token_ttl = 600 })
      assert.is_true((hub:send("x")))
      local se1 = sas_fields(rt.transport.sent[1].headers.authorization).se
      local se2 = sas_fields(rt.transport.sent[2].headers.authorization).se
      assert.are.equal(tostring(T0 + 600), se1)
      assert.are.equal(tostring(T0 + 7200 + 600), se2)
      assert.are.equal(7200, hub:clock_offset())
    end)

    it("re-signs once per call: each call may follow one wrong-clock 401, never two", function()
      local function wrong_clock(ahead)
        local date = os.date("!%a, %d %b %Y %H:%M:%S GMT", T0 + ahead)
        return hub_error(401, "IotHubUnauthorizedAccess", { date = date })
      end
      local hub, rt = hub_with({ wrong_clock(7200), NO_CONTENT, wrong_clock(4 * 7200), NO_CONTENT,
        wrong_clock(8 * 7200), wrong_clock(16 * 7200) })
      assert.is_true((hub:send("x")))
      assert.are.equal(7200, hub:clock_offset())
      assert.is_true((hub:send("x"))) -- a second call: its own retry
      assert.are.equal(4 * 7200, hub:clock_offset())
      local ok, _, info = hub:send("x")
      assert.is_nil(ok)
      assert.are.equal("auth", info.kind)
      assert.are.equal(6, #rt.transport.sent)
    end)
  end)

  describe("provisioning again when the hub refuses the device", function()
    local NEW = { assignedHub = "hub-b.azure-devices.net", deviceId = "dev-moved", registrationId = "dev-1" }

    -- A hub linked to a stand-in DPS client, as dps.connect makes it.
    local function reprovisioning(script, opts, answer)
      local rt = runtime(script)
      local o = { state = STATE, symmetric_key = KEY }
      for k, v in pairs(opts or {}) do o[k] = v end
      local calls = 0
      local link = connect.link{ client = { stats = function() return {} end, close = function() end },
        provision = function()
          calls = calls + 1
          if answer then return answer() end
          return NEW, { source = "service", clock_offset = 0 }
        end }
      return Hub.create(o, rt, link), rt, function() return calls end, link
    end

    for _, case in ipairs({
      { "404 DeviceNotFound", hub_error(404, "DeviceNotFound") },
      { "401 with a correct clock", hub_error(401, "IotHubUnauthorizedAccess",
        { date = os.date("!%a, %d %b %Y %H:%M:%S GMT", T0) }) },
      { "403 (a disabled device)", hub_error(403, "IotHubUnauthorizedAccess") },
    }) do
      it("on " .. case[1] .. ": provisions once and sends the call again on the new assignment", function()
        local hub, rt, calls = reprovisioning({ case[2], NO_CONTENT })
        assert.is_true((hub:send("x")))
        assert.are.equal(1, calls())
        local sent = rt.transport.sent
        assert.are.equal(2, #sent)
        assert.are.equal("https://hub-b.azure-devices.net/devices/dev-moved/messages/events?api-version=2021-04-12",
          sent[2].url)
        assert.are.equal("hub-b.azure-devices.net%2Fdevices%2Fdev-moved", sas_fields(sent[2].headers.authorization).sr)
        assert.are.equal("hub-b.azure-devices.net", hub.host)
        assert.are.equal(1, hub:stats().reprovisions)
      end)
    end

    it("keeps a given endpoint across the new assignment", function()
      local hub, rt = reprovisioning({ hub_error(404, "DeviceNotFound"), NO_CONTENT },
        { endpoint = "https://localhost:9" })
      assert.is_true((hub:send("x")))
      assert.are.equal("https://localhost:9/devices/dev-moved/messages/events?api-version=2021-04-12",
        rt.transport.sent[2].url)
    end)

    it("never loops: a second refusal in the same call ends it", function()
      local hub, rt, calls = reprovisioning({ hub_error(404, "DeviceNotFound"), hub_error(404, "DeviceNotFound") })
      local ok, _, info = hub:send("x")
      assert.is_nil(ok)
      assert.are.equal("not_found", info.kind)
      assert.are.equal(1, calls())
      assert.are.equal(2, #rt.transport.sent)
      -- the next call may provision again: once per call
      rt.transport.sent = {}
      local hub2, _, calls2 = reprovisioning({ hub_error(404, "DeviceNotFound"), NO_CONTENT })
      assert.is_true((hub2:send("x")))
      assert.are.equal(1, calls2())
    end)

    it("not for a full quota, a throttle, or a 404 that is not about the device", function()
      local hub, _, calls = reprovisioning({ hub_error(403, "IotHubQuotaExceeded"),
        hub_error(404, "SomethingElse") })
      assert.is_nil((hub:send("x")))
      assert.is_nil((hub:send("x")))
      assert.are.equal(0, calls())
    end)

    it("a failed provisioning ends the call with its failure and the hub's refusal", function()
      local hub, _, calls = reprovisioning({ hub_error(404, "DeviceNotFound") }, nil, function()
        return nil, "register: HTTP 401", { kind = "auth", status = 401, step = "register" }
      end)
      local ok, err, info = hub:send("x")
      assert.is_nil(ok)
      assert.are.equal(1, calls())
      assert.are.equal("auth", info.kind)
      assert.are.equal("not_found", info.hub_refusal.kind)
      assert.truthy(err:find("; provisioning again: register: HTTP 401", 1, true), err)
    end)

    it("provisioning again counts against the call's timeout, which does not start over", function()
      local script = { hub_error(404, "DeviceNotFound") }
      for i = 2, 20 do script[i] = hub_error(503, "ServerBusy") end
      local rt_of
      local hub, rt = reprovisioning(script, { timeout = 3 }, function()
        rt_of.mono = rt_of.mono + 2.5 -- provisioning again takes 2.5 s of the call's 3
        return NEW, { source = "service", clock_offset = 0 }
      end)
      rt_of = rt
      local start = rt.mono
      local ok, _, info = hub:send("x")
      assert.is_nil(ok)
      assert.are.equal("service", info.kind)
      assert.is_true(rt.mono - start <= 3, "the call took " .. (rt.mono - start) .. " s")
      assert.is_true(rt.transport.sent[2].timeout <= 0.5 + 1e-9)
    end)

    it("once per refusal episode: while the hub still refuses, the next registration waits, doubling", function()
      local script = {}
      for i = 1, 40 do script[i] = hub_error(404, "DeviceNotFound") end
      local hub, rt, calls, link = reprovisioning(script)
      local ok, _, info = hub:send("x")
      assert.is_nil(ok)
      assert.are.equal(T0 + 60, info.reprovision_held_until) -- provisioned again, and says when it may again
      assert.are.equal(1, calls())
      assert.are.same({ refusals = 1, not_before = T0 + 60 }, link.hold)
      for _ = 1, 9 do -- ten calls in all: one registration
        ok, _, info = hub:send("x")
        assert.is_nil(ok)
        assert.are.equal("not_found", info.kind)
        assert.are.equal(T0 + 60, info.reprovision_held_until)
      end
      assert.are.equal(1, calls())
      rt.wall = T0 + 60 -- the hold is over: once more, then twice as long
      assert.is_nil((hub:send("x")))
      assert.are.equal(2, calls())
      assert.are.same({ refusals = 2, not_before = T0 + 60 + 120 }, link.hold)
    end)

    it("a call that succeeds ends the refusal episode", function()
      local hub, rt, calls, link = reprovisioning({ hub_error(404, "DeviceNotFound"), hub_error(404, "DeviceNotFound"),
        NO_CONTENT, hub_error(404, "DeviceNotFound"), NO_CONTENT })
      assert.is_nil((hub:send("x")))
      assert.is_not_nil(link.hold)
      rt.wall = T0 + 5
      assert.is_true((hub:send("x"))) -- within the hold, the hub takes it again
      assert.is_nil(link.hold)
      assert.is_true((hub:send("x"))) -- a new refusal: provisions again at once
      assert.are.equal(2, calls())
    end)

    it("without dps.connect (no way to provision) a refusal is just the failure", function()
      local hub, rt = hub_with({ hub_error(404, "DeviceNotFound") })
      assert.is_nil((hub:send("x")))
      assert.are.equal(1, #rt.transport.sent)
    end)
  end)

  it("the session refuses a body on DELETE, as on GET (misuse, before any connection)", function()
    local s = dps_session.new{}
    assert.has_error(function() s:request("DELETE", "https://localhost:1/x", nil, "body") end)
    assert.has_error(function() s:request("PATCH", "https://localhost:1/x") end)
    s:close()
  end)

  describe("token and connection string", function()
    it("token(ttl) is the hub token at the offset clock; the connection string holds the key", function()
      local hub = hub_with({}, { clock_offset = 30 })
      assert.are.equal(dps.hub_token(STATE.assignedHub, STATE.deviceId, KEY, T0 + 30 + 120), hub:token(120))
      assert.are.equal("HostName=hub-a.azure-devices.net;DeviceId=dev(1)!;SharedAccessKey=" .. KEY,
        hub:connection_string())
      assert.is_nil(tostring(hub):find(KEY, 1, true))
    end)

    it("a group key signs with the device key derived from the registration ID", function()
      local group = core.base64_encode(string.rep("g", 64))
      local rt = runtime({})
      local hub = Hub.new({ state = STATE, group_key = group }, rt)
      assert.are.equal(dps.hub_token(STATE.assignedHub, STATE.deviceId, dps.derive_key(group, "dev-1"), T0 + 60),
        hub:token(60))
    end)
  end)
end)

describe("dps.connect: the hold on provisioning again, kept in the assignment cache", function()
  local fake_runtime = require "spec.support.fake_runtime"
  local shell = require "spec.support.shell"

  it("three runs against a hub that refuses the device: one registration again, then the runs obey the hold",
    function()
      local dir = shell.tmpdir("dps-hold")
      finally(function() shell.succeeds("rm -rf " .. shell.quote(dir)) end)
      local path = dir .. "/assignment.json"
      local fake = fake_runtime.new()
      fake.answer = function(req)
        if req.url:find("^https://dps%.example%.invalid/") then return fake_runtime.assigned("dev") end
        return hub_error(404, "DeviceNotFound")
      end
      local function run()
        local rt = fake:with_session()
        rt.hub_transport = fake:session()
        local hub = assert(dps.connect({ id_scope = "0ne00000001", registration_id = "dev", symmetric_key = KEY,
          endpoint = "https://dps.example.invalid", cache = path }, rt))
        local ok, _, info = hub:send("x")
        hub:close()
        assert.is_nil(ok)
        assert.are.equal("not_found", info.kind)
        return info
      end
      local function registrations()
        local n = 0
        for _, req in ipairs(fake.sent) do if req.method == "PUT" then n = n + 1 end end
        return n
      end
      run()
      assert.are.equal(2, registrations()) -- the first provisioning, and once again on the refusal
      for _ = 1, 2 do
        local info = run()
        assert.are.equal(fake_runtime.EPOCH + 60, info.reprovision_held_until)
      end
      assert.are.equal(2, registrations()) -- the two later runs read the hold from the cache
      fake.mono = fake.mono + 61
      run()
      assert.are.equal(3, registrations())
      assert.are.equal(2, json.decode(shell.read(path)).hold.refusals)
    end)
end)
