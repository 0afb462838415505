/*
 * One HTTPS transfer slot of the engine (dps_engine.c): a libcurl easy
 * handle kept for every request of the slot, its response buffers and
 * callbacks, the checks of a request's arguments and the shape of its
 * result.  TLS peer and host-name verification are always on, only `https`
 * URLs are accepted, redirects are not followed.
 */
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "dps_aux.h"
#include "dps_crypto.h"
#include "dps_headers.h"
#include "dps_http.h"

/* Buffers larger than this are released after each request. */
#define BUF_KEEP 65536
/* Longest timeout handed to libcurl, in milliseconds (about 24.8 days). */
#define TIMEOUT_MAX_MS 2147483647.0

/* ------------------------------------------------------------------------ */
/* Buffers (no Lua API here: used from libcurl callbacks)                    */

static void buf_release(dps_buf *b)
{
    if (b->data != NULL) {
        dps_wipe(b->data, b->cap);
        free(b->data);
    }
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

/* Empties the buffer, releasing it when it grew large. */
static void buf_reset(dps_buf *b)
{
    if (b->cap > BUF_KEEP)
        buf_release(b);
    b->len = 0;
}

/* Appends n bytes.  Returns 0, -1 when len would exceed limit, -2 on OOM. */
static int buf_append(dps_buf *b, const char *p, size_t n, size_t limit)
{
    if (n > limit || b->len > limit - n)
        return -1;
    if (b->len + n > b->cap) {
        size_t want = b->len + n;
        size_t cap = b->cap > 0 ? b->cap : 4096;
        char *data;
        while (cap < want) {
            if (cap > limit / 2) {
                cap = limit;
                break;
            }
            cap *= 2;
        }
        if (cap > limit)
            cap = limit; /* still >= want, as want <= limit */
        data = realloc(b->data, cap);
        if (data == NULL)
            return -2;
        b->data = data;
        b->cap = cap;
    }
    if (n > 0)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* libcurl callbacks: C buffers only, never the Lua API                      */

/* Whether an append (rc of buf_append) lets the transfer go on; when not,
 * flags why: *overflow for a limit, t->oom for memory. */
static int appended(dps_transfer *t, int rc, int *overflow)
{
    if (rc == -1)
        *overflow = 1;
    else if (rc == -2)
        t->oom = 1;
    return rc == 0;
}

static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    dps_transfer *t = userdata;
    size_t n = size * nmemb;

    return appended(t, buf_append(&t->body, ptr, n, t->max_body), &t->body_overflow) ? n : 0;
}

static size_t header_cb(char *ptr, size_t size, size_t nitems, void *userdata)
{
    dps_transfer *t = userdata;
    size_t n = size * nitems;
    size_t len = 0;
    int rc;

    /* Every line counts against the cap, the ones not kept too: a server
     * must not stream endless trailers or 1xx responses. */
    if (n > DPS_HEAD_MAX || t->head_seen > DPS_HEAD_MAX - n) {
        t->head_overflow = 1;
        return 0;
    }
    t->head_seen += n;
    switch (dps_headers_line(&t->head_done, ptr, n, &len)) {
    case DPS_HEADERS_RESET:
        t->head.len = 0;
        return n;
    case DPS_HEADERS_SKIP:
        return n;
    default:
        break;
    }
    rc = buf_append(&t->head, ptr, len, DPS_HEAD_MAX);
    if (rc == 0)
        rc = buf_append(&t->head, "\n", 1, DPS_HEAD_MAX);
    return appended(t, rc, &t->head_overflow) ? n : 0;
}

/* ------------------------------------------------------------------------ */
/* Lifecycle                                                                 */

void dps_transfer_release(dps_transfer *t)
{
    if (t->curl != NULL) {
        curl_easy_cleanup(t->curl);
        t->curl = NULL;
    }
    if (t->headers != NULL) {
        dps_http_free_headers(t->headers);
        t->headers = NULL;
    }
    dps_http_body_done(t);
    buf_release(&t->body);
    buf_release(&t->head);
    dps_wipe(t->errbuf, sizeof t->errbuf);
}

/* The settings every handle gets, whatever its options and whoever drives
 * it: https only, no redirects, peer and host verified, TLS 1.2 or newer, no
 * signals, no TLS key log whatever SSLKEYLOGFILE says, and a timed-out name
 * lookup that does not hold the transfer (CURLOPT_QUICK_EXIT).  On failure
 * *what is the option libcurl refused. */
static CURLcode secure_handle(CURL *curl, CURLoption *what)
{
    /* The libcurl defaults among them asserted: peer and host name are
     * verified; redirects are not followed. */
    static const struct {
        CURLoption opt;
        long value;
    } fixed[] = {
        {CURLOPT_NOSIGNAL, 1L},
        {CURLOPT_FOLLOWLOCATION, 0L},
        {CURLOPT_SSL_VERIFYPEER, 1L},
        {CURLOPT_SSL_VERIFYHOST, 2L},
        {CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2},
#if LIBCURL_VERSION_NUM < 0x075500
        {CURLOPT_PROTOCOLS, (long)CURLPROTO_HTTPS},
        {CURLOPT_REDIR_PROTOCOLS, (long)CURLPROTO_HTTPS},
#endif
    };
    CURLcode rc = CURLE_OK;
    size_t i;

    for (i = 0; i < sizeof fixed / sizeof fixed[0] && rc == CURLE_OK; i++) {
        *what = fixed[i].opt;
        rc = curl_easy_setopt(curl, fixed[i].opt, fixed[i].value);
    }
#if LIBCURL_VERSION_NUM >= 0x075500
    /* Only https, for redirects too. */
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(curl, *what = CURLOPT_PROTOCOLS_STR, "https");
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(curl, *what = CURLOPT_REDIR_PROTOCOLS_STR, "https");
#endif
    /* No TLS key log: libcurl's OpenSSL backend installs one on every
     * context when SSLKEYLOGFILE was set at curl_global_init, and a key log
     * next to a capture gives away the SAS token.  The crypto backend
     * does it where it can (dps_crypto.h). */
    if (rc == CURLE_OK) {
        *what = CURLOPT_SSL_CTX_FUNCTION;
        rc = dps_crypto_no_keylog(curl);
    }
#if LIBCURL_VERSION_NUM >= 0x075700
    /* A name lookup that timed out is left to finish in its own thread,
     * detached, instead of holding the transfer past its timeout.  An
     * older libcurl at run time refuses the option: nothing to do then. */
    if (rc == CURLE_OK) {
        rc = curl_easy_setopt(curl, *what = CURLOPT_QUICK_EXIT, 1L);
        if (rc == CURLE_UNKNOWN_OPTION)
            rc = CURLE_OK;
    }
#endif
    return rc;
}

/* The transfer's own settings: error buffer, callbacks, then the security
 * settings every handle has (secure_handle). */
static CURLcode setup_handle(dps_transfer *t, CURLoption *what)
{
    CURL *curl = t->curl;
    CURLcode rc;

#define SET(opt, val) \
    if ((rc = curl_easy_setopt(curl, opt, val)) != CURLE_OK) \
        return (*what = opt, rc)
    SET(CURLOPT_ERRORBUFFER, t->errbuf);
    SET(CURLOPT_WRITEFUNCTION, write_cb);
    SET(CURLOPT_WRITEDATA, (void *)t);
    SET(CURLOPT_HEADERFUNCTION, header_cb);
    SET(CURLOPT_HEADERDATA, (void *)t);
#undef SET
    return secure_handle(curl, what);
}

CURLcode dps_transfer_init(dps_transfer *t, CURLoption *what)
{
    memset(t, 0, sizeof *t);
    t->curl = NULL;
    t->headers = NULL;
    t->body.data = NULL;
    t->head.data = NULL;
    t->curl = curl_easy_init();
    if (t->curl == NULL) {
        *what = DPS_NO_OPTION;
        return CURLE_FAILED_INIT;
    }
    return setup_handle(t, what);
}

/* ------------------------------------------------------------------------ */
/* Requests                                                                  */

long dps_http_ms(double seconds)
{
    double ms = seconds * 1000.0;
    long whole;

    if (!(ms < TIMEOUT_MAX_MS)) /* NaN too */
        return (long)TIMEOUT_MAX_MS;
    if (ms < 1.0)
        return 1;
    whole = (long)ms; /* rounded up below, without ceil() (Makefile: "Size") */
    return whole < ms ? whole + 1 : whole;
}

static void check_url(lua_State *L, dps_request *r)
{
    size_t len, i;

    r->url = luaL_checklstring(L, 3, &len);
    if (len == 0)
        luaL_argerror(L, 3, "URL must not be empty");
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)r->url[i];
        if (c <= 0x20 || c == 0x7f)
            luaL_argerror(L, 3, "URL must not contain spaces or control characters");
    }
}

