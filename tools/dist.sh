#!/bin/sh
# tools/dist.sh tarball|rock|release (make dist, make rock, make release):
# the release files, in build/dist/ (or $DIST):
#   lua-azure-dps-V.tar.gz      the sources of the checkout's tracked files
#                               (uncommitted changes to them included), under
#                               the folder lua-azure-dps-V/, with reproducible
#                               dates and owners; of the rockspecs only the
#                               release's (luarocks make in it takes that one)
#   lua-azure-dps-V-1.rockspec  the release rockspec
#   lua-azure-dps-V-1.src.rock  that tarball with that rockspec, zipped as
#                               `luarocks pack` does, so that
#                               `luarocks install ./lua-azure-dps-V-1.src.rock`
#                               needs no network
# and for `release` also:
#   openwrt/lua-azure-dps/Makefile   the OpenWrt package for a feed, with the
#                               tarball's SHA-256 as PKG_HASH
#   SHA256SUMS                  the SHA-256 of each of these files
# V is the one version of src/dps_core.h (make version-check).
set -eu
cd "$(dirname "$0")/.."
version=$(sed -n 's/^#define DPS_CORE_VERSION "\(.*\)"/\1/p' src/dps_core.h)
name=lua-azure-dps-$version
rockspec=$name-1.rockspec
out=${DIST:-build/dist}
mkdir -p "$out"

[ -f "$rockspec" ] || { echo "dist: $rockspec is missing" >&2; exit 1; }
# The rockspec's source.url must end in the tarball's name: luarocks looks
# for that file inside the .src.rock.
grep -q "^  url = \".*/$name\.tar\.gz\",\$" "$rockspec" || {
    echo "dist: source.url of $rockspec does not end in /$name.tar.gz" >&2
    exit 1
}

tarball() {
    command -v git >/dev/null && git rev-parse --git-dir >/dev/null 2>&1 || {
        echo "dist: needs a git checkout (git archive)" >&2
        exit 1
    }
    # A commit of the work tree as it is (git stash create touches nothing),
    # or HEAD when nothing tracked has changed.
    tree=$(git stash create 2>/dev/null || true)
    tree=${tree:-HEAD}
    [ -n "$(git status --porcelain --untracked-files=normal | grep '^??' || true)" ] &&
        echo "dist: note: untracked files are not in the tarball (git add them)" >&2
    git archive --format=tar --prefix="$name/" "$tree" -- . ':(exclude)*-scm-1.rockspec' |
        gzip -9n >"$out/$name.tar.gz"
    cp "$rockspec" "$out/"
    echo "dist: $out/$name.tar.gz ($(wc -c <"$out/$name.tar.gz") bytes)"
}

rock() {
    tarball
    rm -rf "$out/rock" "$out/$name-1.src.rock"
    mkdir -p "$out/rock"
    cp "$rockspec" "$out/$name.tar.gz" "$out/rock/"
    (cd "$out/rock" && zip -q -X "../$name-1.src.rock" "$rockspec" "$name.tar.gz")
    rm -rf "$out/rock"
    echo "dist: $out/$name-1.src.rock ($(wc -c <"$out/$name-1.src.rock") bytes)"
}

release() {
    rock
    hash=$(sha256sum "$out/$name.tar.gz" | cut -d' ' -f1)
    mkdir -p "$out/openwrt/lua-azure-dps"
    sed -e "s/^  PKG_HASH:=unreleased\$/  PKG_HASH:=$hash/" openwrt/lua-azure-dps/Makefile \
        >"$out/openwrt/lua-azure-dps/Makefile"
    grep -q "^  PKG_HASH:=$hash\$" "$out/openwrt/lua-azure-dps/Makefile" || {
        echo "dist: openwrt/lua-azure-dps/Makefile has no line '  PKG_HASH:=unreleased' to fill in" >&2
        exit 1
    }
    (cd "$out" && sha256sum "$name.tar.gz" "$name-1.src.rock" "$rockspec" openwrt/lua-azure-dps/Makefile >SHA256SUMS)
    echo "dist: $out/openwrt/lua-azure-dps/Makefile (PKG_HASH:=$hash)"
    echo "dist: $out/SHA256SUMS"
}

case "${1:-}" in
    tarball) tarball ;;
    rock) rock ;;
    release) release ;;
    *) echo "usage: tools/dist.sh tarball|rock|release" >&2; exit 2 ;;
esac
