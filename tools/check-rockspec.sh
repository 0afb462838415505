#!/bin/sh
# Proves the rockspec builds and installs offline (`luarocks make
# --deps-mode=none`), from a copy of the checkout into a private tree, and
# that the installed modules load.
set -eu
top=$(pwd)
work="$top/build/rockspec"
rm -rf "$work"
mkdir -p "$work/src" "$work/tree"
cp -R lua src examples lua-azure-dps-scm-1.rockspec "$work/src/"
[ -d bin ] && cp -R bin "$work/src/"
cd "$work/src"
luarocks --lua-version=5.4 make --deps-mode=none --tree="$work/tree" lua-azure-dps-scm-1.rockspec
eval "$(luarocks --lua-version=5.4 --tree="$work/tree" path)"
cd /
lua5.4 -e '
  local dps = require "dps"
  local core = require "dps.core"
  assert(package.searchpath("dps.core", package.cpath):find("build/rockspec/tree", 1, true))
  assert(dps.derive_key("8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==",
    "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6") == "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=")
  print("installed", dps._VERSION, core.version().curl)'
