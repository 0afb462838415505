/*
 * fuzz.h - what the libFuzzer targets share: a check that aborts (so that
 * libFuzzer saves the input) and small independent decoders to compare the
 * library's output against.
 */
#ifndef DPS_FUZZ_H
#define DPS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__,     \
                    #cond);                                                      \
            abort();                                                             \
        }                                                                        \
    } while (0)

/* A heap copy of exactly n bytes (at least one, so never NULL for n == 0),
 * so that AddressSanitizer sees every read past the input. */
static inline char *fuzz_copy(const uint8_t *data, size_t n)
{
    char *p = malloc(n > 0 ? n : 1);
    CHECK(p != NULL);
    if (n > 0)
        memcpy(p, data, n);
    return p;
}

static inline int fuzz_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~';
}

static inline int fuzz_upper_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') ? c - '0' : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
}

/*
 * Decodes RFC 3986 percent-encoding as dps_percent_encode writes it: every
 * byte either unreserved or %XX with upper-case hex of a reserved byte (so
 * each input has exactly one encoding).  Writes at most n bytes to out and
 * returns their number, or (size_t)-1 if in is not in that form.
 */
static inline size_t fuzz_percent_decode(const char *in, size_t n, unsigned char *out)
{
    size_t i = 0, o = 0;

    while (i < n) {
        unsigned char c = (unsigned char)in[i];
        if (fuzz_unreserved(c)) {
            out[o++] = c;
            i++;
        } else if (c == '%' && n - i >= 3 && fuzz_upper_hex((unsigned char)in[i + 1]) >= 0 &&
                   fuzz_upper_hex((unsigned char)in[i + 2]) >= 0) {
            c = (unsigned char)(fuzz_upper_hex((unsigned char)in[i + 1]) * 16 +
                                fuzz_upper_hex((unsigned char)in[i + 2]));
            if (fuzz_unreserved(c))
                return (size_t)-1; /* an unreserved byte must stay as is */
            out[o++] = c;
            i += 3;
        } else {
            return (size_t)-1;
        }
    }
    return o;
}

#endif
