-- dps.hubs: many devices' hub calls on one engine, driven by step(). On the
-- fake clock (spec/support/fake_runtime.lua: a fake engine, in
-- milliseconds): order per device, many devices in flight, the bounded
-- queue, items handed back, provisioning first, provisioning again once per
-- call with the refusal hold, the registration pace, request_timeout, the
-- call's deadline, the waits step() hands out, close(). Then 20 devices x 5
-- messages through one pool against the emulator. (The rules every call
-- shares run on the pool in rules_spec, driver "hubs:send".)
local Hubs = require "dps.hubs"
local fake_runtime = require "spec.support.fake_runtime"
local emulator = require "spec.support.emulator"
local shell = require "spec.support.shell"
local keys = require "spec.support.keys"
local json = require("cjson").new()

local KEY, GROUP_KEY = keys.KEY, keys.GROUP_KEY
local assigned, refused = fake_runtime.assigned, fake_runtime.refused
local DPS = "https://dps.example.invalid"

local function is_dps(req) return req.url:find("/registrations/", 1, true) ~= nil end
local function device_of(req) return req.url:match("/devices/([^/?]+)") end
local function host_of(req) return req.url:match("^https://([^/]+)") end

-- A pool on a fake engine; `answer(req, n)` as fake_runtime's (nil: 204 for
-- the hub, 200 assigned for DPS).
local function setup_pool(opts, answer)
  local fake = fake_runtime.new()
  fake.answer = function(req, n)
    local a = answer and answer(req, n)
    if a then return a end
    if is_dps(req) then return assigned(req.url:match("/registrations/([^/?]+)")) end
    return { status = 204 }
  end
  return Hubs.new(opts or {}, fake:with_engine()), fake
end

local function leaf(pool, id, extra)
  local o = { hub = "hub.example", device_id = id, symmetric_key = KEY }
  for k, v in pairs(extra or {}) do
    if v == false then o[k] = nil else o[k] = v end
  end
  return pool:add(o)
end

-- A leaf that provisions: DPS identity, no assignment.
local function provisioning_leaf(pool, id, extra)
  local o = { hub = false, device_id = false, id_scope = "0ne00000001", registration_id = id, dps_endpoint = DPS }
  for k, v in pairs(extra or {}) do o[k] = v end
  return leaf(pool, id, o)
end

-- An on_done that records every end; `ends[i] = { result, meta_or_message, info, item }`.
local function recorder()
  local ends = {}
  return ends, function(...) ends[#ends + 1] = { n = select("#", ...), ... } end
end

-- Drive the pool by step() alone until it is idle, moving the fake clock by
-- each wait, as an event loop's timer would (a bug that never ends a call
-- fails here instead of hanging).
local function drain(pool, fake)
  for _ = 1, 100000 do
    if pool:idle() then return pool:stats() end
    local wait = pool:step()
    if not pool:idle() then fake.mono = fake.mono + wait end
  end
  error("the pool is not idle after 100000 steps")
end

local function not_found()
  return { status = 404, headers = { ["iothub-errorcode"] = "DeviceNotFound", ["content-type"] = "application/json" },
    body = '{"Message":"ErrorCode:DeviceNotFound;gone"}' }
end

