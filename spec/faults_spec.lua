-- Faults the emulator injects and TLS failures, through dps.provision over
-- real HTTPS: what may pass is retried to success, the rest is a clear,
-- classified error within the deadline plus one second. One row per kind of
-- wire behaviour; the timing rules (how long each wait is, back-off, pace,
-- deadline) are in spec/poll_spec.lua, in milliseconds. Here the emulator
-- says Retry-After: 0 and the back-off is scaled down, so each row takes
-- milliseconds unless the fault itself takes time (hang, delay).
local dps = require "dps"
local core = require "dps.core"
local poll = require "dps.poll"
local emulator = require "spec.support.emulator"

local keys = require "spec.support.keys"
local KEY = keys.KEY

-- The fault matrix: what provisioning must make of each fault. `ok` rows
-- must end assigned (the fault passes or is retried); the others must fail
-- with `kind` (and `retryable`, `status` when given). Every row must finish
-- within its timeout plus one second.
local TIMEOUT = 8
local matrix = {
  { id = "m-429", ok = true, scenario = { register = { { status = 429, retry_after = "0" } } } },
  { id = "m-503-poll", ok = true, scenario = { poll = { { status = 503, retry_after = "0" } } } },
  { id = "m-409", ok = true, scenario = { register = { { status = 409 } } } },
  { id = "m-reset", ok = true, scenario = { poll = { { fault = "reset" } } } },
  { id = "m-close", ok = true, scenario = { register = { { fault = "close" } } } },
  { id = "m-delay", ok = true, scenario = { poll = { { fault = "delay", seconds = 0.2 } } } },
  { id = "m-slow", ok = true, scenario = { register = { { fault = "slow", delay = 0.01 } } } },
  { id = "m-truncated", ok = true, scenario = { poll = { { fault = "truncated" } } } },
  { id = "m-no-body-503", ok = true, scenario = { poll = { { fault = "no_body", status = 503 } } } },
  { id = "m-no-operation-id", ok = true, scenario = { register = { { fault = "no_operation_id" } } } },
  { id = "m-ra-huge", kind = "timeout", retry_after = 99999999,
    scenario = { register = { { status = 429, retry_after = "99999999" } } } },
  { id = "m-ra-huge-202", kind = "timeout", retry_after = 99999999, scenario = { retry_after = "99999999" } },
  { id = "m-no-body-400", kind = "bad_request", status = 400, retryable = false,
    scenario = { register = { { fault = "no_body", status = 400 } } } },
  { id = "m-403", kind = "auth", status = 403, retryable = false, scenario = { register = { { status = 403 } } } },
  { id = "m-no-assigned-hub", kind = "protocol", retryable = false,
    scenario = { poll = { { fault = "no_assigned_hub" } } } },
  { id = "m-non-json", kind = "protocol", status = 200, retryable = false,
    scenario = { poll = { { fault = "non_json" } } } },
  { id = "m-oversized", kind = "too_large", retryable = false,
    scenario = { poll = { { fault = "oversized", bytes = 2 * 1024 * 1024 } } } },
  { id = "m-hang", kind = "timeout", timeout = 1, scenario = { poll = { { fault = "hang" } } } },
  { id = "m-failed", kind = "failed", retryable = false, scenario = { result = "failed" } },
  { id = "m-disabled", kind = "disabled", retryable = false, scenario = { result = "disabled" } },
}

describe("fault matrix", function()
  local emu, backoff_base

  setup(function()
    backoff_base, poll.BACKOFF_BASE = poll.BACKOFF_BASE, 0.02 -- back-offs of 10-20 ms, 20-40 ms, …
    local enrollments, scenarios = {}, {}
    for _, row in ipairs(matrix) do
      enrollments[#enrollments + 1] = { type = "individual", registration_id = row.id, symmetric_key = KEY }
      scenarios[row.id] = row.scenario
    end
    emu = emulator.start{ retry_after = "0", enrollments = enrollments, scenarios = scenarios }
  end)

  teardown(function()
    poll.BACKOFF_BASE = backoff_base
    if emu then emu:stop() end
  end)

  for _, row in ipairs(matrix) do
    local expect = row.ok and "is retried to an assignment" or ("fails as " .. row.kind)
    it(row.id .. " " .. expect .. " within the deadline", function()
      local timeout = row.timeout or TIMEOUT
      local t0 = core.monotime()
      local state, err, info = dps.provision{ id_scope = emu.id_scope, registration_id = row.id, symmetric_key = KEY,
                                              endpoint = emu.endpoint, ca_file = emu.ca_file, timeout = timeout }
      local elapsed = core.monotime() - t0
      assert.is_true(elapsed <= timeout + 1, string.format("took %.2f s with a %g s timeout", elapsed, timeout))
      if row.ok then
        assert.truthy(state, err)
        assert.are.equal(row.id, state.deviceId)
      else
        assert.is_nil(state)
        assert.are.equal("string", type(err))
        assert.are.equal(row.kind, info.kind, err)
        if row.status then assert.are.equal(row.status, info.status, err) end
        if row.retryable ~= nil then assert.are.equal(row.retryable, info.retryable, err) end
        if row.retry_after then assert.are.equal(row.retry_after, info.retry_after, err) end
      end
    end)
  end

  it("reconnects after the server closed the kept connection", function()
    assert.are.equal(2, #emu:connections("m-close"))
  end)

  it("opens a new connection after a reset", function()
    assert.is_true(#emu:connections("m-reset") >= 2)
  end)

  it("re-registered after a 409 and after a 202 without operationId", function()
    local function registers(id)
      local n = 0
      for _, r in ipairs(emu:requests(id)) do
        if r.kind == "register" then n = n + 1 end
      end
      return n
    end
    assert.are.equal(2, registers("m-409"))
    assert.are.equal(2, registers("m-no-operation-id"))
  end)
end)

describe("TLS failures", function()
  local emu, certs

  setup(function()
    certs = emulator.certs()
    emu = emulator.start{ retry_after = "0",
      enrollments = { { type = "individual", registration_id = "f-ok", symmetric_key = KEY } } }
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
