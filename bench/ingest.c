/*
 * ingest.c: end-to-end ingest benchmark client for attuned (bench/ingest.sh runs it).
 *
 * Reads a corpus of protocol lines (bench/gen_corpus.py --format protocol) into memory, deals
 * whole conversations round-robin across N connections (every line of a conversation goes to
 * the same connection, in corpus order), streams them pipelined to the daemon and stops when
 * the last cumulative ack ({"type":"ack","through":K}) of every connection covers its last
 * line. One thread drives all connections through epoll (non-blocking sockets, TCP_NODELAY),
 * so the client takes as little of the machine's CPU as possible.
 *
 * Window: a connection has at most --window lines written but not acked (default 20000); the
 * daemon applies its own backpressure by not reading.
 *
 * Pacing: with RATE > 0 (lines/s over all connections), each connection sends its share of the
 * rate (proportional to its line count, so all finish together) on a 1 ms schedule; with 0 it
 * sends as fast as the window and the socket allow.
 *
 * Latency of a line: the time the ack covering it is read minus the time the write() that
 * completed the line returned. Percentiles are over every line. A line answered with an error
 * is done when its error arrives: the daemon acks only after commits, so an ack may never cover
 * errored lines at the end of a connection.
 *
 * Idle connections: with IDLE > 0 that many extra TCP connections are opened (and held, silent)
 * before the run starts and checked at its end: still open with nothing received is "alive".
 *
 * Output: one JSON object on stdout, a readable line on stderr; error lines received from the
 * daemon are printed to stderr (the first 20) and counted. Exit status 0 when every line was
 * acked and no error was received, 1 when errors were received, 2 on a usage, corpus or
 * connection failure (the daemon closed a connection, or nothing moved for --stall seconds).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define WRITE_MAX (256u << 10) /* bytes per write() call */
#define READ_BUF 65536
#define MAX_PRINTED_ERRORS 20

typedef struct conn {
    int fd;
    int index;
    char *buf;       /* this connection's lines back to back, each ending in '\n' */
    size_t buf_len;
    size_t *ends;    /* ends[i]: offset just past line i's newline */
    uint64_t *sent_ns; /* time the write completing line i returned */
    uint8_t *errored;  /* errored[i]: line i was answered with an error */
    size_t n_lines;
    size_t n_utts;
    size_t off;      /* bytes written */
    size_t sent;     /* lines completely written */
    size_t acked;    /* lines covered by acks */
    double share;    /* n_lines / total lines, for pacing */
    bool blocked;    /* the last write hit EAGAIN: wait for EPOLLOUT */
    char rbuf[READ_BUF];
    size_t rlen;
} conn;

typedef struct run {
    conn *conns;
    int n_conns;
    size_t total_lines, total_utts, total_convs;
    size_t window;
    double rate; /* lines/s, 0 = unpaced */
    uint64_t t0;
    uint64_t *lat; /* ns, one per acked line */
    size_t n_lat;
    size_t done_lines;
    uint64_t acks, errors;
    uint64_t last_progress;
    int conns_done;
} run;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

__attribute__((format(printf, 1, 2), noreturn)) static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ingest: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        die("%s", "out of memory");
    return p;
}

/* ---- corpus ------------------------------------------------------------------------------ */

typedef struct line_ref {
    const char *p;
    size_t len; /* without the newline */
} line_ref;

/* conversation_id -> conversation index, open addressing. */
typedef struct conv_map {
    const char **keys;
    size_t *key_len;
    uint32_t *val;
    size_t cap, n;
} conv_map;

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static void map_grow(conv_map *m);

static uint32_t map_get_or_add(conv_map *m, const char *k, size_t n)
{
    if ((m->n + 1) * 2 > m->cap)
        map_grow(m);
    size_t i = hash_bytes(k, n) & (m->cap - 1);
    while (m->keys[i]) {
        if (m->key_len[i] == n && memcmp(m->keys[i], k, n) == 0)
            return m->val[i];
        i = (i + 1) & (m->cap - 1);
    }
    m->keys[i] = k;
    m->key_len[i] = n;
    m->val[i] = (uint32_t)m->n++;
    return m->val[i];
}

