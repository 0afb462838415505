/*
 * dps_headers_line on a raw header block, cut into lines the way libcurl
 * hands them to the header callback (each line with its "\n"; the last one
 * may lack it).  Checks what each answer means, and that only the last
 * response counts: the lines kept from the whole input are the lines kept
 * from its last status line on.  (The kept block is read into a table in
 * Lua, dps.headers.parse: spec/headers_spec.lua holds its properties.)
 */
#include "fuzz.h"

#include "dps_headers.h"

typedef struct {
    char *block; /* kept lines, each ending in "\n" */
    size_t len;
} parsed;

/* Feeds raw to the line classifier and keeps what it says to keep. */
static void parse(const char *raw, size_t size, parsed *out)
{
    size_t pos = 0, len = 0;
    int done = 0;

    /* Kept lines lose at least their "\n", but the last may lack one. */
    out->block = malloc(size + 1);
    CHECK(out->block != NULL);
    while (pos < size) {
        const char *nl = memchr(raw + pos, '\n', size - pos);
        size_t n = nl != NULL ? (size_t)(nl - (raw + pos)) + 1 : size - pos;
        char *line = malloc(n); /* exactly the line, as libcurl would pass it */
        size_t keep = 0;
        CHECK(line != NULL);
        memcpy(line, raw + pos, n);
        switch (dps_headers_line(&done, line, n, &keep)) {
        case DPS_HEADERS_RESET:
            CHECK(n >= 5 && memcmp(line, "HTTP/", 5) == 0 && done == 0);
            len = 0;
            break;
        case DPS_HEADERS_SKIP:
            CHECK(done == 1);
            break;
        case DPS_HEADERS_KEEP:
            CHECK(done == 0 && keep > 0 && keep <= n);
            CHECK(line[keep - 1] != '\n' && line[keep - 1] != '\r');
            CHECK(len + keep + 1 <= size + 1);
            memcpy(out->block + len, line, keep);
            len += keep;
            out->block[len++] = '\n';
            break;
        default:
            CHECK(0);
        }
        free(line);
        pos += n;
    }
    out->len = len;
    /* No kept line is empty or ends in CR or LF. */
    for (pos = 0; pos < len; pos++)
        if (out->block[pos] == '\n')
            CHECK(pos > 0 && out->block[pos - 1] != '\n' && out->block[pos - 1] != '\r');
}

static void release(parsed *p)
{
    free(p->block);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    parsed whole, tail;
    const char *raw = (const char *)data;
    size_t last = 0, pos = 0;

    if (size > 65536)
        return 0;
    parse(raw, size, &whole);

    /* The last response alone gives the same fields. */
    while (pos < size) {
        const char *nl = memchr(raw + pos, '\n', size - pos);
        size_t n = nl != NULL ? (size_t)(nl - (raw + pos)) + 1 : size - pos;
        if (n >= 5 && memcmp(raw + pos, "HTTP/", 5) == 0)
            last = pos;
        pos += n;
    }
    parse(raw + last, size - last, &tail);
    CHECK(whole.len == tail.len && memcmp(whole.block, tail.block, whole.len) == 0);
    release(&tail);
    release(&whole);
    return 0;
}
