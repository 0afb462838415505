-- `make release` (tools/dist.sh): the tarball, the source rock, the release
-- rockspec, SHA256SUMS and the OpenWrt package Makefile with the tarball's
-- PKG_HASH, into a folder of this run's own (DIST). Installing the rock is
-- tools/check-rockspec.sh's; building the OpenWrt package from the tarball
-- in an SDK is make openwrt-test's.
local shell = require "spec.support.shell"
local version_check = require "tools.version_check"

local q = shell.quote

describe("make release", function()
  local dir, version, name

  setup(function()
    dir = shell.tmpdir("dps-release")
    version = version_check.version()
    name = "lua-azure-dps-" .. version
    local out, ok = shell.run("DIST=" .. q(dir) .. " make --no-print-directory -o build/5.4/dps/core.so release 2>&1")
    assert(ok, out)
  end)

  teardown(function()
    shell.succeeds("rm -rf " .. q(dir))
  end)

  it("writes the tarball, the rock, the rockspec, the OpenWrt Makefile and their SHA-256 sums", function()
    local sums = assert(shell.read(dir .. "/SHA256SUMS"))
    local files = {}
    for file in sums:gmatch("%x+  ([^\n]+)") do files[#files + 1] = file end
    table.sort(files)
    assert.are.same({ name .. "-1.rockspec", name .. "-1.src.rock", name .. ".tar.gz",
      "openwrt/lua-azure-dps/Makefile" }, files)
    local out, ok = shell.run("cd " .. q(dir) .. " && sha256sum -c SHA256SUMS 2>&1")
    assert(ok, out)
  end)

  it("puts the release rockspec alone in the tarball, and in the rock with the tarball", function()
    local listing = shell.run("tar -tzf " .. q(dir .. "/" .. name .. ".tar.gz"))
    local rockspecs = {}
    for path in listing:gmatch("[^\n]+%.rockspec") do rockspecs[#rockspecs + 1] = path end
    assert.are.same({ name .. "/" .. name .. "-1.rockspec" }, rockspecs)
    assert.is_truthy(listing:find(name .. "/src/dps_core.h\n", 1, true))
    local rock = shell.run("unzip -Z1 " .. q(dir .. "/" .. name .. "-1.src.rock"))
    assert.are.same({ name .. "-1.rockspec", name .. ".tar.gz" },
      (function() local t = {} for f in rock:gmatch("%S+") do t[#t + 1] = f end table.sort(t) return t end)())
  end)

  it("writes the OpenWrt Makefile with the tarball's SHA-256 as PKG_HASH, and nothing else changed", function()
    local tarball_hash = shell.run("sha256sum " .. q(dir .. "/" .. name .. ".tar.gz")):match("^(%x+)")
    local release = assert(shell.read(dir .. "/openwrt/lua-azure-dps/Makefile"))
    local checked_in = assert(shell.read("openwrt/lua-azure-dps/Makefile"))
    assert.are.equal(tarball_hash, release:match("\n  PKG_HASH:=(%S+)\n"))
    assert.are.equal(64, #tarball_hash)
    assert.are.equal((checked_in:gsub("\n  PKG_HASH:=unreleased\n", "\n  PKG_HASH:=" .. tarball_hash .. "\n")), release)
    assert.is_nil(release:find("PKG_HASH:=skip", 1, true))
  end)
end)
