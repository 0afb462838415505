#!/bin/sh
# tools/install-deps.sh [build|demo|test|bench|cross|stack]: installs the Debian 12
# packages a task needs, and only those:
#   build  compile dps.core for Lua 5.4, 5.3, 5.1 and LuaJIT (make build)
#   demo   compile dps.core for Lua 5.4 alone, and run the library and the
#          local DPS emulator (make demo)
#   test   build's and demo's sets and the whole test matrix: busted,
#          luacheck, LDoc, luarocks, faketime, valgrind, clang's libFuzzer
#          and sanitizers, curl (make test)
#   bench  test's set (make bench)
#   cross  build's and demo's sets, busted, lua5.1, the cross compilers for aarch64,
#          armhf and mipsel and qemu-user-static (make cross-test,
#          make openwrt-test); also adds those architectures to dpkg, so
#          that tools/cross/sysroot.sh can download their packages (it
#          extracts them into build/cross: nothing foreign is installed)
#   stack  build's and demo's sets, busted, lua5.1, musl-tools, dpkg-dev (for
#          dpkg-source) and libmbedtls-dev (make CRYPTO=mbedtls on the host):
#          the OpenWrt-like stack of tools/stack/build.sh (make stack-test),
#          whose sources come from Debian's source packages (apt-get source)
# Runs apt-get only when something is missing (needs root for that), and
# says what it installs; apt's progress shows.
set -eu

# dps.core for Lua 5.4 (make demo), and for every Lua (make build)
BUILD54="gcc libc6-dev make pkg-config libcurl4-openssl-dev libssl-dev liblua5.4-dev"
BUILD="$BUILD54 liblua5.1-0-dev liblua5.3-dev libluajit-5.1-dev"
# The library at run time (lua5.4, lua-cjson), the demo's keys and
# certificates (openssl), and the emulator (luajit with lua-http, cqueues,
# luaossl and lua-posix; dev and test only, never a dependency of the rock).
DEMO="ca-certificates openssl lua5.4 lua-cjson
luajit lua-http lua-cqueues lua-luaossl lua-posix"
TEST="lua5.1 lua5.3 lua-busted lua-check luarocks lua-ldoc
valgrind clang libclang-rt-14-dev curl zip unzip faketime strace"
CROSS_ARCHS="arm64 armhf mipsel"
# (lua5.1: install_spec strips the Lua files with it; the stand-in SDK's host Lua)
CROSS="lua-busted lua5.1 file xz-utils qemu-user-static
gcc-aarch64-linux-gnu libc6-dev-arm64-cross
gcc-arm-linux-gnueabihf libc6-dev-armhf-cross
gcc-mipsel-linux-gnu libc6-dev-mipsel-cross"

STACK="lua-busted lua5.1 musl-tools dpkg-dev libmbedtls-dev xz-utils"

set_of() {
    case "$1" in
        build) echo "$BUILD" ;;
        demo) echo "$BUILD54 $DEMO" ;;
        test | bench) echo "$BUILD $DEMO $TEST" ;;
        cross) echo "$BUILD $DEMO $CROSS" ;;
        stack) echo "$BUILD $DEMO $STACK" ;;
        *) echo "usage: tools/install-deps.sh [build|demo|test|bench|cross|stack]" >&2; exit 2 ;;
    esac
}
PACKAGES=$(set_of "${1:-test}")

missing=""
for p in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
# The cross set also needs dpkg to know the target architectures (and apt
# their package lists), for apt-get download in tools/cross/sysroot.sh.
foreign=""
if [ "${1:-test}" = cross ]; then
    known=$(dpkg --print-foreign-architectures)
    for a in $CROSS_ARCHS; do
        echo "$known" | grep -qx "$a" || foreign="$foreign $a"
    done
fi
[ -z "$missing" ] && [ -z "$foreign" ] && exit 0

echo "install-deps: installing Debian packages for '${1:-test}':$missing${foreign:+ (and architectures$foreign)}"
if [ "$(id -u)" != 0 ]; then
    echo "install-deps: run as root, or install them yourself:${foreign:+ dpkg --add-architecture$foreign,} apt-get install$missing" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
for a in $foreign; do
    dpkg --add-architecture "$a"
done
echo "install-deps: apt-get update (the package lists)"
apt-get update -q || echo "install-deps: apt-get update reported errors (a mirror mid-sync?); going on" >&2
[ -z "$missing" ] && exit 0
echo "install-deps: apt-get install$missing"
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing
echo "install-deps: done"
