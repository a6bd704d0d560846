/*
 * pipeline.h: scoring workers and the writer thread (pipeline.c), between the loop thread that
 * parses lines and the loop thread that acknowledges them.
 *
 * The loop thread submits work items; a conversation always goes to the same worker (hash of
 * conversation_id). Workers score and hand items to the single writer, which applies them in
 * batched transactions and, after COMMIT returns, reports the covered (connection, line) pairs
 * back to the loop thread through a uv_async. The loop thread bounds how much is in flight, so
 * the queues here need no bound of their own and never block the loop.
 */
#ifndef ATTUNED_PIPELINE_H
#define ATTUNED_PIPELINE_H

#include <uv.h>

#include "attuned.h"
#include "histogram.h"

/* Scores of one turn, filled by the worker. */
typedef struct scored_turn {
    at_sentiment sentiment;
    double frustration_score; /* NAN for turns other than customer */
    at_marker *markers;       /* a copy, in mem */
    size_t n_markers;
    uint32_t category_mask;
    int solution_first;       /* see at_turn */
    char *redacted;           /* store_text = redacted: the text to store */
    size_t redacted_len;
    bool was_redacted;        /* redaction replaced something */
    void *mem;                /* owned: the block holding markers and redacted, or NULL */
} scored_turn;

/* A live signal raised by a worker, delivered to subscribers after its commit. */
typedef struct alert {
    const char *kind;     /* static: escalation_request, churn_threat, legal_threat, abuse,
                           * frustration_spike, dismissive_agent */
    char *conversation_id; /* owned */
    int64_t seq;          /* WIRE_ABSENT when the store numbered the turn */
    int64_t ts;           /* the turn's time, or the time the alert was raised (ms) */
    char detail[160];
    char *queue, *agent_id; /* owned, filled by the writer from the conversation row */
} alert;

typedef struct work {
    struct work *next;
    uint64_t conn_id;
    uint64_t line_no;
    size_t bytes;     /* the line's length, for in-flight accounting */
    uint64_t read_ns; /* uv_hrtime() when the loop thread read the line (ack latency) */
    message msg;      /* owned */
    scored_turn *scored; /* msg.n_turns entries: &one, or owned */
    scored_turn one;     /* the scores of a one-turn message */
    char model_id[32];
    alert *alerts;    /* owned; handed to the loop thread after the commit */
    size_t n_alerts;
    char *reply;      /* owned; a line to send before the ack (rescore), or NULL */
    bool failed;      /* could not be stored (not a passing condition): answered `internal` */
    bool abandoned;   /* not stored: given up at shutdown (pipeline_abandon); not acknowledged */
} work;

typedef struct completion {
    uint64_t conn_id;
    uint64_t line_no;
    size_t bytes;
    uint64_t read_ns; /* from the work item */
    char *reply;      /* a JSON line to send on the connection before its ack, or NULL;
                       * the pipeline frees it after the callback */
    bool failed;      /* the line was not stored: answer it with an `internal` error */
    bool abandoned;   /* the line was not stored (pipeline_abandon): neither answer nor ack it */
} completion;

/* Called on the loop thread with alerts whose utterances were committed; the callee takes
 * nothing (the pipeline frees the alerts after the call). */
typedef void (*pipeline_alert_cb)(void *ud, const alert *alerts, size_t n_alerts);

/* Called on the loop thread with the lines a commit covered. */
typedef void (*pipeline_done_cb)(void *ud, const completion *done, size_t n_done);

typedef struct pipeline pipeline;

/* Starts cfg->workers scoring threads and the writer thread, which takes over st and model.
 * Returns 0 or -1. */
int pipeline_new(const config *cfg, at_model *model, store *st, uv_loop_t *loop,
                 pipeline_done_cb done, void *ud, pipeline **out);
/* Registers the alert callback (before traffic starts). */
void pipeline_set_alert_cb(pipeline *p, pipeline_alert_cb cb, void *ud);
/* Applies reloadable alert thresholds. */
void pipeline_set_alert_rules(pipeline *p, double compound_floor, int consecutive_turns);
void alert_fini(alert *a);

/* Replaces the model (takes model; loop thread). Workers switch between items; the old model is
 * freed once no worker uses it. Returns -1 (and does not take model) when too many replaced
 * models are still in use. */
int pipeline_set_model(pipeline *p, at_model *model);
/* The current model, borrowed (loop thread). */
const at_model *pipeline_model(pipeline *p);
/* Takes w (loop thread). An item about a conversation reaches its scoring thread at the next
 * pipeline_flush. A rescore request (MSG_RESCORE) becomes the writer's rescoring job: it
 * rescores in slices of batch_rows utterances, each its own transaction, between ingest batches,
 * and completes the request's line (reply: a "rescored" line, or an error) when it is done. One
 * job at a time: a second request while one runs is answered with an overloaded error. */
void pipeline_submit(pipeline *p, work *w);
/* Hands the items submitted since the last call to their scoring threads, one lock and one
 * wake-up per thread (loop thread), so that the lines of one read cost one hand-off. The
 * caller flushes before it returns to the loop; until then the items wait. */
void pipeline_flush(pipeline *p);
/* Makes a running rescoring job stop after its current slice (shutdown; loop thread). Its line
 * is answered with a shutting_down error; a later request resumes where it stopped. */
void pipeline_stop_rescore(pipeline *p);
/* Gives up what cannot be committed, for a shutdown whose drain deadline passed (loop thread):
 * the writer makes no commit attempt from now on (one in progress finishes; its backoff wait
 * ends at once), and completes the batch it was retrying, and every item it receives after,
 * as abandoned: not stored, not to be acknowledged. A conversation whose metrics were deferred
 * keeps its pending_metrics mark for the next start. */
void pipeline_abandon(pipeline *p);
/* Applies reloadable batch settings. */
void pipeline_set_batch(pipeline *p, int batch_rows, int batch_ms);
/* Applies a reloaded max_db_mb: the writer sets it on its connection before its next
 * transaction (also before the next attempt at a batch that failed for lack of room). */
void pipeline_set_max_db_mb(pipeline *p, int max_db_mb);
/* Finishes every submitted item (commit, completions delivered), stops the threads and closes
 * the store. Called on the loop thread once nothing is in flight; runs the loop's async close. */
void pipeline_free(pipeline *p);

/* Counters for logs and metrics (read with relaxed atomics). */
typedef struct pipeline_stats {
    uint64_t utterances_scored;
    uint64_t rows_committed;
    uint64_t batches_committed;
    uint64_t commit_failures;
    uint64_t duplicates;
    uint64_t pattern_limit_hits; /* marker patterns skipped at a PCRE2 match or depth limit */
    /* Writer health, for the watchdog: the uv_hrtime() of its latest heartbeat (it beats before
     * and after waiting on its queue and before every commit attempt), whether it is waiting on
     * an empty queue, and since when commits have been failing (0 = the latest succeeded). */
    uint64_t writer_beat_ns;
    bool writer_idle;
    uint64_t failing_since_ns;
    /* Commits are failing for lack of room (max_db_mb reached, or the disk is full). */
    bool store_full;
    /* The database's size (pages in use) and its cap (0 = none), bytes, as of the writer's
     * latest commit. */
    int64_t db_bytes, db_max_bytes;
} pipeline_stats;
void pipeline_get_stats(pipeline *p, pipeline_stats *out);
/* Writer time of successful batch commits (BEGIN to COMMIT, without waits), borrowed. */
const histogram *pipeline_commit_latency(pipeline *p);

void work_free(work *w);

#endif
