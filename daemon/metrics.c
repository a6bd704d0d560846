/*
 * metrics.c: the metrics endpoint (loop thread only).
 *
 * An HTTP/1.x listener on [metrics] listen, separate from the protocol port, that answers
 * GET (or HEAD) /metrics with the Prometheus text exposition format 0.0.4 and /healthz with
 * "ok" or 503 and the reason the writer is unhealthy. Requests are parsed by http_parser
 * (keep-alive and pipelined requests included; bodies are read and discarded), never by hand.
 *
 * Everything is read when a scrape arrives: counters from server_get_stats() and
 * pipeline_get_stats(), the lock-free latency histograms, the WAL size (stat of DB-wal) and
 * the resident memory (VmRSS of /proc/self/status).
 *
 * Bounds: at most MAX_CONNS connections (more are closed at once), headers of at most
 * MAX_HEADER_BYTES, URLs of at most MAX_URL_LEN bytes, a connection silent for IDLE_MS is
 * closed, and one that lets more than MAX_UNSENT_BYTES of responses pile up unread is closed.
 */
#include <http_parser.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "metrics.h"
#include "watchdog.h"

#define MAX_CONNS 64
#define MAX_HEADER_BYTES (16u << 10)
#define MAX_URL_LEN 1024
#define IDLE_MS 30000
#define MAX_UNSENT_BYTES (4u << 20)

typedef struct mconn mconn;

struct metrics {
    uv_loop_t *loop;
    uv_tcp_t listener;
    server *srv;   /* borrowed between metrics_start and metrics_close */
    pipeline *pipe;
    mconn *conns;  /* doubly linked, open connections only */
    size_t n_conns;
    char wal_path[4200];
    double start_time_s; /* Unix time of the start */
    http_parser_settings settings;
    char read_buf[8192];
    bool is_read_buf_busy;
    bool is_closed;
};

struct mconn {
    uv_tcp_t tcp; /* first: handle->data is also set */
    uv_timer_t idle;
    metrics *m;
    mconn *next, *prev;
    http_parser parser;
    char url[MAX_URL_LEN];
    size_t url_len;
    bool is_url_too_long;
    bool is_closing, is_finishing;
    int n_handles_open;
};

typedef struct mreq {
    uv_write_t req;
    char data[];
} mreq;

/* ---- text buffer ----------------------------------------------------------------------- */

typedef struct textbuf {
    char *data;
    size_t len, cap;
    bool has_failed; /* out of memory: the text is incomplete */
} textbuf;

static void put(textbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(textbuf *b, const char *fmt, ...)
{
    for (int attempt = 0; attempt < 2 && !b->has_failed; attempt++) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->data ? b->data + b->len : NULL, b->data ? b->cap - b->len : 0, fmt,
                          ap);
        va_end(ap);
        if (n < 0) {
            b->has_failed = true;
            return;
        }
        if (b->data && (size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap : 16384;
        while (cap < b->len + (size_t)n + 1)
            cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d) {
            b->has_failed = true;
            return;
        }
        b->data = d;
        b->cap = cap;
    }
}

/* A label value with \, " and newline escaped as the exposition format requires. */
static void put_label_value(textbuf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            put(b, "\\%c", *s);
        else if (*s == '\n')
            put(b, "\\n");
        else
            put(b, "%c", *s);
    }
}

static void put_head(textbuf *b, const char *name, const char *type, const char *help)
{
    put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void put_counter(textbuf *b, const char *name, const char *help, uint64_t v)
{
    put_head(b, name, "counter", help);
    put(b, "%s %llu\n", name, (unsigned long long)v);
}

static void put_gauge(textbuf *b, const char *name, const char *help, double v)
{
    put_head(b, name, "gauge", help);
    put(b, "%s %.17g\n", name, v);
}

static void put_histogram(textbuf *b, const char *name, const char *help, const histogram *h)
{
    put_head(b, name, "histogram", help);
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= HISTOGRAM_N_BOUNDS; i++) {
        cumulative += atomic_load_explicit(&h->counts[i], memory_order_relaxed);
        if (i < HISTOGRAM_N_BOUNDS)
            put(b, "%s_bucket{le=\"%g\"} %llu\n", name, (double)histogram_bound_us(i) / 1e6,
                (unsigned long long)cumulative);
        else
            put(b, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cumulative);
    }
    uint64_t sum_us = atomic_load_explicit(&h->sum_us, memory_order_relaxed);
    put(b, "%s_sum %.6f\n%s_count %llu\n", name, (double)sum_us / 1e6, name,
        (unsigned long long)cumulative);
}

