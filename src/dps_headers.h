/*
 * dps_headers.h - which HTTP response header lines to keep, as plain C (no
 * Lua, no libcurl), for the header callback and the fuzz target.
 *
 * dps_headers_line decides, line by line as libcurl delivers them, what the
 * caller keeps: only the header lines of the last response (a status line
 * starts over, so 1xx and proxy CONNECT responses are dropped), nothing
 * after the blank line that ends them (chunked trailers).  The caller
 * appends each kept line plus "\n" to a block, which goes to Lua as it is
 * (and is read into a table there).
 */
#ifndef DPS_HEADERS_H
#define DPS_HEADERS_H

#include <stddef.h>

/* What to do with one line handed over by libcurl. */
enum {
    DPS_HEADERS_KEEP,  /* append the first *keep bytes, then "\n" */
    DPS_HEADERS_SKIP,  /* nothing to keep: the blank line, a trailer */
    DPS_HEADERS_RESET  /* a status line: drop every line kept so far */
};

/*
 * Classifies one line (n bytes, with its CR LF) of a response.  *done is the
 * caller's state, 0 before the first line of a transfer; set to 1 by the
 * blank line, back to 0 by a status line.  For DPS_HEADERS_KEEP, *keep is the
 * line's length without its trailing CR and LF bytes (never 0).
 */
int dps_headers_line(int *done, const char *line, size_t n, size_t *keep);

#endif
