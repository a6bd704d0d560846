/*
 * server.c: listener, connections, framing, replies, acks and backpressure (loop thread only).
 *
 * Each line a client sends gets the next line number of its connection. A line is "done" when
 * it was answered (error, welcome, pong) or when the commit that stored it returned; the
 * cumulative ack is the highest number below which every line is done. A ring of flags per
 * connection tracks the lines in flight, so completions may arrive in any order.
 *
 * Memory is bounded by configuration: a connection buffers at most one line (max_line_bytes)
 * plus one read; the server admits at most queue_lines lines (and MAX_INFLIGHT_BYTES bytes) into
 * the pipeline; when either bound or a client's unsent output (client_queue_bytes) is reached,
 * reading stops (uv_read_stop) and resumes as commits drain. A closed connection with lines in
 * flight stays allocated until its last completion arrives.
 *
 * Two deadlines per connection: idle_timeout_ms after its last read, and line_timeout_ms after
 * the first byte of a line that has not ended (so that a client dribbling bytes cannot hold a
 * connection and its buffer forever). The line deadline costs nothing per read: the time the
 * incomplete line began is noted when it changes, and a one-shot timer, armed only when none is
 * pending, fires and re-arms itself for whatever line is incomplete by then.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "framer.h"
#include "server.h"

#define READ_CHUNK 65536
#define MAX_INFLIGHT_BYTES (64u << 20)
/* How long a closing connection may take to flush its last replies to a client that does not
 * read them, before it is closed anyway (a stuck client must not hold up SIGTERM). */
#define FINISH_TIMEOUT_MS 5000

typedef struct conn conn;

struct server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    config cfg; /* a copy: reloadable keys change through server_reconfigure */
    pipeline *pipe;
    conn *conns; /* doubly linked, open connections only */
    char read_buf[READ_CHUNK];
    bool read_buf_busy;
    bool draining;
    void (*drained_cb)(server *srv);
    size_t inflight_lines, inflight_bytes;
    bool has_submitted; /* process_lines handed work to the pipeline: it must flush */
    size_t n_subscribers; /* open connections that sent subscribe */
    size_t ring_size; /* per-connection lines in flight */
    server_stats stats;
    histogram ack_latency; /* line read to its completion, when its ack is due */
};

struct conn {
    uv_tcp_t tcp; /* first: handle->data is also set */
    uv_timer_t idle;
    uv_timer_t line_timer; /* line_timeout_ms of the incomplete line */
    server *srv;
    conn *next, *prev;
    framer fr; /* the bytes read and not yet handled as lines */
    uint64_t next_line;
    uint64_t done_through;
    uint64_t acked;
    uint8_t *ring;
    size_t inflight;
    bool authed, acks_none, paused, closing, finishing, eof, subscriber, touched;
    int handles_open;
    /* The incomplete line at the end of what was read: where it starts in the stream (bytes)
     * and when its first byte was read (uv_now, ms). Not tracked while paused, when the wait
     * is the server's. */
    bool has_partial;
    uint64_t partial_off, partial_start_ms;
    /* subscribers */
    char *filter_queue, *filter_agent_id; /* NULL = any */
    size_t alerts_queued;  /* alert lines written but not yet sent */
    uint64_t alerts_dropped; /* dropped since the last overflow notice */
};

typedef struct wreq {
    uv_write_t req;
    conn *c;
    bool is_alert;
    char data[];
} wreq;

static void conn_maybe_free(conn *c);
static void process_lines(conn *c);
static void conn_close(conn *c);

/* ---- output ---------------------------------------------------------------------------- */

static void send_line(conn *c, const char *s, size_t len);

static void on_write(uv_write_t *req, int status)
{
    wreq *w = (wreq *)req;
    conn *c = w->c;
    bool is_alert = w->is_alert;
    free(w);
    (void)status;
    if (is_alert) {
        c->alerts_queued--;
        /* Tell a subscriber that caught up how much it missed. */
        if (c->alerts_dropped && c->alerts_queued <= (size_t)c->srv->cfg.subscriber_queue / 2 &&
            !c->closing) {
            char msg[160];
            snprintf(msg, sizeof msg, "{\"type\":\"error\",\"line\":0,\"code\":\"overloaded\","
                     "\"message\":\"%llu alerts were dropped because this subscriber read too "
                     "slowly\"}", (unsigned long long)c->alerts_dropped);
            c->alerts_dropped = 0;
            send_line(c, msg, strlen(msg));
        }
    }
    /* A client that reads again lets its reading resume. */
    if (c->paused && !c->closing && c->tcp.write_queue_size < (size_t)c->srv->cfg.client_queue_bytes)
        process_lines(c);
}

