-- The rulebook, rule by driver, in milliseconds: every rule that the paths
-- share runs on every driver that the rule concerns, on a fake clock and a
-- scripted server (spec/support/fake_runtime.lua). A new driver joins a
-- family below and inherits every rule of that family.
--
-- Drivers of provisioning (family "dps"): dps.provision (blocking client),
-- dps.batch (one device, on an engine), dps.start_provision (driven by
-- step() alone). Drivers of one call (family "call"): hub:send (the hub's
-- call machine, blocking), hubs:send (the same machine in a pool on an
-- engine, driven by step() alone). Each returns `ok, message, info` of the run.
local dps = require "dps"
local Hub = require "dps.hub"
local Hubs = require "dps.hubs"
local fake_runtime = require "spec.support.fake_runtime"
local keys = require "spec.support.keys"

local KEY = keys.KEY
local DAY = 86400
local accepted, assigned, refused = fake_runtime.accepted, fake_runtime.assigned, fake_runtime.refused

-- The drivers -----------------------------------------------------------

local DPS = { id_scope = "0ne00000001", registration_id = "dev", symmetric_key = KEY,
  endpoint = "https://dps.example.invalid" }

local function dps_opts(extra)
  local o = {}
  for k, v in pairs(DPS) do o[k] = v end
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

local DRIVERS = {
  { name = "dps.provision", family = "dps", run = function(fake, o)
    local state, message, info = dps.provision(dps_opts{ timeout = o.timeout, request_timeout = o.request_timeout },
      fake:with_session())
    return state, message, info
  end },
  { name = "dps.batch", family = "dps", run = function(fake, o)
    local b = dps.batch({ id_scope = DPS.id_scope, endpoint = DPS.endpoint, device_timeout = o.timeout,
      timeout = (o.timeout or 60) + 1000, request_timeout = o.request_timeout }, fake:with_engine())
    b:add("dev", { symmetric_key = KEY })
    b:run()
    local state, message, info = b:result("dev")
    b:close()
    return state, message, info
  end },
  { name = "dps.start_provision", family = "dps", run = function(fake, o)
    local p = dps.start_provision({ id_scope = DPS.id_scope, endpoint = DPS.endpoint, registration_id = "dev",
      symmetric_key = KEY, device_timeout = o.timeout, timeout = (o.timeout or 60) + 1000,
      request_timeout = o.request_timeout }, fake:with_engine())
    local steps = 0
    repeat
      local wait = p:step() -- an event loop: arm a timer for `wait`, which moves the fake clock
      steps = steps + 1
      assert(steps < 10000, "step() loops without end")
      if not p:done() then fake.mono = fake.mono + wait end
    until p:done()
    local state, message, info = p:result()
    p:close()
    return state, message, info
  end },
  { name = "hub:send", family = "call", run = function(fake, o)
    local hub = Hub.new({ hub = "hub.example", device_id = "dev", symmetric_key = KEY, timeout = o.timeout,
      request_timeout = o.request_timeout }, fake:with_session())
    local ok, message, info = hub:send("x")
    hub:close()
    return ok, message, info
  end },
  { name = "hubs:send", family = "call", run = function(fake, o)
    local pool = Hubs.new({ timeout = o.timeout, request_timeout = o.request_timeout }, fake:with_engine())
    local dev = pool:add{ hub = "hub.example", device_id = "dev", symmetric_key = KEY }
    local got
    assert(dev:send("x", nil, function(...) got = { ... } end))
    local steps = 0
    repeat
      local wait = pool:step() -- an event loop: arm a timer for `wait`, which moves the fake clock
      steps = steps + 1
      assert(steps < 10000, "step() loops without end")
      if not got then fake.mono = fake.mono + wait end
    until got
    pool:close()
    return got[1], got[2], got[3]
  end },
}

-- What a server answers: the script's entries in order, then success. "OK"
-- is success of the family: 200 assigned for DPS, 204 for the hub.
local function server(family, script)
  local OK = family == "dps" and assigned() or { status = 204 }
  return function(_, n)
    local a = script[n]
    if a == nil or a == "OK" then return OK end
    if type(a) == "function" then return a(n) end
    return a
  end
end

