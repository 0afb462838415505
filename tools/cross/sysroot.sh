#!/bin/sh
# tools/cross/sysroot.sh ARCH: the target's side of a cross build and test,
# from Debian's own packages of that architecture, without installing any of
# them on the host: downloads (apt-get download, no root needed) the .debs of
# Lua 5.1, libcurl, OpenSSL, lua-cjson and the C modules busted needs
# (lua-filesystem, lua-system, lua-term), with every library they load, and
# extracts them into build/cross/ARCH/root (lua5.4 too, for openwrt/test.sh). The development packages (headers
# and .so links) are taken alone, not with their dependencies.
#
# Then writes build/cross/ARCH/lua5.1, a wrapper that runs the target's
# lua5.1 under qemu-user with that root as its file-system prefix (-L): its
# dynamic loader, libraries and C modules come from the root, everything else
# (busted's Lua files, /tmp, the processes it starts) from the host.
#
# Needs `tools/install-deps.sh cross` first (the foreign architecture added
# to dpkg, the cross compiler and qemu-user-static). Done once; reruns reuse
# the downloads.
set -eu
cd "$(dirname "$0")/../.."
. tools/cross/env.sh "${1:-}"

# (lua5.4 for the OpenWrt package's Lua 5.4 variant and mbedTLS for its
# default crypto backend, openwrt/test.sh)
RUNTIME="lua5.1 lua5.4 lua-cjson lua-filesystem lua-system lua-term libcurl4 libssl3 libmbedtls14"
DEV="liblua5.1-0-dev liblua5.4-dev libcurl4-openssl-dev libssl-dev libmbedtls-dev"

stamp=$CROSS_DIR/root.stamp
if [ "$(cat "$stamp" 2>/dev/null)" = "$RUNTIME $DEV" ] && [ -x "$CROSS_DIR/lua5.1" ]; then
    exit 0
fi
command -v "$CROSS_CC" >/dev/null && command -v "$QEMU" >/dev/null || {
    echo "sysroot: $CROSS_CC or $QEMU missing: run 'sh tools/install-deps.sh cross' (as root)" >&2
    exit 1
}

# Every package the runtime set needs, of the target architecture (or
# Architecture: all), without recommends and the like.
list=$CROSS_DIR/packages.txt
mkdir -p "$DEBS"
for p in $RUNTIME; do echo "$p:$DEB_ARCH"; done | xargs apt-cache depends --recurse \
    --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces --no-enhances |
    sed -n "s/^\([a-z0-9][a-z0-9.+-]*:$DEB_ARCH\)$/\1/p" | sort -u >"$list"
for p in $DEV; do echo "$p:$DEB_ARCH"; done >>"$list"
# A bare C library suffices: its development files come from the cross compiler.
grep -v -e '^libc6-dev:' -e '^linux-libc-dev:' -e '^libcrypt-dev:' "$list" >"$list.tmp" && mv "$list.tmp" "$list"

echo "sysroot: $(wc -l <"$list") $DEB_ARCH packages into $ROOT"
(cd "$DEBS" && xargs apt-get download -qq -o APT::Sandbox::User=root <"$list") || {
    echo "sysroot: apt-get download failed: is $DEB_ARCH known to dpkg and apt (tools/install-deps.sh cross)?" >&2
    exit 1
}
rm -rf "$ROOT"
mkdir -p "$ROOT"
for deb in "$DEBS"/*.deb; do
    dpkg-deb -x "$deb" "$ROOT"
done
# Debian 12 keeps /lib as a link to usr/lib; some .debs still ship files
# under /lib, which the loader then finds through either path.
[ -e "$ROOT/lib" ] || ln -s usr/lib "$ROOT/lib"

cat >"$CROSS_DIR/lua5.1" <<WRAP
#!/bin/sh
# Debian's $DEB_ARCH lua5.1 under $QEMU, its libraries from $ROOT.
exec $QEMU -L "$ROOT" "$ROOT/usr/bin/lua5.1" "\$@"
WRAP
chmod +x "$CROSS_DIR/lua5.1"
"$CROSS_DIR/lua5.1" -e 'require "lfs" require "cjson" require "system" require "term.core" print("sysroot: " .. _VERSION .. " runs under qemu")'
echo "$RUNTIME $DEV" >"$stamp"
