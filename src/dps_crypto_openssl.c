/*
 * The crypto backend on OpenSSL (libcrypto; libssl only to clear libcurl's
 * TLS key log): the default.  See dps_crypto.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/params.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "dps_crypto.h"

const char *dps_crypto_version(void)
{
    return OpenSSL_version(OPENSSL_VERSION);
}

const char *dps_crypto_backend(void)
{
    return "openssl";
}

void dps_crypto_wipe(void *p, size_t n)
{
    OPENSSL_cleanse(p, n);
}

int dps_crypto_random(void *out, size_t n)
{
    return RAND_bytes((unsigned char *)out, (int)n) == 1 ? 0 : -1;
}

size_t dps_crypto_base64_encode(const unsigned char *in, size_t len, char *out)
{
    return (size_t)EVP_EncodeBlock((unsigned char *)out, in, (int)len);
}

long dps_crypto_base64_decode(const char *in, size_t len, unsigned char *out, size_t outsize)
{
    size_t pad = len >= 1 && in[len - 1] == '=' ? (len >= 2 && in[len - 2] == '=' ? 2 : 1) : 0;
    int n;

    if (len / 4 * 3 > outsize)
        return -1;
    /* EVP_DecodeBlock counts the padding as zero bytes. */
    n = EVP_DecodeBlock(out, (const unsigned char *)in, (int)len);
    if (n < 0 || (size_t)n < pad)
        return -1;
    return (long)((size_t)n - pad);
}

/* OpenSSL 3's one-shot HMAC() fetches SHA-256 and builds a context on
 * every call: the context is made once and rekeyed. */
struct dps_crypto_hmac {
    EVP_MAC *mac;
    EVP_MAC_CTX *ctx;
};

dps_crypto_hmac *dps_crypto_hmac_new(void)
{
    dps_crypto_hmac *h = calloc(1, sizeof *h);

    if (h == NULL)
        return NULL;
    h->mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    h->ctx = h->mac != NULL ? EVP_MAC_CTX_new(h->mac) : NULL;
    if (h->ctx == NULL) {
        dps_crypto_hmac_free(h);
        return NULL;
    }
    return h;
}

void dps_crypto_hmac_free(dps_crypto_hmac *h)
{
    if (h == NULL)
        return;
    EVP_MAC_CTX_free(h->ctx); /* cleanses the keyed state */
    EVP_MAC_free(h->mac);
    free(h);
}

int dps_crypto_hmac_init(dps_crypto_hmac *h, const unsigned char *key, size_t keylen)
{
    OSSL_PARAM params[2];

    if (key == NULL)
        return EVP_MAC_init(h->ctx, NULL, 0, NULL) == 1 ? 0 : -1;
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();
    return EVP_MAC_init(h->ctx, key, keylen, params) == 1 ? 0 : -1;
}

int dps_crypto_hmac_sign(dps_crypto_hmac *h, const unsigned char *msg, size_t len,
                         unsigned char mac[DPS_CRYPTO_MAC_SIZE])
{
    size_t outlen = 0;

    if (EVP_MAC_update(h->ctx, msg, len) != 1 || EVP_MAC_final(h->ctx, mac, &outlen, DPS_CRYPTO_MAC_SIZE) != 1)
        return -1;
    return outlen == DPS_CRYPTO_MAC_SIZE ? 0 : -1;
}

int dps_crypto_hmac_once(const unsigned char *key, size_t keylen, const unsigned char *msg, size_t len,
                         unsigned char mac[DPS_CRYPTO_MAC_SIZE])
{
    unsigned int maclen = 0;

    if (keylen > 0x7fffffff)
        return -1;
    if (HMAC(EVP_sha256(), key, (int)keylen, msg, len, mac, &maclen) == NULL)
        return -1;
    return maclen == DPS_CRYPTO_MAC_SIZE ? 0 : -1;
}

/* ------------------------------------------------------------------------ */
/* Client certificates                                                       */

typedef struct {
    const char *data;
    size_t len;
    int asked; /* OpenSSL asks only for an encrypted key's pass phrase */
} password;

/* Hands OpenSSL the password, or none: it never prompts on a terminal. */
static int password_cb(char *buf, int size, int rwflag, void *userdata)
{
    password *pw = userdata;

    (void)rwflag;
    if (pw == NULL)
        return 0;
    pw->asked = 1;
    if (pw->data == NULL || size <= 0 || pw->len > (size_t)size)
        return 0;
    memcpy(buf, pw->data, pw->len);
    return (int)pw->len;
}

