#!/bin/sh
# tools/stack/build.sh: an OpenWrt-like stack on the host CPU, built from
# Debian's own source packages (apt-get source, no root needed) with musl
# (musl-gcc, as OpenWrt's toolchain) into build/stack/prefix, and cached:
#   mbedTLS 2.28 (OpenWrt 23.05's), libcurl 7.88 on mbedTLS (as OpenWrt's
#   default libcurl), Lua 5.1, and the C modules the library and busted need
#   (lua-cjson, lua-filesystem; lua-system's and lua-term's four functions
#   from tools/stack/shims.c, their sources being out of the mirror's reach);
# then dps.core on it with the mbedTLS backend (make CRYPTO=mbedtls), and
# build/stack/lua5.1, the interpreter busted runs the suite on.
# Lua 5.1 is upstream's, without OpenWrt's LNUM patch (Debian has none).
# Needs `tools/install-deps.sh stack` (musl-tools, dpkg-dev; as root once).
# A rebuild of the stack happens only when this script changes; dps.core is
# rebuilt every time (make decides).
set -eu
cd "$(dirname "$0")/../.."
top=$(pwd)
S=$top/build/stack
P=$S/prefix
SRC=$S/src
CC=${STACK_CC:-musl-gcc}
JOBS=${JOBS:-2}
SOURCES="mbedtls curl lua5.1 lua-cjson lua-filesystem"
stamp=$S/stack.stamp
want=$(cat tools/stack/build.sh tools/stack/shims.c | cksum)

command -v "$CC" >/dev/null && command -v dpkg-source >/dev/null || {
    echo "stack: $CC or dpkg-source missing: run 'sh tools/install-deps.sh stack' (as root)" >&2
    exit 1
}

log() { echo "stack: $*"; }

unpack() { # unpack NAME: the newest .dsc of NAME, into $SRC/NAME
    dsc=$(ls "$S/dl/$1"_*.dsc | sort -V | tail -1)
    rm -rf "$SRC/$1"
    dpkg-source -x --no-check "$dsc" "$SRC/$1" >/dev/null
}

