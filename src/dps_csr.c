/***
 * Keys and certificates a device earns (DPS certificate issuance): a new EC
 * key, the PKCS#10 request DPS signs, and the facts of an issued
 * certificate and of a key, to tell when to renew and whether a certificate
 * belongs to a key.  Both crypto backends give the same answers (see
 * dps_crypto.h); the words and the encodings are this file's.
 * @module dps.core
 */
#include <string.h>

#include "dps_aux.h"
#include "dps_codec.h"
#include "dps_core.h"
#include "dps_crypto.h"

#define CSR_MAX_TEXT DPS_X509_MAX_PEM /* 1 MiB: keys and certificates as text */
#define CSR_CN_MAX 128 /* a registration ID */

static const char *const curve_names[] = {[DPS_CURVE_P256] = "P-256", [DPS_CURVE_P384] = "P-384"};

/* Argument arg: "P-384" (also when absent) or "P-256"; raises otherwise. */
static dps_curve check_curve(lua_State *L, int arg, const char *who)
{
    const char *name;

    if (lua_isnoneornil(L, arg))
        return DPS_CURVE_P384;
    name = lua_type(L, arg) == LUA_TSTRING ? lua_tostring(L, arg) : "";
    if (strcmp(name, curve_names[DPS_CURVE_P384]) == 0)
        return DPS_CURVE_P384;
    if (strcmp(name, curve_names[DPS_CURVE_P256]) == 0)
        return DPS_CURVE_P256;
    dps_misuse(L, NULL, "dps.core.%s: curve must be \"P-384\" or \"P-256\"", who);
    return DPS_CURVE_P384; /* not reached */
}

/* String argument arg, called name in messages; raises naming dps.core.WHO. */
static const char *check_text(lua_State *L, int arg, const char *who, const char *name, size_t *len)
{
    if (lua_type(L, arg) != LUA_TSTRING)
        dps_misuse(L, NULL, "dps.core.%s: %s must be a string, got %s", who, name, luaL_typename(L, arg));
    return lua_tolstring(L, arg, len);
}

/* The key (argument 1) and its optional password (argument pw_arg, nil or
 * a string); raises when they are not strings. */
static const char *check_key(lua_State *L, int pw_arg, const char *who, size_t *len, const char **pw,
                             size_t *pw_len)
{
    const char *key = check_text(L, 1, who, "key", len);

    *pw = NULL;
    *pw_len = 0;
    if (!lua_isnoneornil(L, pw_arg))
        *pw = check_text(L, pw_arg, who, "key_password", pw_len);
    return key;
}

/* What is wrong with a key, in the words of core.x509_credentials. */
static const char *key_problem(dps_x509_result r)
{
    switch (r) {
    case DPS_X509_KEY_NEEDS_PASSWORD:
        return "key is encrypted: give key_password";
    case DPS_X509_KEY_WRONG_PASSWORD:
        return "key could not be decrypted or read (wrong key_password?)";
    case DPS_X509_KEY_UNSUPPORTED:
        return "key is encrypted in a form the crypto library cannot decrypt: "
               "store it as traditional PEM (openssl pkey -traditional -aes256) or decrypted";
    case DPS_X509_KEY_NOT_EC:
        return "key is not an EC key on P-256 or P-384";
    case DPS_X509_FAILED:
        return "the crypto library could not sign a request with the key";
    default:
        return "key holds no PEM private key";
    }
}

/* t[k] = base64 of n bytes, t on top of the stack. */
static void set_base64(lua_State *L, const char *k, const unsigned char *bytes, size_t n)
{
    char b64[DPS_BASE64_ENCODED_SIZE(DPS_SHA256_SIZE)];

    lua_pushlstring(L, b64, dps_base64_encode(bytes, n, b64));
    lua_setfield(L, -2, k);
}

