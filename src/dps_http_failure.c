/*
 * A failed transfer as `nil, message, info`: the kind comes
 * from the list of codes in dps_curl_errors.h, settled by the transfer's
 * state where the code alone cannot tell.
 */
#include <stdio.h>
#include <string.h>

#include <curl/curl.h>

#include "dps_aux.h"
#include "dps_http.h"

/* The failure kinds and what the message says failed. */
#define DPS_KINDS(X)                                     \
    X(resolve, "could not resolve host")                 \
    X(proxy, "proxy failed")                             \
    X(connect, "could not connect")                      \
    X(tls, "TLS failed")                                 \
    X(credentials, "client certificate or key unusable") \
    X(timeout, "request timed out")                      \
    X(too_large, "response too large")                   \
    X(protocol, "malformed response")                    \
    X(config, "request rejected")                        \
    X(oom, "out of memory")                              \
    X(network, "network error")

/* Kinds first, then the rules of dps_curl_errors.h. */
enum {
#define KIND_ENUM(kind, what) KIND_##kind,
    DPS_KINDS(KIND_ENUM)
#undef KIND_ENUM
    KIND_DIAL, KIND_HANDSHAKE, KIND_WRITE, KIND_SCHEME, KIND_SEND, KIND_RECV, KIND_READ
};

static const struct {
    const char *kind, *what;
} kinds[] = {
#define KIND_ROW(kind, what) {#kind, what},
    DPS_KINDS(KIND_ROW)
#undef KIND_ROW
};

