#!/bin/sh
# The whole test run behind `make test`: build, lint, luarocks install check,
# the busted suite on every Lua version, once more under ASan+UBSan, and the
# hardening steps. Keeps going after a failure and ends with
# "N passed, N failed" (busted tests counted one by one, other steps as one).
set -u
cd "$(dirname "$0")/.."

LUA_VERSIONS=${LUA_VERSIONS:-"5.4 5.3 5.1 jit"}
LOGS=build/logs
mkdir -p "$LOGS"
passed=0
failed=0

interpreter() {
    case "$1" in
        jit) echo luajit ;;
        *) echo "lua$1" ;;
    esac
}

# step NAME COMMAND...: one pass or one failure; the log's tail on failure.
step() {
    name=$1
    shift
    start=$(date +%s)
    [ -t 1 ] && printf '  ... %s' "$name"
    if "$@" >"$LOGS/$name.log" 2>&1; then
        passed=$((passed + 1))
        [ -t 1 ] && printf '\r'
        echo "ok     $name ($(($(date +%s) - start)) s)"
    else
        failed=$((failed + 1))
        [ -t 1 ] && printf '\r'
        echo "FAILED $name after $(($(date +%s) - start)) s (log: $LOGS/$name.log)"
        tail -n 40 "$LOGS/$name.log" | sed 's/^/    /'
    fi
}

# progress NAME LOG PID: while busted (PID) runs, says how far it is: on a
# terminal one line rewritten in place, elsewhere a line every 30 s.
progress() {
    since=$(date +%s)
    last=$since
    while kill -0 "$3" 2>/dev/null; do
        sleep 1
        now=$(date +%s)
        done_=$(grep -c '^\(not \)\{0,1\}ok ' "$2")
        line="  ... $1: $done_/$TOTAL specs, $((now - since)) s"
        if [ -t 1 ]; then
            printf '\r%s ' "$line"
        elif [ $((now - last)) -ge 30 ]; then
            echo "$line"
            last=$now
        fi
    done
    [ -t 1 ] && printf '\r%60s\r' ''
    return 0
}

# suite NAME BUSTED-ARGS...: counts busted's TAP lines.
suite() {
    name=$1
    shift
    log="$LOGS/$name.log"
    start=$(date +%s)
    echo "suite  $name: running ($TOTAL specs)..."
    busted -o TAP "$@" >"$log" 2>&1 &
    pid=$!
    progress "$name" "$log" "$pid"
    wait "$pid"
    rc=$?
    ok=$(grep -c '^ok ' "$log")
    bad=$(grep -c '^not ok ' "$log")
    if [ "$rc" != 0 ] && [ "$bad" = 0 ]; then
        bad=1 # busted itself failed (a spec file did not load)
    fi
    passed=$((passed + ok))
    failed=$((failed + bad))
    echo "suite  $name: $ok passed, $bad failed ($(($(date +%s) - start)) s)"
    if [ "$bad" != 0 ]; then
        grep -A 12 '^not ok ' "$log" | head -n 120 | sed 's/^/    /'
        [ "$rc" != 0 ] && tail -n 20 "$log" | sed 's/^/    /'
    fi
}

rm -rf build/sweep
step build make build LUA_VERSIONS="$LUA_VERSIONS"
step luacheck make lint
step ldoc make docs
step luarocks-make sh tools/check-rockspec.sh
step certificates make certs

# How many specs one busted run holds, for the progress lines.
TOTAL=$(busted --list --lua=lua5.4 --cpath="./build/5.4/?.so" 2>/dev/null | grep -c '_spec.lua:')

# The Lua 5.4 run also records secrets and messages for the secrets sweep
# (spec/support/sweep.lua, a busted helper that reads DPS_SWEEP).
for v in $LUA_VERSIONS; do
    if [ "$v" = 5.4 ]; then export DPS_SWEEP=build/sweep; fi
    suite "busted-$v" --lua="$(interpreter "$v")" --cpath="./build/$v/?.so"
    unset DPS_SWEEP
done

# ASan+UBSan: the sanitizer runtimes are preloaded by the dynamic loader for
# the interpreter alone (ld.so --preload), not through LD_PRELOAD, which
# every child process (curl, openssl, the emulator) would inherit.
step asan-build make build/asan/dps/core.so
lua54=$(command -v lua5.4)
ldso=$(readelf -l "$(readlink -f "$lua54")" | sed -n 's/.*interpreter: \(.*\)]$/\1/p')
printf '#!/bin/sh\nexec %s --preload "%s %s" %s "$@"\n' "$ldso" \
    "$(cc -print-file-name=libasan.so)" "$(cc -print-file-name=libubsan.so)" "$lua54" >build/asan/lua5.4
chmod +x build/asan/lua5.4
ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    suite busted-asan --lua=build/asan/lua5.4 --cpath="./build/asan/?.so"

# Memcheck of the whole suite on Lua 5.4: busted re-runs itself as
# `LUA /usr/bin/busted ARGS` (split at spaces, so valgrind and its options
# go into a one-word wrapper), its TAP lines count as usual, and valgrind's
# verdict (any error, any definite leak) makes the run fail.  Child
# processes (servers, openssl, curl) are not traced.
VALGRIND="valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite"
VALGRIND="$VALGRIND --trace-children=no --num-callers=40 --suppressions=spec/valgrind.supp"
mkdir -p build/valgrind
printf '#!/bin/sh\nexec %s lua5.4 "$@"\n' "$VALGRIND" >build/valgrind/lua5.4
chmod +x build/valgrind/lua5.4
suite busted-valgrind --lua=build/valgrind/lua5.4 --cpath="./build/5.4/?.so"

# libFuzzer targets of the C parsers, 5 s each (make fuzz: 60 s each).
step fuzz sh fuzz/run.sh 5

# No key, derived key, password, PEM key or token signature in any message
# the suite produced (recorded by spec/support/sweep.lua) or in its logs.
step secrets-sweep lua5.4 spec/support/sweep_check.lua build/sweep

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
