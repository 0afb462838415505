/*
 * The crypto backend on mbedTLS (make CRYPTO=mbedtls): for OpenWrt, whose
 * libcurl is built on mbedTLS, so dps.core needs no library beyond what
 * libcurl already pulls in.  Written for mbedTLS 2.28 (OpenWrt 23.05,
 * Debian 12) and 3.x (OpenWrt 24.10).  See dps_crypto.h.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/version.h>
#if MBEDTLS_VERSION_NUMBER < 0x03000000
#include <mbedtls/config.h>
#endif
#include <mbedtls/asn1.h>
#include <mbedtls/base64.h>
#include <mbedtls/entropy.h>
#include <mbedtls/md.h>
#include <mbedtls/oid.h>
#include <mbedtls/pem.h>
#include <mbedtls/pk.h>
#include <mbedtls/pkcs5.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/x509_crt.h>

#include "dps_crypto.h"

const char *dps_crypto_version(void)
{
    return MBEDTLS_VERSION_STRING_FULL;
}

const char *dps_crypto_backend(void)
{
    return "mbedtls";
}

void dps_crypto_wipe(void *p, size_t n)
{
    mbedtls_platform_zeroize(p, n);
}

/* The entropy source straight (getrandom or /dev/urandom through mbedTLS's
 * pool): a few bytes for jitter need no DRBG, and nothing is kept. */
static int entropy_bytes(void *ctx, unsigned char *out, size_t n)
{
    size_t chunk;
    int rc = 0;

    while (rc == 0 && n > 0) {
        chunk = n < MBEDTLS_ENTROPY_BLOCK_SIZE ? n : MBEDTLS_ENTROPY_BLOCK_SIZE;
        rc = mbedtls_entropy_func(ctx, out, chunk);
        out += chunk;
        n -= chunk;
    }
    return rc;
}

int dps_crypto_random(void *out, size_t n)
{
    mbedtls_entropy_context entropy;
    int rc;

    mbedtls_entropy_init(&entropy);
    rc = entropy_bytes(&entropy, out, n);
    mbedtls_entropy_free(&entropy);
    return rc == 0 ? 0 : -1;
}

size_t dps_crypto_base64_encode(const unsigned char *in, size_t len, char *out)
{
    size_t olen = 0;

    /* out holds DPS_BASE64_ENCODED_SIZE(len) bytes, the NUL included. */
    if (mbedtls_base64_encode((unsigned char *)out, ((len + 2) / 3) * 4 + 1, &olen, in, len) != 0) {
        out[0] = '\0';
        return 0;
    }
    return olen;
}

long dps_crypto_base64_decode(const char *in, size_t len, unsigned char *out, size_t outsize)
{
    size_t olen = 0;

    if (mbedtls_base64_decode(out, outsize, &olen, (const unsigned char *)in, len) != 0)
        return -1;
    return (long)olen;
}

struct dps_crypto_hmac {
    mbedtls_md_context_t md;
};

dps_crypto_hmac *dps_crypto_hmac_new(void)
{
    dps_crypto_hmac *h = calloc(1, sizeof *h);

    if (h == NULL)
        return NULL;
    mbedtls_md_init(&h->md);
    if (mbedtls_md_setup(&h->md, mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), 1) != 0) {
        dps_crypto_hmac_free(h);
        return NULL;
    }
    return h;
}

void dps_crypto_hmac_free(dps_crypto_hmac *h)
{
    if (h == NULL)
        return;
    mbedtls_md_free(&h->md); /* zeroizes the keyed pads */
    mbedtls_platform_zeroize(h, sizeof *h);
    free(h);
}

int dps_crypto_hmac_init(dps_crypto_hmac *h, const unsigned char *key, size_t keylen)
{
    if (key == NULL)
        return mbedtls_md_hmac_reset(&h->md) == 0 ? 0 : -1;
    return mbedtls_md_hmac_starts(&h->md, key, keylen) == 0 ? 0 : -1;
}

int dps_crypto_hmac_sign(dps_crypto_hmac *h, const unsigned char *msg, size_t len,
                         unsigned char mac[DPS_CRYPTO_MAC_SIZE])
{
    if (mbedtls_md_hmac_update(&h->md, msg, len) != 0 || mbedtls_md_hmac_finish(&h->md, mac) != 0)
        return -1;
    return 0;
}