/* ---- what is measured ------------------------------------------------------------------ */

/* Resident set size from /proc/self/status, bytes; 0 when unknown. */
static uint64_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return 0;
    char line[256];
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "VmRSS: %llu kB", &kb) == 1)
            break;
    }
    fclose(f);
    return (uint64_t)kb * 1024;
}

static uint64_t file_bytes(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* __DATE__ ("Nov 25 2026") and __TIME__ as 2026-11-25T22:40:00 (the build machine's time). */
static void build_time(char *out, size_t len)
{
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    const char *date = __DATE__;
    char mon[4] = {date[0], date[1], date[2], '\0'};
    const char *at = strstr(months, mon);
    int month = at ? (int)(at - months) / 3 + 1 : 0;
    int day = atoi(date + 4);
    snprintf(out, len, "%s-%02d-%02dT%s", date + 7, month, day, __TIME__);
}

static void format_metrics(metrics *m, textbuf *b)
{
    server_stats ss;
    pipeline_stats ps;
    server_get_stats(m->srv, &ss);
    pipeline_get_stats(m->pipe, &ps);

    char built[32];
    build_time(built, sizeof built);
    put_head(b, "attuned_build_info", "gauge", "Version and build time of the running attuned.");
    put(b, "attuned_build_info{version=\"%s\",build_time=\"%s\"} 1\n", AT_VERSION, built);
    put_head(b, "attuned_model_info", "gauge",
             "The scoring model in use (its id is stored with every utterance).");
    put(b, "attuned_model_info{model_id=\"");
    put_label_value(b, at_model_id(pipeline_model(m->pipe)));
    put(b, "\"} 1\n");
    put_gauge(b, "process_start_time_seconds", "Start time of the process, Unix seconds.",
              m->start_time_s);
    put_gauge(b, "process_resident_memory_bytes", "Resident memory (VmRSS).",
              (double)rss_bytes());

    put_gauge(b, "attuned_connections", "Open protocol connections.",
              (double)ss.connections_current);
    put_counter(b, "attuned_connections_total", "Protocol connections accepted.",
                ss.connections_total);
    put_counter(b, "attuned_connections_refused_total",
                "Protocol connections refused (max_connections, or shutting down).",
                ss.connections_refused);
    put_head(b, "attuned_connections_closed_total", "counter",
             "Protocol connections the server closed, by reason: idle_timeout_ms passed "
             "without a byte, or line_timeout_ms without a line's end.");
    put(b, "attuned_connections_closed_total{reason=\"idle_timeout\"} %llu\n",
        (unsigned long long)ss.closed_idle_timeout);
    put(b, "attuned_connections_closed_total{reason=\"line_timeout\"} %llu\n",
        (unsigned long long)ss.closed_line_timeout);
    put_counter(b, "attuned_lines_received_total", "Protocol lines received.",
                ss.lines_received);
    put_counter(b, "attuned_lines_accepted_total", "Protocol lines that passed validation.",
                ss.lines_accepted);
    put_head(b, "attuned_lines_rejected_total", "counter",
             "Error replies sent, by error code (the line was not stored).");
    for (int e = WIRE_OK + 1; e <= WIRE_INTERNAL; e++)
        put(b, "attuned_lines_rejected_total{code=\"%s\"} %llu\n",
            wire_error_code((enum wire_error)e), (unsigned long long)ss.lines_rejected[e]);
    put_counter(b, "attuned_backpressure_pauses_total",
                "Times reading from a connection paused because the pipeline or the client's "
                "output was full.",
                ss.backpressure_pauses);
    put_gauge(b, "attuned_inflight_lines", "Lines read and not yet stored and acknowledged.",
              (double)ss.inflight_lines);
    put_gauge(b, "attuned_inflight_bytes", "Bytes of the lines in flight.",
              (double)ss.inflight_bytes);

    put_counter(b, "attuned_utterances_scored_total", "Utterances scored by the workers.",
                ps.utterances_scored);
    put_counter(b, "attuned_pattern_limit_hits_total", "Marker patterns skipped for an "
                "utterance because they hit the PCRE2 match or depth limit.",
                ps.pattern_limit_hits);
    put_counter(b, "attuned_rows_committed_total", "Rows (utterances and conversation "
                "updates) committed to SQLite.", ps.rows_committed);
    put_counter(b, "attuned_batches_committed_total", "Transactions committed.",
                ps.batches_committed);
    put_counter(b, "attuned_commit_failures_total", "Commit attempts that failed and were "
                "retried.", ps.commit_failures);
    put_counter(b, "attuned_duplicate_utterances_total",
                "Utterances received again and stored once.", ps.duplicates);
    put_histogram(b, "attuned_commit_duration_seconds",
                  "Writer time of each successful batch transaction, BEGIN to COMMIT, "
                  "not counting its waits for the batch's lines.",
                  pipeline_commit_latency(m->pipe));
    put_histogram(b, "attuned_ack_latency_seconds",
                  "Time from reading a line to the commit that stored it reaching the loop "
                  "thread, when its ack is sent.",
                  server_ack_latency(m->srv));
    char why[128];
    put_gauge(b, "attuned_writer_healthy",
              "1 while the writer thread is waiting for work or committing in time.",
              watchdog_writer_healthy(m->pipe, why, sizeof why) ? 1 : 0);
    put_gauge(b, "attuned_wal_bytes", "Size of the SQLite write-ahead log file.",
              (double)file_bytes(m->wal_path));
    put_gauge(b, "attuned_db_bytes", "Size of the database (pages in use, those still in the "
              "write-ahead log included), as of the latest commit.", (double)ps.db_bytes);
    put_gauge(b, "attuned_db_max_bytes", "The database size cap in effect ([store] max_db_mb); "
              "0 = none.", (double)ps.db_max_bytes);
    put_gauge(b, "attuned_store_full", "1 while commits fail for lack of room (max_db_mb "
              "reached, or a full disk): nothing is acknowledged meanwhile.", ps.store_full ? 1 : 0);

    put_counter(b, "attuned_alerts_sent_total", "Alerts sent to subscribers.",
                (double)ss.alerts_sent);
    put_counter(b, "attuned_alerts_dropped_total",
                "Alerts dropped because a subscriber's queue was full.",
                (double)ss.alerts_dropped);
}

/* ---- connections ----------------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h)
{
    mconn *c = h->data;
    if (--c->n_handles_open == 0)
        free(c);
}

static void conn_close(mconn *c)
{
    if (c->is_closing)
        return;
    c->is_closing = true;
    metrics *m = c->m;
    if (c->prev)
        c->prev->next = c->next;
    else
        m->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    m->n_conns--;
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&c->idle, on_handle_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    mconn *c = req->data;
    (void)status;
    free(req);
    conn_close(c);
}

/* Closes after the responses written so far have been sent. */
static void conn_finish(mconn *c)
{
    if (c->is_closing || c->is_finishing)
        return;
    c->is_finishing = true;
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_shutdown_t *req = malloc(sizeof *req);
    if (!req || uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown)) {
        free(req);
        conn_close(c);
        return;
    }
    req->data = c;
}

static void on_write(uv_write_t *req, int status)
{
    (void)status;
    free(req);
}

static void respond(mconn *c, int status, const char *reason, const char *content_type,
                    const char *body, size_t body_len, bool is_head, bool is_keep_alive,
                    const char *extra_headers)
{
    if (c->is_closing || c->is_finishing)
        return;
    if (c->tcp.write_queue_size > MAX_UNSENT_BYTES) {
        log_msg(LOG_WARN, "metrics", "closing a client that does not read its responses");
        conn_close(c);
        return;
    }
    char head[512];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\n%s%s\r\n",
                     status, reason, content_type, body_len, extra_headers ? extra_headers : "",
                     is_keep_alive ? "" : "Connection: close\r\n");
    if (n < 0 || (size_t)n >= sizeof head) {
        conn_close(c);
        return;
    }
    size_t len = (size_t)n + (is_head ? 0 : body_len);
    mreq *w = malloc(sizeof *w + len);
    if (!w) {
        conn_close(c);
        return;
    }
    memcpy(w->data, head, (size_t)n);
    if (!is_head && body_len)
        memcpy(w->data + n, body, body_len);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write)) {
        free(w);
        conn_close(c);
        return;
    }
    if (!is_keep_alive)
        conn_finish(c);
}

