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

if [ -f bench/provision.sh ]; then
    sh bench/provision.sh
fi

echo "== gateway: 1000 devices of a group, 20 ms latency per request, concurrency 32 (dps.batch)"
LUA_PATH="./lua/?.lua;./?.lua;;" LUA_CPATH="./build/5.4/?.so;;" lua5.4 bench/batch.lua 1000 0.02 32