-- The token's expiry in a request's Authorization header.
local function se_of(req)
  return tonumber(req.headers.authorization:match("se=(%d+)"))
end

-- The rules --------------------------------------------------------------
--
-- Each: `families` it concerns, `opts` (timeout, request_timeout), the
-- server (`script`, or `answer(fake)` for one that looks at the requests),
-- and `check(fake, ok, message, info)`.

local RULES = {
  {
    name = "a wrong clock: one 401 with the server's Date, signed again with its time, once",
    families = { dps = true, call = true },
    answer = function(fake)
      -- the server's clock is 2 days ahead; it refuses a token already expired by it
      return function(req)
        local server_time = fake.rt.now() + 2 * DAY
        if se_of(req) <= server_time then
          local r = refused(401, nil, fake_runtime.http_date(server_time))
          return r
        end
      end
    end,
    check = function(fake, ok, message)
      assert.truthy(ok, message)
      assert.are.equal(2, #fake.sent)
      assert.are.equal(math.floor(fake.sent[2].wall + 2 * DAY) + 3600, se_of(fake.sent[2]))
      assert.is_true(fake.sent[2].t - fake.sent[1].t < 0.1) -- at once (a batch paces a registration again)
    end,
  },
  {
    name = "a wrong clock: a second 401 with another Date is not followed",
    families = { dps = true, call = true },
    answer = function(fake)
      return function(_, n)
        return refused(401, nil, fake_runtime.http_date(fake.rt.now() + n * 2 * DAY))
      end
    end,
    check = function(fake, ok, _, info)
      assert.is_nil(ok)
      assert.are.equal("auth", info.kind)
      assert.are.equal(2, #fake.sent)
      assert.are.equal(2 * DAY, info.clock_offset)
    end,
  },
  {
    name = "Retry-After is honoured",
    families = { dps = true, call = true },
    script = { refused(429, "7"), refused(503, "3"), "OK" },
    check = function(fake, ok, message)
      assert.truthy(ok, message)
      assert.are.same({ 7, 3 }, fake:gaps())
    end,
  },
  {
    name = "back-off without Retry-After: doubling from 1 s, capped at 30 s (jitter at its low end)",
    families = { dps = true, call = true },
    opts = { timeout = 500 },
    script = { refused(503), refused(503), refused(503), refused(503), refused(503), refused(503), refused(503),
      { fail = "connect" }, "OK" },
    check = function(fake, ok, message)
      assert.truthy(ok, message)
      assert.are.same({ 0.5, 1, 2, 4, 8, 15, 15, 15 }, fake:gaps())
    end,
  },
  {
    name = "Retry-After: 0 (or any wait below the back-off) is raised to the back-off",
    families = { dps = true, call = true },
    opts = { timeout = 100 },
    script = { refused(429, "0"), refused(503, "0"), refused(429, "1"), refused(503, "0"), "OK" },
    check = function(fake, ok, message)
      assert.truthy(ok, message)
      assert.are.same({ 0.5, 1, 2, 4 }, fake:gaps())
    end,
  },
  {
    name = "a Date before 2025 or after 2099 is no clock to sign with: the 401 stays auth, never a raise",
    families = { dps = true, call = true },
    answer = function()
      return function(_, n)
        return refused(401, nil, n == 1 and "Thu, 01 Jan 1960 00:00:00 GMT" or "Fri, 31 Dec 9999 23:59:59 GMT")
      end
    end,
    runs = 2, -- the pre-1970 date, then the year 9999
    check = function(fake, ok, _, info)
      assert.is_nil(ok)
      assert.are.equal("auth", info.kind)
      assert.are.equal(1, #fake.sent)
      assert.is_nil(info.clock_offset)
    end,
  },
  {
    name = "a failure not worth another try ends at once",
    families = { dps = true, call = true },
    script = { refused(400), "OK" },
    check = function(fake, ok, _, info)
      assert.is_nil(ok)
      assert.are.equal("bad_request", info.kind)
      assert.are.equal(1, #fake.sent)
    end,
  },
  {
    name = "request_timeout limits one request; the call goes on within its timeout",
    families = { dps = true, call = true },
    opts = { timeout = 40, request_timeout = 5 },
    script = { { hang = true }, "OK" },
    check = function(fake, ok, message)
      assert.truthy(ok, message)
      assert.are.equal(5, fake.sent[1].timeout)
      assert.are.equal(5 + 0.5, fake.sent[2].t) -- its timeout, then the first back-off
    end,
  },
  {
    name = "the overall deadline: no request after it, and the run ends by it",
    families = { dps = true, call = true },
    opts = { timeout = 10 },
    script = setmetatable({}, { __index = function() return refused(503, "1") end }),
    check = function(fake, ok, _, info)
      assert.is_nil(ok)
      assert.truthy(info.kind == "timeout" or info.kind == "service", info.kind)
      for _, req in ipairs(fake.sent) do
        assert.is_true(req.t < 10 and req.t + req.timeout <= 10 + 1e-9, "a request past the deadline")
      end
      assert.is_true(fake.mono <= 10, "ended at " .. fake.mono)
    end,
  },
  {
    name = "a Retry-After that reaches past the deadline ends the run at once",
    families = { dps = true, call = true },
    opts = { timeout = 20 },
    script = { refused(429, "999999"), "OK" },
    check = function(fake, ok, _, info)
      assert.is_nil(ok)
      assert.are.equal(1, #fake.sent)
      assert.are.equal(0, fake.mono)
      assert.are.equal(999999, info.retry_after)
    end,
  },
  {
    name = "409: register again after a back-off",
    families = { dps = true },
    script = { refused(409), accepted("1"), refused(409), "OK" },
    check = function(fake, ok, message)
      assert.truthy(ok, message)
      local steps = {}
      for i, req in ipairs(fake.sent) do steps[i] = req.method end
      assert.are.same({ "PUT", "PUT", "GET", "PUT" }, steps) -- a 409 to a poll registers again too
      assert.are.same({ 0.5, 1, 0.5 }, fake:gaps()) -- the answer between counts as a success
    end,
  },
  {
    name = "the failure count restarts after a success",
    families = { dps = true },
    script = { refused(503), refused(503), accepted("1"), refused(503), "OK" },
    check = function(fake, ok, message)
      assert.truthy(ok, message)
      assert.are.same({ 0.5, 1, 1, 0.5 }, fake:gaps())
    end,
  },
  {
    name = "polls: about 2 s apart without Retry-After, never more than 5 in 10 s",
    families = { dps = true },
    opts = { timeout = 120 },
    script = { accepted(), accepted("0"), accepted("0"), accepted("0"), accepted("0"), accepted("0"),
      accepted("0"), "OK" },
    check = function(fake, ok, message)
      assert.truthy(ok, message)
      assert.are.equal(2, fake:gaps()[1])
      for i = 2, #fake.sent do
        local window = 0
        for j = 2, i do
          if fake.sent[i].t - fake.sent[j].t < 10 then window = window + 1 end
        end
        assert.is_true(window <= 5, "more than 5 polls in 10 s")
      end
    end,
  },
  {
    name = "the operation ID is kept across polls, even when a poll's answer has none",
    families = { dps = true },
    script = { accepted("1", "op-42"), accepted("1", false), "OK" },
    check = function(fake, ok, message)
      assert.truthy(ok, message)
      assert.truthy(fake.sent[2].url:find("/operations/op-42?", 1, true), fake.sent[2].url)
      assert.truthy(fake.sent[3].url:find("/operations/op-42?", 1, true), fake.sent[3].url)
    end,
  },
}

describe("the rulebook, rule by driver", function()
  for _, rule in ipairs(RULES) do
    describe(rule.name, function()
      for _, driver in ipairs(DRIVERS) do
        if rule.families[driver.family] then
          it(driver.name, function()
            for run = 1, rule.runs or 1 do
              local fake = fake_runtime.new()
              local scripted = server(driver.family, rule.script or {})
              local custom = rule.answer and rule.answer(fake)
              -- run k starts at the k-th answer of the script
              fake.answer = function(req, n)
                n = n + run - 1
                return custom and custom(req, n) or scripted(req, n)
              end
              local ok, message, info = driver.run(fake, rule.opts or {})
              rule.check(fake, ok, message, info)
            end
          end)
        end
      end
    end)
  end
end)
