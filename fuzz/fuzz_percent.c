/*
 * dps_percent_encode: the output uses only A-Z a-z 0-9 - . _ ~ and %XX with
 * upper-case hex, encodes exactly the reserved bytes, fits the promised
 * bound, and decodes back to the input.
 */
#include "fuzz.h"

#include "dps_codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *in = fuzz_copy(data, size);
    char *out = malloc(DPS_PERCENT_ENCODED_MAX(size));
    unsigned char *back = malloc(size > 0 ? size : 1);
    size_t n, i, percents = 0, reserved = 0, back_len;

    CHECK(out != NULL && back != NULL);
    n = dps_percent_encode(in, size, out);
    CHECK(n != (size_t)-1);
    CHECK(n < DPS_PERCENT_ENCODED_MAX(size));
    CHECK(out[n] == '\0');
    CHECK(strlen(out) == n);
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)out[i];
        CHECK(fuzz_unreserved(c) || c == '%' || fuzz_upper_hex(c) >= 0);
        if (c == '%')
            percents++;
    }
    for (i = 0; i < size; i++)
        if (!fuzz_unreserved((unsigned char)in[i]))
            reserved++;
    /* One %XX per reserved byte, nothing else escaped. */
    CHECK(percents == reserved);
    CHECK(n == size + 2 * reserved);
    back_len = fuzz_percent_decode(out, n, back);
    CHECK(back_len == size);
    CHECK(size == 0 || memcmp(back, in, size) == 0);
    free(back);
    free(out);
    free(in);
    return 0;
}
