-- The shared object itself: what it exports and what it reports.
local core = require "dps.core"
local shell = require "spec.support.shell"

describe("dps.core", function()
  it("reports its own, libcurl's and OpenSSL's versions", function()
    local v = core.version()
    assert.are.equal(core._VERSION, v.dps)
    assert.truthy(v.curl:match("^%d+%.%d+"))
    assert.truthy(v.openssl:find("OpenSSL", 1, true))
    assert.truthy(v.ssl:find("OpenSSL", 1, true))
  end)

  it("exports only luaopen_dps_core from the shared object", function()
    local path = assert(shell.module_path("dps.core"))
    local out, ok = shell.run("nm -D --defined-only " .. shell.quote(path))
    assert.is_true(ok)
    local exported = {}
    for name in out:gmatch("%s[TDBRVW]%s+([%w_]+)") do
      exported[#exported + 1] = name
    end
    assert.are.same({ "luaopen_dps_core" }, exported)
  end)
end)
