-- Specs for dps.headers.parse: the header block of an engine's `take`
-- (the kept lines, each ending in "\n") read into a table. Known blocks,
-- then properties over random blocks, in-process. (The C side, which lines
-- are kept, is fuzz/fuzz_headers.c's; requests over TLS: core_http_spec.)
--
-- Must parse on Lua 5.1: no goto, no integer division or bit operators.

local headers_of = require("dps.headers").parse

local KNOWN = {
  { "an empty block", "", {} },
  { "one field", "Content-Type: text/plain\n", { ["content-type"] = "text/plain" } },
  { "names lower-cased, values trimmed", "X-Mixed-Case: \t Yes \t\n", { ["x-mixed-case"] = "Yes" } },
  { "blanks before the colon dropped", "Name \t: v\n", { name = "v" } },
  { "an empty value", "X-Empty:\n", { ["x-empty"] = "" } },
  { "repeats joined in order", "X-Multi: a\nOther: o\nx-multi: b\n", { ["x-multi"] = "a, b", other = "o" } },
  { "a fold joined with one space", "X-Folded: one\n \t two  \n", { ["x-folded"] = "one two" } },
  { "a fold onto an empty value", "X-F:\n two\n", { ["x-f"] = " two" } },
  { "an empty fold ignored", "X-F: one\n   \n", { ["x-f"] = "one" } },
  { "a fold before any field dropped", " lost\nA: 1\n", { a = "1" } },
  { "lines without a colon skipped", "garbage\nA: 1\n", { a = "1" } },
  { "a line starting with a colon skipped", ":odd: 1\nA: 2\n", { a = "2" } },
  { "a fold across a skipped line", "A: 1\ngarbage\n more\n", { a = "1 more" } },
  { "a colon in the value kept", "Location: https://h:443/x\n", { location = "https://h:443/x" } },
  { "only ASCII lower-cased", "\195\137T\195\137: v\n", { ["\195\137t\195\137"] = "v" } },
  { "a repeat of a folded field", "A: 1\n 2\nA: 3\n", { a = "1 2, 3" } },
}

describe("dps.headers.parse", function()
  for _, row in ipairs(KNOWN) do
    it("reads " .. row[1], function()
      assert.same(row[3], headers_of(row[2]))
    end)
  end

  describe("on random blocks", function()
    -- Lines of a few bytes that matter (colons, blanks, letters of both
    -- cases, a stray CR inside), as the C side keeps them: never empty,
    -- never ending in CR.
    local BYTES = { "a", "B", "c", ":", " ", "\t", "-", "\r", "Z", "0" }
    local function random_block()
      local lines = {}
      for i = 1, math.random(0, 8) do
        local n, chars = math.random(1, 8), {}
        for j = 1, n do chars[j] = BYTES[math.random(#BYTES)] end
        local line = table.concat(chars)
        if line:sub(-1) == "\r" then line = line .. "x" end
        lines[i] = line .. "\n"
      end
      return table.concat(lines)
    end

    local blocks = {}
    setup(function()
      math.randomseed(20261130)
      for i = 1, 3000 do blocks[i] = random_block() end
    end)

    it("gives names without colons, blanks or upper case, and trimmed values", function()
      for _, block in ipairs(blocks) do
        for name, value in pairs(headers_of(block)) do
          assert.is_true(#name > 0, block)
          assert.is_nil(name:find("[:A-Z]"), block)
          assert.is_nil(name:find("^[ \t]"), block)
          assert.is_nil(name:find("[ \t]$"), block)
          assert.is_true(value:find("[ \t]$") == nil or value:find(", $") ~= nil, block) -- ", " + an empty value
          assert.is_nil(value:find("\n", 1, true), block)
          -- trimmed, but a fold onto an empty value keeps its joining space
          assert.is_true(value:find("^[ \t]") == nil or value:find("^ [^ \t]") ~= nil, block)
        end
      end
    end)

    it("reads its fields written out again the same", function()
      local checked = 0
      for _, block in ipairs(blocks) do
        local fields, clean = headers_of(block), true
        local out = {}
        for name, value in pairs(fields) do
          -- trimming drops a fold's space, and the blank of a join with an empty value
          if value:find("^ ") or value:find(", $") then clean = false end
          out[#out + 1] = name .. ": " .. value .. "\n"
        end
        if clean then
          assert.same(fields, headers_of(table.concat(out)), block)
          checked = checked + 1
        end
      end
      assert.is_true(checked > 1000, checked)
    end)
  end)
end)
