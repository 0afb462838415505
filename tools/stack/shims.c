/*
 * tools/stack/shims.c: the C halves of lua-system (system.core: gettime,
 * monotime, sleep) and lua-term (term.core: isatty), which busted loads,
 * for the stack's musl Lua 5.1 (tools/stack/build.sh).  Debian's source
 * packages of the two are not reachable from the package mirror here, and
 * busted uses only these four functions of them.  Built twice, with
 * -DSHIM_SYSTEM and -DSHIM_TERM.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "lauxlib.h"
#include "lua.h"
#include "lualib.h"

#ifdef SHIM_SYSTEM
static double clock_of(clockid_t id)
{
    struct timespec ts;

    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int s_gettime(lua_State *L)
{
    lua_pushnumber(L, clock_of(CLOCK_REALTIME));
    return 1;
}

static int s_monotime(lua_State *L)
{
    lua_pushnumber(L, clock_of(CLOCK_MONOTONIC));
    return 1;
}

static int s_sleep(lua_State *L)
{
    double s = luaL_checknumber(L, 1);
    struct timespec ts;

    if (s <= 0)
        return 0;
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    return 0;
}

int luaopen_system_core(lua_State *L)
{
    static const luaL_Reg f[] = {{"gettime", s_gettime}, {"monotime", s_monotime}, {"sleep", s_sleep}, {NULL, NULL}};

    luaL_register(L, "system.core", f);
    return 1;
}
#endif

#ifdef SHIM_TERM
static int t_isatty(lua_State *L)
{
    FILE **f = (FILE **)luaL_checkudata(L, 1, LUA_FILEHANDLE);

    lua_pushboolean(L, *f != NULL && isatty(fileno(*f)));
    return 1;
}

int luaopen_term_core(lua_State *L)
{
    static const luaL_Reg f[] = {{"isatty", t_isatty}, {NULL, NULL}};

    luaL_register(L, "term.core", f);
    return 1;
}
#endif
