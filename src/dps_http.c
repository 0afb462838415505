/***
 * The HTTPS session of `dps.core`: one libcurl easy handle per session,
 * reused for every request so that a registration and all of its polls run
 * over one kept-alive TLS connection.
 *
 * Transport failures return `nil, message, info` with
 * `info = { kind = …, curl_code = … }`; misuse raises.  An HTTP status of 400
 * or more is a response, not a failure.  TLS peer and host-name verification
 * are always on, only `https` URLs are accepted, redirects are not followed.
 * @module dps.core
 */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "dps_core.h"
#include "dps_headers.h"

#define SESSION_MT "dps.core.Session"

/* Response header bytes kept per response; more aborts the request. */
#define HEAD_MAX 65536
/* Buffers larger than this are released after each request. */
#define BUF_KEEP 65536
/* Longest timeout handed to libcurl, in milliseconds (about 24.8 days). */
#define TIMEOUT_MAX_MS 2147483647.0
/* Largest max_body accepted as is; larger values are clamped to it. */
#define MAX_BODY_LIMIT 2147483647.0

#define DEFAULT_CONNECT_TIMEOUT 10.0
#define DEFAULT_TIMEOUT 30.0
#define DEFAULT_MAX_BODY 1048576
#define DEFAULT_USER_AGENT "lua-azure-dps/" DPS_CORE_VERSION

/* A growable byte buffer owned by the session userdata. */
typedef struct {
    char *data;
    size_t len;
    size_t cap;
} http_buf;

typedef struct {
    CURL *curl;                 /* NULL once closed */
    struct curl_slist *headers; /* request header list, only during a request */
    http_buf body;              /* body of the last response */
    http_buf head;              /* header lines of the last response, "\n"-separated */
    size_t max_body;
    double connect_timeout;     /* seconds */
    double timeout;             /* seconds */
    double requests;            /* transfers performed */
    double connects;            /* sum of CURLINFO_NUM_CONNECTS */
    int body_overflow;          /* set by callbacks: body over max_body */
    int head_overflow;          /* header bytes over HEAD_MAX */
    int oom;                    /* a callback could not allocate */
    int head_done;              /* dps_headers_line state: blank line seen */
    int proxied;                /* connections go through an HTTP proxy */
    char errbuf[CURL_ERROR_SIZE];
} http_session;

/* ------------------------------------------------------------------------ */
/* Buffers (no Lua API here: used from libcurl callbacks)                    */

static void buf_release(http_buf *b)
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
static void buf_reset(http_buf *b)
{
    if (b->cap > BUF_KEEP)
        buf_release(b);
    b->len = 0;
}

/* Appends n bytes.  Returns 0, -1 when len would exceed limit, -2 on OOM. */
static int buf_append(http_buf *b, const char *p, size_t n, size_t limit)
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

/* Wipes every string of a header list (Authorization values are secret),
 * then frees it. */
static void free_header_list(struct curl_slist *list)
{
    struct curl_slist *item;
    for (item = list; item != NULL; item = item->next)
        if (item->data != NULL)
            dps_wipe(item->data, strlen(item->data));
    curl_slist_free_all(list);
}

/* ------------------------------------------------------------------------ */
/* libcurl callbacks: C buffers only, never the Lua API                      */

static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    http_session *s = userdata;
    size_t n = size * nmemb;
    int rc = buf_append(&s->body, ptr, n, s->max_body);
    if (rc == -1) {
        s->body_overflow = 1;
        return 0;
    }
    if (rc == -2) {
        s->oom = 1;
        return 0;
    }
    return n;
}

static size_t header_cb(char *ptr, size_t size, size_t nitems, void *userdata)
{
    http_session *s = userdata;
    size_t n = size * nitems;
    size_t len = 0;
    int rc;

    switch (dps_headers_line(&s->head_done, ptr, n, &len)) {
    case DPS_HEADERS_RESET:
        s->head.len = 0;
        return n;
    case DPS_HEADERS_SKIP:
        return n;
    default:
        break;
    }
    rc = buf_append(&s->head, ptr, len, HEAD_MAX);
    if (rc == 0)
        rc = buf_append(&s->head, "\n", 1, HEAD_MAX);
    if (rc == -1) {
        s->head_overflow = 1;
        return 0;
    }
    if (rc == -2) {
        s->oom = 1;
        return 0;
    }
    return n;
}

/* ------------------------------------------------------------------------ */
/* Lifecycle                                                                 */

/* Releases everything; safe on a half-built or already closed session. */
static void session_release(http_session *s)
{
    if (s->curl != NULL) {
        curl_easy_cleanup(s->curl);
        s->curl = NULL;
    }
    if (s->headers != NULL) {
        free_header_list(s->headers);
        s->headers = NULL;
    }
    buf_release(&s->body);
    buf_release(&s->head);
    dps_wipe(s->errbuf, sizeof s->errbuf);
}

static http_session *check_session(lua_State *L)
{
    return (http_session *)luaL_checkudata(L, 1, SESSION_MT);
}

static http_session *check_open(lua_State *L)
{
    http_session *s = check_session(L);
    if (s->curl == NULL)
        luaL_argerror(L, 1, "session is closed");
    return s;
}