static void map_grow(conv_map *m)
{
    conv_map old = *m;
    m->cap = old.cap ? old.cap * 2 : 1024;
    m->keys = calloc(m->cap, sizeof *m->keys);
    m->key_len = calloc(m->cap, sizeof *m->key_len);
    m->val = calloc(m->cap, sizeof *m->val);
    if (!m->keys || !m->key_len || !m->val)
        die("%s", "out of memory");
    for (size_t i = 0; i < old.cap; i++) {
        if (!old.keys[i])
            continue;
        size_t j = hash_bytes(old.keys[i], old.key_len[i]) & (m->cap - 1);
        while (m->keys[j])
            j = (j + 1) & (m->cap - 1);
        m->keys[j] = old.keys[i];
        m->key_len[j] = old.key_len[i];
        m->val[j] = old.val[i];
    }
    free(old.keys);
    free(old.key_len);
    free(old.val);
}

/* Finds the value of "key":"..." in a line (no escapes in ids). */
static const char *find_str_field(const char *p, size_t len, const char *key, size_t *out_len)
{
    const char *end = p + len;
    size_t kl = strlen(key);
    const char *s = memmem(p, len, key, kl);
    if (!s)
        return NULL;
    s += kl;
    while (s < end && (*s == ' ' || *s == ':'))
        s++;
    if (s >= end || *s != '"')
        return NULL;
    s++;
    const char *q = memchr(s, '"', (size_t)(end - s));
    if (!q)
        return NULL;
    *out_len = (size_t)(q - s);
    return s;
}

static bool is_utterance(const char *p, size_t len)
{
    size_t n;
    const char *t = find_str_field(p, len, "\"type\"", &n);
    return t && n == 9 && memcmp(t, "utterance", 9) == 0;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        die("cannot open corpus %s", path);
    struct stat st;
    if (fstat(fileno(f), &st))
        die("cannot stat %s", path);
    char *buf = xmalloc((size_t)st.st_size + 1);
    size_t n = fread(buf, 1, (size_t)st.st_size, f);
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}

