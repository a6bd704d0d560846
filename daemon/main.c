/*
 * main.c: attuned start-up and shut-down order, and nothing else.
 *
 * Start: flags, config file, flags again (flags win), logging, model, the database's writer
 * lock, store, listeners (protocol, metrics), pipeline, signals, watchdog, READY. Stop
 * (SIGTERM/SIGINT): stop accepting and reading, let everything in flight commit and be
 * acknowledged (a running rescore stops after its slice), close connections and the metrics
 * endpoint, stop the watchdog and threads, exit 0. When [server] drain_timeout_ms passes first
 * (commits keep failing: a full store), what is not yet stored is given up unacknowledged
 * (pipeline_abandon) and the stop goes on the same way, to exit 3. A second SIGINT exits at
 * once.
 *
 * Exit codes: 0 clean stop (or --check-config valid), 1 runtime failure (cannot listen, open
 * the store, build the model), 2 bad flags or configuration, 3 stopped with lines given up
 * at the drain deadline.
 */
#include <getopt.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "attuned.h"
#include "metrics.h"
#include "pipeline.h"
#include "server.h"
#include "watchdog.h"

typedef struct daemon_state {
    uv_loop_t *loop;
    config cfg;
    const char *config_path;
    at_model *model; /* until the pipeline takes it */
    uv_work_t rebuild;
    bool rebuilding;
    at_model *rebuilt;
    char rebuild_dir[4096];
    char rebuild_err[1024];
    server *srv;
    pipeline *pipe;
    metrics *metrics; /* NULL when [metrics] listen is empty */
    watchdog *wd;     /* NULL unless systemd asked for a watchdog */
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t drain_timer; /* drain_timeout_ms, from the stop signal; open while draining */
    bool has_drain_timer;
    int n_sigint;
    bool draining, drained;
    int lock_fd; /* the one-writer lock of the database (common/dblock.c), held until exit */
    /* Command-line settings, re-applied over the file on reload (flags always win). */
    const char *flag_keys[8];
    const char *flag_vals[8];
    int n_flags;
} daemon_state;

static daemon_state D;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: attuned [-c FILE] [--listen HOST:PORT] [--db PATH] [--lexicons DIR]\n"
            "               [--log-level error|warn|info|debug] [--metrics-listen HOST:PORT]\n"
            "               [--check-config]\n"
            "\n"
            "  -c, --config FILE   INI configuration (see config.example.ini)\n"
            "  --listen HOST:PORT  address for the transcript protocol (default 127.0.0.1:7420)\n"
            "  --db PATH           SQLite database (default ./attune.db)\n"
            "  --lexicons DIR      lexicon directory (default: in-tree or installed lexicons/)\n"
            "  --log-level LEVEL   error, warn, info (default) or debug\n"
            "  --metrics-listen HOST:PORT\n"
            "                      address of GET /metrics and /healthz (default\n"
            "                      127.0.0.1:9420; \"\" = off)\n"
            "  --check-config      validate the configuration and lexicons, then exit 0 or 2\n"
            "\n"
            "signals: SIGTERM/SIGINT drain and exit 0 (a second SIGINT exits at once),\n"
            "         SIGHUP reloads the reloadable settings, reopens the log file and\n"
            "         rebuilds the lexicons.\n"
            "exit codes: 0 clean stop, 1 runtime failure, 2 bad flags or configuration,\n"
            "            3 stopped with lines not stored ([server] drain_timeout_ms passed).\n");
}

