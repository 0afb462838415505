/*
 * The Lua-side parsers as libFuzzer targets: one driver embedding Lua 5.4,
 * built once per target with -DFUZZ_LUA_TARGET=<name> (fuzz/run.sh builds
 * fuzz_lua_<name>).  The target itself is Lua: fuzz/fuzz_lua.lua returns a
 * table of functions, name -> function(data), each calling the parser
 * under test with the input and checking what it promises (these parsers
 * return on any input, never raise).  A Lua error out of that function is a
 * crash: the driver prints it and aborts, so libFuzzer keeps the input.
 *
 * dps.core comes from the instrumented objects this binary links
 * (package.preload); the Lua modules from FUZZ_ROOT/lua; lua-cjson from the
 * system's Lua 5.4 C path.
 *
 * liblua5.4 is not instrumented, so libFuzzer alone would see no coverage
 * of the Lua code.  A line hook gives it some: each (function, line) pair
 * reached after another one bumps a counter in libFuzzer's extra-counters
 * section, an edge of the Lua code as the compiler's instrumentation gives
 * edges of C.
 *
 * The state lives from one input to the next (loading the modules takes
 * far longer than a parse), so an input's garbage is freed during later
 * ones: fuzz/run.sh runs these targets with -detect_leaks=0 (libFuzzer
 * would otherwise run a leak check after every input that allocates more
 * than it frees, which is each one); the C targets and the suite under
 * valgrind look for leaks in dps.core.
 */
#include "fuzz.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#ifndef FUZZ_LUA_TARGET
#error "build with -DFUZZ_LUA_TARGET=<name of a function in fuzz/fuzz_lua.lua>"
#endif
#ifndef FUZZ_ROOT
#define FUZZ_ROOT "."
#endif
#define FUZZ_STR2(x) #x
#define FUZZ_STR(x) FUZZ_STR2(x)

int luaopen_dps_core(lua_State *L);

#define LUA_EDGES (1u << 14) /* the Lua code under test has a few thousand edges */

/* Lua edge counters, read by libFuzzer (Linux: this section's bounds). */
__attribute__((section("__libfuzzer_extra_counters"), used)) static uint8_t lua_edges[LUA_EDGES];

/* The fuzzer's one Lua state and the last Lua location the hook saw: a
 * harness's state, which libFuzzer's single-threaded loop needs between
 * calls. */
static lua_State *fuzz_L;
static uintptr_t last_location;

static void line_hook(lua_State *L, lua_Debug *ar)
{
    uintptr_t here;

    if (!lua_getinfo(L, "f", ar))
        return;
    here = (uintptr_t)lua_topointer(L, -1) * 31u + (uintptr_t)ar->currentline;
    lua_pop(L, 1);
    here ^= here >> 17;
    here *= 0x9E3779B1u;
    lua_edges[(here ^ last_location) % LUA_EDGES]++;
    last_location = here >> 1;
}

/* The target function, the first time: a state with the standard
 * libraries, dps.core preloaded, the project's Lua path and the harness. */
static void setup(void)
{
    lua_State *L = luaL_newstate();

    CHECK(L != NULL);
    luaL_openlibs(L);
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, luaopen_dps_core);
    lua_setfield(L, -2, "dps.core");
    lua_pop(L, 1);
    lua_pushstring(L, FUZZ_ROOT "/lua/?.lua;" FUZZ_ROOT "/lua/?/init.lua");
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);
    if (luaL_dofile(L, FUZZ_ROOT "/fuzz/fuzz_lua.lua") != 0) {
        fprintf(stderr, "fuzz_lua: %s\n", lua_tostring(L, -1));
        abort();
    }
    lua_getfield(L, -1, FUZZ_STR(FUZZ_LUA_TARGET));
    if (lua_type(L, -1) != LUA_TFUNCTION) {
        fprintf(stderr, "fuzz_lua: no target %s in fuzz/fuzz_lua.lua\n", FUZZ_STR(FUZZ_LUA_TARGET));
        abort();
    }
    lua_setfield(L, LUA_REGISTRYINDEX, "fuzz_lua.target");
    lua_settop(L, 0);
    lua_sethook(L, line_hook, LUA_MASKLINE, 0);
    fuzz_L = L;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lua_State *L;

    if (fuzz_L == NULL)
        setup();
    L = fuzz_L;
    last_location = 0;
    lua_getfield(L, LUA_REGISTRYINDEX, "fuzz_lua.target");
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 0, 0) != 0) {
        fprintf(stderr, "fuzz_lua %s: %s\n", FUZZ_STR(FUZZ_LUA_TARGET),
                lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "(an error that is no string)");
        abort();
    }
    /* a bounded heap from one input to the next */
    lua_gc(L, LUA_GCSTEP, 0);
    return 0;
}