/***
 * A new EC private key for a certificate request.
 * @function ec_key
 * @tparam[opt="P-384"] string curve `"P-384"` or `"P-256"`
 * @treturn string the key as PEM text, SEC1 (`-----BEGIN EC PRIVATE KEY-----`,
 * named curve, not encrypted), as OpenSSL, mbedTLS and libcurl read it.
 * The C copies are wiped; the Lua string is the caller's to keep safe (write
 * it with `write_atomic`, mode 0600)
 * @return nil, message, `{ kind = "credentials" }` when the crypto library
 * could not make a key
 * @raise when `curve` is neither
 */
static int csr_ec_key(lua_State *L)
{
    char pem[DPS_EC_KEY_PEM_MAX];
    size_t n = dps_crypto_ec_key(check_curve(L, 1, "ec_key"), pem);

    if (n == 0)
        return dps_push_failure(L, "credentials", "the crypto library could not make a key");
    lua_pushlstring(L, pem, n);
    dps_wipe(pem, sizeof pem);
    return 1;
}

/* Whether cn is a registration ID: 1-128 characters of A-Z a-z 0-9 - . _ :
 * (dps.check's rule), none of which a distinguished name escapes. */
static int is_registration_id(const char *cn, size_t len)
{
    size_t i;

    if (len == 0 || len > CSR_CN_MAX)
        return 0;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)cn[i], letter = (unsigned char)(c | 0x20);
        if (!((letter >= 'a' && letter <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_'
              || c == ':'))
            return 0;
    }
    return 1;
}

/***
 * A PKCS#10 certificate signing request for DPS certificate issuance: the
 * subject is `CN=common_name` alone, the public key the key's, signed ECDSA
 * with SHA-384 for a P-384 key and SHA-256 for a P-256 key.
 * @function csr
 * @tparam string key PEM private key (SEC1 or PKCS#8, encrypted or not), EC on P-384 or P-256
 * @tparam string common_name the registration ID (1-128 characters of `A-Z a-z 0-9 - . _ :`)
 * @tparam[opt] string key_password for an encrypted key
 * @treturn string base64 of the request's DER (no PEM armour, no line breaks): the `csr` of a register body
 * @return nil, message, `{ kind = "credentials" }` when the key cannot be used (not PEM,
 * encrypted without the right password, not EC on those curves, longer than 1 MiB);
 * messages never quote key material
 * @raise when `key` or `common_name` is not a string, `common_name` is not a
 * registration ID, or `key_password` is neither nil nor a string
 */
static int csr_csr(lua_State *L)
{
    size_t key_len, cn_len, pw_len, der_len = 0;
    const char *pw, *key = check_key(L, 3, "csr", &key_len, &pw, &pw_len);
    const char *cn = check_text(L, 2, "csr", "common_name", &cn_len);
    unsigned char der[DPS_CSR_DER_MAX];
    char b64[DPS_BASE64_ENCODED_SIZE(DPS_CSR_DER_MAX)];
    dps_x509_result r;

    if (!is_registration_id(cn, cn_len))
        dps_misuse(L, NULL, "dps.core.csr: common_name must be a registration ID "
                            "(1-128 characters of A-Z a-z 0-9 - . _ :)");
    if (key_len > CSR_MAX_TEXT)
        return dps_push_failure(L, "credentials", "key is longer than 1 MiB");
    r = dps_crypto_csr(key, key_len, pw, pw_len, cn, cn_len, der, &der_len);
    if (r != DPS_X509_OK)
        return dps_push_failure(L, "credentials", key_problem(r));
    lua_pushlstring(L, b64, dps_base64_encode(der, der_len, b64));
    return 1;
}

/***
 * What a private key is: its curve and its public key's fingerprint, the
 * same as `cert_info`'s `public_key` of a certificate for this key (so
 * `key_info(key).public_key == cert_info(cert).public_key` says the
 * certificate belongs to the key).
 * @function key_info
 * @tparam string key PEM private key (SEC1 or PKCS#8, encrypted or not)
 * @tparam[opt] string key_password for an encrypted key
 * @treturn table `{ curve = "P-384" | "P-256", public_key = base64 of the SHA-256 of its
 * SubjectPublicKeyInfo (DER) }`
 * @return nil, message, `{ kind = "credentials" }` as `csr`
 * @raise when `key` is not a string, or `key_password` neither nil nor a string
 */
