/*
 * server.h: the TCP side of attuned (server.c): listener, connections, line framing, protocol
 * replies, cumulative acks and backpressure. Everything here runs on the loop thread.
 */
#ifndef ATTUNED_SERVER_H
#define ATTUNED_SERVER_H

#include <uv.h>

#include "attuned.h"
#include "pipeline.h"

typedef struct server server;

typedef struct server_stats {
    uint64_t connections_current, connections_total, connections_refused;
    uint64_t lines_received, lines_accepted;
    uint64_t lines_rejected[WIRE_INTERNAL + 1]; /* by error code */
    uint64_t backpressure_pauses;
    uint64_t inflight_lines, inflight_bytes;
    uint64_t alerts_sent, alerts_dropped;
    /* connections the server closed for a deadline (idle_timeout_ms, line_timeout_ms) */
    uint64_t closed_idle_timeout, closed_line_timeout;
    /* lines given up unstored and unacknowledged when the drain deadline passed */
    uint64_t lines_abandoned;
} server_stats;

/* Creates the server and binds cfg->listen. Returns 0 or -1 with a reason in err. */
int server_new(uv_loop_t *loop, const config *cfg, server **out, char *err, size_t err_len);
/* Starts accepting; lines go to p. */
int server_start(server *srv, pipeline *p);
/* The completion callback to give pipeline_new (ud = the server). */
void server_on_done(void *ud, const completion *done, size_t n_done);
/* The alert callback to give pipeline_set_alert_cb (ud = the server): sends each alert to the
 * subscribers whose filter matches, dropping (and counting) what a slow subscriber cannot take. */
void server_on_alerts(void *ud, const alert *alerts, size_t n_alerts);
/* Applies the reloadable settings of cfg. */
void server_reconfigure(server *srv, const config *cfg);
/* Stops accepting and reading; calls cb once nothing is in flight (every line read is stored
 * and acknowledged, or answered). */
void server_drain(server *srv, void (*cb)(server *srv));
/* Closes every connection and the listener; the loop then runs to completion. */
void server_close(server *srv);
void server_free(server *srv);
void server_get_stats(const server *srv, server_stats *out);
/* Time from reading a line to its completion (the commit that stored it has returned and its
 * ack is sent, unless an earlier line of its connection is still in flight), for lines that go
 * through the pipeline on connections that want acks. Borrowed. */
const histogram *server_ack_latency(const server *srv);
/* Parses a HOST:PORT as [server] listen takes it (numeric IPv4, or bracketed IPv6) into out.
 * Returns 0 or -1. */
int server_parse_address(const char *s, struct sockaddr_storage *out);
/* The bound address (useful with port 0). */
int server_port(const server *srv);

#endif
