/***
 * The transfer engine of `dps.core`: many HTTPS requests in flight at once
 * on libcurl's multi interface, one connection pool (kept-alive
 * connections), TLS sessions shared between connections (libcurl's share
 * interface), so a new connection resumes instead of a full handshake.
 *
 * It never blocks unless asked to: `step()` does what can be done now and
 * says when it wants to be called again and which sockets to watch, as
 * libcurl's socket and timer callbacks recorded them (in C: no Lua runs
 * inside a libcurl callback).  `run(timeout)` blocks until a transfer ends.
 *
 * Each slot is a session transfer (`dps_session` of dps_http.h): the same
 * callbacks, buffers, options, security settings and failure kinds as
 * `core.session`.
 * @module dps.core
 */
#include <math.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "dps_aux.h"
#include "dps_core.h"
#include "dps_http.h"

#define DPS_ENGINE_MT "dps.core.Engine"
#define SLOTS_MAX 1024
#define SLOTS_DEFAULT 8
/* Longest single wait of run(), in seconds (poll takes an int of ms). */
#define WAIT_MAX 86400.0

enum { FREE, BUSY, DONE };

typedef struct {
    dps_session s; /* the transfer: handle, buffers, flags */
    int state;     /* FREE, BUSY (in the multi) or DONE (result unread) */
    CURLcode result;
} slot;

typedef struct {
    CURLM *multi;         /* NULL once closed */
    CURLSH *share;
    slot *slots;
    int nslots, busy;
    struct pollfd *watch; /* sockets libcurl wants watched */
    struct pollfd *ready; /* scratch copy for poll() */
    int nwatch, capwatch;
    int *done;            /* ids finished and not yet reported by step/run */
    int ndone;
    double timer_at;      /* monotonic seconds libcurl wants a timeout action; < 0: none */
} dps_engine;

static double monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------------------ */
/* libcurl's multi callbacks: C arrays only, never the Lua API               */

static int find_socket(const dps_engine *e, curl_socket_t fd)
{
    int i;
    for (i = 0; i < e->nwatch; i++)
        if (e->watch[i].fd == fd)
            return i;
    return -1;
}

/* Room for one more socket.  0, or -1 on OOM. */
static int grow_watch(dps_engine *e)
{
    int cap = e->capwatch > 0 ? e->capwatch * 2 : 16;
    struct pollfd *w, *r;

    if (e->nwatch < e->capwatch)
        return 0;
    w = realloc(e->watch, (size_t)cap * sizeof *w);
    if (w == NULL)
        return -1;
    e->watch = w;
    r = realloc(e->ready, (size_t)cap * sizeof *r);
    if (r == NULL)
        return -1;
    e->ready = r;
    e->capwatch = cap;
    return 0;
}

static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    dps_engine *e = userp;
    int i = find_socket(e, fd);

    (void)easy;
    (void)socketp;
    if (what == CURL_POLL_REMOVE) {
        if (i >= 0)
            e->watch[i] = e->watch[--e->nwatch];
        return 0;
    }
    if (i < 0) {
        if (grow_watch(e) != 0)
            return -1; /* libcurl fails the transfer */
        i = e->nwatch++;
        e->watch[i].fd = fd;
    }
    e->watch[i].events = (short)(((what & CURL_POLL_IN) ? POLLIN : 0) | ((what & CURL_POLL_OUT) ? POLLOUT : 0));
    e->watch[i].revents = 0;
    return 0;
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    dps_engine *e = userp;

    (void)multi;
    e->timer_at = timeout_ms < 0 ? -1.0 : monotonic() + (double)timeout_ms / 1000.0;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Driving the transfers                                                     */

