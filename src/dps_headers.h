/*
 * dps_headers.h - HTTP response header parsing as plain C (no Lua, no
 * libcurl), for the session's header callback and the fuzz targets.
 *
 * Two steps.  dps_headers_line decides, line by line as libcurl delivers
 * them, what the caller keeps: only the header lines of the last response
 * (a status line starts over, so 1xx and proxy CONNECT responses are
 * dropped), nothing after the blank line that ends them (chunked trailers).
 * The caller appends each kept line plus "\n" to a block; dps_headers_next
 * then walks that block, yielding lower-cased names with trimmed values and
 * obs-fold continuation lines joined to their field with one space.
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

/* A cursor over a block of kept lines, each ending in "\n". */
typedef struct {
    char *pos; /* first unread byte */
    char *end; /* one past the block */
} dps_headers_iter;

/* One field: name lower-cased, without trailing blanks; value without
 * leading or trailing blanks, folded lines joined with " " (so a fold onto
 * an empty value starts with that space); may be empty. */
typedef struct {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} dps_header_field;

/* Starts walking block (len bytes); the block is rewritten in place. */
void dps_headers_begin(dps_headers_iter *it, char *block, size_t len);

/*
 * Stores the next field in *field and returns 1, or returns 0 at the end.
 * Lines without a colon, or starting with one, are skipped; a continuation
 * line (starting with a space or tab) extends the last field before it, even
 * across skipped lines, and is dropped when there is none.  Repeated names
 * are yielded one by one (joining them is the caller's).  The name and value
 * point into the block and stay valid while it does: later calls only
 * rewrite later lines.
 */
int dps_headers_next(dps_headers_iter *it, dps_header_field *field);

#endif
