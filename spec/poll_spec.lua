-- The polling rules in milliseconds: the dps.poll machine driven by a fake
-- clock and scripted answers. Each answer goes through dps.response (the
-- real header and body interpretation, with the real Retry-After parser)
-- or dps.errors.transport, exactly as the blocking client feeds them; with a
-- client, each request is built by its dps.request builder at the fake wall-clock
-- time. Nothing sleeps: a wait moves the clock.
local poll = require "dps.poll"
local response = require "dps.response"
local errors = require "dps.errors"
local dps = require "dps"
local cjson = require "cjson"

local keys = require "spec.support.keys"
local KEY = keys.KEY
local EPOCH = 1700000000 -- the wall clock at fake monotonic time 0

local function http_date(wall)
  return os.date("!%a, %d %b %Y %H:%M:%S GMT", wall)
end

-- Scripted answers ---------------------------------------------------------

-- 202 assigning with an operation ID; `retry_after` is the header value
-- (nil: no header), or a function of the wall-clock time of the answer.
local function accepted(retry_after)
  return { status = 202, retry_after = retry_after,
           body = cjson.encode{ operationId = "op-1", status = "assigning" } }
end

local function assigned()
  return { status = 200, body = cjson.encode{ operationId = "op-1", status = "assigned",
    registrationState = { registrationId = "dev", assignedHub = "hub.example", deviceId = "dev",
                          status = "assigned" } } }
end

local function refused(status, retry_after)
  return { status = status, retry_after = retry_after,
           body = cjson.encode{ errorCode = status * 1000 + 1, message = "Injected.", trackingId = "t-1" } }
end

-- A failure of the connection, with its kind; it takes `takes` seconds.
local function broken(kind, takes)
  return { transport = kind, takes = takes }
end

local function times(n, answer)
  local out = {}
  for i = 1, n do out[i] = answer end
  return out
end