static void respond_text(mconn *c, int status, const char *reason, const char *text,
                         bool is_head, bool is_keep_alive, const char *extra_headers)
{
    respond(c, status, reason, "text/plain; charset=utf-8", text, strlen(text), is_head,
            is_keep_alive, extra_headers);
}

static bool path_is(const char *path, size_t len, const char *want)
{
    return len == strlen(want) && memcmp(path, want, len) == 0;
}

static void handle_request(mconn *c)
{
    metrics *m = c->m;
    http_parser *hp = &c->parser;
    bool is_keep_alive = http_should_keep_alive(hp) != 0;
    bool is_head = hp->method == HTTP_HEAD;
    if (c->is_url_too_long) {
        respond_text(c, 414, "URI Too Long", "the URL is too long\n", is_head, false, NULL);
        return;
    }
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (http_parser_parse_url(c->url, c->url_len, hp->method == HTTP_CONNECT, &u) ||
        !(u.field_set & (1u << UF_PATH))) {
        respond_text(c, 400, "Bad Request", "the request target is not a path\n", is_head,
                     false, NULL);
        return;
    }
    const char *path = c->url + u.field_data[UF_PATH].off;
    size_t path_len = u.field_data[UF_PATH].len;
    bool is_metrics = path_is(path, path_len, "/metrics");
    bool is_healthz = path_is(path, path_len, "/healthz");
    if (!is_metrics && !is_healthz) {
        respond_text(c, 404, "Not Found", "not found: try /metrics or /healthz\n", is_head,
                     is_keep_alive, NULL);
        return;
    }
    if (hp->method != HTTP_GET && hp->method != HTTP_HEAD) {
        respond_text(c, 405, "Method Not Allowed", "only GET and HEAD are allowed\n", is_head,
                     is_keep_alive, "Allow: GET, HEAD\r\n");
        return;
    }
    if (!m->srv || !m->pipe) {
        respond_text(c, 503, "Service Unavailable", "starting or stopping\n", is_head, false,
                     NULL);
        return;
    }
    if (is_healthz) {
        char why[160];
        char body[200];
        pipeline_stats ps;
        pipeline_get_stats(m->pipe, &ps);
        if (ps.store_full)
            snprintf(why, sizeof why, "the store is full (max_db_mb reached, or the disk): "
                     "nothing is acknowledged");
        if (!ps.store_full && watchdog_writer_healthy(m->pipe, why, sizeof why)) {
            respond_text(c, 200, "OK", "ok\n", is_head, is_keep_alive, NULL);
        } else {
            snprintf(body, sizeof body, "unhealthy: %s\n", why);
            respond_text(c, 503, "Service Unavailable", body, is_head, is_keep_alive, NULL);
        }
        return;
    }
    textbuf b = {0};
    format_metrics(m, &b);
    if (b.has_failed) {
        respond_text(c, 500, "Internal Server Error", "out of memory\n", is_head, false, NULL);
    } else {
        respond(c, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", b.data, b.len,
                is_head, is_keep_alive, NULL);
    }
    free(b.data);
}