static int csr_key_info(lua_State *L)
{
    size_t key_len, pw_len;
    const char *pw, *key = check_key(L, 2, "key_info", &key_len, &pw, &pw_len);
    unsigned char spki[DPS_SHA256_SIZE];
    dps_curve curve;
    dps_x509_result r;

    if (key_len > CSR_MAX_TEXT)
        return dps_push_failure(L, "credentials", "key is longer than 1 MiB");
    r = dps_crypto_ec_key_facts(key, key_len, pw, pw_len, &curve, spki);
    if (r != DPS_X509_OK)
        return dps_push_failure(L, "credentials", key_problem(r));
    lua_createtable(L, 0, 2);
    dps_set_string(L, "curve", curve_names[curve]);
    set_base64(L, "public_key", spki, sizeof spki);
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Certificates                                                              */

static const char PEM_BEGIN[] = "-----BEGIN CERTIFICATE-----";
static const char PEM_END[] = "-----END CERTIFICATE-----";

/* Whether der is exactly one DER SEQUENCE: its tag, its length and its
 * contents, nothing after (a library would ignore trailing bytes). */
static int one_sequence(const unsigned char *der, size_t len)
{
    size_t n = 0, head = 2, i;

    if (len < 2 || der[0] != 0x30)
        return 0;
    if (der[1] < 0x80) {
        n = der[1];
    } else {
        head += der[1] & 0x7F;
        if (head == 2 || head > 5 || len < head) /* 1 to 3 length bytes: up to 16 MiB */
            return 0;
        for (i = 2; i < head; i++)
            n = (n << 8) | der[i];
    }
    return n == len - head;
}

/* The DER of text (the first CERTIFICATE block of a PEM text, or base64 of
 * DER) into der (DPS_BASE64_DECODED_MAX(len) bytes), using scratch (len
 * bytes); NULL, or what is wrong. */
static const char *der_of(const char *text, size_t len, char *scratch, unsigned char *der, size_t *der_len)
{
    const char *begin = strstr(text, PEM_BEGIN), *end, *why;
    size_t n = 0, pos;

    if (begin != NULL) {
        begin += sizeof PEM_BEGIN - 1;
        end = strstr(begin, PEM_END);
        if (end == NULL)
            return "certificate has a BEGIN CERTIFICATE line and no END CERTIFICATE line";
        for (; begin < end; begin++) /* the base64 lines, without their breaks */
            if (*begin != '\n' && *begin != '\r' && *begin != ' ' && *begin != '\t')
                scratch[n++] = *begin;
        text = scratch;
        len = n;
    }
    why = dps_base64_decode(text, len, der, der_len, &pos);
    if (why != NULL)
        return begin != NULL ? "certificate's PEM block is not base64" : "certificate is not base64";
    if (!one_sequence(der, *der_len))
        return "certificate is not one DER structure";
    return NULL;
}

/* Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's
 * days_from_civil), in 32-bit longs: years 1-9999 fit. */
static long days_from_civil(long y, long m, long d)
{
    long era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* t[k] = seconds since the epoch of u: an integer where lua_Integer has 64
 * bits (5.3, 5.4), else a number (5.1, LuaJIT: a double holds every date up
 * to 9999 exactly).  Dates after 2038 are right on 32-bit CPUs: no time_t,
 * and no conversion between a double and a 64-bit integer (Makefile, "Size"). */
static void set_epoch(lua_State *L, const char *k, const dps_utc *u)
{
    long days = days_from_civil(u->year, u->mon, u->day);
    long secs = u->hour * 3600L + u->min * 60L + u->sec;

#if LUA_VERSION_NUM >= 503 && defined(LUA_MAXINTEGER) && LUA_MAXINTEGER > 2147483647
    lua_pushinteger(L, (lua_Integer)days * 86400 + secs);
#else
    lua_pushnumber(L, (lua_Number)days * 86400.0 + (lua_Number)secs);
#endif
    lua_setfield(L, -2, k);
}

/* t.serial = the serial in upper-case hex, two digits a byte, no leading
 * zero bytes ("00" for zero, "-" before a negative one): as `openssl x509
 * -serial` prints it. */
static void set_serial(lua_State *L, const dps_cert_info *info)
{
    static const char hex[] = "0123456789ABCDEF";
    char text[2 * DPS_CERT_SERIAL_MAX + 4];
    size_t i = 0, n = 0;

    while (i + 1 < info->serial_len && info->serial[i] == 0)
        i++;
    if (info->serial_negative)
        text[n++] = '-';
    if (info->serial_len == 0)
        text[n++] = '0', text[n++] = '0';
    for (; i < info->serial_len; i++) {
        text[n++] = hex[info->serial[i] >> 4];
        text[n++] = hex[info->serial[i] & 0x0F];
    }
    lua_pushlstring(L, text, n);
    lua_setfield(L, -2, "serial");
}

/***
 * The facts of a certificate: when it is valid, its serial, its public
 * key's fingerprint (compare with `key_info`'s), its names.
 * @function cert_info
 * @tparam string cert a PEM text (its first `CERTIFICATE` block: a chain gives its first
 * certificate) or base64 of a DER certificate (an element of `issuedCertificateChain`)
 * @treturn table `{ not_before = epoch, not_after = epoch, serial = "hex" (upper case, as
 * `openssl x509 -serial`), public_key = base64 of the SHA-256 of its SubjectPublicKeyInfo (DER),
 * cn = subject CN ("" when none), subject = "CN=…, O=…", issuer = "CN=…" }`. Times are
 * seconds since 1970 (integers on Lua 5.3+), right past 2038 on 32-bit CPUs too.
 * `subject` and `issuer` are the crypto library's text (attributes in the
 * certificate's order): compare them with each other, not with text from elsewhere
 * @return nil, message, `{ kind = "protocol" }` for anything else: empty, over 1 MiB,
 * not base64, not exactly one DER structure, not a certificate the library reads
 * @raise only when `cert` is not a string
 */
static int csr_cert_info(lua_State *L)
{
    size_t len, der_len = 0;
    const char *text = check_text(L, 1, "cert_info", "cert", &len), *why;
    char *scratch;
    unsigned char *der;
    dps_cert_info info;

    if (len == 0)
        return dps_push_failure(L, "protocol", "certificate is empty");
    if (len > CSR_MAX_TEXT)
        return dps_push_failure(L, "protocol", "certificate is longer than 1 MiB");
    scratch = dps_newuserdata(L, len + DPS_BASE64_DECODED_MAX(len));
    der = (unsigned char *)scratch + len;
    why = der_of(text, len, scratch, der, &der_len);
    if (why != NULL)
        return dps_push_failure(L, "protocol", why);
    memset(&info, 0, sizeof info);
    if (dps_crypto_cert_info(der, der_len, &info) != 0)
        return dps_push_failure(L, "protocol", "certificate cannot be read as X.509");
    lua_createtable(L, 0, 7);
    set_epoch(L, "not_before", &info.not_before);
    set_epoch(L, "not_after", &info.not_after);
    set_serial(L, &info);
    set_base64(L, "public_key", info.spki_sha256, sizeof info.spki_sha256);
    dps_set_string(L, "cn", info.cn);
    dps_set_string(L, "subject", info.subject);
    dps_set_string(L, "issuer", info.issuer);
    return 1;
}

/* The functions this file adds to dps.core. */
static const luaL_Reg csr_functions[] = {
    {"cert_info", csr_cert_info},
    {"csr", csr_csr},
    {"ec_key", csr_ec_key},
    {"key_info", csr_key_info},
    {NULL, NULL},
};

void dps_open_csr(lua_State *L)
{
    luaL_setfuncs(L, csr_functions, 0);
}
