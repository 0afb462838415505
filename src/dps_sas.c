/***
 * HMAC-SHA256 signing, derived device keys and SAS tokens.  Decoded key bytes
 * live only in a scratch buffer that is wiped before anything can raise.
 * @module dps.core
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "dps_codec.h"
#include "dps_core.h"
#include "dps_sas.h"

#define SAS_MAX_KEY_TEXT DPS_SAS_MAX_KEY_TEXT
#define SAS_MAX_EXPIRY 9007199254740991.0 /* 2^53 - 1: exact in every Lua */
#define SAS_MAC_SIZE 32

/* Scratch layout of dps_sas_build: sr "\n" se | skn | token. */
#define SAS_SR_CAP (DPS_PERCENT_ENCODED_MAX(DPS_SAS_MAX_URI) + 1 + 32)
#define SAS_SKN_CAP DPS_PERCENT_ENCODED_MAX(DPS_SAS_MAX_KEY_NAME)
#define SAS_SIG_CAP DPS_PERCENT_ENCODED_MAX(DPS_BASE64_ENCODED_SIZE(SAS_MAC_SIZE))

/*
 * Checks argument arg as a base64 key and returns its text; raises with the
 * argument's name, never its content.
 */
static const char *check_key(lua_State *L, int arg, const char *name, size_t *len)
{
    const char *key;

    if (lua_type(L, arg) != LUA_TSTRING)
        luaL_error(L, "%s must be a base64 string, got %s", name, luaL_typename(L, arg));
    key = lua_tolstring(L, arg, len);
    if (*len > SAS_MAX_KEY_TEXT)
        luaL_error(L, "%s is too long (at most %d base64 characters)", name, SAS_MAX_KEY_TEXT);
    return key;
}

/* HMAC-SHA256 with a base64 key into mac; wipes the decoded key. */
static const char *sign(const char *key_text, size_t key_len,
                        const unsigned char *msg, size_t msg_len,
                        unsigned char mac[SAS_MAC_SIZE])
{
    unsigned char key[DPS_BASE64_DECODED_MAX(SAS_MAX_KEY_TEXT)];
    size_t keylen = 0;
    unsigned int maclen = 0;
    const char *problem = dps_base64_decode(key_text, key_len, key, &keylen);

    if (problem == NULL &&
        HMAC(EVP_sha256(), key, (int)keylen, msg, msg_len, mac, &maclen) == NULL)
        problem = "could not be used by OpenSSL's HMAC";
    dps_wipe(key, sizeof key);
    return problem;
}

/***
 * Raw HMAC-SHA256.
 * @function hmac_sha256
 * @tparam string key raw key bytes
 * @tparam string message
 * @treturn string the 32-byte MAC
 */
static int sas_hmac_sha256(lua_State *L)
{
    size_t keylen, msglen;
    const char *key = luaL_checklstring(L, 1, &keylen);
    const char *msg = luaL_checklstring(L, 2, &msglen);
    unsigned char mac[SAS_MAC_SIZE];
    unsigned int maclen = 0;

    if (HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)msg, msglen, mac, &maclen) == NULL)
        return luaL_error(L, "dps.core: HMAC-SHA256 failed in OpenSSL");
    lua_pushlstring(L, (const char *)mac, maclen);
    dps_wipe(mac, sizeof mac);
    return 1;
}

/***
 * The device key of an enrollment-group member:
 * base64(HMAC-SHA256(base64-decode(group_key), registration_id)).
 * @function derive_key
 * @tparam string group_key base64
 * @tparam string registration_id used byte for byte
 * @treturn string the device key, base64
 * @raise when group_key is not base64 (the message never quotes it)
 */
static int sas_derive_key(lua_State *L)
{
    size_t key_len, id_len, n;
    const char *key_text = check_key(L, 1, "group_key", &key_len);
    const char *id = luaL_checklstring(L, 2, &id_len);
    unsigned char mac[SAS_MAC_SIZE];
    char out[DPS_BASE64_ENCODED_SIZE(SAS_MAC_SIZE)];
    const char *problem = sign(key_text, key_len, (const unsigned char *)id, id_len, mac);

    if (problem != NULL)
        return luaL_error(L, "group_key %s", problem);
    n = dps_base64_encode(mac, sizeof mac, out);
    dps_wipe(mac, sizeof mac);
    lua_pushlstring(L, out, n);
    dps_wipe(out, sizeof out);
    return 1;
}

/* An expiry that prints as a decimal integer on every Lua version. */
static long long check_expiry(lua_State *L, int arg)
{
    lua_Number e;

    if (lua_type(L, arg) != LUA_TNUMBER)
        luaL_error(L, "expiry must be a whole number of seconds since the epoch, got %s",
                   luaL_typename(L, arg));
    e = lua_tonumber(L, arg);
    if (e != e || e < 0 || e > SAS_MAX_EXPIRY || floor(e) != e)
        luaL_error(L, "expiry must be a whole number of seconds since the epoch (0 to 2^53-1)");
    return (long long)e;
}

