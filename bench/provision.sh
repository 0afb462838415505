#!/bin/sh
# One provisioning, whole process, against the local emulator, next to the curl recipe.
set -eu
cd "$(dirname "$0")/.."
echo "== provisioning against the local emulator vs the documented curl recipe"
LUA_PATH="./lua/?.lua;./?.lua;;" LUA_CPATH="./build/5.4/?.so;;" lua5.4 bench/provision.lua "${BENCH_RUNS:-15}"