/* Writes one line. For alerts, *queued tells whether the kernel could not take it at once, so
 * that it now waits in libuv's queue: only those count against a subscriber's bound. */
static bool write_line(conn *c, const char *s, size_t len, bool is_alert, bool *queued)
{
    if (c->closing)
        return false;
    wreq *w = malloc(sizeof *w + len + 1);
    if (!w)
        return false;
    w->c = c;
    w->is_alert = false;
    size_t before = c->tcp.write_queue_size;
    memcpy(w->data, s, len);
    w->data[len] = '\n';
    uv_buf_t b = uv_buf_init(w->data, (unsigned)len + 1);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write)) {
        free(w);
        return false;
    }
    if (is_alert && c->tcp.write_queue_size > before) {
        w->is_alert = true; /* on_write releases its place in the bound */
        *queued = true;
    }
    return true;
}

static void send_line(conn *c, const char *s, size_t len)
{
    write_line(c, s, len, false, NULL);
}

static void send_json(conn *c, json_t *obj)
{
    char *s = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (s) {
        send_line(c, s, strlen(s));
        free(s);
    }
}

static void send_error(conn *c, uint64_t line_no, enum wire_error e, const char *why,
                       const char *id_json)
{
    json_t *o = json_pack("{s:s,s:I,s:s,s:s}", "type", "error", "line", (json_int_t)line_no,
                          "code", wire_error_code(e), "message", why);
    if (!o) /* why is not valid UTF-8: the line still gets its error */
        o = json_pack("{s:s,s:I,s:s,s:s}", "type", "error", "line", (json_int_t)line_no,
                      "code", wire_error_code(e), "message", "the line was rejected");
    if (!o)
        return;
    if (id_json) {
        /* As the client sent it, even when the line was refused for a NUL it holds. */
        json_t *id = json_loads(id_json, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        if (id)
            json_object_set_new(o, "id", id);
    }
    c->srv->stats.lines_rejected[e]++;
    send_json(c, o);
}

/* ---- line accounting ------------------------------------------------------------------- */

static void mark_done(conn *c, uint64_t line_no)
{
    size_t rs = c->srv->ring_size;
    c->ring[line_no % rs] = 1;
    while (c->done_through < c->next_line && c->ring[(c->done_through + 1) % rs]) {
        c->ring[(c->done_through + 1) % rs] = 0;
        c->done_through++;
    }
}

static void send_ack(conn *c)
{
    if (c->acks_none || c->done_through <= c->acked)
        return;
    char s[64];
    int n = snprintf(s, sizeof s, "{\"type\":\"ack\",\"through\":%llu}",
                     (unsigned long long)c->done_through);
    send_line(c, s, (size_t)n);
    c->acked = c->done_through;
}

static bool can_admit(conn *c)
{
    server *srv = c->srv;
    return srv->inflight_lines < (size_t)srv->cfg.queue_lines &&
           srv->inflight_bytes < MAX_INFLIGHT_BYTES &&
           c->next_line - c->done_through < srv->ring_size - 1 &&
           c->tcp.write_queue_size < (size_t)srv->cfg.client_queue_bytes;
}

/* ---- connections ----------------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h)
{
    conn *c = h->data;
    c->handles_open--;
    conn_maybe_free(c);
}

static void conn_maybe_free(conn *c)
{
    if (c->handles_open || c->inflight)
        return;
    framer_fini(&c->fr);
    free(c->ring);
    free(c->filter_queue);
    free(c->filter_agent_id);
    free(c);
}

static void conn_close(conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    server *srv = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    srv->stats.connections_current--;
    if (c->subscriber)
        srv->n_subscribers--;
    uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&c->idle, on_handle_closed);
    uv_close((uv_handle_t *)&c->line_timer, on_handle_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    conn *c = req->data;
    (void)status;
    free(req);
    conn_close(c);
}

static void on_finish_timeout(uv_timer_t *t)
{
    conn *c = t->data;
    log_msg(LOG_DEBUG, "server", "closing a connection whose client did not read its last "
            "replies within %d ms", FINISH_TIMEOUT_MS);
    conn_close(c);
}

/* Closes after what was written has been sent, or after FINISH_TIMEOUT_MS. */
static void conn_finish(conn *c)
{
    if (c->closing || c->finishing)
        return;
    c->finishing = true;
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_timer_stop(&c->line_timer);
    /* The idle timer is not needed any more: it becomes the deadline. */
    uv_timer_start(&c->idle, on_finish_timeout, FINISH_TIMEOUT_MS, 0);
    uv_shutdown_t *req = malloc(sizeof *req);
    if (!req || uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown)) {
        free(req);
        conn_close(c);
        return;
    }
    req->data = c;
}

