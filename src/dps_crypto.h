/*
 * dps_crypto.h - the crypto backend of dps.core, chosen at build time
 * (make CRYPTO=openssl|mbedtls): dps_crypto_openssl.c on libcrypto (and
 * libssl), dps_crypto_mbedtls.c on mbedTLS.  Everything else in src/ is
 * backend-free and reaches the crypto library only through this header:
 * HMAC-SHA256, base64, random bytes, wiping, the library's version, reading
 * PEM certificates and keys, and the one TLS hook (no key log).
 *
 * Plain C: nothing here touches a lua_State, raises or keeps global state.
 * Failures are return codes; the callers word the messages, so both
 * backends say the same thing.
 */
#ifndef DPS_CRYPTO_H
#define DPS_CRYPTO_H

#include <stddef.h>

#include <curl/curl.h>

#define DPS_CRYPTO_MAC_SIZE 32 /* bytes of an HMAC-SHA256 */

/* "OpenSSL 3.0.15 3 Sep 2024" or "mbed TLS 2.28.3": core.version().crypto. */
const char *dps_crypto_version(void);
/* "openssl" or "mbedtls": core.version().backend. */
const char *dps_crypto_backend(void);

/* Overwrites n bytes at p in a way the compiler cannot drop. */
void dps_crypto_wipe(void *p, size_t n);

/* n random bytes from the library's generator: 0, or -1 when it failed. */
int dps_crypto_random(void *out, size_t n);

/* base64 of len > 0 bytes into out (DPS_BASE64_ENCODED_SIZE(len) bytes,
 * NUL-terminated); returns the characters written. */
size_t dps_crypto_base64_encode(const unsigned char *in, size_t len, char *out);
/* Decodes len characters already checked to be canonical base64 (a multiple
 * of 4, padding only at the end) into out (outsize bytes); returns the bytes
 * decoded (padding not counted), or -1. */
long dps_crypto_base64_decode(const char *in, size_t len, unsigned char *out, size_t outsize);

/* A keyed HMAC-SHA256 context, reused across calls (allocated by the
 * backend; free wipes the keyed state). */
typedef struct dps_crypto_hmac dps_crypto_hmac;

dps_crypto_hmac *dps_crypto_hmac_new(void); /* NULL when the library failed */
void dps_crypto_hmac_free(dps_crypto_hmac *h); /* NULL: nothing */
/* Sets a new key (NULL key with keylen 0: keep the last key and restart).
 * 0, or -1. */
int dps_crypto_hmac_init(dps_crypto_hmac *h, const unsigned char *key, size_t keylen);
/* MAC of msg under the key set last: 0, or -1. */
int dps_crypto_hmac_sign(dps_crypto_hmac *h, const unsigned char *msg, size_t len,
                         unsigned char mac[DPS_CRYPTO_MAC_SIZE]);
/* One-shot HMAC-SHA256 without a context: 0, or -1. */
int dps_crypto_hmac_once(const unsigned char *key, size_t keylen, const unsigned char *msg, size_t len,
                         unsigned char mac[DPS_CRYPTO_MAC_SIZE]);

/* ------------------------------------------------------------------------ */
/* Client certificates (core.x509_credentials)                               */

#define DPS_X509_CN_MAX 256
#define DPS_X509_MAX_PEM (1024 * 1024)

/* A PEM source: a file (file != NULL) or text in memory (pem, len). */
typedef struct {
    const char *file;
    const char *pem;
    size_t len;
} dps_pem_source;

typedef struct {
    char cn[DPS_X509_CN_MAX]; /* subject CN as UTF-8, "" when none */
    double not_before, not_after; /* seconds since the epoch */
    int certificates; /* in the chain */
} dps_cert_facts;

/* What dps_crypto_x509_inspect found wrong; dps_x509.c words it. */
typedef enum {
    DPS_X509_OK,
    DPS_X509_CERT_UNREADABLE, /* cannot open the certificate's file */
    DPS_X509_CERT_NOT_PEM, /* no PEM certificate in it */
    DPS_X509_KEY_UNREADABLE, /* cannot open the key's file */
    DPS_X509_KEY_NOT_PEM, /* no private key could be read (not encrypted) */
    DPS_X509_KEY_NEEDS_PASSWORD, /* encrypted, no password given */
    DPS_X509_KEY_WRONG_PASSWORD, /* encrypted, could not be decrypted */
    DPS_X509_KEY_UNSUPPORTED, /* encrypted with a scheme the library cannot read */
    DPS_X509_MISMATCH /* the key does not belong to the certificate */
} dps_x509_result;

/* Reads the certificate (and chain) and the private key (password may be
 * NULL), checks they are a pair and fills facts.  Never prompts. */
dps_x509_result dps_crypto_x509_inspect(const dps_pem_source *cert, const dps_pem_source *key,
                                        const char *password, size_t password_len, dps_cert_facts *facts);

/* ------------------------------------------------------------------------ */
/* TLS                                                                       */

/* Keeps libcurl from writing a TLS key log (SSLKEYLOGFILE) on this handle,
 * where the backend can: CURLE_OK, or what curl_easy_setopt said. */
CURLcode dps_crypto_no_keylog(CURL *curl);

#endif