static BIO *open_source(const dps_pem_source *src)
{
    if (src->file != NULL)
        return BIO_new_file(src->file, "rb");
    return BIO_new_mem_buf(src->pem, (int)src->len);
}

static double asn1_epoch(const ASN1_TIME *t)
{
    ASN1_TIME *epoch = ASN1_TIME_set(NULL, 0);
    int days = 0, secs = 0;
    double result = -1;

    if (epoch != NULL && ASN1_TIME_diff(&days, &secs, epoch, t))
        result = (double)days * 86400.0 + (double)secs;
    ASN1_TIME_free(epoch);
    return result;
}

/* The subject CN as UTF-8, or "" when there is none. */
static void subject_cn(X509 *cert, char out[DPS_X509_CN_MAX])
{
    X509_NAME *name = X509_get_subject_name(cert);
    int i = name != NULL ? X509_NAME_get_index_by_NID(name, NID_commonName, -1) : -1;
    unsigned char *utf8 = NULL;
    int n;

    out[0] = '\0';
    if (i < 0)
        return;
    n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i)));
    if (n > 0 && n < DPS_X509_CN_MAX && memchr(utf8, '\0', (size_t)n) == NULL) {
        memcpy(out, utf8, (size_t)n);
        out[n] = '\0';
    }
    OPENSSL_free(utf8);
}

dps_x509_result dps_crypto_x509_inspect(const dps_pem_source *cert, const dps_pem_source *key,
                                        const char *password_data, size_t password_len, dps_cert_facts *facts)
{
    BIO *bio = NULL;
    X509 *leaf = NULL, *extra = NULL;
    EVP_PKEY *pkey = NULL;
    password pw;
    dps_x509_result result = DPS_X509_OK;

    pw.data = password_data;
    pw.len = password_len;
    pw.asked = 0;
    ERR_clear_error();
    bio = open_source(cert);
    if (bio == NULL) {
        result = DPS_X509_CERT_UNREADABLE;
        goto done;
    }
    leaf = PEM_read_bio_X509(bio, NULL, password_cb, NULL);
    if (leaf == NULL) {
        result = DPS_X509_CERT_NOT_PEM;
        goto done;
    }
    facts->certificates = 1;
    while ((extra = PEM_read_bio_X509(bio, NULL, password_cb, NULL)) != NULL) {
        facts->certificates++;
        X509_free(extra);
    }
    BIO_free(bio);
    ERR_clear_error();

    bio = open_source(key);
    if (bio == NULL) {
        result = DPS_X509_KEY_UNREADABLE;
        goto done;
    }
    pkey = PEM_read_bio_PrivateKey(bio, NULL, password_cb, (void *)&pw);
    if (pkey == NULL) {
        if (pw.data != NULL)
            result = DPS_X509_KEY_WRONG_PASSWORD;
        else
            result = pw.asked ? DPS_X509_KEY_NEEDS_PASSWORD : DPS_X509_KEY_NOT_PEM;
        goto done;
    }
    if (X509_check_private_key(leaf, pkey) != 1) {
        result = DPS_X509_MISMATCH;
        goto done;
    }
    subject_cn(leaf, facts->cn);
    facts->not_before = asn1_epoch(X509_get0_notBefore(leaf));
    facts->not_after = asn1_epoch(X509_get0_notAfter(leaf));

done:
    BIO_free(bio);
    X509_free(leaf);
    EVP_PKEY_free(pkey);
    ERR_clear_error();
    return result;
}

/* ------------------------------------------------------------------------ */
/* TLS                                                                       */

/* Whether libcurl's TLS backend is the OpenSSL this module links (same
 * major version, and minor before 3.0): only then is its SSL_CTX ours to
 * touch. */
static int same_openssl(void)
{
    const curl_version_info_data *info = curl_version_info(CURLVERSION_NOW);
    unsigned long ours = OpenSSL_version_num();
    unsigned major = 0, minor = 0;

    if (info->ssl_version == NULL || sscanf(info->ssl_version, "OpenSSL/%u.%u", &major, &minor) != 2)
        return 0;
    if (major != (unsigned)(ours >> 28))
        return 0;
    return major >= 3 || minor == (unsigned)((ours >> 20) & 0xff);
}

/* CURLOPT_SSL_CTX_FUNCTION: libcurl has just set up the context (and, when
 * SSLKEYLOGFILE named a file at curl_global_init, its key-log callback);
 * no connection has used it yet.  Plain C, nothing that can fail. */
