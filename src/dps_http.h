/*
 * dps_http.h - what the files of an HTTPS transfer share (private to them
 * and to the engine, dps_engine.c, which drives the transfers): a slot's
 * handle and buffers, and the functions each file offers the others.
 *
 *   dps_http.c          a slot: buffers, libcurl callbacks, lifecycle (with
 *                       the security settings every handle has), a
 *                       request's arguments and its result
 *   dps_http_body.c     a request's body: a string, or a range of an open
 *                       file read by libcurl as it sends
 *   dps_http_headers.c  request header tables in
 *   dps_http_failure.c  a failed transfer as nil, message, info (kinds from
 *                       the list in dps_curl_errors.h)
 *
 * The response headers go to Lua as the block of kept lines, read into a
 * table there.  The options of core.engine (dps_http_options.h) are read
 * and applied on top of this: they use a slot, a slot knows nothing of them.
 */
#ifndef DPS_HTTP_H
#define DPS_HTTP_H

#include <stddef.h>

#include <curl/curl.h>

#include "dps_compat.h"

/* Header bytes per transfer (every line counts: 1xx responses, the final
 * headers, chunked trailers); more aborts the request as too_large. */
#define DPS_HEAD_MAX 65536

/* A growable byte buffer owned by a slot. */
typedef struct {
    char *data;
    size_t len;
    size_t cap;
} dps_buf;

/* A request body read from a range of a file as libcurl sends it: a
 * descriptor of the transfer's own (a duplicate of the caller's file's),
 * only during a request. */
typedef struct {
    int open;          /* fd is the transfer's (0 in a zeroed slot: none) */
    int fd;
    curl_off_t offset; /* where the range starts in the file */
    size_t length;     /* the range's bytes: the body's length */
    size_t sent;       /* bytes of it handed to libcurl so far */
    int err;           /* why the read stopped: an errno, DPS_FILE_SHORT, or 0 */
} dps_file_body;

/* dps_file_body.err: the file ended before the range did. */
#define DPS_FILE_SHORT (-1)

/* One slot's transfer: a libcurl easy handle kept for every request of the
 * slot, the buffers of the response and the flags its callbacks set. */
typedef struct {
    CURL *curl;                 /* NULL once closed */
    struct curl_slist *headers; /* request header list, only during a request */
    dps_file_body file;         /* the request's body when it is a file's range */
    dps_buf body;               /* body of the last response */
    dps_buf head;               /* header lines of the last response, "\n"-separated */
    size_t max_body;
    double connect_timeout;     /* seconds */
    double timeout;             /* seconds */
    double requests;            /* transfers performed */
    double connects;            /* sum of CURLINFO_NUM_CONNECTS */
    int body_overflow;          /* set by callbacks: body over max_body */
    int head_overflow;          /* header bytes over DPS_HEAD_MAX */
    int oom;                    /* a callback could not allocate */
    size_t head_seen;           /* header bytes of this transfer, kept or not */
    int head_done;              /* dps_headers_line state: blank line seen */
    int proxied;                /* connections go through an HTTP proxy */
    char errbuf[CURL_ERROR_SIZE];
} dps_transfer;

enum { DPS_GET, DPS_PUT, DPS_POST, DPS_DELETE };

/* One request's arguments (method, url, headers, body, timeout at stack
 * indices 2 to 6), checked. */
typedef struct {
    int method;
    const char *url;
    const char *body;  /* NULL: none (or a file's range) */
    size_t body_len;
    int file;          /* the caller's open file's descriptor (borrowed), -1: none */
    curl_off_t offset; /* the file's range */
    size_t length;
    int headers;       /* stack index of the header table, 0: none */
    double timeout, connect_timeout;
} dps_request;

/* An option libcurl refused, for dps_http_refused: none when the handle
 * itself could not be made. */
#define DPS_NO_OPTION ((CURLoption)0)

/* dps_http.c: seconds as whole milliseconds, rounded up, from 1 to 2^31-1. */
long dps_http_ms(double seconds);

/* dps_http.c: makes t's easy handle with its callbacks and the security
 * settings every handle has (https only, no redirects, peer and host
 * verified, TLS 1.2 or newer, no signals, no TLS key log).  On failure
 * *what is the option libcurl refused; the caller releases t. */
CURLcode dps_transfer_init(dps_transfer *t, CURLoption *what);

/* dps_http.c: reads and checks arguments 2 to 6 (method, url, headers,
 * body, timeout) into r; raises on misuse (the header table's contents:
 * dps_http_prepare). */
void dps_http_check_request(lua_State *L, dps_transfer *t, dps_request *r);

/* dps_http.c: clears what the last request left, builds the header list
 * and sets the request on t->curl.  Raises only on a bad header name or
 * value, before anything reaches libcurl. */
CURLcode dps_http_prepare(lua_State *L, dps_transfer *t, const dps_request *r);

/* dps_http.c: after the transfer: detaches the header list and body, counts
 * the transfer. */
void dps_http_finish(dps_transfer *t);

/* dps_http.c: pushes status, header block, body, or nil, message, info for
 * rc; empties the buffers.  Returns 3. */
int dps_http_push_result(lua_State *L, dps_transfer *t, CURLcode rc);

/* dps_http.c: releases everything; safe on a half-built or released slot. */
void dps_transfer_release(dps_transfer *t);

/* dps_http_body.c: reads and checks argument 5 of a request of method
 * r->method (nil, a string, or { file = an open Lua file, offset = n,
 * length = n }) into r; raises on misuse. */
void dps_http_check_body(lua_State *L, dps_request *r);

/* dps_http_body.c: sets r's body on t->curl: a string copied, or a file's
 * range read by libcurl's read callback from a duplicate of its descriptor
 * (CURLE_READ_ERROR, t->file.err set, when it cannot be had). */
CURLcode dps_http_set_body(dps_transfer *t, const dps_request *r);

/* dps_http_body.c: closes the transfer's descriptor of a file body, if
 * any (t->file.err stays, for the result). */
void dps_http_body_done(dps_transfer *t);

/* dps_http_headers.c: builds t->headers from the table at idx (0: none),
 * raising on a name or value that cannot be sent as is (what is built so
 * far stays in t->headers, freed by the next request or the release).
 * Returns 0, or -1 on OOM. */
int dps_http_build_headers(lua_State *L, dps_transfer *t, int idx, int with_body);

/* dps_http_headers.c: wipes every string of a header list, then frees it. */
void dps_http_free_headers(struct curl_slist *list);

/* dps_http_failure.c: pushes nil, message, { kind, curl_code }; returns 3. */
int dps_http_push_failure(lua_State *L, dps_transfer *t, CURLcode rc);

/* ASCII case-insensitive: a (alen bytes) equals the lower-case C string b. */
int dps_http_ieq(const char *a, size_t alen, const char *b);

#endif
