/*
 * A request's body: a string, copied by libcurl, or a range of an open Lua
 * file, `{ file = f, offset = n, length = n }`, that libcurl reads as it
 * sends (CURLOPT_READFUNCTION): a block of a large upload goes from the
 * disk to the socket a buffer at a time, never whole in memory, neither
 * in Lua nor in C.
 *
 * The transfer reads through a duplicate of the file's descriptor, made
 * when the request starts and closed when it ends: the Lua file may be
 * closed or collected meanwhile.  It reads with pread(), at the range's own
 * offsets, so the Lua file's position and buffer are left alone, and
 * libcurl can rewind the body (CURLOPT_SEEKFUNCTION) to send it again on a
 * fresh connection when a kept one died under the request.
 */
/* 64-bit file offsets on 32-bit targets too (see dps_fs.c).  Must come
 * before the first system header. */
#define _FILE_OFFSET_BITS 64

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <curl/curl.h>
#include <lualib.h>

#include "dps_aux.h"
#include "dps_http.h"

typedef char dps_http_body_needs_64_bit_offsets[sizeof(off_t) == 8 ? 1 : -1];

/* The largest offset taken (2^62: offset + length cannot overflow), and
 * the largest length (a block is at most 100 MiB: dps.upload). */
#define OFFSET_MAX ((curl_off_t)1 << 62)
#define LENGTH_MAX 0x7fffffffL
/* A body that is a file's range, as misuse messages say it. */
#define RANGE_SHAPE "{ file = an open file, offset = n, length = n < 2^31 } (whole numbers of bytes)"

/* ------------------------------------------------------------------------ */
/* libcurl callbacks: the descriptor and the range only, never the Lua API  */

/* (Only a request with a file body reads; once the body is done, fd is -1
 * and pread fails with EBADF.) */
static size_t read_cb(char *buf, size_t size, size_t nitems, void *userdata)
{
    dps_file_body *b = &((dps_transfer *)userdata)->file;
    size_t want = size * nitems, left = b->length - b->sent;
    ssize_t got;

    if (left == 0)
        return 0;
    if (want > left)
        want = left;
    do
        got = pread(b->fd, buf, want, (off_t)(b->offset + (curl_off_t)b->sent));
    while (got < 0 && errno == EINTR);
    if (got <= 0) {
        b->err = got < 0 ? errno : DPS_FILE_SHORT;
        return CURL_READFUNC_ABORT;
    }
    b->sent += (size_t)got;
    return (size_t)got;
}

/* To the start (or any point) of the range, for sending it again. */
static int seek_cb(void *userdata, curl_off_t offset, int origin)
{
    dps_file_body *b = &((dps_transfer *)userdata)->file;

    if (origin != SEEK_SET || offset < 0 || offset > (curl_off_t)b->length)
        return CURL_SEEKFUNC_CANTSEEK;
    b->sent = (size_t)offset;
    return CURL_SEEKFUNC_OK;
}

/* ------------------------------------------------------------------------ */
/* The argument                                                              */

/* The descriptor of the open Lua file at idx, -1 when it is something else
 * or closed.  A Lua file is a userdata with the registry's
 * LUA_FILEHANDLE metatable whose block starts with its FILE *: 5.1's FILE
 * **, LuaJIT's IOFileUD (both NULL once closed), 5.2's luaL_Stream (closef
 * NULL once closed). */
static int file_descriptor(lua_State *L, int idx)
{
    void *ud = lua_touserdata(L, idx);
    FILE *f = NULL;
    int is_file = 0;

    if (ud != NULL && lua_getmetatable(L, idx)) {
        luaL_getmetatable(L, LUA_FILEHANDLE);
        is_file = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
    }
#if LUA_VERSION_NUM >= 502
    if (is_file && ((luaL_Stream *)ud)->closef != NULL)
        f = ((luaL_Stream *)ud)->f;
#else
    if (is_file)
        f = *(FILE **)ud;
#endif
    return f != NULL ? fileno(f) : -1;
}

/* body[name], body the table at 5: a whole number from 0 to max that a
 * lua_Integer holds (no conversion from a double to a 64-bit integer here:
 * Makefile, "Size"); -1 when it is not one. */
static curl_off_t range_field(lua_State *L, const char *name, curl_off_t max)
{
    lua_Integer v = 0;
    curl_off_t n;
    int ok;

    lua_getfield(L, 5, name);
    ok = lua_type(L, -1) == LUA_TNUMBER;
#if LUA_VERSION_NUM >= 503
    if (ok)
        v = lua_tointegerx(L, -1, &ok);
#else
    if (ok) {
        v = lua_tointeger(L, -1);
        ok = (lua_Number)v == lua_tonumber(L, -1);
    }
#endif
    n = (curl_off_t)v; /* (a 32-bit lua_Integer never passes OFFSET_MAX) */
    lua_pop(L, 1);
    return ok && n <= max ? n : -1;
}

void dps_http_check_body(lua_State *L, dps_request *r)
{
    int type = lua_type(L, 5);
    curl_off_t length;

    r->body = NULL;
    r->body_len = 0;
    r->file = -1;
    r->offset = r->length = 0;
    if (type == LUA_TNONE || type == LUA_TNIL)
        return;
    if (type != LUA_TSTRING && type != LUA_TTABLE)
        dps_argerror(L, 5, "body must be a string or " RANGE_SHAPE ", got %s", luaL_typename(L, 5));
    if (r->method == DPS_GET || r->method == DPS_DELETE)
        dps_argerror(L, 5, "a %s request has no body", r->method == DPS_GET ? "GET" : "DELETE");
    if (type == LUA_TSTRING) {
        r->body = lua_tolstring(L, 5, &r->body_len);
        return;
    }
    lua_getfield(L, 5, "file");
    r->file = file_descriptor(L, -1);
    lua_pop(L, 1);
    r->offset = range_field(L, "offset", OFFSET_MAX);
    length = range_field(L, "length", LENGTH_MAX);
    if (r->file < 0 || r->offset < 0 || length < 0)
        luaL_argerror(L, 5, "body must be a string or " RANGE_SHAPE);
    r->length = (size_t)length;
}

/* ------------------------------------------------------------------------ */
/* On the handle                                                             */

void dps_http_body_done(dps_transfer *t)
{
    if (t->file.open)
        close(t->file.fd);
    t->file.open = 0;
    t->file.fd = -1;
}

CURLcode dps_http_set_body(dps_transfer *t, const dps_request *r)
{
    CURL *curl = t->curl;
    CURLcode rc;

    if (r->file < 0) {
        rc = curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
        /* copied: the request call returns before the transfer ends */
        if (rc == CURLE_OK)
            rc = curl_easy_setopt(curl, CURLOPT_COPYPOSTFIELDS, r->body != NULL ? r->body : "");
        return rc;
    }
    t->file.fd = fcntl(r->file, F_DUPFD_CLOEXEC, 0);
    if (t->file.fd < 0) {
        t->file.err = errno;
        return CURLE_READ_ERROR;
    }
    t->file.open = 1;
    t->file.offset = r->offset;
    t->file.length = r->length;
    t->file.sent = 0;
    /* a POST whose body the read callback gives (its verb set apart) */
    rc = curl_easy_setopt(curl, CURLOPT_POSTFIELDS, (char *)NULL);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->length);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(curl, CURLOPT_READFUNCTION, read_cb);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(curl, CURLOPT_READDATA, (void *)t);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(curl, CURLOPT_SEEKFUNCTION, seek_cb);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(curl, CURLOPT_SEEKDATA, (void *)t);
    return rc;
}
