/*
 * fuzz_framer.c: libFuzzer target for attuned's line framer (daemon/framer.c).
 *
 * Input: byte 0 picks max_line_bytes (1..64, small so that the limit is hit often), byte 1
 * seeds the chunking; the rest is the stream. The stream is framed whole, byte by byte and in
 * pseudo-random chunks, and each run must agree with a reference framer written from
 * PROTOCOL.md in a few lines:
 *  - no delivered line is longer than the limit;
 *  - the lines (and the too-long reports between them) are the same whatever the chunking;
 *  - every byte is accounted for: fed == delivered + dropped + pending, after every feed;
 *  - the buffer stays within one line plus one feed.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "framer.h"

/* Events rendered into a byte string: 'L' + 4-byte length + the line, or 'T' for a too-long
 * line (cut early or not: that depends on how the bytes arrive, not on the stream). */
typedef struct events {
    unsigned char *data;
    size_t len, cap;
} events;

static void put(events *e, const void *p, size_t n)
{
    if (e->len + n > e->cap) {
        size_t cap = e->cap ? e->cap : 256;
        while (cap < e->len + n)
            cap *= 2;
        e->data = realloc(e->data, cap);
        if (!e->data)
            abort();
        e->cap = cap;
    }
    memcpy(e->data + e->len, p, n);
    e->len += n;
}

static void put_line(events *e, const char *line, size_t len)
{
    unsigned char h[5] = {'L', (unsigned char)(len >> 24), (unsigned char)(len >> 16),
                          (unsigned char)(len >> 8), (unsigned char)len};
    put(e, h, sizeof h);
    put(e, line, len);
}

#define CHECK(cond)                                                                            \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);       \
            abort();                                                                           \
        }                                                                                      \
    } while (0)

/* The reference: split the whole stream at '\n'. Returns the pending byte count. */
static size_t reference(const char *s, size_t n, size_t max, events *e, uint64_t *delivered)
{
    size_t start = 0;
    *delivered = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\n')
            continue;
        size_t len = i - start;
        if (len && s[start + len - 1] == '\r')
            len--;
        if (len <= max) {
            put_line(e, s + start, len);
            *delivered += i + 1 - start;
        } else {
            put(e, "T", 1);
        }
        start = i + 1;
    }
    size_t tail = n - start;
    /* An unterminated tail is reported as soon as it cannot become a line within the limit. */
    if (tail > max + 1 || (tail == max + 1 && s[n - 1] != '\r')) {
        put(e, "T", 1);
        return 0;
    }
    return tail;
}

static size_t run(const char *s, size_t n, size_t max, unsigned seed, size_t fixed_chunk,
                  events *e, uint64_t *delivered)
{
    framer f;
    framer_init(&f, max);
    size_t biggest = 0;
    for (size_t i = 0; i < n;) {
        size_t chunk = fixed_chunk;
        if (!chunk) {
            seed = seed * 1103515245u + 12345u;
            chunk = 1 + (seed >> 16) % (2 * max + 8);
        }
        if (chunk > n - i)
            chunk = n - i;
        if (chunk > biggest)
            biggest = chunk;
        CHECK(framer_feed(&f, s + i, chunk) == 0);
        i += chunk;
        for (;;) {
            int has = framer_has_line(&f);
            const char *line;
            size_t len;
            enum framer_event ev = framer_next(&f, &line, &len);
            CHECK(has == (ev == FRAMER_LINE || ev == FRAMER_TOO_LONG));
            if (ev == FRAMER_NONE)
                break;
            if (ev == FRAMER_LINE) {
                CHECK(len <= max);
                CHECK(memchr(line, '\n', len) == NULL);
                put_line(e, line, len);
            } else {
                CHECK(line == NULL && len == 0);
                put(e, "T", 1);
            }
        }
        CHECK(f.n_bytes_in == i);
        CHECK(f.n_bytes_in == f.n_bytes_delivered + f.n_bytes_dropped + framer_pending(&f));
        /* What is kept: at most max + 1 bytes of an incomplete line, plus one feed. */
        CHECK(framer_pending(&f) <= max + 1);
        CHECK(f.cap <= 4096 || f.cap < 2 * (max + 1 + biggest));
    }
    size_t pending = framer_pending(&f);
    *delivered = f.n_bytes_delivered;
    framer_fini(&f);
    return pending;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t max = 1 + data[0] % 64;
    unsigned seed = data[1];
    const char *s = (const char *)data + 2;
    size_t n = size - 2;

    events want = {0}, got = {0};
    uint64_t want_delivered, got_delivered;
    size_t want_pending = reference(s, n, max, &want, &want_delivered);
    static const size_t chunks[] = {0, 1, (size_t)-1};
    for (size_t k = 0; k < sizeof chunks / sizeof *chunks; k++) {
        got.len = 0;
        size_t pending = run(s, n, max, seed, chunks[k], &got, &got_delivered);
        CHECK(pending == want_pending);
        CHECK(got_delivered == want_delivered);
        CHECK(got.len == want.len && (!got.len || memcmp(got.data, want.data, got.len) == 0));
    }
    free(want.data);
    free(got.data);
    return 0;
}
