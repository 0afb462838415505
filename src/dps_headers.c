/*
 * HTTP response header lines: which ones to keep, and how to read them.
 * Plain C, no allocation, nothing that can raise: it runs inside libcurl's
 * header callback.
 */
#include <string.h>

#include "dps_headers.h"

static int is_blank(char c)
{
    return c == ' ' || c == '\t';
}

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

void dps_headers_begin(dps_headers_iter *it, char *block, size_t len)
{
    it->pos = block;
    it->end = block != NULL ? block + len : NULL;
}

/* Takes the next line [*line, *eol) off the cursor. */
static int take_line(dps_headers_iter *it, char **line, char **eol)
{
    char *nl;

    if (it->pos == NULL || it->pos >= it->end)
        return 0;
    nl = memchr(it->pos, '\n', (size_t)(it->end - it->pos));
    *line = it->pos;
    *eol = nl != NULL ? nl : it->end;
    it->pos = nl != NULL ? nl + 1 : it->end;
    return 1;
}

/* The colon of a field line, or NULL for a line that is not one. */
static char *field_colon(char *line, char *eol)
{
    char *colon;

    if (eol <= line || is_blank(*line)) /* "<=": lets the compiler see a positive length */
        return NULL;
    colon = memchr(line, ':', (size_t)(eol - line));
    return colon == line ? NULL : colon;
}

static void trim(char **start, char **stop)
{
    while (*start < *stop && is_blank(**start))
        (*start)++;
    while (*stop > *start && is_blank((*stop)[-1]))
        (*stop)--;
}

int dps_headers_next(dps_headers_iter *it, dps_header_field *field)
{
    char *line, *eol, *colon = NULL;
    char *name_end, *value, *value_end, *p;

    /* The next field line; continuation lines before it have no field. */
    while (colon == NULL) {
        if (!take_line(it, &line, &eol))
            return 0;
        colon = field_colon(line, eol);
    }
    name_end = colon;
    while (name_end > line && is_blank(name_end[-1]))
        name_end--;
    for (p = line; p < name_end; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p + ('a' - 'A'));
    value = colon + 1;
    value_end = eol;
    trim(&value, &value_end);

    /* Continuation lines up to the next field line, moved down in place
     * behind the value: value_end always stays before the line read. */
    for (;;) {
        char *save = it->pos, *start, *stop;
        if (!take_line(it, &start, &stop))
            break;
        if (start < stop && is_blank(*start)) {
            trim(&start, &stop);
            if (stop > start) {
                *value_end++ = ' ';
                memmove(value_end, start, (size_t)(stop - start));
                value_end += stop - start;
            }
        } else if (field_colon(start, stop) != NULL) {
            it->pos = save; /* the next field: read by the next call */
            break;
        }
        /* anything else is not a header line: skipped */
    }

    field->name = line;
    field->name_len = (size_t)(name_end - line);
    field->value = value;
    field->value_len = (size_t)(value_end - value);
    return 1;
}
