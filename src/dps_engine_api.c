/*
 * The methods of the transfer engine (see dps_engine.c): request, step,
 * run, take, cancel, stats, close.
 * @module dps.core
 */
#include <math.h>
#include <string.h>

#include <curl/curl.h>

#include "dps_aux.h"
#include "dps_core.h"
#include "dps_engine.h"

/* Argument 1 as an engine (an open one unless closed_ok). */
static dps_engine *check_engine(lua_State *L, int closed_ok)
{
    dps_engine *e = (dps_engine *)luaL_checkudata(L, 1, DPS_ENGINE_MT);
    if (!closed_ok && e->multi == NULL)
        luaL_argerror(L, 1, "engine is closed");
    return e;
}

/* Argument 2 as the id of a transfer (a running one only when busy_ok). */
static dps_slot *check_id(lua_State *L, dps_engine *e, int busy_ok)
{
    lua_Integer id = luaL_checkinteger(L, 2);
    dps_slot *sl;

    if (id < 1 || id > e->nslots || e->slots[id - 1].state == DPS_SLOT_FREE)
        luaL_argerror(L, 2, "no such transfer");
    sl = &e->slots[id - 1];
    if (!busy_ok && sl->state == DPS_SLOT_BUSY)
        luaL_argerror(L, 2, "the transfer is still running");
    return sl;
}

/***
 * Closes the engine: every transfer in flight is dropped, every connection
 * closed, every buffer freed.  Also `__gc` and (Lua 5.4) `__close`; closing
 * twice is harmless.
 * @function Engine:close
 * @treturn boolean `true`
 */
static int engine_close(lua_State *L)
{
    dps_engine_release(check_engine(L, 1));
    lua_pushboolean(L, 1);
    return 1;
}

