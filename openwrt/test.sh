#!/bin/sh
# openwrt/test.sh ARCH (make openwrt-test ARCH=aarch64|armhf|mipsel): the
# OpenWrt packages built as docs/openwrt.md says, in a stand-in of the SDK of
# each release of openwrt/feeds.lua (OPENWRT_RELEASES: some of them), and run
# under qemu-user on the feeds' own interpreters:
#  1. the target's side from Debian's packages of ARCH (tools/cross/sysroot.sh):
#     the staging dir's headers and libraries, and the root file system's
#     libraries (libcurl, mbedTLS, OpenSSL, libc);
#  2. the feed's interpreters: Lua 5.1 and 5.4 built from Debian's sources
#     for ARCH with each release's default package.path and package.cpath
#     (openwrt/feeds.lua), and cjson.so (Debian's lua-cjson of ARCH) where
#     the release's lua-cjson packages put it;
#  3. per release, a stand-in SDK (openwrt/sdk/setup.sh: its Makefile,
#     include/package.mk, scripts/feeds, with the staging dir of 1 and the
#     host's lua5.1 as its host Lua) and the steps of docs/openwrt.md in it:
#     the first release from the release tarball (make release; the tarball
#     into dl/, build/dist/openwrt/lua-azure-dps into package/), the others
#     from this checkout through a src-link feed (feeds.conf, ./scripts/feeds
#     update -a, ./scripts/feeds install -a -p dps); then make defconfig and
#     make package/lua-azure-dps/compile: the five packages of every release;
#  4. per release and library package, a root file system with that package,
#     its Lua's interpreter and cjson (as 2), installed as opkg would: under
#     qemu, `require "dps"` with the interpreter's default paths (LUA_PATH
#     and LUA_CPATH unset) loads and reports the package's crypto library, or,
#     where openwrt/feeds.lua marks the release's Lua blocked, fails on cjson
#     alone;
#  5. on the first release, spec/openwrt_package.lua: in a root file system
#     with the library packages on DPS_CRYPTO (mbedtls, the default, or
#     openssl) and dps, the installed command provisions against the emulator
#     on the host on Lua 5.1, the library on Lua 5.4; then
#     spec/openwrt_zero_touch_spec.lua: the installed init script, its procd
#     instance, the NTP hook and the uci-defaults script provision at "boot"
#     with the installed dps (the stand-in clock built by CROSS_CC for the
#     1970 cases).
# Prints the packages' sizes, compressed as in an image (xz).
set -eu
cd "$(dirname "$0")/.."
. tools/cross/env.sh "${1:-}"
began=$(date +%s)
top=$(pwd)
DPS_CRYPTO=${DPS_CRYPTO:-mbedtls}
case "$DPS_CRYPTO" in
    mbedtls | openssl) ;;
    *) echo "openwrt-test: DPS_CRYPTO=$DPS_CRYPTO: mbedtls or openssl" >&2; exit 2 ;;
esac
# The SDK runs as a user runs it: nothing of `make openwrt-test`'s command
# line (DPS_CRYPTO=...) reaches its make through MAKEFLAGS.
unset MAKEFLAGS MFLAGS MAKELEVEL
WORK=$top/build/openwrt/$ARCH
case "$ARCH" in
    aarch64) ARCH_PACKAGES=aarch64_generic ;;
    armhf) ARCH_PACKAGES=arm_cortex-a7_neon-vfpv4 ;;
    mipsel) ARCH_PACKAGES=mipsel_24kc ;;
esac
lua_table() { # lua_table EXPR: EXPR evaluated with F = openwrt/feeds.lua
    lua5.4 -e "local F = dofile('openwrt/feeds.lua') io.write($1)"
}
RELEASES=${OPENWRT_RELEASES:-$(lua_table 'table.concat(F.releases, " ")')}
FIRST=${RELEASES%% *}
VERSION=$(make --no-print-directory -s version)
LIBRARY="lua-azure-dps-mbedtls lua-azure-dps-openssl lua-azure-dps-lua5.4-mbedtls lua-azure-dps-lua5.4-openssl"

# 1. the target's side
sh tools/cross/sysroot.sh "$ARCH"
rm -rf "$WORK/sdk" "$WORK/rootfs"
mkdir -p "$WORK/sdk" "$WORK/rootfs"

