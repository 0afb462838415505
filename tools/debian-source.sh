#!/bin/sh
# tools/debian-source.sh DIR NAME...: Debian 12's source packages NAME...
# downloaded (apt-get source --download-only: no root, nothing unpacked)
# into DIR/dl, through a private apt configuration in DIR/apt whose deb-src
# lines are made from the host's own sources: nothing on the host changes.
# A name whose .dsc is in DIR/dl already is not fetched again.
# Used by tools/stack/build.sh and openwrt/test.sh.
set -eu
dir=${1:?usage: tools/debian-source.sh DIR NAME...}
shift
missing=""
for name in "$@"; do
    ls "$dir/dl/${name}"_*.dsc >/dev/null 2>&1 || missing="$missing $name"
done
[ -n "$missing" ] || exit 0

apt_dir=$dir/apt
mkdir -p "$apt_dir/lists/partial" "$dir/dl"
uris=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null; \
    sed -n 's/^deb  *\(\[[^]]*\] *\)\{0,1\}\([^ ]*\) .*/\2/p' /etc/apt/sources.list 2>/dev/null || true)
: >"$apt_dir/sources.list"
for u in $(echo "$uris" | sort -u); do
    case "$u" in
        *debian-security*) echo "deb-src $u bookworm-security main" ;;
        *debian*) echo "deb-src $u bookworm main"; echo "deb-src $u bookworm-updates main" ;;
    esac
done >>"$apt_dir/sources.list"
set -- -o Dir::Etc::SourceList="$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null \
    -o Dir::State::Lists="$apt_dir/lists" -o APT::Sandbox::User=root
echo "debian-source:$missing into $dir/dl"
apt-get "$@" -qq update
# shellcheck disable=SC2086
(cd "$dir/dl" && apt-get "$@" -qq source --download-only $missing)
