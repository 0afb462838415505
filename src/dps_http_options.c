/*
 * The options of `core.engine`, for each of its transfer slots, as rows of
 * {name, type, CURLOPT} (luasocket's optset): read from the table, checked
 * together, then applied to the handle.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "dps_aux.h"
#include "dps_core.h"
#include "dps_crypto.h"
#include "dps_http.h"
#include "dps_http_options.h"

/* Largest max_body accepted as is; larger values are clamped to it. */
#define MAX_BODY_LIMIT 2147483647.0

/* PEM blobs came with libcurl 7.71.0. */
#define HAS_BLOBS (LIBCURL_VERSION_NUM >= 0x074700)
#if HAS_BLOBS
#define CERT_BLOB CURLOPT_SSLCERT_BLOB
#define KEY_BLOB CURLOPT_SSLKEY_BLOB
#else
#define CERT_BLOB NO_CURLOPT
#define KEY_BLOB NO_CURLOPT
#endif
#define NO_CURLOPT ((CURLoption)0) /* used per request, or not directly */

/* STRING: any text (a path, a pass phrase); FIELD: goes into a request
 * header, so no CR, LF or NUL (the rule of request header values); URL: no
 * spaces or control characters (the rule of request URLs); BLOB: PEM text,
 * at most DPS_X509_MAX_PEM bytes (a memory BIO takes an int length). */
enum { STRING, FIELD, URL, BLOB, SECONDS, BYTES };

/* Every option: X(ID, name, type, CURLOPT, default of a number). */
#define ENGINE_OPTIONS(X)                                             \
    X(CA_FILE, "ca_file", STRING, CURLOPT_CAINFO, 0)                   \
    X(CA_PATH, "ca_path", STRING, CURLOPT_CAPATH, 0)                   \
    X(CONNECT_TIMEOUT, "connect_timeout", SECONDS, NO_CURLOPT, 10)     \
    X(TIMEOUT, "timeout", SECONDS, NO_CURLOPT, 30)                     \
    X(PROXY, "proxy", URL, CURLOPT_PROXY, 0)                           \
    X(USER_AGENT, "user_agent", FIELD, CURLOPT_USERAGENT, 0)           \
    X(MAX_BODY, "max_body", BYTES, CURLOPT_MAXFILESIZE_LARGE, 1048576) \
    X(CERT_FILE, "cert_file", STRING, CURLOPT_SSLCERT, 0)              \
    X(KEY_FILE, "key_file", STRING, CURLOPT_SSLKEY, 0)                 \
    X(KEY_PASSWORD, "key_password", STRING, CURLOPT_KEYPASSWD, 0)      \
    X(CERT, "cert", BLOB, CERT_BLOB, 0)                                \
    X(KEY, "key", BLOB, KEY_BLOB, 0)

enum {
#define OPTION_ID(id, name, type, opt, dflt) OPT_##id,
    ENGINE_OPTIONS(OPTION_ID)
#undef OPTION_ID
    OPT_COUNT
};

static const struct {
    const char *name;
    int type;
    CURLoption curlopt;
    double dflt;
} rows[OPT_COUNT] = {
#define OPTION_ROW(id, name, type, opt, dflt) {name, type, opt, dflt},
    ENGINE_OPTIONS(OPTION_ROW)
#undef OPTION_ROW
};

/* What the table held: a string (and its length) or a number per row. */
typedef struct {
    const char *str[OPT_COUNT];
    size_t len[OPT_COUNT];
    double num[OPT_COUNT];
} engine_options;

/* Raises on a key that names no option: catches typos such as 'timout'. */
static void reject_unknown(lua_State *L)
{
    lua_pushnil(L);
    while (lua_next(L, 1) != 0) {
        size_t klen;
        const char *key;
        int i;
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_argerror(L, 1, "option names must be strings");
        key = lua_tolstring(L, -2, &klen);
        for (i = 0; i < OPT_COUNT; i++)
            if (klen == strlen(rows[i].name) && memcmp(key, rows[i].name, klen) == 0)
                break;
        if (i == OPT_COUNT)
            dps_argerror(L, 1, "unknown option '%s'", key);
        lua_pop(L, 1);
    }
}

/* A number option: greater than 0 (fractions allowed), or the default. */
static double read_number(lua_State *L, int i)
{
    double v;

    lua_getfield(L, 1, rows[i].name);
    if (lua_isnil(L, -1))
        return rows[i].dflt;
    if (lua_type(L, -1) != LUA_TNUMBER)
        dps_argerror(L, 1, "option '%s' must be a number, got %s", rows[i].name, luaL_typename(L, -1));
    v = (double)lua_tonumber(L, -1);
    if (!(v > 0))
        dps_argerror(L, 1, "option '%s' must be greater than 0", rows[i].name);
    return v;
}

/* A text option: NULL when absent, else a string that is not empty, holds
 * no NUL byte and keeps its row's class (see the enum above).  The value
 * stays on the stack, so the pointer stays valid. */