/***
 * Closes the session: frees the libcurl handle, its connections and buffers.
 * The same function serves as `__gc` and (Lua 5.4) `__close`; closing twice
 * is harmless.
 * @function Session:close
 * @treturn boolean `true`
 */
static int session_close(lua_State *L)
{
    http_session *s = check_session(L);
    session_release(s);
    lua_pushboolean(L, 1);
    return 1;
}

static int session_tostring(lua_State *L)
{
    http_session *s = check_session(L);
    if (s->curl == NULL)
        lua_pushliteral(L, SESSION_MT " (closed)");
    else
        lua_pushfstring(L, SESSION_MT ": %p", (void *)s);
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Option table                                                              */

enum {
    OPT_CA_FILE, OPT_CA_PATH, OPT_CONNECT_TIMEOUT, OPT_TIMEOUT, OPT_PROXY,
    OPT_USER_AGENT, OPT_MAX_BODY, OPT_CERT_FILE, OPT_KEY_FILE,
    OPT_KEY_PASSWORD, OPT_CERT, OPT_KEY, OPT_COUNT
};

static const char *const option_names[OPT_COUNT] = {
    "ca_file", "ca_path", "connect_timeout", "timeout", "proxy",
    "user_agent", "max_body", "cert_file", "key_file",
    "key_password", "cert", "key"
};

static int option_is_number(int i)
{
    return i == OPT_CONNECT_TIMEOUT || i == OPT_TIMEOUT || i == OPT_MAX_BODY;
}

static int ascii_lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

static int ascii_ieq(const char *a, size_t alen, const char *b)
{
    size_t i;
    if (alen != strlen(b))
        return 0;
    for (i = 0; i < alen; i++)
        if (ascii_lower((unsigned char)a[i]) != b[i])
            return 0;
    return 1;
}

/* Reads a positive number (fractions allowed) at stack index idx. */
static double check_positive(lua_State *L, int arg, int idx, const char *what)
{
    double v;
    if (lua_type(L, idx) != LUA_TNUMBER) {
        lua_pushfstring(L, "%s must be a number, got %s", what, luaL_typename(L, idx));
        luaL_argerror(L, arg, lua_tostring(L, -1));
    }
    v = (double)lua_tonumber(L, idx);
    if (!(v > 0)) {
        lua_pushfstring(L, "%s must be greater than 0", what);
        luaL_argerror(L, arg, lua_tostring(L, -1));
    }
    return v;
}

/* Reads a non-empty string without NUL bytes at stack index idx. */
static const char *check_option_string(lua_State *L, int idx, const char *name, size_t *len)
{
    const char *p;
    if (lua_type(L, idx) != LUA_TSTRING) {
        lua_pushfstring(L, "option '%s' must be a string, got %s", name, luaL_typename(L, idx));
        luaL_argerror(L, 1, lua_tostring(L, -1));
    }
    p = lua_tolstring(L, idx, len);
    if (*len == 0) {
        lua_pushfstring(L, "option '%s' must not be empty", name);
        luaL_argerror(L, 1, lua_tostring(L, -1));
    }
    if (memchr(p, '\0', *len) != NULL) {
        lua_pushfstring(L, "option '%s' must not contain NUL bytes", name);
        luaL_argerror(L, 1, lua_tostring(L, -1));
    }
    return p;
}

static long seconds_to_ms(double seconds)
{
    double ms = ceil(seconds * 1000.0);
    if (ms < 1.0)
        ms = 1.0;
    if (ms > TIMEOUT_MAX_MS)
        ms = TIMEOUT_MAX_MS;
    return (long)ms;
}

/* Raises (after releasing the half-built session) when a setopt failed. */
static void check_setopt(lua_State *L, http_session *s, CURLcode rc, const char *what)
{
    if (rc != CURLE_OK) {
        session_release(s);
        luaL_error(L, "dps.core.session: cannot set %s (%s, %d)", what,
                   curl_easy_strerror(rc), (int)rc);
    }
}

/***
 * Creates an HTTPS session: one libcurl easy handle kept for all requests.
 * @function session
 * @tparam[opt] table options
 * @tparam[opt] string options.ca_file PEM bundle of trusted CAs; it takes the
 *   place of libcurl's default bundle (a default CA directory built into
 *   libcurl, as on Debian, stays in use).  Without it: libcurl's default trust.
 * @tparam[opt] string options.ca_path directory of hashed CA certificates
 * @tparam[opt=10] number options.connect_timeout seconds (fractions allowed, > 0)
 * @tparam[opt=30] number options.timeout seconds per request (> 0)
 * @tparam[opt] string options.proxy `"http://host:port"`, used through HTTP CONNECT;
 *   without it the connection is direct (proxy environment variables are ignored)
 * @tparam[opt] string options.user_agent default `"lua-azure-dps/VERSION"`
 * @tparam[opt=1048576] number options.max_body response body limit in bytes (> 0)
 * @tparam[opt] string options.cert_file client certificate, PEM file
 * @tparam[opt] string options.key_file client private key, PEM file
 * @tparam[opt] string options.key_password pass phrase of an encrypted key
 * @tparam[opt] string options.cert client certificate, PEM text
 * @tparam[opt] string options.key client private key, PEM text
 * @treturn Session
 * @raise on an unknown option, a wrong type, a non-positive number, an empty
 *   string or one with NUL bytes, conflicting options (`cert` with `cert_file`,
 *   `key` with `key_file`, a key or password without a certificate, a proxy
 *   that is not `http://`), or an option this libcurl cannot honour.
 */
static int session_new(lua_State *L)
{
    const char *str[OPT_COUNT];
    size_t len[OPT_COUNT];
    double connect_timeout = DEFAULT_CONNECT_TIMEOUT;
    double timeout = DEFAULT_TIMEOUT;
    double max_body = DEFAULT_MAX_BODY;
    int base, i;
    http_session *s;
    CURL *curl;

    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);

    /* Unknown keys first: catches typos such as 'timout'. */
    lua_pushnil(L);
    while (lua_next(L, 1) != 0) {
        int known = 0;
        size_t klen;
        const char *key;
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_argerror(L, 1, "option names must be strings");
        key = lua_tolstring(L, -2, &klen);
        for (i = 0; i < OPT_COUNT; i++) {
            if (klen == strlen(option_names[i]) && memcmp(key, option_names[i], klen) == 0) {
                known = 1;
                break;
            }
        }
        if (!known) {
            lua_pushfstring(L, "unknown option '%s'", key);
            luaL_argerror(L, 1, lua_tostring(L, -1));
        }
        lua_pop(L, 1);
    }

    /* Every value stays on the stack (base + i) until the handle copied it. */
    luaL_checkstack(L, OPT_COUNT + 8, "too many options");
    base = lua_gettop(L) + 1;
    for (i = 0; i < OPT_COUNT; i++) {
        lua_getfield(L, 1, option_names[i]);
        str[i] = NULL;
        len[i] = 0;
        if (lua_isnil(L, -1) || option_is_number(i))
            continue;
        str[i] = check_option_string(L, base + i, option_names[i], &len[i]);
    }
    if (!lua_isnil(L, base + OPT_CONNECT_TIMEOUT))
        connect_timeout = check_positive(L, 1, base + OPT_CONNECT_TIMEOUT, "option 'connect_timeout'");
    if (!lua_isnil(L, base + OPT_TIMEOUT))
        timeout = check_positive(L, 1, base + OPT_TIMEOUT, "option 'timeout'");
    if (!lua_isnil(L, base + OPT_MAX_BODY))
        max_body = check_positive(L, 1, base + OPT_MAX_BODY, "option 'max_body'");
    max_body = ceil(max_body);
    if (max_body > MAX_BODY_LIMIT)
        max_body = MAX_BODY_LIMIT;

    if (str[OPT_CERT] != NULL && str[OPT_CERT_FILE] != NULL)
        luaL_argerror(L, 1, "options 'cert' and 'cert_file' exclude each other");
    if (str[OPT_KEY] != NULL && str[OPT_KEY_FILE] != NULL)
        luaL_argerror(L, 1, "options 'key' and 'key_file' exclude each other");
    if (str[OPT_CERT] == NULL && str[OPT_CERT_FILE] == NULL) {
        if (str[OPT_KEY] != NULL || str[OPT_KEY_FILE] != NULL || str[OPT_KEY_PASSWORD] != NULL)
            luaL_argerror(L, 1, "options 'key', 'key_file' and 'key_password' need 'cert' or 'cert_file'");
    }
#if LIBCURL_VERSION_NUM < 0x074700
    if (str[OPT_CERT] != NULL || str[OPT_KEY] != NULL)
        luaL_argerror(L, 1, "options 'cert' and 'key' need libcurl 7.71.0 or newer");
#endif
    if (str[OPT_PROXY] != NULL && !(len[OPT_PROXY] > 7 && ascii_ieq(str[OPT_PROXY], 7, "http://")))
        luaL_argerror(L, 1, "option 'proxy' must be an http:// URL");

    /* Allocate, clear, mark, then acquire. */
    s = (http_session *)dps_newuserdata(L, sizeof *s);
    memset(s, 0, sizeof *s);
    s->curl = NULL;
    s->headers = NULL;
    s->body.data = NULL;
    s->head.data = NULL;
    s->connect_timeout = connect_timeout;
    s->timeout = timeout;
    s->max_body = (size_t)max_body;
    s->proxied = str[OPT_PROXY] != NULL;
    luaL_setmetatable(L, SESSION_MT);

    curl = curl_easy_init();
    if (curl == NULL)
        return luaL_error(L, "dps.core.session: cannot create a libcurl handle");
    s->curl = curl;

#define SETOPT(opt, val, what) check_setopt(L, s, curl_easy_setopt(curl, opt, val), what)
    SETOPT(CURLOPT_NOSIGNAL, 1L, "CURLOPT_NOSIGNAL");
    SETOPT(CURLOPT_ERRORBUFFER, s->errbuf, "CURLOPT_ERRORBUFFER");
    SETOPT(CURLOPT_WRITEFUNCTION, write_cb, "CURLOPT_WRITEFUNCTION");
    SETOPT(CURLOPT_WRITEDATA, (void *)s, "CURLOPT_WRITEDATA");
    SETOPT(CURLOPT_HEADERFUNCTION, header_cb, "CURLOPT_HEADERFUNCTION");
    SETOPT(CURLOPT_HEADERDATA, (void *)s, "CURLOPT_HEADERDATA");
    /* Security: only https, for redirects too; redirects not followed. */
#if LIBCURL_VERSION_NUM >= 0x075500
    SETOPT(CURLOPT_PROTOCOLS_STR, "https", "CURLOPT_PROTOCOLS_STR");
    SETOPT(CURLOPT_REDIR_PROTOCOLS_STR, "https", "CURLOPT_REDIR_PROTOCOLS_STR");
#else
    SETOPT(CURLOPT_PROTOCOLS, (long)CURLPROTO_HTTPS, "CURLOPT_PROTOCOLS");
    SETOPT(CURLOPT_REDIR_PROTOCOLS, (long)CURLPROTO_HTTPS, "CURLOPT_REDIR_PROTOCOLS");
#endif
    SETOPT(CURLOPT_FOLLOWLOCATION, 0L, "CURLOPT_FOLLOWLOCATION");
    /* The libcurl defaults, asserted: peer and host name are verified. */
    SETOPT(CURLOPT_SSL_VERIFYPEER, 1L, "CURLOPT_SSL_VERIFYPEER");
    SETOPT(CURLOPT_SSL_VERIFYHOST, 2L, "CURLOPT_SSL_VERIFYHOST");
    SETOPT(CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2, "TLS 1.2 as minimum version");
    SETOPT(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)s->max_body, "CURLOPT_MAXFILESIZE_LARGE");
    SETOPT(CURLOPT_USERAGENT,
           str[OPT_USER_AGENT] != NULL ? str[OPT_USER_AGENT] : DEFAULT_USER_AGENT,
           "CURLOPT_USERAGENT");
    if (str[OPT_CA_FILE] != NULL)
        SETOPT(CURLOPT_CAINFO, str[OPT_CA_FILE], "option 'ca_file'");
    if (str[OPT_CA_PATH] != NULL)
        SETOPT(CURLOPT_CAPATH, str[OPT_CA_PATH], "option 'ca_path'");
    if (str[OPT_PROXY] != NULL) {
        SETOPT(CURLOPT_PROXY, str[OPT_PROXY], "option 'proxy'");
        SETOPT(CURLOPT_PROXYTYPE, (long)CURLPROXY_HTTP, "option 'proxy'");
        SETOPT(CURLOPT_HTTPPROXYTUNNEL, 1L, "option 'proxy'");
#if LIBCURL_VERSION_NUM >= 0x073600
        SETOPT(CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L, "option 'proxy'");
#endif
    } else {
        /* "" disables the proxy environment variables too. */
        SETOPT(CURLOPT_PROXY, "", "CURLOPT_PROXY");
    }
    if (str[OPT_CERT_FILE] != NULL) {
        SETOPT(CURLOPT_SSLCERT, str[OPT_CERT_FILE], "option 'cert_file'");
        SETOPT(CURLOPT_SSLCERTTYPE, "PEM", "option 'cert_file'");
    }
    if (str[OPT_KEY_FILE] != NULL) {
        SETOPT(CURLOPT_SSLKEY, str[OPT_KEY_FILE], "option 'key_file'");
        SETOPT(CURLOPT_SSLKEYTYPE, "PEM", "option 'key_file'");
    }
    /* libcurl copies strings and CURL_BLOB_COPY blobs: the secret bytes we
     * pass live in Lua strings (immutable, owned by the caller), so the
     * session itself keeps no copy of a pass phrase or key. */
    if (str[OPT_KEY_PASSWORD] != NULL)
        SETOPT(CURLOPT_KEYPASSWD, str[OPT_KEY_PASSWORD], "option 'key_password'");
