#!/bin/sh
# The whole test run behind `make test`: build, lint, luarocks install check,
# the busted suite on every Lua version, once more under ASan+UBSan, the C
# core's specs under valgrind, and the hardening steps.  With MEMCHECK=full
# (`make memcheck`): the whole suite under valgrind, alone.  Keeps going after a failure and
# ends with "N passed, N failed" (busted tests counted one by one, other steps
# as one).
#
# The busted suites spend most of their time waiting on servers, so they run
# side by side in the background while the other steps run in the
# foreground; a progress line says how far each has got.
#
# The soak specs (tagged #soak: the long kill -9 and reboot loops) are left
# out of every run here; `make soak` (spec/soak.sh) runs them, and CI too.
set -u
cd "$(dirname "$0")/.." || exit 1

LUA_VERSIONS=${LUA_VERSIONS:-"5.4 5.3 5.1 jit"}
# What valgrind's memcheck runs: `core` (make test), the specs of the C
# core's own functions, in one run beside the others; `full` (make
# memcheck, a CI phase of its own), every spec file, in VALGRIND_PARTS runs
# side by side, and nothing else.  Memcheck slows the interpreter some
# thirtyfold and stretches every margin a spec allows (spec/support/timing.lua)
# as much: the whole suite under it takes longer than everything else in
# make test together.
MEMCHECK=${MEMCHECK:-core}
VALGRIND_CORE="spec/core_spec.lua spec/codec_spec.lua spec/sas_spec.lua spec/fs_spec.lua spec/csr_spec.lua
    spec/x509_spec.lua spec/crypto_backend_spec.lua spec/engine_spec.lua spec/time_spec.lua spec/headers_spec.lua"
VALGRIND_PARTS=${VALGRIND_PARTS:-3}
# libFuzzer seconds per target here; `make fuzz` runs the long ones.
FUZZ_SECONDS=${FUZZ_SECONDS:-2}
# Every busted run and count of this suite: the soak specs go to make soak,
# and the router's own specs (tagged #router: spec/openwrt_zero_touch_spec.lua,
# the OpenWrt package's init script and agent in a router's root) to the
# router's stack: make stack-test (musl, Lua 5.1, libcurl on mbedTLS) and
# make openwrt-test (the installed packages under qemu), where they run as
# on a router.  They are shell scripts more than Lua, and the costliest
# file of the suite (some 40 s of CPU).
EXCLUDE="--exclude-tags=soak,router"
# The emulator's own specs (tagged #emulator: spec/emulator_spec.lua) drive
# it, a luajit process of its own, through curl, and load no dps module:
# which interpreter runs busted, under ASan or valgrind or not, makes no
# difference to them.  They run once, on the last of LUA_VERSIONS (LuaJIT's
# run, the quickest: the Lua 5.4 run records the secrets sweep too); every
# other run leaves them out.
EXCLUDE_ONCE="--exclude-tags=soak,router,emulator"
ONCE=${LUA_VERSIONS##* }
LOGS=build/logs
rm -rf "$LOGS" build/sweep
mkdir -p "$LOGS"
passed=0
failed=0
began=$(date +%s)
SUITES=""

interpreter() {
    case "$1" in
        jit) echo luajit ;;
        *) echo "lua$1" ;;
    esac
}

elapsed() {
    echo $(($(date +%s) - $1))
}

# cpu_seconds FILE: the CPU time (user + system, whole seconds) of the
# processes this shell has waited for so far (`times`' second line; run by
# this shell itself, not in a pipeline, whose subshell has waited for none).
cpu_seconds() {
    times >"$1.times"
    awk 'NR == 2 { gsub(/[ms]/, " "); printf "%d\n", $1 * 60 + $2 + $3 * 60 + $4 + 0.5 }' "$1.times" >"$1"
    rm -f "$1.times"
}

# step NAME COMMAND...: one pass or one failure; the log's tail on failure.
step() {
    name=$1
    shift
    start=$(date +%s)
    [ -t 1 ] && printf '  ... %s\r' "$name"
    if ("$@"; rc=$?; cpu_seconds "$LOGS/$name.cpu"; exit $rc) >"$LOGS/$name.log" 2>&1; then
        passed=$((passed + 1))
        echo "ok     $name ($(elapsed "$start") s, CPU $(cat "$LOGS/$name.cpu") s)"
    else
        failed=$((failed + 1))
        echo "FAILED $name after $(elapsed "$start") s (log: $LOGS/$name.log)"
        tail -n 40 "$LOGS/$name.log" | sed 's/^/    /'
    fi
}

