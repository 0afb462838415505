#!/bin/sh
# tools/cross/test.sh ARCH (make cross-test ARCH=aarch64|armhf|mipsel): the
# busted suite on another CPU. dps.core is built with Debian's cross compiler
# against the target's headers and libraries (tools/cross/sysroot.sh), and the
# suite runs on Debian's lua5.1 of that architecture under qemu-user; the
# emulator, the helper servers, openssl and curl run on the host, over
# 127.0.0.1 as always. Ends with busted's "N successes / N failures" and the
# time taken; the exit status is busted's.
set -eu
cd "$(dirname "$0")/../.."
. tools/cross/env.sh "${1:-}"
began=$(date +%s)

sh tools/cross/sysroot.sh "$ARCH"
make --no-print-directory core OUT="$CROSS_DIR" LUA_VERSION=5.1 CC="$CROSS_CC" \
    LUA_INC="$ROOT/usr/include/lua5.1" CURL_CFLAGS="-I$ROOT/usr/include/$TRIPLET -I$ROOT/usr/include" \
    LDFLAGS="-L$ROOT/usr/lib/$TRIPLET -Wl,-rpath-link,$ROOT/usr/lib/$TRIPLET"
file "$CROSS_DIR/dps/core.so" 2>/dev/null || true
make --no-print-directory certs >/dev/null

"$CROSS_DIR/lua5.1" -e "package.cpath = '$CROSS_DIR/?.so'
  local core = require 'dps.core'
  local v = core.version()
  print(('cross-test: dps.core %s on %s, curl %s, %s'):format(core._VERSION, '$ARCH', v.curl, v.ssl))"

status=0
# Specs that count on a native CPU's reaction time relax (spec/support/timing.lua).
export DPS_SPEC_EMULATED=qemu-user
# The soak specs (#soak) run in make soak (Lua 5.4, on the host), not here;
# the router's (#router) in make openwrt-test, on the installed packages
# under qemu, and in make stack-test.
busted --lua="$CROSS_DIR/lua5.1" --cpath="$CROSS_DIR/?.so" --exclude-tags=soak,router "${BUSTED_ARGS:-spec}" ||
    status=$?
echo "cross-test $ARCH took $(($(date +%s) - began)) s"
exit $status