void dps_http_check_request(lua_State *L, dps_transfer *t, dps_request *r)
{
    static const char *const methods[] = {"GET", "PUT", "POST", "DELETE", NULL};

    r->method = luaL_checkoption(L, 2, NULL, methods);
    check_url(L, r);
    r->headers = lua_isnoneornil(L, 4) ? 0 : 4;
    if (r->headers != 0)
        luaL_checktype(L, 4, LUA_TTABLE);
    dps_http_check_body(L, r);
    r->timeout = t->timeout;
    if (!lua_isnoneornil(L, 6)) {
        if (lua_type(L, 6) != LUA_TNUMBER)
            dps_argerror(L, 6, "timeout must be a number, got %s", luaL_typename(L, 6));
        r->timeout = (double)lua_tonumber(L, 6);
        if (!(r->timeout > 0))
            luaL_argerror(L, 6, "timeout must be greater than 0");
    }
    lua_settop(L, 6);
    luaL_checkstack(L, 8, "request");
    r->connect_timeout = t->connect_timeout < r->timeout ? t->connect_timeout : r->timeout;
}

/* The request's settings on the handle. */
static CURLcode set_request(CURL *curl, dps_transfer *t, const dps_request *r)
{
    CURLcode rc = curl_easy_setopt(curl, CURLOPT_URL, r->url);

    if (rc == CURLE_OK)
        rc = curl_easy_setopt(curl, CURLOPT_HTTPHEADER, t->headers);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, dps_http_ms(r->timeout));
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, dps_http_ms(r->connect_timeout));
    if (rc == CURLE_OK && (r->method == DPS_GET || r->method == DPS_DELETE)) {
        rc = curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
        if (rc == CURLE_OK)
            rc = curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, r->method == DPS_DELETE ? "DELETE" : (char *)NULL);
    } else if (rc == CURLE_OK) {
        rc = dps_http_set_body(t, r);
        if (rc == CURLE_OK)
            rc = curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, r->method == DPS_PUT ? "PUT" : (char *)NULL);
    }
    return rc;
}