build_stack() {
    mkdir -p "$SRC" "$P/lib/lua/5.1" "$P/include" "$P/bin"
    # Debian's source packages, kept in build/stack/dl
    sh tools/debian-source.sh "$S" $SOURCES

    # Each step is skipped when its product is there (rm -rf build/stack to
    # start over).
    [ -e "$P/lib/libmbedx509.so" ] || {
    log "mbedTLS"
    unpack mbedtls
    (cd "$SRC/mbedtls" && make -s -j"$JOBS" -C library CC="$CC" SHARED=1 CFLAGS="-Os -fPIC" \
        libmbedcrypto.so libmbedx509.so libmbedtls.so >/dev/null)
    cp -a "$SRC/mbedtls/include/mbedtls" "$SRC/mbedtls/include/psa" "$P/include/"
    cp -a "$SRC/mbedtls/library/"libmbed*.so* "$P/lib/"
    }

    [ -e "$P/lib/libcurl.so" ] || {
    log "libcurl on mbedTLS"
    unpack curl
    (cd "$SRC/curl" && CC="$CC" CFLAGS="-Os" CPPFLAGS="-I$P/include" LDFLAGS="-L$P/lib -Wl,-rpath,$P/lib" \
        ./configure -q --prefix="$P" --disable-static --enable-shared \
        --without-openssl --with-mbedtls="$P" --with-ca-bundle=/etc/ssl/certs/ca-certificates.crt \
        --enable-threaded-resolver --disable-ldap --disable-rtsp --disable-dict --disable-telnet \
        --disable-tftp --disable-pop3 --disable-imap --disable-smtp --disable-gopher --disable-mqtt \
        --disable-manual --without-libpsl --without-zlib --without-brotli --without-zstd \
        --without-nghttp2 --without-libidn2 --without-librtmp --without-libssh2 >/dev/null &&
        make -s -j"$JOBS" -C lib >/dev/null && make -s -C lib install >/dev/null &&
        make -s -C include install >/dev/null)
    }

    log "Lua 5.1"
    # Upstream's 5.1.5 (the .orig tarball of Debian's source package), as
    # OpenWrt starts from; paths of this stack only: the C modules built
    # here, busted's Lua files from the host (no host C module may load into
    # a musl process).
    rm -rf "$SRC/lua5.1"
    mkdir -p "$SRC/lua5.1"
    tar -C "$SRC/lua5.1" --strip-components=1 -xzf "$(ls "$S"/dl/lua5.1_*.orig.tar.gz | tail -1)"
    l=$SRC/lua5.1/src
    cat >>"$l/luaconf.h" <<CONF
#undef LUA_PATH_DEFAULT
#define LUA_PATH_DEFAULT "./?.lua;$P/share/lua/5.1/?.lua;$P/share/lua/5.1/?/init.lua;/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua"
#undef LUA_CPATH_DEFAULT
#define LUA_CPATH_DEFAULT "./?.so;$P/lib/lua/5.1/?.so"
CONF
    (cd "$l" && $CC -Os -DLUA_USE_POSIX -DLUA_USE_DLOPEN -o "$P/bin/lua" -Wl,-E \
        $(ls *.c | grep -v -e '^luac.c$' -e '^print.c$') -lm)
    cp "$l/lua.h" "$l/luaconf.h" "$l/lualib.h" "$l/lauxlib.h" "$P/include/"
    [ -f "$l/lua.hpp" ] && cp "$l/lua.hpp" "$P/include/" || true

    module() { # module NAME OUT CFILES...: a C module into lib/lua/5.1
        name=$1 out=$2
        shift 2
        mkdir -p "$(dirname "$P/lib/lua/5.1/$out")"
        (cd "$SRC/$name" && $CC -Os -fPIC -shared -I"$P/include" -o "$P/lib/lua/5.1/$out" "$@")
    }
    log "lua-cjson, lua-filesystem, system.core and term.core"
    for m in lua-cjson lua-filesystem; do unpack "$m"; done
    module lua-cjson cjson.so lua_cjson.c strbuf.c fpconv.c
    module lua-filesystem lfs.so src/lfs.c
    mkdir -p "$P/lib/lua/5.1/system" "$P/lib/lua/5.1/term"
    $CC -Os -fPIC -shared -I"$P/include" -DSHIM_SYSTEM -o "$P/lib/lua/5.1/system/core.so" tools/stack/shims.c
    $CC -Os -fPIC -shared -I"$P/include" -DSHIM_TERM -o "$P/lib/lua/5.1/term/core.so" tools/stack/shims.c
    echo "$want" >"$stamp"
}

if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || [ ! -x "$P/bin/lua" ]; then
    began=$(date +%s)
    build_stack
    log "built in $(($(date +%s) - began)) s"
fi

# dps.core with the mbedTLS backend, -Os as on a router.
make --no-print-directory core OUT="$S" LUA_VERSION=5.1 CC="$CC" CRYPTO=mbedtls CFLAGS="-Os" \
    LUA_INC="$P/include" CURL_CFLAGS="-I$P/include" CRYPTO_CFLAGS="-I$P/include" \
    LDFLAGS="-L$P/lib -Wl,-rpath,$P/lib"

cat >"$S/lua5.1" <<WRAP
#!/bin/sh
# Lua 5.1 on musl, libcurl on mbedTLS (tools/stack/build.sh).
exec "$P/bin/lua" "\$@"
WRAP
chmod +x "$S/lua5.1"
"$S/lua5.1" -e "package.cpath = '$S/?.so;' .. package.cpath
  require 'lfs' require 'cjson' require 'system' require 'term.core'
  local v = require('dps.core').version()
  print(('stack: %s, dps.core %s (%s), curl %s on %s'):format(_VERSION, v.dps, v.crypto, v.curl, v.ssl))"