#if LIBCURL_VERSION_NUM >= 0x074700
    if (str[OPT_CERT] != NULL) {
        struct curl_blob blob;
        blob.data = (void *)str[OPT_CERT];
        blob.len = len[OPT_CERT];
        blob.flags = CURL_BLOB_COPY;
        SETOPT(CURLOPT_SSLCERT_BLOB, &blob, "option 'cert'");
        SETOPT(CURLOPT_SSLCERTTYPE, "PEM", "option 'cert'");
    }
    if (str[OPT_KEY] != NULL) {
        struct curl_blob blob;
        blob.data = (void *)str[OPT_KEY];
        blob.len = len[OPT_KEY];
        blob.flags = CURL_BLOB_COPY;
        SETOPT(CURLOPT_SSLKEY_BLOB, &blob, "option 'key'");
        SETOPT(CURLOPT_SSLKEYTYPE, "PEM", "option 'key'");
    }
#endif
#undef SETOPT
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Failures                                                                  */

typedef struct {
    int code;
    const char *name;
} curl_name;

/* Mnemonics: OpenWrt's libcurl has no verbose error strings. */
static const curl_name curl_names[] = {
    {1, "CURLE_UNSUPPORTED_PROTOCOL"},
    {2, "CURLE_FAILED_INIT"},
    {3, "CURLE_URL_MALFORMAT"},
    {4, "CURLE_NOT_BUILT_IN"},
    {5, "CURLE_COULDNT_RESOLVE_PROXY"},
    {6, "CURLE_COULDNT_RESOLVE_HOST"},
    {7, "CURLE_COULDNT_CONNECT"},
    {8, "CURLE_WEIRD_SERVER_REPLY"},
    {16, "CURLE_HTTP2"},
    {18, "CURLE_PARTIAL_FILE"},
    {23, "CURLE_WRITE_ERROR"},
    {26, "CURLE_READ_ERROR"},
    {27, "CURLE_OUT_OF_MEMORY"},
    {28, "CURLE_OPERATION_TIMEDOUT"},
    {35, "CURLE_SSL_CONNECT_ERROR"},
    {43, "CURLE_BAD_FUNCTION_ARGUMENT"},
    {45, "CURLE_INTERFACE_FAILED"},
    {47, "CURLE_TOO_MANY_REDIRECTS"},
    {48, "CURLE_UNKNOWN_OPTION"},
    {52, "CURLE_GOT_NOTHING"},
    {53, "CURLE_SSL_ENGINE_NOTFOUND"},
    {54, "CURLE_SSL_ENGINE_SETFAILED"},
    {55, "CURLE_SEND_ERROR"},
    {56, "CURLE_RECV_ERROR"},
    {58, "CURLE_SSL_CERTPROBLEM"},
    {59, "CURLE_SSL_CIPHER"},
    {60, "CURLE_PEER_FAILED_VERIFICATION"},
    {61, "CURLE_BAD_CONTENT_ENCODING"},
    {63, "CURLE_FILESIZE_EXCEEDED"},
    {64, "CURLE_USE_SSL_FAILED"},
    {65, "CURLE_SEND_FAIL_REWIND"},
    {66, "CURLE_SSL_ENGINE_INITFAILED"},
    {77, "CURLE_SSL_CACERT_BADFILE"},
    {80, "CURLE_SSL_SHUTDOWN_FAILED"},
    {81, "CURLE_AGAIN"},
    {82, "CURLE_SSL_CRL_BADFILE"},
    {83, "CURLE_SSL_ISSUER_ERROR"},
    {90, "CURLE_SSL_PINNEDPUBKEYNOTMATCH"},
    {91, "CURLE_SSL_INVALIDCERTSTATUS"},
    {92, "CURLE_HTTP2_STREAM"},
    {93, "CURLE_RECURSIVE_API_CALL"},
    {95, "CURLE_HTTP3"},
    {96, "CURLE_QUIC_CONNECT_ERROR"},
    {97, "CURLE_PROXY"},
    {98, "CURLE_SSL_CLIENTCERT"},
    {99, "CURLE_UNRECOVERABLE_POLL"},
    {0, NULL}
};

