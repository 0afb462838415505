/***
 * Client-certificate checks for X.509 attestation: read the certificate (and
 * chain) and the private key, prove they belong together, and report the
 * subject CN, which is the device's registration ID.
 * @module dps.core
 */
#include <stdio.h>
#include <string.h>

#include "dps_aux.h"
#include "dps_core.h"
#include "dps_crypto.h"

/* Reads and checks (through the crypto backend); NULL on success, else what
 * is wrong, written into msg: the same words on every backend.  One format
 * per result, each taking what it needs of (WHAT, X, Y). */
static const char *inspect(const dps_pem_source *cert, const dps_pem_source *key, const char *pw,
                           size_t pw_len, dps_cert_facts *facts, char *msg, size_t msgsize)
{
    const char *what = key->file != NULL ? "key_file" : "key", *x = "", *y = "", *fmt;
    const char *cert_what = cert->file != NULL ? "cert_file" : "cert";

    switch (dps_crypto_x509_inspect(cert, key, pw, pw_len, facts)) {
    case DPS_X509_OK:
        return NULL;
    case DPS_X509_CERT_UNREADABLE:
        what = cert_what;
        key = cert;
        /* fall through */
    case DPS_X509_KEY_UNREADABLE:
        fmt = "cannot read %s%s%s"; /* "cannot read cert_file PATH", "cannot read key" */
        if (key->file != NULL) {
            x = " ";
            y = key->file;
        }
        break;
    case DPS_X509_CERT_NOT_PEM:
        what = cert_what;
        fmt = "%s holds no PEM certificate";
        break;
    case DPS_X509_KEY_NEEDS_PASSWORD:
        fmt = "%s is encrypted: give key_password";
        break;
    case DPS_X509_KEY_WRONG_PASSWORD:
        fmt = "%s could not be decrypted or read (wrong key_password?)";
        break;
    case DPS_X509_KEY_UNSUPPORTED:
        fmt = "%s is encrypted in a form %s cannot decrypt (AES inside PKCS#8): "
              "store it as traditional PEM (openssl pkey -traditional -aes256) or decrypted";
        x = dps_crypto_version();
        break;
    case DPS_X509_MISMATCH:
        fmt = "the private key does not belong to the certificate";
        break;
    default:
        fmt = "%s holds no PEM private key";
        break;
    }
    snprintf(msg, msgsize, fmt, what, x, y);
    return msg;
}

static void push_facts(lua_State *L, const dps_cert_facts *facts)
{
    lua_createtable(L, 0, 4);
    dps_set_string(L, "cn", facts->cn);
    lua_pushnumber(L, facts->not_before);
    lua_setfield(L, -2, "not_before");
    lua_pushnumber(L, facts->not_after);
    lua_setfield(L, -2, "not_after");
    dps_set_integer(L, "certificates", facts->certificates);
}

/* The client-certificate options: the only ones of this file. */
enum { CERT_FILE, CERT, KEY_FILE, KEY, KEY_PASSWORD, OPTION_COUNT };

static const char *const option_names[OPTION_COUNT] = {
    [CERT_FILE] = "cert_file", [CERT] = "cert", [KEY_FILE] = "key_file", [KEY] = "key",
    [KEY_PASSWORD] = "key_password",
};

/* The member of c that each option fills. */
static void fields_of(dps_credentials *c, const char **fields[OPTION_COUNT])
{
    fields[CERT_FILE] = &c->cert_file;
    fields[CERT] = &c->cert;
    fields[KEY_FILE] = &c->key_file;
    fields[KEY] = &c->key;
    fields[KEY_PASSWORD] = &c->key_password;
}

/* Raises on a key of the table at index 1 that is not one of option_names
 * (core.engine's other options, such as timeout, mean nothing here). */
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
        for (i = 0; i < OPTION_COUNT; i++)
            if (klen == strlen(option_names[i]) && memcmp(key, option_names[i], klen) == 0)
                break;
        if (i == OPTION_COUNT)
            dps_argerror(L, 1, "unknown option '%s'", key);
        lua_pop(L, 1);
    }
}

/* Reads the options of the table at index 1 into c (NULL where absent) and
 * len (0 where absent), with core.engine's checks and messages for the same
 * options: each a string, not empty, without NUL bytes; 'cert' and 'key' at
 * most DPS_X509_MAX_PEM bytes (a memory BIO takes an int length).  Raises
 * on misuse.  The values stay on the stack while their pointers are in use. */
