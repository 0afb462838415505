/***
 * Clocks, sleeping, and the time-valued headers DPS sends (Retry-After, Date).
 * @module dps.core
 */
#include <errno.h>
#include <math.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "dps_aux.h"
#include "dps_core.h"
#include "dps_crypto.h"
#include "dps_time.h"

#define MAX_DELAY 1e9

static int is_space(char c)
{
    return c == ' ' || c == '\t';
}

/* Trims optional white space; copies into buf as a C string.  -1 if unusable. */
static int copy_trimmed(const char *value, size_t len, char buf[DPS_TIME_MAX_HEADER + 1])
{
    while (len > 0 && is_space(value[0])) {
        value++;
        len--;
    }
    while (len > 0 && is_space(value[len - 1]))
        len--;
    if (len == 0 || len > DPS_TIME_MAX_HEADER || memchr(value, '\0', len) != NULL)
        return -1;
    memcpy(buf, value, len);
    buf[len] = '\0';
    return 0;
}

int dps_parse_http_date(const char *value, size_t len, double *epoch)
{
    char buf[DPS_TIME_MAX_HEADER + 1];
    size_t i, letters = 0;
    time_t t;

    if (copy_trimmed(value, len, buf) != 0)
        return -1;
    /* curl_getdate is lenient; an HTTP-date always names a day or month. */
    for (i = 0; buf[i] != '\0'; i++)
        if ((buf[i] >= 'A' && buf[i] <= 'Z') || (buf[i] >= 'a' && buf[i] <= 'z'))
            letters++;
    if (letters < 3)
        return -1;
    t = curl_getdate(buf, NULL);
    if (t == (time_t)-1)
        return -1;
    *epoch = (double)t;
    return 0;
}

int dps_parse_retry_after(const char *value, size_t len, double now, double *seconds)
{
    char buf[DPS_TIME_MAX_HEADER + 1];
    double v = 0, date;
    size_t i;

    if (copy_trimmed(value, len, buf) != 0)
        return -1;
    if (buf[0] >= '0' && buf[0] <= '9') {
        for (i = 0; buf[i] != '\0'; i++) {
            if (buf[i] < '0' || buf[i] > '9')
                return -1;
            if (v < MAX_DELAY)
                v = v * 10 + (buf[i] - '0');
        }
        *seconds = v < MAX_DELAY ? v : MAX_DELAY;
        return 0;
    }
    if (dps_parse_http_date(buf, strlen(buf), &date) != 0)
        return -1;
    v = date - now;
    *seconds = v <= 0 ? 0 : (v < MAX_DELAY ? v : MAX_DELAY);
    return 0;
}

static double clock_seconds(clockid_t id)
{
    struct timespec ts;

    if (clock_gettime(id, &ts) != 0)
        return 0;
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/***
 * Wall-clock time.
 * @function now
 * @treturn number seconds since the epoch, with fractions
 */
static int time_now(lua_State *L)
{
    lua_pushnumber(L, clock_seconds(CLOCK_REALTIME));
    return 1;
}

/***
 * A monotonic clock for deadlines: never jumps when the wall clock is set.
 * @function monotime
 * @treturn number seconds from an arbitrary origin
 */
static int time_monotime(lua_State *L)
{
    lua_pushnumber(L, clock_seconds(CLOCK_MONOTONIC));
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
    req.tv_nsec = (long)((s - floor(s)) * 1e9);
    while (nanosleep(&req, &rem) != 0 && errno == EINTR)
        req = rem;
    return 0;
}

/***
 * Parse a Retry-After value.
 * @function retry_after
 * @tparam string value the header value
 * @tparam[opt] number now wall-clock seconds for the HTTP-date form (default: now)
 * @treturn number|nil seconds to wait (0 for a past date, capped at 1e9), or nil when unparseable
 */
static int time_retry_after(lua_State *L)
{
    size_t len;
    const char *v = luaL_checklstring(L, 1, &len);
    double now = luaL_optnumber(L, 2, clock_seconds(CLOCK_REALTIME));
    double seconds;

    if (dps_parse_retry_after(v, len, now, &seconds) != 0)
        lua_pushnil(L);
    else
        lua_pushnumber(L, seconds);
    return 1;
}

/***
 * Parse an HTTP-date (the Date header).
 * @function http_date
 * @tparam string value
 * @treturn number|nil seconds since the epoch, or nil
 */
static int time_http_date(lua_State *L)
{
    size_t len;
    const char *v = luaL_checklstring(L, 1, &len);
    double epoch;

    if (dps_parse_http_date(v, len, &epoch) != 0)
        lua_pushnil(L);
    else
        lua_pushnumber(L, epoch);
    return 1;
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
        r = (unsigned int)(clock_seconds(CLOCK_MONOTONIC) * 1e6);
    lua_pushnumber(L, lo + (hi - lo) * ((double)r / 4294967295.0));
    return 1;
}

/* The functions this file adds to dps.core. */
static const luaL_Reg time_functions[] = {
    {"now", time_now}, {"monotime", time_monotime},
    {"sleep", time_sleep}, {"retry_after", time_retry_after},
    {"http_date", time_http_date}, {"jitter", time_jitter},
    {NULL, NULL}
};

void dps_open_time(lua_State *L)
{
    luaL_setfuncs(L, time_functions, 0);
}
