-- Faults the emulator injects and TLS failures, through dps.provision: what
-- may pass is retried to success, the rest is a clear, classified error
-- within the deadline.
local dps = require "dps"
local core = require "dps.core"
local emulator = require "spec.support.emulator"

local KEY = "18RQk/hOPJR9EbsJlk2j8WA6vWaj/yi+oaYg7zmxfQNdOyMSu+SJ8O7TSlZhDJCYmn4rzEiVKIzNiVAWjLxrGA=="

local scenarios = {
  ["f-hang"] = { poll = { { fault = "hang" } } },
  ["f-reset"] = { poll = { { fault = "reset" } } },
  ["f-close"] = { register = { { fault = "close" } } },
  ["f-non-json"] = { poll = { { fault = "non_json" } } },
  ["f-oversized"] = { poll = { { fault = "oversized", bytes = 2 * 1024 * 1024 } } },
  ["f-ok"] = {},
}

describe("faults", function()
  local emu

  setup(function()
    local enrollments = {}
    for id in pairs(scenarios) do
      enrollments[#enrollments + 1] = { type = "individual", registration_id = id, symmetric_key = KEY }
    end
    emu = emulator.start{ retry_after = "1", enrollments = enrollments, scenarios = scenarios }
  end)

  teardown(function()
    if emu then emu:stop() end
  end)

  local function provision(id, extra)
    local o = { id_scope = emu.id_scope, registration_id = id, symmetric_key = KEY,
                endpoint = emu.endpoint, ca_file = emu.ca_file, timeout = 10 }
    for k, v in pairs(extra or {}) do o[k] = v end
    local t0 = core.monotime()
    local state, err, info = dps.provision(o)
    return state, err, info, core.monotime() - t0
  end

  it("keeps the deadline when the server accepts a request and then says nothing", function()
    local state, err, info, elapsed = provision("f-hang", { timeout = 2.5 })
    assert.is_nil(state)
    assert.are.equal("timeout", info.kind, err)
    assert.is_true(elapsed < 3.5, "took " .. elapsed .. " s")
  end)

  it("retries a reset connection and succeeds", function()
    local state, err = provision("f-reset")
    assert.truthy(state, err)
    assert.are.equal("f-reset", state.deviceId)
    assert.is_true(#emu:connections("f-reset") >= 2)
  end)

  it("reconnects after the server closed the kept connection", function()
    local client = dps.new{ id_scope = emu.id_scope, registration_id = "f-close", symmetric_key = KEY,
                            endpoint = emu.endpoint, ca_file = emu.ca_file }
    local state = assert(client:provision())
    local stats = client:stats()
    client:close()
    assert.are.equal("f-close", state.deviceId)
    assert.are.equal(2, stats.connects)
    assert.are.equal(2, #emu:connections("f-close"))
  end)

  it("reports a body that is not JSON as protocol", function()
    local state, err, info = provision("f-non-json")
    assert.is_nil(state)
    assert.are.equal("protocol", info.kind)
    assert.are.equal(200, info.status)
    assert.truthy(err:find("not a JSON object", 1, true))
  end)

  it("refuses an oversized body as too_large without buffering it", function()
    local state, _, info = provision("f-oversized")
    assert.is_nil(state)
    assert.are.equal("too_large", info.kind)
  end)
end)

describe("TLS failures", function()
  local emu, certs

  setup(function()
    certs = emulator.certs()
    emu = emulator.start{ enrollments = { { type = "individual", registration_id = "f-ok", symmetric_key = KEY } } }
  end)

  teardown(function()
    if emu then emu:stop() end
  end)

  local function try(endpoint, ca_file)
    return dps.provision{ id_scope = emu.id_scope, registration_id = "f-ok", symmetric_key = KEY,
                          endpoint = endpoint, ca_file = ca_file, timeout = 10 }
  end

  it("works with the right CA (the baseline for the failures below)", function()
    assert(try(emu.endpoint, emu.ca_file))
  end)

  it("refuses a server certificate from an unknown CA", function()
    local state, err, info = try(emu.endpoint, certs.other_ca)
    assert.is_nil(state)
    assert.are.equal("tls", info.kind, err)
    assert.is_false(info.retryable)
  end)

  it("refuses it with the system trust store too", function()
    local state, _, info = try(emu.endpoint, nil)
    assert.is_nil(state)
    assert.are.equal("tls", info.kind)
  end)

  it("refuses a certificate for another host name", function()
    local state, _, info = try(emu.ip_endpoint, emu.ca_file)
    assert.is_nil(state)
    assert.are.equal("tls", info.kind)
  end)

  it("refuses an expired server certificate", function()
    local state, err, info = try(emu.expired_endpoint, emu.ca_file)
    assert.is_nil(state)
    assert.are.equal("tls", info.kind)
    assert.truthy(err:lower():find("expired", 1, true), err)
  end)

  it("made no request on any refused connection", function()
    -- the register and the poll of the one provisioning that was trusted
    assert.are.equal(2, #emu:requests("f-ok"))
  end)
end)