static void load_corpus(run *r, const char *path)
{
    size_t len;
    char *text = read_file(path, &len);
    size_t cap = 1024, n = 0;
    line_ref *lines = xmalloc(cap * sizeof *lines);
    int *owner = NULL;
    conv_map map = {0};
    size_t *count = calloc((size_t)r->n_conns, sizeof *count);
    size_t *bytes = calloc((size_t)r->n_conns, sizeof *bytes);
    size_t *utts = calloc((size_t)r->n_conns, sizeof *utts);
    if (!count || !bytes || !utts)
        die("%s", "out of memory");
    size_t no_conv = 0;
    for (const char *p = text, *end = text + len; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t l = nl ? (size_t)(nl - p) : (size_t)(end - p);
        size_t ll = l;
        if (ll && p[ll - 1] == '\r')
            ll--;
        if (ll) {
            if (n == cap) {
                cap *= 2;
                lines = realloc(lines, cap * sizeof *lines);
                if (!lines)
                    die("%s", "out of memory");
            }
            lines[n++] = (line_ref){p, ll};
        }
        p += l + 1;
    }
    owner = xmalloc(n * sizeof *owner);
    for (size_t i = 0; i < n; i++) {
        size_t idl;
        const char *id = find_str_field(lines[i].p, lines[i].len, "\"conversation_id\"", &idl);
        int c;
        if (id)
            c = (int)(map_get_or_add(&map, id, idl) % (uint32_t)r->n_conns);
        else
            c = (int)(no_conv++ % (size_t)r->n_conns);
        owner[i] = c;
        count[c]++;
        bytes[c] += lines[i].len + 1;
        if (is_utterance(lines[i].p, lines[i].len)) {
            utts[c]++;
            r->total_utts++;
        }
    }
    r->total_lines = n;
    if (!n)
        die("corpus %s has no lines", path);
    for (int c = 0; c < r->n_conns; c++) {
        conn *k = &r->conns[c];
        k->index = c;
        k->buf = xmalloc(bytes[c]);
        k->ends = xmalloc(count[c] * sizeof *k->ends);
        k->sent_ns = xmalloc(count[c] * sizeof *k->sent_ns);
        k->errored = calloc(count[c] ? count[c] : 1, 1);
        if (!k->errored)
            die("%s", "out of memory");
        k->n_utts = utts[c];
        k->share = (double)count[c] / (double)n;
    }
    for (size_t i = 0; i < n; i++) {
        conn *k = &r->conns[owner[i]];
        memcpy(k->buf + k->buf_len, lines[i].p, lines[i].len);
        k->buf_len += lines[i].len;
        k->buf[k->buf_len++] = '\n';
        k->ends[k->n_lines++] = k->buf_len;
    }
    r->total_convs = map.n;
    fprintf(stderr, "ingest: corpus %s: %zu lines, %zu utterances, %zu conversations over %d "
            "connection(s)\n", path, n, r->total_utts, map.n, r->n_conns);
    free(map.keys);
    free(map.key_len);
    free(map.val);
    free(owner);
    free(lines);
    free(count);
    free(bytes);
    free(utts);
    free(text);
}

/* ---- sockets ----------------------------------------------------------------------------- */

static struct addrinfo *resolve(const char *host, const char *port)
{
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, port, &hints, &ai);
    if (rc)
        die("cannot resolve the daemon's address: %s", gai_strerror(rc));
    return ai;
}

static int connect_to(const struct addrinfo *ai)
{
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket: %s", strerror(errno));
    for (int attempt = 0;; attempt++) {
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        if (errno == EINTR)
            continue;
        if ((errno == ECONNREFUSED || errno == EAGAIN) && attempt < 50) {
            usleep(100000);
            close(fd);
            fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (fd < 0)
                die("socket: %s", strerror(errno));
            continue;
        }
        die("cannot connect to the daemon: %s", strerror(errno));
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void set_nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        die("fcntl: %s", strerror(errno));
}

static void raise_fd_limit(size_t need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl))
        return;
    if (rl.rlim_cur >= need + 16)
        return;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > need + 16 ? need + 16 : rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
}

/* ---- the run ----------------------------------------------------------------------------- */

/* Lines up to `through` are done (acked); so is any errored line right after them, since an
 * error answers its line and the daemon acks only after commits. */
static void advance(run *r, conn *c, size_t through, uint64_t now)
{
    size_t before = c->acked;
    for (;;) {
        for (size_t i = c->acked; i < through; i++)
            r->lat[r->n_lat++] = now - c->sent_ns[i];
        if (through > c->acked)
            c->acked = through;
        if (c->acked < c->sent && c->errored[c->acked])
            through = c->acked + 1;
        else
            break;
    }
    if (c->acked > before) {
        r->done_lines += c->acked - before;
        r->last_progress = now;
        if (c->acked == c->n_lines)
            r->conns_done++;
    }
}

static void on_ack(run *r, conn *c, uint64_t through, uint64_t now)
{
    r->acks++;
    if (through > c->sent) {
        fprintf(stderr, "ingest: connection %d: ack through %" PRIu64 " but only %zu lines were "
                "written\n", c->index, through, c->sent);
        exit(2);
    }
    advance(r, c, (size_t)through, now);
}