static void on_drained(server *srv)
{
    (void)srv;
    if (D.has_drain_timer)
        uv_close((uv_handle_t *)&D.drain_timer, NULL);
    D.has_drain_timer = false;
    server_stats st;
    server_get_stats(D.srv, &st);
    if (st.lines_abandoned)
        log_msg(LOG_ERROR, "main", "stopping with %llu lines not stored: they could not be "
                "committed within drain_timeout_ms (%d ms) and are not acknowledged, so their "
                "clients must send them again; everything acknowledged is stored",
                (unsigned long long)st.lines_abandoned, D.cfg.drain_timeout_ms);
    else
        log_msg(LOG_INFO, "main", "drained: everything received is stored and acknowledged");
    server_close(D.srv);
    metrics_close(D.metrics);
    watchdog_stop(D.wd);
    pipeline_free(D.pipe);
    D.pipe = NULL;
    /* Unref rather than close: a late signal is still caught (and ignored) instead of killing
     * the process with the default action while the last connections close. */
    D.drained = true;
    uv_unref((uv_handle_t *)&D.sig_term);
    uv_unref((uv_handle_t *)&D.sig_int);
    uv_unref((uv_handle_t *)&D.sig_hup);
}

/* The drain deadline: lines still in flight now are waiting on commits that keep failing. */
static void on_drain_timeout(uv_timer_t *t)
{
    (void)t;
    server_stats st;
    server_get_stats(D.srv, &st);
    pipeline_stats ps;
    pipeline_get_stats(D.pipe, &ps);
    log_msg(LOG_WARN, "main", "drain_timeout_ms (%d ms) passed with %llu lines (%llu bytes) "
            "not yet stored%s: giving up on those that are not stored by now",
            D.cfg.drain_timeout_ms, (unsigned long long)st.inflight_lines,
            (unsigned long long)st.inflight_bytes,
            ps.store_full ? " (the store is full)" : "");
    pipeline_abandon(D.pipe);
}

static void on_stop_signal(uv_signal_t *h, int signum)
{
    (void)h;
    if (signum == SIGINT && ++D.n_sigint > 1) {
        log_msg(LOG_WARN, "main", "second SIGINT: exiting without draining");
        _exit(1);
    }
    if (signum == SIGTERM && D.n_sigint == 0)
        D.n_sigint = 1;
    if (D.draining)
        return; /* already draining or drained */
    D.draining = true;
    log_msg(LOG_INFO, "main", "%s: draining", signum == SIGINT ? "SIGINT" : "SIGTERM");
    sd_notify(0, "STOPPING=1");
    pipeline_stop_rescore(D.pipe); /* a rescore resumes when requested again */
    /* Before server_drain, which calls on_drained at once when nothing is in flight. */
    if (D.cfg.drain_timeout_ms > 0 && uv_timer_init(D.loop, &D.drain_timer) == 0) {
        D.has_drain_timer = true;
        uv_timer_start(&D.drain_timer, on_drain_timeout, (uint64_t)D.cfg.drain_timeout_ms, 0);
    }
    server_drain(D.srv, on_drained);
}

static void lexicon_dir(const config *cfg, char *out, size_t len)
{
    if (cfg->lexicon_dir[0])
        snprintf(out, len, "%s", cfg->lexicon_dir);
    else
        at_lexicon_dir_default(out, len);
}

/* Every connection holds a file descriptor, so the soft limit (often 1024) is raised to the hard
 * one. When even that cannot hold max_connections, accept fails past it and those clients are
 * closed without an answer: say so at start. */
static void raise_fd_limit(int max_connections)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl))
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit want = {rl.rlim_max, rl.rlim_max};
        /* An unlimited hard limit still stops at the kernel's nr_open. */
        if (want.rlim_cur == RLIM_INFINITY)
            want.rlim_cur = 1u << 20;
        while (setrlimit(RLIMIT_NOFILE, &want) && want.rlim_cur / 2 > rl.rlim_cur)
            want.rlim_cur /= 2;
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    /* The database, its journal, the log, listeners, the loop's own descriptors. */
    const rlim_t spare = 64;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)max_connections + spare)
        log_msg(LOG_WARN, "main", "the open file limit (%llu) is too low for max_connections "
                "(%d): raise it (ulimit -n, LimitNOFILE=) to at least %llu", (unsigned long long)
                rl.rlim_cur, max_connections, (unsigned long long)max_connections + spare);
}

