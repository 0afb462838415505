-- The OpenWrt package Makefile (openwrt/lua-azure-dps) against what each
-- release's feeds provide (openwrt/feeds.lua): the Makefile is evaluated for
-- the release by the stand-in SDK (openwrt/sdk: `make package/NAME/dump`,
-- the packages' metadata and each variant's build and install recipes as
-- they expand there), and every dependency must be a package of the release,
-- every module folder one its interpreter searches by default. The build
-- itself, and loading the installed packages with the interpreters' default
-- paths, is `make openwrt-test` (openwrt/test.sh).
local shell = require "spec.support.shell"

local q = shell.quote
local FEEDS = dofile("openwrt/feeds.lua")
local CHECKOUT = shell.run("pwd"):gsub("%s+$", "")

-- The stand-in SDK of RELEASE in DIR with the package folder PKGDIR as the
-- feed "dps" (a src-link feed, as docs/openwrt.md does with a checkout).
local function sdk(release, dir, pkgdir)
  local out, ok = shell.run(string.format("sh openwrt/sdk/setup.sh %s %s 2>&1 && cd %s"
    .. " && echo 'src-link dps %s' >>feeds.conf.default && ./scripts/feeds update -a >/dev/null"
    .. " && ./scripts/feeds install -a -p dps >/dev/null",
    q(release), q(dir), q(dir), pkgdir))
  assert(ok, out)
end

