/*
 * metrics.h: the metrics endpoint of attuned (metrics.c), an HTTP listener on its own address
 * ([metrics] listen) serving GET /metrics (Prometheus text format 0.0.4) and GET /healthz.
 * Everything here runs on the loop thread.
 */
#ifndef ATTUNED_METRICS_H
#define ATTUNED_METRICS_H

#include <uv.h>

#include "attuned.h"
#include "pipeline.h"
#include "server.h"

typedef struct metrics metrics;

/* Binds and listens on cfg->metrics_listen. An empty address turns the endpoint off: *out is
 * set to NULL and 0 returned. Otherwise returns 0, or -1 with a reason in err. Requests are
 * answered once metrics_start has been called. */
int metrics_new(uv_loop_t *loop, const config *cfg, metrics **out, char *err, size_t err_len);
/* Starts answering with the counters of srv and p (both borrowed until metrics_close). NULL m
 * is a no-op. */
void metrics_start(metrics *m, server *srv, pipeline *p);
/* The bound port (useful with port 0), or -1. */
int metrics_port(const metrics *m);
/* Closes the listener and every connection; srv and p are no longer used. NULL is a no-op. */
void metrics_close(metrics *m);
/* Frees a closed endpoint after the loop has run its close callbacks. NULL is a no-op. */
void metrics_free(metrics *m);

#endif