/* Moves finished transfers out of the multi: their slots become DONE. */
static void collect(dps_engine *e)
{
    CURLMsg *msg;
    int left = 0;

    while ((msg = curl_multi_info_read(e->multi, &left)) != NULL) {
        char *priv = NULL;
        slot *sl;
        CURL *easy = msg->easy_handle;
        CURLcode result = msg->data.result;
        if (msg->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
        sl = (slot *)(void *)priv;
        curl_multi_remove_handle(e->multi, easy);
        dps_http_finish(&sl->s);
        sl->result = result;
        sl->state = DONE;
        e->busy--;
        e->done[e->ndone++] = (int)(sl - e->slots) + 1;
    }
}

/* One pass without blocking: ready sockets, then a due timeout. */
static void drive(dps_engine *e)
{
    int i, n, running = 0, rounds;

    for (rounds = 0; rounds < 8; rounds++) {
        int acted = 0;
        n = e->nwatch;
        if (n > 0) {
            memcpy(e->ready, e->watch, (size_t)n * sizeof *e->ready);
            if (poll(e->ready, (nfds_t)n, 0) > 0) {
                for (i = 0; i < n; i++) {
                    short rev = e->ready[i].revents;
                    int flags = ((rev & (POLLIN | POLLHUP)) ? CURL_CSELECT_IN : 0)
                                | ((rev & POLLOUT) ? CURL_CSELECT_OUT : 0)
                                | ((rev & (POLLERR | POLLNVAL)) ? CURL_CSELECT_ERR : 0);
                    if (flags != 0) {
                        curl_multi_socket_action(e->multi, e->ready[i].fd, flags, &running);
                        acted = 1;
                    }
                }
            }
        }
        if (e->timer_at >= 0 && monotonic() >= e->timer_at) {
            e->timer_at = -1.0;
            curl_multi_socket_action(e->multi, CURL_SOCKET_TIMEOUT, 0, &running);
            acted = 1;
        }
        collect(e);
        if (!acted)
            break;
    }
}

/* Blocks on the watched sockets for at most seconds (> 0). */
static void await(dps_engine *e, double seconds)
{
    int n = e->nwatch;
    int ms = (int)ceil((seconds > WAIT_MAX ? WAIT_MAX : seconds) * 1000.0);

    memcpy(e->ready, e->watch, (size_t)n * sizeof *e->ready);
    if (n > 0) {
        poll(e->ready, (nfds_t)n, ms);
    } else {
        struct timespec ts;
        ts.tv_sec = ms / 1000;
        ts.tv_nsec = (long)(ms % 1000) * 1000000L;
        nanosleep(&ts, NULL);
    }
}

/* ------------------------------------------------------------------------ */
/* Lifecycle                                                                 */

static void engine_release(dps_engine *e)
{
    int i;

    if (e->slots != NULL) {
        for (i = 0; i < e->nslots; i++) {
            if (e->slots[i].state == BUSY && e->multi != NULL && e->slots[i].s.curl != NULL)
                curl_multi_remove_handle(e->multi, e->slots[i].s.curl);
            dps_session_release(&e->slots[i].s);
        }
        free(e->slots);
        e->slots = NULL;
    }
    if (e->multi != NULL)
        curl_multi_cleanup(e->multi);
    e->multi = NULL;
    if (e->share != NULL)
        curl_share_cleanup(e->share);
    e->share = NULL;
    free(e->watch);
    free(e->ready);
    free(e->done);
    e->watch = e->ready = NULL;
    e->done = NULL;
    e->nwatch = e->capwatch = e->ndone = e->busy = e->nslots = 0;
}

/* The multi handle, the share and their settings.  NULL or what failed. */
static const char *setup_multi(dps_engine *e)
{
    e->multi = curl_multi_init();
    e->share = curl_share_init();
    if (e->multi == NULL || e->share == NULL)
        return "cannot create a libcurl multi or share handle";
    if (curl_share_setopt(e->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) != CURLSHE_OK
        || curl_share_setopt(e->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) != CURLSHE_OK)
        return "cannot share TLS sessions";
    if (curl_multi_setopt(e->multi, CURLMOPT_SOCKETFUNCTION, socket_cb) != CURLM_OK
        || curl_multi_setopt(e->multi, CURLMOPT_SOCKETDATA, (void *)e) != CURLM_OK
        || curl_multi_setopt(e->multi, CURLMOPT_TIMERFUNCTION, timer_cb) != CURLM_OK
        || curl_multi_setopt(e->multi, CURLMOPT_TIMERDATA, (void *)e) != CURLM_OK
        || curl_multi_setopt(e->multi, CURLMOPT_MAXCONNECTS, (long)e->nslots) != CURLM_OK
        || curl_multi_setopt(e->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)e->nslots) != CURLM_OK)
        return "cannot set the multi handle's callbacks";
    e->slots = calloc((size_t)e->nslots, sizeof *e->slots);
    e->done = calloc((size_t)e->nslots, sizeof *e->done);
    if (e->slots == NULL || e->done == NULL || grow_watch(e) != 0)
        return "out of memory";
    return NULL;
}

