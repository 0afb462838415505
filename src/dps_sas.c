/***
 * HMAC-SHA256 signing, derived device keys and SAS tokens.  Decoded key bytes
 * live in a scratch buffer that is wiped before anything can raise, and in
 * the keyed HMAC context of the Lua state until another key replaces them or
 * `forget_keys` drops them.
 * @module dps.core
 */
#include <stdio.h>
#include <string.h>

#include "dps_aux.h"
#include "dps_codec.h"
#include "dps_core.h"
#include "dps_crypto.h"
#include "dps_sas.h"

#define SAS_MAX_KEY_TEXT DPS_SAS_MAX_KEY_TEXT
#define SAS_MAX_EXPIRY 9007199254740991.0 /* 2^53 - 1: exact in every Lua */
#define SAS_MAC_SIZE DPS_CRYPTO_MAC_SIZE
#define HMAC_FAILED "could not be used by the crypto library's HMAC"
#define KEY_TOO_LONG "is too long (at most 1024 base64 characters)"

/* Scratch layout of dps_sas_build, sized by the URI and key name:
 * sr "\n" se | skn | token | why (DPS_SAS_SCRATCH_FOR). */
#define SAS_SR_CAP(uri_len) (DPS_PERCENT_ENCODED_MAX(uri_len) + 1 + 32)
#define SAS_SKN_CAP(name_len) DPS_PERCENT_ENCODED_MAX(name_len)
#define SAS_SIG_CAP DPS_PERCENT_ENCODED_MAX(DPS_BASE64_ENCODED_SIZE(SAS_MAC_SIZE))
/* Tokens of URIs up to about 280 bytes are built on the C stack (no
 * allocation, nothing for the collector); longer ones in a userdata. */
#define SAS_STACK_SCRATCH 2048

#define WHY_SIZE DPS_SAS_WHY_SIZE

/*
 * The rules of a key's text, in one place: at most SAS_MAX_KEY_TEXT
 * characters of strict base64, after one trailing line end ("\n" or
 * "\r\n": a key file read whole).  Decodes into key (wiped by the caller);
 * returns NULL or what is wrong, to follow the key's name, with the
 * position of a stray character (why holds that text); never the key.
 */
static const char *decode_key(const char *text, size_t len,
                              unsigned char key[DPS_BASE64_DECODED_MAX(SAS_MAX_KEY_TEXT)], size_t *keylen,
                              char why[WHY_SIZE])
{
    size_t pos = 0;
    const char *problem;

    if (len > 0 && text[len - 1] == '\n') {
        len--;
        if (len > 0 && text[len - 1] == '\r')
            len--;
    }
    if (len > SAS_MAX_KEY_TEXT)
        return KEY_TOO_LONG;
    problem = dps_base64_decode(text, len, key, keylen, &pos);
    if (problem == NULL || pos == 0)
        return problem;
    snprintf(why, WHY_SIZE, "%s at position %lu", problem, (unsigned long)pos);
    return why;
}

/* Argument arg as a key's text; raises with its name, never its content. */
static const char *check_key(lua_State *L, int arg, const char *who, const char *name, size_t *len)
{
    if (lua_type(L, arg) != LUA_TSTRING)
        dps_misuse(L, who, "%s must be a base64 string, got %s", name, luaL_typename(L, arg));
    return lua_tolstring(L, arg, len);
}

/* The HMAC of a Lua state (one userdata, an upvalue of the signing
 * functions): the backend's keyed context (dps_crypto.h), made at the first
 * signature and rekeyed only when the key changes.  It keeps the key of the
 * last call (the context holds the decoded key; its text is kept to
 * recognise it) until forget_keys or the state's close drop both. */
struct dps_hmac {
    dps_crypto_hmac *ctx; /* NULL: none yet, or forgotten */
    char key_text[SAS_MAX_KEY_TEXT];
    size_t key_len; /* 0: no key set */
};

#define HMAC_MT "dps.core.Hmac"

/* Frees the keyed context (the backend wipes it) and wipes the key's text;
 * the next signature makes a new context.  Idempotent. */
static void hmac_forget(dps_hmac *h)
{
    dps_crypto_hmac_free(h->ctx);
    h->ctx = NULL;
    dps_wipe(h->key_text, sizeof h->key_text);
    h->key_len = 0;
}

static int hmac_gc(lua_State *L)
{
    hmac_forget((dps_hmac *)luaL_checkudata(L, 1, HMAC_MT));
    return 0;
}

/* HMAC-SHA256 with a base64 key into mac; wipes the decoded key.  With h
 * (may be NULL: the fuzz targets) the context of the Lua state is used
 * (made now if there is none), rekeyed only when the key is not the last
 * one; without a context (the library failed) one-shot HMAC.  A problem
 * may be written into why. */
