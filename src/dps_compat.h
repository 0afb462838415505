/*
 * dps_compat.h - the one place that hides Lua version differences.
 *
 * The C core is written against the Lua 5.3/5.4 API.  What it uses that 5.1,
 * 5.2 or LuaJIT lack is shimmed here with static, dps_-prefixed functions and
 * mapped by #define, so nothing clashes with what LuaJIT already exports.
 */
#ifndef DPS_COMPAT_H
#define DPS_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

#if LUA_VERSION_NUM == 501
/* 5.2's luaL_setfuncs: sets the functions of l into the table below nup
 * upvalues, each a closure over those upvalues, which are popped. */
static inline void dps_compat_setfuncs(lua_State *L, const luaL_Reg *l, int nup)
{
    luaL_checkstack(L, nup + 1, "too many upvalues");
    for (; l->name != NULL; l++) {
        int i;
        for (i = 0; i < nup; i++)
            lua_pushvalue(L, -nup);
        lua_pushcclosure(L, l->func, nup);
        lua_setfield(L, -(nup + 2), l->name);
    }
    lua_pop(L, nup);
}

#define luaL_setfuncs dps_compat_setfuncs
#define luaL_setmetatable(L, t) (luaL_getmetatable(L, t), lua_setmetatable(L, -2))
#endif

#if LUA_VERSION_NUM < 504
#define luaL_pushfail(L) lua_pushnil(L)
#define dps_newuserdata(L, sz) lua_newuserdata(L, sz)
#else
#define dps_newuserdata(L, sz) lua_newuserdatauv(L, sz, 0)
#endif

#endif