static const char *curl_code_name(int code)
{
    const curl_name *n;
    for (n = curl_names; n->name != NULL; n++)
        if (n->code == code)
            return n->name;
    return "CURLE";
}

/* Whether libcurl's error text says the transport failed (reset, EOF)
 * rather than TLS itself: libcurl reports both as CURLE_SSL_CONNECT_ERROR
 * during a handshake.  The texts are libcurl's own ("Recv failure: …") and
 * OpenSSL's; anything else stays a TLS failure. */
static int transport_failed(const char *errbuf)
{
    static const char *const texts[] = {
        "Recv failure", "Send failure", "reset by peer", "Broken pipe",
        "SSL_ERROR_SYSCALL", "unexpected eof", NULL
    };
    int i;
    for (i = 0; texts[i] != NULL; i++)
        if (strstr(errbuf, texts[i]) != NULL)
            return 1;
    return 0;
}

/* Kinds by CURLcode number (stable ABI values, so no version guards). */
static const char *kind_of(http_session *s, CURLcode rc)
{
    int proxied = s->proxied;
    long connect_code = 0, request_size = 0;

    switch ((int)rc) {
    case 6:  /* COULDNT_RESOLVE_HOST */
        return "resolve";
    case 5:  /* COULDNT_RESOLVE_PROXY */
    case 97: /* PROXY */
        return "proxy";
    case 7:  /* COULDNT_CONNECT: with a tunnel only the proxy is dialled */
    case 45: /* INTERFACE_FAILED */
    case 96: /* QUIC_CONNECT_ERROR */
        return proxied ? "proxy" : "connect";
    case 35: /* SSL_CONNECT_ERROR: a failed handshake, or the connection
              * reset or closed under it (transient: network) */
        if (transport_failed(s->errbuf))
            return "network";
        return "tls";
    case 59: /* SSL_CIPHER */
    case 60: /* PEER_FAILED_VERIFICATION */
    case 64: /* USE_SSL_FAILED */
    case 77: /* SSL_CACERT_BADFILE */
    case 80: /* SSL_SHUTDOWN_FAILED */
    case 82: /* SSL_CRL_BADFILE */
    case 83: /* SSL_ISSUER_ERROR */
    case 90: /* SSL_PINNEDPUBKEYNOTMATCH */
    case 91: /* SSL_INVALIDCERTSTATUS */
        return "tls";
    case 53: /* SSL_ENGINE_NOTFOUND */
    case 54: /* SSL_ENGINE_SETFAILED */
    case 58: /* SSL_CERTPROBLEM */
    case 66: /* SSL_ENGINE_INITFAILED */
    case 98: /* SSL_CLIENTCERT: the server wants a certificate we lack */
        return "credentials";
    case 28: /* OPERATION_TIMEDOUT */
        return "timeout";
    case 63: /* FILESIZE_EXCEEDED */
        return "too_large";
    case 23: /* WRITE_ERROR: one of our callbacks said why */
        if (s->body_overflow || s->head_overflow)
            return "too_large";
        return "oom";
    case 27: /* OUT_OF_MEMORY */
        return "oom";
    case 8:  /* WEIRD_SERVER_REPLY */
    case 16: /* HTTP2 */
    case 18: /* PARTIAL_FILE */
    case 61: /* BAD_CONTENT_ENCODING */
    case 92: /* HTTP2_STREAM */
    case 95: /* HTTP3 */
        return "protocol";
    case 1:  /* UNSUPPORTED_PROTOCOL: the URL's scheme, or an HTTP/0.9 reply */
        if (curl_easy_getinfo(s->curl, CURLINFO_REQUEST_SIZE, &request_size) == CURLE_OK
            && request_size > 0)
            return "protocol";
        return "config";
    case 2:  /* FAILED_INIT */
    case 3:  /* URL_MALFORMAT */
    case 4:  /* NOT_BUILT_IN */
    case 43: /* BAD_FUNCTION_ARGUMENT */
    case 48: /* UNKNOWN_OPTION */
    case 93: /* RECURSIVE_API_CALL */
        return "config";
    case 56: /* RECV_ERROR: also a refused CONNECT and bad chunked framing */
        if (proxied && curl_easy_getinfo(s->curl, CURLINFO_HTTP_CONNECTCODE, &connect_code) == CURLE_OK
            && connect_code != 0 && (connect_code < 200 || connect_code > 299))
            return "proxy";
        /* fall through */
    case 55: /* SEND_ERROR */
        /* The server's TLS 1.3 alert that it wants a client certificate
         * arrives as a read/write error after the handshake. */
        if (strstr(s->errbuf, "certificate required") != NULL)
            return "credentials";
        if (rc == CURLE_RECV_ERROR && strstr(s->errbuf, "chunk") != NULL)
            return "protocol";
        return "network";
    default: /* GOT_NOTHING, SEND_FAIL_REWIND, AGAIN, … */
        return "network";
    }
}

