/*
 * dps_codec.h - base64 and RFC 3986 percent-encoding as plain C functions,
 * so the SAS code and the fuzz targets can call them without Lua.
 */
#ifndef DPS_CODEC_H
#define DPS_CODEC_H

#include <stddef.h>

/* Bytes needed to base64-encode n bytes, including the terminating NUL. */
#define DPS_BASE64_ENCODED_SIZE(n) ((((n) + 2) / 3) * 4 + 1)

/* Bytes always enough to decode n base64 characters. */
#define DPS_BASE64_DECODED_MAX(n) (((n) / 4) * 3 + 3)

/* Percent-encoding turns one byte into at most three. */
#define DPS_PERCENT_ENCODED_MAX(n) ((n) * 3 + 1)

/* Standard alphabet with padding; writes a NUL-terminated string and
 * returns its length.  out must hold DPS_BASE64_ENCODED_SIZE(len) bytes. */
size_t dps_base64_encode(const unsigned char *in, size_t len, char *out);

/*
 * Strict decode: the standard alphabet only, length a multiple of four, at
 * most two '=' and only at the end, zero bits after the last byte (the
 * canonical form every encoder writes), no whitespace, not empty.  out must hold
 * DPS_BASE64_DECODED_MAX(len) bytes.  Returns NULL and sets *outlen on
 * success, or a static description of what is wrong (never quoting input:
 * "has a line break", "has a space", "has a quote mark", "has a length that
 * is not a multiple of 4"…).  *pos is the 1-based position of the character
 * a description is about, 0 when it is about the whole text; characters are
 * checked before the length, so a wrapped or quoted text says where.
 */
const char *dps_base64_decode(const char *in, size_t len,
                              unsigned char *out, size_t *outlen, size_t *pos);

/*
 * RFC 3986 percent-encoding: A-Z a-z 0-9 - . _ ~ stay, every other byte
 * becomes %XX with upper-case hex.  out must hold DPS_PERCENT_ENCODED_MAX(len)
 * bytes.  Returns the encoded length (writes a terminating NUL), or
 * (size_t)-1 when len * 3 would overflow.
 */
size_t dps_percent_encode(const char *in, size_t len, char *out);

#endif
