-- dps provision-batch: one JSON line per device, exit 0 only when all were assigned.
local cli = require "dps.cli"
local json = require "cjson"
local emulator = require "spec.support.emulator"
local keys = require "spec.support.keys"
local shell = require "spec.support.shell"

local function sink()
  local t = { text = "" }
  function t:write(s) self.text = self.text .. s end
  return t
end

describe("dps provision-batch", function()
  it("prints a line per device and exits by the worst result", function()
    local emu = emulator.start{ retry_after = "0",
      enrollments = { { type = "group", group_id = "g1", symmetric_key = keys.GROUP_KEY } },
      scenarios = { ["b-bad"] = { polls_before_assignment = 0, result = "failed" } } }
    finally(function() emu:stop() end)
    local dir = shell.tmpdir("dps-batch")
    local path = dir .. "/ids.txt"
    local f = assert(io.open(path, "w"))
    f:write("b-1\n# a comment\n\nb-2\t{\"site\":\"north\"}\n")
    f:close()
    local argv = { "provision-batch", "--id-scope", emu.id_scope, "--ids", path, "--endpoint", emu.endpoint,
      "--ca-file", emu.ca_file, "--concurrency", "2", "--timeout", "60", "--request-timeout", "10" }
    local out, err = sink(), sink()
    assert.equal(0, cli.main(argv, { DPS_GROUP_KEY = keys.GROUP_KEY }, { stdout = out, stderr = err }))
    local lines = {}
    for line in out.text:gmatch("[^\n]+") do lines[#lines + 1] = json.decode(line) end
    assert.equal(2, #lines)
    for _, l in ipairs(lines) do assert.equal("assigned", l.status) end
    f = assert(io.open(path, "a"))
    f:write("b-bad\n")
    f:close()
    out = sink()
    assert.equal(6, cli.main(argv, { DPS_GROUP_KEY = keys.GROUP_KEY }, { stdout = out, stderr = sink() }))
    assert.truthy(out.text:find('"kind":"failed"', 1, true))
    assert.is_nil(out.text:find(keys.GROUP_KEY, 1, true))
    os.execute("rm -rf " .. shell.quote(dir))
  end)

  it("--cache-dir: run again, the devices cached there are done with no request", function()
    local emu = emulator.start{ retry_after = "0",
      enrollments = { { type = "group", group_id = "g1", symmetric_key = keys.GROUP_KEY } } }
    finally(function() emu:stop() end)
    local dir = shell.tmpdir("dps-batch-resume")
    finally(function() os.execute("rm -rf " .. shell.quote(dir)) end)
    local path = dir .. "/ids.txt"
    shell.write(path, "c-1\nc-2\nc-3\n")
    os.execute("mkdir -m 700 " .. shell.quote(dir .. "/caches"))
    local argv = { "provision-batch", "--id-scope", emu.id_scope, "--ids", path, "--endpoint", emu.endpoint,
      "--ca-file", emu.ca_file, "--cache-dir", dir .. "/caches" }
    local function run()
      local out = sink()
      assert.equal(0, cli.main(argv, { DPS_GROUP_KEY = keys.GROUP_KEY }, { stdout = out, stderr = sink() }))
      local sources = {}
      for line in out.text:gmatch("[^\n]+") do
        local l = json.decode(line)
        sources[l.registrationId] = l.source
      end
      return sources
    end
    assert.are.same({ ["c-1"] = "service", ["c-2"] = "service", ["c-3"] = "service" }, run())
    local before = #emu:requests()
    os.remove(dir .. "/caches/c-2.json")
    assert.are.same({ ["c-1"] = "cache", ["c-2"] = "service", ["c-3"] = "cache" }, run())
    local registered = {}
    for i = before + 1, #emu:requests() do
      local e = emu:requests()[i]
      if e.kind == "register" then registered[#registered + 1] = e.registration_id end
    end
    assert.are.same({ "c-2" }, registered)
    -- a folder that is not there: exit 3 before any request
    argv[#argv] = dir .. "/nowhere"
    local err = sink()
    assert.equal(3, cli.main(argv, { DPS_GROUP_KEY = keys.GROUP_KEY }, { stdout = sink(), stderr = err }))
    assert.truthy(err.text:find("--cache-dir", 1, true), err.text)
  end)

  it("refuses a list it cannot read and a key that is not a group's", function()
    local err = sink()
    assert.equal(3, cli.main({ "provision-batch", "--id-scope", "0ne00000001", "--ids", "/nonexistent" },
      { DPS_SYMMETRIC_KEY = keys.KEY }, { stdout = sink(), stderr = err }))
    assert.truthy(err.text:find("group", 1, true), err.text)
  end)
end)
