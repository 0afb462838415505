/*
 * A request's header table, checked as it is turned into a libcurl list.  (The
 * response's kept lines go to Lua as they are, to be read there.)
 */
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "dps_aux.h"
#include "dps_http.h"

int dps_http_ieq(const char *a, size_t alen, const char *b)
{
    size_t i;
    if (alen != strlen(b))
        return 0;
    for (i = 0; i < alen; i++) {
        int c = (unsigned char)a[i];
        if ((c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c) != b[i])
            return 0;
    }
    return 1;
}

static int is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Raises on a header name that cannot be sent or is the transfer's own. */
static void check_name(lua_State *L, int idx, const char *name, size_t nlen)
{
    size_t i;

    if (nlen == 0)
        luaL_argerror(L, idx, "header names must not be empty");
    for (i = 0; i < nlen; i++)
        if (!is_tchar((unsigned char)name[i]))
            luaL_argerror(L, idx, "header names must be tokens (no spaces, colons, CR, LF or NUL)");
    if (dps_http_ieq(name, nlen, "content-length") || dps_http_ieq(name, nlen, "transfer-encoding")
        || dps_http_ieq(name, nlen, "expect"))
        dps_argerror(L, idx, "header '%s' is set by the session", name);
}

void dps_http_free_headers(struct curl_slist *list)
{
    struct curl_slist *item;
    for (item = list; item != NULL; item = item->next)
        if (item->data != NULL)
            dps_wipe(item->data, strlen(item->data));
    curl_slist_free_all(list);
}

/* Appends line to t->headers.  Returns 0, or -1 on OOM. */
static int append_line(dps_transfer *t, const char *line)
{
    struct curl_slist *list = curl_slist_append(t->headers, line);
    if (list == NULL)
        return -1;
    t->headers = list;
    return 0;
}

/* Appends "Name: value" ("Name;" for an empty value).  0, or -1 on OOM. */
static int append_header(dps_transfer *t, const char *name, size_t nlen, const char *value, size_t vlen)
{
    size_t n = nlen + 2 + vlen + 1;
    char *line = malloc(n);
    int rc;

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
    rc = append_line(t, line);
    dps_wipe(line, n);
    free(line);
    return rc;
}

int dps_http_build_headers(lua_State *L, dps_transfer *t, int idx, int with_body)
{
    int has_type = 0;

    if (idx != 0) {
        lua_pushnil(L);
        while (lua_next(L, idx) != 0) {
            size_t nlen, vlen, i;
            const char *name, *value;
            if (lua_type(L, -2) != LUA_TSTRING)
                luaL_argerror(L, idx, "header names must be strings");
            name = lua_tolstring(L, -2, &nlen);
            check_name(L, idx, name, nlen);
            /* Values are not echoed: an Authorization value is a secret. */
            if (lua_type(L, -1) != LUA_TSTRING)
                dps_argerror(L, idx, "header '%s' must be a string, got %s", name, luaL_typename(L, -1));
            value = lua_tolstring(L, -1, &vlen);
            for (i = 0; i < vlen; i++)
                if (value[i] == '\r' || value[i] == '\n' || value[i] == '\0')
                    dps_argerror(L, idx, "header '%s' must not contain CR, LF or NUL", name);
            if (dps_http_ieq(name, nlen, "content-type"))
                has_type = 1;
            if (append_header(t, name, nlen, value, vlen) != 0) {
                lua_pop(L, 2);
                return -1;
            }
            lua_pop(L, 1);
        }
    }
    /* "Name:" removes a header libcurl would add: never wait for
     * 100-continue, and no form-urlencoded default type on a body. */
    if (append_line(t, "Expect:") != 0)
        return -1;
    if (with_body && !has_type)
        return append_line(t, "Content-Type:");
    return 0;
}
