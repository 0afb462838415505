#!/bin/sh
# tools/stack/test.sh (make stack-test): the busted suite on the OpenWrt-like
# stack of tools/stack/build.sh (musl, Lua 5.1, libcurl on mbedTLS, dps.core
# with the mbedTLS backend), natively on this CPU; the emulator, the helper
# servers, openssl and curl run on the host as always.  Ends with busted's
# "N successes / N failures" and the time taken; the exit status is busted's.
set -eu
cd "$(dirname "$0")/../.."
began=$(date +%s)
sh tools/stack/build.sh
make --no-print-directory certs >/dev/null
status=0
# The soak specs (#soak) run in make soak (Lua 5.4, on the host), not here.
busted --lua="$(pwd)/build/stack/lua5.1" --cpath="$(pwd)/build/stack/?.so" --exclude-tags=soak "${BUSTED_ARGS:-spec}" || status=$?
echo "stack-test took $(($(date +%s) - began)) s"
exit $status
