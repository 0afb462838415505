/*
 * dps_parse_retry_after and dps_parse_http_date on the same header value:
 * delays are never negative or NaN and capped at 1e9, delay-seconds give
 * their exact value, "-5" and other letter-less non-numbers are refused, and
 * the HTTP-date form agrees with dps_parse_http_date.
 */
#include <math.h>

#include "fuzz.h"

#include "dps_time.h"

#define MAX_DELAY 1e9

static int blank(char c)
{
    return c == ' ' || c == '\t';
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const double nows[] = {0.0, 1.7e9, -1e12, 4e18};
    char *value = fuzz_copy(data, size);
    const char *t = value;
    size_t tlen = size, i, letters = 0;
    int usable, digits = 1, date_ok;
    double date = 0, seconds;

    /* The value as the parsers see it: without surrounding blanks. */
    while (tlen > 0 && blank(t[0])) {
        t++;
        tlen--;
    }
    while (tlen > 0 && blank(t[tlen - 1]))
        tlen--;
    usable = tlen > 0 && tlen <= DPS_TIME_MAX_HEADER && memchr(t, '\0', tlen) == NULL;
    for (i = 0; i < tlen; i++) {
        if (!is_digit(t[i]))
            digits = 0;
        if ((t[i] >= 'A' && t[i] <= 'Z') || (t[i] >= 'a' && t[i] <= 'z'))
            letters++;
    }

    date_ok = dps_parse_http_date(value, size, &date) == 0;
    if (date_ok) {
        CHECK(usable);
        CHECK(letters >= 3);
        CHECK(isfinite(date));
    }

    for (i = 0; i < sizeof nows / sizeof nows[0] + 1; i++) {
        double now = i < sizeof nows / sizeof nows[0] ? nows[i] : nan("");
        int ok = dps_parse_retry_after(value, size, now, &seconds) == 0;

        if (!usable) {
            CHECK(!ok);
            continue;
        }
        if (ok) {
            CHECK(seconds >= 0 && seconds <= MAX_DELAY); /* also false for NaN */
            CHECK(seconds == floor(seconds) || !digits);
        }
        if (digits) {
            /* delay-seconds: exact below the cap, whatever the clock says */
            char *copy = malloc(tlen + 1);
            double expect;
            CHECK(copy != NULL);
            memcpy(copy, t, tlen);
            copy[tlen] = '\0';
            expect = strtod(copy, NULL);
            free(copy);
            CHECK(ok);
            CHECK(seconds == (expect < MAX_DELAY ? expect : MAX_DELAY));
        } else if (is_digit(t[0])) {
            CHECK(!ok); /* "5s", "1.5", "06 Nov 1994 …": neither form */
        } else if (letters < 3) {
            CHECK(!ok); /* "-5", "+5", "": no HTTP-date is without a name */
        } else {
            CHECK(ok == date_ok);
            if (ok) {
                double d = date - now;
                double expect = !(d > 0) ? (d != d ? MAX_DELAY : 0) : (d < MAX_DELAY ? d : MAX_DELAY);
                CHECK(seconds == expect);
            }
        }
    }
    free(value);
    return 0;
}