static CURLcode no_keylog(CURL *curl, void *ssl_ctx, void *userptr)
{
    (void)curl;
    (void)userptr;
    SSL_CTX_set_keylog_callback((SSL_CTX *)ssl_ctx, NULL);
    return CURLE_OK;
}

CURLcode dps_crypto_no_keylog(CURL *curl)
{
    CURLcode rc = CURLE_OK;

    if (same_openssl()) {
        rc = curl_easy_setopt(curl, CURLOPT_SSL_CTX_FUNCTION, no_keylog);
        if (rc == CURLE_OK)
            rc = curl_easy_setopt(curl, CURLOPT_SSL_CTX_DATA, (void *)NULL);
    }
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Keys and certificates a device earns (dps_csr.c)                          */

/* A private key of a PEM text (pem[len] is '\0'), EC on P-256 or P-384:
 * DPS_X509_OK with the key in *out (the caller frees it) and its curve. */
static dps_x509_result read_ec_key(const char *pem, size_t len, const char *pwd, size_t pwd_len, EVP_PKEY **out,
                                   dps_curve *curve)
{
    password pw;
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    EVP_PKEY *pkey;
    char group[64];
    int nid = NID_undef;

    pw.data = pwd;
    pw.len = pwd_len;
    pw.asked = 0;
    ERR_clear_error();
    /* PEM_read_bio_PrivateKey decodes into secure memory, cleansed on free */
    pkey = bio != NULL ? PEM_read_bio_PrivateKey(bio, NULL, password_cb, (void *)&pw) : NULL;
    BIO_free(bio);
    if (pkey == NULL) {
        if (pwd != NULL)
            return DPS_X509_KEY_WRONG_PASSWORD;
        return pw.asked ? DPS_X509_KEY_NEEDS_PASSWORD : DPS_X509_KEY_NOT_PEM;
    }
    if (EVP_PKEY_is_a(pkey, "EC") && EVP_PKEY_get_group_name(pkey, group, sizeof group, NULL) == 1)
        nid = OBJ_txt2nid(group);
    if (nid != NID_secp384r1 && nid != NID_X9_62_prime256v1) {
        EVP_PKEY_free(pkey); /* cleanses the private key */
        return DPS_X509_KEY_NOT_EC;
    }
    *curve = nid == NID_secp384r1 ? DPS_CURVE_P384 : DPS_CURVE_P256;
    *out = pkey;
    return DPS_X509_OK;
}

/* SHA-256 of the SubjectPublicKeyInfo (DER) of a key, or of a certificate's
 * (pub); 0, or -1. */
static int spki_sha256_of(EVP_PKEY *pkey, const X509_PUBKEY *pub, unsigned char md[DPS_SHA256_SIZE])
{
    unsigned char *der = NULL;
    int n = pkey != NULL ? i2d_PUBKEY(pkey, &der) : i2d_X509_PUBKEY(pub, &der);
    int ok = n > 0 && EVP_Digest(der, (size_t)n, md, NULL, EVP_sha256(), NULL) == 1;

    OPENSSL_free(der);
    return ok ? 0 : -1;
}

size_t dps_crypto_ec_key(dps_curve curve, char out[DPS_EC_KEY_PEM_MAX])
{
    EVP_PKEY *pkey = EVP_EC_gen(curve == DPS_CURVE_P384 ? "P-384" : "P-256");
    /* a secure-memory BIO: its buffer is cleansed when it grows and when freed */
    BIO *bio = pkey != NULL ? BIO_new(BIO_s_secmem()) : NULL;
    int n = -1;

    /* "traditional": SEC1 (EC PRIVATE KEY), what mbedTLS writes too */
    if (bio != NULL && PEM_write_bio_PrivateKey_traditional(bio, pkey, NULL, NULL, 0, NULL, NULL) == 1
        && BIO_pending(bio) < DPS_EC_KEY_PEM_MAX)
        n = BIO_read(bio, out, DPS_EC_KEY_PEM_MAX - 1);
    if (n <= 0) {
        OPENSSL_cleanse(out, DPS_EC_KEY_PEM_MAX);
        n = 0;
    }
    out[n] = '\0';
    BIO_free(bio);
    EVP_PKEY_free(pkey);
    ERR_clear_error();
    return (size_t)n;
}

dps_x509_result dps_crypto_ec_key_facts(const char *pem, size_t len, const char *pwd, size_t pwd_len,
                                        dps_curve *curve, unsigned char spki_sha256[DPS_SHA256_SIZE])
{
    EVP_PKEY *pkey = NULL;
    dps_x509_result r = read_ec_key(pem, len, pwd, pwd_len, &pkey, curve);

    if (r == DPS_X509_OK && spki_sha256_of(pkey, NULL, spki_sha256) != 0)
        r = DPS_X509_FAILED;
    EVP_PKEY_free(pkey);
    ERR_clear_error();
    return r;
}

dps_x509_result dps_crypto_csr(const char *pem, size_t len, const char *pwd, size_t pwd_len, const char *cn,
                               size_t cnlen, unsigned char out[DPS_CSR_DER_MAX], size_t *outlen)
{
    EVP_PKEY *pkey = NULL;
    X509_REQ *req = NULL;
    dps_curve curve = DPS_CURVE_P384;
    unsigned char *p = out;
    int n;
    dps_x509_result r = read_ec_key(pem, len, pwd, pwd_len, &pkey, &curve);

    if (r != DPS_X509_OK)
        goto done;
    r = DPS_X509_FAILED;
    req = X509_REQ_new();
    /* the CN as a UTF8String, as given (not MBSTRING: no 64-character cap) */
    if (req == NULL || X509_REQ_set_version(req, 0) != 1
        || X509_NAME_add_entry_by_NID(X509_REQ_get_subject_name(req), NID_commonName, V_ASN1_UTF8STRING,
                                      (const unsigned char *)cn, (int)cnlen, -1, 0) != 1
        || X509_REQ_set_pubkey(req, pkey) != 1
        || X509_REQ_sign(req, pkey, curve == DPS_CURVE_P384 ? EVP_sha384() : EVP_sha256()) <= 0)
        goto done;
    n = i2d_X509_REQ(req, NULL);
    if (n <= 0 || n > DPS_CSR_DER_MAX || i2d_X509_REQ(req, &p) != n)
        goto done;
    *outlen = (size_t)n;
    r = DPS_X509_OK;

done:
    X509_REQ_free(req);
    EVP_PKEY_free(pkey);
    ERR_clear_error();
    return r;
}

static int utc_of(const ASN1_TIME *t, dps_utc *u)
{
    struct tm tm;

    if (ASN1_TIME_to_tm(t, &tm) != 1) /* no time_t: years past 2038 on 32-bit CPUs too */
        return 0;
    u->year = tm.tm_year + 1900;
    u->mon = tm.tm_mon + 1;
    u->day = tm.tm_mday;
    u->hour = tm.tm_hour;
    u->min = tm.tm_min;
    u->sec = tm.tm_sec;
    return 1;
}

/* "CN=…, O=…": attributes in the certificate's order, short names, RFC 2253
 * escapes, UTF-8 as it is. */
static int name_of(const X509_NAME *name, char out[DPS_CERT_NAME_MAX])
{
    BIO *bio = BIO_new(BIO_s_mem());
    unsigned long flags = (ASN1_STRFLGS_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) | XN_FLAG_SEP_CPLUS_SPC | XN_FLAG_FN_SN
                          | XN_FLAG_DUMP_UNKNOWN_FIELDS;
    int n = bio != NULL ? X509_NAME_print_ex(bio, name, 0, flags) : -1;
    int ok = n >= 0 && n < DPS_CERT_NAME_MAX && (n == 0 || BIO_read(bio, out, n) == n);

    out[ok ? n : 0] = '\0';
    BIO_free(bio);
    return ok;
}

int dps_crypto_cert_info(const unsigned char *der, size_t len, dps_cert_info *info)
{
    const unsigned char *p = der;
    X509 *x = d2i_X509(NULL, &p, (long)len); /* len: at most 1 MiB */
    const ASN1_INTEGER *serial;
    int n, ok = 0;

    if (x == NULL || p != der + len)
        goto done;
    serial = X509_get0_serialNumber(x);
    n = ASN1_STRING_length(serial);
    if (n < 0 || n > DPS_CERT_SERIAL_MAX)
        goto done;
    memcpy(info->serial, ASN1_STRING_get0_data(serial), (size_t)n);
    info->serial_len = (size_t)n;
    info->serial_negative = ASN1_STRING_type(serial) == V_ASN1_NEG_INTEGER;
    ok = utc_of(X509_get0_notBefore(x), &info->not_before) && utc_of(X509_get0_notAfter(x), &info->not_after)
         && spki_sha256_of(NULL, X509_get_X509_PUBKEY(x), info->spki_sha256) == 0
         && name_of(X509_get_issuer_name(x), info->issuer) && name_of(X509_get_subject_name(x), info->subject);
    if (ok)
        subject_cn(x, info->cn);

done:
    X509_free(x);
    ERR_clear_error();
    return ok ? 0 : -1;
}
