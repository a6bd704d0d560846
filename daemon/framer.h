/*
 * framer.h: splits the byte stream of one connection into protocol lines (framer.c).
 *
 * A line ends at '\n'; a '\r' just before the '\n' is not part of it. A line longer than
 * max_line_bytes is never delivered: it is reported as too long, once, and its bytes are
 * dropped up to and including its newline. The framer holds at most one incomplete line of
 * max_line_bytes + 1 bytes plus the bytes of the last feed, so its memory is bounded by
 * configuration. It does no I/O and knows nothing of libuv or JSON: the server feeds it what
 * it reads and takes events out while it has room for them (backpressure), and the fuzzer
 * drives it directly.
 *
 * Invariant, at any time: n_bytes_in == n_bytes_delivered + n_bytes_dropped + framer_pending().
 * Feeding the same bytes in any chunking gives the same lines, in the same order.
 */
#ifndef ATTUNED_FRAMER_H
#define ATTUNED_FRAMER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct framer {
    size_t max_line_bytes; /* longest line delivered, '\r' and '\n' excluded */
    char *buf;             /* bytes fed and not yet consumed: buf[off, len) */
    size_t off, len, cap;  /* bytes */
    size_t scan;           /* buf[off, scan) holds no '\n' (a search resumes there) */
    bool is_discarding;    /* inside a too-long line, dropping bytes until its '\n' */
    /* Accounting, in bytes, since framer_init. */
    uint64_t n_bytes_in;        /* every byte fed */
    uint64_t n_bytes_delivered; /* bytes of delivered lines, with their '\r' and '\n' */
    uint64_t n_bytes_dropped;   /* bytes of too-long lines, with their '\r' and '\n' */
} framer;

enum framer_event {
    FRAMER_NONE = 0,     /* no complete line: feed more bytes */
    FRAMER_LINE,         /* a line of at most max_line_bytes */
    FRAMER_TOO_LONG,     /* a complete line over the limit; it was dropped */
    FRAMER_TOO_LONG_CUT, /* an incomplete line already over the limit: dropped, and so is the
                          * rest of it up to its newline as it arrives */
};

/* Initialises f in caller-provided memory. Never fails: the buffer grows on the first feed. */
void framer_init(framer *f, size_t max_line_bytes);
/* Frees f's buffer. f may be initialised again afterwards. */
void framer_fini(framer *f);

/* Appends n bytes read from the connection (borrowed; copied as far as they are kept). Any
 * line returned earlier is invalid afterwards. Returns 0, or -1 when out of memory (nothing of
 * data is kept then; the caller should give up on the connection). */
int framer_feed(framer *f, const char *data, size_t n);

/* True when a complete line (of any length) is buffered, so that the next framer_next would
 * return FRAMER_LINE or FRAMER_TOO_LONG. A caller that applies backpressure checks this first:
 * FRAMER_TOO_LONG_CUT, by contrast, must be taken whenever it is due, or the buffer would
 * grow past its bound. */
bool framer_has_line(framer *f);

/* Takes the next event. For FRAMER_LINE, *line and *len (both may not be NULL) give the line
 * without its '\r' and '\n', borrowed from f until the next framer_feed or framer_fini; it is
 * not NUL-terminated. For the other events *line is NULL and *len 0. */
enum framer_event framer_next(framer *f, const char **line, size_t *len);

/* Bytes fed and not yet delivered or dropped: the start of an incomplete line. */
size_t framer_pending(const framer *f);

#endif
