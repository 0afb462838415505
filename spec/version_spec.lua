-- One version everywhere (tools/version_check.lua: the checks `make
-- version-check` runs before `make dist`, `make rock` and `make release`),
-- each check a spec here.
local shell = require "spec.support.shell"
local version_check = require "tools.version_check"

describe("the version", function()
  for _, check in ipairs(version_check.checks) do
    it(check[1], function()
      check[2](shell.interpreter())
    end)
  end
end)

describe("make version-check", function()
  it("runs without busted, and says which rule a wrong version breaks", function()
    local dir = shell.tmpdir("dps-version")
    finally(function() shell.succeeds("rm -rf " .. shell.quote(dir)) end)
    -- a copy of the checkout whose CHANGELOG names another version
    assert(shell.succeeds("git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "
      .. shell.quote(dir)))
    assert(shell.succeeds("mkdir -p " .. shell.quote(dir .. "/build/5.4/dps") .. " && cp build/5.4/dps/core.so "
      .. shell.quote(dir .. "/build/5.4/dps/")))
    local changelog = assert(shell.read(dir .. "/CHANGELOG.md"))
    shell.write(dir .. "/CHANGELOG.md", (changelog:gsub("\n## %[[^%]]+%]", "\n## [9.9.9]", 1)))
    local out, ok = shell.run("cd " .. shell.quote(dir) .. " && make -o build/5.4/dps/core.so"
      .. " --no-print-directory version-check 2>&1")
    assert.is_false(ok, out)
    assert.matches("version%-check: the version heads CHANGELOG%.md: CHANGELOG%.md's first version: expected "
      .. version_check.version():gsub("%p", "%%%0") .. ", got 9%.9%.9", out)
    assert.is_nil(out:find("busted", 1, true), out)
  end)
end)