# 2. the feed's interpreters: feed_lua VERSION PATH CPATH -> the interpreter's
# file (built once for each VERSION, PATH and CPATH, kept in $WORK/feed)
sh tools/debian-source.sh "$top/build/openwrt" lua5.1 lua5.4
feed_lua() {
    id=$(printf '%s\n%s\n%s\n%s\n' "$1" "$2" "$3" "$CROSS_CC" | cksum | cut -d' ' -f1)
    out=$WORK/feed/lua$1-$id
    if [ ! -x "$out/lua" ]; then
        rm -rf "$out"
        mkdir -p "$out/src"
        tar -C "$out/src" --strip-components=1 -xzf "$(ls "$top/build/openwrt/dl/lua$1_"*.orig.tar.gz | sort -V | tail -1)"
        printf '#undef LUA_PATH_DEFAULT\n#define LUA_PATH_DEFAULT "%s"\n#undef LUA_CPATH_DEFAULT\n#define LUA_CPATH_DEFAULT "%s"\n' \
            "$2" "$3" >>"$out/src/src/luaconf.h"
        # everything but the compiler (luac.c, and print.c in 5.1)
        (cd "$out/src/src" && $CROSS_CC -Os -DLUA_USE_POSIX -DLUA_USE_DLOPEN -o "$out/lua" -Wl,-E \
            $(ls *.c | grep -v -e '^luac\.c$' -e '^print\.c$') -lm -ldl)
        echo "openwrt-test: Lua $1 for $ARCH, default paths $2 and $3" >&2
    fi
    echo "$out/lua"
}

# feed_install RELEASE LUA ROOTFS: the release's interpreter and cjson for
# LUA (5.1 or 5.4) into ROOTFS (a hard-linked copy of the target's root:
# files are replaced, never written through).
feed_install() {
    get() { lua_table "F['$1'].lua['$2'].$3"; }
    lua=$(feed_lua "$2" "$(get "$1" "$2" path)" "$(get "$1" "$2" cpath)")
    bin=$3/usr/bin/$(get "$1" "$2" interpreter)
    cjson=$3$(get "$1" "$2" cjson_file)
    rm -f "$bin" "$cjson"
    cp "$lua" "$bin"
    [ "$2" = 5.1 ] && ln -sf lua "$3/usr/bin/lua5.1"
    mkdir -p "$(dirname "$cjson")"
    cp "$ROOT/usr/lib/$TRIPLET/liblua$2-cjson.so.0" "$cjson"
}

# 3. the SDK of each release, and the packages built in it
make --no-print-directory release >/dev/null
for release in $RELEASES; do
    sdk=$WORK/sdk/$release
    sh openwrt/sdk/setup.sh "$release" "$sdk" "$TRIPLET" "$ARCH_PACKAGES"
    staging=$sdk/staging_dir/target-$ARCH_PACKAGES
    mkdir -p "$staging/usr/include" "$staging/usr/lib" "$sdk/staging_dir/hostpkg/bin"
    cp "$ROOT/usr/include/lua5.1/"*.h "$staging/usr/include/"
    cp -R "$ROOT/usr/include/lua5.4" "$ROOT/usr/include/openssl" "$staging/usr/include/"
    cp -R "$ROOT/usr/include/$TRIPLET/curl" "$ROOT/usr/include/$TRIPLET/"*.h "$staging/usr/include/"
    cp "$ROOT/usr/include/$TRIPLET/openssl/"*.h "$staging/usr/include/openssl/"
    cp -R "$ROOT/usr/include/mbedtls" "$ROOT/usr/include/psa" "$staging/usr/include/" 2>/dev/null ||
        cp -R "$ROOT/usr/include/mbedtls" "$staging/usr/include/"
    for f in "$ROOT/usr/lib/$TRIPLET"/*; do
        [ -d "$f" ] || ln -s "$f" "$staging/usr/lib/"
    done
    ln -s "$(command -v lua5.1)" "$sdk/staging_dir/hostpkg/bin/lua5.1"

    # docs/openwrt.md, "Building the packages in the SDK", in the SDK's folder
    log=$WORK/sdk/$release.log
    if [ "$release" = "$FIRST" ]; then
        echo "openwrt-test: OpenWrt $release: the release tarball in dl/, its Makefile in package/"
        steps() {
            ./scripts/feeds update -a
            ./scripts/feeds install libcurl libmbedtls libopenssl ca-bundle lua lua-cjson lua5.4 lua-cjson-lua5.4
            cp "$top/build/dist/lua-azure-dps-$VERSION.tar.gz" dl/
            cp -R "$top/build/dist/openwrt/lua-azure-dps" package/
        }
    else
        echo "openwrt-test: OpenWrt $release: this checkout as a src-link feed"
        steps() {
            echo "src-link dps $top/openwrt" >>feeds.conf.default
            ./scripts/feeds update -a
            ./scripts/feeds install -a -p dps
        }
    fi
    (cd "$sdk" && steps && make defconfig && make package/lua-azure-dps/compile) >"$log" 2>&1 || {
        tail -n 40 "$log" >&2
        echo "openwrt-test: the build for OpenWrt $release failed (log: $log)" >&2
        exit 1
    }
    grep '^package.mk: .*\.ipk' "$log"
done

echo "openwrt-test: packages for $ARCH_PACKAGES (ipk; data as xz -9e, as in a squashfs image):"
for ipk in "$WORK/sdk/$FIRST/bin/packages/$ARCH_PACKAGES"/*/*.ipk; do
    d=$(mktemp -d)
    tar -C "$d" -xzf "$ipk"
    printf '  %-56s ipk %7d B, installed %7d B, xz %7d B\n' "$(basename "$ipk")" "$(wc -c <"$ipk")" \
        "$(gzip -dc "$d/data.tar.gz" | tar -tvf - | awk '{ s += $3 } END { print s }')" \
        "$(gzip -dc "$d/data.tar.gz" | xz -9e | wc -c)"
    rm -rf "$d"