static bool token_equal(const char *a, const char *b)
{
    /* Constant time in the length of the configured token b. */
    size_t la = strlen(a), lb = strlen(b);
    unsigned char diff = la != lb;
    for (size_t i = 0; i < lb; i++)
        diff |= (unsigned char)(b[i] ^ (la ? a[i % la] : 0));
    return diff == 0;
}

/* read_ns: uv_hrtime() when the line's bytes were read, or reading resumed. */
static void handle_line(conn *c, const char *line, size_t len, uint64_t read_ns)
{
    server *srv = c->srv;
    uint64_t line_no = ++c->next_line;
    srv->stats.lines_received++;
    char why[320];
    char *id_json = NULL;
    message msg;
    enum wire_error e = wire_parse(line, len, &msg, why, sizeof why, &id_json);
    if (e) {
        send_error(c, line_no, e, why, id_json);
        free(id_json);
        mark_done(c, line_no);
        if (!c->authed && srv->cfg.auth_token[0]) {
            send_error(c, line_no, WIRE_UNAUTHORIZED, "the first line must be a hello with the "
                       "server's token", NULL);
            conn_finish(c);
        }
        return;
    }
    if (!c->authed && srv->cfg.auth_token[0] &&
        (msg.type != MSG_HELLO || !msg.token || !token_equal(msg.token, srv->cfg.auth_token))) {
        send_error(c, line_no, WIRE_UNAUTHORIZED,
                   msg.type != MSG_HELLO ? "the first line must be a hello with the server's "
                                           "token"
                                         : "the token is missing or wrong",
                   msg.id);
        message_fini(&msg);
        mark_done(c, line_no);
        conn_finish(c);
        return;
    }
    switch (msg.type) {
    case MSG_HELLO: {
        c->authed = true;
        c->acks_none = msg.acks_none;
        json_t *o = json_pack("{s:s,s:s,s:i}", "type", "welcome", "server", ATTUNED_VERSION,
                              "protocol", ATTUNED_PROTOCOL);
        if (o)
            send_json(c, o);
        message_fini(&msg);
        mark_done(c, line_no);
        srv->stats.lines_accepted++;
        return;
    }
    case MSG_PING:
        send_line(c, "{\"type\":\"pong\"}", 15);
        message_fini(&msg);
        mark_done(c, line_no);
        srv->stats.lines_accepted++;
        return;
    case MSG_SUBSCRIBE:
        if (!c->subscriber)
            srv->n_subscribers++;
        c->subscriber = true;
        free(c->filter_queue);
        free(c->filter_agent_id);
        c->filter_queue = msg.filter_queue;
        c->filter_agent_id = msg.filter_agent_id;
        msg.filter_queue = msg.filter_agent_id = NULL;
        message_fini(&msg);
        mark_done(c, line_no);
        srv->stats.lines_accepted++;
        return;
    default:
        break;
    }
    c->authed = true;
    if (srv->draining) {
        send_error(c, line_no, WIRE_SHUTTING_DOWN, "the server is shutting down; resend this "
                   "line after it restarts", msg.id);
        message_fini(&msg);
        mark_done(c, line_no);
        return;
    }
    work *w = calloc(1, sizeof *w);
    if (!w) {
        send_error(c, line_no, WIRE_INTERNAL, "the server ran out of memory", msg.id);
        message_fini(&msg);
        mark_done(c, line_no);
        return;
    }
    w->conn_id = (uint64_t)(uintptr_t)c;
    w->line_no = line_no;
    w->bytes = len;
    w->read_ns = read_ns;
    w->msg = msg;
    c->inflight++;
    srv->inflight_lines++;
    srv->inflight_bytes += len;
    srv->stats.lines_accepted++;
    pipeline_submit(srv->pipe, w);
    srv->has_submitted = true;
}