int dps_crypto_hmac_once(const unsigned char *key, size_t keylen, const unsigned char *msg, size_t len,
                         unsigned char mac[DPS_CRYPTO_MAC_SIZE])
{
    return mbedtls_md_hmac(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), key, keylen, msg, len, mac) == 0
               ? 0 : -1;
}

/* ------------------------------------------------------------------------ */
/* Client certificates                                                       */

/* The PEM text of src, NUL-terminated as mbedTLS's PEM parsers want it, in
 * *buf (a copy: malloc'ed, wiped and freed by drop) with *len its length
 * without the NUL.  -1: cannot be read. */
static int load(const dps_pem_source *src, unsigned char **buf, size_t *len)
{
    FILE *f;
    long size;
    size_t got;

    *buf = NULL;
    *len = 0;
    if (src->file == NULL) {
        *buf = malloc(src->len + 1);
        if (*buf == NULL)
            return -1;
        memcpy(*buf, src->pem, src->len);
        (*buf)[src->len] = '\0';
        *len = src->len;
        return 0;
    }
    f = fopen(src->file, "rb");
    if (f == NULL)
        return -1;
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || size > DPS_X509_MAX_PEM
        || fseek(f, 0, SEEK_SET) != 0 || (*buf = malloc((size_t)size + 1)) == NULL) {
        fclose(f);
        return -1;
    }
    got = fread(*buf, 1, (size_t)size, f);
    fclose(f);
    if (got != (size_t)size) {
        mbedtls_platform_zeroize(*buf, (size_t)size);
        free(*buf);
        *buf = NULL;
        return -1;
    }
    (*buf)[size] = '\0';
    *len = (size_t)size;
    return 0;
}

static void drop(unsigned char *buf, size_t len)
{
    if (buf != NULL) {
        mbedtls_platform_zeroize(buf, len + 1);
        free(buf);
    }
}

/* Whether a PEM key is encrypted (PKCS#8 or the traditional Proc-Type form). */
static int is_encrypted(const unsigned char *pem)
{
    return strstr((const char *)pem, "BEGIN ENCRYPTED PRIVATE KEY") != NULL
           || strstr((const char *)pem, "Proc-Type: 4,ENCRYPTED") != NULL;
}

/* Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's). */
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

static double x509_epoch(const mbedtls_x509_time *t)
{
    return (double)days_from_civil(t->year, t->mon, t->day) * 86400.0 + t->hour * 3600.0 + t->min * 60.0
           + t->sec;
}

/* Appends code point c as UTF-8 at out[*n] (cap bytes, one kept for the
 * NUL); 0, or -1 when it does not fit or is NUL. */
static int put_utf8(char *out, size_t *n, size_t cap, unsigned long c)
{
    unsigned char b[4];
    size_t k, len;

    if (c == 0 || c > 0x10FFFF)
        return -1;
    if (c < 0x80) {
        b[0] = (unsigned char)c;
        len = 1;
    } else if (c < 0x800) {
        b[0] = (unsigned char)(0xC0 | (c >> 6));
        b[1] = (unsigned char)(0x80 | (c & 0x3F));
        len = 2;
    } else if (c < 0x10000) {
        b[0] = (unsigned char)(0xE0 | (c >> 12));
        b[1] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
        b[2] = (unsigned char)(0x80 | (c & 0x3F));
        len = 3;
    } else {
        b[0] = (unsigned char)(0xF0 | (c >> 18));
        b[1] = (unsigned char)(0x80 | ((c >> 12) & 0x3F));
        b[2] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
        b[3] = (unsigned char)(0x80 | (c & 0x3F));
        len = 4;
    }
    if (*n + len >= cap)
        return -1;
    for (k = 0; k < len; k++)
        out[(*n)++] = (char)b[k];
    return 0;
}

/* The subject CN as UTF-8 (converted from its ASN.1 string type as
 * OpenSSL's ASN1_STRING_to_UTF8 does), or "" when there is none. */