done

# install_root DIR RELEASE PACKAGE...: a root file system in DIR with the
# release's interpreters and cjson, and the packages built for the release.
install_root() {
    root=$1 release=$2
    shift 2
    cp -al "$ROOT" "$root"
    feed_install "$release" 5.1 "$root"
    feed_install "$release" 5.4 "$root"
    (cd "$WORK/sdk/$release" && make --no-print-directory package/lua-azure-dps/install ROOTFS="$root" PACKAGES="$*" >/dev/null)
}

# 4. each library package alone, loaded with the interpreter's default paths
status=0
empty=$WORK/empty # the working directory, for ./?.lua and ./?.so
mkdir -p "$empty"
for release in $RELEASES; do
    for p in $LIBRARY; do
        case $p in *lua5.4*) v=5.4 ;; *) v=5.1 ;; esac
        crypto=${p##*-}
        root=$WORK/rootfs/$release-$p
        install_root "$root" "$release" "$p"
        interpreter=$(lua_table "F['$release'].lua['$v'].interpreter")
        blocked=$(lua_table "(F['$release'].blocked or {})['$v'] or ''")
        # qemu-user looks for a file missing from the root on the host: none of
        # the default paths may hold the modules there
        for dir in $(lua_table "F['$release'].lua['$v'].path .. ';' .. F['$release'].lua['$v'].cpath" |
            tr ';' '\n' | sed -n 's|^\(/.*\)/?.*|\1|p' | sort -u); do
            for m in dps.lua dps cjson.so; do
                [ ! -e "$dir/$m" ] || { echo "openwrt-test: the host has $dir/$m: qemu would load it" >&2; exit 1; }
            done
        done
        out=$(cd "$empty" && env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_4 -u LUA_CPATH_5_4 -u LUA_INIT \
            "$QEMU" -L "$root" "$root/usr/bin/$interpreter" -e '
              local dps = require "dps"
              local v = require("dps.core").version()
              print(_VERSION, dps._VERSION, v.backend, package.searchpath and package.searchpath("dps", package.path) or "")' 2>&1) &&
            ok=1 || ok=0
        if [ -z "$blocked" ]; then
            case "$ok $out" in
                "1 Lua $v	$VERSION	$crypto"*) verdict="loads ($out)" ;;
                *) verdict="FAILED: $out"; status=1 ;;
            esac
        else
            case "$ok $out" in
                *"module 'cjson' not found"*) verdict="blocked as openwrt/feeds.lua says: $blocked" ;;
                *) verdict="FAILED: not blocked as openwrt/feeds.lua says ($blocked): $out"; status=1 ;;
            esac
        fi
        printf 'openwrt-test: OpenWrt %-6s %-30s require "dps": %s\n' "$release" "$p" "$verdict"
    done
done

# 5. the provisioning run
make --no-print-directory certs >/dev/null
root=$WORK/rootfs/$FIRST-provision
install_root "$root" "$FIRST" "lua-azure-dps-$DPS_CRYPTO" "lua-azure-dps-lua5.4-$DPS_CRYPTO" dps
OPENWRT_CRYPTO=$DPS_CRYPTO OPENWRT_ROOTFS=$root OPENWRT_QEMU=$QEMU OPENWRT_RELEASE=$FIRST \
    busted --lua=lua5.4 --cpath='./build/5.4/?.so' --pattern=openwrt_package spec/openwrt_package.lua || status=$?
OPENWRT_ROOTFS=$root OPENWRT_QEMU=$QEMU \
    busted --lua=lua5.4 --cpath='./build/5.4/?.so' spec/openwrt_zero_touch_spec.lua || status=$?
echo "openwrt-test $ARCH (OpenWrt $RELEASES; provisioning on $FIRST with $DPS_CRYPTO) took $(($(date +%s) - began)) s"
exit $status
