#!/bin/sh
# openwrt/sdk/setup.sh RELEASE DIR [TRIPLET ARCH_PACKAGES]: lays out in DIR
# a stand-in of the OpenWrt SDK of RELEASE (24.10, 25.12 or master: the
# releases of openwrt/feeds.lua), as unpacked from its tarball, with the
# parts a package build uses:
#   Makefile               the top level: make package/NAME/compile (toplevel.mk)
#   rules.mk, include/     package.mk; version.mk with the release's VERSION_NUMBER
#   scripts/feeds          feeds update / install, src-link feeds only
#   feeds.conf.default     the release's feeds, as the SDK names them
#   tmp/packageinfo        the names of the packages those feeds provide
#                          (openwrt/feeds.lua): what a dependency may name
#   target.mk              the target: TRIPLET and ARCH_PACKAGES
#                          (default mipsel-linux-gnu, mipsel_24kc)
#   dl/, package/          empty
# The staging dir (headers, libraries, the host's Lua) is openwrt/test.sh's.
# Needs a Lua interpreter (lua5.4, lua5.1 or luajit) to read the table.
set -eu
release=${1:?usage: openwrt/sdk/setup.sh RELEASE DIR [TRIPLET ARCH_PACKAGES]}
dir=${2:?usage: openwrt/sdk/setup.sh RELEASE DIR [TRIPLET ARCH_PACKAGES]}
triplet=${3:-mipsel-linux-gnu}
arch_packages=${4:-mipsel_24kc}
here=$(cd "$(dirname "$0")" && pwd)
lua=$(command -v lua5.4 || command -v lua5.1 || command -v luajit) || {
    echo "setup: no Lua interpreter (lua5.4, lua5.1 or luajit)" >&2
    exit 1
}

mkdir -p "$dir/include" "$dir/scripts" "$dir/tmp" "$dir/dl" "$dir/package"
ln -sf "$here/toplevel.mk" "$dir/Makefile"
ln -sf "$here/rules.mk" "$dir/rules.mk"
ln -sf "$here/include/package.mk" "$dir/include/package.mk"
ln -sf "$here/scripts/feeds" "$dir/scripts/feeds"
printf 'TRIPLET:=%s\nARCH_PACKAGES:=%s\n' "$triplet" "$arch_packages" >"$dir/target.mk"

FEEDS=$here/../feeds.lua RELEASE=$release DIR=$dir "$lua" -e '
  local feeds = dofile(os.getenv("FEEDS"))
  local name, dir = os.getenv("RELEASE"), os.getenv("DIR")
  local r = feeds[name]
  if not r then io.stderr:write("setup: no release " .. name .. " in openwrt/feeds.lua\n") os.exit(1) end
  local function write(path, text)
    local f = assert(io.open(dir .. "/" .. path, "w"))
    f:write(text)
    f:close()
  end
  write("include/version.mk", "# The SDK of OpenWrt " .. name .. "\nVERSION_NUMBER:=" .. r.version_number .. "\n")
  write("tmp/packageinfo", table.concat(r.packages, "\n") .. "\n")
  local branch = name == "master" and "" or ";openwrt-" .. name
  write("feeds.conf.default", "src-git packages https://git.openwrt.org/feed/packages.git" .. branch .. "\n")'