/* ---- http_parser callbacks ------------------------------------------------------------- */

static int on_message_begin(http_parser *hp)
{
    mconn *c = hp->data;
    c->url_len = 0;
    c->is_url_too_long = false;
    return 0;
}

static int on_url(http_parser *hp, const char *at, size_t len)
{
    mconn *c = hp->data;
    if (len > sizeof c->url - c->url_len) {
        c->is_url_too_long = true;
        return 0;
    }
    memcpy(c->url + c->url_len, at, len);
    c->url_len += len;
    return 0;
}

static int on_message_complete(http_parser *hp)
{
    mconn *c = hp->data;
    handle_request(c);
    /* A non-zero return stops the parser: nothing more is read from a closing connection. */
    return c->is_finishing || c->is_closing;
}

/* ---- reading --------------------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    mconn *c = h->data;
    metrics *m = c->m;
    (void)suggested;
    if (m->is_read_buf_busy) {
        *b = uv_buf_init(NULL, 0);
        return;
    }
    m->is_read_buf_busy = true;
    *b = uv_buf_init(m->read_buf, sizeof m->read_buf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    mconn *c = s->data;
    metrics *m = c->m;
    if (b->base == m->read_buf)
        m->is_read_buf_busy = false;
    if (nread == 0)
        return;
    if (nread < 0) {
        if (nread == UV_EOF)
            conn_finish(c); /* send what is still queued, then close */
        else
            conn_close(c);
        return;
    }
    uv_timer_again(&c->idle);
    http_parser_execute(&c->parser, &m->settings, b->base, (size_t)nread);
    if (c->is_closing || c->is_finishing)
        return;
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (e != HPE_OK) {
        char body[160];
        snprintf(body, sizeof body, "bad request: %s\n", http_errno_description(e));
        respond_text(c, e == HPE_HEADER_OVERFLOW ? 431 : 400,
                     e == HPE_HEADER_OVERFLOW ? "Request Header Fields Too Large"
                                              : "Bad Request",
                     body, false, false, NULL);
    } else if (c->parser.upgrade) {
        respond_text(c, 400, "Bad Request", "protocol upgrades are not supported\n", false,
                     false, NULL);
    }
}

