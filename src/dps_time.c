/***
 * Clocks, sleeping and back-off jitter; and the process's own hardening
 * (no core dumps).  (The time-valued headers, Retry-After and Date, are read
 * in Lua: dps.http_time.)
 * @module dps.core
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#if defined(__linux__)
#include <sys/prctl.h>
#endif

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

/* nil, "cannot WHAT (the system's reason for err)", { kind = "config" }. */
static int harden_failure(lua_State *L, const char *what, int err)
{
    char reason[128], message[256];

    if (strerror_r(err, reason, sizeof reason) != 0 || reason[0] == '\0')
        snprintf(reason, sizeof reason, "error %d", err);
    reason[sizeof reason - 1] = '\0';
    snprintf(message, sizeof message, "dps.core.harden_process: cannot %s (%s)", what, reason);
    return dps_push_failure(L, "config", message);
}

/***
 * Keeps the keys in this process's memory out of core dumps, for a program
 * that holds keys (the `dps` command calls it first): the core-file limit
 * (`RLIMIT_CORE`) becomes 0, soft and hard, so no core file is written and
 * the limit cannot be raised again (child processes inherit it); on Linux
 * the process is also marked not dumpable (`PR_SET_DUMPABLE` 0): no core
 * dump even through a `core_pattern` pipe, and its `/proc/PID/mem`, ptrace
 * and `/proc/PID` files are out of reach of other processes of the same user
 * without `CAP_SYS_PTRACE` (an `exec`ed program is dumpable again).
 * Elsewhere only the limit is set.  Safe to call more than once.
 * @function harden_process
 * @treturn true
 * @return or nil, message, info (`kind = "config"`) when the system refused;
 *   never raises
 */
static int process_harden(lua_State *L)
{
    struct rlimit none;

    none.rlim_cur = 0;
    none.rlim_max = 0;
    if (setrlimit(RLIMIT_CORE, &none) != 0)
        return harden_failure(L, "set the core-file limit to 0", errno);
#if defined(__linux__)
    if (prctl(PR_SET_DUMPABLE, 0L, 0L, 0L, 0L) != 0)
        return harden_failure(L, "mark the process not dumpable", errno);
#endif
    lua_pushboolean(L, 1);
    return 1;
}

/* The functions this file adds to dps.core. */
static const luaL_Reg time_functions[] = {
    {"now", time_now},
    {"monotime", time_monotime},
    {"sleep", time_sleep},
    {"jitter", time_jitter},
    {"harden_process", process_harden},
    {NULL, NULL},
};

void dps_open_time(lua_State *L)
{
    luaL_setfuncs(L, time_functions, 0);
}