static void pause_conn(conn *c)
{
    if (!c->paused) {
        c->paused = true;
        c->srv->stats.backpressure_pauses++;
    }
    /* The incomplete line gets a whole line_timeout_ms again once reading resumes. */
    c->has_partial = false;
    uv_read_stop((uv_stream_t *)&c->tcp);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b);

static void reject_too_long(conn *c, bool is_cut)
{
    server *srv = c->srv;
    uint64_t line_no = ++c->next_line;
    srv->stats.lines_received++;
    char why[128];
    snprintf(why, sizeof why, "the line is longer than max_line_bytes (%zu bytes)%s",
             c->fr.max_line_bytes, is_cut ? "; it was discarded up to its newline" : "");
    send_error(c, line_no, WIRE_LINE_TOO_LONG, why, NULL);
    mark_done(c, line_no);
}

static void on_line_timeout(uv_timer_t *t);

/* Arms the line timer for the incomplete line, unless it is already pending (it re-arms itself
 * when it fires early). */
static void arm_line_timer(conn *c)
{
    int timeout_ms = c->srv->cfg.line_timeout_ms;
    if (timeout_ms <= 0 || !c->has_partial || uv_is_active((uv_handle_t *)&c->line_timer))
        return;
    uint64_t due = c->partial_start_ms + (uint64_t)timeout_ms, now = uv_now(c->srv->loop);
    uv_timer_start(&c->line_timer, on_line_timeout, due > now ? due - now : 0, 0);
}

/* Notes the incomplete line left once every complete line was handled: a line that began
 * since the last look starts its deadline now. */
static void track_partial_line(conn *c)
{
    framer *fr = &c->fr;
    size_t pending = framer_pending(fr);
    if (fr->is_discarding) {
        /* The rest of a line cut for being too long: the same line goes on. */
        if (!c->has_partial) {
            c->has_partial = true;
            c->partial_off = UINT64_MAX;
            c->partial_start_ms = uv_now(c->srv->loop);
        }
    } else if (!pending) {
        c->has_partial = false;
    } else if (!c->has_partial || c->partial_off != fr->n_bytes_in - pending) {
        c->has_partial = true;
        c->partial_off = fr->n_bytes_in - pending;
        c->partial_start_ms = uv_now(c->srv->loop);
    }
    arm_line_timer(c);
}

static void on_line_timeout(uv_timer_t *t)
{
    conn *c = t->data;
    server *srv = c->srv;
    int timeout_ms = srv->cfg.line_timeout_ms;
    if (c->closing || c->finishing || c->eof || c->paused || srv->draining || !c->has_partial ||
        timeout_ms <= 0)
        return;
    if (uv_now(srv->loop) < c->partial_start_ms + (uint64_t)timeout_ms) {
        arm_line_timer(c); /* a later line than the one it was armed for */
        return;
    }
    /* The line gets its number and its error, as one too long in bytes would (the nearest code
     * of PROTOCOL.md); a line already cut for its length has both. Then the connection ends
     * like a half-closed one: the lines before are stored and acknowledged first. */
    uint64_t line_no = c->next_line;
    if (!c->fr.is_discarding) {
        line_no = ++c->next_line;
        srv->stats.lines_received++;
    }
    srv->stats.closed_line_timeout++;
    log_msg(LOG_DEBUG, "server", "closing a connection whose line %llu did not end within "
            "line_timeout_ms (%d ms)", (unsigned long long)line_no, timeout_ms);
    char why[160];
    snprintf(why, sizeof why, "the line did not end within line_timeout_ms (%d ms) of its first "
             "byte; the connection is closed", timeout_ms);
    send_error(c, line_no, WIRE_LINE_TOO_LONG, why, NULL);
    if (!c->fr.is_discarding)
        mark_done(c, line_no);
    c->has_partial = false;
    c->eof = true;
    uv_read_stop((uv_stream_t *)&c->tcp);
    if (!c->inflight)
        conn_finish(c);
}