static const char *what_failed(const char *kind)
{
    static const char *const whats[][2] = {
        {"resolve", "could not resolve host"},
        {"proxy", "proxy failed"},
        {"connect", "could not connect"},
        {"tls", "TLS failed"},
        {"credentials", "client certificate or key unusable"},
        {"timeout", "request timed out"},
        {"too_large", "response too large"},
        {"protocol", "malformed response"},
        {"config", "request rejected"},
        {"oom", "out of memory"},
        {NULL, NULL}
    };
    int i;
    for (i = 0; whats[i][0] != NULL; i++)
        if (strcmp(whats[i][0], kind) == 0)
            return whats[i][1];
    return "network error";
}

static int push_curl_failure(lua_State *L, http_session *s, CURLcode rc)
{
    char msg[CURL_ERROR_SIZE + 256];
    char detail[CURL_ERROR_SIZE + 64];
    const char *kind = kind_of(s, rc);
    size_t n;

    if (s->body_overflow)
        snprintf(detail, sizeof detail, "body exceeds max_body (%lu bytes)",
                 (unsigned long)s->max_body);
    else if (s->head_overflow)
        snprintf(detail, sizeof detail, "headers exceed %d bytes", HEAD_MAX);
    else if (s->oom)
        snprintf(detail, sizeof detail, "cannot grow the response buffer");
    else if (s->errbuf[0] != '\0')
        snprintf(detail, sizeof detail, "%s", s->errbuf);
    else
        snprintf(detail, sizeof detail, "%s", curl_easy_strerror(rc));
    n = strlen(detail);
    while (n > 0 && (detail[n - 1] == '\n' || detail[n - 1] == '\r' || detail[n - 1] == ' '))
        detail[--n] = '\0';

    snprintf(msg, sizeof msg, "%s: %s (%s %d)", what_failed(kind), detail,
             curl_code_name((int)rc), (int)rc);
    dps_push_failure(L, kind, msg);
    lua_pushinteger(L, (lua_Integer)rc);
    lua_setfield(L, -2, "curl_code");
    return 3;
}