describe("dps.hubs on the fake clock", function()
  it("keeps each device's calls in order, one in flight per device, many devices at once", function()
    local pool, fake = setup_pool({ concurrency = 8 }, function(req)
      if not is_dps(req) then return { status = 204, takes = 1 } end
    end)
    local ends, on_done = recorder()
    for d = 1, 20 do
      local dev = leaf(pool, "d" .. d)
      for m = 1, 3 do assert.is_true(dev:send("d" .. d .. "-m" .. m, nil, on_done)) end
    end
    local stats = pool:run()
    assert.are.equal(60, #ends)
    assert.are.equal(60, stats.done)
    assert.are.equal(0, stats.failed + stats.queued)
    -- 60 requests of 1 s: the first alone (the host's warm-up), then 8 at a time
    assert.are.equal(9, fake.mono)
    local per_device, at = {}, {}
    local running = {}
    for _, req in ipairs(fake.sent) do
      local d = device_of(req)
      per_device[d] = per_device[d] or {}
      table.insert(per_device[d], req.body)
      if at[d] then assert.is_true(req.t >= at[d] + 1, d .. " had two calls in flight") end
      at[d] = req.t
      running[req.t] = (running[req.t] or 0) + 1
    end
    for d = 1, 20 do
      assert.are.same({ "d" .. d .. "-m1", "d" .. d .. "-m2", "d" .. d .. "-m3" }, per_device["d" .. d])
    end
    for _, n in pairs(running) do assert.is_true(n <= 8) end
    assert.are.same({ 1, 8 }, { running[0], running[1] })
    pool:close()
    -- slots to spare: still one call of a device at a time
    local roomy, fake2 = setup_pool({ concurrency = 8 }, function() return { status = 204, takes = 1 } end)
    local a, b = leaf(roomy, "a"), leaf(roomy, "b")
    for m = 1, 5 do
      a:send("a" .. m, nil, on_done)
      b:send("b" .. m, nil, on_done)
    end
    roomy:run()
    assert.are.equal(6, fake2.mono)
    local bodies, times = {}, {}
    for i, req in ipairs(fake2.sent) do bodies[i], times[i] = req.body, req.t end
    assert.are.same({ "a1", "b1", "a2", "b2", "a3", "b3", "a4", "b4", "a5", "b5" }, bodies)
    assert.are.same({ 0, 1, 1, 2, 2, 3, 3, 4, 4, 5 }, times)
    roomy:close()
  end)

  it("the first request to a host goes alone; the others follow when it ended (they resume its TLS session)",
    function()
      local pool, fake = setup_pool({ concurrency = 8, rate = 1e6 }, function(req)
        if is_dps(req) then
          local a = assigned(req.url:match("/registrations/([^/?]+)"))
          a.takes = 1
          return a
        end
        return { status = 204, takes = 1 }
      end)
      local ends, on_done = recorder()
      for d = 1, 5 do provisioning_leaf(pool, "p" .. d):send("x", nil, on_done) end
      local old = leaf(pool, "old", { hub = "old.example" })
      old:send("y", nil, on_done)
      drain(pool, fake)
      local at = {}
      for _, req in ipairs(fake.sent) do
        local host = host_of(req)
        at[host] = at[host] or {}
        table.insert(at[host], req.t)
      end
      assert.are.same({ 0, 1, 1, 1, 1 }, at["dps.example.invalid"])
      assert.are.same({ 0 }, at["old.example"]) -- another host warms on its own, at once
      assert.are.same({ 1, 2, 2, 2, 2 }, at["hub.example"]) -- p1 warms the hub while the others are assigned
      assert.are.equal(6, #ends)
      pool:close()
    end)

  it("a step starts at most STARTS_PER_STEP requests; the rest start at the next step, at once", function()
    local pool, fake = setup_pool({ concurrency = 32 }, function() return { status = 204, takes = 1 } end)
    for d = 1, 20 do leaf(pool, "d" .. d):send("x", nil, function() end) end
    local per_step = require("dps.runtime").STARTS_PER_STEP
    -- the host's warm-up alone, then per_step at a time until all 20 are out
    local want, want_waits, left = { 1 }, { 1 }, 19
    repeat
      want[#want + 1] = math.min(per_step, left)
      left = left - want[#want]
      want_waits[#want_waits + 1] = left > 0 and 0 or nil
    until left == 0
    want[#want + 1] = 0
    local started, waits = {}, {}
    for i = 1, #want do
      local before = #fake.sent
      waits[i] = pool:step()
      started[i] = #fake.sent - before
      if i == 1 then fake.mono = 1 end -- the first (the host's warm-up) is answered
    end
    assert.is_true(per_step < 19)
    assert.are.same(want, started)
    for i = #want_waits + 1, #waits do waits[i] = nil end
    assert.are.same(want_waits, waits)
    pool:close()
  end)

  it("a full queue refuses the call at once (kind queue_full); nothing queued is lost", function()
    local pool, fake = setup_pool({ queue = 3 })
    local dev = leaf(pool, "d1")
    local ends, on_done = recorder()
    local refused_bodies = {}
    for i = 1, 5 do
      local ok, message, info = dev:send("m" .. i, nil, on_done)
      if not ok then
        assert.are.equal("queue_full", info.kind)
        assert.truthy(message:find("queue 3", 1, true), message)
        refused_bodies[#refused_bodies + 1] = "m" .. i
      end
    end
    assert.are.same({ "m4", "m5" }, refused_bodies)
    assert.are.equal(3, dev:pending())
    drain(pool, fake)
    assert.are.equal(3, #ends)
    for _, e in ipairs(ends) do assert.is_true(e[1]) end
    assert.is_true(dev:send("m4", nil, on_done)) -- room again
    drain(pool, fake)
    assert.are.equal(4, #ends)
    pool:close()
  end)

  it("a failed call hands back what was given, so the app can keep it", function()
    local pool, fake = setup_pool({}, function(req)
      if not is_dps(req) then return refused(400) end
    end)
    local dev = leaf(pool, "d1")
    local ends, on_done = recorder()
    local opts = { properties = { seq = 1 }, content_type = "application/json" }
    local list = { { body = "a" }, { body = "b" } }
    assert.is_true(dev:send("reading", opts, on_done))
    assert.is_true(dev:send_batch(list, on_done))
    assert.is_true(dev:complete("lock-1", on_done))
    assert.is_true(dev:send("bare", nil, on_done)) -- no options: it waits as its body alone
    drain(pool, fake)
    assert.are.equal(4, #ends)
    for _, e in ipairs(ends) do
      assert.is_nil(e[1])
      assert.are.equal("bad_request", e[3].kind)
      assert.are.equal(4, e.n)
    end
    assert.are.same({ step = "send", body = "reading", opts = opts }, ends[1][4])
    assert.are.equal(opts, ends[1][4].opts)
    assert.are.equal(list, ends[2][4].messages)
    assert.are.same({ step = "complete", message = "lock-1" }, ends[3][4])
    assert.are.same({ step = "send", body = "bare" }, ends[4][4])
    assert.are.equal("send", ends[4][3].step)
    local stats = pool:stats()
    assert.are.equal(4, stats.failed)
    assert.are.equal(0, stats.done)
    pool:close()
  end)

  it("receive: the message, or false when nothing waits; a settle goes to the message's lock", function()
    local pool, fake = setup_pool({}, function(req, n)
      if req.method == "GET" then
        if n == 1 then
          return { status = 200, headers = { etag = '"lock-9"', ["iothub-app-k"] = "v" }, body = "hello" }
        end
        return { status = 204 }
      end
    end)
    local dev = leaf(pool, "d1")
    local ends, on_done = recorder()
    dev:receive(on_done)
    dev:receive(on_done)
    drain(pool, fake)
    assert.are.equal("hello", ends[1][1].body)
    assert.are.same({ k = "v" }, ends[1][1].properties)
    assert.is_false(ends[2][1])
    dev:reject(ends[1][1], on_done)
    dev:abandon("lock-9", on_done)
    drain(pool, fake)
    assert.are.equal("DELETE", fake.sent[3].method)
    assert.truthy(fake.sent[3].url:find("/messages/devicebound/lock%-9%?api%-version=[^&]+&reject$"), fake.sent[3].url)
    assert.truthy(fake.sent[4].url:find("/messages/devicebound/lock-9/abandon?", 1, true), fake.sent[4].url)
    assert.are.equal('"lock-9"', fake.sent[4].headers["if-match"])
    pool:close()
  end)

  it("provisions first a device added without an assignment; its calls wait, then go to the assigned hub",
    function()
      local dir = shell.tmpdir("dps-hubs")
      finally(function() shell.succeeds("rm -rf " .. shell.quote(dir)) end)
      local path = dir .. "/leaf.json"
      local pool, fake = setup_pool()
      local dev = provisioning_leaf(pool, "leaf", { cache = path })
      assert.are.equal("pending", select(3, dev:provisioned()).kind)
      local ends, on_done = recorder()
      assert.is_true(dev:send("one", nil, on_done))
      assert.is_true(dev:send("two", nil, on_done))
      drain(pool, fake)
      assert.are.equal(3, #fake.sent)
      assert.are.equal("PUT", fake.sent[1].method)
      assert.truthy(fake.sent[1].url:find("^https://dps.example.invalid/0ne00000001/registrations/leaf/register"))
      assert.are.same({ "hub.example", "hub.example" }, { host_of(fake.sent[2]), host_of(fake.sent[3]) })
      assert.are.same({ "one", "two" }, { fake.sent[2].body, fake.sent[3].body })
      assert.is_true(ends[1][1] and ends[2][1])
      local state, how = dev:provisioned()
      assert.are.equal("hub.example", state.assignedHub)
      assert.are.equal("service", how.source)
      assert.is_true(how.cache_written)
      local stats = pool:stats()
      assert.are.same({ 1, 0, 0 }, { stats.provisioned, stats.provision_failed, stats.provisioning })
      pool:close()
      -- again (a reboot): the cache answers, no DPS request
      local again, fake2 = setup_pool()
      local dev2 = provisioning_leaf(again, "leaf", { cache = path })
      assert.are.equal("cache", select(2, dev2:provisioned()).source)
      dev2:send("three", nil, on_done)
      drain(again, fake2)
      assert.are.equal(1, #fake2.sent)
      assert.are.equal("hub.example", host_of(fake2.sent[1]))
      again:close()
    end)

  it("a failed provisioning ends the calls that waited with its failure and their items; a later call tries again",
    function()
      local fails = true
      local pool, fake = setup_pool({ provision_timeout = 5 }, function(req)
        if is_dps(req) and fails then return refused(401) end
      end)
      local dev = provisioning_leaf(pool, "leaf")
      local ends, on_done = recorder()
      dev:send("one", nil, on_done)
      dev:send("two", nil, on_done)
      drain(pool, fake)
      assert.are.equal(2, #ends)
      for i, e in ipairs(ends) do
        assert.is_nil(e[1])
        assert.are.equal("auth", e[3].kind)
        assert.are.equal(i == 1 and "one" or "two", e[4].body)
      end
      assert.are.equal("auth", select(3, dev:provisioned()).kind)
      fails = false
      dev:send("three", nil, on_done)
      drain(pool, fake)
      assert.is_true(ends[3][1])
      local methods = {}
      for i, req in ipairs(fake.sent) do methods[i] = req.method end
      assert.are.same({ "PUT", "PUT", "POST" }, methods)
      pool:close()
    end)

  describe("provisioning again when the hub refuses the device", function()
    local STATE = { assignedHub = "old.example", deviceId = "leaf", registrationId = "leaf" }

    local function registrations(fake)
      local n = 0
      for _, req in ipairs(fake.sent) do if req.method == "PUT" then n = n + 1 end end
      return n
    end

    it("moved: provisions again once, and the call goes on at the new hub", function()
      local pool, fake = setup_pool({}, function(req)
        if host_of(req) == "old.example" then return not_found() end
      end)
      local dev = provisioning_leaf(pool, "leaf", { state = STATE })
      local ends, on_done = recorder()
      dev:send("x", nil, on_done)
      drain(pool, fake)
      assert.is_true(ends[1][1])
      assert.are.same({ "old.example", "dps.example.invalid", "hub.example" },
        { host_of(fake.sent[1]), host_of(fake.sent[2]), host_of(fake.sent[3]) })
      assert.are.equal(1, pool:stats().reprovisions)
      pool:close()
    end)

    it("still refused: once per call, then once per refusal episode (the hold, doubling, kept in the cache)",
      function()
        local dir = shell.tmpdir("dps-hubs")
        finally(function() shell.succeeds("rm -rf " .. shell.quote(dir)) end)
        local path = dir .. "/leaf.json"
        local pool, fake = setup_pool({}, function(req)
          if not is_dps(req) then return not_found() end
        end)
        local dev = provisioning_leaf(pool, "leaf", { state = STATE, cache = path })
        local ends, on_done = recorder()
        for i = 1, 3 do dev:send("m" .. i, nil, on_done) end
        drain(pool, fake)
        assert.are.equal(1, registrations(fake)) -- ten calls would make one too
        local wall = fake.rt.now()
        for _, e in ipairs(ends) do
          assert.are.equal("not_found", e[3].kind)
          assert.are.equal(math.floor(wall + 60), e[3].reprovision_held_until)
        end
        assert.are.same({ refusals = 1, not_before = math.floor(wall + 60) }, json.decode(shell.read(path)).hold)
        fake.mono = fake.mono + 61 -- the hold is over: once more, then twice as long
        dev:send("m4", nil, on_done)
        drain(pool, fake)
        assert.are.equal(2, registrations(fake))
        assert.are.equal(2, json.decode(shell.read(path)).hold.refusals)
        pool:close()
        -- a reboot obeys the hold in the cache
        local again, fake2 = setup_pool({}, function(req)
          if not is_dps(req) then return not_found() end
        end)
        fake2.mono = fake.mono
        local dev2 = provisioning_leaf(again, "leaf", { cache = path })
        dev2:send("m5", nil, on_done)
        drain(again, fake2)
        assert.are.equal(0, registrations(fake2))
        assert.are.equal(1, #fake2.sent)
        again:close()
      end)

    it("a call that succeeds ends the refusal episode", function()
      local refuse = true
      local pool, fake = setup_pool({}, function(req)
        if not is_dps(req) and refuse then return not_found() end
      end)
      local dev = provisioning_leaf(pool, "leaf", { state = STATE })
      local ends, on_done = recorder()
      dev:send("m1", nil, on_done)
      drain(pool, fake)
      assert.is_not_nil(ends[1][3].reprovision_held_until)
      refuse = false
      dev:send("m2", nil, on_done) -- within the hold, the hub takes it again
      drain(pool, fake)
      assert.is_true(ends[2][1])
      refuse = true
      dev:send("m3", nil, on_done) -- a new refusal: provisions again at once
      drain(pool, fake)
      assert.are.equal(2, registrations(fake))
      pool:close()
    end)

    it("without a DPS identity a refusal is just the failure", function()
      local pool, fake = setup_pool({}, function() return not_found() end)
      local dev = leaf(pool, "leaf")
      local ends, on_done = recorder()
      dev:send("x", nil, on_done)
      drain(pool, fake)
      assert.are.equal("not_found", ends[1][3].kind)
      assert.are.equal(1, #fake.sent)
      pool:close()
    end)
  end)

  it("paces registrations to rate per minute and holds them all on a 429 (the batch's rules, dps.pace)", function()
    local pool, fake = setup_pool({ rate = 60 })
    for _, id in ipairs({ "a", "b", "c", "d", "e" }) do provisioning_leaf(pool, id) end
    drain(pool, fake)
    local t = {}
    for i, req in ipairs(fake.sent) do t[i] = req.t end
    assert.are.same({ 0, 1, 2, 3, 4 }, t)
    pool:close()

    local throttled = false
    local pool2, fake2 = setup_pool({ rate = 6000 }, function(req)
      if req.url:find("/registrations/b/", 1, true) and not throttled then
        throttled = true
        return refused(429, "5")
      end
    end)
    for _, id in ipairs({ "a", "b", "c", "d" }) do provisioning_leaf(pool2, id) end
    drain(pool2, fake2)
    assert.are.equal(4, pool2:stats().provisioned)
    local at_429 = fake2.sent[2].t
    for i = 3, #fake2.sent do
      assert.is_true(fake2.sent[i].t >= at_429 + 5, "registered during the hold, at " .. fake2.sent[i].t)
    end
    pool2:close()
  end)

  it("request_timeout limits one request: a hung device frees its slot, the call goes on", function()
    local hung = true
    local pool, fake = setup_pool({ concurrency = 1, request_timeout = 5, timeout = 40 }, function(req)
      if device_of(req) == "slow" and hung then
        hung = false
        return { hang = true }
      end
    end)
    local ends, on_done = recorder()
    leaf(pool, "slow"):send("s", nil, on_done)
    leaf(pool, "fast"):send("f", nil, on_done)
    drain(pool, fake)
    assert.are.equal(5, fake.sent[1].timeout)
    assert.are.equal("fast", device_of(fake.sent[2]))
    assert.are.equal(5, fake.sent[2].t) -- behind the hung one, on the one slot
    assert.are.equal("slow", device_of(fake.sent[3]))
    assert.is_true(ends[1][1] and ends[2][1])
    pool:close()
  end)

  it("the call's deadline bounds its retries, even while it waits for a slot", function()
    local pool, fake = setup_pool({ concurrency = 1, timeout = 5, request_timeout = 30 }, function(req)
      if device_of(req) == "retries" then return refused(503, "1") end
      return { hang = true }
    end)
    local ends, on_done = recorder()
    local at = {}
    leaf(pool, "retries"):send("r", nil, function(...) at.retries = fake.mono; on_done(...) end)
    pool:step()
    pool:step() -- sent at 0 s, 503: again at 1 s
    fake.mono = 0.5
    leaf(pool, "hangs"):send("h", nil, function(...) at.hangs = fake.mono; on_done(...) end)
    drain(pool, fake)
    -- its retry waited for the slot the hung request holds: it ends at its deadline, not when the slot frees
    assert.are.equal(5, at.retries)
    assert.are.equal("service", ends[1][3].kind)
    assert.are.equal(5.5, at.hangs)
    assert.are.equal("timeout", ends[2][3].kind)
    for _, req in ipairs(fake.sent) do
      if device_of(req) == "retries" then assert.is_true(req.t + req.timeout <= 5) end
    end
    assert.are.equal(1, #fake.sent - 1)
    pool:close()
  end)

  it("step() hands out the wait until the next thing to do", function()
    local pool, fake = setup_pool({}, function(_, n)
      if n == 1 then return refused(503, "7") end
      return { status = 204, takes = 2 }
    end)
    assert.are.equal(Hubs.IDLE_WAIT, (pool:step())) -- nothing to do
    local dev = leaf(pool, "d1")
    local ends, on_done = recorder()
    dev:send("x", nil, on_done)
    assert.are.equal(0, (pool:step()))  -- sent; its answer is there at once
    assert.are.equal(7, (pool:step()))  -- 503, Retry-After 7
    fake.mono = 7
    assert.are.equal(2, (pool:step()))  -- sent again; the answer takes 2 s
    fake.mono = 9
    assert.are.equal(Hubs.IDLE_WAIT, (pool:step()))
    assert.is_true(ends[1][1])
    assert.is_true(pool:idle())
    -- a registration waiting for the pace
    local paced = setup_pool({ rate = 6 })
    provisioning_leaf(paced, "a")
    provisioning_leaf(paced, "b")
    assert.are.equal(0, (paced:step()))   -- a registers; its answer is there at once
    assert.are.equal(10, (paced:step()))  -- a assigned; b waits for its turn: 6 a minute
    pool:close()
    paced:close()
  end)

  it("close() ends every call not over with kind closed, handing back its item; calls after it are refused",
    function()
      local pool = setup_pool({}, function() return { hang = true } end)
      local ends, on_done = recorder()
      local a, b = leaf(pool, "a"), leaf(pool, "b")
      for i = 1, 3 do a:send("a" .. i, nil, on_done) end
      b:receive(on_done)
      b:send("b1", nil, on_done)
      pool:step() -- a1 and b's receive in flight
      assert.are.equal(5, pool:stats().queued)
      assert.is_true(pool:close())
      assert.are.equal(5, #ends)
      local bodies = {}
      for _, e in ipairs(ends) do
        assert.is_nil(e[1])
        assert.are.equal("closed", e[3].kind)
        bodies[#bodies + 1] = e[4].body or e[4].step
      end
      table.sort(bodies)
      assert.are.same({ "a1", "a2", "a3", "b1", "receive" }, bodies)
      assert.is_true(pool:close())
      local ok, _, info = a:send("late", nil, on_done)
      assert.is_nil(ok)
      assert.are.equal("closed", info.kind)
      assert.are.equal(5, #ends)
      assert.has_error(function() pool:step() end, "pool:step: the pool is closed")
    end)

  it("raises on misuse, at the caller's line", function()
    local pool = setup_pool()
    local dev = leaf(pool, "d1")
    local function raised_here(f, pattern)
      local ok, message = pcall(f)
      assert.is_false(ok)
      assert.truthy(message:find("hubs_spec.lua:%d+: " .. pattern), message)
    end
    raised_here(function() dev:send(42, nil, function() end) end, "send: the body must be a string")
    raised_here(function() dev:send("x", { bogus = 1 }, function() end) end, "send: unknown option 'bogus'")
    raised_here(function() dev:send("x") end, "send: on_done must be a function")
    raised_here(function() dev:send_batch({}, function() end) end, "send_batch: give a non%-empty list")
    raised_here(function() dev:complete({}, function() end) end, "dps.hubs: complete needs a message")
    raised_here(function()
      pool:add{ hub = "h.example", device_id = "d", cert_file = "/x.pem", key_file = "/x.key" }
    end, "pool:add: X.509 devices")
    raised_here(function() pool:add{ symmetric_key = KEY } end, "pool:add: give the assignment")
    raised_here(function() pool:add{ hub = "h.example", device_id = "d", symmetric_key = KEY, cache = "/c.json" } end,
      "pool:add: cache, dps_endpoint and payload need the DPS identity")
    raised_here(function() Hubs.new{ concurrency = 0 } end, "dps.hubs: concurrency must be")
    raised_here(function() Hubs.new{ bogus = true } end, "dps.hubs: unknown option 'bogus'")
    pool:close()
    raised_here(function() pool:add{ hub = "h.example", device_id = "d", symmetric_key = KEY } end,
      "pool:add: the pool is closed")
  end)

  it("keeps keys out of sight: the pool and its devices print and serialise without them", function()
    local pool = setup_pool()
    local dev = provisioning_leaf(pool, "leaf", { symmetric_key = false, group_key = GROUP_KEY })
    local seen = {}
    local function walk(v, depth)
      if type(v) == "string" then
        assert.is_nil(v:find(GROUP_KEY, 1, true))
        assert.is_nil(v:find(KEY, 1, true))
      elseif type(v) == "table" and not seen[v] and depth < 6 then
        seen[v] = true
        for k, x in pairs(v) do walk(k, depth + 1); walk(x, depth + 1) end
      end
    end
    walk(pool, 0)
    walk(dev, 0)
    assert.truthy(tostring(dev):find("leaf", 1, true))
    pool:close()
  end)
end)

describe("dps.hubs at the emulator", function()
  it("20 devices x 5 messages through one pool: provisioned, every message acknowledged, sessions resumed",
    function()
      local emu = emulator.start{ retry_after = "0",
        enrollments = { { type = "group", group_id = "g1", symmetric_key = GROUP_KEY } } }
      finally(function() emu:stop() end)
      local pool = Hubs.new{ ca_file = emu.ca_file, concurrency = 8, rate = 60000 }
      local acked, failures = 0, {}
      local devices = {}
      for d = 1, 20 do
        devices[d] = pool:add{ id_scope = emu.id_scope, registration_id = string.format("pool-%02d", d),
          group_key = GROUP_KEY, dps_endpoint = emu.endpoint, endpoint = emu.endpoint }
        for m = 1, 5 do
          assert(devices[d]:send(string.format("d%02d-m%d", d, m), nil, function(ok, message)
            if ok then acked = acked + 1 else failures[#failures + 1] = message end
          end))
        end
      end
      local stats = pool:run()
      pool:close()
      assert.are.same({}, failures)
      assert.are.equal(100, acked)
      assert.are.equal(20, stats.provisioned)
      local telemetry, full = {}, 0
      for _, e in ipairs(emu:log()) do
        if e.event == "telemetry" then
          telemetry[e.device_id] = telemetry[e.device_id] or {}
          table.insert(telemetry[e.device_id], e.body)
        elseif e.event == "connection" and not e.resumed then
          full = full + 1
        end
      end
      for d = 1, 20 do
        local id = string.format("pool-%02d", d)
        local want = {}
        for m = 1, 5 do want[m] = string.format("d%02d-m%d", d, m) end
        assert.are.same(want, telemetry[id]) -- every message, in its order
      end
      assert.is_true(full < 20, full .. " full TLS handshakes for 20 devices")
    end)
end)