static void subject_cn(const mbedtls_x509_crt *crt, char out[DPS_X509_CN_MAX])
{
    const mbedtls_x509_name *name;
    const unsigned char *p;
    size_t i, n = 0, len;
    int bad = 0;

    out[0] = '\0';
    for (name = &crt->subject; name != NULL; name = name->next)
        if (name->oid.p != NULL && MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &name->oid) == 0)
            break;
    if (name == NULL)
        return;
    p = name->val.p;
    len = name->val.len;
    switch (name->val.tag) {
    case MBEDTLS_ASN1_UTF8_STRING:
        if (len >= DPS_X509_CN_MAX || memchr(p, '\0', len) != NULL)
            return;
        memcpy(out, p, len);
        n = len;
        break;
    case MBEDTLS_ASN1_BMP_STRING: /* UCS-2, big-endian */
        for (i = 0; !bad && i + 1 < len; i += 2)
            bad = put_utf8(out, &n, DPS_X509_CN_MAX, ((unsigned long)p[i] << 8) | p[i + 1]);
        bad = bad || len % 2 != 0;
        break;
    case MBEDTLS_ASN1_UNIVERSAL_STRING: /* UCS-4, big-endian */
        for (i = 0; !bad && i + 3 < len; i += 4)
            bad = put_utf8(out, &n, DPS_X509_CN_MAX, ((unsigned long)p[i] << 24) | ((unsigned long)p[i + 1] << 16)
                                                         | ((unsigned long)p[i + 2] << 8) | p[i + 3]);
        bad = bad || len % 4 != 0;
        break;
    default: /* PrintableString, IA5String, T61String (as Latin-1) */
        for (i = 0; !bad && i < len; i++)
            bad = put_utf8(out, &n, DPS_X509_CN_MAX, p[i]);
        break;
    }
    if (bad)
        n = 0;
    out[n] = '\0';
}

/* What an mbedTLS error reading an encrypted key means. */
static dps_x509_result key_failure(int rc, const unsigned char *pem, int have_password)
{
    switch (rc) {
    case MBEDTLS_ERR_PK_PASSWORD_REQUIRED:
        return have_password ? DPS_X509_KEY_WRONG_PASSWORD : DPS_X509_KEY_NEEDS_PASSWORD;
    case MBEDTLS_ERR_PK_PASSWORD_MISMATCH:
        return DPS_X509_KEY_WRONG_PASSWORD;
    case MBEDTLS_ERR_PK_FEATURE_UNAVAILABLE:
    case MBEDTLS_ERR_PEM_FEATURE_UNAVAILABLE:
    case MBEDTLS_ERR_PEM_UNKNOWN_ENC_ALG:
    case MBEDTLS_ERR_PKCS5_FEATURE_UNAVAILABLE:
        if (is_encrypted(pem))
            return have_password ? DPS_X509_KEY_UNSUPPORTED : DPS_X509_KEY_NEEDS_PASSWORD;
        break;
    default:
        break;
    }
    if (is_encrypted(pem))
        return have_password ? DPS_X509_KEY_WRONG_PASSWORD : DPS_X509_KEY_NEEDS_PASSWORD;
    return DPS_X509_KEY_NOT_PEM;
}

dps_x509_result dps_crypto_x509_inspect(const dps_pem_source *cert, const dps_pem_source *key,
                                        const char *password, size_t password_len, dps_cert_facts *facts)
{
    mbedtls_x509_crt chain;
    mbedtls_pk_context pk;
    const mbedtls_x509_crt *c;
    unsigned char *cert_pem = NULL, *key_pem = NULL;
    size_t cert_len = 0, key_len = 0;
    dps_x509_result result = DPS_X509_OK;
    int rc;
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
    mbedtls_entropy_context entropy;

    mbedtls_entropy_init(&entropy);
#endif
    mbedtls_x509_crt_init(&chain);
    mbedtls_pk_init(&pk);
    if (load(cert, &cert_pem, &cert_len) != 0) {
        result = DPS_X509_CERT_UNREADABLE;
        goto done;
    }
    /* PEM only (as OpenSSL's PEM_read_bio_X509): certificates after the
     * first that cannot be parsed are not counted. */
    if (strstr((const char *)cert_pem, "-----BEGIN CERTIFICATE-----") == NULL
        || mbedtls_x509_crt_parse(&chain, cert_pem, cert_len + 1) < 0 || chain.raw.p == NULL) {
        result = DPS_X509_CERT_NOT_PEM;
        goto done;
    }
    for (c = &chain; c != NULL && c->raw.p != NULL; c = c->next)
        facts->certificates++;

    if (load(key, &key_pem, &key_len) != 0) {
        result = DPS_X509_KEY_UNREADABLE;
        goto done;
    }
    if (strstr((const char *)key_pem, "-----BEGIN") == NULL) {
        result = DPS_X509_KEY_NOT_PEM;
        goto done;
    }
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
    rc = mbedtls_pk_parse_key(&pk, key_pem, key_len + 1, (const unsigned char *)password,
                              password != NULL ? password_len : 0, entropy_bytes, &entropy);
#else
    rc = mbedtls_pk_parse_key(&pk, key_pem, key_len + 1, (const unsigned char *)password,
                              password != NULL ? password_len : 0);
#endif
    if (rc != 0) {
        result = key_failure(rc, key_pem, password != NULL);
        goto done;
    }
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
    rc = mbedtls_pk_check_pair(&chain.pk, &pk, entropy_bytes, &entropy);
#else
    rc = mbedtls_pk_check_pair(&chain.pk, &pk);
#endif
    if (rc != 0) {
        result = DPS_X509_MISMATCH;
        goto done;
    }
    subject_cn(&chain, facts->cn);
    facts->not_before = x509_epoch(&chain.valid_from);
    facts->not_after = x509_epoch(&chain.valid_to);

done:
    drop(cert_pem, cert_len);
    drop(key_pem, key_len);
    mbedtls_pk_free(&pk); /* zeroizes the key */
    mbedtls_x509_crt_free(&chain);
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
    mbedtls_entropy_free(&entropy);
#endif
    return result;
}