/* Handles the complete lines buffered in c while the pipeline admits them. */
static void process_lines(conn *c)
{
    server *srv = c->srv;
    c->paused = false;
    /* The lines at hand were all read by now: one clock reading serves them all. */
    uint64_t read_ns = uv_hrtime();
    /* A finishing connection (refused with unauthorized) gets nothing more processed. */
    while (!c->closing && !c->finishing) {
        /* Over-long lines without their newline are answered even when paused: they are
         * dropped at once, which keeps the buffer within its bound. */
        if (framer_has_line(&c->fr) && !can_admit(c)) {
            pause_conn(c);
            break;
        }
        const char *line;
        size_t len;
        enum framer_event ev = framer_next(&c->fr, &line, &len);
        if (ev == FRAMER_NONE)
            break;
        if (ev == FRAMER_LINE)
            handle_line(c, line, len, read_ns);
        else
            reject_too_long(c, ev == FRAMER_TOO_LONG_CUT);
    }
    /* Only when lines were handed over: a write completing after the drain (a client that
     * never reads) comes here too, when the pipeline is gone. */
    if (srv->has_submitted) {
        pipeline_flush(srv->pipe);
        srv->has_submitted = false;
    }
    if (!c->paused && !c->closing && !c->finishing && !c->eof && !srv->draining) {
        track_partial_line(c);
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    }
    if (c->eof && !c->closing && !c->inflight)
        conn_finish(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    conn *c = h->data;
    (void)suggested;
    /* Reads land in one server-wide buffer and are copied into the connection's buffer only as
     * far as lines are incomplete. */
    server *srv = c->srv;
    if (srv->read_buf_busy) {
        *b = uv_buf_init(NULL, 0);
        return;
    }
    srv->read_buf_busy = true;
    *b = uv_buf_init(srv->read_buf, sizeof srv->read_buf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    conn *c = s->data;
    server *srv = c->srv;
    if (b->base == srv->read_buf)
        srv->read_buf_busy = false;
    if (nread == 0)
        return;
    if (nread < 0) {
        uv_read_stop(s);
        if (nread == UV_EOF) {
            /* Half-closed: finish what was sent, ack it, then close. */
            c->eof = true;
            if (!c->inflight)
                conn_finish(c);
        } else {
            conn_close(c);
        }
        return;
    }
    if (srv->cfg.idle_timeout_ms > 0)
        uv_timer_again(&c->idle);
    if (framer_feed(&c->fr, b->base, (size_t)nread)) {
        send_error(c, c->next_line + 1, WIRE_INTERNAL, "the server ran out of memory", NULL);
        conn_finish(c);
        return;
    }
    process_lines(c);
}

static void on_idle(uv_timer_t *t)
{
    conn *c = t->data;
    if (c->inflight || c->paused)
        return; /* waiting for a commit, or for room to take its next line: not idle */
    log_msg(LOG_DEBUG, "server", "closing a connection idle for %d ms",
            c->srv->cfg.idle_timeout_ms);
    c->srv->stats.closed_idle_timeout++;
    conn_finish(c);
}

static void on_connection(uv_stream_t *listener, int status)
{
    server *srv = listener->data;
    if (status < 0) {
        log_msg(LOG_WARN, "server", "accept failed: %s", uv_strerror(status));
        return;
    }
    conn *c = calloc(1, sizeof *c);
    if (!c || !(c->ring = calloc(srv->ring_size, 1))) {
        free(c);
        log_msg(LOG_ERROR, "server", "out of memory accepting a connection");
        return;
    }
    c->srv = srv;
    framer_init(&c->fr, srv->cfg.max_line_bytes);
    uv_tcp_init(srv->loop, &c->tcp);
    uv_timer_init(srv->loop, &c->idle);
    uv_timer_init(srv->loop, &c->line_timer);
    c->tcp.data = c;
    c->idle.data = c;
    c->line_timer.data = c;
    c->handles_open = 3;
    if (uv_accept(listener, (uv_stream_t *)&c->tcp)) {
        c->closing = true;
        uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
        uv_close((uv_handle_t *)&c->idle, on_handle_closed);
        uv_close((uv_handle_t *)&c->line_timer, on_handle_closed);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->stats.connections_current++;
    srv->stats.connections_total++;
    if (srv->stats.connections_current > (uint64_t)srv->cfg.max_connections || srv->draining) {
        srv->stats.connections_refused++;
        char why[128];
        snprintf(why, sizeof why, srv->draining ? "the server is shutting down"
                                                : "the server is at its limit of %d connections",
                 srv->cfg.max_connections);
        send_error(c, 0, srv->draining ? WIRE_SHUTTING_DOWN : WIRE_OVERLOADED, why, NULL);
        conn_finish(c);
        return;
    }
    if (srv->cfg.idle_timeout_ms > 0)
        uv_timer_start(&c->idle, on_idle, (uint64_t)srv->cfg.idle_timeout_ms,
                       (uint64_t)srv->cfg.idle_timeout_ms);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* ---- completions ----------------------------------------------------------------------- */

void server_on_done(void *ud, const completion *done, size_t n_done)
{
    server *srv = ud;
    conn *touched[256];
    size_t n_touched = 0;
    uint64_t now_ns = uv_hrtime();
    for (size_t i = 0; i < n_done; i++) {
        conn *c = (conn *)(uintptr_t)done[i].conn_id;
        srv->inflight_lines--;
        srv->inflight_bytes -= done[i].bytes;
        c->inflight--;
        if (done[i].abandoned)
            srv->stats.lines_abandoned++;
        if (c->closing) {
            conn_maybe_free(c);
            continue;
        }
        /* Given up at shutdown: never marked done, so no ack covers it or any later line of
         * the connection; the client sends them again. */
        if (done[i].abandoned)
            continue;
        if (done[i].reply)
            send_line(c, done[i].reply, strlen(done[i].reply)); /* before the ack covers it */
        if (done[i].failed && !done[i].reply) /* else the reply is the error, with the id */
            send_error(c, done[i].line_no, WIRE_INTERNAL, "the server could not store this "
                       "line; it was not stored (see the server log)", NULL);
        mark_done(c, done[i].line_no);
        if (!c->acks_none)
            histogram_observe_us(&srv->ack_latency, (now_ns - done[i].read_ns) / 1000);
        if (!c->touched) {
            if (n_touched == sizeof touched / sizeof *touched) {
                /* The array is full: ack this one now, and close it if it is done. */
                send_ack(c);
                if (c->eof && !c->inflight)
                    conn_finish(c);
            } else {
                c->touched = true;
                touched[n_touched++] = c;
            }
        }
    }
    for (size_t i = 0; i < n_touched; i++) {
        conn *c = touched[i];
        c->touched = false;
        send_ack(c);
        if (c->eof && !c->inflight)
            conn_finish(c);
    }
    if (srv->draining) {
        if (!srv->inflight_lines && srv->drained_cb) {
            void (*cb)(server *) = srv->drained_cb;
            srv->drained_cb = NULL;
            cb(srv);
        }
        return;
    }
    /* Resume paused connections while there is room. */
    for (conn *c = srv->conns; c; c = c->next) {
        if (!c->paused)
            continue;
        if (srv->inflight_lines >= (size_t)srv->cfg.queue_lines ||
            srv->inflight_bytes >= MAX_INFLIGHT_BYTES)
            break;
        process_lines(c);
    }
}

/* ---- alerts ---------------------------------------------------------------------------- */

static bool filter_matches(const char *want, const char *have)
{
    return !want || (have && strcmp(want, have) == 0);
}

void server_on_alerts(void *ud, const alert *alerts, size_t n_alerts)
{
    server *srv = ud;
    /* Without a subscriber nobody would read the line: building it was a thirtieth of this
     * thread's work per utterance. */
    if (!srv->n_subscribers)
        return;
    for (size_t i = 0; i < n_alerts; i++) {
        const alert *a = &alerts[i];
        json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:I}", "type", "alert", "conversation_id",
                              a->conversation_id, "kind", a->kind, "detail", a->detail, "ts",
                              (json_int_t)a->ts);
        if (!o)
            continue;
        json_object_set_new(o, "seq", a->seq == WIRE_ABSENT ? json_null()
                                                            : json_integer((json_int_t)a->seq));
        char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(o);
        if (!line)
            continue;
        for (conn *c = srv->conns; c; c = c->next) {
            if (!c->subscriber || !filter_matches(c->filter_queue, a->queue) ||
                !filter_matches(c->filter_agent_id, a->agent_id))
                continue;
            /* A slow subscriber never slows ingestion: past its bound, alerts are dropped and
             * counted, and it is told once it catches up. */
            if (c->alerts_queued >= (size_t)srv->cfg.subscriber_queue) {
                c->alerts_dropped++;
                srv->stats.alerts_dropped++;
                continue;
            }
            bool queued = false;
            if (write_line(c, line, strlen(line), true, &queued)) {
                c->alerts_queued += queued;
                srv->stats.alerts_sent++;
            }
        }
        free(line);
    }
}

/* ---- lifecycle ------------------------------------------------------------------------- */

static int parse_listen(const char *s, struct sockaddr_storage *out)
{
    char host[256];
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || (size_t)(colon - s) >= sizeof host)
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535)
        return -1;
    if (host[0] == '[') {
        size_t n = strlen(host);
        if (host[n - 1] != ']')
            return -1;
        host[n - 1] = '\0';
        return uv_ip6_addr(host + 1, (int)port, (struct sockaddr_in6 *)out) ? -1 : 0;
    }
    return uv_ip4_addr(host, (int)port, (struct sockaddr_in *)out) ? -1 : 0;
}