# start_suite NAME EXCLUDE BUSTED-ARGS...: one busted run in the background,
# its TAP lines in $LOGS/NAME.log, its exit code in $LOGS/NAME.rc when it
# ends.  EXCLUDE: the --exclude-tags option it runs with.
start_suite() {
    name=$1
    exclude=$2
    shift 2
    (
        since=$(date +%s)
        busted -o TAP "$exclude" "$@" >"$LOGS/$name.log" 2>&1
        rc=$?
        elapsed "$since" >"$LOGS/$name.took"
        cpu_seconds "$LOGS/$name.cpu"
        echo $rc >"$LOGS/$name.rc"
    ) &
    SUITES="$SUITES $name"
}

# how_far: "name done/total" of every running suite.
how_far() {
    line=""
    for s in $SUITES; do
        [ -f "$LOGS/$s.rc" ] && continue
        n=$(grep -c '^\(not \)\{0,1\}ok ' "$LOGS/$s.log" 2>/dev/null)
        total=$TOTAL
        [ -f "$LOGS/$s.total" ] && total=$(cat "$LOGS/$s.total")
        line="$line ${s#busted-} ${n:-0}/$total,"
    done
    echo "${line%,}"
}

# await_suites: progress until every suite has ended (on a terminal one line
# rewritten in place, elsewhere a line every 30 s), then each one's count.
await_suites() {
    last=$(date +%s)
    while [ -n "$(how_far)" ]; do
        sleep 1
        if [ -t 1 ]; then
            printf '\r  ... %s (%s s) ' "$(how_far)" "$(elapsed "$began")"
        elif [ $(($(date +%s) - last)) -ge 30 ]; then
            echo "  ... running:$(how_far) ($(elapsed "$began") s)"
            last=$(date +%s)
        fi
    done
    wait
    [ -t 1 ] && printf '\r%100s\r' ''
    for s in $SUITES; do
        log="$LOGS/$s.log"
        rc=$(cat "$LOGS/$s.rc")
        ok=$(grep -c '^ok ' "$log")
        bad=$(grep -c '^not ok ' "$log")
        if [ "$rc" != 0 ] && [ "$bad" = 0 ]; then
            bad=1 # busted itself failed (a spec file did not load, valgrind found an error)
        fi
        passed=$((passed + ok))
        failed=$((failed + bad))
        echo "suite  $s: $ok passed, $bad failed ($(cat "$LOGS/$s.took") s, CPU $(cat "$LOGS/$s.cpu") s)"
        if [ "$bad" != 0 ]; then
            grep -A 12 '^not ok ' "$log" | head -n 120 | sed 's/^/    /'
            [ "$rc" != 0 ] && tail -n 20 "$log" | sed 's/^/    /'
        fi
    done
}

if [ "$MEMCHECK" = full ]; then
    # every version's module: install_spec installs each (the suite runs on 5.4)
    step build make -j2 build LUA_VERSIONS="$LUA_VERSIONS"
else
    step build make -j2 build build/asan/dps/core.so LUA_VERSIONS="$LUA_VERSIONS"
fi
step certificates make certs

# The specs of a busted run ("FILE:LINE: NAME"), for the progress lines and
# the valgrind parts: all but the soak and router specs ($LOGS/specs, the
# run on Lua $ONCE), and all but those and the emulator's ($LOGS/specs-once,
# every other run).  (grep -a: some names hold bytes that are not text.)
busted --list "$EXCLUDE" --lua=lua5.4 --cpath="./build/5.4/?.so" 2>/dev/null | grep -a '_spec.lua:' >"$LOGS/specs"
busted --list "$EXCLUDE_ONCE" --lua=lua5.4 --cpath="./build/5.4/?.so" 2>/dev/null | grep -a '_spec.lua:' \
    >"$LOGS/specs-once"
TOTAL=$(wc -l <"$LOGS/specs-once")
if [ "$MEMCHECK" = full ]; then
    VALGRIND_FILES=$(cut -d: -f1 "$LOGS/specs-once" | sort -u)
    echo "busted: $TOTAL specs under valgrind ($VALGRIND_PARTS parts), side by side"
else
    VALGRIND_FILES=$VALGRIND_CORE
    VALGRIND_PARTS=1
    echo "busted: $TOTAL specs on Lua $LUA_VERSIONS and ASan+UBSan, side by side;" \
        "the emulator's $(($(wc -l <"$LOGS/specs") - TOTAL)) once, on Lua $ONCE; the C core's under valgrind;" \
        "the router's in make stack-test and make openwrt-test"
fi