/* ------------------------------------------------------------------------ */
/* TLS                                                                       */

/*
 * libcurl on mbedTLS writes no key log up to curl 8.x's (curl 7.88, as in
 * Debian 12 and OpenWrt 23.05, has no SSLKEYLOGFILE support in its mbedTLS
 * backend at all; where a later libcurl has it, it is wired per connection,
 * out of reach of CURLOPT_SSL_CTX_FUNCTION): nothing to clear there.
 *
 * A build on mbedTLS that runs with a libcurl on OpenSSL (a test build on
 * Debian, say) does not link libssl; the OpenSSL that libcurl loaded is
 * found by its soname (RTLD_NOLOAD: already loaded, never a new one) and
 * its key-log callback cleared as dps_crypto_openssl.c does.
 */
typedef void (*set_keylog_fn)(void *ssl_ctx, void *callback);

static int libcurl_openssl_soname(char *out, size_t size)
{
    const curl_version_info_data *info = curl_version_info(CURLVERSION_NOW);
    unsigned major = 0, minor = 0;

    if (info->ssl_version == NULL || sscanf(info->ssl_version, "OpenSSL/%u.%u", &major, &minor) != 2)
        return 0;
    if (major >= 3)
        snprintf(out, size, "libssl.so.%u", major);
    else
        snprintf(out, size, "libssl.so.%u.%u", major, minor);
    return 1;
}

/* CURLOPT_SSL_CTX_FUNCTION (libcurl on OpenSSL only).  Plain C, cannot
 * raise; refuses the connection when the key log cannot be cleared. */
static CURLcode no_keylog(CURL *curl, void *ssl_ctx, void *userptr)
{
    char soname[32];
    void *lib, *sym;
    set_keylog_fn set_keylog;

    (void)curl;
    (void)userptr;
    if (!libcurl_openssl_soname(soname, sizeof soname))
        return CURLE_OK;
    lib = dlopen(soname, RTLD_LAZY | RTLD_NOLOAD);
    sym = lib != NULL ? dlsym(lib, "SSL_CTX_set_keylog_callback") : NULL;
    if (sym == NULL) {
        if (lib != NULL)
            dlclose(lib);
        return CURLE_SSL_ENGINE_INITFAILED;
    }
    memcpy(&set_keylog, &sym, sizeof set_keylog);
    set_keylog(ssl_ctx, NULL);
    dlclose(lib);
    return CURLE_OK;
}