static const char *sign(dps_hmac *h, const char *key_text, size_t key_len,
                        const unsigned char *msg, size_t msg_len,
                        unsigned char mac[SAS_MAC_SIZE], char why[WHY_SIZE])
{
    unsigned char key[DPS_BASE64_DECODED_MAX(SAS_MAX_KEY_TEXT)];
    size_t keylen = 0;
    const char *problem;
    int keyed, rc;

    if (h != NULL && h->ctx == NULL) {
        h->ctx = dps_crypto_hmac_new();
        h->key_len = 0;
    }
    keyed = h != NULL && h->ctx != NULL;

    if (keyed && h->key_len != 0 && h->key_len == key_len && dps_memeq(h->key_text, key_text, key_len)) {
        rc = dps_crypto_hmac_init(h->ctx, NULL, 0); /* the same key: only reset */
    } else {
        if (keyed)
            h->key_len = 0;
        problem = decode_key(key_text, key_len, key, &keylen, why);
        if (problem != NULL) {
            dps_wipe(key, sizeof key);
            return problem;
        }
        rc = keyed ? dps_crypto_hmac_init(h->ctx, key, keylen) : dps_crypto_hmac_once(key, keylen, msg, msg_len, mac);
        dps_wipe(key, sizeof key);
        /* The text is kept to recognise the key (with a trailing line end
         * it may be 2 bytes longer than the buffer: then it is not kept). */
        if (keyed && rc == 0 && key_len <= sizeof h->key_text) {
            memcpy(h->key_text, key_text, key_len);
            h->key_len = key_len;
        }
    }
    if (keyed && rc == 0)
        rc = dps_crypto_hmac_sign(h->ctx, msg, msg_len, mac);
    return rc == 0 ? NULL : HMAC_FAILED;
}

/* The HMAC context of the calling function (its first upvalue). */
static dps_hmac *state_hmac(lua_State *L)
{
    return (dps_hmac *)lua_touserdata(L, lua_upvalueindex(1));
}

/***
 * What is wrong with a key's text, without raising and without keeping the
 * decoded bytes (they are wiped): for checking a key before it is used.
 * @function key_problem
 * @tparam string text the key, base64; one trailing line end (a key file
 *   read whole) is allowed
 * @treturn nil|string nil for a usable key, else what is wrong, to follow
 *   the key's name, with the position of a stray character (`"has a line
 *   break at position 77"`, `"has a quote mark at position 1"`); never
 *   quotes the key
 */
static int sas_key_problem(lua_State *L)
{
    size_t len, keylen = 0;
    const char *text = luaL_checklstring(L, 1, &len);
    unsigned char key[DPS_BASE64_DECODED_MAX(SAS_MAX_KEY_TEXT)];
    char why[WHY_SIZE];
    const char *problem = decode_key(text, len, key, &keylen, why);

    dps_wipe(key, sizeof key);
    if (problem == NULL)
        lua_pushnil(L);
    else
        lua_pushstring(L, problem);
    return 1;
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

    if (dps_crypto_hmac_once((const unsigned char *)key, keylen, (const unsigned char *)msg, msglen, mac) != 0)
        return luaL_error(L, "dps.core: HMAC-SHA256 failed in %s", dps_crypto_version());
    lua_pushlstring(L, (const char *)mac, sizeof mac);
    dps_wipe(mac, sizeof mac);
    return 1;
}

/***
 * The device key of an enrollment-group member:
 * base64(HMAC-SHA256(base64-decode(group_key), registration_id)).
 * @function derive_key
 * @tparam string group_key base64
 * @tparam string registration_id used byte for byte
 * @tparam[opt] string who the public function calling on its caller's behalf
 *   (`"dps.derive_key"`): messages then start with it and blame its caller
 * @treturn string the device key, base64
 * @raise when group_key is not base64 (the message never quotes it)
 */
static int sas_derive_key(lua_State *L)
{
    const char *who = luaL_optstring(L, 3, NULL);
    size_t key_len, id_len, n;
    const char *key_text = check_key(L, 1, who, "group_key", &key_len);
    const char *id = dps_check_string(L, 2, who, "registration_id", &id_len);
    unsigned char mac[SAS_MAC_SIZE];
    char out[DPS_BASE64_ENCODED_SIZE(SAS_MAC_SIZE)];
    char why[WHY_SIZE];
    const char *problem = sign(state_hmac(L), key_text, key_len, (const unsigned char *)id, id_len, mac, why);

    if (problem != NULL)
        return dps_misuse(L, who, "group_key %s", problem);
    n = dps_base64_encode(mac, sizeof mac, out);
    dps_wipe(mac, sizeof mac);
    lua_pushlstring(L, out, n);
    dps_wipe(out, sizeof out);
    return 1;
}

