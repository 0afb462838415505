-- The C core's encodings: base64 (encoded in C, decoded there only as keys:
-- core.key_problem says what is wrong with a key's text) and RFC 3986
-- percent-encoding.
local core = require "dps.core"
local base64 = require "spec.support.base64"

describe("dps.core.base64", function()
  it("encodes and decodes the RFC 4648 examples", function()
    local cases = { [""] = "", f = "Zg==", fo = "Zm8=", foo = "Zm9v", foob = "Zm9vYg==",
                    fooba = "Zm9vYmE=", foobar = "Zm9vYmFy" }
    for plain, encoded in pairs(cases) do
      assert.are.equal(encoded, core.base64_encode(plain))
      if plain ~= "" then
        assert.are.equal(plain, base64.decode(encoded))
      end
    end
  end)

  it("round-trips every byte value", function()
    local bytes = {}
    for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
    local all = table.concat(bytes)
    for n = 1, 7 do
      assert.are.equal(all:sub(n), base64.decode(core.base64_encode(all:sub(n))))
    end
  end)

  local bad = {
    ["empty input"] = { "", "empty" },
    ["a bad character"] = { "QU*D", "alphabet" },
    ["whitespace"] = { "QUJD RA=", "has a space at position 5" },
    ["a line break"] = { "QUJD\nRA==", "has a line break at position 5" },
    ["URL-safe alphabet"] = { "-_-_", "alphabet" },
    ["a missing pad"] = { "QQ=", "multiple of 4" },
    ["three pads"] = { "Q===", "padding" },
    ["padding in the middle"] = { "QQ==QUJD", "padding" },
    ["an embedded NUL"] = { "QU\0D", "alphabet" },
    ["non-zero bits after the last byte (one pad)"] = { "QUJ=", "canonical" },
    ["non-zero bits after the last byte (two pads)"] = { "QR==", "canonical" },
  }
  for what, case in pairs(bad) do
    it("refuses as a key " .. what, function()
      local problem = core.key_problem(case[1])
      assert.is_string(problem)
      assert.truthy(problem:find(case[2], 1, true), problem)
    end)
  end
end)

describe("dps.core.url_encode", function()
  it("keeps exactly the unreserved characters", function()
    local unreserved = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
    assert.are.equal(unreserved, core.url_encode(unreserved))
  end)

  it("encodes everything else as upper-case %XX", function()
    for i = 0, 255 do
      local c = string.char(i)
      if not c:find("[%w%-%._~]") then
        assert.are.equal(string.format("%%%02X", i), core.url_encode(c))
      end
    end
  end)

  it("matches the protocol notes' example", function()
    assert.are.equal("0ne00ABC123%2Fregistrations%2FDev.01%3Aa_b-~%21%2A%28%29",
      core.url_encode("0ne00ABC123/registrations/Dev.01:a_b-~!*()"))
  end)

  it("is binary-safe", function()
    assert.are.equal("a%00b", core.url_encode("a\0b"))
    assert.are.equal("", core.url_encode(""))
  end)
end)
