/*
 * dps_base64_encode / dps_base64_decode: any bytes survive the round trip,
 * and decoding arbitrary text accepts exactly the strict form the header
 * promises (alphabet, length a multiple of 4, at most two '=' at the end,
 * zero bits after the last byte), which re-encodes to itself.
 */
#include "fuzz.h"

#include "dps_codec.h"

static int in_alphabet(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '+' || c == '/';
}

/* The header's definition of acceptable text, written out independently. */
static int strict_form(const char *s, size_t n, size_t *pad)
{
    size_t i;

    if (n == 0 || n % 4 != 0)
        return 0;
    *pad = 0;
    while (*pad < 2 && s[n - 1 - *pad] == '=')
        (*pad)++;
    for (i = 0; i < n - *pad; i++)
        if (!in_alphabet((unsigned char)s[i]))
            return 0;
    /* canonical: the last character before the padding carries no spare bits */
    if (*pad > 0) {
        const char *alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        long v = strchr(alphabet, s[n - *pad - 1]) - alphabet;
        if ((v & (*pad == 2 ? 0x0F : 0x03)) != 0)
            return 0;
    }
    return 1;
}

static void round_trip(const uint8_t *data, size_t size)
{
    char *text = malloc(DPS_BASE64_ENCODED_SIZE(size));
    unsigned char *back;
    size_t n, i, back_len = 0, pad = 0, pos = 0;

    CHECK(text != NULL);
    n = dps_base64_encode(data, size, text);
    CHECK(n == (size + 2) / 3 * 4);
    CHECK(text[n] == '\0');
    CHECK(size == 0 || strict_form(text, n, &pad));
    for (i = 0; i < n; i++)
        CHECK(in_alphabet((unsigned char)text[i]) || (text[i] == '=' && i >= n - 2));
    back = malloc(DPS_BASE64_DECODED_MAX(n));
    CHECK(back != NULL);
    if (size == 0) {
        CHECK(dps_base64_decode(text, n, back, &back_len, &pos) != NULL); /* "is empty" */
    } else {
        CHECK(dps_base64_decode(text, n, back, &back_len, &pos) == NULL);
        CHECK(back_len == size);
        CHECK(memcmp(back, data, size) == 0);
    }
    free(back);
    free(text);
}

static void decode_text(const uint8_t *data, size_t size)
{
    char *text = fuzz_copy(data, size);
    unsigned char *out = malloc(DPS_BASE64_DECODED_MAX(size));
    size_t out_len = 0, pad = 0, pos = 0, i;
    const char *problem;
    int valid = strict_form(text, size, &pad);

    CHECK(out != NULL);
    problem = dps_base64_decode(text, size, out, &out_len, &pos);
    CHECK((problem == NULL) == (valid != 0));
    if (problem == NULL) {
        char *again = malloc(DPS_BASE64_ENCODED_SIZE(out_len));
        size_t n;
        CHECK(again != NULL);
        CHECK(out_len == size / 4 * 3 - pad);
        /* Canonical text re-encodes to itself. */
        n = dps_base64_encode(out, out_len, again);
        CHECK(n == size);
        CHECK(memcmp(again, text, size) == 0);
        free(again);
    } else {
        CHECK(problem[0] != '\0');
        /* A position names a character outside the alphabet; before it
         * there are only base64 characters and '=' (a stray '=' is named
         * only when nothing else is wrong with a character). */
        CHECK(pos <= size);
        if (pos > 0) {
            CHECK(!in_alphabet((unsigned char)text[pos - 1]));
            for (i = 0; i + 1 < pos; i++)
                CHECK(in_alphabet((unsigned char)text[i]) || text[i] == '=');
        }
    }
    free(out);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536)
        return 0;
    round_trip(data, size);
    decode_text(data, size);
    return 0;
}
