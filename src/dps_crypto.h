/*
 * dps_crypto.h - the crypto backend of dps.core, chosen at build time
 * (make CRYPTO=openssl|mbedtls): dps_crypto_openssl.c on libcrypto (and
 * libssl), dps_crypto_mbedtls.c on mbedTLS.  Everything else in src/ is
 * backend-free and reaches the crypto library only through this header:
 * HMAC-SHA256, base64, random bytes, wiping, the library's version, reading
 * PEM certificates and keys, the one TLS hook (no key log), and the keys and
 * certificates a device earns (EC keys, PKCS#10 requests, certificate facts).
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
    DPS_X509_MISMATCH, /* the key does not belong to the certificate */
    DPS_X509_KEY_NOT_EC, /* (dps_csr.c) a key, but not EC on P-256 or P-384 */
    DPS_X509_FAILED /* (dps_csr.c) the crypto library failed on a usable key */
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

/* ------------------------------------------------------------------------ */
/* Keys and certificates a device earns (dps_csr.c: core.ec_key, core.csr,   */
/* core.key_info, core.cert_info)                                            */

typedef enum { DPS_CURVE_P256, DPS_CURVE_P384 } dps_curve;

#define DPS_SHA256_SIZE 32
#define DPS_EC_KEY_PEM_MAX 1024 /* a SEC1 PEM of a P-384 key is about 300 bytes */
#define DPS_CSR_DER_MAX 1024 /* a P-384 request with a 128-byte CN: about 420 bytes */
#define DPS_CERT_SERIAL_MAX 64 /* bytes (RFC 5280 allows 20) */
#define DPS_CERT_NAME_MAX 1024 /* an issuer or subject as text, NUL included */

/* A new private key on curve as PEM text, SEC1 ("-----BEGIN EC PRIVATE
 * KEY-----", named curve, unencrypted), NUL-terminated in out: its length,
 * or 0 when the library failed (out is then wiped).  Intermediate copies of
 * the key are wiped; out is the caller's to wipe. */
size_t dps_crypto_ec_key(dps_curve curve, char out[DPS_EC_KEY_PEM_MAX]);

/* The key of a PEM text (pem[len] must be '\0', as in a Lua string; any
 * PEM private key form the library reads, encrypted ones with password,
 * which may be NULL): DPS_X509_OK when it is an EC key on P-256 or P-384,
 * with its curve and the SHA-256 of its SubjectPublicKeyInfo (DER) in
 * spki_sha256; else DPS_X509_KEY_NOT_PEM, _NEEDS_PASSWORD,
 * _WRONG_PASSWORD, _UNSUPPORTED or _NOT_EC.  Never prompts. */
dps_x509_result dps_crypto_ec_key_facts(const char *pem, size_t len, const char *password, size_t password_len,
                                        dps_curve *curve, unsigned char spki_sha256[DPS_SHA256_SIZE]);

/* A PKCS#10 request (version 1, no attributes) for subject CN=cn (cnlen
 * bytes of A-Z a-z 0-9 - . _ :, at most 128, a UTF8String) with the key of
 * pem (read as dps_crypto_ec_key_facts does), signed ECDSA with SHA-384 on
 * P-384 and SHA-256 on P-256: its DER into out and *outlen.  The results of
 * dps_crypto_ec_key_facts, or DPS_X509_FAILED. */
dps_x509_result dps_crypto_csr(const char *pem, size_t len, const char *password, size_t password_len,
                               const char *cn, size_t cnlen, unsigned char out[DPS_CSR_DER_MAX], size_t *outlen);

/* A UTC time as the certificate says it (1950-9999). */
typedef struct {
    int year, mon, day, hour, min, sec; /* mon 1-12, day 1-31 */
} dps_utc;

typedef struct {
    dps_utc not_before, not_after;
    unsigned char serial[DPS_CERT_SERIAL_MAX]; /* the magnitude, big-endian */
    size_t serial_len;
    int serial_negative; /* a negative serial (RFC 5280 forbids them; parsers take them) */
    unsigned char spki_sha256[DPS_SHA256_SIZE]; /* SHA-256 of the SubjectPublicKeyInfo DER */
    char cn[DPS_X509_CN_MAX]; /* subject CN as UTF-8, "" when none */
    /* "CN=…, O=…" as the library prints names (attributes in the
     * certificate's order, short names); characters outside printable
     * ASCII may be written differently by each backend */
    char issuer[DPS_CERT_NAME_MAX], subject[DPS_CERT_NAME_MAX];
} dps_cert_info;

/* Reads one DER certificate of exactly len bytes into info: 0, or -1 when
 * the library cannot read it (or a name or the serial does not fit). */
int dps_crypto_cert_info(const unsigned char *der, size_t len, dps_cert_info *info);

#endif