-- `make package/lua-azure-dps/dump [ARGS]` in the SDK at DIR: the header's
-- fields, the packages' fields and each variant's recipes; or nil and the output.
local function dump(dir, args)
  local out, ok = shell.run("make --no-print-directory -C " .. q(dir) .. " package/lua-azure-dps/dump "
    .. (args or "") .. " 2>&1")
  if not ok then return nil, out end
  local header, packages, variants = {}, {}, {}
  local order = {}
  for block in (out .. "\n"):gmatch("(.-)\n@@\n") do
    local fields = {}
    for key, value in block:gmatch("([^\n:]+): ([^\n]*)") do fields[key] = value end
    if fields.Package then
      packages[fields.Package] = fields
      order[#order + 1] = fields.Package
    elseif fields["Build-Variant"] then
      variants[fields["Build-Variant"]] = fields
    else
      header = fields
    end
  end
  return { header = header, packages = packages, order = order, variants = variants }
end

-- The names a DEPENDS value lists ("+lua-cjson", "+COND:name").
local function depends(value)
  local names = {}
  for word in (value or ""):gmatch("%S+") do
    if word:sub(1, 1) ~= "@" then names[#names + 1] = word:gsub("^%+", ""):match("([^:]+)$") end
  end
  return names
end

local function set(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

-- Whether TEMPLATE ("/usr/lib/lua/?.so") is one of PATH's ("a;b;c").
local function searches(path, template)
  for t in path:gmatch("[^;]+") do
    if t == template then return true end
  end
  return false
end

local function dirname(path) return (path:match("^(.*)/[^/]*$")) end

-- The library packages: the variant's Lua version and crypto library.
local LIBRARY = {
  ["lua-azure-dps-mbedtls"] = { lua = "5.1", crypto = "libmbedtls", provides = "lua-azure-dps", default = true },
  ["lua-azure-dps-openssl"] = { lua = "5.1", crypto = "libopenssl", provides = "lua-azure-dps" },
  ["lua-azure-dps-lua5.4-mbedtls"] = { lua = "5.4", crypto = "libmbedtls", provides = "lua-azure-dps-lua5.4",
    default = true },
  ["lua-azure-dps-lua5.4-openssl"] = { lua = "5.4", crypto = "libopenssl", provides = "lua-azure-dps-lua5.4" },
}

describe("the OpenWrt package Makefile", function()
  local dir

  setup(function()
    dir = shell.tmpdir("dps-feed")
  end)

  teardown(function()
    shell.succeeds("rm -rf " .. q(dir))
  end)

  for _, release in ipairs(FEEDS.releases) do
    describe("for OpenWrt " .. release, function()
      local feed = FEEDS[release]
      local d

      setup(function()
        sdk(release, dir .. "/" .. release, CHECKOUT .. "/openwrt")
        local err
        d, err = dump(dir .. "/" .. release)
        assert(d, err)
      end)

      it("has the library on each Lua and crypto library, and the command", function()
        local names = {}
        for name in pairs(LIBRARY) do names[#names + 1] = name end
        names[#names + 1] = "dps"
        table.sort(names)
        local got = {}
        for name in pairs(d.packages) do got[#got + 1] = name end
        table.sort(got)
        assert.are.same(names, got)
      end)

      it("depends only on packages of the release's feeds or of its own", function()
        local known = set(feed.packages)
        for name, p in pairs(d.packages) do
          known[name] = true
          if p.PROVIDES then known[p.PROVIDES] = true end
        end
        for name, p in pairs(d.packages) do
          for _, dep in ipairs(depends(p.DEPENDS)) do
            assert(known[dep], name .. " depends on " .. dep .. ", which no package of OpenWrt " .. release
              .. " is (openwrt/feeds.lua)")
          end
        end
      end)

      for name, want in pairs(LIBRARY) do
        it(name .. ": its Lua's library and cjson, its crypto library; installed where that Lua looks", function()
          local lua = feed.lua[want.lua]
          local p = assert(d.packages[name], name)
          local deps = set(depends(p.DEPENDS))
          for _, dep in ipairs({ "libcurl", "ca-bundle", lua.library, lua.cjson, want.crypto }) do
            assert(deps[dep], name .. " does not depend on " .. dep .. ": " .. p.DEPENDS)
          end
          local other = want.crypto == "libmbedtls" and "libopenssl" or "libmbedtls"
          assert.is_nil(deps[other], name .. " depends on " .. other)
          -- the variant builds the library (make install-lib) into folders the
          -- release's interpreter searches, and the package is that tree
          local v = assert(d.variants[p.VARIANT], "no recipes for variant " .. p.VARIANT)
          local compile = v["Build/Compile"]
          assert.matches(" install%-lib$", compile)
          assert.matches(" LUA_VERSION=" .. want.lua:gsub("%.", "%%.") .. " ", compile)
          assert.matches(" CRYPTO=" .. want.crypto:gsub("^lib", "") .. " ", compile)
          local ldir = assert(compile:match(" LUA_LMOD_DIR=(%S+)"), compile)
          local cdir = assert(compile:match(" LUA_CMOD_DIR=(%S+)"), compile)
          assert(searches(lua.path, ldir .. "/?.lua"), ldir .. "/?.lua is not on the default path of "
            .. lua.interpreter .. " on OpenWrt " .. release .. ": " .. lua.path)
          assert(searches(lua.cpath, cdir .. "/?.so"), cdir .. "/?.so is not on the default cpath of "
            .. lua.interpreter .. " on OpenWrt " .. release .. ": " .. lua.cpath)
          assert.matches("/ipkg%-install/%. /$", v["Install/" .. name])
        end)
      end

      it("provides one name per Lua, mbedTLS the default, the two conflicting", function()
        for name, want in pairs(LIBRARY) do
          local p = d.packages[name]
          assert.are.equal(want.provides, p.PROVIDES, name)
          assert.are.equal(want.default and "1" or nil, p.DEFAULT_VARIANT, name)
          if not want.default then
            assert.are.equal(name:gsub("openssl$", "mbedtls"), p.CONFLICTS, name)
          end
        end
      end)

      it("finds cjson on each Lua's default cpath, or says why not (blocked)", function()
        for version, lua in pairs(feed.lua) do
          local found = searches(lua.cpath, dirname(lua.cjson_file) .. "/?.so")
          local blocked = feed.blocked and feed.blocked[version]
          if blocked then
            -- the note must still be true: else the variant works and the note goes
            assert.is_false(found, "OpenWrt " .. release .. " Lua " .. version .. " is marked blocked, yet "
              .. lua.cjson_file .. " is on " .. lua.cpath)
          else
            assert(found, lua.cjson_file .. " (" .. lua.cjson .. ") is not on the default cpath of "
              .. lua.interpreter .. " on OpenWrt " .. release)
          end
        end
      end)

      it("dps: the command and its Lua files alone, on Lua 5.1, with the init script", function()
        local p = d.packages.dps
        local deps = set(depends(p.DEPENDS))
        assert(deps.lua, "dps does not depend on lua: " .. p.DEPENDS)
        assert(deps["lua-azure-dps"], "dps does not depend on lua-azure-dps: " .. p.DEPENDS)
        assert.are.equal("all", p.PKGARCH)
        local v = d.variants[p.VARIANT]
        assert.matches(" install%-cli$", v["Build/Compile"])
        assert.matches(' SHEBANG="#!/usr/bin/lua" ', v["Build/Compile"])
        local ldir = v["Build/Compile"]:match(" LUA_LMOD_DIR=(%S+)")
        assert(searches(feed.lua["5.1"].path, ldir .. "/?.lua"), ldir)
        -- provisioning at boot: each file where openwrt_zero_touch_spec's root
        -- has it, from the same source, with the same mode
        local installed = {}
        for command in (v["Install/dps"] .. "; "):gmatch("(.-); ") do
          installed[command:match("(%S+)%s*$") or ""] = command
        end
        for _, file in ipairs(require("spec.support.openwrt_root").FILES) do
          local command = installed["/" .. file.path:gsub("^/", "")] or ""
          assert.matches("^install %-m0" .. file.mode .. " %S*/" .. file.source:gsub("[%.%-]", "%%%0") .. " ",
            command, file.path .. " is not installed as " .. file.source .. ": " .. v["Install/dps"])
        end
      end)

      it("names its maintainer with an e-mail address, its licence", function()
        for name, p in pairs(d.packages) do
          assert.matches("^[^<>]+ <[^@<> ]+@[^@<> ]+%.[a-z]+>$", p.Maintainer, name)
        end
      end)
    end)
  end

  it("builds each variant with its own crypto library and Lua whatever the make command line sets", function()
    -- DPS_CRYPTO was the package's setting before the variants; a command
    -- line's variable reaches every sub-make
    sdk("24.10", dir .. "/overrides", CHECKOUT .. "/openwrt")
    local d = assert(dump(dir .. "/overrides", "DPS_CRYPTO=openssl DPS_LUA=5.4 CRYPTO=openssl LUA_VERSION=5.4"))
    for name, want in pairs(LIBRARY) do
      local compile = d.variants[d.packages[name].VARIANT]["Build/Compile"]
      assert.matches(" CRYPTO=" .. want.crypto:gsub("^lib", "") .. " ", compile, name)
      assert.matches(" LUA_VERSION=" .. want.lua:gsub("%.", "%%.") .. " ", compile, name)
    end
  end)

  describe("outside a checkout", function()
    it("takes the release tarball, and without make release's PKG_HASH refuses to build", function()
      local copy = dir .. "/feed"
      assert(shell.succeeds("mkdir -p " .. q(copy) .. " && cp -R openwrt/lua-azure-dps " .. q(copy .. "/")))
      sdk("24.10", dir .. "/outside", copy)
      local d, out = dump(dir .. "/outside")
      assert.is_nil(d)
      assert.matches("this Makefile has no PKG_HASH: use the one `make release` writes", out)
    end)
  end)
end)
