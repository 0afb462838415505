-- dps.batch against the emulator (per-device results, successes mixed with
-- failures; the overall deadline against a server that hangs; driving by
-- step() alone, and a batch of one), then the batch's own rules on the
-- fake clock: pacing, the 429 hold, registrations again, what cannot start
-- in time, the clock offset, results. (The rules every path shares are in
-- rules_spec.)
local dps = require "dps"
local core = require "dps.core"
local emulator = require "spec.support.emulator"
local timing = require "spec.support.timing"
local fake_runtime = require "spec.support.fake_runtime"

-- Under valgrind (the suite's memcheck run) everything is ~30x slower.
local keys = require "spec.support.keys"

local GROUP = { type = "group", group_id = "g1", symmetric_key = keys.GROUP_KEY }

local function batch(emu, extra)
  local o = { id_scope = emu.id_scope, group_key = keys.GROUP_KEY, endpoint = emu.endpoint,
    ca_file = emu.ca_file, concurrency = 4, rate = 60000 }
  for k, v in pairs(extra or {}) do o[k] = v end
  return dps.batch(o)
end

local function registers(emu)
  local out = {}
  for _, e in ipairs(emu:requests()) do
    if e.kind == "register" then out[#out + 1] = e end
  end
  return out
end

describe("dps.batch", function()
  it("provisions many devices, successes mixed with per-device failures", function()
    local emu = emulator.start{
      retry_after = "0",
      enrollments = { GROUP, { type = "individual", registration_id = "solo", symmetric_key = keys.KEY_32 } },
      scenarios = {
        ["leaf-bad"] = { polls_before_assignment = 0, result = "failed" },
        ["leaf-503"] = { register = { { status = 503, retry_after = "0" } } },
      },
    }
    finally(function() emu:stop() end)
    local b = batch(emu)
    local ids = { "leaf-1", "leaf-bad", "leaf-2", "leaf-503", "leaf-3", "solo", "wrong-key" }
    for _, id in ipairs(ids) do
      if id == "solo" then
        b:add(id, { symmetric_key = keys.KEY_32, payload = { n = 1 } })
      elseif id == "wrong-key" then
        b:add(id, { symmetric_key = keys.OTHER_KEY })
      else
        b:add(id)
      end
    end
    local seen, progress = {}, {}
    local summary = b:run{
      on_result = function(id, state, message, info) seen[id] = { state = state, message = message, info = info } end,
      on_progress = function(done, total) progress[#progress + 1] = done .. "/" .. total end,
    }
    assert.equal(7, summary.total)
    assert.equal(5, summary.assigned) -- leaf-1..3, leaf-503 (after its retry), solo
    assert.equal(2, summary.failed)
    assert.equal("7/7", progress[#progress])
    assert.equal("emulated-hub.azure-devices.net", seen["leaf-503"].state.assignedHub)
    assert.equal("failed", seen["leaf-bad"].info.kind)
    assert.equal("auth", seen["wrong-key"].info.kind)
    assert.is_nil(seen["wrong-key"].message:find(keys.OTHER_KEY, 1, true))
    local results = b:results()
    assert.equal(7, #results)
    for i, r in ipairs(results) do assert.equal(ids[i], r.id) end
    assert.equal("leaf-1", (b:result("leaf-1")).deviceId)
    assert.is_true(b:done())
    -- connections were shared: fewer than the devices
    assert.is_true(summary.connects < #ids, "connects " .. summary.connects)
    b:close()
    assert.is_true(b:close())
  end)

  it("holds at most 64 KiB of one answer unless max_body says more", function()
    local huge = { fault = "raw", status = 202,
      body = '{"operationId":"' .. string.rep("x", 70 * 1024) .. '","status":"assigning"}' }
    local emu = emulator.start{ retry_after = "0", enrollments = { GROUP },
      scenarios = { ["big-1"] = { register = { huge } }, ["big-2"] = { register = { huge } } } }
    finally(function() emu:stop() end)
    local b = batch(emu)
    b:add("big-1")
    b:run()
    assert.equal("too_large", select(3, b:result("big-1")).kind)
    b:close()
    b = batch(emu, { max_body = 1024 * 1024 })
    b:add("big-2")
    b:run()
    local _, message, info = b:result("big-2")
    assert.equal("protocol", info.kind, message) -- read whole: an operationId over 1024 characters
    b:close()
  end)

  it("ends every open device at the overall deadline, against a server that hangs", function()
    local emu = emulator.start{ retry_after = "0", enrollments = { GROUP },
      scenarios = { ["slow-1"] = { poll = { { fault = "hang", seconds = 600 } } } } }
    finally(function() emu:stop() end)
    -- the deadline must leave the first device time to reach the server
    -- (a TLS handshake: slow under valgrind or on a busy machine)
    local deadline = timing.margin(0.6)
    -- (the hung poll must outlast the deadline: a request_timeout shorter than
    -- a deadline stretched under valgrind would end it, and a retry answers)
    -- (and the device's own deadline, device_timeout, must outlast it too)
    local b = batch(emu, { timeout = deadline, request_timeout = deadline, device_timeout = 2 * deadline,
      concurrency = 1, rate = 60 / deadline }) -- second never starts
    b:add("slow-1")
    b:add("slow-2")
    local summary = b:run()
    assert.equal(0, summary.assigned)
    for _, r in ipairs(b:results()) do
      assert.equal("timeout", r.info.kind)
      assert.truthy(r.message:find(string.format("no assignment within %g s", deadline), 1, true), r.message)
    end
    assert.equal(1, #registers(emu))
  end)

  it("runs from step() alone, as inside an event loop; a batch of one too", function()
    -- one device's registration never gets an answer: while only it is
    -- left, nothing can happen, and step must still return at once
    local emu = emulator.start{ retry_after = "0", enrollments = { GROUP },
      scenarios = { ["looped-hung"] = { register = { { fault = "hang", seconds = 600 } } } } }
    finally(function() emu:stop() end)
    -- The devices that get answers must finish inside device_timeout, which
    -- counts computing too: four TLS handshakes on one emulated CPU take
    -- seconds under qemu-user.
    local device_timeout = timing.EMULATED and 5 or timing.margin(1)
    local b = batch(emu, { device_timeout = device_timeout, request_timeout = device_timeout })
    for i = 1, 3 do b:add("looped-" .. i) end
    b:add("looped-hung")
    -- (a step that blocked on the hung request would block for the whole
    -- request_timeout, ten times this; on a busy machine page faults and
    -- disk waits count as waiting too, hence the margin)
    local blocked = timing.margin(0.1)
    local steps, t0 = 0, core.monotime()
    while not b:done() and core.monotime() - t0 < 10 + device_timeout do -- past the hung device's deadline
      -- waiting, not computing (a TLS handshake under qemu-user takes a second)
      local waited, wait, fds = timing.waited(b.step, b)
      assert.is_true(waited < blocked, "step blocked for " .. waited .. " s")
      assert.is_table(fds)
      steps = steps + 1
      core.sleep(math.min(wait, 0.005))
    end
    assert.is_true(b:done())
    for _, r in ipairs(b:results()) do
      if r.id == "looped-hung" then
        assert.equal("timeout", r.info.kind)
      else
        assert.is_table(r.state, r.message)
      end
    end
    local one = dps.start_provision{ id_scope = emu.id_scope, registration_id = "single", group_key = keys.GROUP_KEY,
      endpoint = emu.endpoint, ca_file = emu.ca_file }
    repeat core.sleep(math.min(one:step(), 0.005)) until one:done()
    assert.equal("single", (one:result()).deviceId)
    one:close()
  end)

  it("raises on misuse", function()
    local o = { id_scope = "0ne00000001", group_key = keys.GROUP_KEY }
    assert.has_error(function() dps.batch{ id_scope = "0ne00000001", concurency = 4 } end,
      "dps.batch: unknown option 'concurency'")
    assert.has_error(function() dps.batch{ id_scope = "0ne00000001", concurrency = 0 } end,
      "dps.batch: concurrency must be an integer from 1 to 1024")
    local b = dps.batch(o)
    b:add("a")
    assert.has_error(function() b:add("a") end, "batch:add: a was added already")
    assert.has_error(function() b:add("b c") end)
    assert.has_error(function() b:add("d", { payload = "x" }) end)
    assert.has_error(function() b:add("e", { symmetric_key = "not base64!" }) end)
    local nokey = dps.batch{ id_scope = "0ne00000001" }
    assert.has_error(function() nokey:add("f") end, "batch:add: f needs a symmetric_key (the batch has no group_key)")
    b:close()
    assert.has_error(function() b:step() end, "batch:step: the batch is closed")
    nokey:close()
  end)
end)

describe("dps.batch on the fake clock", function()
  local assigned, refused = fake_runtime.assigned, fake_runtime.refused

  -- The registration ID a request is for.
  local function id_of(req)
    return req.url:match("/registrations/([^/?]+)")
  end

  -- A batch of `ids` on the fake runtime; `answer(req, id, nth request of that device)`.
  local function run(ids, opts, answer)
    local fake = fake_runtime.new()
    local count = {}
    fake.answer = function(req)
      local id = id_of(req)
      count[id] = (count[id] or 0) + 1
      return answer and answer(req, id, count[id]) or assigned(id)
    end
    local o = { id_scope = "0ne00000001", group_key = keys.GROUP_KEY, endpoint = "https://dps.example.invalid",
      concurrency = 4, rate = 60 }
    for k, v in pairs(opts or {}) do o[k] = v end
    local b = dps.batch(o, fake:with_engine())
    for _, id in ipairs(ids) do b:add(id) end
    local summary = b:run()
    return b, fake, summary
  end

  local function registrations(fake)
    local out = {}
    for _, req in ipairs(fake.sent) do
      if req.method == "PUT" then out[#out + 1] = { t = req.t, id = id_of(req) } end
    end
    return out
  end

  it("paces registrations to rate per minute", function()
    local b, fake, summary = run({ "a", "b", "c", "d", "e" }, { rate = 60 })
    assert.equal(5, summary.assigned)
    local t = {}
    for i, r in ipairs(registrations(fake)) do t[i] = r.t end
    assert.are.same({ 0, 1, 2, 3, 4 }, t)
    b:close()
  end)

  it("a step starts at most STARTS_PER_STEP new devices; the rest start at the next step, at once", function()
    local fake = fake_runtime.new()
    fake.answer = function(req) return assigned(id_of(req)) end
    local b = dps.batch({ id_scope = "0ne00000001", group_key = keys.GROUP_KEY,
      endpoint = "https://dps.example.invalid", concurrency = 32, rate = 1e6 }, fake:with_engine())
    for i = 1, 10 do b:add("d" .. i) end
    local per_step = require("dps.runtime").STARTS_PER_STEP
    assert.is_true(per_step < 10)
    local started, waits = {}, {}
    for i = 1, 3 do
      local before = #fake.sent
      waits[i] = b:step()
      started[i] = #fake.sent - before
    end
    assert.are.same({ per_step, per_step, 10 - 2 * per_step }, started)
    assert.are.same({ 0, 0 }, { waits[1], waits[2] })
    b:close()
  end)

  it("paces a registration again (after 503, 409 or 429) like a first one", function()
    for _, first in ipairs({ refused(503), refused(409), refused(429, "0") }) do
      -- a's back-off would send it again at 0.5 s; the pace allows one a second
      local b, fake, summary = run({ "a", "b", "c" }, { rate = 60 }, function(_, id, n)
        if id == "a" and n == 1 then return first end
      end)
      assert.equal(3, summary.assigned)
      local regs = registrations(fake)
      assert.equal(4, #regs)
      for i = 2, #regs do
        assert.is_true(regs[i].t - regs[i - 1].t >= 1 - 1e-9,
          string.format("%s at %.2f s after %s at %.2f s", regs[i].id, regs[i].t, regs[i - 1].id, regs[i - 1].t))
      end
      b:close()
    end
  end)

  it("holds every registration, the throttled device's too, for the Retry-After of a 429", function()
    local b, fake, summary = run({ "a", "b", "c", "d" }, { rate = 6000 }, function(_, id, n)
      if id == "b" and n == 1 then return refused(429, "5") end
    end)
    assert.equal(4, summary.assigned)
    local regs = registrations(fake)
    local at_429 = regs[2].t
    assert.equal("b", regs[2].id)
    for i = 3, #regs do
      assert.is_true(regs[i].t >= at_429 + 5, regs[i].id .. " registered during the hold, at " .. regs[i].t)
    end
    b:close()
  end)

  it("fails at once what cannot register before its deadline: a Retry-After past it", function()
    local ids = {}
    for i = 1, 50 do ids[i] = "dev-" .. i end
    local b, fake, summary = run(ids, { rate = 6000, concurrency = 1, timeout = 8 }, function()
      return refused(429, "999999")
    end)
    assert.equal(50, summary.total)
    assert.equal(0, summary.assigned)
    assert.equal(1, #fake.sent) -- the first registration's 429 ends them all
    assert.is_true(fake.mono < 1, "ended at " .. fake.mono .. " s")
    for _, r in ipairs(b:results()) do
      assert.equal("timeout", r.info.kind, r.message)
      assert.is_true(r.info.retry_after > 8)
    end
    b:close()
  end)

  it("fails at once a device waiting to register again when the hold reaches past its deadline", function()
    local b, fake, summary = run({ "a", "b" }, { rate = 6000, device_timeout = 10, timeout = 1000 },
      function(_, id, n)
        if id == "a" and n == 1 then return refused(503) end -- a registers again after 0.5 s…
        if id == "b" then return refused(429, "100") end     -- …but b's 429 holds every registration 100 s
      end)
    assert.equal(0, summary.assigned)
    assert.equal(2, #fake.sent)
    assert.is_true(fake.mono < 1, "a waited until " .. fake.mono .. " s")
    local _, message, info = b:result("a")
    assert.equal("timeout", info.kind, message)
    assert.truthy(message:find("held", 1, true), message)
    b:close()
  end)

  it("applies request_timeout to each request, within the device's deadline", function()
    local b, fake, summary = run({ "hung", "fast" }, { request_timeout = 5, device_timeout = 12, concurrency = 1 },
      function(_, id) if id == "hung" then return { hang = true } end end)
    assert.equal(1, summary.assigned)
    for _, req in ipairs(fake.sent) do assert.is_true(req.timeout <= 5) end
    local fast
    for _, req in ipairs(fake.sent) do if id_of(req) == "fast" then fast = fast or req.t end end
    -- the hung device's first request frees its slot after 5 s; it tries again after that
    assert.is_true(fast <= 5 + 1, "the first device behind it started at " .. tostring(fast))
    assert.equal("timeout", select(3, b:result("hung")).kind)
    b:close()
  end)

  it("signs with the clock offset a device learnt, in its retry and in the devices after it", function()
    local server_skew = 2 * 86400
    local b, fake, summary = run({ "a", "b" }, { concurrency = 1 }, function(req)
      local se = tonumber(req.headers.authorization:match("se=(%d+)"))
      local server_time = req.wall + server_skew
      if se <= server_time then return refused(401, nil, fake_runtime.http_date(server_time)) end
    end)
    assert.equal(2, summary.assigned)
    assert.equal(3, #fake.sent) -- a: 401, then signed with the server's time; b: signed so from the start
    local first_of_b = fake.sent[3]
    assert.equal("b", id_of(first_of_b))
    assert.equal(math.floor(first_of_b.wall + server_skew) + 3600,
      tonumber(first_of_b.headers.authorization:match("se=(%d+)")))
    b:close()
  end)

  it("result(id) answers for every device: assigned, failed, still running; raises for an unknown ID", function()
    local fake = fake_runtime.new()
    fake.answer = function(req)
      local id = id_of(req)
      if id == "bad" then return refused(400) end
      if id == "slow" then return { hang = true } end
      return assigned(id)
    end
    local b = dps.batch({ id_scope = "0ne00000001", group_key = keys.GROUP_KEY,
      endpoint = "https://dps.example.invalid", rate = 6000, request_timeout = 50 }, fake:with_engine())
    b:add("good")
    b:add("bad")
    b:add("slow")
    for _ = 1, 10 do -- an event loop's timer, every 20 ms
      b:step()
      fake.mono = fake.mono + 0.02
    end
    assert.equal("good", (b:result("good")).deviceId)
    local state, message, info = b:result("bad")
    assert.is_nil(state)
    assert.equal("bad_request", info.kind)
    assert.truthy(message:find("HTTP 400", 1, true), message)
    state, message, info = b:result("slow")
    assert.is_nil(state)
    assert.equal("pending", info.kind, message)
    assert.has_error(function() b:result("never-added") end, "batch:result: never-added was never added")
    b:close()
  end)
end)

describe("dps.batch resumed: one assignment cache per device (cache_dir)", function()
  local shell = require "spec.support.shell"
  local dir

  before_each(function() dir = shell.tmpdir("dps-batch-caches") end)
  after_each(function() shell.succeeds("rm -rf " .. shell.quote(dir)) end)

  local function id_of(req)
    return req.url:match("/registrations/([^/?]+)")
  end

  -- A batch of `ids` on a fake server that assigns at once; returns the
  -- batch (run) and the registration IDs it sent requests for.
  local function run(ids, extra)
    local fake = fake_runtime.new()
    fake.answer = function(req) return fake_runtime.assigned(id_of(req)) end
    local o = { id_scope = "0ne00000001", group_key = keys.GROUP_KEY, endpoint = "https://dps.example.invalid",
      rate = 60000, cache_dir = dir }
    for k, v in pairs(extra or {}) do o[k] = v end
    local b = dps.batch(o, fake:with_engine())
    for _, id in ipairs(ids) do b:add(id) end
    local summary = b:run()
    local asked = {}
    for _, req in ipairs(fake.sent) do asked[#asked + 1] = id_of(req) end
    table.sort(asked)
    return b, asked, summary
  end

  it("keeps each assignment in DIR/{id}.json (0600) and starts again from them, with no request", function()
    local ids = { "leaf-1", "leaf-2", "leaf-3", "leaf-4", "leaf-5" }
    local b, asked, summary = run(ids)
    assert.are.same(ids, asked)
    assert.equal(0, summary.from_cache)
    local state, how = b:result("leaf-2")
    assert.equal("leaf-2", state.deviceId)
    assert.equal("service", how.source)
    assert.is_true(how.cache_written)
    b:close()
    for _, id in ipairs(ids) do
      local facts = require("dps.core").stat(dir .. "/" .. id .. ".json")
      assert.equal("file", facts.type)
      assert.equal(384, facts.mode % 512, id .. ": mode " .. string.format("%o", facts.mode)) -- 0600
    end
    -- started again (after a crash, say): every device from its cache
    b, asked, summary = run(ids)
    assert.are.same({}, asked)
    assert.equal(5, summary.from_cache)
    assert.equal(5, summary.assigned)
    state, how = b:result("leaf-4")
    assert.equal("leaf-4", state.deviceId)
    assert.equal("cache", how.source)
    b:close()
  end)

  it("registers only the devices without a usable cache: missing, broken, or for another key", function()
    local ids = { "a", "b", "c", "d" }
    run(ids)
    os.remove(dir .. "/b.json")
    shell.write(dir .. "/c.json", "{ truncated", "600")
    local b, asked, summary = run(ids)
    assert.are.same({ "b", "c" }, asked)
    assert.equal(2, summary.from_cache)
    local _, how = b:result("c")
    assert.truthy(how.cache_ignored and how.cache_ignored:find("not JSON", 1, true), tostring(how.cache_ignored))
    b:close()
    -- a new group key: every device's credential changed
    b, asked = run(ids, { group_key = keys.OTHER_KEY })
    assert.are.same(ids, asked)
    b:close()
  end)

  it("reads at most a few dozen caches per step, so that an event loop gets its turn", function()
    local ids = {}
    for i = 1, 200 do ids[i] = string.format("many-%03d", i) end
    run(ids)
    local fake = fake_runtime.new()
    local b = dps.batch({ id_scope = "0ne00000001", group_key = keys.GROUP_KEY,
      endpoint = "https://dps.example.invalid", cache_dir = dir }, fake:with_engine())
    for _, id in ipairs(ids) do b:add(id) end
    local wait = b:step()
    local finished = #b:results()
    assert.is_true(finished > 0 and finished < 200, finished .. " caches read in one step")
    assert.equal(0, wait) -- more to read: call again at once
    for _ = 1, 100 do
      if b:done() then break end
      b:step()
    end
    assert.is_true(b:done())
    assert.equal(0, #fake.sent)
    b:close()
  end)
end)

describe("dps.batch resumed after kill -9", function()
  local shell = require "spec.support.shell"
  local child_script = [[
local cjson = require "cjson"
local dps = require "dps"
local f = assert(io.open(arg[1], "rb"))
local o = cjson.decode(f:read("*a"))
f:close()
local b = dps.batch{ id_scope = o.id_scope, group_key = o.group_key, endpoint = o.endpoint, ca_file = o.ca_file,
  cache_dir = o.cache_dir, concurrency = o.concurrency, rate = o.rate, timeout = 600 }
for i = 1, o.n do b:add(string.format("resume-%04d", i)) end
local summary = b:run()
b:close()
print(cjson.encode{ assigned = summary.assigned, from_cache = summary.from_cache, total = summary.total })
]]

  -- N devices: the batch killed once a random share of the caches is
  -- written, then started again until done.
  local function resume(n)
    local dir = shell.tmpdir("dps-batch-kill")
    finally(function() shell.succeeds("rm -rf " .. shell.quote(dir)) end)
    local emu = emulator.start{ retry_after = "0", polls_before_assignment = 0, enrollments = { GROUP } }
    finally(function() emu:stop() end)
    local caches = dir .. "/caches"
    shell.succeeds("mkdir -m 700 " .. shell.quote(caches))
    local concurrency = 16
    shell.write(dir .. "/opts.json", require("cjson").encode{ id_scope = emu.id_scope, group_key = keys.GROUP_KEY,
      endpoint = emu.endpoint, ca_file = emu.ca_file, cache_dir = caches, concurrency = concurrency, n = n,
      -- paced to about 4 s in all, so that the kill lands among the registrations on a busy machine too
      rate = n * 15 }, "600")
    local script = shell.write(dir .. "/batch.lua", "package.path = " .. string.format("%q", package.path)
      .. "\npackage.cpath = " .. string.format("%q", package.cpath) .. "\n" .. child_script)
    local lua = shell.interpreter()
    local kill_at = math.random(math.floor(n * 0.1), math.floor(n * 0.9))
    -- the batch in the background; killed as soon as kill_at caches exist
    local killed = shell.run(string.format("%s %s %s >/dev/null 2>&1 & p=$!; "
      .. "while [ $(ls %s | wc -l) -lt %d ] && kill -0 $p 2>/dev/null; do sleep 0.01; done; "
      .. "kill -9 $p; wait $p 2>/dev/null; ls %s | wc -l",
      shell.quote(lua), shell.quote(script), shell.quote(dir .. "/opts.json"), shell.quote(caches), kill_at,
      shell.quote(caches)))
    local cached = tonumber(killed:match("(%d+)%s*$"))
    assert.is_true(cached >= kill_at and cached < n, "killed with " .. tostring(cached) .. " caches of " .. n)
    local have = {}
    for name in shell.run("ls " .. shell.quote(caches)):gmatch("([^\n]+)%.json") do have[name] = true end
    local out, ok = shell.run(string.format("%s %s %s", shell.quote(lua), shell.quote(script),
      shell.quote(dir .. "/opts.json")))
    assert.is_true(ok, out)
    local summary = require("cjson").decode(out:match("{.*}"))
    assert.equal(n, summary.assigned)
    assert.equal(cached, summary.from_cache)
    -- registrations per device over both runs: one for each, and a second
    -- one only for a device that had none cached (it was in flight at the kill)
    local per, total, in_flight = {}, 0, 0
    for _, e in ipairs(emu:log()) do
      if e.event == "request" and e.kind == "register" then
        per[e.registration_id] = (per[e.registration_id] or 0) + 1
        total = total + 1
      end
    end
    for i = 1, n do
      local id = string.format("resume-%04d", i)
      local count = per[id] or 0
      if have[id] then
        assert.equal(1, count, id .. " had a cache and registered again")
      else
        assert.is_true(count == 1 or count == 2, id .. ": " .. count .. " registrations")
        if count == 2 then in_flight = in_flight + 1 end
      end
    end
    assert.is_true(in_flight <= concurrency, in_flight .. " registrations in flight at the kill")
    assert.equal(n + in_flight, total)
    return n, cached, in_flight
  end

  it("registers only the devices without a cache: total = devices + those in flight at the kill", function()
    local n, cached, in_flight = resume(200)
    print(string.format("\n# kill -9: %d devices, %d cached at the kill, %d in flight", n, cached, in_flight))
  end)

  it("#soak 2,000 devices", function()
    local n, cached, in_flight = resume(2000)
    print(string.format("\n# kill -9: %d devices, %d cached at the kill, %d in flight", n, cached, in_flight))
  end)
end)