const char *dps_sas_build(const char *uri, size_t uri_len, const char *key_text, size_t key_len,
                          long long expiry, const char *name, size_t name_len,
                          char *scratch, const char **token, size_t *token_len, const char **subject)
{
    char se[32];
    int se_len;
    size_t sr_len, sig_len, skn_len = 0, pos = 0;
    unsigned char mac[SAS_MAC_SIZE];
    char sig_b64[DPS_BASE64_ENCODED_SIZE(SAS_MAC_SIZE)];
    char sig[SAS_SIG_CAP];
    char *sr = scratch, *skn = scratch + SAS_SR_CAP, *out = skn + SAS_SKN_CAP;
    const char *problem;

    *subject = "resource_uri";
    if (uri_len == 0 || uri_len > DPS_SAS_MAX_URI)
        return "must be 1 to 4096 bytes";
    *subject = "key_name";
    if (name != NULL && (name_len == 0 || name_len > DPS_SAS_MAX_KEY_NAME))
        return "must be a non-empty string of at most 256 bytes";
    *subject = "key";
    if (key_len > DPS_SAS_MAX_KEY_TEXT)
        return "is too long";
    *subject = "expiry";
    if (expiry < 0)
        return "must not be negative";
    *subject = "percent-encoding";
    se_len = snprintf(se, sizeof se, "%lld", expiry);

    sr_len = dps_percent_encode(uri, uri_len, sr);
    if (sr_len == (size_t)-1)
        return "failed (out of memory)";
    if (name != NULL) {
        skn_len = dps_percent_encode(name, name_len, skn);
        if (skn_len == (size_t)-1)
            return "failed (out of memory)";
    }
    sr[sr_len] = '\n';
    memcpy(sr + sr_len + 1, se, (size_t)se_len);

    *subject = "key";
    problem = sign(key_text, key_len, (const unsigned char *)sr, sr_len + 1 + (size_t)se_len, mac);
    if (problem != NULL)
        return problem;
    *subject = "percent-encoding";
    dps_base64_encode(mac, sizeof mac, sig_b64);
    dps_wipe(mac, sizeof mac);
    sig_len = dps_percent_encode(sig_b64, strlen(sig_b64), sig);
    dps_wipe(sig_b64, sizeof sig_b64);
    if (sig_len == (size_t)-1)
        return "failed (out of memory)";

#define APPEND(p, n) (memcpy(out + pos, (p), (n)), pos += (n))
    APPEND("SharedAccessSignature sr=", 25);
    APPEND(sr, sr_len);
    APPEND("&sig=", 5);
    APPEND(sig, sig_len);
    APPEND("&se=", 4);
    APPEND(se, (size_t)se_len);
    if (name != NULL) {
        APPEND("&skn=", 5);
        APPEND(skn, skn_len);
    }
#undef APPEND
    dps_wipe(sig, sizeof sig);
    *token = out;
    *token_len = pos;
    return NULL;
}

/***
 * A SAS token: `SharedAccessSignature sr=…&sig=…&se=…[&skn=…]`, where `sr`
 * is the percent-encoded resource URI, the signed string is
 * `sr .. "\n" .. expiry`, and `sig` the percent-encoded base64 HMAC.
 * @function sas_token
 * @tparam string resource_uri not encoded
 * @tparam string key base64
 * @tparam number expiry whole seconds since the epoch
 * @tparam[opt] string key_name becomes `skn`
 * @treturn string the token
 * @raise on a bad argument (messages never quote the key)
 */
static int sas_token(lua_State *L)
{
    size_t uri_len, key_len, name_len = 0, token_len = 0;
    const char *uri = luaL_checklstring(L, 1, &uri_len);
    const char *key_text = check_key(L, 2, "key", &key_len);
    long long expiry = check_expiry(L, 3);
    const char *name = luaL_optlstring(L, 4, NULL, &name_len);
    const char *token = NULL, *problem, *subject = "";
    /* Scratch owned by Lua, so nothing leaks if a push raises. */
    char *scratch = dps_newuserdata(L, DPS_SAS_SCRATCH);

    problem = dps_sas_build(uri, uri_len, key_text, key_len, expiry, name, name_len, scratch,
                            &token, &token_len, &subject);
    /* The key, MAC and signature were wiped inside; of the scratch, only the
     * token (a bearer credential) is worth wiping. */
    if (problem != NULL)
        return luaL_error(L, "%s %s", subject, problem);
    lua_pushlstring(L, token, token_len);
    dps_wipe((char *)token, token_len);
    return 1;
}

void dps_open_sas(lua_State *L)
{
    static const luaL_Reg functions[] = {
        {"hmac_sha256", sas_hmac_sha256},
        {"derive_key", sas_derive_key},
        {"sas_token", sas_token},
        {NULL, NULL}
    };
    luaL_setfuncs(L, functions, 0);
}