static void on_error(run *r, conn *c, const char *line, size_t len, uint64_t now)
{
    if (r->errors < MAX_PRINTED_ERRORS)
        fprintf(stderr, "ingest: connection %d: error: %.*s\n", c->index, (int)len, line);
    r->errors++;
    const char *l = memmem(line, len, "\"line\"", 6);
    if (!l)
        return;
    l += 6;
    while (*l == ':' || *l == ' ')
        l++;
    uint64_t n = strtoull(l, NULL, 10);
    if (n >= 1 && n <= c->sent) {
        c->errored[n - 1] = 1;
        advance(r, c, c->acked, now);
    }
}

static void on_reply(run *r, conn *c, const char *line, size_t len, uint64_t now)
{
    size_t tl;
    const char *type = find_str_field(line, len, "\"type\"", &tl);
    if (type && tl == 3 && memcmp(type, "ack", 3) == 0) {
        const char *t = memmem(line, len, "\"through\"", 9);
        if (!t) {
            fprintf(stderr, "ingest: ack without through: %.*s\n", (int)len, line);
            exit(2);
        }
        t += 9;
        while (*t == ':' || *t == ' ')
            t++;
        on_ack(r, c, strtoull(t, NULL, 10), now);
        return;
    }
    if (type && tl == 5 && memcmp(type, "error", 5) == 0) {
        on_error(r, c, line, len, now);
        return;
    }
    /* welcome, pong, alert: not expected without hello/ping/subscribe, and harmless */
}

/* Reads until EAGAIN. Returns false when the daemon closed the connection. */
static bool do_read(run *r, conn *c)
{
    for (;;) {
        ssize_t n = recv(c->fd, c->rbuf + c->rlen, sizeof c->rbuf - c->rlen, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return true;
            fprintf(stderr, "ingest: connection %d: recv: %s\n", c->index, strerror(errno));
            return false;
        }
        if (n == 0)
            return false;
        uint64_t now = now_ns();
        c->rlen += (size_t)n;
        size_t off = 0;
        for (;;) {
            char *nl = memchr(c->rbuf + off, '\n', c->rlen - off);
            if (!nl)
                break;
            size_t len = (size_t)(nl - (c->rbuf + off));
            on_reply(r, c, c->rbuf + off, len, now);
            off += len + 1;
        }
        memmove(c->rbuf, c->rbuf + off, c->rlen - off);
        c->rlen -= off;
        if (c->rlen == sizeof c->rbuf) {
            fprintf(stderr, "ingest: connection %d: reply line longer than %d bytes\n", c->index,
                    READ_BUF);
            return false;
        }
    }
}

