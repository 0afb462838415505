/***
 * The transfer engine of `dps.core`, its one HTTPS client: requests in
 * flight at once on libcurl's multi interface, one connection pool (kept-alive
 * connections), TLS sessions shared between connections (libcurl's share
 * interface), so a new connection resumes instead of a full handshake.
 *
 * It never blocks unless asked to: `step()` does what can be done now and
 * says when it wants to be called again and which sockets to watch, as
 * libcurl's socket and timer callbacks recorded them (in C: no Lua runs
 * inside a libcurl callback).  `run(timeout)` blocks until a transfer ends.
 * With one slot it is the blocking session of a device (`dps.session`):
 * one easy handle and one kept-alive TLS connection for a registration and
 * all of its polls.
 *
 * Each slot is a transfer (`dps_transfer` of dps_http.h): a libcurl easy
 * handle with its callbacks, buffers, options and security settings.
 * @module dps.core
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "dps_aux.h"
#include "dps_core.h"
#include "dps_engine.h"
#include "dps_http_options.h"

#define SLOTS_MAX 1024
#define SLOTS_DEFAULT 8
/* Longest single wait of run(), in seconds: it looks at the clock again at
 * least once a second, as curl_easy_perform does.  A process stopped in a
 * wait and continued after its deadline then ends within a second even
 * where poll() restarts with its whole timeout (qemu-user does). */
#define WAIT_MAX 1.0

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
    e->timer_at = timeout_ms < 0 ? -1.0 : dps_clock(CLOCK_MONOTONIC) + (double)timeout_ms / 1000.0;
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
        dps_slot *sl;
        CURL *easy = msg->easy_handle;
        CURLcode result = msg->data.result;
        if (msg->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
        sl = (dps_slot *)(void *)priv;
        curl_multi_remove_handle(e->multi, easy);
        dps_http_finish(&sl->t);
        sl->result = result;
        sl->state = DPS_SLOT_DONE;
        e->busy--;
        e->done[e->ndone++] = (int)(sl - e->slots) + 1;
    }
}

void dps_engine_drive(dps_engine *e)
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
        if (e->timer_at >= 0 && dps_clock(CLOCK_MONOTONIC) >= e->timer_at) {
            e->timer_at = -1.0;
            curl_multi_socket_action(e->multi, CURL_SOCKET_TIMEOUT, 0, &running);
            acted = 1;
        }
        collect(e);
        if (!acted)
            break;
    }
}

