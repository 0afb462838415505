/*
 * dps_headers_line + dps_headers_next on a raw header block, cut into lines
 * the way libcurl hands them to the session's header callback (each line
 * with its "\n"; the last one may lack it).  Checks the shape of every field,
 * that only the last response counts (parsing from the last status line on
 * gives the same fields) and that writing the fields out as "name: value"
 * lines and parsing them again gives them back.
 */
#include "fuzz.h"

#include "dps_headers.h"

typedef struct {
    dps_header_field *f;
    size_t n;
    char *block; /* kept lines; the fields point into it */
    size_t block_len;
} parsed;

static int blank(char c)
{
    return c == ' ' || c == '\t';
}

/* Feeds raw to the line classifier and walks what was kept. */
static void parse(const char *raw, size_t size, parsed *out)
{
    size_t pos = 0, len = 0;
    int done = 0;
    dps_headers_iter it;

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
    out->block_len = len;

    /* A field line takes at least two bytes ("a:"), its "\n" a third. */
    out->f = malloc((len / 3 + 1) * sizeof *out->f);
    CHECK(out->f != NULL);
    out->n = 0;
    dps_headers_begin(&it, out->block, len);
    while (dps_headers_next(&it, &out->f[out->n])) {
        const dps_header_field *f = &out->f[out->n];
        size_t i;
        CHECK(f->name >= out->block && f->name_len > 0);
        CHECK(f->value >= f->name + f->name_len + 1);
        CHECK(f->value + f->value_len <= out->block + len);
        CHECK(!blank(f->name[0]) && !blank(f->name[f->name_len - 1]));
        for (i = 0; i < f->name_len; i++)
            CHECK(f->name[i] != ':' && f->name[i] != '\n' && !(f->name[i] >= 'A' && f->name[i] <= 'Z'));
        /* Trimmed, but a fold onto an empty value leaves its joining space. */
        CHECK(f->value_len == 0 || !blank(f->value[f->value_len - 1]));
        CHECK(f->value_len == 0 || !blank(f->value[0]) ||
              (f->value[0] == ' ' && f->value_len >= 2 && !blank(f->value[1])));
        CHECK(memchr(f->value, '\n', f->value_len) == NULL);
        out->n++;
        CHECK(out->n <= len / 3);
    }
}

static void release(parsed *p)
{
    free(p->f);
    free(p->block);
}

static void same_fields(const parsed *a, const parsed *b)
{
    size_t i;

    CHECK(a->n == b->n);
    for (i = 0; i < a->n; i++) {
        CHECK(a->f[i].name_len == b->f[i].name_len);
        CHECK(memcmp(a->f[i].name, b->f[i].name, a->f[i].name_len) == 0);
        CHECK(a->f[i].value_len == b->f[i].value_len);
        CHECK(memcmp(a->f[i].value, b->f[i].value, a->f[i].value_len) == 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    parsed whole, tail, again;
    const char *raw = (const char *)data;
    size_t last = 0, pos = 0, i, out_len = 0;
    int clean = 1;

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
    same_fields(&whole, &tail);
    release(&tail);

    /* Written out and parsed again, the fields come back unchanged (unless a
     * value ends in CR, which a line's end would swallow, or starts with the
     * space of a fold onto an empty value, which trimming would drop). */
    for (i = 0; i < whole.n; i++) {
        out_len += whole.f[i].name_len + 2 + whole.f[i].value_len + 2;
        if (whole.f[i].value_len > 0 && (whole.f[i].value[whole.f[i].value_len - 1] == '\r' ||
                                         whole.f[i].value[0] == ' '))
            clean = 0;
    }
    if (clean) {
        char *text = malloc(out_len + 1);
        CHECK(text != NULL);
        out_len = 0;
        for (i = 0; i < whole.n; i++) {
            memcpy(text + out_len, whole.f[i].name, whole.f[i].name_len);
            out_len += whole.f[i].name_len;
            memcpy(text + out_len, ": ", 2);
            out_len += 2;
            memcpy(text + out_len, whole.f[i].value, whole.f[i].value_len);
            out_len += whole.f[i].value_len;
            memcpy(text + out_len, "\r\n", 2);
            out_len += 2;
        }
        parse(text, out_len, &again);
        same_fields(&whole, &again);
        release(&again);
        free(text);
    }
    release(&whole);
    return 0;
}