/* Each listed code with its name and its kind (or rule). */
static const struct {
    CURLcode code;
    const char *name;
    int kind;
} codes[] = {
#define DPS_CURLE(code, kind) {code, #code, KIND_##kind},
#include "dps_curl_errors.h"
#undef DPS_CURLE
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Whether libcurl's error text says the transport failed (reset, EOF)
 * rather than TLS itself: libcurl reports both as CURLE_SSL_CONNECT_ERROR
 * during a handshake.  The texts are libcurl's own ("Recv failure: …"),
 * OpenSSL's and mbedTLS's codes (SSL_CONN_EOF, NET_CONN_RESET,
 * NET_RECV_FAILED, NET_SEND_FAILED); anything else stays a TLS failure. */
static int transport_failed(const char *errbuf)
{
    static const char *const texts[] = {
        "Recv failure", "Send failure", "reset by peer", "Broken pipe", "SSL_ERROR_SYSCALL", "unexpected eof",
        "(-0x7280)", "(-0x0050)", "(-0x004C)", "(-0x004E)",
    };
    size_t i;

    for (i = 0; i < COUNT(texts); i++)
        if (strstr(errbuf, texts[i]) != NULL)
            return 1;
    return 0;
}

/* A proxy that answered CONNECT with a status other than 2xx. */
static int connect_refused(dps_transfer *t)
{
    long code = 0;
    return t->proxied && curl_easy_getinfo(t->curl, CURLINFO_HTTP_CONNECTCODE, &code) == CURLE_OK
           && code != 0 && (code < 200 || code > 299);
}

/* A request that went out: the reply was not HTTP (HTTP/0.9). */
static int request_sent(dps_transfer *t)
{
    long size = 0;
    return curl_easy_getinfo(t->curl, CURLINFO_REQUEST_SIZE, &size) == CURLE_OK && size > 0;
}

/* A reply whose head came and whose body stopped short of its
 * Content-Length, without a transport error said: libcurl on OpenSSL calls
 * it CURLE_PARTIAL_FILE (protocol), on mbedTLS a receive error. */
static int cut_short(dps_transfer *t)
{
    long status = 0;
    curl_off_t expected = -1, got = 0;

    return !transport_failed(t->errbuf)
           && curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK && status > 0
           && curl_easy_getinfo(t->curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &expected) == CURLE_OK
           && curl_easy_getinfo(t->curl, CURLINFO_SIZE_DOWNLOAD_T, &got) == CURLE_OK && expected > got;
}

/* Settles a rule of dps_curl_errors.h into a kind. */
static int settle(dps_transfer *t, int rule)
{
    /* The server's TLS 1.3 alert that it wants a client certificate
     * arrives as a read/write error after the handshake. */
    int cert_required = strstr(t->errbuf, "certificate required") != NULL;

    switch (rule) {
    case KIND_DIAL: /* with a tunnel only the proxy is dialled */
        return t->proxied ? KIND_proxy : KIND_connect;
    case KIND_HANDSHAKE:
        return transport_failed(t->errbuf) ? KIND_network : KIND_tls;
    case KIND_WRITE: /* one of our callbacks said why */
        return t->body_overflow || t->head_overflow ? KIND_too_large : KIND_oom;
    case KIND_SCHEME:
        return request_sent(t) ? KIND_protocol : KIND_config;
    case KIND_READ: /* our read callback, or the descriptor, said why */
        return t->file.err != 0 ? KIND_config : KIND_network;
    case KIND_RECV:
        if (connect_refused(t))
            return KIND_proxy;
        if (!cert_required && (strstr(t->errbuf, "chunk") != NULL || cut_short(t)))
            return KIND_protocol;
        /* fall through */
    case KIND_SEND:
        return cert_required ? KIND_credentials : KIND_network;
    default:
        return rule;
    }
}

/* The name ("CURLE_…", or "CURLE" for a code not listed) and kind of rc. */
static const char *classify(dps_transfer *t, CURLcode rc, int *kind)
{
    size_t i;
    for (i = 0; i < COUNT(codes); i++) {
        if (codes[i].code == rc) {
            *kind = settle(t, codes[i].kind);
            return codes[i].name;
        }
    }
    *kind = KIND_network;
    return "CURLE";
}

/* A certificate that does not fit: the host it was checked against, when
 * the TLS library's words leave it out (mbedTLS: "BADCERT_CN_MISMATCH"). */
static void name_host(dps_transfer *t, char *detail, size_t size)
{
    char *url = NULL;
    const char *host, *end;
    size_t n = strlen(detail), len;

    if (curl_easy_getinfo(t->curl, CURLINFO_EFFECTIVE_URL, &url) != CURLE_OK || url == NULL
        || (host = strstr(url, "://")) == NULL)
        return;
    host += 3;
    end = host[0] == '[' ? strchr(host, ']') : host + strcspn(host, ":/?#");
    if (end == NULL)
        return;
    len = (size_t)(end - host) + (host[0] == '[');
    if (len == 0 || len > 255)
        return;
    {
        char name[256];
        memcpy(name, host, len);
        name[len] = '\0';
        if (strstr(detail, name) == NULL && n + len + 12 < size)
            snprintf(detail + n, size - n, " (host %s)", name);
    }
}

/* Why the body's file could not be read: it ended early, or the system's
 * reason. */
static void describe_file(const dps_file_body *b, char *detail, size_t size)
{
    if (b->err == DPS_FILE_SHORT)
        snprintf(detail, size, "it ended %lu bytes into a range of %lu", (unsigned long)b->sent,
                 (unsigned long)b->length);
    else if (strerror_r(b->err, detail, size) != 0)
        snprintf(detail, size, "error %d", b->err);
}

/* What went wrong, in detail, without trailing blanks. */
static void describe(dps_transfer *t, CURLcode rc, char *detail, size_t size)
{
    size_t n;

    if (t->file.err != 0)
        describe_file(&t->file, detail, size);
    else if (t->body_overflow)
        snprintf(detail, size, "body exceeds max_body (%lu bytes)", (unsigned long)t->max_body);
    else if (t->head_overflow)
        snprintf(detail, size, "headers exceed %d bytes", DPS_HEAD_MAX);
    else if (t->oom)
        snprintf(detail, size, "cannot grow the response buffer");
    else if (t->errbuf[0] != '\0')
        snprintf(detail, size, "%s", t->errbuf);
    else
        snprintf(detail, size, "%s", curl_easy_strerror(rc));
    n = strlen(detail);
    while (n > 0 && (detail[n - 1] == '\n' || detail[n - 1] == '\r' || detail[n - 1] == ' '))
        detail[--n] = '\0';
    if (rc == CURLE_PEER_FAILED_VERIFICATION)
        name_host(t, detail, size);
}

int dps_http_push_failure(lua_State *L, dps_transfer *t, CURLcode rc)
{
    char msg[CURL_ERROR_SIZE + 256];
    char detail[CURL_ERROR_SIZE + 64];
    int kind = KIND_network;
    const char *name = classify(t, rc, &kind);

    describe(t, rc, detail, sizeof detail);
    snprintf(msg, sizeof msg, "%s: %s (%s %d)", t->file.err != 0 ? "cannot read the body's file" : kinds[kind].what,
             detail, name, (int)rc);
    dps_push_failure(L, kinds[kind].kind, msg);
    dps_set_integer(L, "curl_code", (lua_Integer)rc);
    return 3;
}
