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

  it("refuses a list it cannot read and a key that is not a group's", function()
    local err = sink()
    assert.equal(3, cli.main({ "provision-batch", "--id-scope", "0ne00000001", "--ids", "/nonexistent" },
      { DPS_SYMMETRIC_KEY = keys.KEY }, { stdout = sink(), stderr = err }))
    assert.truthy(err.text:find("group", 1, true), err.text)
  end)
end)
