# lua-azure-dps: build, test, demo, benchmarks and docs without luarocks.
# `make demo` and `make test` install the Debian packages they need (as root):
# the demo only what running the library and the emulator takes, the tests the
# whole matrix (tools/install-deps.sh says which packages).

LUA_VERSIONS ?= 5.4 5.3 5.1 jit
CC ?= cc
CFLAGS ?= -O2 -g
WARNINGS = -std=c99 -pedantic -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes
DEFINES = -D_POSIX_C_SOURCE=200809L -DOPENSSL_API_COMPAT=0x10101000L
MODULE_CFLAGS = $(WARNINGS) $(DEFINES) -fPIC -fvisibility=hidden
CURL_CFLAGS = $(shell pkg-config --cflags libcurl 2>/dev/null)
LIBS = -lcurl -lssl -lcrypto
SANITIZE = -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer

SOURCES = $(wildcard src/*.c)
HEADERS = $(wildcard src/*.h)

lua_inc = $(if $(filter jit,$(1)),/usr/include/luajit-2.1,/usr/include/lua$(1))

PREFIX ?= /usr/local
LUA_VERSION ?= 5.4
LUA_CMOD_DIR ?= $(PREFIX)/lib/lua/$(LUA_VERSION)
LUA_LMOD_DIR ?= $(PREFIX)/share/lua/$(LUA_VERSION)

.PHONY: all build deps deps-demo deps-test test lint demo bench docs install clean certs

all: build

build: $(foreach v,$(LUA_VERSIONS),build/$(v)/dps/core.so)

# One shared object per Lua ABI; LuaJIT gets its own from its own headers.
build/%/dps/core.so: $(SOURCES) $(HEADERS) Makefile
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(MODULE_CFLAGS) -I$(call lua_inc,$*) $(CURL_CFLAGS) -shared -o $@ $(SOURCES) $(LIBS)

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

test: deps-test
	@sh spec/suite.sh

demo: deps-demo build/5.4/dps/core.so
	@sh examples/demo.sh

bench: deps-test build
	@sh bench/run.sh

docs:
	ldoc --fatalwarnings .

certs:
	@sh emulator/make-certs.sh build/test-certs

install: build/$(LUA_VERSION)/dps/core.so
	install -d $(DESTDIR)$(LUA_CMOD_DIR)/dps $(DESTDIR)$(LUA_LMOD_DIR)/dps/cli $(DESTDIR)$(PREFIX)/bin
	install -m 0755 build/$(LUA_VERSION)/dps/core.so $(DESTDIR)$(LUA_CMOD_DIR)/dps/core.so
	install -m 0644 lua/dps.lua $(DESTDIR)$(LUA_LMOD_DIR)/dps.lua
	install -m 0644 lua/dps/*.lua $(DESTDIR)$(LUA_LMOD_DIR)/dps/
	install -m 0644 lua/dps/cli/*.lua $(DESTDIR)$(LUA_LMOD_DIR)/dps/cli/
	sed '1s|^#!.*|#!/usr/bin/env lua$(LUA_VERSION)|' bin/dps >$(DESTDIR)$(PREFIX)/bin/dps
	chmod 0755 $(DESTDIR)$(PREFIX)/bin/dps

# libFuzzer targets of the C parsers (clang, ASan+UBSan), FUZZ_SECONDS each.
FUZZ_SECONDS ?= 60
.PHONY: fuzz
fuzz:
	@sh fuzz/run.sh $(FUZZ_SECONDS)

clean:
	rm -rf build dps src/*.o doc