local function concat(...)
  local out = {}
  for _, list in ipairs({ ... }) do
    for _, v in ipairs(list) do out[#out + 1] = v end
  end
  return out
end

-- The driver ---------------------------------------------------------------

-- Runs one provisioning. opts: timeout (60), jitter (always the low end),
-- client (builds each request, to see its token), late = { [n] = s }: come
-- back s seconds late after the n-th wait (a process stopped, a busy loop).
-- Each answer takes `takes` seconds (default 0, so the gaps between requests
-- are the waits chosen). Returns { sends = { {t, step, operation_id,
-- timeout, request} }, waits = { seconds }, final = action, t = end time,
-- jitter = { {low, high} } }.
local function run(script, opts)
  opts = opts or {}
  local clock = 0
  local trace = { sends = {}, waits = {}, jitter = {} }
  local pick = opts.jitter or function(low) return low end
  local m = poll.new{ timeout = opts.timeout or 60, now = clock, jitter = function(low, high)
    trace.jitter[#trace.jitter + 1] = { low, high }
    return pick(low, high)
  end }
  local act = m:tick(clock)
  local n = 0
  while act.action == "send" or act.action == "wait" do
    if act.action == "wait" then
      trace.waits[#trace.waits + 1] = act.at - clock
      clock = math.max(clock, act.at) + ((opts.late or {})[#trace.waits] or 0)
      act = m:tick(clock)
    else
      n = n + 1
      local answer = script[n]
      assert(answer, "the script ran out: request " .. n .. " was not expected")
      trace.sends[n] = { t = clock, step = act.step, operation_id = act.operation_id, timeout = act.timeout,
        request = opts.client and opts.client.builder:dps_request(act.step, EPOCH + clock, act.operation_id) }
      assert.is_true(act.timeout > 0, "a request with no time left was sent")
      clock = clock + (answer.takes or 0)
      if answer.transport then
        act = m:answer(clock, errors.transport(act.step, "injected", { kind = answer.transport }))
      else
        local ra = answer.retry_after
        if type(ra) == "function" then ra = ra(EPOCH + clock) end
        local body = answer.body or ""
        act = m:answer(clock, response.interpret(act.step, answer.status, { ["retry-after"] = ra,
          ["content-type"] = "application/json" }, body, EPOCH + clock))
      end
    end
  end
  trace.final, trace.t = act, clock
  assert.are.equal(n, #script, "not every scripted answer was asked for")
  return trace
end

-- Seconds between consecutive requests.
local function gaps(trace)
  local out = {}
  for i = 2, #trace.sends do out[i - 1] = trace.sends[i].t - trace.sends[i - 1].t end
  return out
end

local function steps(trace)
  local out = {}
  for i, s in ipairs(trace.sends) do out[i] = s.step end
  return out
end

local function assert_done(trace)
  assert.are.equal("done", trace.final.action, tostring(trace.final.message))
  assert.are.equal("hub.example", trace.final.state.assignedHub)
end

local function assert_timeout(trace)
  assert.are.equal("fail", trace.final.action)
  assert.are.equal("timeout", trace.final.info.kind, trace.final.message)
end

local function near(expected, actual, what)
  assert.is_true(math.abs(expected - actual) < 1e-6, string.format("%s: expected %.3f, got %.3f",
    what or "value", expected, actual))
end

local function near_all(expected, actual)
  assert.are.equal(#expected, #actual, "count")
  for i = 1, #expected do near(expected[i], actual[i], "#" .. i) end
end

describe("dps.poll machine", function()
  describe("Retry-After", function()
    it("registers, waits the server's Retry-After in seconds before each poll, returns the state", function()
      local trace = run{ accepted("3"), accepted("4"), assigned() }
      assert_done(trace)
      assert.are.same({ "register", "operation_status", "operation_status" }, steps(trace))
      assert.are.equal("op-1", trace.sends[2].operation_id)
      near_all({ 3, 4 }, gaps(trace))
    end)

    it("waits a Retry-After given as an HTTP-date (6 s ahead)", function()
      local trace = run{ accepted(function(wall) return http_date(wall + 6) end), assigned() }
      assert_done(trace)
      near_all({ 6 }, gaps(trace))
    end)

    it("without Retry-After waits 2 s plus 0-1 s of jitter", function()
      local trace = run({ accepted(nil), accepted(nil), assigned() }, { jitter = function(_, high) return high end })
      assert_done(trace)
      assert.are.same({ { 2, 3 }, { 2, 3 } }, trace.jitter)
      near_all({ 3, 3 }, gaps(trace))
    end)

    -- Values that cannot be followed get the default wait, never "at once".
    local unusable = {
      { "negative", "-5" }, { "garbage", "soon, maybe" }, { "fractional", "1.5" }, { "empty", "" },
      { "a past date", "Thu, 01 Jan 1970 00:00:00 GMT" },
      { "a date one minute ago", function(wall) return http_date(wall - 60) end },
    }
    for _, row in ipairs(unusable) do
      it("treats " .. row[1] .. " Retry-After as none: the default 2-3 s", function()
        local trace = run{ accepted(row[2]), assigned() }
        assert_done(trace)
        assert.are.same({ { 2, 3 } }, trace.jitter)
        near_all({ 2 }, gaps(trace))
      end)
    end

    it("follows Retry-After: 0 (the server asked), within the pace limit", function()
      local trace = run{ accepted("0"), accepted("0"), assigned() }
      assert_done(trace)
      near_all({ 0, 0 }, gaps(trace))
      assert.are.same({}, trace.jitter)
    end)

    it("ends at once when Retry-After reaches past the deadline (202 and 429)", function()
      for _, answer in ipairs({ accepted("99999999"), refused(429, "99999999") }) do
        local trace = run({ answer }, { timeout = 10 })
        assert_timeout(trace)
        assert.are.equal(99999999, trace.final.info.retry_after)
        assert.are.equal(0, trace.t, "no waiting first")
        assert.are.same({}, trace.waits)
      end
    end)

    it("ends at once when a Retry-After date reaches past the deadline", function()
      local trace = run({ accepted(function(wall) return http_date(wall + 30) end) }, { timeout = 10 })
      assert_timeout(trace)
      near(30, trace.final.info.retry_after)
    end)
  end)

  describe("failures worth another try", function()
    it("on 429 sends the same register again after Retry-After", function()
      local trace = run{ refused(429, "7"), accepted("1"), assigned() }
      assert_done(trace)
      assert.are.same({ "register", "register", "operation_status" }, steps(trace))
      near_all({ 7, 1 }, gaps(trace))
    end)

    it("on 5xx without Retry-After backs off and sends the same poll again", function()
      local trace = run{ accepted("1"), refused(503), refused(500), assigned() }
      assert_done(trace)
      assert.are.same({ "register", "operation_status", "operation_status", "operation_status" }, steps(trace))
      assert.are.equal("op-1", trace.sends[3].operation_id)
      near_all({ 1, 0.5, 1 }, gaps(trace)) -- jitter's low end: 0.5-1, then 1-2
    end)

    it("doubles the back-off and caps it at 30 s", function()
      local trace = run(concat(times(9, refused(503)), { accepted("0"), assigned() }),
        { timeout = 1000, jitter = function(_, high) return high end })
      assert_done(trace)
      near_all({ 1, 2, 4, 8, 16, 30, 30, 30, 30, 0 }, gaps(trace))
      assert.are.same({ 15, 30 }, trace.jitter[9])
    end)

    it("starts the back-off again after a good answer", function()
      local high = function(_, h) return h end
      local trace = run({ refused(503), refused(503), refused(503), accepted("1"), refused(503), assigned() },
        { jitter = high })
      assert_done(trace)
      near_all({ 1, 2, 4, 1, 1 }, gaps(trace)) -- not 8 after the 503 that follows the 202
    end)

    it("retries the connection failures that may pass, with back-off", function()
      for _, kind in ipairs({ "timeout", "network", "connect", "resolve", "protocol" }) do
        local trace = run{ broken(kind), accepted("1"), broken(kind), assigned() }
        assert_done(trace)
        assert.are.same({ "register", "register", "operation_status", "operation_status" }, steps(trace))
        near_all({ 0.5, 1, 0.5 }, gaps(trace))
      end
    end)

    it("fails at once on connection failures that will not pass", function()
      for _, kind in ipairs({ "tls", "credentials", "too_large", "proxy", "config" }) do
        local trace = run{ accepted("1"), broken(kind) }
        assert.are.equal("fail", trace.final.action)
        assert.are.equal(kind, trace.final.info.kind)
        assert.are.equal("op-1", trace.final.info.operation_id)
      end
    end)

    it("fails at once on the service's refusals (400, 401, 403, 404)", function()
      for _, status in ipairs({ 400, 401, 403, 404 }) do
        local trace = run{ refused(status) }
        assert.are.equal("fail", trace.final.action)
        assert.are.equal(status, trace.final.info.status)
        assert.is_false(trace.final.info.retryable)
      end
    end)

    it("registers again, after a back-off, when the register answer has no operationId", function()
      local trace = run{ { status = 202, body = '{"status":"assigning"}' }, accepted("1"), assigned() }
      assert_done(trace)
      assert.are.same({ "register", "register", "operation_status" }, steps(trace))
      near_all({ 0.5, 1 }, gaps(trace))
    end)
  end)

  describe("409 Conflict", function()
    it("on a register: backs off and registers again", function()
      local trace = run{ refused(409), accepted("1"), assigned() }
      assert_done(trace)
      assert.are.same({ "register", "register", "operation_status" }, steps(trace))
      near_all({ 0.5, 1 }, gaps(trace))
    end)

    it("on a poll: backs off and registers again, then polls the new operation", function()
      local trace = run{ accepted("1"), refused(409), accepted("1"), assigned() }
      assert_done(trace)
      assert.are.same({ "register", "operation_status", "register", "operation_status" }, steps(trace))
      near_all({ 1, 0.5, 1 }, gaps(trace))
    end)

    it("is a conflict worth another try in info, as the README promises", function()
      local state, message, info = response.interpret("register", 409, {},
        cjson.encode{ errorCode = 409203, message = "Precondition failed.", trackingId = "t-9" }, EPOCH)
      assert.is_nil(state)
      assert.are.equal("conflict", info.kind)
      assert.are.equal(409, info.status)
      assert.are.equal(409203, info.error_code)
      assert.is_true(info.retryable)
      assert.truthy(message:find("HTTP 409", 1, true))
    end)
  end)

  describe("pace", function()
    it("never polls more than 5 times in any 10 s, even when told to retry at once", function()
      local trace = run(concat({ accepted("0") }, times(11, accepted("0")), { assigned() }))
      assert_done(trace)
      local polls = {}
      for _, s in ipairs(trace.sends) do
        if s.step == "operation_status" then polls[#polls + 1] = s.t end
      end
      assert.are.equal(12, #polls)
      for i = 6, #polls do
        assert.is_true(polls[i] - polls[i - 5] >= 10 - 1e-9,
          string.format("polls %d..%d within %.3f s", i - 5, i, polls[i] - polls[i - 5]))
      end
      near_all({ 0, 0, 0, 0, 0, 10, 10, 10, 10, 10, 20, 20 }, polls)
    end)

    it("ends with timeout when the pace would wait past the deadline", function()
      local trace = run(concat({ accepted("0") }, times(5, accepted("0"))), { timeout = 9 })
      assert_timeout(trace)
      assert.are.equal(0, trace.t)
    end)
  end)

  describe("the deadline", function()
    it("bounds each request by the time left and ends when the next wait would pass it", function()
      local slow = accepted("1")
      slow.takes = 0.25
      local trace = run(times(4, slow), { timeout = 5 })
      assert_timeout(trace)
      for _, s in ipairs(trace.sends) do
        near(5 - s.t, s.timeout, "timeout of the request sent at " .. s.t)
      end
      -- sent at 0, 1.25, 2.5, 3.75; answered at 4: 1 s more reaches the deadline
      near(4, trace.t, "gave up at")
      assert.truthy(trace.final.message:find("no assignment within 5 s", 1, true))
    end)

    it("a request that hangs for all the time left ends as timeout at the deadline", function()
      local trace = run({ accepted("1"), broken("timeout", 2) }, { timeout = 3 })
      assert_timeout(trace)
      near(3, trace.t)
      assert.are.equal("timeout", trace.final.info.last_kind)
    end)

    it("gives up on persistent 5xx at the deadline, reporting the last answer", function()
      local trace = run(times(2, refused(500)), { timeout = 2.5, jitter = function(_, high) return high end })
      assert_timeout(trace)
      assert.are.equal(500, trace.final.info.status)
      assert.truthy(trace.final.message:find("HTTP 500", 1, true), trace.final.message)
    end)

    -- A process stopped (SIGSTOP, a suspended VM) across the deadline comes
    -- back late; whatever it was doing, it ends as timeout, never a raise.
    it("ends as timeout when the driver comes back after the deadline from a wait", function()
      local trace = run({ accepted("1") }, { timeout = 10, late = { [1] = 60 } })
      assert_timeout(trace)
    end)

    it("ends as timeout when the driver comes back after the deadline from a pace wait", function()
      local trace = run(times(6, accepted("0")), { timeout = 15, late = { [6] = 60 } })
      assert_timeout(trace)
      assert.are.equal(6, #trace.sends) -- the 6th wait was the pace
    end)

    it("ends as timeout when an answer worth another try comes after the deadline", function()
      for _, answer in ipairs({ accepted("1"), refused(503), refused(409), broken("network") }) do
        answer.takes = 100
        local trace = run({ answer }, { timeout = 10 })
        assert_timeout(trace)
      end
    end)
  end)

  describe("the SAS token", function()
    local client
    before_each(function()
      client = dps.new{ id_scope = "0ne00000001", registration_id = "dev", symmetric_key = KEY,
                        endpoint = "https://127.0.0.1:9", token_ttl = 70 }
    end)
    after_each(function() client:close() end)

    local function expiry(send)
      return tonumber(send.request.headers.authorization:match("&se=(%d+)"))
    end

    it("is renewed when it nears expiry, and not before", function()
      local trace = run({ accepted("4"), accepted("4"), accepted("4"), accepted("4"), assigned() },
        { client = client })
      assert_done(trace)
      -- signed at 0 for 70 s; still 62 s left at 8; 58 s at 12: renewed
      local se = {}
      for i, s in ipairs(trace.sends) do se[i] = expiry(s) - EPOCH end
      assert.are.same({ 70, 70, 70, 82, 82 }, se)
      for _, s in ipairs(trace.sends) do
        assert.is_true(expiry(s) - (EPOCH + s.t) >= 60, "a token with under 60 s left was sent")
      end
    end)
  end)

  describe("misuse", function()
    it("raises on bad options and on calls out of turn", function()
      assert.has_error(function() poll.new{ timeout = 0, now = 0 } end,
        "dps.poll: new: timeout must be a positive number of seconds")
      assert.has_error(function() poll.new{ timeout = 1 } end, "dps.poll: new: the time must be a number, got nil")
      local m = poll.new{ timeout = 5, now = 0 }
      assert.has_error(function() m:answer(0, nil, "x", {}) end,
        "dps.poll: answer: no request is out (call tick first)")
      assert.are.equal("send", m:tick(0).action)
      assert.has_error(function() m:tick(0) end, "dps.poll: tick: the machine is waiting for an answer")
      assert.are.equal("fail", m:answer(0, nil, "x", { kind = "tls" }).action)
      assert.has_error(function() m:tick(1) end, "dps.poll: tick: the machine is over")
    end)
  end)
end)

describe("dps.response", function()
  it("reads Retry-After in seconds and as an HTTP-date relative to the time given", function()
    local _, meta = response.interpret("register", 202, { ["retry-after"] = http_date(EPOCH + 6) },
      '{"status":"assigning"}', EPOCH)
    assert.are.equal(6, meta.retry_after)
    _, meta = response.interpret("register", 202, { ["retry-after"] = " 3 " }, '{"status":"assigning"}', EPOCH)
    assert.are.equal(3, meta.retry_after)
    local _, _, info = response.interpret("register", 429, { ["retry-after"] = http_date(EPOCH + 9) }, "", EPOCH)
    assert.are.equal(9, info.retry_after)
    assert.are.equal("throttled", info.kind)
    assert.is_true(info.retryable)
  end)

  it("gives no Retry-After for values that cannot be followed", function()
    for _, v in ipairs({ "-5", "soon", "1.5", "", http_date(EPOCH - 1), http_date(EPOCH) }) do
      local _, meta = response.interpret("register", 202, { ["retry-after"] = v }, '{"status":"assigning"}', EPOCH)
      assert.is_nil(meta.retry_after, v)
    end
  end)

  it("refuses a 2xx whose body is not a JSON object", function()
    for _, body in ipairs({ "<html></html>", "", '"text"', '{"status":' }) do
      local doc, message, info = response.interpret("operation_status", 200, { ["content-type"] = "text/html" }, body,
        EPOCH)
      assert.is_nil(doc)
      assert.are.equal("protocol", info.kind)
      assert.is_false(info.retryable)
      assert.truthy(message:find("not a JSON object", 1, true))
    end
  end)
end)

describe("Client:provision, the blocking driver", function()
  -- The real driver on a fake runtime (spec/support/fake_runtime.lua): the
  -- clock moves only by sleeps and answers. `jump_at` = n: the n-th clock
  -- read jumps 100 s (a SIGSTOP somewhere in the driver).
  local fake_runtime = require "spec.support.fake_runtime"

  local function drive(script, timeout, jump_at)
    local fake = fake_runtime.new{ answer = function(_, n)
      local a = script[n] or assigned()
      return { status = a.status, headers = { ["retry-after"] = a.retry_after }, body = a.body, takes = a.takes,
        fail = a.transport }
    end }
    local rt, reads = fake:with_session(), 0
    local monotime = rt.monotime
    rt.monotime = function()
      reads = reads + 1
      if reads == jump_at then fake.mono = fake.mono + 100 end
      return monotime()
    end
    local client = dps.new({ id_scope = "0ne00000001", registration_id = "dev", symmetric_key = KEY }, rt)
    local ok, state, err, info = pcall(client.provision, client, { timeout = timeout })
    client:close()
    assert.is_true(ok, tostring(state))
    return state, err, info, fake.sent
  end

  it("registers, waits, polls and returns the state", function()
    local state, err, _, sent = drive({ accepted("2"), accepted("2"), assigned() }, 60)
    assert.truthy(state, err)
    assert.are.equal("hub.example", state.assignedHub)
    assert.are.same({ "PUT", "GET", "GET" }, { sent[1].method, sent[2].method, sent[3].method })
    assert.are.equal(30, sent[1].timeout) -- request_timeout (30 s by default) caps the time left
  end)

  it("ends as timeout, never a raise, wherever a stop across the deadline lands", function()
    local script = concat({ accepted("0") }, times(6, accepted("0")), { assigned() })
    local outcomes = {}
    for jump = 1, 40 do
      local state, err, info = drive(script, 15, jump)
      if state == nil then
        assert.are.equal("timeout", info.kind, err)
      end
      outcomes[state and "assigned" or "timeout"] = true
    end
    assert.are.same({ assigned = true, timeout = true }, outcomes) -- late jumps miss the run
  end)
end)
