/***
 * Client-certificate checks for X.509 attestation: read the certificate (and
 * chain) and the private key, prove they belong together, and report the
 * subject CN, which is the device's registration ID.
 * @module dps.core
 */
#include <stdio.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "dps_aux.h"
#include "dps_core.h"

#define X509_MAX_PEM (1024 * 1024)
#define X509_CN_MAX 256

typedef struct {
    char cn[X509_CN_MAX];
    double not_before, not_after;
    int certificates;
} cert_facts;

typedef struct {
    const char *data;
    size_t len;
} password;

/* Hands OpenSSL the password, or none: it never prompts on a terminal. */
static int password_cb(char *buf, int size, int rwflag, void *userdata)
{
    const password *pw = userdata;

    (void)rwflag;
    if (pw == NULL || pw->data == NULL || size <= 0 || pw->len > (size_t)size)
        return 0;
    memcpy(buf, pw->data, pw->len);
    return (int)pw->len;
}

static BIO *open_source(const char *file, const char *pem, size_t pem_len)
{
    if (file != NULL)
        return BIO_new_file(file, "rb");
    return BIO_new_mem_buf(pem, (int)pem_len);
}

/* Whether a PEM key is encrypted (PKCS#8 or the traditional Proc-Type form). */
static int is_encrypted(const char *file, const char *pem, size_t pem_len)
{
    static const char *const marks[] = {"BEGIN ENCRYPTED PRIVATE KEY", "Proc-Type: 4,ENCRYPTED"};
    char line[256];
    size_t i;
    int found = 0;
    BIO *bio = open_source(file, pem, pem_len);

    while (bio != NULL && !found && BIO_gets(bio, line, sizeof line) > 0) {
        for (i = 0; i < sizeof marks / sizeof marks[0]; i++)
            if (strstr(line, marks[i]) != NULL)
                found = 1;
    }
    dps_wipe(line, sizeof line);
    BIO_free(bio);
    return found;
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
static void subject_cn(X509 *cert, char out[X509_CN_MAX])
{
    X509_NAME *name = X509_get_subject_name(cert);
    int i = name != NULL ? X509_NAME_get_index_by_NID(name, NID_commonName, -1) : -1;
    unsigned char *utf8 = NULL;
    int n;

    out[0] = '\0';
    if (i < 0)
        return;
    n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i)));
    if (n > 0 && n < X509_CN_MAX && memchr(utf8, '\0', (size_t)n) == NULL) {
        memcpy(out, utf8, (size_t)n);
        out[n] = '\0';
    }
    OPENSSL_free(utf8);
}

/* "cannot read cert_file PATH" / "cannot read cert" into msg. */
static void unreadable(char *msg, size_t msgsize, const char *what, const char *file)
{
    snprintf(msg, msgsize, "cannot read %s%s%s", what, file ? " " : "", file ? file : "");
}

/* Reads and checks; NULL on success, else what is wrong (written into msg). */
static const char *inspect(const char *cert_file, const char *cert_pem, size_t cert_len,
                           const char *key_file, const char *key_pem, size_t key_len,
                           const password *pw, cert_facts *facts, char *msg, size_t msgsize)
{
    BIO *bio = NULL;
    X509 *leaf = NULL, *extra = NULL;
    EVP_PKEY *pkey = NULL;
    const char *failed = msg;
    const char *cert_what = cert_file != NULL ? "cert_file" : "cert";
    const char *key_what = key_file != NULL ? "key_file" : "key";

    ERR_clear_error();
    bio = open_source(cert_file, cert_pem, cert_len);
    if (bio == NULL) {
        unreadable(msg, msgsize, cert_what, cert_file);
        goto done;
    }
    leaf = PEM_read_bio_X509(bio, NULL, password_cb, NULL);
    if (leaf == NULL) {
        snprintf(msg, msgsize, "%s holds no PEM certificate", cert_what);
        goto done;
    }
    facts->certificates = 1;
    while ((extra = PEM_read_bio_X509(bio, NULL, password_cb, NULL)) != NULL) {
        facts->certificates++;
        X509_free(extra);
    }
    BIO_free(bio);
    ERR_clear_error();

    bio = open_source(key_file, key_pem, key_len);
    if (bio == NULL) {
        unreadable(msg, msgsize, key_what, key_file);
        goto done;
    }
    pkey = PEM_read_bio_PrivateKey(bio, NULL, password_cb, (void *)pw);
    if (pkey == NULL) {
        if (pw->data == NULL && is_encrypted(key_file, key_pem, key_len))
            snprintf(msg, msgsize, "%s is encrypted: give key_password", key_what);
        else if (pw->data != NULL)
            snprintf(msg, msgsize, "%s could not be decrypted or read (wrong key_password?)", key_what);
        else
            snprintf(msg, msgsize, "%s holds no PEM private key", key_what);
        goto done;
    }
    if (X509_check_private_key(leaf, pkey) != 1) {
        snprintf(msg, msgsize, "the private key does not belong to the certificate");
        goto done;
    }
    subject_cn(leaf, facts->cn);
    facts->not_before = asn1_epoch(X509_get0_notBefore(leaf));
    facts->not_after = asn1_epoch(X509_get0_notAfter(leaf));
    failed = NULL;

done:
    BIO_free(bio);
    X509_free(leaf);
    EVP_PKEY_free(pkey);
    ERR_clear_error();
    return failed;
}

