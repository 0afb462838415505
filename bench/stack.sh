#!/bin/sh
# Footprint with the mbedTLS backend (bench/run.sh calls this): core.so per
# backend (-Os, stripped; x86_64 here, mipsel with the cross tools), the
# flash the OpenWrt package adds beyond libcurl (core.so of the musl stack
# plus the installed Lua files, xz -9e as in a squashfs image; target
# <= 150 KiB), and the peak RSS of one provisioning on the OpenWrt-like
# stack (target <= 6 MiB).  The stack parts need tools/stack/build.sh's
# build (make stack-test once); skipped without it.
set -eu
cd "$(dirname "$0")/.."
echo "== footprint per crypto backend"
for crypto in openssl mbedtls; do
    out=build/bench/$crypto-x86_64
    make --no-print-directory -s -B core CRYPTO=$crypto OUT=$out LUA_VERSION=5.1 CFLAGS=-Os >/dev/null
    strip --strip-unneeded $out/dps/core.so
    printf '  %-40s %7d B\n' "core.so x86_64 $crypto (-Os, stripped)" "$(wc -c <$out/dps/core.so)"
    root=build/cross/mipsel/root
    if command -v mipsel-linux-gnu-gcc >/dev/null && [ -d $root/usr/include/mbedtls ]; then
        out=build/bench/$crypto-mipsel
        make --no-print-directory -s -B core CRYPTO=$crypto OUT=$out LUA_VERSION=5.1 CFLAGS=-Os \
            CC=mipsel-linux-gnu-gcc LUA_INC=$root/usr/include/lua5.1 \
            CURL_CFLAGS="-I$root/usr/include/mipsel-linux-gnu -I$root/usr/include" \
            LDFLAGS="-L$root/usr/lib/mipsel-linux-gnu" >/dev/null
        mipsel-linux-gnu-strip --strip-unneeded $out/dps/core.so
        printf '  %-40s %7d B\n' "core.so mipsel $crypto (-Os, stripped)" "$(wc -c <$out/dps/core.so)"
    fi
done
if [ ! -x build/stack/lua5.1 ]; then
    echo "  stack: skipped (make stack-test builds it)"
    exit 0
fi
sh tools/stack/build.sh >/dev/null
cp build/stack/dps/core.so build/bench/stack-core.so
strip --strip-unneeded build/bench/stack-core.so
rm -rf build/bench/flash
make --no-print-directory -s -o build/5.1/dps/core.so install LUA_VERSION=5.1 DESTDIR=build/bench/flash PREFIX=/usr \
    LUA_CMOD_DIR=/usr/lib/lua LUA_LMOD_DIR=/usr/lib/lua LUA_STRIP=lua5.1 >/dev/null
cp build/bench/stack-core.so build/bench/flash/usr/lib/lua/dps/core.so
cp examples/openwrt/dps.* build/bench/flash/ 2>/dev/null || true
flash=$(tar -C build/bench/flash -cf - . | xz -9e | wc -c)
printf '  %-40s %7d B (%d KiB; target <= 150 KiB; core.so %d B)\n' "flash added beyond libcurl (mbedtls, xz)" \
    "$flash" $((flash / 1024)) "$(wc -c <build/bench/stack-core.so)"
LUA_PATH="./lua/?.lua;./?.lua;;" LUA_CPATH="./build/5.4/?.so;;" lua5.4 bench/stack.lua 5
