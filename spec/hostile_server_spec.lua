-- Hostile servers and operator mistakes (issue #10, the Lua side): whatever
-- a server sends, and however the command is misused, the outcome is a
-- classified failure (`nil, message, info` with `info.kind`; the command's
-- exit code by kind), within the deadline, in one line of safe text, with
-- nothing secret in it; never a raise, a traceback or `internal error`.
--
-- Each class of server-chosen value (errorCode, operationId, assignedHub,
-- deviceId, numbers, free text) is tried with many values in milliseconds,
-- through `dps.response.interpret` and the `dps.poll` machine exactly as the
-- client feeds them; then one row per class end to end, over real HTTPS,
-- against the emulator's scripted hostile answers (its `raw` fault).
local dps = require "dps"
local cli = require "dps.cli"
local core = require "dps.core"
local errors = require "dps.errors"
local poll = require "dps.poll"
local response = require "dps.response"
local emulator = require "spec.support.emulator"
local shell = require "spec.support.shell"
local timing = require "spec.support.timing"
local cjson = require("cjson").new()

local keys = require "spec.support.keys"
local KEY = keys.KEY
local EPOCH = 1700000000

local q, read = shell.quote, shell.read
local math_type = rawget(math, "type")

-- One line of text a terminal shows as it is: no control characters (the
-- escapes are spelled out), no C1 controls, no line separators, no SAS
-- signature.
local function assert_safe(text, what)
  assert.are.equal("string", type(text), what)
  assert.is_nil(text:find("[%c\127]"), (what or "text") .. " holds a control character: " .. text:sub(1, 300))
  assert.is_nil(text:find("\194[\128-\159]"), (what or "text") .. " holds a C1 control")
  assert.is_nil(text:find("\226\128[\168\169\170-\174]"), (what or "text") .. " holds a line separator or override")
  assert.is_nil(text:find("[Ss][Ii][Gg]=[^<]"), (what or "text") .. " holds a signature: " .. text:sub(1, 300))
  assert.is_nil(text:find("[Ss][Ii][Gg]%%3[Dd][^<]"), (what or "text") .. " holds a signature: " .. text:sub(1, 300))
end

-- Drives one provisioning machine through scripted answers (status, headers,
-- body text) with a fake clock; returns the final action.
local function drive(answers, timeout)
  local clock = 0
  local m = poll.new{ timeout = timeout or 60, now = clock, jitter = function(low) return low end }
  local act, n = m:tick(clock), 0
  while act.action == "send" or act.action == "wait" do
    if act.action == "wait" then
      clock = act.at
      act = m:tick(clock)
    else
      n = n + 1
      local a = assert(answers[n], "the script ran out at request " .. n)
      local headers = a.headers or {}
      headers["content-type"] = headers["content-type"] or "application/json"
      act = m:answer(clock, response.interpret(act.step, a.status, headers, a.body, EPOCH + clock))
    end
  end
  return act
end

local function accepted(id)
  return { status = 202, body = cjson.encode{ operationId = id or "op-1", status = "assigning" } }
end

local function assigned_with(fields)
  local state = { registrationId = "dev", assignedHub = "hub.example", deviceId = "dev", status = "assigned" }
  for k, v in pairs(fields or {}) do state[k] = v end
  return { status = 200, body = cjson.encode{ operationId = "op-1", status = "assigned", registrationState = state } }
end

-- A JSON text with `value` as the raw text of one member (numbers cjson
-- cannot make: NaN, 1e999, 0x10).
local function with_raw(template, raw)
  return (template:gsub("RAW", function() return raw end))
end

describe("hostile server values, in milliseconds", function()
  describe("errorCode (case 3)", function()
    -- raw JSON texts of errorCode: none may raise; integers come back as integers
    local bad_bodies = { "400.5", "NaN", "-NaN", "Infinity", "1e300", "1e999", "-1e999", "4e9", "-0.5",
      '"400.5"', '"0x10"', '"NaN"', "true", "{}", "[404001]", "null", '""', '"  "', "2147483648" }
    local bad_headers = { "400.5", "NaN", "1e300", "0x10", "inf", "", " ", "-", "404001x", "99999999999999999999",
      string.rep("9", 5000) }

    it("never raises for a non-integer errorCode in the body, and leaves error_code out", function()
      for _, raw in ipairs(bad_bodies) do
        for _, status in ipairs({ 400, 401, 404, 409, 429, 500, 503, 418 }) do
          local body = with_raw('{"errorCode":RAW,"message":"Injected.","trackingId":"t-1"}', raw)
          local ok, doc, message, info = pcall(response.interpret, "register", status, {}, body, EPOCH)
          assert.is_true(ok, raw .. ": " .. tostring(doc))
          assert.is_nil(doc)
          assert.are.equal(errors.kind_of_status(status), info.kind, raw)
          assert.is_nil(info.error_code, raw)
          assert_safe(message, raw)
          assert.is_nil(message:find("-9223372036854775808", 1, true), message)
        end
      end
    end)

    it("never raises for a non-integer x-ms-error-code header", function()
      for _, value in ipairs(bad_headers) do
        local ok, doc, message, info = pcall(response.interpret, "operation_status", 400,
          { ["x-ms-error-code"] = value }, "", EPOCH)
        assert.is_true(ok, value:sub(1, 40) .. ": " .. tostring(doc))
        assert.are.equal("bad_request", info.kind)
        assert.is_nil(info.error_code, value:sub(1, 40))
        assert_safe(message)
      end
    end)

    it("gives integer-valued codes as integers (404001, not 404001.0), from the body or the header", function()
      local function check(info)
        assert.are.equal(404001, info.error_code)
        if math_type then assert.are.equal("integer", math_type(info.error_code)) end
      end
      local _, message, info = response.interpret("register", 404, {}, '{"errorCode":404001.0}', EPOCH)
      check(info)
      assert.truthy(message:find("(errorCode 404001)", 1, true), message)
      _, message, info = response.interpret("register", 404, { ["x-ms-error-code"] = "404001" }, "", EPOCH)
      check(info)
      assert.truthy(message:find("(errorCode 404001)", 1, true), message)
      _, _, info = response.interpret("register", 404, {}, '{"errorCode":"404001"}', EPOCH)
      check(info)
    end)

    it("does the same in a failed registration's state (the outcome)", function()
      for _, raw in ipairs(bad_bodies) do
        local body = with_raw('{"operationId":"op-1","status":"failed","registrationState":{"status":"failed",'
          .. '"errorCode":RAW,"errorMessage":"Custom allocation failed"}}', raw)
        local ok, act = pcall(drive, { { status = 200, body = body } })
        assert.is_true(ok, raw .. ": " .. tostring(act))
        assert.are.equal("fail", act.action)
        assert.are.equal("failed", act.info.kind)
        assert.is_nil(act.info.error_code, raw)
        assert_safe(act.message)
      end
      local act = drive({ { status = 200, body = '{"operationId":"op-1","status":"failed","registrationState":'
        .. '{"status":"failed","errorCode":400207.0}}' } })
      assert.are.equal(400207, act.info.error_code)
      if math_type then assert.are.equal("integer", math_type(act.info.error_code)) end
    end)
  end)

  describe("operationId (case 4)", function()
    local bad = {
      { "a NUL byte", "op\0id" }, { "over 1 MiB", string.rep("x", 1024 * 1024 + 1) },
      { "over 1 KiB", string.rep("x", 1025) }, { "a line break", "op\r\nHost: evil" }, { "a space", "op 1" },
      { "an escape sequence", "\27[2J" }, { "invalid UTF-8", "op\255" }, { "non-ASCII", "op-\195\169" },
      { "a number", 5 }, { "a table", { 1 } }, { "true", true },
    }
    for _, row in ipairs(bad) do
      it("is kind protocol, never a raise, when it holds " .. row[1], function()
        local body = cjson.encode{ operationId = row[2], status = "assigning" }
        local ok, act = pcall(drive, { { status = 202, body = body } })
        assert.is_true(ok, tostring(act))
        assert.are.equal("fail", act.action)
        assert.are.equal("protocol", act.info.kind, act.message)
        assert.is_false(act.info.retryable)
        assert_safe(act.message)
        assert.is_true(#act.message < 2048, "a message of " .. #act.message .. " bytes")
        -- the same value in a poll's answer
        ok, act = pcall(drive, { accepted(), { status = 200, body = cjson.encode{ operationId = row[2],
          status = "assigning" } } })
        assert.is_true(ok, tostring(act))
        assert.are.equal("protocol", act.info.kind, act.message)
      end)
    end

    it("takes the IDs the service sends, and registers again without one", function()
      local id = "4.d0f7b7b6a2d5e1c5.3b2d6f0c-1c0d-4b4e-9f4c-7a1e2d3c4b5a"
      local act = drive({ accepted(id), assigned_with() })
      assert.are.equal("done", act.action, act.message)
      act = drive({ { status = 202, body = '{"status":"assigning","operationId":null}' }, accepted(), assigned_with() })
      assert.are.equal("done", act.action, act.message)
    end)
  end)

  describe("assignedHub and deviceId (case 5)", function()
    local bad_hubs = { "evil.example.com/../x?y#\r\nHost: z", "../../etc\r\n", "hub\255\254.example", "",
      "hub..example", "-hub.example", "hub-.example", "hub_1.example", "hub.example:443", "https://hub.example",
      "hub.example/", " hub.example", "hub.example.", string.rep("a", 64) .. ".example",
      string.rep("abcdefghi.", 26) .. "com", "hub\0.example", "h\195\188b.example", 5, { "hub.example" }, true }
    local bad_devices = { "../../etc\r\n", "dev\255", "", string.rep("d", 129), "dev 01", "dev/01", "dev\0",
      "dev\\01", "dev<01>", "dev\"01", "d\195\169v", "dev\27[31m", "dev&01", 7, { "dev" }, false,
      -- a field separator of connection strings (issue 22, case 7)
      "dev;GatewayHostName=evil-hub.test", ";" }
    local good = {
      { "hub.example", "dev" }, { "emulated-hub.azure-devices.net", string.rep("d", 128) },
      { "h1.x", "A-z0.9+%_#*?!(),=@$':" }, { "localhost", "dev-01" },
    }

    -- each bad value of each server-chosen field, in the provisioning answer
    -- and in a registration status lookup (dps status)
    for _, field in ipairs({ { "assignedHub", bad_hubs }, { "deviceId", bad_devices } }) do
      local name, values = field[1], field[2]
      for _, value in ipairs(values) do
        it("refuses " .. name .. " " .. string.format("%q", tostring(value)):sub(1, 40) .. " as protocol", function()
          local act = drive({ accepted(), assigned_with{ [name] = value } })
          assert.are.equal("fail", act.action)
          assert.are.equal("protocol", act.info.kind, act.message)
          assert_safe(act.message)
          local doc = { registrationId = "dev", status = "assigned", assignedHub = "hub.example", deviceId = "dev" }
          doc[name] = value
          local result, message, info = response.interpret("registration_status", 200, {}, cjson.encode(doc), EPOCH)
          assert.is_nil(result)
          assert.are.equal("protocol", info.kind)
          assert_safe(message)
        end)
      end
    end

    it("takes DNS host names and device IDs of the documented set (128 characters at most)", function()
      for _, row in ipairs(good) do
        local act = drive({ accepted(), assigned_with{ assignedHub = row[1], deviceId = row[2] } })
        assert.are.equal("done", act.action, act.message)
        assert.are.equal(row[1], act.state.assignedHub)
        assert.are.equal(row[2], act.state.deviceId)
      end
    end)
  end)

  describe("server text in messages (case 7)", function()
    local token = "SharedAccessSignature sr=0ne00000001%2Fregistrations%2Fdev&sig=AbCdEf%2B123%2F456%3D&se=1700003600"
      .. "&skn=registration"
    local texts = {
      "Unauthorized: " .. token,
      "bad \27[31mred\27[0m \27]0;title\7 text",
      "two\nlines\r\nand\rmore",
      "tab\there and NUL\0 and DEL\127",
      "C1 \194\155 controls, line\226\128\168separator, \226\128\174override",
      "invalid \255\254 UTF-8",
      "encoded sig%3DAbCdEf%2B123 and SIG=ABC",
      string.rep("long ", 20000),
    }

    it("is escaped, one line, capped and without signatures in every error of the library", function()
      for _, text in ipairs(texts) do
        local body = cjson.encode{ errorCode = 401002, message = text, trackingId = text }
        local _, message, info = response.interpret("register", 401, { ["x-ms-error-code"] = "401002" }, body, EPOCH)
        assert_safe(message)
        assert_safe(info.tracking_id)
        assert.is_true(#message <= 1100, #message .. " bytes")
        -- a failed outcome's errorMessage
        local act = drive({ { status = 200, body = cjson.encode{ operationId = "op", status = "failed",
          registrationState = { status = "failed", errorCode = 400207, errorMessage = text } } } })
        assert.are.equal("failed", act.info.kind)
        assert_safe(act.message)
        -- an unknown status
        act = drive({ { status = 200, body = cjson.encode{ operationId = "op", status = text } } })
        assert.are.equal("protocol", act.info.kind)
        assert_safe(act.message)
        -- a transport failure's message (the C core may quote the server)
        local _, tmessage = errors.transport("register", text, { kind = "protocol" })
        assert_safe(tmessage)
        -- and the deadline that carries the last failure
        act = drive({ { status = 503, body = body } }, 0.5)
        assert.are.equal("timeout", act.info.kind)
        assert_safe(act.message)
      end
    end)

    it("keeps ordinary text as it is, UTF-8 included", function()
      local _, message = response.interpret("register", 400, {},
        cjson.encode{ message = "Ung\195\188ltige Anfrage: registrationId fehlt.", errorCode = 400004 }, EPOCH)
      assert.are.equal("register: HTTP 400 Ung\195\188ltige Anfrage: registrationId fehlt. (errorCode 400004)", message)
    end)
  end)

  describe("the real cause when no time is left (case 15)", function()
    it("a connection failure with no time left for another try ends as itself, not as timeout", function()
      for _, kind in ipairs({ "resolve", "connect", "network" }) do
        local clock = 0
        local m = poll.new{ timeout = 5, now = 0, jitter = function(_, high) return high end }
        local act = m:tick(clock)
        while act.action == "send" or act.action == "wait" do
          if act.action == "wait" then
            clock = act.at
            act = m:tick(clock)
          else
            act = m:answer(clock, errors.transport("register", "could not resolve host: x", { kind = kind }))
          end
        end
        assert.are.equal(kind, act.info.kind, act.message)
        assert.is_true(clock < 5)
        assert.is_nil(act.message:find("no assignment within", 1, true), act.message)
        assert.truthy(act.message:find("gave up after 3.0 s", 1, true), act.message) -- 1 + 2, then 4 would not fit
      end
    end)
  end)
end)

describe("hostile servers end to end, over HTTPS", function()
  local emu, dir

  -- each fault twice: once for the library, once for the command
  local function twice(fault) return { fault, fault } end
  local CASES = {
    ["h-code"] = { register = twice{ fault = "raw", status = 400, headers = { ["x-ms-error-code"] = "400.5" },
      body = '{"errorCode":400.5,"message":"Bad.","trackingId":"t-1"}' } },
    ["h-op-nul"] = { register = twice{ fault = "raw", status = 202,
      body = '{"operationId":"op\\u0000id","status":"assigning"}' } },
    -- over 1 MiB: the library is given a larger max_body; the command keeps 1 MiB (too_large)
    ["h-op-huge"] = { register = twice{ fault = "raw", status = 202,
      body = '{"operationId":"' .. string.rep("x", 1024 * 1024 + 1) .. '","status":"assigning"}' } },
    ["h-hub"] = { assigned_hub = "evil.example.com/../x?y#\r\nHost: z" },
    ["h-device"] = { device_id = "../../etc\r\n" },
    ["h-inf"] = { poll = twice{ fault = "raw", status = 200, body = '{"operationId":"op-1","status":"assigned",'
      .. '"registrationState":{"registrationId":"h-inf","assignedHub":"hub.example","deviceId":"h-inf",'
      .. '"status":"assigned","payload":{"reading":1e999}}}' },
      lookup = { { fault = "raw", status = 200, body = '{"registrationId":"h-inf","assignedHub":"hub.example",'
      .. '"deviceId":"h-inf","status":"assigned","payload":{"reading":-1e999}}' } } },
    ["h-echo"] = { register = twice{ fault = "raw", status = 401, headers = { ["x-ms-error-code"] = "401002" },
      body = cjson.encode{ errorCode = 401002, trackingId = "t\27[2J",
        message = "Unauthorized \27[31m\nAuthorization: SharedAccessSignature sr=x&sig=AbC%2BdEf%3D&se=1" } } },
  }

  setup(function()
    dir = shell.tmpdir("dps-hostile")
    local enrollments = {}
    for id in pairs(CASES) do
      enrollments[#enrollments + 1] = { type = "individual", registration_id = id, symmetric_key = KEY }
    end
    for _, id in ipairs({ "h-slow", "h-hang" }) do
      enrollments[#enrollments + 1] = { type = "individual", registration_id = id, symmetric_key = KEY }
    end
    CASES["h-slow"] = { polls_before_assignment = 1000, retry_after = "1" }
    CASES["h-hang"] = { retry_after = "0", poll = { { fault = "hang", seconds = 30 } } }
    emu = emulator.start{ retry_after = "0", enrollments = enrollments, scenarios = CASES }
  end)

  teardown(function()
    if emu then emu:stop() end
    if dir then os.execute("rm -rf " .. q(dir)) end
  end)

  local function provision(id)
    local t0 = core.monotime()
    local ok, state, message, info = pcall(dps.provision, { id_scope = emu.id_scope, registration_id = id,
      symmetric_key = KEY, endpoint = emu.endpoint, ca_file = emu.ca_file, timeout = 8, max_body = 4 * 1024 * 1024 })
    assert.is_true(ok, tostring(state))
    return state, message, info, core.monotime() - t0
  end

  local function main(args)
    local out, err = {}, {}
    local code = cli.main(args, { DPS_SYMMETRIC_KEY = KEY }, {
      stdout = { write = function(_, s) out[#out + 1] = s end },
      stderr = { write = function(_, s) err[#err + 1] = s end } })
    return code, table.concat(out), table.concat(err)
  end

  local function cli_args(command, id, ...)
    local a = { command, "--id-scope", emu.id_scope, "--registration-id", id, "--endpoint", emu.endpoint,
      "--ca-file", emu.ca_file, "-v" }
    for i = 1, select("#", ...) do a[#a + 1] = (select(i, ...)) end
    return a
  end

  local function assert_one_failure_line(err, kind)
    local lines = {}
    for line in err:gmatch("[^\n]+") do lines[#lines + 1] = line end
    for _, line in ipairs(lines) do assert_safe(line, "stderr") end
    assert.truthy(err:find("kind=" .. kind, 1, true), err)
    assert.is_nil(err:find("internal error", 1, true), err)
    assert.is_nil(err:find("traceback", 1, true), err)
  end

  -- Each row: the library's kind, the command's exit code (and its kind when not the library's).
  local rows = {
    { "h-code", "bad_request", 1 }, { "h-op-nul", "protocol", 1 }, { "h-op-huge", "protocol", 1, "too_large" },
    { "h-hub", "protocol", 1 }, { "h-device", "protocol", 1 }, { "h-echo", "auth", 4 },
  }
  for _, row in ipairs(rows) do
    it(row[1] .. " ends as " .. row[2] .. " (library) and exit " .. row[3] .. " (command)", function()
      local state, message, info, took = provision(row[1])
      assert.is_nil(state)
      assert.are.equal(row[2], info.kind, message)
      assert_safe(message)
      assert.is_true(took < 5, string.format("took %.2f s", took))
      local code, out, err = main(cli_args("provision", row[1]))
      assert.are.equal(row[3], code, err)
      assert.are.equal("", out)
      assert_one_failure_line(err, row[4] or row[2])
    end)
  end

  it("h-inf: a state with a number JSON cannot say again is assigned in Lua, reported as protocol by the "
    .. "command", function()
    local state, message = provision("h-inf")
    assert.truthy(state, message)
    assert.are.equal(math.huge, state.payload.reading)
    for _, command in ipairs({ "provision", "status" }) do
      local code, out, err = main(cli_args(command, "h-inf"))
      assert.are.equal(1, code, err)
      assert.are.equal("", out)
      assert_one_failure_line(err, "protocol")
      assert.truthy(err:find("hub hub.example, device h-inf", 1, true), err)
    end
  end)

  -- Case 2: a process stopped (SIGSTOP) across the deadline, then continued,
  -- ends as timeout (exit 5), at once: never `timeout must be greater than 0`
  -- (exit 2).
  -- stopped 0.6 s in for 3 s: in the wait between polls (h-slow: Retry-After 1 s), or in a poll that hangs
  for _, row in ipairs({ { "h-slow", "in a wait" }, { "h-hang", "in a request" } }) do
    it("a dps process stopped " .. row[2] .. " across the deadline exits 5 with kind timeout, right after it "
      .. "continues", function()
      local env = shell.write(dir .. "/env.sh", string.format("export LUA_PATH=%s LUA_CPATH=%s DPS_SYMMETRIC_KEY=%s\n",
        q(package.path), q(package.cpath), q(KEY)), "600")
      local quoted = {}
      for i, a in ipairs(cli_args("provision", row[1], "--timeout", "2")) do quoted[i] = q(a) end
      local script = shell.write(dir .. "/stop.sh", string.format([[
. %s
%s %s %s >%s 2>%s &
pid=$!
sleep 0.6
kill -STOP $pid
sleep 3
t0=$(date +%%s%%N)
kill -CONT $pid
wait $pid
echo "$? $(( ($(date +%%s%%N) - t0) / 1000000 ))"
]], q(env), shell.interpreter(), q(emulator.root .. "/bin/dps"), table.concat(quoted, " "), q(dir .. "/out"),
        q(dir .. "/err")))
      local result = shell.run("sh " .. q(script))
      local code, ms = result:match("(%d+) (%d+)")
      local err = read(dir .. "/err") or ""
      assert.are.equal("5", code, err)
      assert.are.equal("", read(dir .. "/out"))
      assert_one_failure_line(err, "timeout")
      assert.truthy(err:find("no assignment within 2 s", 1, true), err)
      -- a rule about wall time: 1.5 s on an idle machine, more on a busy one
      -- or under ASan (the child runs on the suite's interpreter)
      local limit = 1000 * timing.child_margin(1.5) * (os.getenv("ASAN_OPTIONS") and 2 or 1)
      assert.is_true(tonumber(ms) < limit, string.format("%s ms after SIGCONT (limit %.0f)", ms, limit))
    end)
  end
end)
