#!/bin/sh
# openwrt/test.sh ARCH (make openwrt-test ARCH=aarch64|armhf|mipsel): the
# OpenWrt package, checked without the SDK.
#  1. a staging dir laid out as the SDK's (usr/include with Lua 5.1's headers
#     at the top and lua5.4/, curl/, openssl/; usr/lib with the libraries),
#     from Debian's packages of the target (tools/cross/sysroot.sh), and a
#     host Lua 5.1 as staging_dir/hostpkg/bin/lua;
#  2. the release tarball (make dist) in the download folder;
#  3. openwrt/lua-azure-dps/Makefile run by the stand-in rules.mk and
#     package.mk (openwrt/sdk): both variants compiled with the cross
#     compiler, the three .ipk packed;
#  4. the packages installed, as opkg would, into a root file system (the
#     target's Debian libraries standing in for OpenWrt's);
#  5. spec/openwrt_package.lua: under qemu-user, the installed `dps`
#     provisions against the emulator on the host with Lua 5.1 and 5.4,
#     and the installed init script provisions at "boot".
# Prints the packages' sizes, compressed as in an image (xz).
set -eu
cd "$(dirname "$0")/.."
. tools/cross/env.sh "${1:-}"
began=$(date +%s)
top=$(pwd)
# The package's crypto backend: mbedtls (its default) or openssl.
DPS_CRYPTO=${DPS_CRYPTO:-mbedtls}
export DPS_CRYPTO
WORK=$top/build/openwrt/$ARCH
case "$ARCH" in
    aarch64) ARCH_PACKAGES=aarch64_generic ;;
    armhf) ARCH_PACKAGES=arm_cortex-a7_neon-vfpv4 ;;
    mipsel) ARCH_PACKAGES=mipsel_24kc ;;
esac

sh tools/cross/sysroot.sh "$ARCH"

# 1. staging dir
staging=$WORK/staging_dir/target
rm -rf "$WORK"
mkdir -p "$staging/usr/include" "$staging/usr/lib" "$WORK/staging_dir/hostpkg/bin" "$WORK/dl"
cp "$ROOT/usr/include/lua5.1/"*.h "$staging/usr/include/"
cp -R "$ROOT/usr/include/lua5.4" "$ROOT/usr/include/openssl" "$staging/usr/include/"
cp -R "$ROOT/usr/include/$TRIPLET/curl" "$ROOT/usr/include/$TRIPLET/"*.h "$staging/usr/include/"
cp "$ROOT/usr/include/$TRIPLET/openssl/"*.h "$staging/usr/include/openssl/"
cp -R "$ROOT/usr/include/mbedtls" "$ROOT/usr/include/psa" "$staging/usr/include/" 2>/dev/null ||
    cp -R "$ROOT/usr/include/mbedtls" "$staging/usr/include/"
for f in "$ROOT/usr/lib/$TRIPLET"/*; do
    [ -d "$f" ] || ln -s "$f" "$staging/usr/lib/"
done
ln -s "$(command -v lua5.1)" "$WORK/staging_dir/hostpkg/bin/lua"

# 2. the source tarball
make --no-print-directory dist
cp "build/dist/lua-azure-dps-$(make --no-print-directory -s version).tar.gz" "$WORK/dl/"

# 3. compile and pack
pkgmake() {
    make --no-print-directory -f openwrt/lua-azure-dps/Makefile TOPDIR="$top/openwrt/sdk" WORK="$WORK" \
        TRIPLET="$TRIPLET" ARCH_PACKAGES="$ARCH_PACKAGES" DPS_CRYPTO="$DPS_CRYPTO" "$@"
}
pkgmake compile

# 4. install into a root file system: the Debian target libraries (hard
# links: nothing of build/cross is changed), /usr/bin/lua as on OpenWrt.
rootfs=$WORK/rootfs
cp -al "$ROOT" "$rootfs"
ln -sf lua5.1 "$rootfs/usr/bin/lua"
pkgmake install ROOTFS="$rootfs" PACKAGES="lua-azure-dps lua5.4-azure-dps dps"

echo "openwrt-test: packages for $ARCH_PACKAGES (ipk; data as xz -9, as in a squashfs image):"
for ipk in "$WORK/bin/packages/$ARCH_PACKAGES"/*.ipk; do
    d=$(mktemp -d)
    tar -C "$d" -xzf "$ipk"
    xz_size=$(gzip -dc "$d/data.tar.gz" | xz -9e | wc -c)
    printf '  %-48s ipk %7d B, installed %7d B, xz %7d B\n' "$(basename "$ipk")" "$(wc -c <"$ipk")" \
        "$(gzip -dc "$d/data.tar.gz" | tar -tvf - | awk '{ s += $3 } END { print s }')" "$xz_size"
    rm -rf "$d"
done

# 5. run it under qemu
make --no-print-directory certs >/dev/null
status=0
OPENWRT_CRYPTO=$DPS_CRYPTO OPENWRT_ROOTFS=$rootfs OPENWRT_QEMU=$QEMU OPENWRT_WORK=$WORK OPENWRT_ARCH_PACKAGES=$ARCH_PACKAGES \
    busted --lua=lua5.4 --cpath='./build/5.4/?.so' --pattern=openwrt_package spec/openwrt_package.lua || status=$?
echo "openwrt-test $ARCH ($DPS_CRYPTO) took $(($(date +%s) - began)) s"
exit $status
