#!/bin/sh
# Benchmarks, each next to a reference measured in the same run.
set -eu
cd "$(dirname "$0")/.."
export LUA_PATH="./lua/?.lua;./?.lua;;" LUA_CPATH="./build/5.4/?.so;;"

echo "== SAS tokens (Lua 5.4) vs openssl speed -hmac sha256, 64-byte inputs"
lua5.4 bench/tokens.lua 1 | tee build/bench-tokens.txt
openssl_bps=$(openssl speed -seconds 1 -bytes 64 -mr -hmac sha256 2>/dev/null | sed -n 's/^+F:[0-9]*:hmac(sha256):\([0-9.]*\).*/\1/p')
openssl_ops=$(awk -v b="$openssl_bps" 'BEGIN { printf "%.0f", b / 64 }')
echo "openssl_speed_hmac_sha256_64B $openssl_ops"
awk -v ref="$openssl_ops" '{ printf "  %-22s %10.0f /s  = %5.1f%% of openssl speed\n", $1, $2, 100 * $2 / ref }' build/bench-tokens.txt

# The official Node SDK on the same machine, in the same run: its
# SharedAccessSignature (azure-iot-common 1.x) here, its HTTP transports in
# the gateway bench below; installed under build/ for the bench only (never a
# runtime or test dependency); skipped when node or npm are missing.
echo "== registration tokens: dps.registration_token vs the Node SDK (azure-iot-common SharedAccessSignature)"
node_dir=build/node-bench
node_sdk="azure-iot-common@1 azure-iot-provisioning-device@1 azure-iot-provisioning-device-http@1
    azure-iot-security-symmetric-key@1 azure-iot-device@1 azure-iot-device-http@1"
node_ok=
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "  Node SDK: skipped (node and npm are needed)"
elif [ ! -d "$node_dir/node_modules/azure-iot-device-http" ] && ! (mkdir -p "$node_dir" && cd "$node_dir" &&
        npm install --no-audit --no-fund --silent $node_sdk >npm.log 2>&1); then
    echo "  Node SDK: skipped (npm install of the SDK failed: see $node_dir/npm.log)"
else
    node_ok=1
    # Lua and Node one after the other, twice, so both see the same load
    : >build/bench-tokens-node.txt
    for _ in 1 2; do
        lua5.4 bench/tokens.lua 1 registration_token >>build/bench-tokens-node.txt
        node bench/tokens.js "$node_dir" 1 >>build/bench-tokens-node.txt
    done
    awk '{ sum[$1] += $2; n[$1]++ }
        END {
            lua = sum["registration_token"] / n["registration_token"]
            js = sum["node_registration_token"] / n["node_registration_token"]
            printf "  %-34s %10.0f /s\n", "dps.registration_token (Lua 5.4)", lua
            printf "  %-34s %10.0f /s\n", "Node SDK SharedAccessSignature", js
            printf "  ratio %.2fx the Node SDK (target: at least 3x)\n", lua / js
        }' build/bench-tokens-node.txt
fi

if [ -f bench/provision.sh ]; then
    sh bench/provision.sh
fi

# Footprint: dps.core built -Os (with the Makefile's defaults: LTO, no
# PLT; unwind tables kept, as for every 5.1 module) and stripped, for Lua 5.1 as on a
# router: x86_64 here, and mipsel when the cross tools are there
# (tools/install-deps.sh cross), both as MIPS32 and as MIPS16e, which is
# how OpenWrt builds packages for its 24Kc targets (CONFIG_USE_MIPS16).
# Targets, held by tools/size-gate.sh: core.so for MIPS32 at most 64 KiB,
# the OpenWrt package (that core.so and the Lua files, tar | xz -9e) at most
# 64 KiB.  Beside the file size, the bytes the loader maps
# (allocated sections): on x86_64 the rest of the file is page padding
# (-z separate-code and RELRO align segments to 4 KiB), zeros that cost
# no RAM and next to no flash in a compressed image.
echo "== footprint (targets: core.so mipsel MIPS32 <= 64 KiB = 65536 B, OpenWrt package tar | xz -9e <= 64 KiB = 65536 B)"
loaded() { "$1" -A "$2" | awk '$1 ~ /^\./ && $1 != ".comment" && $1 != ".bss" && $1 != ".pdr" && $1 !~ /^\.(gnu\.attributes|mdebug)/ { s += $2 } END { print s }'; }
make --no-print-directory -s -B core OUT=build/bench/x86_64 LUA_VERSION=5.1 CFLAGS=-Os >/dev/null
strip --strip-unneeded build/bench/x86_64/dps/core.so
printf '  %-40s %7d B (loaded sections %d B)\n' "core.so x86_64 (-Os, stripped)" "$(wc -c <build/bench/x86_64/dps/core.so)" \
    "$(loaded size build/bench/x86_64/dps/core.so)"
