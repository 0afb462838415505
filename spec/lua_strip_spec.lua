-- tools/lua-strip.lua (make install LUA_STRIP=..., the OpenWrt package):
-- every library file, stripped, compiles to the very same bytecode, line
-- numbers included, as the original; strings keep their "--"; and the
-- files shrink.
local shell = require "spec.support.shell"

local q = shell.quote
local load_string = rawget(_G, "loadstring") or load

-- Bytecode of SOURCE loaded under one chunk name, debug information (line
-- numbers, local names) included.
local function bytecode(source)
  return string.dump(assert(load_string(source, "=same")))
end

local function strip(source)
  local dir = shell.tmpdir("dps-strip")
  shell.write(dir .. "/in.lua", source)
  local out, ok = shell.run(string.format("%s tools/lua-strip.lua <%s", shell.interpreter(), q(dir .. "/in.lua")))
  shell.succeeds("rm -rf " .. q(dir))
  assert(ok, out)
  return out
end

describe("tools/lua-strip.lua", function()
  it("leaves every library file's bytecode as it was, and takes a third off their size", function()
    local files = shell.run("find lua bin -type f | sort")
    local before, after = 0, 0
    for file in files:gmatch("%S+") do
      local source = assert(shell.read(file)):gsub("^#![^\n]*", "")
      local stripped = strip(source)
      assert.are.equal(bytecode(source), bytecode(stripped), file)
      before, after = before + #source, after + #stripped
    end
    assert.is_true(after < before * 0.7, after .. " of " .. before .. " bytes")
  end)

  it("keeps strings and long strings byte for byte, and drops every kind of comment", function()
    local source = table.concat({
      "local a = \"--not a comment\" -- a comment",
      "local b = '[[ -- ]]' --[[ a long",
      "comment ]] local c = [==[",
      "  -- kept, indentation too",
      "]==] --[=[ ]] still the comment ]=]",
      "    local d = a .. \"\\\"--\" .. b -- the end",
      "return a, b, c, d, 1 - -1",
      "",
    }, "\n")
    local stripped = strip(source)
    assert.are.equal(table.concat({
      "local a = \"--not a comment\"",
      "local b = '[[ -- ]]'",
      " local c = [==[",
      "  -- kept, indentation too",
      "]==]",
      "local d = a .. \"\\\"--\" .. b",
      "return a, b, c, d, 1 - -1",
      "",
    }, "\n"), stripped)
    local f = assert(load_string(stripped, "=stripped"))
    assert.are.same({ "--not a comment", "[[ -- ]]", "  -- kept, indentation too\n", "--not a comment\"--[[ -- ]]", 2 },
      { f() })
  end)
end)
