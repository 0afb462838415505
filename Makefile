# lua-azure-dps: build, test, demo, benchmarks, docs and packages without luarocks.
# `make demo` and `make test` install the Debian packages they need (as root):
# the demo only what running the library and the emulator takes, the tests the
# whole matrix (tools/install-deps.sh says which packages).
#
# For packagers (`make core install`), every one of these can be set on the
# command line or in the environment:
#   CC CFLAGS CPPFLAGS LDFLAGS     the compiler and its flags
#   LUA_VERSION                    5.1, 5.2, 5.3, 5.4 or jit (default 5.4)
#   LUA_INC                        the folder with that Lua's lua.h (searched before CPPFLAGS's,
#                                  which may hold another Lua's, as OpenWrt's staging dir does)
#   LUA                            the interpreter the `dps` command runs on
#   SHEBANG                        its whole first line (default: #!/usr/bin/env $(LUA))
#   WERROR                         -Werror by default; WERROR= builds with warnings
#   LTO                            -flto by default (see "Size" below); LTO= for a compiler
#                                  or linker without it
#   UNWIND                         unwind tables for a Lua 5.1 module only (see "Size" below);
#                                  UNWIND=-funwind-tables for a Lua built as C++ (errors
#                                  thrown as exceptions)
#   CURL_CFLAGS LIBS               how libcurl and the crypto library are found
#   PREFIX DESTDIR LUA_CMOD_DIR LUA_LMOD_DIR BIN_DIR   where `make install` puts files
#   LUA_STRIP                      an interpreter (e.g. lua5.1): install the Lua files without
#                                  comments and indentation (tools/lua-strip.lua), for routers
# e.g. make core install LUA_VERSION=5.1 PREFIX=/usr DESTDIR=/tmp/stage CC=mipsel-linux-gnu-gcc WERROR=

LUA_VERSIONS ?= 5.4 5.3 5.1 jit
CC ?= cc
CFLAGS ?= -O2 -g
CPPFLAGS ?=
LDFLAGS ?=
WERROR ?= -Werror
WARNINGS = -std=c99 -pedantic -Wall -Wextra $(WERROR) -Wshadow -Wstrict-prototypes
DEFINES = -D_POSIX_C_SOURCE=200809L -DOPENSSL_API_COMPAT=0x10101000L
MODULE_CFLAGS = $(WARNINGS) $(DEFINES) -fPIC -fvisibility=hidden
# Size: the module goes into routers' flash (tools/size-gate.sh holds
# core.so to 52 KiB on MIPS32).  Everything done for it is explained here:
#   -flto             the module optimised as one unit: about 4 KiB smaller.
#   unwind tables     kept for Lua 5.1 builds, which LuaJIT may load: its
#                     errors unwind through C frames (on x86_64 a frame
#                     without them is a PANIC).  Left out for 5.2 to 5.4,
#                     whose errors are a longjmp (about 5 KiB on x86_64).
#   -fno-plt          calls to libcurl, Lua and libc through the GOT, bound
#                     at load: no PLT stubs (about 2 KiB on x86_64).
#   -fno-jump-tables  a sparse switch (the stray characters of a base64 key)
#                     takes more room as a table than as tests, and nothing
#                     here is hot enough to notice.
#   -Wa,-mno-pdr      on MIPS, no .pdr section (procedure descriptors no
#                     loader or debugger of ours reads: 4 KiB).
#   -DCURL_DISABLE_TYPECHECK  without libcurl's compile-time check of
#                     curl_easy_setopt's arguments (typecheck-gcc.h), whose
#                     warning stubs stay in the module (0.6 KiB on x86_64);
#                     `make lint` compiles every source with the check,
#                     warnings as errors.
# And one rule for the C: no libm, no conversion between a double and a
# 64-bit integer, no 64-bit division.  On 32-bit CPUs (MIPS, ARM) each links
# libm or libgcc's routines (__fixdfdi, __fixunsdfdi, __udivdi3: up to
# 4 KiB) into the module.  So timeouts and max_body are rounded up through
# 32-bit longs (dps_http_ms, the engine's options), a SAS expiry is checked
# in 32-bit parts (whole_seconds) and written by subtracting powers of ten
# (format_expiry).
LTO ?= -flto
unwind = $(if $(filter 5.2 5.3 5.4,$(1)),-fno-asynchronous-unwind-tables -fno-unwind-tables)
comma := ,
NO_PDR := $(if $(findstring mips,$(shell $(CC) -dumpmachine 2>/dev/null)),-Wa$(comma)-mno-pdr)
MODULE_CFLAGS += -fno-plt -fno-jump-tables $(NO_PDR) -DCURL_DISABLE_TYPECHECK
CURL_CFLAGS ?= $(shell pkg-config --cflags libcurl 2>/dev/null)
# The crypto backend (src/dps_crypto.h): CRYPTO=openssl (libcrypto, and
# libssl to keep SSLKEYLOGFILE from turning on a TLS key log), the default,
# or CRYPTO=mbedtls (src/dps_crypto_mbedtls.c: mbedTLS's crypto and X.509
# libraries, which libcurl on mbedTLS already loads; OpenWrt's choice).
# CRYPTO_CFLAGS finds the backend's headers when they are not in the
# compiler's path.
CRYPTO ?= openssl
CRYPTO_LIBS_openssl = -lssl -lcrypto
CRYPTO_LIBS_mbedtls = -lmbedx509 -lmbedcrypto
CRYPTO_CFLAGS ?=
LIBS ?= -lcurl $(CRYPTO_LIBS_$(CRYPTO))
SANITIZE = -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer

# Every source but the other backends' (src/dps_crypto_*.c).
SOURCES = $(filter-out $(filter-out src/dps_crypto_$(CRYPTO).c,$(wildcard src/dps_crypto_*.c)),$(wildcard src/*.c))
ifeq ($(wildcard src/dps_crypto_$(CRYPTO).c),)
$(error CRYPTO=$(CRYPTO): no src/dps_crypto_$(CRYPTO).c (openssl or mbedtls))
endif
HEADERS = $(wildcard src/*.h)

# One version for everything, kept in src/dps_core.h (make version-check).
VERSION := $(shell sed -n 's/^\#define DPS_CORE_VERSION "\(.*\)"/\1/p' src/dps_core.h)
ROCKSPEC = lua-azure-dps-$(VERSION)-1.rockspec

lua_inc = $(if $(filter jit,$(1)),/usr/include/luajit-2.1,/usr/include/lua$(1))

LUA_VERSION ?= 5.4
LUA_INC ?= $(call lua_inc,$(LUA_VERSION))
UNWIND ?= $(call unwind,$(LUA_VERSION))
# LuaJIT searches Lua 5.1's folders.
LUA_ABI = $(if $(filter jit,$(LUA_VERSION)),5.1,$(LUA_VERSION))
LUA ?= $(if $(filter jit,$(LUA_VERSION)),luajit,lua$(LUA_VERSION))
SHEBANG ?= \#!/usr/bin/env $(LUA)
PREFIX ?= /usr/local
BIN_DIR ?= $(PREFIX)/bin
LUA_STRIP ?=
LUA_CMOD_DIR ?= $(PREFIX)/lib/lua/$(LUA_ABI)
LUA_LMOD_DIR ?= $(PREFIX)/share/lua/$(LUA_ABI)
# Where `make core` puts the module for LUA_VERSION.
OUT ?= build/$(LUA_VERSION)

.PHONY: all build core deps deps-demo deps-test test lint demo bench docs install clean certs \
	version version-check dist rock cross-test openwrt-test stack-test memcheck

all: build

build: $(foreach v,$(LUA_VERSIONS),build/$(v)/dps/core.so)

# The module for LUA_VERSION alone, with LUA_INC and everything above.
core: $(OUT)/dps/core.so

$(OUT)/dps/core.so: $(SOURCES) $(HEADERS) Makefile
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LTO) $(UNWIND) -I$(LUA_INC) $(CPPFLAGS) $(MODULE_CFLAGS) $(CURL_CFLAGS) $(CRYPTO_CFLAGS) -shared $(LDFLAGS) -o $@ $(SOURCES) $(LIBS)

# One shared object per Lua ABI; LuaJIT gets its own from its own headers.
build/%/dps/core.so: $(SOURCES) $(HEADERS) Makefile
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LTO) $(call unwind,$*) -I$(call lua_inc,$*) $(CPPFLAGS) $(MODULE_CFLAGS) $(CURL_CFLAGS) $(CRYPTO_CFLAGS) -shared $(LDFLAGS) -o $@ $(SOURCES) $(LIBS)

build/asan/dps/core.so: $(SOURCES) $(HEADERS) Makefile
	@mkdir -p $(@D)
	$(CC) -O1 -g $(SANITIZE) $(MODULE_CFLAGS) -I$(call lua_inc,5.4) $(CURL_CFLAGS) -shared -o $@ $(SOURCES) $(LIBS)

deps:
	@sh tools/install-deps.sh build

deps-demo:
	@sh tools/install-deps.sh demo

deps-test:
	@sh tools/install-deps.sh test

lint:
	luacheck --quiet $(wildcard lua bin spec bench examples emulator) $(wildcard *.rockspec)
	@for f in $(SOURCES); do \
		$(CC) -O2 -c -o /dev/null -I$(LUA_INC) $(CPPFLAGS) $(WARNINGS) $(DEFINES) $(CURL_CFLAGS) $(CRYPTO_CFLAGS) $$f || exit 1; \
	done

test: deps-test
	@sh spec/suite.sh

demo: deps-demo build/5.4/dps/core.so
	@sh examples/demo.sh

bench: deps-test build
	@sh bench/run.sh

docs:
	rm -rf docs/reference
	ldoc --fatalwarnings .

certs:
	@sh emulator/make-certs.sh build/test-certs

# The library's Lua files and the command's (bin/dps, dps.cli and dps/cli/):
# `make install` puts both, install-lib and install-cli one each (OpenWrt
# ships them as separate packages).
LIB_LUA = dps.lua $(filter-out dps/cli.lua,$(patsubst lua/%,%,$(wildcard lua/dps/*.lua)))
CLI_LUA = dps/cli.lua $(patsubst lua/%,%,$(wildcard lua/dps/cli/*.lua))

# install_lua FILES: each lua/FILE into LUA_LMOD_DIR, stripped with LUA_STRIP when set.
define install_lua
	for f in $(1); do \
		install -d $(DESTDIR)$(LUA_LMOD_DIR)/$$(dirname $$f) || exit 1; \
		if [ -n "$(LUA_STRIP)" ]; then \
			$(LUA_STRIP) tools/lua-strip.lua <lua/$$f >$(DESTDIR)$(LUA_LMOD_DIR)/$$f || exit 1; \
			chmod 0644 $(DESTDIR)$(LUA_LMOD_DIR)/$$f; \
		else \
			install -m 0644 lua/$$f $(DESTDIR)$(LUA_LMOD_DIR)/$$f || exit 1; \
		fi; \
	done
endef

.PHONY: install-lib install-cli
install: install-lib install-cli

install-lib: $(OUT)/dps/core.so
	install -d $(DESTDIR)$(LUA_CMOD_DIR)/dps
	install -m 0755 $(OUT)/dps/core.so $(DESTDIR)$(LUA_CMOD_DIR)/dps/core.so
	$(call install_lua,$(LIB_LUA))

install-cli:
	$(call install_lua,$(CLI_LUA))
	install -d $(DESTDIR)$(BIN_DIR)
	sed '1s|^#!.*|$(SHEBANG)|' bin/dps >$(DESTDIR)$(BIN_DIR)/dps
	chmod 0755 $(DESTDIR)$(BIN_DIR)/dps

# The release, in build/dist/ (tools/dist.sh): `make dist` the tarball
# lua-azure-dps-V.tar.gz (the committed tree and uncommitted changes to
# tracked files, with the release rockspec only), `make rock` the source rock
# lua-azure-dps-V-1.src.rock, `make release` both with SHA256SUMS and the
# OpenWrt packages' Makefile with the tarball's PKG_HASH
# (build/dist/openwrt/lua-azure-dps/Makefile). Each checks the version
# first (tools/version_check.lua, which spec/version_spec.lua runs too):
# Lua 5.4 and lua-cjson, no busted.
version:
	@echo $(VERSION)

version-check: build/5.4/dps/core.so
	@lua5.4 -e 'package.path = "./?.lua;./lua/?.lua;" .. package.path; package.cpath = "./build/5.4/?.so;" .. package.cpath' \
		-e 'os.exit(require("tools.version_check").run("lua5.4"))'

.PHONY: release
dist: version-check
	@sh tools/dist.sh tarball

rock: version-check
	@sh tools/dist.sh rock

release: version-check
	@sh tools/dist.sh release

# libFuzzer targets of the C parsers and of the Lua-side ones (fuzz/fuzz_lua.c
# embeds Lua 5.4), clang, ASan+UBSan, FUZZ_SECONDS each.
# The soak specs (busted's #soak tag: kill -9 loops, 100 reboots, 2,000
# devices resumed, 50 renewals killed), left out of make test; CI runs them.
.PHONY: soak
soak: deps-test
	@sh spec/soak.sh

# The whole suite under valgrind's memcheck (make test runs the C core's
# specs under it): a CI phase of its own.
memcheck: deps-test
	@MEMCHECK=full sh spec/suite.sh

FUZZ_SECONDS ?= 60
.PHONY: fuzz
fuzz:
	@sh fuzz/run.sh $(FUZZ_SECONDS)

# The busted suite on another CPU: the core cross-built, Debian's lua5.1 of
# that architecture under qemu-user, the emulator on the host
# (tools/cross/test.sh; tools/install-deps.sh cross installs what it needs).
# The host's modules first (make build): install_spec installs them.
ARCH ?= mipsel
cross-test:
	@sh tools/install-deps.sh cross
	@$(MAKE) --no-print-directory build
	@sh tools/cross/test.sh $(ARCH)

# The OpenWrt packages (openwrt/lua-azure-dps) built in a stand-in of the
# SDK of each release of openwrt/feeds.lua for ARCH, as docs/openwrt.md
# says, installed with the feeds' interpreters and cjson, and loaded and run
# under qemu (openwrt/test.sh). OPENWRT_RELEASES: some of them; DPS_CRYPTO:
# the library package that provisions, mbedtls (the default) or openssl.
OPENWRT_RELEASES ?=
DPS_CRYPTO ?= mbedtls
openwrt-test:
	@sh tools/install-deps.sh cross
	@OPENWRT_RELEASES="$(OPENWRT_RELEASES)" DPS_CRYPTO=$(DPS_CRYPTO) sh openwrt/test.sh $(ARCH)

# The busted suite on an OpenWrt-like stack: musl, Lua 5.1, libcurl on
# mbedTLS and dps.core with the mbedTLS backend, built from Debian's source
# packages into build/stack (tools/stack/build.sh; built once, then cached),
# the emulator on the host (tools/stack/test.sh). The host's modules first
# (make build), as above.
stack-test:
	@sh tools/install-deps.sh stack
	@$(MAKE) --no-print-directory build
	@sh tools/stack/test.sh

clean:
	rm -rf build dps src/*.o docs/reference