/* e (0 to 2^53-1) as an integer, or -1 when it has a fraction, by
 * conversions of 32 bits (exact: every part is a whole number below 2^32;
 * Makefile, "Size"). */
static long long whole_seconds(double e)
{
    long hi = (long)(e / 4294967296.0); /* below 2^21 */
    double rest = e - (double)hi * 4294967296.0;
    long mid = (long)(rest / 65536.0);
    double low = rest - (double)mid * 65536.0;
    long lo = (long)low;

    if ((double)lo != low)
        return -1;
    return (long long)(((unsigned long long)hi << 32) | ((unsigned long long)mid << 16) | (unsigned long long)lo);
}

/* An expiry that prints as a decimal integer on every Lua version: the one
 * place of the 0 to 2^53-1 rule. */
static long long check_expiry(lua_State *L, int arg, const char *who)
{
    int number = lua_type(L, arg) == LUA_TNUMBER;
    lua_Number e = number ? lua_tonumber(L, arg) : -1;
    long long whole = -1;

    if (e >= 0 && e <= SAS_MAX_EXPIRY) /* NaN fails both */
        whole = whole_seconds(e);
    if (whole < 0) /* an expiry is no secret: a number is shown */
        dps_misuse(L, who, "expiry must be a whole number of seconds since the epoch (0 to 2^53-1), got %s",
                   number ? lua_tostring(L, arg) : luaL_typename(L, arg));
    return whole;
}

/* The byte rules of a resource URI or key name: NULL or what is wrong. */
static const char *text_problem(const char *p, size_t len, size_t max)
{
    if (len == 0)
        return "must not be empty";
    if (len > max)
        return max == DPS_SAS_MAX_URI ? "must be at most 4096 bytes" : "must be at most 256 bytes";
    if (memchr(p, '\0', len) != NULL)
        return "must not contain NUL bytes";
    return NULL;
}

/* The decimal digits of a non-negative expiry into se (NUL-terminated, at
 * most 20 digits); returns their count.  By subtracting powers of ten, not
 * dividing (Makefile, "Size"), and faster than snprintf's %lld. */
static size_t format_expiry(long long expiry, char se[32])
{
    unsigned long long v = (unsigned long long)expiry, p[20];
    size_t n = 0;
    int k = 0;

    p[0] = 1;
    while (k < 19 && v >= p[k] && v - p[k] >= 9 * p[k]) { /* v >= 10 * p[k], no overflow */
        p[k + 1] = p[k] * 10;
        k++;
    }
    for (; k >= 0; k--) {
        char d = '0';
        while (v >= p[k]) {
            v -= p[k];
            d++;
        }
        se[n++] = d;
    }
    se[n] = '\0';
    return n;
}

const char *dps_sas_build(const char *uri, size_t uri_len, const char *key_text, size_t key_len,
                          long long expiry, const char *name, size_t name_len,
                          char *scratch, const char **token, size_t *token_len, const char **subject)
{
    return dps_sas_build_hmac(NULL, uri, uri_len, key_text, key_len, expiry, name, name_len, scratch, token,
                              token_len, subject);
}

