/*
 * dps_sas_build.  The input is split at its first three newlines into
 * resource URI, base64 key, expiry (decimal text, read with strtoll: "-5"
 * and huge numbers included) and, when a third newline is there, the key
 * name (URI and name: 1 to 4096 and 1 to 256 bytes, no NUL).  A token is built exactly when every argument is acceptable, and a
 * built token is checked piece by piece: the encoded URI, a signature that
 * is the HMAC-SHA256 computed here with OpenSSL, the expiry, the name.
 */
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "fuzz.h"

#include "dps_codec.h"
#include "dps_sas.h"

#define PREFIX "SharedAccessSignature sr="

typedef struct {
    const char *p;
    size_t n;
} span;

/* Expects the literal lit at token[*pos]. */
static void expect(const char *token, size_t token_len, size_t *pos, const char *lit, size_t n)
{
    CHECK(token_len - *pos >= n);
    CHECK(memcmp(token + *pos, lit, n) == 0);
    *pos += n;
}

/* Expects the percent-encoding of the n bytes at p (checked separately by
 * fuzz_percent) at token[*pos]. */
static void expect_encoded(const char *token, size_t token_len, size_t *pos, const char *p, size_t n)
{
    char *enc = malloc(DPS_PERCENT_ENCODED_MAX(n));
    size_t len;

    CHECK(enc != NULL);
    len = dps_percent_encode(p, n, enc);
    CHECK(len != (size_t)-1);
    expect(token, token_len, pos, enc, len);
    free(enc);
}

static void check_token(const char *token, size_t token_len, span uri, span key,
                        long long expiry, const span *name)
{
    unsigned char raw_key[DPS_BASE64_DECODED_MAX(DPS_SAS_MAX_KEY_TEXT)];
    unsigned char mac[32], sig[DPS_PERCENT_ENCODED_MAX(DPS_BASE64_ENCODED_SIZE(32))];
    unsigned int mac_len = 0;
    size_t pos = 0, i, key_len = 0, sig_len, sig_text, sr_len, where = 0;
    char se[32], *signed_text;
    int se_len = snprintf(se, sizeof se, "%lld", expiry);

    for (i = 0; i < token_len; i++) /* fit for an HTTP header value */
        CHECK(token[i] > 0x20 && token[i] < 0x7f ? 1 : (token[i] == ' ' && i == 21));

    expect(token, token_len, &pos, PREFIX, sizeof PREFIX - 1);
    sr_len = pos;
    expect_encoded(token, token_len, &pos, uri.p, uri.n);
    sr_len = pos - sr_len;
    expect(token, token_len, &pos, "&sig=", 5);
    sig_text = pos;
    while (pos < token_len && token[pos] != '&')
        pos++;
    CHECK(pos - sig_text < sizeof sig);
    sig_len = fuzz_percent_decode(token + sig_text, pos - sig_text, sig);

    /* The signature: HMAC-SHA256(key, encoded URI "\n" expiry), base64. */
    CHECK(dps_base64_decode(key.p, key.n, raw_key, &key_len, &where) == NULL);
    signed_text = malloc(sr_len + 1 + (size_t)se_len);
    CHECK(signed_text != NULL);
    memcpy(signed_text, token + sizeof PREFIX - 1, sr_len);
    signed_text[sr_len] = '\n';
    memcpy(signed_text + sr_len + 1, se, (size_t)se_len);
    CHECK(HMAC(EVP_sha256(), raw_key, (int)key_len, (unsigned char *)signed_text,
               sr_len + 1 + (size_t)se_len, mac, &mac_len) != NULL);
    free(signed_text);
    {
        char b64[DPS_BASE64_ENCODED_SIZE(32)];
        size_t b64_len = dps_base64_encode(mac, mac_len, b64);
        CHECK(sig_len == b64_len);
        CHECK(memcmp(sig, b64, b64_len) == 0);
    }

    expect(token, token_len, &pos, "&se=", 4);
    expect(token, token_len, &pos, se, (size_t)se_len);
    if (name != NULL) {
        expect(token, token_len, &pos, "&skn=", 5);
        expect_encoded(token, token_len, &pos, name->p, name->n);
    }
    CHECK(pos == token_len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *in = fuzz_copy(data, size);
    char *scratch = malloc(DPS_SAS_SCRATCH);
    span field[4];
    size_t start = 0, nfields = 0, i, key_bytes = 0, where = 0;
    char expiry_text[40];
    long long expiry;
    const char *token = NULL, *problem, *subject = NULL;
    size_t token_len = 0;
    unsigned char raw_key[DPS_BASE64_DECODED_MAX(DPS_SAS_MAX_KEY_TEXT)];
    int acceptable;

    CHECK(scratch != NULL);
    for (i = 0; i <= size && nfields < 4; i++) {
        if (i == size || (in[i] == '\n' && nfields < 3)) {
            field[nfields].p = in + start;
            field[nfields].n = i - start;
            nfields++;
            start = i + 1;
        }
    }
    while (nfields < 3) {
        field[nfields].p = in + size;
        field[nfields].n = 0;
        nfields++;
    }
    i = field[2].n < sizeof expiry_text - 1 ? field[2].n : sizeof expiry_text - 1;
    memcpy(expiry_text, field[2].p, i);
    expiry_text[i] = '\0';
    expiry = strtoll(expiry_text, NULL, 10);

    problem = dps_sas_build(field[0].p, field[0].n, field[1].p, field[1].n, expiry,
                            nfields == 4 ? field[3].p : NULL, nfields == 4 ? field[3].n : 0,
                            scratch, &token, &token_len, &subject);

    acceptable = field[0].n >= 1 && field[0].n <= DPS_SAS_MAX_URI &&
                 memchr(field[0].p, '\0', field[0].n) == NULL &&
                 (nfields < 4 || (field[3].n >= 1 && field[3].n <= DPS_SAS_MAX_KEY_NAME &&
                                  memchr(field[3].p, '\0', field[3].n) == NULL)) &&
                 field[1].n <= DPS_SAS_MAX_KEY_TEXT && expiry >= 0 &&
                 dps_base64_decode(field[1].p, field[1].n, raw_key, &key_bytes, &where) == NULL;
    CHECK((problem == NULL) == (acceptable != 0));
    if (problem == NULL) {
        CHECK(token >= scratch && token_len <= DPS_SAS_SCRATCH &&
              (size_t)(token - scratch) <= DPS_SAS_SCRATCH - token_len);
        check_token(token, token_len, field[0], field[1], expiry, nfields == 4 ? &field[3] : NULL);
    } else {
        static const char *const subjects[] = {
            "resource_uri", "key_name", "key", "expiry", "percent-encoding", NULL
        };
        int known = 0;
        for (i = 0; subjects[i] != NULL; i++)
            known |= subject != NULL && strcmp(subject, subjects[i]) == 0;
        CHECK(known);
        CHECK(problem[0] != '\0');
        if (field[0].n == 0 || field[0].n > DPS_SAS_MAX_URI || memchr(field[0].p, '\0', field[0].n) != NULL)
            CHECK(strcmp(subject, "resource_uri") == 0); /* checked first */
        else if (expiry < 0 && field[1].n <= DPS_SAS_MAX_KEY_TEXT &&
                 (nfields < 4 || (field[3].n >= 1 && field[3].n <= DPS_SAS_MAX_KEY_NAME &&
                                  memchr(field[3].p, '\0', field[3].n) == NULL)))
            CHECK(strcmp(subject, "expiry") == 0);
    }
    free(scratch);
    free(in);
    return 0;
}