CURLcode dps_crypto_no_keylog(CURL *curl)
{
    char soname[32];
    CURLcode rc = CURLE_OK;

    if (libcurl_openssl_soname(soname, sizeof soname)) {
        rc = curl_easy_setopt(curl, CURLOPT_SSL_CTX_FUNCTION, no_keylog);
        if (rc == CURLE_OK)
            rc = curl_easy_setopt(curl, CURLOPT_SSL_CTX_DATA, (void *)NULL);
    }
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Keys and certificates a device earns (dps_csr.c)                          */

#include <mbedtls/x509_csr.h>

#ifndef MBEDTLS_PRIVATE /* 2.x: no private members */
#define MBEDTLS_PRIVATE(member) member
#endif

static mbedtls_ecp_group_id group_of(dps_curve curve)
{
    return curve == DPS_CURVE_P384 ? MBEDTLS_ECP_DP_SECP384R1 : MBEDTLS_ECP_DP_SECP256R1;
}

/* The curve of an EC key (MBEDTLS_ECP_DP_NONE for any other key). */
static mbedtls_ecp_group_id key_group(const mbedtls_pk_context *pk)
{
    const mbedtls_ecp_keypair *ec;

    if (mbedtls_pk_get_type(pk) != MBEDTLS_PK_ECKEY)
        return MBEDTLS_ECP_DP_NONE;
    ec = mbedtls_pk_ec(*pk);
#if MBEDTLS_VERSION_NUMBER >= 0x03060000
    return mbedtls_ecp_keypair_get_group_id(ec);
#else
    return ec->MBEDTLS_PRIVATE(grp).id;
#endif
}

/* Reads the private key of a PEM text (pem[len] is '\0', as mbedTLS's PEM
 * parser wants it: no copy needed) into pk, EC on P-256 or P-384. */
static dps_x509_result read_ec_key(const char *pem, size_t len, const char *password, size_t password_len,
                                   mbedtls_pk_context *pk, dps_curve *curve, mbedtls_entropy_context *entropy)
{
    const unsigned char *text = (const unsigned char *)pem;
    mbedtls_ecp_group_id id;
    int rc;

    if (strstr(pem, "-----BEGIN") == NULL) /* PEM only, as OpenSSL's PEM_read_bio_PrivateKey */
        return DPS_X509_KEY_NOT_PEM;
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
    rc = mbedtls_pk_parse_key(pk, text, len + 1, (const unsigned char *)password,
                              password != NULL ? password_len : 0, entropy_bytes, entropy);
#else
    (void)entropy;
    rc = mbedtls_pk_parse_key(pk, text, len + 1, (const unsigned char *)password,
                              password != NULL ? password_len : 0);
#endif
    if (rc != 0)
        return key_failure(rc, text, password != NULL);
    id = key_group(pk);
    if (id != MBEDTLS_ECP_DP_SECP384R1 && id != MBEDTLS_ECP_DP_SECP256R1)
        return DPS_X509_KEY_NOT_EC;
    *curve = id == MBEDTLS_ECP_DP_SECP384R1 ? DPS_CURVE_P384 : DPS_CURVE_P256;
    return DPS_X509_OK;
}

static int sha256(const unsigned char *data, size_t len, unsigned char md[DPS_SHA256_SIZE])
{
    return mbedtls_md(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), data, len, md) == 0 ? 0 : -1;
}

size_t dps_crypto_ec_key(dps_curve curve, char out[DPS_EC_KEY_PEM_MAX])
{
    mbedtls_pk_context pk;
    mbedtls_entropy_context entropy;
    unsigned char der[DPS_EC_KEY_PEM_MAX];
    size_t olen = 0;
    int n = -1;

    mbedtls_pk_init(&pk);
    mbedtls_entropy_init(&entropy);
    /* the entropy source straight as the generator, as for the random bytes */
    if (mbedtls_pk_setup(&pk, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)) == 0
        && mbedtls_ecp_gen_key(group_of(curve), mbedtls_pk_ec(pk), entropy_bytes, &entropy) == 0)
        n = mbedtls_pk_write_key_der(&pk, der, sizeof der); /* SEC1, at the end of der */
    /* PEM from our own DER buffer, so that every copy of the key is wiped here */
    if (n <= 0
        || mbedtls_pem_write_buffer("-----BEGIN EC PRIVATE KEY-----\n", "-----END EC PRIVATE KEY-----\n",
                                    der + sizeof der - n, (size_t)n, (unsigned char *)out, DPS_EC_KEY_PEM_MAX,
                                    &olen) != 0) {
        mbedtls_platform_zeroize(out, DPS_EC_KEY_PEM_MAX);
        olen = 0;
    }
    mbedtls_platform_zeroize(der, sizeof der);
    mbedtls_pk_free(&pk); /* zeroizes the key */
    mbedtls_entropy_free(&entropy);
    return olen > 0 ? strlen(out) : 0;
}