# Memcheck on Lua 5.4 (VALGRIND_FILES): busted re-runs itself as
# `LUA /usr/bin/busted ARGS` (split at spaces, so valgrind and its options
# go into a one-word wrapper), its TAP lines count as usual, and valgrind's
# verdict (any error, any definite leak) makes the run fail.  Child
# processes (servers, openssl, curl) are not traced.
VALGRIND="valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite"
VALGRIND="$VALGRIND --trace-children=no --num-callers=40 --suppressions=spec/valgrind.supp"
mkdir -p build/valgrind
printf '#!/bin/sh\nexec %s lua5.4 "$@"\n' "$VALGRIND" >build/valgrind/lua5.4
chmod +x build/valgrind/lua5.4
# Memcheck slows the interpreter some thirtyfold, and these runs are the
# longest: they start first, and the spec files go to VALGRIND_PARTS runs
# side by side, the biggest file first to the part with the fewest bytes so
# far.  A file's size stands for its time under valgrind: split so, the
# parts' sums of the files' measured valgrind times were within 5 % of each
# other; alternate files by name were 50 % apart.
# (/dev/null: no stdin for wc, were the list empty)
# shellcheck disable=SC2046
wc -c /dev/null $VALGRIND_FILES | grep '_spec\.lua$' | sort -k1,1nr -k2 |
    awk -v n="$VALGRIND_PARTS" '
    { best = 1; for (p = 2; p <= n; p++) if (size[p] < size[best]) best = p
      size[best] += $1; files[best] = files[best] " " $2 }
    END { for (p = 1; p <= n; p++) if (files[p] != "") print p files[p] }' >"$LOGS/valgrind-parts"
while read -r part files; do
    # shellcheck disable=SC2086
    awk -F: -v files=" $files " 'index(files, " " $1 " ") { n++ } END { print n + 0 }' "$LOGS/specs-once" \
        >"$LOGS/busted-valgrind-$part.total"
    # shellcheck disable=SC2086
    start_suite "busted-valgrind-$part" "$EXCLUDE_ONCE" --lua=build/valgrind/lua5.4 --cpath="./build/5.4/?.so" $files
done <"$LOGS/valgrind-parts"

if [ "$MEMCHECK" = full ]; then
    await_suites
    cpu_seconds "$LOGS/make-memcheck.cpu"
    echo "make memcheck took $(elapsed "$began") s, CPU $(cat "$LOGS/make-memcheck.cpu") s"
    echo "$passed passed, $failed failed"
    [ "$failed" = 0 ]
    exit
fi

# ASan+UBSan: the sanitizer runtimes are preloaded by the dynamic loader for
# the interpreter alone (ld.so --preload), not through LD_PRELOAD, which
# every child process (curl, openssl, the emulator) would inherit.
lua54=$(command -v lua5.4)
ldso=$(readelf -l "$(readlink -f "$lua54")" | sed -n 's/.*interpreter: \(.*\)]$/\1/p')
printf '#!/bin/sh\nexec %s --preload "%s %s" %s "$@"\n' "$ldso" \
    "$(cc -print-file-name=libasan.so)" "$(cc -print-file-name=libubsan.so)" "$lua54" >build/asan/lua5.4
chmod +x build/asan/lua5.4
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
start_suite busted-asan "$EXCLUDE_ONCE" --lua=build/asan/lua5.4 --cpath="./build/asan/?.so"
unset ASAN_OPTIONS UBSAN_OPTIONS

# The Lua 5.4 run also records secrets and messages for the secrets sweep
# (spec/support/sweep.lua, a busted helper that reads DPS_SWEEP).
for v in $LUA_VERSIONS; do
    exclude=$EXCLUDE_ONCE
    if [ "$v" = "$ONCE" ]; then
        exclude=$EXCLUDE
        wc -l <"$LOGS/specs" >"$LOGS/busted-$v.total"
    fi
    [ "$v" = 5.4 ] && export DPS_SWEEP=build/sweep
    start_suite "busted-$v" "$exclude" --lua="$(interpreter "$v")" --cpath="./build/$v/?.so"
    unset DPS_SWEEP
done

# While the suites run: lint, docs, the rockspec, and the libFuzzer targets
# of the C parsers, FUZZ_SECONDS each (make fuzz: 60 s each).
step luacheck make lint
step ldoc make docs
step luarocks-make sh tools/check-rockspec.sh
# The footprint on a router (tools/size-gate.sh): core.so for MIPS32 and the
# OpenWrt package's files, each held to its limit.
step size-gate sh tools/size-gate.sh
step fuzz sh fuzz/run.sh "$FUZZ_SECONDS"

await_suites

# No key, derived key, password, PEM key or token signature in any message
# the suite produced (recorded by spec/support/sweep.lua) or in its logs.
step secrets-sweep lua5.4 spec/support/sweep_check.lua build/sweep

cpu_seconds "$LOGS/make-test.cpu"
echo "make test took $(elapsed "$began") s, CPU $(cat "$LOGS/make-test.cpu") s"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
