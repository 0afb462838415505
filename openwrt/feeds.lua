-- What OpenWrt's feeds provide to the packages of openwrt/lua-azure-dps, per
-- release: the names of the packages they depend on, and where each target
-- Lua interpreter looks for modules by default (its compiled-in
-- package.path and package.cpath), with where the feed's lua-cjson puts
-- cjson.so for it.
--
-- spec/openwrt_feed_spec.lua checks the package Makefile against this table
-- (every dependency a package of the release, every module folder on the
-- release's default paths); openwrt/test.sh (make openwrt-test) builds the
-- stand-in feed from it (interpreters compiled with these default paths,
-- cjson.so where the feed puts it) and loads the installed packages with
-- the interpreters' defaults, LUA_PATH unset.
--
-- Sources (openwrt/openwrt = the base repository, openwrt/packages = the
-- packages feed; "@abc1234" is the commit of the file read):
--
-- Lua 5.1, every release: openwrt/openwrt package/utils/lua/Makefile
--   (@0244a52: packages liblua, lua; /usr/bin/lua is lua5.1). Its default
--   paths as OpenWrt prints them (sqm-autorate/sqm-autorate issue #47, on
--   21.02): ./?.lua;/usr/share/lua/?.lua;/usr/share/lua/?/init.lua;
--   /usr/lib/lua/?.lua;/usr/lib/lua/?/init.lua and ./?.so;/usr/lib/lua/?.so;
--   /usr/lib/lua/loadall.so; on 25.12 /usr/bin/lua still loads
--   /usr/lib/lua/lanes/core.so (sqm-autorate issue #224). lua-cjson puts
--   cjson.so in /usr/lib/lua (openwrt/packages lang/lua-cjson/Makefile
--   @58442b5; lang/lua/lua-cjson/Makefile @a00b79d).
--
-- Lua 5.4: openwrt/packages lang/lua5.4 (PR #22722, Dec 2023), moved to
--   lang/lua/lua5.4 with every Lua package by PR #27884 (Nov 2025):
--   packages liblua5.4, lua5.4 (/usr/bin/lua5.4), luac5.4.
--   24.10: lang/lua5.4/Makefile @1df694d (5.4.6) leaves the target's
--     luaconf.h as upstream has it (only Host/Configure rewrites LUA_ROOT,
--     for the host Lua): LUA_ROOT "/usr/local/".
--   25.12: lang/lua/lua5.4/Makefile @75ca566 (5.4.7, PKG_RELEASE 1) the same.
--   master: lang/lua/lua5.4/Makefile @5432f90 (5.4.7, PKG_RELEASE 2) builds
--     the target with LUA_PATH_DEFAULT and LUA_CPATH_DEFAULT under /usr/share/lua/5.4
--     and /usr/lib/lua/5.4 (and patches/200-lua-path.patch @c45d457, July
--     2026, points LUA_ROOT at "/usr/"); openwrt/packages issue #30148
--     (SNAPSHOT, Aug 2026) prints that package.path.
--   I found no change of the target paths on the 24.10 or 25.12 branch;
--   the commits above could not be tied to branches with the tools at hand,
--   so 25.12 rests on "nothing moved the paths before the master change".
--
-- lua-cjson for 5.4: package lua-cjson-lua5.4 (VARIANT lua-54, +liblua5.4):
--   openwrt/packages PR #26461 (master, May 2025) and PR #26559 (its 24.10
--   backport); it installs cjson.so into /usr/local/lib/lua/5.4
--   (lang/lua/lua-cjson/Makefile @a00b79d; zhaojh329/oui issue #325 shows
--   /usr/local/lib/lua/5.4/cjson.so on a router, June 2025). On master that
--   folder is no longer on lua5.4's cpath (issue #30148: the same for
--   lua-eco), so there `require "cjson"` fails on Lua 5.4, and with it
--   `require "dps"`: `blocked` below says so, and the spec checks it still
--   holds.
--
-- libcurl, ca-bundle, libmbedtls, libopenssl: openwrt/packages
--   net/curl/Makefile (libcurl: +ca-bundle and the TLS library picked by
--   LIBCURL_MBEDTLS / LIBCURL_OPENSSL / ...: +libmbedtls, +libopenssl);
--   ca-bundle from openwrt/openwrt package/system/ca-certificates,
--   libmbedtls from package/libs/mbedtls (libmbedtls.so, libmbedx509.so,
--   libmbedcrypto.so), libopenssl from package/libs/openssl.

local LUA51 = {
  library = "liblua", interpreter = "lua", cjson = "lua-cjson",
  path = "./?.lua;/usr/share/lua/?.lua;/usr/share/lua/?/init.lua;/usr/lib/lua/?.lua;/usr/lib/lua/?/init.lua",
  cpath = "./?.so;/usr/lib/lua/?.so;/usr/lib/lua/loadall.so",
  cjson_file = "/usr/lib/lua/cjson.so",
}

-- Lua 5.4 with upstream's LUA_ROOT (root "/usr/local") or master's ("/usr").
local function lua54(root, cjson_file)
  local ldir, cdir = root .. "/share/lua/5.4/", root .. "/lib/lua/5.4/"
  return {
    library = "liblua5.4", interpreter = "lua5.4", cjson = "lua-cjson-lua5.4",
    path = ldir .. "?.lua;" .. ldir .. "?/init.lua;" .. cdir .. "?.lua;" .. cdir .. "?/init.lua;./?.lua;./?/init.lua",
    cpath = cdir .. "?.so;" .. cdir .. "loadall.so;./?.so",
    cjson_file = cjson_file,
  }
end

local PACKAGES = {
  "libcurl", "ca-bundle", "libmbedtls", "libopenssl",
  "liblua", "lua", "luac", "lua-cjson",
  "liblua5.4", "lua5.4", "luac5.4", "lua-cjson-lua5.4",
}

return {
  -- in the order openwrt/test.sh builds them
  releases = { "24.10", "25.12", "master" },

  ["24.10"] = {
    version_number = "24.10.0", -- the SDK's VERSION_NUMBER (include/version.mk)
    packages = PACKAGES,
    lua = { ["5.1"] = LUA51, ["5.4"] = lua54("/usr/local", "/usr/local/lib/lua/5.4/cjson.so") },
  },

  ["25.12"] = {
    version_number = "25.12.0",
    packages = PACKAGES,
    lua = { ["5.1"] = LUA51, ["5.4"] = lua54("/usr/local", "/usr/local/lib/lua/5.4/cjson.so") },
  },

  master = {
    version_number = "SNAPSHOT",
    packages = PACKAGES,
    lua = { ["5.1"] = LUA51, ["5.4"] = lua54("/usr", "/usr/local/lib/lua/5.4/cjson.so") },
    -- Lua versions whose library package installs but cannot load: why
    blocked = {
      ["5.4"] = "the feed's lua-cjson-lua5.4 puts cjson.so in /usr/local/lib/lua/5.4, "
        .. "which master's lua5.4 no longer searches (openwrt/packages issue #30148)",
    },
  },
}