/* Writes what the window and the schedule allow, until EAGAIN. */
static void do_send(run *r, conn *c, uint64_t now)
{
    if (c->blocked || c->sent == c->n_lines)
        return;
    size_t limit = c->acked + r->window;
    if (limit > c->n_lines)
        limit = c->n_lines;
    if (r->rate > 0) {
        double due = (double)(now - r->t0) * 1e-9 * r->rate * c->share;
        if (due < (double)limit)
            limit = (size_t)due;
    }
    while (c->sent < limit) {
        size_t want = c->ends[limit - 1] - c->off;
        if (want > WRITE_MAX)
            want = WRITE_MAX;
        ssize_t n = send(c->fd, c->buf + c->off, want, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                c->blocked = true;
                return;
            }
            fprintf(stderr, "ingest: connection %d: send: %s\n", c->index, strerror(errno));
            exit(2);
        }
        uint64_t t = now_ns();
        c->off += (size_t)n;
        while (c->sent < c->n_lines && c->ends[c->sent] <= c->off)
            c->sent_ns[c->sent++] = t;
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_ms(const uint64_t *v, size_t n, double p)
{
    if (!n)
        return 0;
    size_t i = (size_t)(p / 100.0 * (double)n);
    if (i >= n)
        i = n - 1;
    return (double)v[i] / 1e6;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ingest [--window N] [--stall SECONDS] [--label TEXT]\n"
            "              HOST PORT CORPUS CONNECTIONS [RATE [IDLE]]\n"
            "  CORPUS       protocol lines (bench/gen_corpus.py --format protocol)\n"
            "  CONNECTIONS  connections that stream the corpus (whole conversations each)\n"
            "  RATE         lines/s over all connections; 0 (default) = as fast as possible\n"
            "  IDLE         extra silent connections held open during the run (default 0)\n"
            "  --window N   most unacked lines per connection (default 20000)\n"
            "  --stall S    give up when no ack arrives for S seconds (default 60)\n"
            "  --label T    copied into the JSON summary\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"window", required_argument, NULL, 'w'},
        {"stall", required_argument, NULL, 's'},
        {"label", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    run R = {0};
    run *r = &R;
    r->window = 20000;
    double stall_s = 60;
    const char *label = "";
    int o;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case 'w': r->window = (size_t)strtoull(optarg, NULL, 10); break;
        case 's': stall_s = strtod(optarg, NULL); break;
        case 'l': label = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    int nargs = argc - optind;
    if (nargs < 4 || nargs > 6) {
        usage(stderr);
        return 2;
    }
    const char *host = argv[optind], *port = argv[optind + 1], *path = argv[optind + 2];
    r->n_conns = atoi(argv[optind + 3]);
    r->rate = nargs > 4 ? strtod(argv[optind + 4], NULL) : 0;
    int n_idle = nargs > 5 ? atoi(argv[optind + 5]) : 0;
    if (r->n_conns < 1 || r->n_conns > 100000 || n_idle < 0 || r->rate < 0 || r->window < 1) {
        usage(stderr);
        return 2;
    }
    for (const char *q = label; *q; q++)
        if (*q == '"' || *q == '\\' || (unsigned char)*q < 0x20)
            die("%s", "--label must not contain quotes, backslashes or control characters");
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit((size_t)r->n_conns + (size_t)n_idle);

    r->conns = calloc((size_t)r->n_conns, sizeof *r->conns);
    if (!r->conns)
        die("%s", "out of memory");
    load_corpus(r, path);
    r->lat = xmalloc(r->total_lines * sizeof *r->lat);

    struct addrinfo *ai = resolve(host, port);
    int *idle = n_idle ? xmalloc((size_t)n_idle * sizeof *idle) : NULL;
    if (n_idle) {
        uint64_t t = now_ns();
        for (int i = 0; i < n_idle; i++)
            idle[i] = connect_to(ai);
        fprintf(stderr, "ingest: %d idle connections open in %.2f s\n", n_idle,
                (double)(now_ns() - t) / 1e9);
    }

    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1: %s", strerror(errno));
    for (int i = 0; i < r->n_conns; i++) {
        conn *c = &r->conns[i];
        c->fd = connect_to(ai);
        set_nonblocking(c->fd);
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev))
            die("epoll_ctl: %s", strerror(errno));
    }
    freeaddrinfo(ai);

    r->t0 = r->last_progress = now_ns();
    for (int i = 0; i < r->n_conns; i++) {
        if (r->conns[i].n_lines == 0)
            r->conns_done++; /* more connections than conversations */
        do_send(r, &r->conns[i], r->t0);
    }
    struct epoll_event evs[256];
    int status = 0;
    while (r->conns_done < r->n_conns) {
        int timeout = r->rate > 0 ? 1 : 200;
        int n = epoll_wait(ep, evs, 256, timeout);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait: %s", strerror(errno));
        }
        uint64_t now = now_ns();
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                if (!do_read(r, c)) {
                    fprintf(stderr, "ingest: connection %d closed by the daemon after %zu of %zu "
                            "lines acked\n", c->index, c->acked, c->n_lines);
                    status = 2;
                    goto out;
                }
            }
            if (evs[i].events & EPOLLOUT)
                c->blocked = false;
            do_send(r, c, now);
        }
        if (r->rate > 0) {
            for (int i = 0; i < r->n_conns; i++)
                do_send(r, &r->conns[i], now);
        }
        if (now > r->last_progress && (double)(now - r->last_progress) > stall_s * 1e9) {
            fprintf(stderr, "ingest: no ack for %.0f s; %zu of %zu lines acked\n", stall_s,
                    r->done_lines, r->total_lines);
            status = 2;
            goto out;
        }
    }