if command -v mipsel-linux-gnu-gcc >/dev/null && sh tools/cross/sysroot.sh mipsel >/dev/null 2>&1; then
    root=build/cross/mipsel/root
    for isa in mips32 mips16; do
        make --no-print-directory -s -B core OUT=build/bench/mipsel-$isa LUA_VERSION=5.1 CC=mipsel-linux-gnu-gcc \
            CFLAGS="-Os $([ $isa = mips16 ] && echo -mips16 -minterlink-mips16)" \
            LUA_INC=$root/usr/include/lua5.1 CURL_CFLAGS="-I$root/usr/include/mipsel-linux-gnu -I$root/usr/include" \
            LDFLAGS="-L$root/usr/lib/mipsel-linux-gnu" >/dev/null
        mipsel-linux-gnu-strip --strip-unneeded build/bench/mipsel-$isa/dps/core.so
        printf '  %-40s %7d B (loaded sections %d B)\n' "core.so mipsel $isa (-Os, stripped)" \
            "$(wc -c <build/bench/mipsel-$isa/dps/core.so)" "$(loaded mipsel-linux-gnu-size build/bench/mipsel-$isa/dps/core.so)"
    done
else
    echo "  core.so mipsel: skipped (no cross compiler: sh tools/install-deps.sh cross)"
fi
rm -rf build/bench/router
make --no-print-directory -s -o build/5.1/dps/core.so install LUA_VERSION=5.1 DESTDIR=build/bench/router PREFIX=/usr \
    LUA_CMOD_DIR=/usr/lib/lua LUA_LMOD_DIR=/usr/lib/lua LUA_STRIP=lua5.1 >/dev/null
lua_installed=$(find build/bench/router/usr/lib/lua -name '*.lua' -exec cat {} + | wc -c)
lua_source=$(find lua -name '*.lua' -exec cat {} + | wc -c)
printf '  %-40s %7d B (sources %d B; xz -9: %d B)\n' "Lua files on a router" "$lua_installed" "$lua_source" \
    "$(find build/bench/router/usr/lib/lua -name '*.lua' -exec cat {} + | xz -9e | wc -c)"

sh bench/stack.sh

# The gateway: the emulator answers every device request (DPS and hub) 20 ms
# after it came in; each run is set beside its ideal (requests x latency /
# concurrency) and beside the same requests sent by curl --parallel in the
# same run (bench/reference.lua); bench/timing.lua says where the time went.
echo "== gateway: 1000 devices of a group, 20 ms latency per request, concurrency 32 (dps.batch); load average $(cut -d' ' -f1-3 /proc/loadavg)"
lua5.4 bench/batch.lua 1000 0.02 32
echo "== gateway: 1000 leaves provisioned, then 10 messages each, through one pool (dps.hubs), then the same with the Node SDK; load average $(cut -d' ' -f1-3 /proc/loadavg)"
lua5.4 bench/hubs.lua 1000 10 0.02 32 ${node_ok:+"$node_dir"}
echo "== the same pool with the collector an event-loop app may set (docs/gateways.md): step multiplier 10; load average $(cut -d' ' -f1-3 /proc/loadavg)"
DPS_BENCH_STEPMUL=10 lua5.4 bench/hubs.lua 1000 10 0.02 32

echo "== file upload on loopback: hub:upload vs curl -T of the same 64 MiB file to the same store (the emulator)"
LUA_PATH="./lua/?.lua;./?.lua;;" LUA_CPATH="./build/5.4/?.so;;" lua5.4 bench/upload.lua 64 3
