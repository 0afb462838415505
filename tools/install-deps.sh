#!/bin/sh
# tools/install-deps.sh [build|demo|test|bench]: installs the Debian 12 packages
# a task needs, and only those (each set includes the ones before it):
#   build  compile dps.core for Lua 5.4, 5.3, 5.1 and LuaJIT (make build)
#   demo   run the library and the local DPS emulator (make demo)
#   test   the whole test matrix: busted, luacheck, LDoc, luarocks, faketime,
#          valgrind, clang's libFuzzer and sanitizers, curl (make test)
#   bench  test's set (make bench)
# Runs apt-get only when something is missing; needs root for that.
set -eu

BUILD="gcc libc6-dev make pkg-config libcurl4-openssl-dev libssl-dev
liblua5.1-0-dev liblua5.3-dev liblua5.4-dev libluajit-5.1-dev"
# The library at run time (lua5.4, lua-cjson), the demo's keys and
# certificates (openssl), and the emulator (luajit with lua-http, cqueues,
# luaossl and lua-posix; dev and test only, never a dependency of the rock).
DEMO="ca-certificates openssl lua5.4 lua-cjson
luajit lua-http lua-cqueues lua-luaossl lua-posix"
TEST="lua5.1 lua5.3 lua-busted lua-check luarocks lua-ldoc
valgrind clang libclang-rt-14-dev curl faketime"

set_of() {
    case "$1" in
        build) echo "$BUILD" ;;
        demo) echo "$BUILD $DEMO" ;;
        test | bench) echo "$BUILD $DEMO $TEST" ;;
        *) echo "usage: tools/install-deps.sh [build|demo|test|bench]" >&2; exit 2 ;;
    esac
}
PACKAGES=$(set_of "${1:-test}")

missing=""
for p in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

echo "install-deps: installing Debian packages for '${1:-test}':$missing"
if [ "$(id -u)" != 0 ]; then
    echo "install-deps: run as root, or install them yourself: apt-get install$missing" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
echo "install-deps: done"
