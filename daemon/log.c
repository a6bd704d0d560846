/*
 * log.c: levelled one-line logging for attuned.
 *
 * Every event is one line, "2026-11-25T10:00:00.123Z level module: message\n" (UTC, millisecond
 * precision), handed to the kernel with a single write(2) while one mutex is held, so lines from
 * different threads never interleave. Control characters in the message are escaped (\n, \r,
 * \t, \xHH) so that one event can never look like two. The destination is stderr until
 * log_open() names a file; log_open() may be called again at any time (SIGHUP after log
 * rotation) and swaps the descriptor under the mutex. The level is an atomic so that the common
 * case, a message below the threshold, costs one load and no lock.
 *
 * Transcript text must only be passed at LOG_DEBUG; this module cannot check that, callers must.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "attuned.h"

/* A longer message is cut here and marked, so one runaway debug line cannot exhaust memory. */
#define LOG_MAX_MESSAGE 16384

static const char *const level_names[] = {"error", "warn", "info", "debug"};

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static int log_fd = STDERR_FILENO; /* guarded by log_lock */
static atomic_int log_level = LOG_INFO;

int log_level_parse(const char *s, enum log_level *out)
{
    if (s == NULL)
        return -1;
    for (int i = 0; i < (int)(sizeof level_names / sizeof level_names[0]); i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

void log_set_level(enum log_level level)
{
    if (level < LOG_ERROR)
        level = LOG_ERROR;
    if (level > LOG_DEBUG)
        level = LOG_DEBUG;
    atomic_store(&log_level, (int)level);
}

enum log_level log_get_level(void)
{
    return (enum log_level)atomic_load(&log_level);
}

int log_open(const char *path)
{
    int fd = STDERR_FILENO;
    if (path != NULL && path[0] != '\0') {
        do
            fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
        while (fd < 0 && errno == EINTR);
        if (fd < 0)
            return -1; /* errno tells why; the old destination stays in use */
    }
    pthread_mutex_lock(&log_lock);
    int old = log_fd;
    log_fd = fd;
    pthread_mutex_unlock(&log_lock);
    /* Closed after the swap so no writer can be using it: writers hold the lock while they
     * write. */
    if (old != STDERR_FILENO && old != fd)
        close(old);
    return 0;
}

void log_close(void)
{
    (void)log_open(NULL);
}

/* Appends src to dst (capacity cap, current length *len) with control bytes escaped. Stops
 * early when full; returns false then. */
static bool append_escaped(char *dst, size_t cap, size_t *len, const char *src, size_t src_len)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < src_len; i++) {
        unsigned char ch = (unsigned char)src[i];
        char esc[4];
        size_t n = 0;
        if (ch == '\n') {
            esc[n++] = '\\';
            esc[n++] = 'n';
        } else if (ch == '\r') {
            esc[n++] = '\\';
            esc[n++] = 'r';
        } else if (ch == '\t') {
            esc[n++] = '\\';
            esc[n++] = 't';
        } else if (ch < 0x20 || ch == 0x7f) {
            esc[n++] = '\\';
            esc[n++] = 'x';
            esc[n++] = hex[ch >> 4];
            esc[n++] = hex[ch & 0xf];
        } else {
            esc[n++] = (char)ch;
        }
        if (*len + n > cap)
            return false;
        memcpy(dst + *len, esc, n);
        *len += n;
    }
    return true;
}

static void write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return; /* nowhere left to report a failing log; drop the line */
        }
        buf += n;
        len -= (size_t)n;
    }
}

void log_msg(enum log_level level, const char *module, const char *fmt, ...)
{
    if ((int)level > atomic_load(&log_level))
        return;
    if (level < LOG_ERROR)
        level = LOG_ERROR;
    if (level > LOG_DEBUG)
        level = LOG_DEBUG;
    int saved_errno = errno; /* callers often log right before reading errno again */

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);

    /* Format the message: on the stack when it fits, else on the heap up to the cap. */
    char small[1024];
    char *msg = small;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        n = 0;
        small[0] = '\0';
    }
    size_t msg_len = (size_t)n;
    bool truncated = false;
    if (msg_len >= sizeof small) {
        size_t want = msg_len < LOG_MAX_MESSAGE ? msg_len : LOG_MAX_MESSAGE;
        char *big = malloc(want + 1);
        if (big != NULL) {
            va_start(ap, fmt);
            vsnprintf(big, want + 1, fmt, ap);
            va_end(ap);
            msg = big;
        } else {
            want = sizeof small - 1;
        }
        truncated = want < msg_len;
        msg_len = want;
    }

    /* Escaping can grow the message fourfold; the prefix needs well under 128 bytes plus the
     * module name. */
    const char *mod = module != NULL && module[0] != '\0' ? module : "-";
    size_t mod_len = strlen(mod);
    size_t cap = 128 + 4 * mod_len + 4 * msg_len + 32;
    char line_small[4096];
    char *line = cap <= sizeof line_small ? line_small : malloc(cap);
    if (line == NULL) {
        /* Out of memory: keep what fits on the stack. */
        line = line_small;
        cap = sizeof line_small;
    }
    size_t len = 0;
    int p = snprintf(line, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000L, level_names[level]);
    if (p > 0)
        len = (size_t)p < cap ? (size_t)p : cap - 1;
    size_t room = cap - 24; /* keeps space for the truncation mark and the newline */
    bool complete = append_escaped(line, room, &len, mod, mod_len);
    if (complete)
        complete = append_escaped(line, room, &len, ": ", 2);
    if (complete)
        complete = append_escaped(line, room, &len, msg, msg_len);
    if (!complete || truncated) {
        static const char mark[] = " [truncated]";
        memcpy(line + len, mark, sizeof mark - 1);
        len += sizeof mark - 1;
    }
    line[len++] = '\n';

    pthread_mutex_lock(&log_lock);
    write_all(log_fd, line, len);
    pthread_mutex_unlock(&log_lock);

    if (line != line_small)
        free(line);
    if (msg != small)
        free(msg);
    errno = saved_errno;
}
