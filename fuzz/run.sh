#!/bin/sh
# fuzz/run.sh [SECONDS]: builds the libFuzzer targets (clang,
# -fsanitize=fuzzer,address,undefined) into build/fuzz/ and runs each one for
# SECONDS (default 60) on a temporary copy of its seed corpus in
# fuzz/corpus/<target>/, so the committed corpus stays as it is.  Prints
#   fuzz <target>: <executions> executions, <crashes> crashes
# per target and exits non-zero when a target crashed (or did not build or
# run).  A failing input is kept as build/fuzz/artifacts/<target>-crash-…
# (or -leak-, -timeout-, -oom-); replay it with `build/fuzz/<target> FILE`.
# Everything else of a run (objects, corpus copies) lives in a private
# directory under build/fuzz/ that is removed at the end.
#
# The project's C files are compiled once into an archive and each target
# links only the members it needs.  They include the Lua 5.4 headers
# (their Lua bindings sit next to the plain functions), so the targets link
# -llua5.4 too, though no Lua code runs in the C targets.  The fuzz_lua_*
# targets are the Lua-side parsers: fuzz/fuzz_lua.c (built once per target,
# -DFUZZ_LUA_TARGET=<name>) runs the function <name> of fuzz/fuzz_lua.lua on
# Lua 5.4 with the modules of lua/, dps.core from the archive and the
# system's lua-cjson.
set -u
cd "$(dirname "$0")/.." || exit 1

seconds=${1:-60}
case "$seconds" in
    '' | *[!0-9]*) echo "usage: fuzz/run.sh [SECONDS]" >&2; exit 2 ;;
esac

CC=${FUZZ_CC:-clang}
OUT=build/fuzz
SAN="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
CFLAGS="-g -O1 $SAN -std=c99 -pedantic -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes"
DEFINES="-D_POSIX_C_SOURCE=200809L -DOPENSSL_API_COMPAT=0x10101000L"
INCLUDES="-Isrc -I/usr/include/lua5.4 $(pkg-config --cflags libcurl 2>/dev/null)"
# The crypto backend, as the Makefile's CRYPTO: openssl (default) or mbedtls.
CRYPTO=${CRYPTO:-openssl}
case "$CRYPTO" in
    openssl) CRYPTO_LIBS="-lssl -lcrypto" ;;
    # fuzz_sas checks against OpenSSL's HMAC: with mbedTLS, one library against the other
    mbedtls) CRYPTO_LIBS="-lmbedx509 -lmbedcrypto -lcrypto" ;;
    *) echo "fuzz: CRYPTO=openssl or mbedtls" >&2; exit 2 ;;
esac
LIBS="-llua5.4 -lcurl $CRYPTO_LIBS -lm"
TARGETS="fuzz_base64 fuzz_percent fuzz_sas fuzz_headers \
    fuzz_lua_headers fuzz_lua_http_time fuzz_lua_cache fuzz_lua_hub_message"

# Builds into a private directory first, so that two runs at once (two
# suites in one checkout) never link against each other's half-built files.
build() {
    objs="$stage/obj"
    mkdir -p "$objs" || return 1
    for src in src/*.c; do
        case "$src" in
            src/dps_crypto_"$CRYPTO".c) ;;
            src/dps_crypto_*.c) continue ;;
        esac
        # shellcheck disable=SC2086
        $CC $CFLAGS -fsanitize=fuzzer-no-link $DEFINES $INCLUDES -c "$src" \
            -o "$objs/$(basename "$src" .c).o" || return 1
    done
    ar rcs "$stage/libdps.a" "$objs"/*.o || return 1
    for t in $TARGETS; do
        case "$t" in
            fuzz_lua_*) src=fuzz/fuzz_lua.c
                extra="-DFUZZ_LUA_TARGET=${t#fuzz_lua_} -DFUZZ_ROOT=\"$(pwd)\"" ;;
            *) src=fuzz/$t.c extra="" ;;
        esac
        # shellcheck disable=SC2086
        $CC $CFLAGS -fsanitize=fuzzer $DEFINES $INCLUDES -Ifuzz $extra "$src" \
            "$stage/libdps.a" $LIBS -o "$stage/$t" || return 1
    done
}

mkdir -p "$OUT/artifacts"
stage=$(mktemp -d "$OUT/stage.XXXXXX") || exit 1
trap 'rm -rf "$stage"' EXIT
if ! build >"$stage/build.log" 2>&1; then
    cat "$stage/build.log" >&2
    echo "fuzz: build failed" >&2
    exit 1
fi
for t in $TARGETS; do
    # copy, then rename: a binary that another run is using is never touched
    cp -f "$stage/$t" "$stage/$t.copy" && mv -f "$stage/$t.copy" "$OUT/$t"
done

status=0
for t in $TARGETS; do
    work="$stage/$t.run"
    mkdir -p "$work/corpus" "$work/artifacts"
    cp fuzz/corpus/"$t"/* "$work/corpus/" 2>/dev/null
    rm -f "$OUT/$t.log"
    # the Lua targets keep one Lua state, whose garbage outlives an input
    case "$t" in
        fuzz_lua_*) leaks=-detect_leaks=0 ;;
        *) leaks=-detect_leaks=1 ;;
    esac
    ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1} UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1} \
        "$stage/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=1024 -print_final_stats=1 $leaks \
        -artifact_prefix="$work/artifacts/$t-" "$work/corpus" >"$work/log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$work/log" | tail -n 1)
    crashes=$(find "$work/artifacts" -type f \( -name "$t-crash-*" -o -name "$t-leak-*" \
        -o -name "$t-timeout-*" -o -name "$t-oom-*" \) | wc -l)
    if [ "$rc" != 0 ] && [ "$crashes" = 0 ]; then
        crashes=1 # died without saving an input (e.g. during start-up)
    fi
    cp "$work/artifacts"/* "$OUT/artifacts/" 2>/dev/null
    echo "fuzz $t: ${execs:-0} executions, $crashes crashes"
    if [ "$crashes" != 0 ]; then
        status=1
        cp "$work/log" "$OUT/$t.log"
        grep -E 'ERROR|check failed|runtime error|SUMMARY' "$work/log" | head -n 20 | sed 's/^/    /'
        for a in "$work/artifacts"/*; do
            [ -f "$a" ] && echo "    input: $OUT/artifacts/$(basename "$a")"
        done
        echo "    full log: $OUT/$t.log"
    fi
done
exit "$status"