static int engine_tostring(lua_State *L)
{
    dps_engine *e = check_engine(L, 1);

    if (e->multi != NULL)
        lua_pushfstring(L, DPS_ENGINE_MT ": %p, %d of %d slots running", (void *)e, e->busy, e->nslots);
    else
        lua_pushliteral(L, DPS_ENGINE_MT " (closed)");
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Transfers                                                                 */

/***
 * Starts a request; it runs as `step` or `run` drive the engine.
 * @function Engine:request
 * @tparam string method `"GET"`, `"PUT"`, `"POST"` or `"DELETE"`
 * @tparam string url an `https://` URL
 * @tparam[opt] table headers name → string value; `Content-Length`,
 *   `Transfer-Encoding` and `Expect` are managed by the engine
 * @tparam[opt] string|table body PUT and POST only: a string, sent with its
 *   exact length (copied); or a range of an open file, `{ file = f (from
 *   io.open), offset = n, length = n }` (whole numbers of bytes, the
 *   length below 2 GiB), read as it is sent, a buffer at a time (never
 *   whole in memory), through a descriptor of the transfer's own: `f` may
 *   be closed once this returns.
 *   A file that ends before the range does, or cannot be read, fails the
 *   transfer with kind `config` (`"cannot read the body's file: …"`)
 * @tparam[opt] number timeout seconds for this request (default: the
 *   engine's `timeout`); the connect timeout is the smaller of this and
 *   `connect_timeout`
 * @treturn integer the transfer's id, for `take` and `cancel`
 * @return[2] nil, message, info as `take`'s failures
 * @raise on a closed engine, an unknown method, a URL that is not a string
 *   or is empty or holds spaces or control characters, bad header names or
 *   values (CR, LF, NUL), a body on GET or DELETE, a body that is neither
 *   a string nor a range of an open file (a closed one, an offset or
 *   length that is not a whole number >= 0, a length of 2 GiB or more), a
 *   timeout that is not a positive number, and when every slot is busy or
 *   holds a result not yet taken
 */
static int engine_request(lua_State *L)
{
    dps_engine *e = check_engine(L, 0);
    dps_request r;
    dps_slot *sl = NULL;
    CURLcode rc;
    int i;

    for (i = 0; i < e->nslots && sl == NULL; i++)
        if (e->slots[i].state == DPS_SLOT_FREE)
            sl = &e->slots[i];
    if (sl == NULL)
        luaL_argerror(L, 1, "no free slot: take or cancel finished transfers first");
    dps_http_check_request(L, &sl->t, &r);
    rc = dps_http_prepare(L, &sl->t, &r);
    if (rc == CURLE_OK && curl_multi_add_handle(e->multi, sl->t.curl) != CURLM_OK)
        rc = CURLE_OUT_OF_MEMORY;
    if (rc != CURLE_OK) {
        dps_http_finish(&sl->t);
        return dps_http_push_result(L, &sl->t, rc);
    }
    sl->state = DPS_SLOT_BUSY;
    e->busy++;
    lua_pushinteger(L, (lua_Integer)(sl - e->slots) + 1);
    return 1;
}

/* Pushes the ids finished since the last report, as an array. */
static void push_done(lua_State *L, dps_engine *e)
{
    int i;
    lua_createtable(L, e->ndone, 0);
    for (i = 0; i < e->ndone; i++) {
        lua_pushinteger(L, (lua_Integer)e->done[i]);
        lua_rawseti(L, -2, i + 1);
    }
    e->ndone = 0;
}

/* Pushes seconds until libcurl's timer is due (nil: none). */
static void push_wait(lua_State *L, const dps_engine *e)
{
    if (e->timer_at < 0) {
        lua_pushnil(L);
    } else {
        double wait = e->timer_at - dps_clock(CLOCK_MONOTONIC);
        lua_pushnumber(L, wait > 0 ? wait : 0);
    }
}

/***
 * Does what can be done now, without blocking.
 * @function Engine:step
 * @treturn number|nil seconds after which to call `step` again (nil: only a
 *   socket of the table can make progress, or nothing is in flight)
 * @treturn table sockets to watch: file descriptor → `"r"`, `"w"` or `"rw"`
 * @treturn table ids of the transfers finished since the last `step` or
 *   `run` (read each with `take`)
 * @raise on a closed engine
 */
static int engine_step(lua_State *L)
{
    dps_engine *e = check_engine(L, 0);
    int i;

    dps_engine_drive(e);
    push_wait(L, e);
    lua_createtable(L, 0, e->nwatch);
    for (i = 0; i < e->nwatch; i++) {
        short ev = e->watch[i].events;
        if (ev == 0)
            continue;
        lua_pushstring(L, ev == (POLLIN | POLLOUT) ? "rw" : ev == POLLIN ? "r" : "w");
        lua_rawseti(L, -2, (int)e->watch[i].fd);
    }
    push_done(L, e);
    return 3;
}

/***
 * Drives the transfers, blocking, until one finishes or `timeout` seconds
 * pass.
 * @function Engine:run
 * @tparam[opt] number timeout seconds (default: until a transfer finishes)
 * @treturn table ids of the transfers finished since the last `step` or `run`
 * @raise on a closed engine or a timeout that is not a number >= 0
 */
static int engine_run(lua_State *L)
{
    dps_engine *e = check_engine(L, 0);
    double timeout = luaL_optnumber(L, 2, HUGE_VAL);
    double deadline;

    if (!(timeout >= 0))
        luaL_argerror(L, 2, "timeout must be a number >= 0");
    deadline = dps_clock(CLOCK_MONOTONIC) + timeout;
    for (;;) {
        double now, wait;
        dps_engine_drive(e);
        if (e->ndone > 0 || e->busy == 0)
            break;
        now = dps_clock(CLOCK_MONOTONIC);
        wait = deadline - now;
        if (e->timer_at >= 0 && e->timer_at - now < wait)
            wait = e->timer_at - now;
        if (deadline <= now)
            break;
        if (wait > 0)
            dps_engine_await(e, wait);
    }
    push_done(L, e);
    return 1;
}

/***
 * The result of a finished transfer; frees its slot.
 * @function Engine:take
 * @tparam integer id from `request`
 * @treturn integer HTTP status (a status of 400 or more is a response, not a failure)
 * @treturn string the header lines of the final response, each ending in
 *   `"\n"` (no status line, no 1xx or proxy responses, no trailers), as
 *   received: `dps.headers.parse` makes them a table
 * @treturn string response body
 * @return[2] nil
 * @return[2] string message `"WHAT FAILED: DETAIL (CURLE_NAME n)"`, e.g.
 *   `"could not connect: … (CURLE_COULDNT_CONNECT 7)"`; never holds secrets
 * @return[2] table `{ kind = …, curl_code = n }`, kind one of `resolve`,
 *   `proxy`, `connect`, `tls`, `credentials`, `timeout`, `too_large`,
 *   `network`, `protocol`, `config`, `oom`
 * @raise on an id that names no transfer, or one still running
 */
static int engine_take(lua_State *L)
{
    dps_engine *e = check_engine(L, 0);
    dps_slot *sl = check_id(L, e, 0);

    lua_settop(L, 2);
    luaL_checkstack(L, 8, "take");
    sl->state = DPS_SLOT_FREE;
    return dps_http_push_result(L, &sl->t, sl->result);
}

/***
 * Drops a transfer, running or finished; frees its slot.
 * @function Engine:cancel
 * @tparam integer id from `request`
 * @treturn boolean `true`
 * @raise on an id that names no transfer
 */
static int engine_cancel(lua_State *L)
{
    dps_engine *e = check_engine(L, 0);
    dps_slot *sl = check_id(L, e, 1);
    int i;

    if (sl->state == DPS_SLOT_BUSY) {
        curl_multi_remove_handle(e->multi, sl->t.curl);
        dps_http_finish(&sl->t);
        e->busy--;
    }
    for (i = 0; i < e->ndone; i++)
        if (e->done[i] == (int)(sl - e->slots) + 1)
            e->done[i] = e->done[--e->ndone];
    sl->state = DPS_SLOT_FREE;
    lua_pushboolean(L, 1);
    return 1;
}

/***
 * Counters of the engine.
 * @function Engine:stats
 * @treturn table `{ requests, connects, running, free, slots }`: transfers
 *   finished, new connections made, transfers in flight, free slots
 * @raise on a closed engine
 */
static int engine_stats(lua_State *L)
{
    dps_engine *e = check_engine(L, 0);
    double requests = 0, connects = 0;
    int i, free_slots = 0;

    for (i = 0; i < e->nslots; i++) {
        requests += e->slots[i].t.requests;
        connects += e->slots[i].t.connects;
        free_slots += e->slots[i].state == DPS_SLOT_FREE;
    }
    lua_createtable(L, 0, 5);
    dps_set_integer(L, "requests", (lua_Integer)requests);
    dps_set_integer(L, "connects", (lua_Integer)connects);
    dps_set_integer(L, "running", (lua_Integer)e->busy);
    dps_set_integer(L, "free", (lua_Integer)free_slots);
    dps_set_integer(L, "slots", (lua_Integer)e->nslots);
    return 1;
}

static const luaL_Reg engine_meta[] = {
    {"__gc", engine_close},
#if LUA_VERSION_NUM >= 504
    {"__close", engine_close},
#endif
    {"__tostring", engine_tostring},
    {NULL, NULL},
};

static const luaL_Reg engine_methods[] = {
    {"request", engine_request},
    {"step", engine_step},
    {"run", engine_run},
    {"take", engine_take},
    {"cancel", engine_cancel},
    {"stats", engine_stats},
    {"close", engine_close},
    {NULL, NULL},
};

void dps_open_engine(lua_State *L)
{
    /* The metatable is refilled on every luaopen (busted reloads modules):
     * the same functions each time. */
    luaL_newmetatable(L, DPS_ENGINE_MT);
    luaL_setfuncs(L, engine_meta, 0);
    lua_pushliteral(L, DPS_ENGINE_MT);
    lua_setfield(L, -2, "__name");
    lua_newtable(L);
    luaL_setfuncs(L, engine_methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);

    lua_pushcfunction(L, dps_engine_new);
    lua_setfield(L, -2, "engine");
}
