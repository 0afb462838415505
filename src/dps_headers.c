/*
 * HTTP response header lines: which ones to keep.  Plain C, no allocation,
 * nothing that can raise: it runs inside libcurl's header callback.
 */
#include <string.h>

#include "dps_headers.h"

int dps_headers_line(int *done, const char *line, size_t n, size_t *keep)
{
    size_t len = n;

    /* A status line starts a new response: 1xx, a proxy's CONNECT reply or
     * the final one.  Only the last response's headers are kept. */
    if (n >= 5 && memcmp(line, "HTTP/", 5) == 0) {
        *done = 0;
        return DPS_HEADERS_RESET;
    }
    if (*done)
        return DPS_HEADERS_SKIP; /* trailers of a chunked body: ignored */
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        len--;
    if (len == 0) {
        *done = 1;
        return DPS_HEADERS_SKIP;
    }
    *keep = len;
    return DPS_HEADERS_KEEP;
}