int server_new(uv_loop_t *loop, const config *cfg, server **out, char *err, size_t err_len)
{
    server *srv = calloc(1, sizeof *srv);
    if (!srv) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    srv->loop = loop;
    srv->cfg = *cfg;
    /* Enough slots for every line a connection may have in flight, plus answered ones. */
    srv->ring_size = (size_t)cfg->queue_lines + 1024;
    struct sockaddr_storage addr;
    if (parse_listen(cfg->listen, &addr)) {
        snprintf(err, err_len, "listen address \"%s\" is not HOST:PORT", cfg->listen);
        free(srv);
        return -1;
    }
    uv_tcp_init(loop, &srv->listener);
    srv->listener.data = srv;
    int rc = uv_tcp_bind(&srv->listener, (struct sockaddr *)&addr, 0);
    if (!rc)
        rc = uv_listen((uv_stream_t *)&srv->listener, 1024, on_connection);
    if (rc) {
        snprintf(err, err_len, "cannot listen on %s: %s", cfg->listen, uv_strerror(rc));
        uv_close((uv_handle_t *)&srv->listener, NULL);
        uv_run(loop, UV_RUN_NOWAIT);
        free(srv);
        return -1;
    }
    *out = srv;
    return 0;
}

int server_start(server *srv, pipeline *p)
{
    srv->pipe = p;
    return 0;
}