/* A PEM text option: memory BIOs take an int length. */
static const char *pem_option(lua_State *L, const char *name, size_t *len)
{
    const char *pem = dps_opt_string(L, 1, 1, name, len);

    if (pem != NULL && *len > X509_MAX_PEM)
        luaL_argerror(L, 1, lua_pushfstring(L, "option '%s' must be at most 1 MiB", name));
    return pem;
}

static void push_facts(lua_State *L, const cert_facts *facts)
{
    lua_createtable(L, 0, 4);
    lua_pushstring(L, facts->cn);
    lua_setfield(L, -2, "cn");
    lua_pushnumber(L, facts->not_before);
    lua_setfield(L, -2, "not_before");
    lua_pushnumber(L, facts->not_after);
    lua_setfield(L, -2, "not_after");
    lua_pushinteger(L, facts->certificates);
    lua_setfield(L, -2, "certificates");
}

/***
 * Check a client certificate and its key before they are used.
 * @function x509_credentials
 * @tparam table opts `cert_file` or `cert` (PEM, may hold the chain), `key_file` or `key` (PEM),
 * optional `key_password`
 * @treturn table `{ cn = …, not_before = epoch, not_after = epoch, certificates = n }`
 * @return nil, message, `{ kind = "credentials" }` when they cannot be used
 * (unreadable, not PEM, encrypted without the right password, not a pair);
 * messages never quote key material
 */
static int x509_credentials(lua_State *L)
{
    size_t unused, c_len, k_len;
    dps_credentials c;
    password pw;
    cert_facts facts;
    char msg[512];
    const char *failed;

    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    /* Each value stays on the stack while its pointer is in use. */
    c.cert_file = dps_opt_string(L, 1, 1, "cert_file", &unused);
    c.cert = pem_option(L, "cert", &c_len);
    c.key_file = dps_opt_string(L, 1, 1, "key_file", &unused);
    c.key = pem_option(L, "key", &k_len);
    c.key_password = pw.data = dps_opt_string(L, 1, 1, "key_password", &pw.len);
    dps_check_credentials(L, 1, &c, 1);

    memset(&facts, 0, sizeof facts);
    failed = inspect(c.cert_file, c.cert, c_len, c.key_file, c.key, k_len, &pw, &facts, msg, sizeof msg);
    if (failed != NULL)
        return dps_push_failure(L, "credentials", failed);
    push_facts(L, &facts);
    return 1;
}

/***
 * What breaks the rule of the client-certificate options, without reading
 * any file: 'cert' and 'cert_file' exclude each other, as do 'key' and
 * 'key_file'; a key or a password needs a certificate, and a certificate
 * needs its key.  The one place the rule is written: `core.session` and
 * `x509_credentials` raise on the same text, and `dps.new` says it in its
 * own name.
 * @function credentials_problem
 * @tparam table opts any of `cert_file`, `cert`, `key_file`, `key`, `key_password`
 * @treturn ?string nil when the options fit, else what is wrong
 */
static int credentials_problem(lua_State *L)
{
    dps_credentials c;
    const char **fields[] = {&c.cert_file, &c.cert, &c.key_file, &c.key, &c.key_password};
    static const char *const names[] = {"cert_file", "cert", "key_file", "key", "key_password"};
    const char *problem;
    size_t i;

    luaL_checktype(L, 1, LUA_TTABLE);
    for (i = 0; i < sizeof names / sizeof names[0]; i++) {
        lua_getfield(L, 1, names[i]);
        *fields[i] = lua_isnil(L, -1) ? NULL : names[i]; /* only presence counts */
        lua_pop(L, 1);
    }
    problem = dps_credentials_problem(&c, c.cert != NULL || c.cert_file != NULL);
    if (problem == NULL)
        luaL_pushfail(L);
    else
        lua_pushstring(L, problem);
    return 1;
}

void dps_open_x509(lua_State *L)
{
    static const luaL_Reg functions[] = {
        {"credentials_problem", credentials_problem},
        {"x509_credentials", x509_credentials},
        {NULL, NULL}
    };
    luaL_setfuncs(L, functions, 0);
}