/* Slot i: a session transfer with the options, the share and its id. */
static void setup_slot(lua_State *L, dps_engine *e, int i, const void *opts)
{
    dps_session *s = &e->slots[i].s;
    const char *what = "";
    CURLcode rc = dps_session_init(s, &what);

    if (rc == CURLE_OK) {
        what = "CURLOPT_SHARE";
        rc = curl_easy_setopt(s->curl, CURLOPT_SHARE, e->share);
    }
    if (rc == CURLE_OK) {
        what = "CURLOPT_PRIVATE";
        rc = curl_easy_setopt(s->curl, CURLOPT_PRIVATE, (void *)&e->slots[i]);
    }
    if (rc != CURLE_OK)
        luaL_error(L, "dps.core.engine: cannot set %s (%s, %d)", what, curl_easy_strerror(rc), (int)rc);
    dps_http_options_apply(L, "dps.core.engine", s, opts);
}

/***
 * Creates a transfer engine.
 * @function engine
 * @tparam[opt] table options the options of `session` (TLS files, timeouts,
 *   proxy, user agent, max_body, client certificate), for every transfer
 * @tparam[opt=8] integer slots transfers in flight at once (1 to 1024); also
 *   the most connections kept open
 * @treturn Engine
 * @raise as `session` on its options; on slots out of range
 */
static int engine_new(lua_State *L)
{
    lua_Integer n = luaL_optinteger(L, 2, SLOTS_DEFAULT);
    const void *opts;
    dps_engine *e;
    const char *problem;
    int i;

    if (n < 1 || n > SLOTS_MAX)
        luaL_argerror(L, 2, "slots must be an integer from 1 to 1024");
    opts = dps_http_options_read(L);
    e = (dps_engine *)dps_newuserdata(L, sizeof *e);
    memset(e, 0, sizeof *e);
    e->timer_at = -1.0;
    luaL_setmetatable(L, DPS_ENGINE_MT);
    e->nslots = (int)n;
    problem = setup_multi(e);
    if (problem != NULL) {
        engine_release(e);
        return luaL_error(L, "dps.core.engine: %s", problem);
    }
    for (i = 0; i < e->nslots; i++)
        setup_slot(L, e, i, opts); /* a raise leaves the rest to __gc */
    return 1;
}

static dps_engine *check_engine(lua_State *L)
{
    return (dps_engine *)luaL_checkudata(L, 1, DPS_ENGINE_MT);
}

static dps_engine *check_open(lua_State *L)
{
    dps_engine *e = check_engine(L);
    if (e->multi == NULL)
        luaL_argerror(L, 1, "engine is closed");
    return e;
}

/* Argument 2 as the id of a transfer (a running one only when busy_ok). */
static slot *check_id(lua_State *L, dps_engine *e, int busy_ok)
{
    lua_Integer id = luaL_checkinteger(L, 2);
    slot *sl;

    if (id < 1 || id > e->nslots || e->slots[id - 1].state == FREE)
        luaL_argerror(L, 2, "no such transfer");
    sl = &e->slots[id - 1];
    if (!busy_ok && sl->state == BUSY)
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
    engine_release(check_engine(L));
    lua_pushboolean(L, 1);
    return 1;
}