/* ------------------------------------------------------------------------ */
/* Requests                                                                  */

static int is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Raises on a header table entry that cannot be sent as is. */
static void check_headers(lua_State *L, int idx)
{
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        const char *name, *value;
        size_t nlen, vlen, i;
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_argerror(L, idx, "header names must be strings");
        name = lua_tolstring(L, -2, &nlen);
        if (nlen == 0)
            luaL_argerror(L, idx, "header names must not be empty");
        for (i = 0; i < nlen; i++)
            if (!is_tchar((unsigned char)name[i]))
                luaL_argerror(L, idx, "header names must be tokens (no spaces, colons, CR, LF or NUL)");
        if (ascii_ieq(name, nlen, "content-length") || ascii_ieq(name, nlen, "transfer-encoding")
            || ascii_ieq(name, nlen, "expect")) {
            lua_pushfstring(L, "header '%s' is set by the session", name);
            luaL_argerror(L, idx, lua_tostring(L, -1));
        }
        /* Values are not echoed: an Authorization value is a secret. */
        if (lua_type(L, -1) != LUA_TSTRING) {
            lua_pushfstring(L, "header '%s' must be a string, got %s", name, luaL_typename(L, -1));
            luaL_argerror(L, idx, lua_tostring(L, -1));
        }
        value = lua_tolstring(L, -1, &vlen);
        for (i = 0; i < vlen; i++) {
            if (value[i] == '\r' || value[i] == '\n' || value[i] == '\0') {
                lua_pushfstring(L, "header '%s' must not contain CR, LF or NUL", name);
                luaL_argerror(L, idx, lua_tostring(L, -1));
            }
        }
        lua_pop(L, 1);
    }
}

