#!/bin/sh
# The soak specs behind `make soak` (CI runs them too): the long loops tagged
# #soak (200 kill -9 of a cache writer, 100 reboots of the dps command, the
# hub traffic of 1,000 leaves through dps.hubs with faults on, and the like),
# which spec/suite.sh leaves out of `make test` so that it stays fast; make
# test keeps a short round of each rule.  DPS_SOAK_FULL=1 runs the long form
# of the hub soak (spec/hubs_soak_spec.lua: 10,000 leaves, 100,000 messages).  Builds what they need,
# runs them on Lua 5.4 and ends with "N passed, N failed", counted as
# spec/suite.sh counts (a busted run that fails without a failing spec counts
# as one failure); exits non-zero on any failure.  The TAP output is also in
# build/soak.log.
set -u
cd "$(dirname "$0")/.." || exit 1
began=$(date +%s)

make --no-print-directory build/5.4/dps/core.so || { echo "0 passed, 1 failed"; exit 1; }
make --no-print-directory certs >/dev/null || { echo "0 passed, 1 failed"; exit 1; }

log=build/soak.log
busted --lua=lua5.4 --cpath="./build/5.4/?.so" --tags=soak -o TAP >"$log" 2>&1
rc=$?
cat "$log"
ok=$(grep -c '^ok ' "$log")
bad=$(grep -c '^not ok ' "$log")
if [ "$rc" != 0 ] && [ "$bad" = 0 ]; then
    bad=1 # busted itself failed (a spec file did not load)
fi
if [ "$ok" = 0 ] && [ "$bad" = 0 ]; then
    bad=1 # no soak spec ran: the tag went missing
fi
echo "soak took $(($(date +%s) - began)) s"
echo "$ok passed, $bad failed"
[ "$bad" = 0 ]
