-- dps.core.stat: a file's permission bits, type, size and owner, from C
-- (no `ls` to shell out to); a missing file is a `config` failure.
local core = require "dps.core"
local shell = require "spec.support.shell"

describe("dps.core.stat", function()
  local dir
  setup(function() dir = shell.tmpdir() end)
  teardown(function() if dir then shell.succeeds("rm -rf " .. shell.quote(dir)) end end)

  it("gives the permission bits as an integer, and the type, size and owner", function()
    for _, case in ipairs({ { "600", 384 }, { "644", 420 }, { "640", 416 }, { "400", 256 }, { "4755", 2541 },
      { "1777", 1023 }, { "000", 0 } }) do
      local path = shell.write(dir .. "/f" .. case[1], "12345", case[1])
      local facts = assert(core.stat(path))
      assert.are.equal(case[2], facts.mode, case[1])
      assert.are.equal("file", facts.type)
      assert.are.equal(5, facts.size)
    end
    local facts = assert(core.stat(dir))
    assert.are.equal("directory", facts.type)
    assert.are.equal(448, facts.mode) -- mktemp -d: 0700
    local uid = tonumber((shell.run("id -u")))
    assert.are.equal(uid, facts.uid)
    assert.are.equal("other", assert(core.stat("/dev/null")).type)
  end)

  it("follows symbolic links, like ls -lL", function()
    local target = shell.write(dir .. "/target", "x", "640")
    assert(shell.succeeds("ln -s " .. shell.quote(target) .. " " .. shell.quote(dir .. "/link")))
    local facts = assert(core.stat(dir .. "/link"))
    assert.are.equal(416, facts.mode)
    assert.are.equal("file", facts.type)
  end)

  it("returns nil, message, {kind = 'config'} for a missing file, naming the path and the reason", function()
    local facts, message, info = core.stat(dir .. "/missing")
    assert.is_nil(facts)
    assert.are.equal(dir .. "/missing: No such file or directory", message)
    assert.are.same({ kind = "config" }, info)
    facts, message, info = core.stat(dir .. "/target/below")
    assert.is_nil(facts)
    assert.are.equal(dir .. "/target/below: Not a directory", message)
    assert.are.equal("config", info.kind)
  end)

  it("raises for misuse, naming the function", function()
    assert.error_matches(function() core.stat() end, "dps.core.stat")
    assert.error_matches(function() core.stat({}) end, "path must be a string, got table")
    assert.error_matches(function() core.stat("") end, "must not be empty")
    assert.error_matches(function() core.stat(dir .. "/a\0b") end, "NUL")
  end)
end)