int server_parse_address(const char *s, struct sockaddr_storage *out)
{
    return parse_listen(s, out);
}

int server_port(const server *srv)
{
    struct sockaddr_storage addr;
    int len = sizeof addr;
    if (uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&addr, &len))
        return -1;
    if (addr.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&addr)->sin6_port);
    return ntohs(((struct sockaddr_in *)&addr)->sin_port);
}

void server_reconfigure(server *srv, const config *cfg)
{
    config_apply_reloadable(&srv->cfg, cfg);
}

void server_drain(server *srv, void (*cb)(server *srv))
{
    srv->draining = true;
    if (!uv_is_closing((uv_handle_t *)&srv->listener))
        uv_close((uv_handle_t *)&srv->listener, NULL);
    for (conn *c = srv->conns; c; c = c->next)
        uv_read_stop((uv_stream_t *)&c->tcp);
    if (!srv->inflight_lines) {
        cb(srv);
        return;
    }
    srv->drained_cb = cb;
}

void server_close(server *srv)
{
    if (!uv_is_closing((uv_handle_t *)&srv->listener))
        uv_close((uv_handle_t *)&srv->listener, NULL);
    /* Shut down rather than close, so that the last acks are flushed first. */
    for (conn *c = srv->conns, *next; c; c = next) {
        next = c->next;
        conn_finish(c);
    }
}

void server_free(server *srv)
{
    free(srv);
}

void server_get_stats(const server *srv, server_stats *out)
{
    *out = srv->stats;
    out->inflight_lines = srv->inflight_lines;
    out->inflight_bytes = srv->inflight_bytes;
}

const histogram *server_ack_latency(const server *srv)
{
    return &srv->ack_latency;
}
