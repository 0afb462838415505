/*
 * dps_sas.h - SAS token assembly as a plain C function, for the Lua binding
 * and the fuzz targets.
 */
#ifndef DPS_SAS_H
#define DPS_SAS_H

#include <stddef.h>

#include "dps_codec.h"

#define DPS_SAS_MAX_KEY_TEXT 1024 /* base64 characters of a key */
#define DPS_SAS_MAX_URI 4096      /* bytes of a resource URI */
#define DPS_SAS_MAX_KEY_NAME 256  /* bytes of a key (policy) name */

/* Bytes of a key problem that names a position ("has a line break at
 * position 77"). */
#define DPS_SAS_WHY_SIZE 96

/* Bytes of scratch dps_sas_build needs for a resource URI of uri_len bytes
 * and a key name of name_len bytes (0: none): sr + se, skn, the token, and
 * the text of a key problem at its end.  DPS_SAS_SCRATCH: at the maxima. */
#define DPS_SAS_SCRATCH_FOR(uri_len, name_len)                                  \
    (2 * (DPS_PERCENT_ENCODED_MAX(uri_len) + 1 + 32) +                          \
     2 * DPS_PERCENT_ENCODED_MAX(name_len) +                                    \
     DPS_PERCENT_ENCODED_MAX(DPS_BASE64_ENCODED_SIZE(32)) + 64 + DPS_SAS_WHY_SIZE)
#define DPS_SAS_SCRATCH DPS_SAS_SCRATCH_FOR(DPS_SAS_MAX_URI, DPS_SAS_MAX_KEY_NAME)

/*
 * Builds `SharedAccessSignature sr=<enc uri>&sig=<enc sig>&se=<expiry>[&skn=<enc name>]`
 * in scratch (DPS_SAS_SCRATCH_FOR(uri_len, name_len) bytes, or
 * DPS_SAS_SCRATCH for any lengths), signing `<enc uri>\n<expiry>` with the
 * base64-decoded key (one trailing "\n" or "\r\n" of its text allowed); the
 * decoded key is wiped before returning.  On success returns NULL and points
 * *token into scratch; otherwise a message about *subject (the argument's
 * name, e.g. "key" + "is too long", "key" + "has a space at position 9"),
 * static or in scratch, which never quotes the key.  name may be NULL (no
 * skn).
 */
const char *dps_sas_build(const char *uri, size_t uri_len, const char *key_text, size_t key_len,
                          long long expiry, const char *name, size_t name_len,
                          char *scratch, const char **token, size_t *token_len, const char **subject);

/* The HMAC-SHA256 context of a Lua state (dps_sas.c). */
typedef struct dps_hmac dps_hmac;

/* dps_sas_build with the HMAC context h (NULL: the backend's one-shot HMAC). */
const char *dps_sas_build_hmac(dps_hmac *h, const char *uri, size_t uri_len, const char *key_text,
                               size_t key_len, long long expiry, const char *name, size_t name_len,
                               char *scratch, const char **token, size_t *token_len, const char **subject);

#endif