/* Threadpool: reading lexicons and compiling patterns stays off the loop thread. */
static void rebuild_work(uv_work_t *req)
{
    (void)req;
    D.rebuilt = NULL;
    D.rebuild_err[0] = '\0';
    int rc = at_model_new(D.rebuild_dir, &D.rebuilt, D.rebuild_err, sizeof D.rebuild_err);
    if (rc && !D.rebuild_err[0])
        snprintf(D.rebuild_err, sizeof D.rebuild_err, "%s", at_strerror(rc));
}

static void rebuild_done(uv_work_t *req, int status)
{
    (void)req;
    D.rebuilding = false;
    if (!D.pipe) {
        at_model_free(D.rebuilt); /* drained meanwhile: nothing to swap into */
    } else if (status || !D.rebuilt) {
        log_msg(LOG_ERROR, "main", "lexicon reload failed, keeping model %s: %s",
                at_model_id(pipeline_model(D.pipe)), D.rebuild_err);
    } else if (strcmp(at_model_id(D.rebuilt), at_model_id(pipeline_model(D.pipe))) == 0) {
        log_msg(LOG_INFO, "main", "lexicons unchanged (model %s)", at_model_id(D.rebuilt));
        at_model_free(D.rebuilt);
    } else {
        char old_id[32];
        snprintf(old_id, sizeof old_id, "%s", at_model_id(pipeline_model(D.pipe)));
        char new_id[32];
        snprintf(new_id, sizeof new_id, "%s", at_model_id(D.rebuilt));
        double ms = at_model_build_ms(D.rebuilt);
        if (pipeline_set_model(D.pipe, D.rebuilt)) {
            log_msg(LOG_ERROR, "main", "lexicon reload deferred: earlier models still in use");
            at_model_free(D.rebuilt);
        } else {
            log_msg(LOG_INFO, "main", "model %s replaces %s (built in %.1f ms)", new_id, old_id,
                    ms);
        }
    }
    D.rebuilt = NULL;
    sd_notify(0, "READY=1");
}