static void on_idle(uv_timer_t *t)
{
    conn_close(t->data);
}

static void on_connection(uv_stream_t *listener, int status)
{
    metrics *m = listener->data;
    if (status < 0) {
        log_msg(LOG_WARN, "metrics", "accept failed: %s", uv_strerror(status));
        return;
    }
    mconn *c = calloc(1, sizeof *c);
    if (!c) {
        log_msg(LOG_ERROR, "metrics", "out of memory accepting a connection");
        return;
    }
    c->m = m;
    uv_tcp_init(m->loop, &c->tcp);
    uv_timer_init(m->loop, &c->idle);
    c->tcp.data = c;
    c->idle.data = c;
    c->n_handles_open = 2;
    c->next = m->conns;
    if (m->conns)
        m->conns->prev = c;
    m->conns = c;
    m->n_conns++;
    if (uv_accept(listener, (uv_stream_t *)&c->tcp)) {
        conn_close(c);
        return;
    }
    if (m->n_conns > MAX_CONNS) {
        log_msg(LOG_WARN, "metrics", "more than %d metrics connections: closing the newest",
                MAX_CONNS);
        conn_close(c);
        return;
    }
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    uv_timer_start(&c->idle, on_idle, IDLE_MS, IDLE_MS);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* ---- lifecycle ------------------------------------------------------------------------- */

int metrics_new(uv_loop_t *loop, const config *cfg, metrics **out, char *err, size_t err_len)
{
    *out = NULL;
    if (!cfg->metrics_listen[0])
        return 0;
    struct sockaddr_storage addr;
    if (server_parse_address(cfg->metrics_listen, &addr)) {
        snprintf(err, err_len, "metrics listen address \"%s\" is not HOST:PORT",
                 cfg->metrics_listen);
        return -1;
    }
    metrics *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    m->loop = loop;
    snprintf(m->wal_path, sizeof m->wal_path, "%s-wal", cfg->db_path);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    m->start_time_s = (double)now.tv_sec + (double)now.tv_nsec / 1e9;
    m->settings.on_message_begin = on_message_begin;
    m->settings.on_url = on_url;
    m->settings.on_message_complete = on_message_complete;
    /* Only this module parses HTTP, so the library-wide limit is ours to set. */
    http_parser_set_max_header_size(MAX_HEADER_BYTES);
    uv_tcp_init(loop, &m->listener);
    m->listener.data = m;
    int rc = uv_tcp_bind(&m->listener, (struct sockaddr *)&addr, 0);
    if (!rc)
        rc = uv_listen((uv_stream_t *)&m->listener, 64, on_connection);
    if (rc) {
        snprintf(err, err_len, "cannot listen for metrics on %s: %s", cfg->metrics_listen,
                 uv_strerror(rc));
        uv_close((uv_handle_t *)&m->listener, NULL);
        uv_run(loop, UV_RUN_NOWAIT);
        free(m);
        return -1;
    }
    *out = m;
    return 0;
}

void metrics_start(metrics *m, server *srv, pipeline *p)
{
    if (!m)
        return;
    m->srv = srv;
    m->pipe = p;
}

int metrics_port(const metrics *m)
{
    struct sockaddr_storage addr;
    int len = sizeof addr;
    if (!m || uv_tcp_getsockname(&m->listener, (struct sockaddr *)&addr, &len))
        return -1;
    if (addr.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&addr)->sin6_port);
    return ntohs(((struct sockaddr_in *)&addr)->sin_port);
}

void metrics_close(metrics *m)
{
    if (!m || m->is_closed)
        return;
    m->is_closed = true;
    m->srv = NULL;
    m->pipe = NULL;
    uv_close((uv_handle_t *)&m->listener, NULL);
    while (m->conns)
        conn_close(m->conns);
}

void metrics_free(metrics *m)
{
    free(m);
}