CURLcode dps_http_prepare(lua_State *L, dps_transfer *t, const dps_request *r)
{
    buf_reset(&t->body);
    buf_reset(&t->head);
    t->body_overflow = t->head_overflow = t->oom = t->head_done = 0;
    t->file.err = 0;
    dps_http_body_done(t);
    t->head_seen = 0;
    t->errbuf[0] = '\0';
    if (t->headers != NULL) {
        dps_http_free_headers(t->headers);
        t->headers = NULL;
    }
    if (dps_http_build_headers(L, t, r->headers, r->method != DPS_GET && r->method != DPS_DELETE) != 0)
        return CURLE_OUT_OF_MEMORY;
    return set_request(t->curl, t, r);
}

void dps_http_finish(dps_transfer *t)
{
    long connects = 0;

    curl_easy_setopt(t->curl, CURLOPT_HTTPHEADER, (struct curl_slist *)NULL);
    curl_easy_setopt(t->curl, CURLOPT_POSTFIELDS, (char *)NULL);
    dps_http_free_headers(t->headers);
    t->headers = NULL;
    dps_http_body_done(t);
    t->requests += 1;
    if (curl_easy_getinfo(t->curl, CURLINFO_NUM_CONNECTS, &connects) == CURLE_OK && connects > 0)
        t->connects += (double)connects;
}

int dps_http_push_result(lua_State *L, dps_transfer *t, CURLcode rc)
{
    long status = 0;

    if (rc != CURLE_OK) {
        dps_http_push_failure(L, t, rc);
    } else {
        curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &status);
        lua_pushinteger(L, (lua_Integer)status);
        lua_pushlstring(L, t->head.data != NULL ? t->head.data : "", t->head.len);
        lua_pushlstring(L, t->body.data != NULL ? t->body.data : "", t->body.len);
    }
    buf_reset(&t->body);
    buf_reset(&t->head);
    return 3;
}
