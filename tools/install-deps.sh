#!/bin/sh
# Installs the Debian 12 packages that building, testing and the demo need.
# Runs apt-get only when something is missing; needs root for that.
set -eu

PACKAGES="gcc libc6-dev make pkg-config ca-certificates openssl curl
libcurl4-openssl-dev libssl-dev
lua5.1 lua5.3 lua5.4 luajit liblua5.1-0-dev liblua5.3-dev liblua5.4-dev libluajit-5.1-dev
lua-cjson lua-busted lua-check luarocks lua-ldoc
lua-http lua-cqueues lua-luaossl
valgrind clang libclang-rt-14-dev"

missing=""
for p in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

echo "install-deps: installing Debian packages:$missing"
if [ "$(id -u)" != 0 ]; then
    echo "install-deps: run as root, or install them yourself: apt-get install$missing" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
