-- Provisioning against the local DPS emulator over real HTTPS: the happy
-- paths, the wiring of the polling rules (one real-time Retry-After wait;
-- the rules themselves, with their timings, are in spec/poll_spec.lua in
-- milliseconds), and the service's answers. The emulator says
-- Retry-After: 0 unless a row needs otherwise.
local dps = require "dps"
local emulator = require "spec.support.emulator"

local keys = require "spec.support.keys"
local GROUP_KEY = keys.GROUP_KEY
local KEY = keys.KEY
local OTHER_KEY = keys.OTHER_KEY

local individual = { "dev-01", "dev-conn", "dev-retry", "dev-429", "dev-503",
  "dev-failed", "dev-disabled", "dev-huge", "dev-ttl", "dev-lookup", "dev-direct", "dev-closed" }

describe("dps.provision against the emulator", function()
  local emu

  setup(function()
    local enrollments = { { type = "group", group_id = "g1", symmetric_key = GROUP_KEY } }
    for _, id in ipairs(individual) do
      enrollments[#enrollments + 1] = { type = "individual", registration_id = id, symmetric_key = KEY,
        device_id = id .. "-hub" }
    end
    emu = emulator.start{
      retry_after = "0",
      polls_before_assignment = 1,
      enrollments = enrollments,
      scenarios = {
        ["dev-conn"] = { polls_before_assignment = 3 },
        ["dev-retry"] = { polls_before_assignment = 1, retry_after = "1" },
        ["dev-429"] = { register = { { status = 429, retry_after = "0" } } },
        ["dev-503"] = { poll = { { status = 503, retry_after = "0" } } },
        ["dev-failed"] = { result = "failed" },
        ["dev-disabled"] = { result = "disabled" },
        ["dev-huge"] = { retry_after = "99999999" },
        ["dev-ttl"] = { polls_before_assignment = 3 },
        ["dev-lookup"] = { polls_before_assignment = 2, retry_after = "2" },
        ["dev-direct"] = { polls_before_assignment = 0 },
      },
    }
  end)

  teardown(function()
    if emu then emu:stop() end
  end)

  local function opts(registration_id, extra)
    local o = { id_scope = emu.id_scope, registration_id = registration_id, symmetric_key = KEY,
                endpoint = emu.endpoint, ca_file = emu.ca_file, timeout = 20 }
    for k, v in pairs(extra or {}) do o[k] = v end
    return o
  end

  -- Times of the device's requests of one kind, from the emulator's log.
  local function times(registration_id, kind)
    local t = {}
    for _, r in ipairs(emu:requests(registration_id)) do
      if not kind or r.kind == kind then t[#t + 1] = r.t end
    end
    return t
  end

  describe("assignment", function()
    it("provisions an individual enrollment and returns the service's registration state", function()
      local state, how = dps.provision(opts("dev-01"))
      assert.truthy(state, how)
      assert.are.equal("service", how.source)
      assert.are.equal(0, how.clock_offset)
      local operation = how.result -- the final operation
      assert.are.equal("assigned", operation.status)
      assert.truthy(operation.operationId)
      assert.are.equal("emulated-hub.azure-devices.net", state.assignedHub)
      assert.are.equal("dev-01-hub", state.deviceId)
      assert.are.equal("assigned", state.status)
      assert.are.equal("dev-01", state.registrationId)
      assert.are.equal("initialAssignment", state.substatus)
    end)

    it("provisions a group member with a key derived from the group key", function()
      local state, err = dps.provision{ id_scope = emu.id_scope, registration_id = "leaf-07", group_key = GROUP_KEY,
                                        endpoint = emu.endpoint, ca_file = emu.ca_file }
      assert.truthy(state, err)
      assert.are.equal("leaf-07", state.deviceId)
      assert.are.equal("g1", state.symmetricKey.enrollmentGroupId)
    end)

    it("sends the payload as a JSON object and gets the echo back as a table", function()
      local client = dps.new(opts("leaf-payload", { symmetric_key = dps.derive_key(GROUP_KEY, "leaf-payload") }))
      local state = assert(client:provision{ payload = { modelId = "dtmi:com:example:r;1", nested = { n = 2 } } })
      client:close()
      assert.are.same({ modelId = "dtmi:com:example:r;1", nested = { n = 2 } }, state.payload)
      local sent = emu:requests("leaf-payload")[1].payload
      assert.are.same({ modelId = "dtmi:com:example:r;1", nested = { n = 2 } }, sent)
    end)

    it("sends an empty payload as {} rather than []", function()
      local id = "leaf-empty-payload"
      local state = assert(dps.provision(opts(id, { symmetric_key = dps.derive_key(GROUP_KEY, id), payload = {} })))
      assert.are.same({}, state.payload)
    end)

    it("uses one TLS connection for the register and every poll", function()
      local client = dps.new(opts("dev-conn"))
      assert(client:provision())
      local stats = client:stats()
      client:close()
      assert.are.equal(4, stats.requests)
      assert.are.equal(1, stats.connects)
      assert.are.equal(1, #emu:connections("dev-conn"))
      assert.are.equal(4, #emu:requests("dev-conn"))
    end)

    it("accepts an assignment in the register answer itself (200 assigned)", function()
      local state = assert(dps.provision(opts("dev-direct")))
      assert.are.equal("dev-direct-hub", state.deviceId)
      assert.are.equal(1, #emu:requests("dev-direct"))
    end)
  end)

  describe("polling rules, end to end", function()
    it("waits the server's Retry-After (in real time) before polling", function()
      assert(dps.provision(opts("dev-retry")))
      local t = times("dev-retry")
      assert.are.equal(2, #t)
      assert.is_true(t[2] - t[1] >= 0.95, "gap " .. (t[2] - t[1]))
      assert.is_true(t[2] - t[1] < 2.5, "gap " .. (t[2] - t[1]))
    end)

    it("on 429 sends the same register again", function()
      local state = assert(dps.provision(opts("dev-429")))
      assert.are.equal("dev-429-hub", state.deviceId)
      assert.are.equal(2, #times("dev-429", "register"))
      assert.are.equal(429, emu:requests("dev-429")[1].status)
    end)

    it("on 5xx sends the same poll again", function()
      assert(dps.provision(opts("dev-503")))
      local polls = {}
      for _, r in ipairs(emu:requests("dev-503")) do
        if r.kind == "poll" then polls[#polls + 1] = r end
      end
      assert.are.equal(503, polls[1].status)
      assert.are.equal(polls[1].path, polls[2].path)
      assert.are.equal(1, #times("dev-503", "register"))
    end)

    it("signs each request with a token the service accepts, renewed ones too", function()
      -- 60.5 s tokens are within 60 s of expiry as soon as they are made:
      -- every request signs a new one
      assert(dps.provision(opts("dev-ttl", { token_ttl = 60.5 })))
      local requests = emu:requests("dev-ttl")
      assert.are.equal(4, #requests)
      for _, r in ipairs(requests) do
        assert.are.equal("sas", r.auth)
      end
    end)

    it("ends at once when Retry-After reaches past the deadline", function()
      local t0 = os.time()
      local state, _, info = dps.provision(opts("dev-huge", { timeout = 10 }))
      assert.is_nil(state)
      assert.are.equal("timeout", info.kind)
      assert.are.equal(99999999, info.retry_after)
      assert.is_true(os.time() - t0 <= 2)
    end)
  end)

  describe("the service's verdicts", function()
    it("returns failed with the service's errorCode and errorMessage", function()
      local state, err, info = dps.provision(opts("dev-failed"))
      assert.is_nil(state)
      assert.are.equal("failed", info.kind)
      assert.are.equal(400207, info.error_code)
      assert.is_false(info.retryable)
      assert.truthy(err:find("Custom allocation failed", 1, true))
      assert.are.equal("failed", info.registration_state.status)
      assert.truthy(info.operation_id)
    end)

    it("returns disabled", function()
      local state, _, info = dps.provision(opts("dev-disabled"))
      assert.is_nil(state)
      assert.are.equal("disabled", info.kind)
    end)

    it("reports a wrong key as auth with status, error code and tracking ID", function()
      local state, err, info = dps.provision(opts("dev-01", { symmetric_key = OTHER_KEY }))
      assert.is_nil(state)
      assert.are.equal("auth", info.kind)
      assert.are.equal(401, info.status)
      assert.are.equal(401002, info.error_code)
      assert.truthy(info.tracking_id)
      assert.is_false(info.retryable)
      assert.truthy(err:find("401", 1, true))
      assert.is_nil(err:find(OTHER_KEY, 1, true))
    end)

    it("reports a wrong ID scope as not_found", function()
      local state, _, info = dps.provision(opts("dev-01", { id_scope = "0ne99999999" }))
      assert.is_nil(state)
      assert.are.equal("not_found", info.kind)
      assert.are.equal(404, info.status)
    end)
  end)

  describe("the three calls one by one", function()
    it("register, operation_status and registration_status return the service's documents", function()
      local client = dps.new(opts("dev-lookup"))
      local op, meta = client:register()
      assert.are.equal(202, meta.status)
      assert.are.equal(2, meta.retry_after)
      assert.are.equal("assigning", op.status)
      assert.truthy(op.operationId)
      local status -- the emulator counts polls, it does not hold us to the wait
      repeat
        status = assert(client:operation_status(op.operationId))
      until status.status ~= "assigning"
      assert.are.equal("assigned", status.status)
      local reg, meta2 = client:registration_status()
      assert.are.equal(200, meta2.status)
      assert.are.equal("dev-lookup-hub", reg.deviceId)
      assert.are.equal("emulated-hub.azure-devices.net", reg.assignedHub)
      client:close()
      local kinds = {}
      for _, r in ipairs(emu:requests("dev-lookup")) do kinds[#kinds + 1] = r.kind end
      assert.are.equal("register", kinds[1])
      assert.are.equal("lookup", kinds[#kinds])
    end)

    it("closes idempotently and refuses calls after close", function()
      local client = dps.new(opts("dev-closed"))
      assert.is_true(client:close())
      assert.is_true(client:close())
      local ok, err = pcall(client.register, client)
      assert.is_false(ok)
      assert.truthy(err:find("the client is closed", 1, true))
      assert.truthy(tostring(client):find("closed", 1, true))
    end)
  end)
end)
