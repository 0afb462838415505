-- dps send and dps receive (dps.cli.hub) at their edges (issue 22, items 10
-- and 11): send reads at most the hub's limit + 1 byte of stdin and checks
-- the message as hub:send does before any request, so a refused message
-- costs no registration and no memory; receive makes its line of JSON
-- before it settles, so a message it cannot print is not lost, and prints a
-- delivery count only when it is a whole number.
local dps = require "dps"
local cli = require "dps.cli"
local hub_response = require "dps.hub_response"
local emulator = require "spec.support.emulator"
local shell = require "spec.support.shell"
local keys = require "spec.support.keys"
local cjson = require("cjson").new()

local KEY = keys.KEY
local MAX = require("dps.hub").MAX_MESSAGE_BYTES
local q = shell.quote

local function sink()
  local t = { parts = {} }
  function t.write(self, s) self.parts[#self.parts + 1] = s end
  function t.text(self) return table.concat(self.parts) end
  return t
end

-- A stdin that reads like a file: `read(n)` takes up to n bytes of
-- `size` bytes of "x" (any other format: all that is left); `given` counts
-- the bytes handed out.
local function stdin_of(size)
  local f = { given = 0 }
  function f.read(self, n)
    local left = size - self.given
    if left <= 0 then return nil end
    local take = type(n) == "number" and math.min(n, left) or left
    self.given = self.given + take
    return ("x"):rep(take)
  end
  return f
end

local function one_line(text)
  assert.are.equal(1, select(2, text:gsub("\n", "")), "not one line:\n" .. text)
  assert.truthy(text:match("^dps: "), text)
  assert.is_nil(text:find("%.lua:%d+:"), text)
end

describe("dps send and dps receive at their edges", function()
  local emu, dir, key_file

  setup(function()
    emu = emulator.start{ retry_after = "0", polls_before_assignment = 0, enrollments = {
      { type = "individual", registration_id = "send-big", symmetric_key = KEY },
      { type = "individual", registration_id = "send-bad", symmetric_key = KEY },
      { type = "individual", registration_id = "send-edge", symmetric_key = KEY },
    } }
    dir = shell.tmpdir("dps-cli-hub")
    key_file = shell.write(dir .. "/device.key", KEY .. "\n", "600")
  end)

  teardown(function()
    if emu then emu:stop() end
    if dir then shell.succeeds("rm -rf " .. q(dir)) end
  end)

  local function argv_of(id, extra)
    local a = { "send", "--id-scope", emu.id_scope, "--registration-id", id, "--endpoint", emu.endpoint,
      "--ca-file", emu.ca_file, "--hub-endpoint", emu.endpoint, "--symmetric-key-file", key_file }
    for _, v in ipairs(extra) do a[#a + 1] = v end
    return a
  end

  local function send(id, extra, stdin)
    local out, err = sink(), sink()
    local code = cli.main(argv_of(id, extra), {}, { stdout = out, stderr = err, stdin = stdin })
    return code, out:text(), err:text()
  end

  -- Every request of a registration ID at the emulator (DPS and hub),
  -- after a moment for the last to be logged.
  local function requests(id)
    shell.sleep(0.2)
    return #emu:requests(id)
  end

  describe("send", function()
    it("reads at most the hub's limit + 1 byte of stdin, and refuses more before any request", function()
      local stdin = stdin_of(64 * 1024 * 1024)
      local code, out, err = send("send-big", { "-" }, stdin)
      assert.are.equal(2, code, err)
      assert.are.equal("", out)
      one_line(err)
      assert.truthy(err:find("send: the message on stdin is larger than " .. MAX .. " bytes, the most the hub takes; "
        .. "nothing was sent", 1, true), err)
      assert.is_true(stdin.given <= MAX + 1, "read " .. stdin.given .. " bytes")
      assert.are.equal(0, requests("send-big"))
    end)

    it("as a process, 64 MiB on stdin through a pipe: exit 2, no request, the memory stays small", function()
      -- the command as bin/dps runs it, with the peak RSS (VmHWM) read before
      -- and after in the same process
      local script = shell.write(dir .. "/hwm.lua", [[
        local function hwm()
          for line in io.lines("/proc/self/status") do
            local kb = line:match("^VmHWM:%s*(%d+)")
            if kb then return tonumber(kb) end
          end
        end
        local cli = require "dps.cli"
        local before = hwm()
        local code = cli.main(arg)
        io.stderr:write(string.format("\nVmHWM growth %d kB\n", hwm() - before))
        os.exit(code)
      ]])
      local lua, cpath = shell.plain()
      local quoted = {}
      for i, a in ipairs(argv_of("send-big", { "-" })) do quoted[i] = q(a) end
      local cmd = string.format("head -c %d /dev/zero | env LUA_PATH=%s LUA_CPATH=%s %s %s %s 2>%s; echo $? >%s",
        64 * 1024 * 1024, q(package.path), q(cpath), q(lua), q(script), table.concat(quoted, " "),
        q(dir .. "/err"), q(dir .. "/rc"))
      shell.succeeds(cmd)
      local err = shell.read(dir .. "/err") or ""
      assert.are.equal("2", (shell.read(dir .. "/rc") or ""):match("%d+"), err)
      assert.truthy(err:find("larger than " .. MAX .. " bytes", 1, true), err)
      local growth = tonumber(err:match("VmHWM growth (%-?%d+) kB"))
      assert.is_not_nil(growth, err)
      assert.is_true(growth < 16 * 1024, "the peak RSS grew by " .. tostring(growth) .. " kB")
      assert.are.equal(0, requests("send-big"))
    end)

    it("sends exactly the hub's limit from stdin; one byte more is refused", function()
      local code, _, err = send("send-edge", { "-" }, stdin_of(MAX + 1))
      assert.are.equal(2, code, err)
      assert.are.equal(0, requests("send-edge"))
      code, _, err = send("send-edge", { "-" }, stdin_of(MAX))
      assert.are.equal(0, code, err)
      local got = emu:log()
      local size
      for _, e in ipairs(got) do
        if e.event == "telemetry" and e.device_id == "send-edge" then size = #e.body end
      end
      assert.are.equal(MAX, size)
    end)

    it("refuses a message hub:send would refuse (size, property, content type, ID) before any request", function()
      local big = ("y"):rep(MAX + 1)
      for _, case in ipairs({
        { { big }, "send: " .. (MAX + 1) .. " bytes; the hub takes at most " .. MAX },
        { { "--property", "bad name=1", "x" }, 'send: --property names must be 1-128 characters' },
        { { "--property", ("n"):rep(129) .. "=1", "x" }, "send: --property names must be 1-128 characters" },
        { { "--property", "k=line\nbreak", "x" }, "send: --property k must not contain control characters" },
        { { "--content-type", "text/plain\r\nx-evil: 1", "x" },
          "send: --content-type must not contain control characters" },
        { { "--content-encoding", "utf-8\0", "x" }, "send: --content-encoding must not contain control characters" },
        { { "--message-id", "m\1", "x" }, "send: --message-id must not contain control characters" },
      }) do
        local code, out, err = send("send-bad", case[1])
        assert.are.equal(2, code, err)
        assert.are.equal("", out)
        one_line(err)
        assert.truthy(err:find(case[2], 1, true), err)
        assert.truthy(err:find("; nothing was sent", 1, true), err)
      end
      assert.are.equal(0, requests("send-bad"))
    end)

    it("warns when the cache cannot be written", function()
      local code, _, err = send("send-edge", { "--cache", dir .. "/no-such-folder/c.json", "hello" })
      assert.are.equal(0, code, err)
      assert.truthy(err:find("warning: provisioned, but the cache cannot be written", 1, true), err)
    end)
  end)

  -- receive against a hub in-process: the emulator's hub counts deliveries
  -- itself and cannot send a 400-digit iothub-deliverycount.
  describe("receive", function()
    local real_connect = dps.connect
    local hub, settled

    -- The message as the library reads it from the hub's headers.
    local function message(headers)
      local h = { etag = '"lock-1"', ["iothub-messageid"] = "m-1" }
      for k, v in pairs(headers or {}) do h[k] = v end
      return assert(hub_response.message(200, h, "reboot"))
    end

    local function stub_hub(msg, settle_result)
      settled = {}
      hub = { host = "stub-hub.azure-devices.net", device_id = "dev", provisioned = { source = "cache" } }
      function hub.receive() return msg end
      for _, how in ipairs({ "complete", "reject", "abandon" }) do
        hub[how] = function(_, m)
          settled[#settled + 1] = { how, m.lock_token }
          if settle_result then return nil, "the lock was lost", { kind = "lock_lost", step = how } end
          return true
        end
      end
      function hub.stats() return { requests = 2, connects = 1, reprovisions = 0 } end
      function hub.close() end
      dps.connect = function() return hub end
    end

    after_each(function()
      dps.connect = real_connect
    end)

    local function receive(...)
      local out, err = sink(), sink()
      local code = cli.main({ "receive", "--id-scope", "0ne00000001", "--registration-id", "dev", ... },
        { DPS_SYMMETRIC_KEY = KEY }, { stdout = out, stderr = err })
      return code, out:text(), err:text()
    end

    it("a 400-digit delivery count is left out; the message is printed and then completed", function()
      stub_hub(message({ ["iothub-deliverycount"] = ("9"):rep(400) }))
      local code, out, err = receive("--complete")
      assert.are.equal(0, code, err)
      local doc = cjson.decode(out)
      assert.are.same({ "reboot", "complete", "lock-1" }, { doc.body, doc.settled, doc.lock_token })
      assert.is_nil(doc.delivery_count)
      assert.are.same({ { "complete", "lock-1" } }, settled)
    end)

    it("a whole delivery count is printed as it came", function()
      for _, case in ipairs({ { "3", 3 }, { "99999999999999", 99999999999999 }, { "100000000000000", nil } }) do
        stub_hub(message({ ["iothub-deliverycount"] = case[1] }))
        local code, out, err = receive()
        assert.are.equal(0, code, err)
        assert.are.equal(case[2], cjson.decode(out).delivery_count, out)
        assert.are.same({}, settled)
      end
    end)

    it("a message that cannot be printed is not settled: exit 1, it comes again", function()
      for _, how in ipairs({ "complete", "reject", "abandon" }) do
        local msg = message()
        msg.properties.level = 0 / 0 -- what no JSON can say
        stub_hub(msg)
        local code, out, err = receive("--" .. how)
        assert.are.equal(1, code, err)
        assert.are.equal("", out)
        one_line(err)
        assert.truthy(err:find("cannot be printed as JSON", 1, true), err)
        assert.truthy(err:find("it was not settled", 1, true), err)
        assert.are.same({}, settled)
      end
    end)

    it("a message whose settling fails is not printed", function()
      stub_hub(message(), "fails")
      local code, out, err = receive("--complete")
      assert.are.equal(1, code, err)
      assert.are.equal("", out)
      assert.truthy(err:find("lock", 1, true), err)
      assert.are.same({ { "complete", "lock-1" } }, settled)
    end)
  end)
end)