dps_x509_result dps_crypto_ec_key_facts(const char *pem, size_t len, const char *password, size_t password_len,
                                        dps_curve *curve, unsigned char spki_sha256[DPS_SHA256_SIZE])
{
    mbedtls_pk_context pk;
    mbedtls_entropy_context entropy;
    unsigned char spki[256];
    int n;
    dps_x509_result r;

    mbedtls_pk_init(&pk);
    mbedtls_entropy_init(&entropy);
    r = read_ec_key(pem, len, password, password_len, &pk, curve, &entropy);
    if (r == DPS_X509_OK) {
        n = mbedtls_pk_write_pubkey_der(&pk, spki, sizeof spki); /* at the end of spki */
        if (n <= 0 || sha256(spki + sizeof spki - n, (size_t)n, spki_sha256) != 0)
            r = DPS_X509_FAILED;
    }
    mbedtls_pk_free(&pk);
    mbedtls_entropy_free(&entropy);
    return r;
}

dps_x509_result dps_crypto_csr(const char *pem, size_t len, const char *password, size_t password_len,
                               const char *cn, size_t cnlen, unsigned char out[DPS_CSR_DER_MAX], size_t *outlen)
{
    mbedtls_pk_context pk;
    mbedtls_entropy_context entropy;
    mbedtls_x509write_csr req;
    char subject[3 + 128 + 1];
    dps_curve curve = DPS_CURVE_P384;
    int n = -1;
    dps_x509_result r;

    mbedtls_pk_init(&pk);
    mbedtls_entropy_init(&entropy);
    mbedtls_x509write_csr_init(&req);
    r = read_ec_key(pem, len, password, password_len, &pk, &curve, &entropy);
    if (r == DPS_X509_OK) {
        r = DPS_X509_FAILED;
        /* "CN=ID": the ID's characters (A-Z a-z 0-9 - . _ :) need no escape */
        if (cnlen <= 128) {
            memcpy(subject, "CN=", 3);
            memcpy(subject + 3, cn, cnlen);
            subject[3 + cnlen] = '\0';
            mbedtls_x509write_csr_set_key(&req, &pk);
            mbedtls_x509write_csr_set_md_alg(&req, curve == DPS_CURVE_P384 ? MBEDTLS_MD_SHA384 : MBEDTLS_MD_SHA256);
            if (mbedtls_x509write_csr_set_subject_name(&req, subject) == 0)
                n = mbedtls_x509write_csr_der(&req, out, DPS_CSR_DER_MAX, entropy_bytes, &entropy);
        }
        if (n > 0) {
            memmove(out, out + DPS_CSR_DER_MAX - n, (size_t)n); /* written at the end of out */
            *outlen = (size_t)n;
            r = DPS_X509_OK;
        }
    }
    mbedtls_x509write_csr_free(&req);
    mbedtls_pk_free(&pk);
    mbedtls_entropy_free(&entropy);
    return r;
}

static void utc_of(const mbedtls_x509_time *t, dps_utc *u)
{
    u->year = t->year;
    u->mon = t->mon;
    u->day = t->day;
    u->hour = t->hour;
    u->min = t->min;
    u->sec = t->sec;
}

/* The magnitude of a serial as DER has it (two's complement, big-endian). */
static int serial_of(const mbedtls_x509_buf *s, dps_cert_info *info)
{
    unsigned carry = 1, v;
    size_t i;

    if (s->len > DPS_CERT_SERIAL_MAX)
        return 0;
    info->serial_negative = s->len > 0 && (s->p[0] & 0x80) != 0;
    for (i = s->len; i-- > 0;) {
        v = s->p[i];
        if (info->serial_negative) { /* -x = ~x + 1 */
            v = (~v & 0xFFu) + carry;
            carry = v >> 8;
        }
        info->serial[i] = (unsigned char)v;
    }
    info->serial_len = s->len;
    return 1;
}

int dps_crypto_cert_info(const unsigned char *der, size_t len, dps_cert_info *info)
{
    mbedtls_x509_crt crt;
    int ok;

    mbedtls_x509_crt_init(&crt);
    ok = mbedtls_x509_crt_parse_der(&crt, der, len) == 0 && serial_of(&crt.serial, info)
         && sha256(crt.pk_raw.p, crt.pk_raw.len, info->spki_sha256) == 0
         && mbedtls_x509_dn_gets(info->issuer, DPS_CERT_NAME_MAX, &crt.issuer) >= 0
         && mbedtls_x509_dn_gets(info->subject, DPS_CERT_NAME_MAX, &crt.subject) >= 0;
    if (ok) {
        utc_of(&crt.valid_from, &info->not_before);
        utc_of(&crt.valid_to, &info->not_after);
        subject_cn(&crt, info->cn);
    }
    mbedtls_x509_crt_free(&crt);
    return ok ? 0 : -1;
}
