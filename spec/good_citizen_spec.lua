-- A good citizen toward the service, end to end: the emulator plays a
-- hostile DPS and hub (429 and 503 with Retry-After: 0, a Date before 1970
-- and in the year 9999, a body of 2 MiB, a hub that refuses the device),
-- and every call ends within its deadline + 1 s with a classified failure,
-- never a raise, at a handful of requests a second at most.
local dps = require "dps"
local core = require "dps.core"
local emulator = require "spec.support.emulator"
local keys = require "spec.support.keys"
local shell = require "spec.support.shell"
local timing = require "spec.support.timing"

local KEY = keys.KEY
local TIMEOUT = 3
-- the deadline + 1 s; under valgrind the client itself is some 30 times slower
local LATEST = TIMEOUT + 1 * timing.SLOW
local MOST_PER_SECOND = 5 -- "a handful"

local function times(n, fault)
  local out = {}
  for i = 1, n do out[i] = fault end
  return out
end

local function raw401(date)
  return { fault = "raw", status = 401, headers = { date = date },
    body = '{"errorCode":401002,"message":"Unauthorized","trackingId":"t-1"}' }
end

local SCENARIOS = {
  ["gc-429"] = { register = times(60, { status = 429, retry_after = "0" }) },
  ["gc-503"] = { register = times(60, { status = 503, retry_after = "0" }) },
  ["gc-1960"] = { register = times(3, raw401("Thu, 01 Jan 1960 00:00:00 GMT")) },
  ["gc-9999"] = { register = times(3, raw401("Fri, 31 Dec 9999 23:59:59 GMT")) },
  ["gc-huge"] = { register = { { fault = "oversized", bytes = 2 * 1024 * 1024 } } },
  ["gc-hub-503"] = { polls_before_assignment = 0, hub = times(60, { status = 503, retry_after = "0" }) },
  ["gc-hub-404"] = { polls_before_assignment = 0, hub = times(60, { status = 404, error_code = "DeviceNotFound" }) },
}

describe("a good citizen against a hostile service, end to end", function()
  local emu, dir

  setup(function()
    dir = shell.tmpdir("dps-citizen")
    local enrollments = {}
    for id in pairs(SCENARIOS) do
      enrollments[#enrollments + 1] = { type = "individual", registration_id = id, symmetric_key = KEY }
    end
    emu = emulator.start{ retry_after = "0", enrollments = enrollments, scenarios = SCENARIOS }
  end)

  teardown(function()
    if emu then emu:stop() end
    if dir then shell.succeeds("rm -rf " .. shell.quote(dir)) end
  end)

  local function opts(id)
    return { id_scope = emu.id_scope, registration_id = id, symmetric_key = KEY, endpoint = emu.endpoint,
      ca_file = emu.ca_file, timeout = TIMEOUT }
  end

  -- A call that must end as a classified failure, in time, at a gentle rate.
  local function ends_well(id, f)
    local before = #emu:requests(id)
    local t0 = core.monotime()
    local ok, result, message, info = pcall(f)
    local took = core.monotime() - t0
    assert.is_true(ok, "raised: " .. tostring(result))
    assert.is_nil(result, "did not fail")
    assert.is_string(message)
    assert.is_table(info)
    assert.is_string(info.kind, message)
    assert.is_true(took <= LATEST, string.format("%s took %.2f s", id, took))
    local n = #emu:requests(id) - before -- during this call
    assert.is_true(n <= MOST_PER_SECOND * math.max(took, 1),
      string.format("%s: %d requests in %.2f s", id, n, took))
    return message, info, n
  end

  for _, case in ipairs({
    { "gc-429", "429 with Retry-After: 0", { timeout = true, throttled = true } },
    { "gc-503", "503 with Retry-After: 0", { timeout = true, service = true } },
    { "gc-1960", "a 401 dated 1960", { auth = true } },
    { "gc-9999", "a 401 dated 9999", { auth = true } },
    { "gc-huge", "an answer of 2 MiB", { too_large = true } },
  }) do
    it("provisioning: " .. case[2], function()
      local message, info = ends_well(case[1], function() return dps.provision(opts(case[1])) end)
      assert.is_true(case[3][info.kind] == true, info.kind .. ": " .. message)
    end)
  end

  it("a hub answering 503 with Retry-After: 0", function()
    local o = opts("gc-hub-503")
    o.hub_endpoint = emu.endpoint
    local hub = assert(dps.connect(o))
    local _, info, n = ends_well("gc-hub-503", function() return hub:send("x") end)
    hub:close()
    -- the 503 itself, or (on a busy machine, where the last try starts with
    -- little time left) that try cut by the call's deadline
    assert.is_true(info.kind == "service" or info.kind == "timeout", info.kind)
    assert.is_true(n >= 2, "sent " .. n .. " times") -- it did try again
  end)

  it("a hub that refuses the device: ten sends, one registration again", function()
    local o = opts("gc-hub-404")
    o.hub_endpoint = emu.endpoint
    o.cache = dir .. "/gc-hub-404.json"
    local hub = assert(dps.connect(o))
    for _ = 1, 10 do
      local _, info = ends_well("gc-hub-404", function() return hub:send("x") end)
      assert.are.equal("not_found", info.kind)
    end
    hub:close()
    local registrations = 0
    for _, e in ipairs(emu:requests("gc-hub-404")) do
      if e.kind == "register" then registrations = registrations + 1 end
    end
    assert.are.equal(2, registrations) -- the first, and once again
  end)
end)
