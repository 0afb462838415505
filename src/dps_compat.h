/*
 * dps_compat.h - the one place that hides Lua version differences.
 *
 * The C core is written against the Lua 5.3/5.4 API.  What it uses that 5.1,
 * 5.2 or LuaJIT lack is mapped here by #define, so nothing clashes with what
 * LuaJIT already exports.
 */
#ifndef DPS_COMPAT_H
#define DPS_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

#if LUA_VERSION_NUM == 501
#define luaL_setmetatable(L, t) (luaL_getmetatable(L, t), lua_setmetatable(L, -2))
#endif

#if LUA_VERSION_NUM < 504
#define luaL_pushfail(L) lua_pushnil(L)
#define dps_newuserdata(L, sz) lua_newuserdata(L, sz)
#else
#define dps_newuserdata(L, sz) lua_newuserdatauv(L, sz, 0)
#endif

#endif