static void read_options(lua_State *L, dps_credentials *c, size_t len[OPTION_COUNT])
{
    const char **fields[OPTION_COUNT];
    int i;

    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    reject_unknown(L);
    fields_of(c, fields);
    for (i = 0; i < OPTION_COUNT; i++) {
        const char *name = option_names[i], *p;
        *fields[i] = NULL;
        len[i] = 0;
        lua_getfield(L, 1, name);
        if (lua_isnil(L, -1))
            continue;
        if (lua_type(L, -1) != LUA_TSTRING)
            dps_argerror(L, 1, "option '%s' must be a string, got %s", name, luaL_typename(L, -1));
        p = lua_tolstring(L, -1, &len[i]);
        if (len[i] == 0)
            dps_argerror(L, 1, "option '%s' must not be empty", name);
        if (memchr(p, '\0', len[i]) != NULL)
            dps_argerror(L, 1, "option '%s' must not contain NUL bytes", name);
        if ((i == CERT || i == KEY) && len[i] > DPS_X509_MAX_PEM)
            dps_argerror(L, 1, "option '%s' must be at most 1 MiB", name);
        *fields[i] = p;
    }
}

/***
 * Check a client certificate and its key before they are used.
 * @function x509_credentials
 * @tparam table opts `cert_file` or `cert` (PEM, may hold the chain), `key_file` or `key` (PEM),
 * optional `key_password`, and nothing else
 * @treturn table `{ cn = …, not_before = epoch, not_after = epoch, certificates = n }`
 * @return nil, message, `{ kind = "credentials" }` when they cannot be used
 * (unreadable, not PEM, encrypted without the right password, not a pair);
 * messages never quote key material
 * @raise on any other option (`"unknown option 'NAME'"`), on a value that is
 * not a string, is empty or holds NUL bytes, on a PEM text over 1 MiB, on
 * options the rule excludes (see `credentials_problem`), and when there is
 * no certificate or no key
 */
static int x509_credentials(lua_State *L)
{
    size_t len[OPTION_COUNT];
    dps_credentials c;
    dps_pem_source cert, key;
    dps_cert_facts facts;
    char msg[512];
    const char *failed;

    read_options(L, &c, len);
    dps_check_credentials(L, 1, &c, 1); /* here a certificate needs its key */

    memset(&facts, 0, sizeof facts);
    cert.file = c.cert_file;
    cert.pem = c.cert;
    cert.len = len[CERT];
    key.file = c.key_file;
    key.pem = c.key;
    key.len = len[KEY];
    failed = inspect(&cert, &key, c.key_password, len[KEY_PASSWORD], &facts, msg, sizeof msg);
    if (failed != NULL)
        return dps_push_failure(L, "credentials", failed);
    push_facts(L, &facts);
    return 1;
}

/***
 * What breaks the rule of the client-certificate options, without reading
 * any file: 'cert' and 'cert_file' exclude each other, as do 'key' and
 * 'key_file'; a key or a password needs a certificate, and a certificate
 * needs its key.  The one place the rule is written: `core.engine` and
 * `x509_credentials` raise on the same text, and `dps.new` says it in its
 * own name.
 * @function credentials_problem
 * @tparam table opts any of `cert_file`, `cert`, `key_file`, `key`, `key_password`
 * @treturn ?string nil when the options fit, else what is wrong
 */
static int credentials_problem(lua_State *L)
{
    dps_credentials c;
    const char **fields[OPTION_COUNT];
    const char *problem;
    int i;

    luaL_checktype(L, 1, LUA_TTABLE);
    fields_of(&c, fields);
    for (i = 0; i < OPTION_COUNT; i++) {
        lua_getfield(L, 1, option_names[i]);
        *fields[i] = lua_isnil(L, -1) ? NULL : option_names[i]; /* only presence counts */
        lua_pop(L, 1);
    }
    problem = dps_credentials_problem(&c, c.cert != NULL || c.cert_file != NULL);
    if (problem == NULL)
        luaL_pushfail(L);
    else
        lua_pushstring(L, problem);
    return 1;
}

/* The functions this file adds to dps.core. */
static const luaL_Reg x509_functions[] = {
    {"credentials_problem", credentials_problem},
    {"x509_credentials", x509_credentials},
    {NULL, NULL},
};

void dps_open_x509(lua_State *L)
{
    luaL_setfuncs(L, x509_functions, 0);
}
