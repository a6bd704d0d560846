/*
 * framer.c: protocol lines out of a connection's byte stream (framer.h).
 *
 * The buffer holds the unconsumed bytes buf[off, len); buf[off, scan) is known to hold no
 * '\n', so that a long line arriving in many small reads is searched once, not once per read.
 * Consumed bytes are moved out of the way at the next feed, not after each line, so that a
 * line handed out stays valid until then.
 */
#include <stdlib.h>
#include <string.h>

#include "framer.h"

#define FIRST_CAP 4096

void framer_init(framer *f, size_t max_line_bytes)
{
    memset(f, 0, sizeof *f);
    f->max_line_bytes = max_line_bytes;
}

void framer_fini(framer *f)
{
    free(f->buf);
    f->buf = NULL;
    f->off = f->len = f->cap = f->scan = 0;
}

int framer_feed(framer *f, const char *data, size_t n)
{
    f->n_bytes_in += n;
    if (f->is_discarding) {
        const char *nl = memchr(data, '\n', n);
        size_t skip = nl ? (size_t)(nl + 1 - data) : n;
        f->n_bytes_dropped += skip;
        if (!nl)
            return 0;
        f->is_discarding = false;
        data += skip;
        n -= skip;
    }
    if (f->off) {
        memmove(f->buf, f->buf + f->off, f->len - f->off);
        f->len -= f->off;
        f->scan -= f->off;
        f->off = 0;
    }
    if (f->len + n > f->cap) {
        size_t cap = f->cap ? f->cap : FIRST_CAP;
        while (cap < f->len + n)
            cap *= 2;
        char *nb = realloc(f->buf, cap);
        if (!nb) {
            f->n_bytes_dropped += n;
            return -1;
        }
        f->buf = nb;
        f->cap = cap;
    }
    if (n)
        memcpy(f->buf + f->len, data, n);
    f->len += n;
    return 0;
}

/* The position of the next '\n' in the unconsumed bytes, or NULL. */
static char *find_newline(framer *f)
{
    if (f->scan < f->off)
        f->scan = f->off;
    char *nl = f->len > f->scan ? memchr(f->buf + f->scan, '\n', f->len - f->scan) : NULL;
    f->scan = nl ? (size_t)(nl - f->buf) : f->len;
    return nl;
}

bool framer_has_line(framer *f)
{
    return find_newline(f) != NULL;
}

enum framer_event framer_next(framer *f, const char **line, size_t *len)
{
    *line = NULL;
    *len = 0;
    size_t max = f->max_line_bytes;
    char *nl = find_newline(f);
    if (!nl) {
        /* Without its newline, max bytes and a '\r' may still become a line at the limit. */
        size_t pending = f->len - f->off;
        if (pending > max + 1 || (pending == max + 1 && f->buf[f->len - 1] != '\r')) {
            f->n_bytes_dropped += pending;
            f->off = f->scan = f->len;
            f->is_discarding = true;
            return FRAMER_TOO_LONG_CUT;
        }
        return FRAMER_NONE;
    }
    char *start = f->buf + f->off;
    size_t raw = (size_t)(nl - start) + 1;
    size_t n = raw - 1;
    if (n && start[n - 1] == '\r')
        n--;
    f->off += raw;
    f->scan = f->off;
    if (n > max) {
        f->n_bytes_dropped += raw;
        return FRAMER_TOO_LONG;
    }
    f->n_bytes_delivered += raw;
    *line = start;
    *len = n;
    return FRAMER_LINE;
}

size_t framer_pending(const framer *f)
{
    return f->len - f->off;
}