void dps_engine_await(dps_engine *e, double seconds)
{
    int n = e->nwatch;
    int ms = (int)dps_http_ms(seconds > WAIT_MAX ? WAIT_MAX : seconds);

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

void dps_engine_release(dps_engine *e)
{
    int i;

    if (e->slots != NULL) {
        for (i = 0; i < e->nslots; i++) {
            if (e->slots[i].state == DPS_SLOT_BUSY && e->multi != NULL && e->slots[i].t.curl != NULL)
                curl_multi_remove_handle(e->multi, e->slots[i].t.curl);
            dps_transfer_release(&e->slots[i].t);
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

/* The multi handle, the share, their settings and the engine's arrays: 0,
 * or -1 when libcurl or memory failed (nothing else can). */
static int setup_multi(dps_engine *e)
{
    e->multi = curl_multi_init();
    e->share = curl_share_init();
    if (e->multi == NULL || e->share == NULL
        || curl_share_setopt(e->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) != CURLSHE_OK
        || curl_share_setopt(e->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) != CURLSHE_OK
        || curl_multi_setopt(e->multi, CURLMOPT_SOCKETFUNCTION, socket_cb) != CURLM_OK
        || curl_multi_setopt(e->multi, CURLMOPT_SOCKETDATA, (void *)e) != CURLM_OK
        || curl_multi_setopt(e->multi, CURLMOPT_TIMERFUNCTION, timer_cb) != CURLM_OK
        || curl_multi_setopt(e->multi, CURLMOPT_TIMERDATA, (void *)e) != CURLM_OK
        || curl_multi_setopt(e->multi, CURLMOPT_MAXCONNECTS, (long)e->nslots) != CURLM_OK
        || curl_multi_setopt(e->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)e->nslots) != CURLM_OK)
        return -1;
    e->slots = calloc((size_t)e->nslots, sizeof *e->slots);
    e->done = calloc((size_t)e->nslots, sizeof *e->done);
    return e->slots == NULL || e->done == NULL || grow_watch(e) != 0 ? -1 : 0;
}

/* Slot i: a transfer handle with the options, the share and its id. */
static void setup_slot(lua_State *L, dps_engine *e, int i, const void *opts)
{
    dps_transfer *t = &e->slots[i].t;
    CURLoption what = DPS_NO_OPTION;
    CURLcode rc = dps_transfer_init(t, &what);

    if (rc == CURLE_OK) {
        what = CURLOPT_SHARE;
        rc = curl_easy_setopt(t->curl, CURLOPT_SHARE, e->share);
    }
    if (rc == CURLE_OK) {
        what = CURLOPT_PRIVATE;
        rc = curl_easy_setopt(t->curl, CURLOPT_PRIVATE, (void *)&e->slots[i]);
    }
    if (rc == CURLE_OK)
        rc = dps_http_options_apply(t, opts, &what);
    if (rc != CURLE_OK)
        dps_http_refused(L, what, rc); /* the engine's __gc releases the slots */
}

/***
 * Creates a transfer engine.
 * @function engine
 * @tparam[opt] table options for every transfer
 * @tparam[opt] string options.ca_file PEM bundle of trusted CAs; it takes the
 *   place of libcurl's default bundle (a default CA directory built into
 *   libcurl, as on Debian, stays in use).  Without it and `ca_path`:
 *   libcurl's default bundle, alone where it has one and keeps CA stores
 *   (OpenSSL, 7.87.0 on), so that it is parsed once per engine, not once per
 *   connection (docs/security.md); else libcurl's default trust.
 * @tparam[opt] string options.ca_path directory of hashed CA certificates
 * @tparam[opt=10] number options.connect_timeout seconds (fractions allowed, > 0)
 * @tparam[opt=30] number options.timeout seconds per request (> 0)
 * @tparam[opt] string options.proxy `"http://host:port"`, used through HTTP CONNECT
 *   for every host; without it the connection is direct (proxy environment
 *   variables, `NO_PROXY` included, are ignored either way)
 * @tparam[opt] string options.user_agent default `"lua-azure-dps/VERSION"`
 * @tparam[opt=1048576] number options.max_body response body limit in bytes (> 0)
 * @tparam[opt] string options.cert_file client certificate, PEM file
 * @tparam[opt] string options.key_file client private key, PEM file
 * @tparam[opt] string options.key_password pass phrase of an encrypted key
 * @tparam[opt] string options.cert client certificate, PEM text
 * @tparam[opt] string options.key client private key, PEM text
 * @tparam[opt=8] integer slots transfers in flight at once (1 to 1024); also
 *   the most connections kept open
 * @treturn Engine
 * @raise on slots out of range; on an unknown option, a wrong type, a
 *   non-positive number, an empty string or one with NUL bytes, a
 *   `user_agent` with CR or LF, a `proxy` with spaces or control
 *   characters, a PEM text over 1 MiB, conflicting options (`cert` with
 *   `cert_file`, `key` with `key_file`, a key or password without a
 *   certificate, a proxy that is not `http://`), or an option this libcurl
 *   cannot honour.
 */
int dps_engine_new(lua_State *L)
{
    lua_Integer n = luaL_optinteger(L, 2, SLOTS_DEFAULT);
    const void *opts;
    dps_engine *e;
    int i;

    if (n < 1 || n > SLOTS_MAX)
        luaL_argerror(L, 2, "slots must be an integer from 1 to 1024");
    opts = dps_http_options_read(L);
    e = (dps_engine *)dps_newuserdata(L, sizeof *e);
    memset(e, 0, sizeof *e);
    e->timer_at = -1.0;
    luaL_setmetatable(L, DPS_ENGINE_MT);
    e->nslots = (int)n;
    if (setup_multi(e) != 0) {
        dps_engine_release(e);
        return luaL_error(L, "dps.core.engine: cannot set up libcurl's multi interface (out of memory)");
    }
    for (i = 0; i < e->nslots; i++)
        setup_slot(L, e, i, opts); /* a raise leaves the rest to __gc */
    return 1;
}