out:;
    uint64_t t_end = now_ns();
    double secs = (double)(t_end - r->t0) / 1e9;

    int idle_alive = 0;
    for (int i = 0; i < n_idle; i++) {
        char b;
        ssize_t k = recv(idle[i], &b, 1, MSG_DONTWAIT | MSG_PEEK);
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            idle_alive++;
    }
    for (int i = 0; i < r->n_conns; i++)
        close(r->conns[i].fd);
    for (int i = 0; i < n_idle; i++)
        close(idle[i]);

    qsort(r->lat, r->n_lat, sizeof *r->lat, cmp_u64);
    double p50 = pct_ms(r->lat, r->n_lat, 50), p90 = pct_ms(r->lat, r->n_lat, 90),
           p99 = pct_ms(r->lat, r->n_lat, 99), p999 = pct_ms(r->lat, r->n_lat, 99.9),
           mx = r->n_lat ? (double)r->lat[r->n_lat - 1] / 1e6 : 0;
    size_t utts_acked = 0;
    for (int i = 0; i < r->n_conns; i++) {
        /* utterances of fully acked connections; partial ones count as sent only */
        if (r->conns[i].acked == r->conns[i].n_lines)
            utts_acked += r->conns[i].n_utts;
    }
    bool complete = r->done_lines == r->total_lines;
    if (!status && r->errors)
        status = 1;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                   (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    double ups = secs > 0 ? (double)r->total_utts / secs : 0;
    double lps = secs > 0 ? (double)r->done_lines / secs : 0;
    printf("{\"label\":\"%s\",\"connections\":%d,\"idle_connections\":%d,\"idle_alive\":%d,"
           "\"target_rate_lines_per_s\":%.0f,\"window\":%zu,\"conversations\":%zu,\"lines\":%zu,"
           "\"utterances\":%zu,"
           "\"lines_acked\":%zu,\"utterances_acked\":%zu,\"complete\":%s,\"seconds\":%.4f,"
           "\"utterances_per_s\":%.0f,\"lines_per_s\":%.0f,\"acks\":%" PRIu64 ","
           "\"errors\":%" PRIu64 ",\"latency_ms\":{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,"
           "\"p999\":%.3f,\"max\":%.3f},\"client_cpu_s\":%.3f}\n",
           label, r->n_conns, n_idle, idle_alive, r->rate, r->window, r->total_convs, r->total_lines,
           r->total_utts, r->done_lines, utts_acked, complete ? "true" : "false", secs,
           complete ? ups : 0, lps, r->acks, r->errors, p50, p90, p99, p999, mx, cpu_s);
    fflush(stdout);
    fprintf(stderr, "ingest: %s%s%d conn%s%s: %zu utterances (%zu lines) in %.2f s = %.0f "
            "utterances/s, %.0f lines/s; ack latency p50 %.1f ms, p99 %.1f ms, max %.1f ms; "
            "%" PRIu64 " acks, %" PRIu64 " errors%s\n",
            label, *label ? ": " : "", r->n_conns, r->n_conns == 1 ? "" : "s",
            r->rate > 0 ? " (paced)" : "", r->total_utts, r->done_lines, secs, complete ? ups : 0,
            lps, p50, p99, mx, r->acks, r->errors, complete ? "" : " (INCOMPLETE)");
    if (n_idle)
        fprintf(stderr, "ingest: %d of %d idle connections still open and silent\n", idle_alive,
                n_idle);
    return status;
}