/* Appends "Name: value" ("Name;" for an empty value) to s->headers.
 * Returns 0, or -1 on OOM.  Raises nothing. */
static int append_header(http_session *s, const char *name, size_t nlen,
                         const char *value, size_t vlen)
{
    struct curl_slist *list;
    size_t n = nlen + 2 + vlen + 1;
    char *line = malloc(n);
    if (line == NULL)
        return -1;
    memcpy(line, name, nlen);
    if (vlen == 0) {
        line[nlen] = ';';
        line[nlen + 1] = '\0';
    } else {
        line[nlen] = ':';
        line[nlen + 1] = ' ';
        memcpy(line + nlen + 2, value, vlen);
        line[nlen + 2 + vlen] = '\0';
    }
    list = curl_slist_append(s->headers, line);
    dps_wipe(line, n);
    free(line);
    if (list == NULL)
        return -1;
    s->headers = list;
    return 0;
}

/* Builds the request header list in s->headers from the checked table at
 * idx (0: none).  Returns 0, or -1 on OOM.  Raises nothing: the table was
 * validated and the stack has room. */
static int build_headers(lua_State *L, http_session *s, int idx, int with_body)
{
    struct curl_slist *list;
    int has_type = 0;
    if (idx != 0) {
        lua_pushnil(L);
        while (lua_next(L, idx) != 0) {
            size_t nlen, vlen;
            const char *name = lua_tolstring(L, -2, &nlen);
            const char *value = lua_tolstring(L, -1, &vlen);
            if (ascii_ieq(name, nlen, "content-type"))
                has_type = 1;
            if (append_header(s, name, nlen, value, vlen) != 0) {
                lua_pop(L, 2);
                return -1;
            }
            lua_pop(L, 1);
        }
    }
    /* "Name:" removes a header libcurl would add: never wait for
     * 100-continue, and no form-urlencoded default type on a body. */
    list = curl_slist_append(s->headers, "Expect:");
    if (list == NULL)
        return -1;
    s->headers = list;
    if (with_body && !has_type) {
        list = curl_slist_append(s->headers, "Content-Type:");
        if (list == NULL)
            return -1;
        s->headers = list;
    }
    return 0;
}

/* Pushes the response headers of s->head as a table (names lower-cased,
 * repeated names joined with ", ", folded lines unfolded). */
static void push_headers(lua_State *L, http_session *s)
{
    dps_headers_iter it;
    dps_header_field f;

    lua_newtable(L);
    dps_headers_begin(&it, s->head.data, s->head.len);
    while (dps_headers_next(&it, &f)) {
        lua_pushlstring(L, f.name, f.name_len);
        lua_pushvalue(L, -1);
        lua_rawget(L, -3);
        if (lua_type(L, -1) == LUA_TSTRING) {
            lua_pushliteral(L, ", ");
            lua_pushlstring(L, f.value, f.value_len);
            lua_concat(L, 3);
        } else {
            lua_pop(L, 1);
            lua_pushlstring(L, f.value, f.value_len);
        }
        lua_rawset(L, -3);
    }
}

/***
 * Performs one HTTPS request on the session's kept connection.
 * @function Session:request
 * @tparam string method `"GET"`, `"PUT"` or `"POST"`
 * @tparam string url an `https://` URL
 * @tparam[opt] table headers name → string value; `Content-Length`,
 *   `Transfer-Encoding` and `Expect` are managed by the session
 * @tparam[opt] string body sent with its exact length (PUT and POST only)
 * @tparam[opt] number timeout seconds for this request (default: the
 *   session's `timeout`); the connect timeout is the smaller of this and
 *   `connect_timeout`
 * @treturn integer HTTP status (a status of 400 or more is a response, not a failure)
 * @treturn table response headers, names lower-cased, repeated ones joined with `", "`
 * @treturn string response body
 * @return[2] nil
 * @return[2] string message `"WHAT FAILED: DETAIL (CURLE_NAME n)"`, e.g.
 *   `"could not connect: … (CURLE_COULDNT_CONNECT 7)"`; never holds secrets
 * @return[2] table `{ kind = …, curl_code = n }`, kind one of `resolve`,
 *   `proxy`, `connect`, `tls`, `credentials`, `timeout`, `too_large`,
 *   `network`, `protocol`, `config`, `oom`
 * @raise on a closed session, an unknown method, a URL that is not a string
 *   or is empty or holds spaces or control characters, bad header names or values (CR, LF, NUL), a body on
 *   GET, a non-string body, or a timeout that is not a positive number.
 */
