#!/bin/sh
# The luarocks checks of `make test`, each into a fresh private tree, with no
# network (proxies pointed at a closed port, no rocks server but an empty
# folder; lua-cjson comes from the system, hence --deps-mode=none):
#  1. `luarocks make` of the scm rockspec, from a copy of the checkout;
#  2. `make rock`, then `luarocks install ./lua-azure-dps-V-1.src.rock` as a
#     user would, from another folder;
# and after each, the installed modules and the installed `dps` command run
# from that tree and report the one version.
set -eu
top=$(pwd)
work="$top/build/rockspec"
version=$(make --no-print-directory -s version)
rm -rf "$work"
mkdir -p "$work/src" "$work/tree" "$work/rock-tree" "$work/no-server" "$work/user"
export http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9 HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9
offline="--deps-mode=none --only-server=$work/no-server"

# check TREE: the modules and the command installed in TREE load and agree.
check() {
    (
        eval "$(luarocks --lua-version=5.4 --tree="$1" path)"
        cd /
        TREE=$1 VERSION=$version lua5.4 -e '
          local tree, version = os.getenv("TREE"), os.getenv("VERSION")
          local dps = require "dps"
          local core = require "dps.core"
          assert(package.searchpath("dps.core", package.cpath):find(tree, 1, true), "dps.core not from the tree")
          assert(package.searchpath("dps", package.path):find(tree, 1, true), "dps not from the tree")
          assert(dps._VERSION == version and core._VERSION == version, "version " .. dps._VERSION)
          assert(dps.derive_key("8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==",
            "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6") == "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=")
          print("installed", dps._VERSION, core.version().curl)'
        out=$("$1/bin/dps" --version)
        echo "$out"
        case "$out" in
            "dps (lua-azure-dps) $version,"*) ;;
            *) echo "check-rockspec: $1/bin/dps --version says '$out', not $version" >&2; exit 1 ;;
        esac
    )
}

# 1. luarocks make, scm rockspec
cp -R lua src examples bin LICENSE lua-azure-dps-scm-1.rockspec "$work/src/"
(cd "$work/src" && luarocks --lua-version=5.4 make $offline --tree="$work/tree" lua-azure-dps-scm-1.rockspec)
check "$work/tree"

# 2. the packed source rock, installed the way the README says
make --no-print-directory rock
rock="lua-azure-dps-$version-1.src.rock"
cp "build/dist/$rock" "$work/user/"
(cd "$work/user" && luarocks --lua-version=5.4 install $offline --tree="$work/rock-tree" "./$rock")
check "$work/rock-tree"
echo "check-rockspec: scm rockspec and $rock install offline"
