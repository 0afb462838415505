-- A wrong clock (issue #12): in milliseconds, the dps.poll machine and a
-- client against a fake server that checks token expiry against its own
-- clock and answers with its `Date`; end to end, the client under faketime
-- against the emulator on the real clock.
local poll = require "dps.poll"
local response = require "dps.response"
local clock = require "dps.clock"
local dps = require "dps"
local emulator = require "spec.support.emulator"
local shell = require "spec.support.shell"
local keys = require "spec.support.keys"
local cjson = require("cjson").new()

local KEY, OTHER_KEY = keys.KEY, keys.OTHER_KEY
local EPOCH = 1800000000 -- the local wall clock at fake monotonic time 0 (a plausible server time: dps.clock)
local DAY = 86400

local function http_date(t)
  return os.date("!%a, %d %b %Y %H:%M:%S GMT", math.floor(t))
end

-- One provisioning: the machine, a client that signs each request at the
-- local wall clock plus the machine's offset, and a fake server whose clock
-- is `skew` seconds ahead of ours. It refuses (401, with its Date) a token
-- that has expired by its clock or that a key it does not know signed.
-- opts: key (the client's), client (one that provisioned before),
-- date_skew(n) (the Date of answer n, seconds ahead of our clock, when it
-- should lie). Returns { sends = n, final = action, client, trace = requests }.
local function run(skew, opts)
  opts = opts or {}
  local client = opts.client or dps.new{ id_scope = "0ne00000001", registration_id = "dev",
    symmetric_key = opts.key or KEY }
  local now = 0
  local m = poll.new{ timeout = 60, now = now, jitter = function(low) return low end,
    clock_offset = client:clock_offset() }
  local act = m:tick(now)
  local sends, trace = 0, {}
  while act.action == "send" or act.action == "wait" do
    if act.action == "wait" then
      now = math.max(now, act.at)
      act = m:tick(now)
    else
      sends = sends + 1
      assert(sends <= 20, "more than 20 requests: the machine retries without end")
      client:set_clock_offset(act.clock_offset)
      local here = EPOCH + now
      local req = client.builder:dps_request(act.step, here, act.operation_id) -- signed at here + the offset
      trace[sends] = req
      local server = here + skew
      local se = tonumber(req.headers.authorization:match("se=(%d+)"))
      local good = req.headers.authorization == dps.registration_token("0ne00000001", "dev", KEY, se)
      local status, body
      if not good or se <= server then
        status, body = 401, cjson.encode{ errorCode = 401002, message = "Unauthorized", trackingId = "t" }
      elseif act.step == "register" then
        status, body = 202, cjson.encode{ operationId = "op-1", status = "assigning" }
      else
        status, body = 200, cjson.encode{ operationId = "op-1", status = "assigned",
          registrationState = { assignedHub = "hub.example", deviceId = "dev", status = "assigned" } }
      end
      local date = opts.date_skew and here + opts.date_skew(sends) or server
      act = m:answer(now, response.interpret(act.step, status, { date = http_date(date),
        ["content-type"] = "application/json" }, body, here))
    end
  end
  return { sends = sends, final = act, client = client, trace = trace }
end

describe("a wrong clock, in milliseconds", function()
  it("2 days behind: the 401 is signed again with the server's Date, once, and the offset is kept", function()
    local r = run(2 * DAY)
    assert.are.equal("done", r.final.action, r.final.message)
    assert.are.equal(3, r.sends) -- register (401), register, one poll: one extra request
    assert.are.equal(2 * DAY, r.final.clock_offset)
    assert.are.equal(2 * DAY, r.client:clock_offset())
    -- the token of the retry expires an hour after the server's time
    assert.matches("se=" .. (EPOCH + 2 * DAY + 3600) .. "&", r.trace[2].headers.authorization)
    -- a later provisioning of the same session signs with the offset from the start
    local again = run(2 * DAY, { client = r.client })
    assert.are.equal("done", again.final.action)
    assert.are.equal(2, again.sends)
    -- and so does a status lookup (token renewal with the offset)
    local req = r.client.builder:dps_request("registration_status", EPOCH + 5000)
    assert.matches("se=" .. (EPOCH + 2 * DAY + 5000 + 3600) .. "&", req.headers.authorization)
  end)

  it("2 days ahead: the token is valid for the server (longer than asked), no extra request", function()
    local r = run(-2 * DAY)
    assert.are.equal("done", r.final.action)
    assert.are.equal(2, r.sends)
    assert.are.equal(0, r.final.clock_offset)
  end)

  it("a 401 with a correct clock stays auth, after one request", function()
    for _, skew in ipairs({ 0, 59, -59 }) do
      local r = run(skew, { key = OTHER_KEY })
      assert.are.equal("fail", r.final.action)
      assert.are.equal("auth", r.final.info.kind)
      assert.are.equal(1, r.sends, "skew " .. skew)
      assert.is_nil(r.final.info.clock_offset)
    end
  end)

  it("a wrong clock and a wrong key: one retry, then auth, saying the offset", function()
    local r = run(2 * DAY, { key = OTHER_KEY })
    assert.are.equal("auth", r.final.info.kind)
    assert.are.equal(2, r.sends)
    assert.are.equal(2 * DAY, r.final.info.clock_offset)
  end)

  it("retries once only, even when every Date asks for another offset", function()
    local r = run(0, { key = OTHER_KEY, date_skew = function(n) return n * 2 * DAY end })
    assert.are.equal("auth", r.final.info.kind)
    assert.are.equal(2, r.sends)
    assert.are.equal(2 * DAY, r.final.info.clock_offset)
  end)

  it("dps.clock.correction: only a 401 with the server's Date more than a minute away", function()
    local base = { kind = "auth", status = 401, server_time = EPOCH + 61, local_time = EPOCH }
    assert.are.equal(61, clock.correction(base, 0))
    assert.is_nil(clock.correction(base, 30)) -- signed with an offset that is close enough
    local function with(field, value)
      local t = {}
      for k, v in pairs(base) do t[k] = v end
      t[field] = value
      return t
    end
    assert.is_nil(clock.correction(with("status", 403), 0))
    assert.is_nil(clock.correction(with("kind", "bad_request"), 0))
    assert.is_nil(clock.correction(with("server_time", nil), 0))
    assert.is_nil(clock.correction(with("server_time", EPOCH + 60), 0))
    assert.are.equal(-61, clock.correction(with("server_time", EPOCH - 61), 0))
    -- a server time no clock shows: before 2025, or past 2099
    assert.is_nil(clock.correction(with("server_time", clock.FLOOR - 1), 0))
    assert.is_nil(clock.correction(with("server_time", clock.CEILING + 1), 0))
    assert.is_nil(clock.correction(with("server_time", -315619200), 0))
  end)

  it("dps.response reports the answer's Date and the local time with an error answer", function()
    local _, _, info = response.interpret("register", 401, { date = http_date(EPOCH + 5) }, "", EPOCH)
    assert.are.equal(EPOCH + 5, info.server_time)
    assert.are.equal(EPOCH, info.local_time)
    _, _, info = response.interpret("register", 401, { date = "garbage" }, "", EPOCH)
    assert.is_nil(info.server_time)
  end)

  it("a tls failure says the local time, and that a clock before 2025 must be set", function()
    local note = clock.tls_note(1600000000)
    assert.matches("2020%-09%-13 12:26:40 UTC", note)
    assert.matches("cannot be right: set the clock %(NTP%)", note)
    assert.matches("if that is wrong, set the clock %(NTP%)", clock.tls_note(EPOCH + 800 * DAY))
  end)

  it("the machine refuses a clock_offset that is not a number", function()
    assert.has_error(function() poll.new{ timeout = 1, now = 0, clock_offset = "1" } end)
    assert.has_error(function() poll.new{ timeout = 1, now = 0, clock_offset = 0 / 0 } end)
  end)
end)

describe("a wrong clock, end to end (faketime)", function()
  local emu, dir, moves

  setup(function()
    dir = shell.tmpdir("dps-clock")
    assert(shell.succeeds("command -v faketime >/dev/null"), "faketime is not installed: make deps-test")
    -- faketime is a glibc preload of the host: it cannot move the clock of a
    -- musl interpreter (make stack-test) or of one under qemu-user (make
    -- cross-test), where these cases are pending
    local lua = shell.plain()
    local out = shell.run("faketime -f -2d " .. lua .. " -e 'print(os.time())' 2>/dev/null")
    moves = (tonumber(out) or os.time()) < os.time() - 86400
    emu = emulator.start{ retry_after = "0", enrollments = {
      { type = "individual", registration_id = "clock-behind", symmetric_key = KEY },
      { type = "individual", registration_id = "clock-ahead", symmetric_key = KEY },
      { type = "individual", registration_id = "clock-years", symmetric_key = KEY },
      { type = "individual", registration_id = "clock-batch", symmetric_key = KEY },
      { type = "individual", registration_id = "clock-start", symmetric_key = KEY },
    } }
  end)

  teardown(function()
    if emu then emu:stop() end
    if dir then shell.succeeds("rm -rf " .. shell.quote(dir)) end
  end)

  -- dps.provision (or `driver`: batch, start) in a process of its own with
  -- its clock moved by `shift` (faketime's -f syntax); the emulator keeps
  -- the real clock.
  local function provision(id, shift, driver)
    if not moves then pending("faketime cannot move this interpreter's clock (not glibc, or under emulation)") end
    local opts = cjson.encode{ id_scope = emu.id_scope, registration_id = id, symmetric_key = KEY,
      endpoint = emu.endpoint, ca_file = emu.ca_file, timeout = 10 }
    -- the key goes in a 0600 file, never on a command line
    local file = shell.write(dir .. "/" .. id .. ".json", opts, "600")
    local lua, cpath = shell.plain()
    local out, ok = shell.run(string.format("LUA_PATH=%s LUA_CPATH=%s faketime -f %s %s %s %s %s 2>&1",
      shell.quote(package.path), shell.quote(cpath), shell.quote(shift), lua,
      shell.quote(emulator.root .. "/spec/support/provision_once.lua"), shell.quote(file), driver or "provision"))
    assert(ok, out)
    return cjson.decode(out)
  end

  local function requests(id, n)
    local list = emu:requests(id)
    for _ = 1, 40 do
      if #list >= n then break end
      os.execute("sleep 0.05")
      list = emu:requests(id)
    end
    return #list
  end

  it("2 days behind: provisioned with one extra request, clock_offset about 172800", function()
    local r = provision("clock-behind", "-2d")
    assert.truthy(r.state, r.message)
    assert.are.equal("clock-behind", r.state.deviceId)
    assert.is_true(math.abs(r.info.clock_offset - 2 * DAY) < 5, tostring(r.info.clock_offset))
    assert.are.equal(3, requests("clock-behind", 3)) -- 401, register, one poll
  end)

  for _, driver in ipairs({ "batch", "start" }) do
    it("2 days behind, in " .. (driver == "batch" and "a batch" or "dps.start_provision") .. ": the same", function()
      local id = "clock-" .. driver
      local r = provision(id, "-2d", driver)
      assert.truthy(r.state, r.message)
      assert.are.equal(id, r.state.deviceId)
      assert.are.equal(3, requests(id, 3)) -- 401, register, one poll
    end)
  end

  it("2 days ahead: provisioned", function()
    local r = provision("clock-ahead", "+2d")
    assert.truthy(r.state, r.message)
    assert.are.equal("clock-ahead", r.state.deviceId)
    assert.are.equal(2, requests("clock-ahead", 2))
  end)

  it("5 years behind: tls, saying the local time and that the clock must be set", function()
    local r = provision("clock-years", "-5y")
    assert.is_nil(r.state)
    assert.are.equal("tls", r.info.kind)
    assert.matches("the local clock says " .. (tonumber(os.date("!%Y")) - 5), r.message)
    assert.matches("set the clock %(NTP%)", r.message)
    assert.are.equal(0, #emu:requests("clock-years"))
  end)
end)
