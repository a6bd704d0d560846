/*
 * watchdog.c: writer health and the systemd watchdog.
 *
 * A uv_timer on the loop thread fires every WATCHDOG_USEC / 2 and sends WATCHDOG=1 when the
 * writer is healthy (see watchdog.h); a blocked loop thread sends nothing either. The first
 * ping goes out at once. Transitions between healthy and stalled are logged once each.
 */
#include <stdio.h>
#include <stdlib.h>
#include <systemd/sd-daemon.h>

#include "watchdog.h"

#define DEFAULT_STALL_LIMIT_NS (15ull * 1000000000ull)

struct watchdog {
    uv_timer_t timer; /* freed with the watchdog, after its close callback */
    pipeline *p;
    bool is_stalled; /* the latest check found the writer unhealthy */
};

static uint64_t stall_limit_ns;

uint64_t watchdog_stall_limit_ns(void)
{
    return stall_limit_ns ? stall_limit_ns : DEFAULT_STALL_LIMIT_NS;
}

bool watchdog_writer_healthy(pipeline *p, char *why, size_t why_len)
{
    pipeline_stats st;
    pipeline_get_stats(p, &st);
    uint64_t now = uv_hrtime();
    uint64_t limit = watchdog_stall_limit_ns();
    /* Commits failing for lack of room are not a stall: the writer retries on schedule, and a
     * restart would not make room (metrics and /healthz report it). */
    if (st.failing_since_ns && !st.store_full && now - st.failing_since_ns > limit) {
        snprintf(why, why_len, "commits have been failing for %llu ms",
                 (unsigned long long)((now - st.failing_since_ns) / 1000000));
        return false;
    }
    if (!st.writer_idle && now > st.writer_beat_ns && now - st.writer_beat_ns > limit) {
        snprintf(why, why_len, "the writer has been inside one commit attempt for %llu ms",
                 (unsigned long long)((now - st.writer_beat_ns) / 1000000));
        return false;
    }
    return true;
}

static void on_tick(uv_timer_t *t)
{
    watchdog *wd = t->data;
    char why[128];
    if (watchdog_writer_healthy(wd->p, why, sizeof why)) {
        if (wd->is_stalled)
            log_msg(LOG_WARN, "watchdog", "the writer is healthy again; pinging resumes");
        wd->is_stalled = false;
        sd_notify(0, "WATCHDOG=1");
        return;
    }
    if (!wd->is_stalled)
        log_msg(LOG_ERROR, "watchdog", "%s; withholding watchdog pings", why);
    wd->is_stalled = true;
}

int watchdog_new(uv_loop_t *loop, pipeline *p, watchdog **out)
{
    *out = NULL;
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0)
        return 0;
    watchdog *wd = calloc(1, sizeof *wd);
    if (!wd)
        return -1;
    wd->p = p;
    stall_limit_ns = usec * 1000 / 2;
    uint64_t every_ms = usec / 2000 ? usec / 2000 : 1;
    uv_timer_init(loop, &wd->timer);
    wd->timer.data = wd;
    uv_timer_start(&wd->timer, on_tick, 0, every_ms);
    log_msg(LOG_INFO, "watchdog", "pinging every %llu ms while the writer is healthy",
            (unsigned long long)every_ms);
    *out = wd;
    return 0;
}

void watchdog_stop(watchdog *wd)
{
    if (wd && !uv_is_closing((uv_handle_t *)&wd->timer))
        uv_close((uv_handle_t *)&wd->timer, NULL);
}

void watchdog_free(watchdog *wd)
{
    free(wd);
}