static void on_hup(uv_signal_t *h, int signum)
{
    (void)h;
    (void)signum;
    if (D.draining)
        return; /* no reload while stopping */
    /* systemd 253 and later want the monotonic time with RELOADING=1. */
    sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu", (unsigned long long)(uv_hrtime() / 1000));
    config fresh;
    config_defaults(&fresh);
    char err[1024];
    bool ok = !D.config_path || config_load(&fresh, D.config_path, err, sizeof err) == 0;
    for (int i = 0; ok && i < D.n_flags; i++)
        ok = config_set(&fresh, D.flag_keys[i], D.flag_vals[i], err, sizeof err) == 0;
    if (!ok) {
        log_msg(LOG_ERROR, "main", "reload failed, keeping the running configuration: %s", err);
    } else {
        config_finish(&fresh);
        config_apply_reloadable(&D.cfg, &fresh);
        log_set_level(D.cfg.log_level);
        if (log_open(D.cfg.log_file))
            log_msg(LOG_ERROR, "main", "cannot reopen log file %s", D.cfg.log_file);
        server_reconfigure(D.srv, &D.cfg);
        pipeline_set_batch(D.pipe, D.cfg.batch_rows, D.cfg.batch_ms);
        pipeline_set_max_db_mb(D.pipe, D.cfg.max_db_mb);
        pipeline_set_alert_rules(D.pipe, D.cfg.alert_compound_floor,
                                 D.cfg.alert_consecutive_turns);
        log_msg(LOG_INFO, "main", "configuration reloaded");
    }
    if (D.rebuilding) {
        log_msg(LOG_WARN, "main", "a lexicon reload is already running");
        return;
    }
    lexicon_dir(&D.cfg, D.rebuild_dir, sizeof D.rebuild_dir);
    D.rebuilding = true;
    if (uv_queue_work(D.loop, &D.rebuild, rebuild_work, rebuild_done)) {
        D.rebuilding = false;
        sd_notify(0, "READY=1");
    }
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"listen", required_argument, NULL, 'l'},
        {"db", required_argument, NULL, 'd'},
        {"lexicons", required_argument, NULL, 'L'},
        {"log-level", required_argument, NULL, 'v'},
        {"metrics-listen", required_argument, NULL, 'M'},
        {"check-config", no_argument, NULL, 'C'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char **flag_keys = D.flag_keys;
    const char **flag_vals = D.flag_vals;
    int n_flags = 0;
    bool check_only = false;
    int c;
    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': D.config_path = optarg; break;
        case 'l': flag_keys[n_flags] = "listen", flag_vals[n_flags++] = optarg; break;
        case 'd': flag_keys[n_flags] = "db", flag_vals[n_flags++] = optarg; break;
        case 'L': flag_keys[n_flags] = "lexicons", flag_vals[n_flags++] = optarg; break;
        case 'v': flag_keys[n_flags] = "log-level", flag_vals[n_flags++] = optarg; break;
        case 'M': flag_keys[n_flags] = "metrics-listen", flag_vals[n_flags++] = optarg; break;
        case 'C': check_only = true; break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("%s\n", ATTUNED_VERSION); return 0;
        default: usage(stderr); return 2;
        }
        if (n_flags == 8)
            n_flags = 7; /* repeated flags: the last one wins anyway */
    }
    if (optind != argc) {
        fprintf(stderr, "attuned: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    D.n_flags = n_flags;
    char err[2048];
    config_defaults(&D.cfg);
    if (D.config_path && config_load(&D.cfg, D.config_path, err, sizeof err)) {
        fprintf(stderr, "attuned: %s\n", err);
        return 2;
    }
    for (int i = 0; i < n_flags; i++) {
        if (config_set(&D.cfg, flag_keys[i], flag_vals[i], err, sizeof err)) {
            fprintf(stderr, "attuned: --%s: %s\n", flag_keys[i], err);
            return 2;
        }
    }
    config_finish(&D.cfg);
    log_set_level(D.cfg.log_level);
    if (log_open(D.cfg.log_file)) {
        fprintf(stderr, "attuned: cannot open log file %s\n", D.cfg.log_file);
        return 2;
    }

    char lexdir[4096];
    lexicon_dir(&D.cfg, lexdir, sizeof lexdir);
    int rc = at_model_new(lexdir, &D.model, err, sizeof err);
    if (rc) {
        log_msg(LOG_ERROR, "main", "cannot build the model from %s: %s", lexdir,
                err[0] ? err : at_strerror(rc));
        return check_only ? 2 : 1;
    }
    if (check_only) {
        printf("configuration and lexicons are valid (model %s, %zu patterns)\n",
               at_model_id(D.model), at_model_n_patterns(D.model));
        at_model_free(D.model);
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit(D.cfg.max_connections);
    log_msg(LOG_INFO, "main", "model %s built from %s in %.1f ms (%zu patterns)",
            at_model_id(D.model), lexdir, at_model_build_ms(D.model),
            at_model_n_patterns(D.model));
    if (sqlite3_libversion_number() < 3051003)
        log_msg(LOG_WARN, "main", "SQLite %s is older than 3.51.3, which fixes a rare WAL-reset "
                "corruption bug; attuned is the only writer of its database, which avoids it",
                sqlite3_libversion());

    /* One writer per database file: the lock is taken before the file is opened (a migration
     * is a write) and held until exit, when the kernel releases it. */
    D.lock_fd = -1;
    if (strcmp(D.cfg.db_path, ":memory:") != 0) {
        rc = dblock_acquire(D.cfg.db_path, &D.lock_fd, err, sizeof err);
        if (rc < 0)
            log_msg(LOG_ERROR, "main", "cannot take the writer lock of %s: %s", D.cfg.db_path,
                    err);
        if (rc > 0) {
            char lock_path[4096 + 16], holder[256], by[64] = "";
            long pid;
            dblock_path(D.cfg.db_path, lock_path, sizeof lock_path);
            if (dblock_read(D.cfg.db_path, holder, sizeof holder, &pid) == 0 && pid)
                snprintf(by, sizeof by, " (by pid %ld)", pid);
            log_msg(LOG_ERROR, "main", "database %s already has a writer: %s is locked by "
                    "another attuned or `attune rescore`%s", D.cfg.db_path, lock_path, by);
        }
        if (rc) {
            at_model_free(D.model);
            return 1;
        }
    }
    store *st;
    if (store_open(D.cfg.db_path, &st, err, sizeof err)) {
        log_msg(LOG_ERROR, "main", "cannot open the store %s: %s", D.cfg.db_path, err);
        at_model_free(D.model);
        return 1;
    }
    D.loop = uv_default_loop();
    if (server_new(D.loop, &D.cfg, &D.srv, err, sizeof err)) {
        log_msg(LOG_ERROR, "main", "%s", err);
        store_close(st);
        at_model_free(D.model);
        return 1;
    }
    if (metrics_new(D.loop, &D.cfg, &D.metrics, err, sizeof err)) {
        log_msg(LOG_ERROR, "main", "%s", err);
        server_close(D.srv);
        uv_run(D.loop, UV_RUN_NOWAIT);
        server_free(D.srv);
        store_close(st);
        at_model_free(D.model);
        return 1;
    }
    if (pipeline_new(&D.cfg, D.model, st, D.loop, server_on_done, D.srv, &D.pipe)) {
        log_msg(LOG_ERROR, "main", "cannot start the pipeline");
        return 1;
    }
    D.model = NULL; /* the pipeline owns it now */
    pipeline_set_alert_cb(D.pipe, server_on_alerts, D.srv);
    server_start(D.srv, D.pipe);
    metrics_start(D.metrics, D.srv, D.pipe);
    uv_signal_init(D.loop, &D.sig_term);
    uv_signal_init(D.loop, &D.sig_int);
    uv_signal_init(D.loop, &D.sig_hup);
    uv_signal_start(&D.sig_term, on_stop_signal, SIGTERM);
    uv_signal_start(&D.sig_int, on_stop_signal, SIGINT);
    uv_signal_start(&D.sig_hup, on_hup, SIGHUP);
    log_msg(LOG_INFO, "main", "%s listening on %.*s:%d, db %s, %d workers", ATTUNED_VERSION,
            (int)(strrchr(D.cfg.listen, ':') - D.cfg.listen), D.cfg.listen, server_port(D.srv),
            D.cfg.db_path, D.cfg.workers);
    if (D.lock_fd >= 0) {
        /* For `attune rescore`, which asks the lock holder to rescore: where to find it. */
        char where[300];
        snprintf(where, sizeof where, "%.*s:%d",
                 (int)(strrchr(D.cfg.listen, ':') - D.cfg.listen), D.cfg.listen,
                 server_port(D.srv));
        dblock_describe(D.lock_fd, where);
    }
    if (D.metrics)
        log_msg(LOG_INFO, "main", "metrics on %.*s:%d (GET /metrics, /healthz)",
                (int)(strrchr(D.cfg.metrics_listen, ':') - D.cfg.metrics_listen),
                D.cfg.metrics_listen, metrics_port(D.metrics));
    if (watchdog_new(D.loop, D.pipe, &D.wd))
        log_msg(LOG_ERROR, "main", "cannot start the watchdog: out of memory");
    sd_notify(0, "READY=1");

    uv_run(D.loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&D.sig_term, NULL);
    uv_close((uv_handle_t *)&D.sig_int, NULL);
    uv_close((uv_handle_t *)&D.sig_hup, NULL);
    uv_run(D.loop, UV_RUN_NOWAIT);

    server_stats last;
    server_get_stats(D.srv, &last);
    server_free(D.srv);
    metrics_free(D.metrics);
    watchdog_free(D.wd);
    uv_loop_close(D.loop);
    dblock_release(D.lock_fd);
    log_msg(LOG_INFO, "main", "stopped");
    log_close();
    /* Lines were given up at the drain deadline: not a clean stop, whatever else went well. */
    return last.lines_abandoned ? 3 : 0;
}
