/***
 * Clocks, sleeping and back-off jitter.  (The time-valued headers, Retry-After
 * and Date, are read in Lua: dps.http_time.)
 * @module dps.core
 */
#include <errno.h>
#include <time.h>

#include "dps_aux.h"
#include "dps_core.h"
#include "dps_crypto.h"

#define MAX_DELAY 1e9

/***
 * Wall-clock time.
 * @function now
 * @treturn number seconds since the epoch, with fractions
 */
static int time_now(lua_State *L)
{
    lua_pushnumber(L, dps_clock(CLOCK_REALTIME));
    return 1;
}

/***
 * A monotonic clock for deadlines: never jumps when the wall clock is set.
 * @function monotime
 * @treturn number seconds from an arbitrary origin
 */
static int time_monotime(lua_State *L)
{
    lua_pushnumber(L, dps_clock(CLOCK_MONOTONIC));
    return 1;
}

/***
 * Sleep, resuming after signals until the time has passed.
 * @function sleep
 * @tparam number seconds fractions allowed, not negative
 */
static int time_sleep(lua_State *L)
{
    lua_Number s = luaL_checknumber(L, 1);
    struct timespec req, rem;

    luaL_argcheck(L, s >= 0 && s <= MAX_DELAY, 1, "seconds must be between 0 and 1e9");
    req.tv_sec = (time_t)s;
    req.tv_nsec = (long)((s - (double)req.tv_sec) * 1e9);
    while (nanosleep(&req, &rem) != 0 && errno == EINTR)
        req = rem;
    return 0;
}

/***
 * A random delay for back-off jitter, from the crypto library's generator, so that a
 * fleet booting together spreads out without touching the host's math.random.
 * @function jitter
 * @tparam number low seconds
 * @tparam number high seconds (not below low)
 * @treturn number uniform in [low, high]
 */
static int time_jitter(lua_State *L)
{
    lua_Number lo = luaL_checknumber(L, 1);
    lua_Number hi = luaL_checknumber(L, 2);
    unsigned int r = 0;

    luaL_argcheck(L, hi >= lo, 2, "high must not be below low");
    if (dps_crypto_random(&r, sizeof r) != 0)
        r = (unsigned int)(dps_clock(CLOCK_MONOTONIC) * 1e6);
    lua_pushnumber(L, lo + (hi - lo) * ((double)r / 4294967295.0));
    return 1;
}

/* The functions this file adds to dps.core. */
static const luaL_Reg time_functions[] = {
    {"now", time_now},
    {"monotime", time_monotime},
    {"sleep", time_sleep},
    {"jitter", time_jitter},
    {NULL, NULL},
};

void dps_open_time(lua_State *L)
{
    luaL_setfuncs(L, time_functions, 0);
}
