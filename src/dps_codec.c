/***
 * Encodings used by SAS tokens: base64 (the crypto backend) and RFC 3986
 * percent-encoding.
 * @module dps.core
 */
#include <string.h>


#include "dps_aux.h"
#include "dps_codec.h"
#include "dps_core.h"
#include "dps_crypto.h"

/* Inputs longer than this are refused; nothing in DPS comes close. */
#define CODEC_MAX_INPUT (1024 * 1024)

size_t dps_base64_encode(const unsigned char *in, size_t len, char *out)
{
    if (len == 0) {
        out[0] = '\0';
        return 0;
    }
    return dps_crypto_base64_encode(in, len, out);
}

/* The 6-bit value of a base64 character, or -1. */
static int base64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* What a byte outside the alphabet is, for messages: the usual mistakes
 * (a wrapped or quoted key) by name, the rest without quoting it. */
static const char *stray(unsigned char c)
{
    switch (c) {
    case '\n':
    case '\r':
        return "has a line break";
    case ' ':
        return "has a space";
    case '\t':
        return "has a tab";
    case '"':
    case '\'':
        return "has a quote mark";
    case '=':
        return "has padding before its end";
    default:
        return "has a character outside the base64 alphabet";
    }
}

const char *dps_base64_decode(const char *in, size_t len,
                              unsigned char *out, size_t *outlen, size_t *pos)
{
    size_t i, pad = 0;
    long n;

    *pos = 0;
    if (len == 0)
        return "must not be empty";
    if (len > CODEC_MAX_INPUT)
        return "is too long";
    /* Characters first, so a wrapped or quoted key says where it broke:
     * the first one that is neither base64 nor '=', then a misplaced '='. */
    for (i = 0; i < len; i++) {
        if (base64_value((unsigned char)in[i]) < 0 && in[i] != '=') {
            *pos = i + 1;
            return stray((unsigned char)in[i]);
        }
    }
    if (in[len - 1] == '=')
        pad = len >= 2 && in[len - 2] == '=' ? 2 : 1;
    for (i = 0; i < len - pad; i++) {
        if (in[i] == '=') {
            *pos = i + 1;
            return stray('=');
        }
    }
    if (len % 4 != 0)
        return "has a length that is not a multiple of 4";
    /* Canonical: the bits after the last whole byte are zero ("QQ==", not "QR=="). */
    if (pad > 0 && (base64_value((unsigned char)in[len - pad - 1]) & (pad == 2 ? 0x0F : 0x03)) != 0)
        return "is not canonical (non-zero bits after its last byte)";
    n = dps_crypto_base64_decode(in, len, out, DPS_BASE64_DECODED_MAX(len));
    if (n < 0)
        return "is not valid base64";
    *outlen = (size_t)n;
    return NULL;
}

/* RFC 3986's unreserved bytes, A-Z a-z 0-9 - . _ ~ (in ASCII whatever the
 * locale, unlike isalnum): the ones that stay as they are. */
static int unreserved(unsigned char c)
{
    unsigned char letter = (unsigned char)(c | 0x20); /* ASCII letters to lower case */
    return (letter >= 'a' && letter <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
           c == '~';
}

/* In place of libcurl's curl_easy_escape (same output), which allocated and
 * grew a buffer per call: a third of the time of a token went there. */
size_t dps_percent_encode(const char *in, size_t len, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t i, n = 0;

    if (len > ((size_t)-1 - 1) / 3)
        return (size_t)-1;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (unreserved(c)) {
            out[n++] = (char)c;
        } else {
            out[n++] = '%';
            out[n++] = hex[c >> 4];
            out[n++] = hex[c & 0x0F];
        }
    }
    out[n] = '\0';
    return n;
}

/***
 * Base64-encode a string (standard alphabet, with padding).
 * @function base64_encode
 * @tparam string data any bytes
 * @treturn string
 */
static int codec_base64_encode(lua_State *L)
{
    size_t len;
    const char *in = luaL_checklstring(L, 1, &len);
    char *out;

    luaL_argcheck(L, len <= CODEC_MAX_INPUT, 1, "input is too long");
    out = dps_newuserdata(L, DPS_BASE64_ENCODED_SIZE(len));
    lua_pushlstring(L, out, dps_base64_encode((const unsigned char *)in, len, out));
    return 1;
}

/***
 * Percent-encode per RFC 3986: `A-Z a-z 0-9 - . _ ~` stay, the rest becomes
 * `%XX` with upper-case hex.
 * @function url_encode
 * @tparam string text
 * @treturn string
 */
static int codec_url_encode(lua_State *L)
{
    size_t len, n;
    const char *in = luaL_checklstring(L, 1, &len);
    char *out;

    luaL_argcheck(L, len <= CODEC_MAX_INPUT, 1, "input is too long");
    out = dps_newuserdata(L, DPS_PERCENT_ENCODED_MAX(len));
    n = dps_percent_encode(in, len, out); /* cannot fail below CODEC_MAX_INPUT */
    lua_pushlstring(L, out, n);
    return 1;
}

/* The functions this file adds to dps.core. */
static const luaL_Reg codec_functions[] = {
    {"base64_encode", codec_base64_encode},
    {"url_encode", codec_url_encode},
    {NULL, NULL},
};

void dps_open_codec(lua_State *L)
{
    luaL_setfuncs(L, codec_functions, 0);
}
