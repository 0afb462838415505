#!/bin/sh
# tools/size-gate.sh: holds the footprint on a router to its limits.
#   core.so   dps.core for MIPS32 (mipsel, Lua 5.1, -Os with the Makefile's
#             defaults, stripped), built as bench/run.sh builds it:
#             at most 64 KiB = 65536 B (52 KiB until certificate issuance
#             came: EC keys, CSRs and certificate facts on two backends,
#             about 12 KB of MIPS32; the gate catches what grows unasked)
#   package   the files of the OpenWrt library package (lua-azure-dps-mbedtls
#             and its siblings): that core.so and the library's Lua files as
#             `make install-lib LUA_STRIP=...` writes them (the command, bin/dps
#             and dps/cli/, is the package dps), tarred and xz -9e compressed:
#             at most 64 KiB = 65536 B
# Prints each figure with its limit; exits 1 when one is over the limit or
# cannot be measured.
#
# Needs the cross compiler and qemu (tools/install-deps.sh cross, run here as
# root when they are missing) and the target's headers and libraries
# (tools/cross/sysroot.sh mipsel: downloaded once into build/cross/mipsel,
# then reused).
set -u
cd "$(dirname "$0")/.." || exit 1

CORE_LIMIT=65536
PACKAGE_LIMIT=65536
CC=mipsel-linux-gnu-gcc
OUT=build/size-gate
ROOT=build/cross/mipsel/root

fail() {
    echo "size-gate: $*" >&2
    exit 1
}

if ! command -v "$CC" >/dev/null || ! command -v qemu-mipsel-static >/dev/null || ! command -v xz >/dev/null; then
    [ "$(id -u)" = 0 ] || fail "$CC, qemu-mipsel-static or xz missing: run 'sh tools/install-deps.sh cross' as root"
    sh tools/install-deps.sh cross || fail "tools/install-deps.sh cross failed"
fi
rm -rf "$OUT"
mkdir -p "$OUT"
sh tools/cross/sysroot.sh mipsel >"$OUT/sysroot.log" 2>&1 ||
    fail "no mipsel sysroot (tools/cross/sysroot.sh mipsel failed: see $OUT/sysroot.log)"

# Any Lua strips the Lua files alike (tools/lua-strip.lua); Lua 5.1 is the router's.
strip_lua=""
for l in lua5.1 luajit lua5.4; do
    if command -v "$l" >/dev/null; then
        strip_lua=$l
        break
    fi
done
[ -n "$strip_lua" ] || fail "no Lua interpreter to strip the Lua files with (lua5.1, luajit or lua5.4)"

core=$OUT/mips32/dps/core.so
make --no-print-directory -B core OUT="$OUT/mips32" LUA_VERSION=5.1 CC="$CC" CFLAGS=-Os \
    LUA_INC="$ROOT/usr/include/lua5.1" CURL_CFLAGS="-I$ROOT/usr/include/mipsel-linux-gnu -I$ROOT/usr/include" \
    LDFLAGS="-L$ROOT/usr/lib/mipsel-linux-gnu" >"$OUT/build.log" 2>&1 || {
    tail -n 20 "$OUT/build.log" >&2
    fail "core.so for mipsel did not build (log: $OUT/build.log)"
}
mipsel-linux-gnu-strip --strip-unneeded "$core" || fail "mipsel-linux-gnu-strip failed"

# The package's files: what `make install-lib` puts under the Lua folders
# (the command is another package), with this core.so.
stage=$OUT/router
make --no-print-directory -o "$core" install-lib OUT="$OUT/mips32" LUA_VERSION=5.1 DESTDIR="$stage" PREFIX=/usr \
    LUA_CMOD_DIR=/usr/lib/lua LUA_LMOD_DIR=/usr/lib/lua LUA_STRIP="$strip_lua" >"$OUT/install.log" 2>&1 || {
    tail -n 20 "$OUT/install.log" >&2
    fail "make install-lib failed (log: $OUT/install.log)"
}
tar -C "$stage" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$OUT/package.tar" usr/lib/lua ||
    fail "tar failed"
xz -9e -c "$OUT/package.tar" >"$OUT/package.tar.xz" || fail "xz failed"

status=0
# check LABEL BYTES LIMIT: one line; status 1 when over
check() {
    verdict=ok
    if [ "$2" -gt "$3" ]; then
        verdict="OVER by $(($2 - $3)) B"
        status=1
    fi
    printf 'size-gate: %-52s %6d B  limit %6d B (%d KiB)  %s\n' "$1" "$2" "$3" $(($3 / 1024)) "$verdict"
}
check "core.so mipsel MIPS32 (Lua 5.1, -Os, stripped)" "$(wc -c <"$core")" "$CORE_LIMIT"
check "package lua-azure-dps-* ($(find "$stage/usr/lib/lua" -type f | wc -l) files, tar | xz -9e)" \
    "$(wc -c <"$OUT/package.tar.xz")" "$PACKAGE_LIMIT"
exit "$status"