static int session_request(lua_State *L)
{
    static const char *const methods[] = {"GET", "PUT", "POST", NULL};
    http_session *s = check_open(L);
    int method = luaL_checkoption(L, 2, NULL, methods);
    size_t url_len, body_len = 0;
    const char *url = luaL_checklstring(L, 3, &url_len);
    const char *body = NULL;
    int has_headers = 0;
    size_t i;
    double timeout = s->timeout, connect_timeout;
    CURL *curl = s->curl;
    CURLcode rc;
    long status = 0, connects = 0;

    if (url_len == 0)
        luaL_argerror(L, 3, "URL must not be empty");
    for (i = 0; i < url_len; i++) {
        unsigned char c = (unsigned char)url[i];
        if (c <= 0x20 || c == 0x7f)
            luaL_argerror(L, 3, "URL must not contain spaces or control characters");
    }
    if (!lua_isnoneornil(L, 4)) {
        luaL_checktype(L, 4, LUA_TTABLE);
        has_headers = 1;
    }
    if (!lua_isnoneornil(L, 5)) {
        if (lua_type(L, 5) != LUA_TSTRING)
            luaL_argerror(L, 5, lua_pushfstring(L, "body must be a string, got %s", luaL_typename(L, 5)));
        body = lua_tolstring(L, 5, &body_len);
        if (method == 0)
            luaL_argerror(L, 5, "a GET request has no body");
    }
    if (!lua_isnoneornil(L, 6))
        timeout = check_positive(L, 6, 6, "timeout");
    lua_settop(L, 6);
    if (has_headers)
        check_headers(L, 4);
    luaL_checkstack(L, 8, "request");
    connect_timeout = s->connect_timeout < timeout ? s->connect_timeout : timeout;

    /* From here on nothing raises until the transfer is over. */
    buf_reset(&s->body);
    buf_reset(&s->head);
    s->body_overflow = s->head_overflow = s->oom = s->head_done = 0;
    s->errbuf[0] = '\0';
    if (s->headers != NULL) {
        free_header_list(s->headers);
        s->headers = NULL;
    }
    if (build_headers(L, s, has_headers ? 4 : 0, method != 0) != 0) {
        free_header_list(s->headers);
        s->headers = NULL;
        return push_curl_failure(L, s, CURLE_OUT_OF_MEMORY);
    }

    rc = curl_easy_setopt(curl, CURLOPT_URL, url);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(curl, CURLOPT_HTTPHEADER, s->headers);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, seconds_to_ms(timeout));
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, seconds_to_ms(connect_timeout));
    if (rc == CURLE_OK) {
        if (method == 0) {
            rc = curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
            if (rc == CURLE_OK)
                rc = curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, (char *)NULL);
        } else {
            rc = curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
            if (rc == CURLE_OK)
                rc = curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body != NULL ? body : "");
            if (rc == CURLE_OK)
                rc = curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method == 1 ? "PUT" : (char *)NULL);
        }
    }
    if (rc == CURLE_OK)
        rc = curl_easy_perform(curl);

    /* Detach what pointed into this call's arguments, drop the header list. */
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, (struct curl_slist *)NULL);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, (char *)NULL);
    free_header_list(s->headers);
    s->headers = NULL;

    s->requests += 1;
    if (curl_easy_getinfo(curl, CURLINFO_NUM_CONNECTS, &connects) == CURLE_OK && connects > 0)
        s->connects += (double)connects;

    if (rc != CURLE_OK) {
        push_curl_failure(L, s, rc);
        buf_reset(&s->body);
        buf_reset(&s->head);
        return 3;
    }

    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    lua_pushinteger(L, (lua_Integer)status);
    push_headers(L, s);
    lua_pushlstring(L, s->body.data != NULL ? s->body.data : "", s->body.len);
    buf_reset(&s->body);
    buf_reset(&s->head);
    return 3;
}

/***
 * Counters of the session, for specs and benchmarks.
 * @function Session:stats
 * @treturn table `{ requests = n, connects = n }`: transfers performed and
 *   new connections made (a kept connection reused adds no connect)
 * @raise on a closed session.
 */
static int session_stats(lua_State *L)
{
    http_session *s = check_open(L);
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, (lua_Integer)s->requests);
    lua_setfield(L, -2, "requests");
    lua_pushinteger(L, (lua_Integer)s->connects);
    lua_setfield(L, -2, "connects");
    return 1;
}

void dps_open_http(lua_State *L)
{
    static const luaL_Reg meta[] = {
        {"__gc", session_close},
#if LUA_VERSION_NUM >= 504
        {"__close", session_close},
#endif
        {"__tostring", session_tostring},
        {NULL, NULL}
    };
    static const luaL_Reg methods[] = {
        {"request", session_request},
        {"stats", session_stats},
        {"close", session_close},
        {NULL, NULL}
    };

    /* Refilled on every luaopen (busted reloads modules): same functions. */
    luaL_newmetatable(L, SESSION_MT);
    luaL_setfuncs(L, meta, 0);
    lua_pushliteral(L, SESSION_MT);
    lua_setfield(L, -2, "__name");
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);

    lua_pushcfunction(L, session_new);
    lua_setfield(L, -2, "session");
}
