/*
 * Helpers shared by the parts of dps.core (see dps_aux.h).
 */
#include <stdarg.h>

#include "dps_aux.h"
#include "dps_crypto.h"

int dps_push_failure(lua_State *L, const char *kind, const char *message)
{
    luaL_pushfail(L);
    lua_pushstring(L, message);
    lua_createtable(L, 0, 2);
    dps_set_string(L, "kind", kind);
    return 3;
}

void dps_set_string(lua_State *L, const char *k, const char *v)
{
    lua_pushstring(L, v);
    lua_setfield(L, -2, k);
}

void dps_set_integer(lua_State *L, const char *k, lua_Integer v)
{
    lua_pushinteger(L, v);
    lua_setfield(L, -2, k);
}

double dps_clock(clockid_t id)
{
    struct timespec ts;

    if (clock_gettime(id, &ts) != 0)
        return 0;
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void dps_wipe(void *p, size_t n)
{
    if (p != NULL && n > 0)
        dps_crypto_wipe(p, n);
}

int dps_memeq(const void *a, const void *b, size_t n)
{
    const volatile unsigned char *x = a, *y = b;
    unsigned char diff = 0;
    size_t i;

    for (i = 0; i < n; i++)
        diff |= (unsigned char)(x[i] ^ y[i]);
    return diff == 0;
}

int dps_misuse(lua_State *L, const char *who, const char *fmt, ...)
{
    va_list ap;

    if (who == NULL) {
        luaL_where(L, 1);
    } else {
        luaL_where(L, 2);
        lua_pushfstring(L, "%s: ", who);
    }
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    lua_concat(L, who == NULL ? 2 : 3);
    return lua_error(L);
}

const char *dps_check_string(lua_State *L, int arg, const char *who, const char *name, size_t *len)
{
    if (lua_type(L, arg) != LUA_TSTRING)
        dps_misuse(L, who, "%s must be a string, got %s", name, luaL_typename(L, arg));
    return lua_tolstring(L, arg, len);
}

const char *dps_credentials_problem(const dps_credentials *c, int need_pair)
{
    int has_cert = c->cert != NULL || c->cert_file != NULL;

    if (c->cert != NULL && c->cert_file != NULL)
        return "options 'cert' and 'cert_file' exclude each other";
    if (c->key != NULL && c->key_file != NULL)
        return "options 'key' and 'key_file' exclude each other";
    if (!has_cert && (c->key != NULL || c->key_file != NULL || c->key_password != NULL))
        return "options 'key', 'key_file' and 'key_password' need 'cert' or 'cert_file'";
    if (need_pair && !has_cert)
        return "give one of the options 'cert_file' and 'cert'";
    if (need_pair && c->key == NULL && c->key_file == NULL)
        return "give one of the options 'key_file' and 'key'";
    return NULL;
}

void dps_check_credentials(lua_State *L, int arg, const dps_credentials *c, int need_pair)
{
    const char *problem = dps_credentials_problem(c, need_pair);

    if (problem != NULL)
        luaL_argerror(L, arg, problem);
}