static const char *read_text(lua_State *L, int i, size_t *len)
{
    const char *p;
    size_t k;

    *len = 0;
    lua_getfield(L, 1, rows[i].name);
    if (lua_isnil(L, -1))
        return NULL;
    if (lua_type(L, -1) != LUA_TSTRING)
        dps_argerror(L, 1, "option '%s' must be a string, got %s", rows[i].name, luaL_typename(L, -1));
    p = lua_tolstring(L, -1, len);
    if (*len == 0)
        dps_argerror(L, 1, "option '%s' must not be empty", rows[i].name);
    if (memchr(p, '\0', *len) != NULL)
        dps_argerror(L, 1, "option '%s' must not contain NUL bytes", rows[i].name);
    if (rows[i].type == BLOB && *len > DPS_X509_MAX_PEM)
        dps_argerror(L, 1, "option '%s' must be at most 1 MiB", rows[i].name);
    for (k = 0; k < *len; k++) {
        unsigned char c = (unsigned char)p[k];
        if (rows[i].type == FIELD && (c == '\r' || c == '\n'))
            dps_argerror(L, 1, "option '%s' must not contain CR or LF", rows[i].name);
        if (rows[i].type == URL && (c <= 0x20 || c == 0x7f))
            dps_argerror(L, 1, "option '%s' must not contain spaces or control characters", rows[i].name);
    }
    return p;
}

/* Read: every value checked alone, and left on the stack until the handle
 * has copied it. */
static void options_read(lua_State *L, engine_options *o)
{
    int i;

    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    reject_unknown(L);
    luaL_checkstack(L, OPT_COUNT + 8, "too many options");
    for (i = 0; i < OPT_COUNT; i++) {
        o->str[i] = NULL;
        o->len[i] = 0;
        o->num[i] = 0;
        if (rows[i].type == SECONDS || rows[i].type == BYTES) {
            o->num[i] = read_number(L, i);
        } else {
            o->str[i] = read_text(L, i, &o->len[i]);
        }
    }
    /* Whole bytes, rounded up, at most MAX_BODY_LIMIT (through a 32-bit
     * long: Makefile, "Size"). */
    if (o->num[OPT_MAX_BODY] > MAX_BODY_LIMIT)
        o->num[OPT_MAX_BODY] = MAX_BODY_LIMIT;
    if ((double)(long)o->num[OPT_MAX_BODY] < o->num[OPT_MAX_BODY])
        o->num[OPT_MAX_BODY] = (double)((long)o->num[OPT_MAX_BODY] + 1);
}

/* The client-certificate options among o (NULL where absent). */
static void credentials_of(const engine_options *o, dps_credentials *c)
{
    c->cert_file = o->str[OPT_CERT_FILE];
    c->cert = o->str[OPT_CERT];
    c->key_file = o->str[OPT_KEY_FILE];
    c->key = o->str[OPT_KEY];
    c->key_password = o->str[OPT_KEY_PASSWORD];
}

/* Check: the options together. */
static void options_check(lua_State *L, const engine_options *o)
{
    dps_credentials c;

    credentials_of(o, &c);
    dps_check_credentials(L, 1, &c, 0);
    if (!HAS_BLOBS && (c.cert != NULL || c.key != NULL))
        luaL_argerror(L, 1, "options 'cert' and 'key' need libcurl 7.71.0 or newer");
    if (o->str[OPT_PROXY] != NULL
        && !(o->len[OPT_PROXY] > 7 && dps_http_ieq(o->str[OPT_PROXY], 7, "http://")))
        luaL_argerror(L, 1, "option 'proxy' must be an http:// URL");
}

/* One row's value onto the handle. */
#if HAS_BLOBS
/* Whether libcurl's TLS library is mbedTLS. */
static int tls_is_mbedtls(void)
{
    const curl_version_info_data *info = curl_version_info(CURLVERSION_NOW);

    return info->ssl_version != NULL && strncmp(info->ssl_version, "mbedTLS/", 8) == 0;
}
#endif

static CURLcode apply_row(CURL *curl, const engine_options *o, int i)
{
    if (rows[i].curlopt == NO_CURLOPT)
        return CURLE_OK;
    if (rows[i].type == BYTES)
        return curl_easy_setopt(curl, rows[i].curlopt, (curl_off_t)(long)o->num[i]); /* a whole number < 2^31 */
    if (o->str[i] == NULL)
        return CURLE_OK;
#if HAS_BLOBS
    /* libcurl copies strings and CURL_BLOB_COPY blobs: the secret bytes we
     * pass live in Lua strings (immutable, owned by the caller), so the
     * transfer itself keeps no copy of a pass phrase or key. */
    if (rows[i].type == BLOB) {
        struct curl_blob blob;
        blob.data = (void *)o->str[i];
        /* libcurl on mbedTLS hands a PEM blob to mbedTLS as it is, which
         * wants the NUL counted (fixed in libcurl in 2026): a Lua string
         * always has one after its end. */
        blob.len = o->len[i] + (tls_is_mbedtls() ? 1 : 0);
        blob.flags = CURL_BLOB_COPY;
        return curl_easy_setopt(curl, rows[i].curlopt, &blob);
    }
#endif
    return curl_easy_setopt(curl, rows[i].curlopt, o->str[i]);
}

