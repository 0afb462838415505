-- The shared object itself: what it exports and what it reports.
local core = require "dps.core"
local shell = require "spec.support.shell"

describe("dps.core", function()
  it("reports its own, libcurl's and its crypto library's versions", function()
    local v = core.version()
    assert.are.equal(core._VERSION, v.dps)
    assert.truthy(v.curl:match("^%d+%.%d+"))
    assert.truthy(v.ssl:match("^%a"), v.ssl)
    if v.backend == "openssl" then
      assert.truthy(v.crypto:find("OpenSSL", 1, true))
    else
      assert.are.equal("mbedtls", v.backend)
      assert.truthy(v.crypto:find("mbed TLS", 1, true))
    end
  end)

  it("says whether libcurl resolves names in the background, as curl -V does", function()
    local out, ok = shell.run("curl -V")
    if not ok then return end -- no curl command: nothing to compare with
    local features = out:match("\nFeatures:([^\n]*)") or ""
    assert.are.equal(features:find("AsynchDNS", 1, true) ~= nil, core.version().async_dns)
  end)

  it("exports only luaopen_dps_core from the shared object", function()
    local path = assert(shell.module_path("dps.core"))
    local out, ok = shell.run("nm -D --defined-only " .. shell.quote(path))
    assert.is_true(ok)
    local exported = {}
    for name in out:gmatch("%s[TDBRVW]%s+([%w_]+)") do
      -- (_init and _fini: the C runtime's, as musl's toolchain exports them)
      if name ~= "_init" and name ~= "_fini" then exported[#exported + 1] = name end
    end
    assert.are.same({ "luaopen_dps_core" }, exported)
  end)
end)

-- The client-certificate option rule lives once in C (dps_aux.c) and serves
-- both core.engine and core.x509_credentials; each row is { options,
-- pattern, whether x509_credentials raises too (it also needs a pair) }.
describe("dps.core client-certificate options", function()
  local ROWS = {
    { { cert = "c", cert_file = "f", key = "k" }, "options 'cert' and 'cert_file' exclude each other" },
    { { cert = "c", key = "k", key_file = "f" }, "options 'key' and 'key_file' exclude each other" },
    { { key = "k" }, "need 'cert' or 'cert_file'" },
    { { key_password = "pw" }, "need 'cert' or 'cert_file'" },
    { { cert = "c" }, "give one of the options 'key_file' and 'key'", "x509 only" },
    { {}, "give one of the options 'cert_file' and 'cert'", "x509 only" },
    { { cert = "", key = "k" }, "option 'cert' must not be empty" },
    { { cert_file = "a\0b", key = "k" }, "option 'cert_file' must not contain NUL bytes" },
  }
  for _, row in ipairs(ROWS) do
    it("x509_credentials raises: " .. row[2], function()
      assert.error_matches(function() local r = core.x509_credentials(row[1]); return r end, row[2], 1, true)
    end)
    if not row[3] then
      it("engine raises: " .. row[2], function()
        assert.error_matches(function() local e = core.engine(row[1]); return e end, row[2], 1, true)
      end)
    end
  end
end)