const char *dps_sas_build_hmac(dps_hmac *h, const char *uri, size_t uri_len, const char *key_text,
                               size_t key_len, long long expiry, const char *name, size_t name_len,
                               char *scratch, const char **token, size_t *token_len, const char **subject)
{
    char se[32];
    size_t se_len;
    size_t sr_len, sig_len, skn_len = 0, pos = 0;
    unsigned char mac[SAS_MAC_SIZE];
    char sig_b64[DPS_BASE64_ENCODED_SIZE(SAS_MAC_SIZE)];
    char sig[SAS_SIG_CAP];
    char *sr, *skn, *out, *why;
    const char *problem;

    *subject = "resource_uri";
    if ((problem = text_problem(uri, uri_len, DPS_SAS_MAX_URI)) != NULL)
        return problem;
    *subject = "key_name";
    if (name != NULL && (problem = text_problem(name, name_len, DPS_SAS_MAX_KEY_NAME)) != NULL)
        return problem;
    *subject = "key";
    if (key_len > DPS_SAS_MAX_KEY_TEXT + 2) /* the rest: decode_key */
        return KEY_TOO_LONG;
    *subject = "expiry";
    if (expiry < 0)
        return "must not be negative";
    *subject = "percent-encoding";
    se_len = format_expiry(expiry, se);
    sr = scratch;
    skn = sr + SAS_SR_CAP(uri_len);
    out = skn + SAS_SKN_CAP(name != NULL ? name_len : 0);
    why = out + SAS_SR_CAP(uri_len) + SAS_SKN_CAP(name != NULL ? name_len : 0) + SAS_SIG_CAP + 64;

    sr_len = dps_percent_encode(uri, uri_len, sr);
    if (sr_len == (size_t)-1)
        return "failed (out of memory)";
    if (name != NULL) {
        skn_len = dps_percent_encode(name, name_len, skn);
        if (skn_len == (size_t)-1)
            return "failed (out of memory)";
    }
    sr[sr_len] = '\n';
    memcpy(sr + sr_len + 1, se, se_len);

    *subject = "key";
    problem = sign(h, key_text, key_len, (const unsigned char *)sr, sr_len + 1 + se_len, mac, why);
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
    APPEND(se, se_len);
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
 * @tparam string resource_uri not encoded, 1 to 4096 bytes, no NUL
 * @tparam string key base64
 * @tparam number expiry whole seconds since the epoch (0 to 2^53-1)
 * @tparam[opt] string key_name becomes `skn` (1 to 256 bytes, no NUL)
 * @tparam[opt] string who the public function calling on its caller's behalf
 *   (`"dps.sas_token"`): messages then start with it and blame its caller
 * @treturn string the token
 * @raise on a bad argument (messages never quote the key)
 */
static int sas_token(lua_State *L)
{
    const char *who = luaL_optstring(L, 5, NULL);
    size_t uri_len, key_len, name_len = 0, token_len = 0;
    const char *uri = dps_check_string(L, 1, who, "resource_uri", &uri_len);
    const char *key_text = check_key(L, 2, who, "key", &key_len);
    long long expiry = check_expiry(L, 3, who);
    const char *name = lua_isnoneornil(L, 4) ? NULL : dps_check_string(L, 4, who, "key_name", &name_len);
    const char *token = NULL, *problem, *subject = "";
    /* Scratch on the C stack or owned by Lua, so nothing leaks if a push
     * raises; sized by the arguments (the build refuses longer ones before
     * it writes). */
    char stack[SAS_STACK_SCRATCH];
    size_t need = DPS_SAS_SCRATCH_FOR(uri_len > DPS_SAS_MAX_URI ? 0 : uri_len,
                                      name_len > DPS_SAS_MAX_KEY_NAME ? 0 : name_len);
    char *scratch = need <= sizeof stack ? stack : dps_newuserdata(L, need);

    problem = dps_sas_build_hmac(state_hmac(L), uri, uri_len, key_text, key_len, expiry, name, name_len,
                                 scratch, &token, &token_len, &subject);
    /* The key, MAC and signature were wiped inside; of the scratch, only the
     * token (a bearer credential) is worth wiping. */
    if (problem != NULL)
        return dps_misuse(L, who, "%s %s", subject, problem);
    lua_pushlstring(L, token, token_len);
    dps_wipe((char *)token, token_len);
    return 1;
}

/***
 * Drops the signing key this Lua state keeps between calls: the keyed HMAC
 * context of the last `sas_token` or `derive_key` (which holds the decoded
 * key) is wiped and freed, and the copy of the key's text kept to recognise
 * it is wiped.  The next signature decodes its key again.  Safe to call at
 * any time and more than once.  Keys held as Lua strings (options, a
 * client's key until it is closed) are Lua's: this cannot wipe them.
 * @function forget_keys
 */
static int sas_forget_keys(lua_State *L)
{
    hmac_forget(state_hmac(L));
    return 0;
}

/* The functions this file adds to dps.core, each with the HMAC context of
 * the Lua state as its upvalue. */
static const luaL_Reg sas_functions[] = {
    {"hmac_sha256", sas_hmac_sha256},
    {"derive_key", sas_derive_key},
    {"sas_token", sas_token},
    {"key_problem", sas_key_problem},
    {"forget_keys", sas_forget_keys},
    {NULL, NULL},
};

/* The HMAC context of this Lua state, shared by the signing functions as
 * their upvalue; keyed at the first signature. */
static void push_hmac(lua_State *L)
{
    dps_hmac *h = (dps_hmac *)dps_newuserdata(L, sizeof *h);

    memset(h, 0, sizeof *h);
    if (luaL_newmetatable(L, HMAC_MT)) {
        lua_pushcfunction(L, hmac_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
}

void dps_open_sas(lua_State *L)
{
    push_hmac(L);
    luaL_setfuncs(L, sas_functions, 1);
}
