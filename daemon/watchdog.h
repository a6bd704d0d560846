/*
 * watchdog.h: writer health and the systemd watchdog (watchdog.c), on the loop thread.
 *
 * The writer is healthy while it waits on an empty queue, or while its latest heartbeat is
 * recent and its commits have not been failing for longer than the stall limit (failing for
 * lack of room does not count: the writer keeps retrying, and a restart would not help). The watchdog
 * sends WATCHDOG=1 only while it is healthy (and only while the loop thread runs timers), so
 * a stuck writer or loop gets the service restarted by systemd.
 */
#ifndef ATTUNED_WATCHDOG_H
#define ATTUNED_WATCHDOG_H

#include <uv.h>

#include "pipeline.h"

typedef struct watchdog watchdog;

/* Starts pinging every WATCHDOG_USEC / 2 when the service manager asked for a watchdog
 * (sd_watchdog_enabled: WATCHDOG_USEC set and WATCHDOG_PID, when set, equal to our pid);
 * otherwise sets *out to NULL. Returns 0, or -1 when out of memory. */
int watchdog_new(uv_loop_t *loop, pipeline *p, watchdog **out);
/* Stops pinging (shut-down: called before the pipeline is freed). NULL is a no-op. */
void watchdog_stop(watchdog *wd);
/* Frees a stopped watchdog after the loop has run its close callbacks. NULL is a no-op. */
void watchdog_free(watchdog *wd);

/* How long the writer may be busy with one commit attempt, or commits may keep failing,
 * before it counts as stalled: WATCHDOG_USEC / 2 under a watchdog, else 15 seconds. */
uint64_t watchdog_stall_limit_ns(void);
/* Whether the writer is healthy now; when it is not, writes one sentence why. */
bool watchdog_writer_healthy(pipeline *p, char *why, size_t why_len);

#endif