/* libcurl 7.87.0 and newer on OpenSSL build the CA store from a bundle once
 * per engine and keep it for the connections after the first, but only
 * while no CA directory is set.  Without ca_file and ca_path, libcurl's
 * default bundle alone is trusted, when it has one that can be read, and
 * its default directory is left out: on Debian both hold the same roots
 * (update-ca-certificates writes both), and parsing the bundle's 140 roots
 * for every connection costs some 20 ms of CPU each. */
#define HAS_CA_CACHE (LIBCURL_VERSION_NUM >= 0x075700)
#if HAS_CA_CACHE
static int default_bundle_alone(CURL *curl)
{
    const curl_version_info_data *info = curl_version_info(CURLVERSION_NOW);
    char *bundle = NULL, *dir = NULL;

    return info->version_num >= 0x075700 && info->ssl_version != NULL
        && strncmp(info->ssl_version, "OpenSSL/", 8) == 0
        && curl_easy_getinfo(curl, CURLINFO_CAINFO, &bundle) == CURLE_OK && bundle != NULL
        && curl_easy_getinfo(curl, CURLINFO_CAPATH, &dir) == CURLE_OK && dir != NULL
        && access(bundle, R_OK) == 0;
}
#endif

/* What goes with an option, or stands in for a missing one. */
static CURLcode apply_companions(CURL *curl, const engine_options *o, CURLoption *what)
{
    int proxied = o->str[OPT_PROXY] != NULL;
    CURLcode rc;

#define SET(opt, val) \
    if ((rc = curl_easy_setopt(curl, opt, val)) != CURLE_OK) \
        return (*what = opt, rc)
#if HAS_CA_CACHE
    if (o->str[OPT_CA_FILE] == NULL && o->str[OPT_CA_PATH] == NULL && default_bundle_alone(curl))
        SET(CURLOPT_CAPATH, (char *)NULL);
#endif
    if (o->str[OPT_USER_AGENT] == NULL)
        SET(CURLOPT_USERAGENT, "lua-azure-dps/" DPS_CORE_VERSION);
    /* Without a proxy, "": no proxy environment variables either; with
     * one, NOPROXY "": every host goes through it, whatever NO_PROXY says. */
    SET(proxied ? CURLOPT_NOPROXY : CURLOPT_PROXY, "");
    /* (An http:// proxy is libcurl's default type, and PEM its default
     * certificate and key type: not set again.) */
    if (proxied) {
        SET(CURLOPT_HTTPPROXYTUNNEL, 1L);
#if LIBCURL_VERSION_NUM >= 0x073600
        SET(CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
#endif
    }
#undef SET
    return CURLE_OK;
}

/* Apply: every row, then its companions.  On failure *what is the option
 * that libcurl refused. */
static CURLcode options_apply(CURL *curl, const engine_options *o, CURLoption *what)
{
    CURLcode rc = CURLE_OK;
    int i;

    for (i = 0; i < OPT_COUNT && rc == CURLE_OK; i++) {
        *what = rows[i].curlopt;
        rc = apply_row(curl, o, i);
    }
    return rc == CURLE_OK ? apply_companions(curl, o, what) : rc;
}

int dps_http_refused(lua_State *L, CURLoption what, CURLcode rc)
{
    char failed[64];
    const char *name = NULL;
    int i;

    for (i = 0; i < OPT_COUNT && name == NULL && what != DPS_NO_OPTION; i++)
        if (rows[i].curlopt == what)
            name = rows[i].name;
#if LIBCURL_VERSION_NUM >= 0x074900
    if (name == NULL && what != DPS_NO_OPTION) {
        const struct curl_easyoption *known = curl_easy_option_by_id(what);
        name = known != NULL ? known->name : NULL;
    }
#endif
    if (what == DPS_NO_OPTION)
        snprintf(failed, sizeof failed, "make a libcurl handle");
    else if (name != NULL)
        snprintf(failed, sizeof failed, "set option '%s'", name);
    else
        snprintf(failed, sizeof failed, "set libcurl option %d", (int)what);
    return luaL_error(L, "dps.core.engine: cannot %s (%s, %d)", failed, curl_easy_strerror(rc), (int)rc);
}

const void *dps_http_options_read(lua_State *L)
{
    engine_options read, *o;

    options_read(L, &read);
    options_check(L, &read);
    o = (engine_options *)dps_newuserdata(L, sizeof *o);
    *o = read; /* its strings stay anchored by the table at index 1 */
    return o;
}

CURLcode dps_http_options_apply(dps_transfer *t, const void *opts, CURLoption *what)
{
    const engine_options *o = (const engine_options *)opts;

    t->connect_timeout = o->num[OPT_CONNECT_TIMEOUT];
    t->timeout = o->num[OPT_TIMEOUT];
    t->max_body = (size_t)o->num[OPT_MAX_BODY];
    t->proxied = o->str[OPT_PROXY] != NULL;
    return options_apply(t->curl, o, what);
}