static int engine_tostring(lua_State *L)
{
    dps_engine *e = check_engine(L);
    if (e->multi == NULL)
        lua_pushliteral(L, DPS_ENGINE_MT " (closed)");
    else
        lua_pushfstring(L, DPS_ENGINE_MT ": %p", (void *)e);
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Transfers                                                                 */

/***
 * Starts a request; it runs as `step` or `run` drive the engine.
 * @function Engine:request
 * @tparam string method `"GET"`, `"PUT"` or `"POST"`
 * @tparam string url, headers, body, timeout as `Session:request` (the body
 *   is copied)
 * @treturn integer the transfer's id, for `take` and `cancel`
 * @return[2] nil, message, info as `Session:request`'s failures
 * @raise as `Session:request`, and when every slot is busy or holds a
 *   result not yet taken
 */
static int engine_request(lua_State *L)
{
    dps_engine *e = check_open(L);
    dps_request r;
    slot *sl = NULL;
    CURLcode rc;
    int i;

    for (i = 0; i < e->nslots && sl == NULL; i++)
        if (e->slots[i].state == FREE)
            sl = &e->slots[i];
    if (sl == NULL)
        luaL_argerror(L, 1, "no free slot: take or cancel finished transfers first");
    dps_http_check_request(L, &sl->s, &r);
    r.copy_body = 1;
    rc = dps_http_prepare(L, &sl->s, &r);
    if (rc == CURLE_OK && curl_multi_add_handle(e->multi, sl->s.curl) != CURLM_OK)
        rc = CURLE_OUT_OF_MEMORY;
    if (rc != CURLE_OK) {
        dps_http_finish(&sl->s);
        return dps_http_push_result(L, &sl->s, rc);
    }
    sl->state = BUSY;
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
        double wait = e->timer_at - monotonic();
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
    dps_engine *e = check_open(L);
    int i;

    drive(e);
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
    dps_engine *e = check_open(L);
    double timeout = luaL_optnumber(L, 2, HUGE_VAL);
    double deadline;

    if (!(timeout >= 0))
        luaL_argerror(L, 2, "timeout must be a number >= 0");
    deadline = monotonic() + timeout;
    for (;;) {
        double now, wait;
        drive(e);
        if (e->ndone > 0 || e->busy == 0)
            break;
        now = monotonic();
        wait = deadline - now;
        if (e->timer_at >= 0 && e->timer_at - now < wait)
            wait = e->timer_at - now;
        if (deadline <= now)
            break;
        if (wait > 0)
            await(e, wait);
    }
    push_done(L, e);
    return 1;
}

/***
 * The result of a finished transfer; frees its slot.
 * @function Engine:take
 * @tparam integer id from `request`
 * @return as `Session:request`: status, headers, body, or nil, message, info
 * @raise on an id that names no transfer, or one still running
 */
static int engine_take(lua_State *L)
{
    dps_engine *e = check_open(L);
    slot *sl = check_id(L, e, 0);

    lua_settop(L, 2);
    luaL_checkstack(L, 8, "take");
    sl->state = FREE;
    return dps_http_push_result(L, &sl->s, sl->result);
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
    dps_engine *e = check_open(L);
    slot *sl = check_id(L, e, 1);
    int i;

    if (sl->state == BUSY) {
        curl_multi_remove_handle(e->multi, sl->s.curl);
        dps_http_finish(&sl->s);
        e->busy--;
    }
    for (i = 0; i < e->ndone; i++)
        if (e->done[i] == (int)(sl - e->slots) + 1)
            e->done[i] = e->done[--e->ndone];
    sl->state = FREE;
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
    dps_engine *e = check_open(L);
    double requests = 0, connects = 0;
    int i, free_slots = 0;

    for (i = 0; i < e->nslots; i++) {
        requests += e->slots[i].s.requests;
        connects += e->slots[i].s.connects;
        free_slots += e->slots[i].state == FREE;
    }
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, (lua_Integer)requests);
    lua_setfield(L, -2, "requests");
    lua_pushinteger(L, (lua_Integer)connects);
    lua_setfield(L, -2, "connects");
    lua_pushinteger(L, (lua_Integer)e->busy);
    lua_setfield(L, -2, "running");
    lua_pushinteger(L, (lua_Integer)free_slots);
    lua_setfield(L, -2, "free");
    lua_pushinteger(L, (lua_Integer)e->nslots);
    lua_setfield(L, -2, "slots");
    return 1;
}

void dps_open_engine(lua_State *L)
{
    static const luaL_Reg meta[] = {
        {"__gc", engine_close},
#if LUA_VERSION_NUM >= 504
        {"__close", engine_close},
#endif
        {"__tostring", engine_tostring},
        {NULL, NULL}
    };
    static const luaL_Reg methods[] = {
        {"request", engine_request}, {"step", engine_step}, {"run", engine_run},
        {"take", engine_take}, {"cancel", engine_cancel}, {"stats", engine_stats},
        {"close", engine_close}, {NULL, NULL}
    };

    luaL_newmetatable(L, DPS_ENGINE_MT);
    luaL_setfuncs(L, meta, 0);
    lua_pushliteral(L, DPS_ENGINE_MT);
    lua_setfield(L, -2, "__name");
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);

    lua_pushcfunction(L, engine_new);
    lua_setfield(L, -2, "engine");
}
