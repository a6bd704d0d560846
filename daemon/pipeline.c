/*
 * pipeline.c: scoring workers and the writer thread.
 *
 * Models: the current model is an atomic pointer. A worker publishes the model it is about to
 * use (a hazard pointer) and confirms it is still current before using it; a replaced model is
 * retired and freed by the loop thread once no worker has it published.
 *
 * Invariants: an item is owned by exactly one queue or thread at a time; the store is touched
 * only by the writer thread; completions reach the loop thread only after the COMMIT that
 * covers them has returned. A failed batch is rolled back and retried as a whole, so nothing is
 * acknowledged that is not durable, and the loop thread's in-flight bound turns a stalled
 * writer into backpressure on the sockets.
 *
 * Batches: the writer opens a batch's transaction with its first item and stores each item as
 * it takes it from its queue (in statements of FLUSH_ROWS utterances at most), so that storing
 * overlaps the scoring of the batch's later lines; it commits after batch_rows rows or batch_ms
 * milliseconds. Once an attempt failed, the rest of the batch is only gathered, and the whole
 * batch is applied again by the retries.
 *
 * Room: a batch that fails for lack of room (max_db_mb reached, or a full disk) is retried like
 * any passing failure, so nothing is acknowledged and backpressure pauses the clients; the
 * writer says so once (then once a minute), applies a changed max_db_mb before every attempt,
 * and carries on when there is room again. The watchdog does not count this as a stall: a
 * restart would not make room.
 *
 * Deferred metrics: the conversations whose metrics recomputation is deferred (see
 * update_metrics) are also marked in the database (pending_metrics), in the transaction of the
 * utterances that made them stale; the recomputation clears the mark in its own transaction.
 * The marks are the truth and the in-memory list a cache of them: at start the writer
 * recomputes every marked conversation (a killed predecessor left them) before its first
 * batch, and after a rollback, which may have undone recomputations the memory believes done,
 * it reads the marks again.
 *
 * Shutdown: pipeline_abandon (the drain deadline passed) makes the writer stop attempting
 * commits: the batch it is retrying and every item after it are completed as abandoned, neither
 * stored nor acknowledged, so that the daemon can exit with everything it acknowledged stored.
 *
 * Turns in memory: recomputing a conversation's metrics needs all its stored turns; the writer
 * keeps them (recent.turns, bounded) as it stores them, so that a recomputation reads them from
 * the database only when it has no complete copy (see TURN_CACHE_MAX).
 *
 * Checkpoints: SQLite's automatic checkpoint runs after commits while the writer is busy; once
 * it has been idle for CHECKPOINT_IDLE_MS, the writer copies the whole WAL into the database and
 * truncates it, without waiting for readers, and tries again every CHECKPOINT_IDLE_MS while a
 * reader (an analyst's long transaction) keeps part of the WAL in use.
 *
 * Rescoring: a rescore request becomes the writer's one job. The writer runs it in slices of
 * batch_rows utterances, each in its own transaction, whenever its queue is empty and once after
 * every ingest batch, so ingest and rescoring both progress and the loop thread never waits. The
 * writer scores with the current model under its own hazard pointer; when the model changes
 * mid-run, the run starts over with the new one (rows already rescored by it are passed over).
 */
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pipeline.h"

typedef struct queue {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    work *head, *tail;
    bool closed;
} queue;

/* Items submitted and not yet pushed to a queue (loop thread only), in submission order. */
typedef struct chain {
    work *head, *tail;
} chain;

/* Consecutive low-sentiment customer turns per conversation, for frustration_spike. A fixed
 * direct-mapped table: memory is bounded whatever the number of live conversations; a
 * collision only restarts a count. */
#define SPIKE_SLOTS 65536
typedef struct spike_slot {
    uint64_t hash;
    int count;
} spike_slot;

typedef struct worker {
    pipeline *p;
    spike_slot *spikes;
    pthread_t thread;
    queue q;
    at_scratch *scratch;
    _Atomic(const at_model *) hazard; /* the model this worker may be using, or NULL */
    chain submitted; /* loop thread: items for q since the last pipeline_flush */
    /* PCRE2 limit warnings: at most one a second per worker, so that a client sending text
     * built to backtrack cannot flood the log; the others are counted into the next one. */
    uint64_t limit_warned_ns;
    uint64_t n_limit_unlogged; /* utterances with limit hits since the last warning */
} worker;

#define MAX_RETIRED 16

/* The writer's rescoring job (writer thread only). */
typedef struct rescore_job {
    work *req;           /* the request; its line completes when the job ends */
    rescore_cursor cur;
    rescore_counts counts;
    char model_id[32];   /* the model of the current pass; "" before the first slice */
    at_scratch *scratch;
} rescore_job;

struct pipeline {
    _Atomic(const at_model *) model;
    at_model *retired[MAX_RETIRED]; /* replaced models not yet freed (loop thread only) */
    size_t n_retired;
    store *st;
    enum store_text_policy store_text;
    int64_t silence_threshold_ms;
    bool last_transient;  /* writer: whether the last failed batch may succeed on retry */
    bool last_full;       /* writer: whether it failed for lack of room */
    int applied_max_db_mb; /* writer: the cap set on the connection; -1 before the first */
    uint64_t full_since_ns, full_logged_ns; /* writer: the current lack of room, its last log */
    uint64_t n_full_attempts;
    bool is_checkpoint_due;  /* writer: commits since the last complete idle checkpoint */
    bool is_checkpoint_failing; /* writer: the last idle checkpoint failed (logged once) */
    char last_error[512]; /* writer: its message */
    stored_utterance *pending; /* writer: utterances of the batch not yet stored */
    bool *pending_new;         /* writer: which of them store_put_utterances stored */
    size_t n_pending, cap_pending;
    uint64_t turns_gen;        /* writer: see recent.turns */
    uint64_t batch_no;         /* writer: batches seen by update_metrics */
    size_t n_cached_turns;     /* writer: room taken by every recent.turns, in turns */
    struct touched_conv *touched; /* writer: conversations of the current batch */
    size_t n_touched, cap_touched;
    work *taken; /* writer: items taken from its queue (queue_take_all), not yet popped */
    work **alerting; /* writer: the items of the current batch that have alerts */
    size_t n_alerting, cap_alerting;
    struct recent *recent[4096];  /* writer: metrics throttling, see update_metrics */
    struct recent *last_recent;   /* writer: the entry recent_get returned last, or NULL */
    size_t n_recent, n_dirty;
    bool is_pending_reload; /* writer: a rollback may have undone recomputations: read the
                             * pending_metrics marks again before the next flush */
    worker *workers;
    int n_workers;
    pthread_t writer;
    queue wq;
    rescore_job *job;                        /* writer thread; NULL when none runs */
    _Atomic(const at_model *) writer_hazard; /* the model the writer rescores with, or NULL */
    _Atomic bool stop_rescore;
    _Atomic bool abandon;   /* pipeline_abandon: no more commit attempts */
    uint64_t n_abandoned;   /* writer: lines given up since then */
    _Atomic int batch_rows;
    _Atomic int batch_ms;
    _Atomic int max_db_mb;
    _Atomic double alert_floor;
    _Atomic int alert_turns;
    pipeline_alert_cb alert_cb;
    void *alert_ud;
    alert *alerts; /* writer -> loop, under done_mu */
    size_t n_alerts, cap_alerts;

    /* writer -> loop */
    uv_async_t async;
    pthread_mutex_t done_mu;
    completion *done;
    size_t n_done, cap_done;
    pipeline_done_cb done_cb;
    void *done_ud;

    _Atomic uint64_t utterances_scored, rows_committed, batches_committed, commit_failures,
        duplicates, pattern_limit_hits;

    /* Writer health (see pipeline_stats) and commit durations. */
    _Atomic uint64_t writer_beat_ns, failing_since_ns;
    _Atomic bool writer_idle;
    _Atomic bool store_full;
    _Atomic int64_t db_bytes, db_max_bytes;
    histogram commit_latency;
};

static void queue_init(queue *q)
{
    pthread_mutex_init(&q->mu, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&q->cv, &attr);
    pthread_condattr_destroy(&attr);
    q->head = q->tail = NULL;
    q->closed = false;
}

static void queue_fini(queue *q)
{
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
}

/* Appends the items head..tail (linked through next, tail->next NULL) with one lock and one
 * wake-up. */
static void queue_push_chain(queue *q, work *head, work *tail)
{
    pthread_mutex_lock(&q->mu);
    if (q->tail)
        q->tail->next = head;
    else
        q->head = head;
    q->tail = tail;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

static void queue_push(queue *q, work *w)
{
    w->next = NULL;
    queue_push_chain(q, w, w);
}

static void queue_close(queue *q)
{
    pthread_mutex_lock(&q->mu);
    q->closed = true;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

/* With q->mu held: waits until the queue has items, is closed, or deadline (NULL = forever)
 * has passed. */
static void queue_wait(queue *q, const struct timespec *deadline)
{
    while (!q->head && !q->closed) {
        if (!deadline) {
            pthread_cond_wait(&q->cv, &q->mu);
        } else if (pthread_cond_timedwait(&q->cv, &q->mu, deadline) != 0) {
            break;
        }
    }
}

/* Waits until the queue has items or deadline (NULL = forever) and takes them all: the
 * returned list (linked by next) is the caller's. Returns NULL when the queue is closed and
 * empty, or at the deadline. */
static work *queue_take_all(queue *q, const struct timespec *deadline)
{
    pthread_mutex_lock(&q->mu);
    queue_wait(q, deadline);
    work *w = q->head;
    q->head = q->tail = NULL;
    pthread_mutex_unlock(&q->mu);
    return w;
}

/* Pops the head, waiting until deadline (NULL = forever). Returns NULL when the queue is closed
 * and empty, or at the deadline. */
static work *queue_pop(queue *q, const struct timespec *deadline)
{
    pthread_mutex_lock(&q->mu);
    queue_wait(q, deadline);
    work *w = q->head;
    if (w) {
        q->head = w->next;
        if (!q->head)
            q->tail = NULL;
    }
    pthread_mutex_unlock(&q->mu);
    return w;
}

void work_free(work *w)
{
    if (!w)
        return;
    if (w->scored) {
        for (size_t i = 0; i < w->msg.n_turns; i++)
            free(w->scored[i].mem);
        if (w->scored != &w->one)
            free(w->scored);
    }
    for (size_t i = 0; i < w->n_alerts; i++)
        alert_fini(&w->alerts[i]);
    free(w->alerts);
    free(w->reply);
    message_fini(&w->msg);
    free(w);
}

/* ---- workers --------------------------------------------------------------------------- */

static const at_model *acquire_model(worker *wk)
{
    const at_model *m;
    do {
        m = atomic_load(&wk->p->model);
        atomic_store(&wk->hazard, m);
    } while (m != atomic_load(&wk->p->model));
    return m;
}

void alert_fini(alert *a)
{
    free(a->conversation_id);
    free(a->queue);
    free(a->agent_id);
}

static uint64_t hash_str(const char *c)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *c; c++) {
        h ^= (unsigned char)*c;
        h *= 0x100000001b3ULL;
    }
    return h;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void raise_alert(work *w, const turn *t, const char *kind, const char *detail)
{
    alert *a = realloc(w->alerts, (w->n_alerts + 1) * sizeof *a);
    if (!a)
        return; /* an alert is best effort; the data itself is stored regardless */
    w->alerts = a;
    a = &w->alerts[w->n_alerts];
    memset(a, 0, sizeof *a);
    a->conversation_id = strdup(w->msg.conversation_id);
    if (!a->conversation_id)
        return;
    a->kind = kind;
    a->seq = t->seq;
    a->ts = t->ts != WIRE_ABSENT ? t->ts : wall_ms();
    snprintf(a->detail, sizeof a->detail, "%s", detail);
    w->n_alerts++;
}

static const char *first_pattern(const at_result *r, at_category cat)
{
    for (size_t i = 0; i < r->n_markers; i++)
        if (r->markers[i].category == cat)
            return r->markers[i].pattern_id;
    return "";
}

/* The live signals of one scored turn: customer escalation requests, churn and legal threats,
 * abuse, a run of low-sentiment customer turns; agent (and bot) dismissive language. */
static void detect_alerts(worker *wk, work *w, const turn *t, const at_result *r)
{
    static const struct {
        at_category cat;
        const char *kind;
    } customer_kinds[] = {
        {AT_CAT_ESCALATION_REQUEST, "escalation_request"},
        {AT_CAT_CHURN_THREAT, "churn_threat"},
        {AT_CAT_LEGAL_THREAT, "legal_threat"},
        {AT_CAT_ABUSE, "abuse"},
    };
    char detail[160];
    if (t->speaker == AT_SPEAKER_CUSTOMER) {
        for (size_t i = 0; i < sizeof customer_kinds / sizeof *customer_kinds; i++) {
            if (!(r->category_mask & (1u << customer_kinds[i].cat)))
                continue;
            snprintf(detail, sizeof detail, "pattern %s",
                     first_pattern(r, customer_kinds[i].cat));
            raise_alert(w, t, customer_kinds[i].kind, detail);
        }
        uint64_t h = hash_str(w->msg.conversation_id);
        spike_slot *slot = &wk->spikes[h % SPIKE_SLOTS];
        if (slot->hash != h) {
            slot->hash = h;
            slot->count = 0;
        }
        double floor = atomic_load(&wk->p->alert_floor);
        int need = atomic_load(&wk->p->alert_turns);
        if (r->sentiment.compound < floor) {
            if (++slot->count == need) {
                snprintf(detail, sizeof detail, "%d consecutive customer turns with compound "
                         "below %.2f (last %.4f)", need, floor, r->sentiment.compound);
                raise_alert(w, t, "frustration_spike", detail);
            }
        } else {
            slot->count = 0;
        }
    } else if ((t->speaker == AT_SPEAKER_AGENT || t->speaker == AT_SPEAKER_BOT) &&
               r->n_markers) {
        size_t n = 0;
        detail[0] = '\0';
        for (int c = AT_CAT_MINIMISING; c <= AT_CAT_BUT_NEGATION; c++) {
            if (!(r->category_mask & (1u << c)))
                continue;
            n += (size_t)snprintf(detail + n, sizeof detail - (n < sizeof detail ? n : sizeof detail),
                                  "%s%s", n ? ", " : "", at_category_name((at_category)c));
            if (n >= sizeof detail)
                break;
        }
        if (detail[0])
            raise_alert(w, t, "dismissive_agent", detail);
    }
}

static void score_work(worker *wk, work *w)
{
    pipeline *p = wk->p;
    const at_model *model = acquire_model(wk);
    /* Not snprintf: its format machinery was a third of this thread's own work per line. */
    const char *model_id = at_model_id(model);
    size_t id_len = strnlen(model_id, sizeof w->model_id - 1);
    memcpy(w->model_id, model_id, id_len);
    w->model_id[id_len] = '\0';
    if (!w->msg.n_turns)
        return;
    /* An utterance's scores are in the item itself; a conversation message's in an array. */
    if (w->msg.n_turns == 1) {
        memset(&w->one, 0, sizeof w->one);
        w->scored = &w->one;
    } else if (!(w->scored = calloc(w->msg.n_turns, sizeof *w->scored))) {
        return;
    }
    for (size_t i = 0; i < w->msg.n_turns; i++) {
        const turn *t = &w->msg.turns[i];
        at_result r;
        int rc = at_score(model, wk->scratch, t->text, t->text_len, t->speaker, 0, &r);
        if (rc) {
            log_msg(LOG_ERROR, "worker", "scoring failed: %s; storing neutral scores",
                    at_strerror(rc));
            memset(&r, 0, sizeof r);
        }
        if (r.n_limit_hits) {
            atomic_fetch_add_explicit(&p->pattern_limit_hits, (uint64_t)r.n_limit_hits,
                                      memory_order_relaxed);
            uint64_t now_ns = uv_hrtime();
            if (wk->limit_warned_ns && now_ns - wk->limit_warned_ns < 1000000000u) {
                wk->n_limit_unlogged++;
            } else {
                char more[96] = "";
                if (wk->n_limit_unlogged)
                    snprintf(more, sizeof more, " (and in %llu more utterances since the last "
                             "such warning)", (unsigned long long)wk->n_limit_unlogged);
                log_msg(LOG_WARN, "worker", "conversation %s seq %lld: %d pattern(s) hit the "
                        "PCRE2 match limit and were skipped%s", w->msg.conversation_id,
                        (long long)t->seq, r.n_limit_hits, more);
                wk->limit_warned_ns = now_ns;
                wk->n_limit_unlogged = 0;
            }
        }
        if (p->alert_cb)
            detect_alerts(wk, w, t, &r);
        const char *red = NULL;
        size_t red_len = 0;
        unsigned n_red = 0;
        /* After scoring, so that redaction never changes a score. */
        if (p->store_text == STORE_TEXT_REDACTED &&
            at_redact(model, wk->scratch, t->text, t->text_len, &red, &red_len, &n_red))
            red = NULL;
        scored_turn *s = &w->scored[i];
        s->sentiment = r.sentiment;
        s->category_mask = r.category_mask;
        s->solution_first = scoredb_solution_first(&r);
        s->frustration_score = t->speaker == AT_SPEAKER_CUSTOMER ? r.frustration_score : NAN;
        atomic_fetch_add_explicit(&p->utterances_scored, 1, memory_order_relaxed);
        /* The markers and the redacted text share one block. Without memory the turn is
         * stored without them, as it was when each had its own. */
        size_t red_at = r.n_markers * sizeof(at_marker);
        char *mem = red_at || red ? malloc(red_at + (red ? red_len + 1 : 0)) : NULL;
        if (!mem)
            continue;
        s->mem = mem;
        if (red) {
            s->redacted = mem + red_at;
            memcpy(s->redacted, red, red_len + 1);
            s->redacted_len = red_len;
            s->was_redacted = n_red > 0;
        }
        if (r.n_markers) {
            s->markers = (at_marker *)mem;
            memcpy(s->markers, r.markers, r.n_markers * sizeof *s->markers);
            s->n_markers = r.n_markers;
        }
    }
}

static void *worker_main(void *arg)
{
    worker *wk = arg;
    work *w;
    char name[16]; /* what top -H and /proc/PID/task/TID/comm show */
    snprintf(name, sizeof name, "score-%d", (int)(wk - wk->p->workers));
    pthread_setname_np(pthread_self(), name);
    while ((w = queue_pop(&wk->q, NULL))) {
        score_work(wk, w);
        atomic_store(&wk->hazard, NULL);
        queue_push(&wk->p->wq, w);
    }
    return NULL;
}

/* ---- writer ---------------------------------------------------------------------------- */

static size_t work_rows(const work *w)
{
    return w->msg.n_turns + (w->msg.type != MSG_UTTERANCE);
}

static void cache_add(pipeline *p, const stored_utterance *u, int64_t seq);

/* Stores the utterances gathered by apply_work, several to a statement. */
static int flush_utterances(pipeline *p)
{
    size_t n_dup = 0;
    int rc = store_put_utterances(p->st, p->pending, p->n_pending, &n_dup, p->pending_new);
    if (rc == 0) {
        for (size_t i = 0; i < p->n_pending; i++)
            if (p->pending_new[i])
                cache_add(p, &p->pending[i], p->pending[i].turn->seq);
    }
    p->n_pending = 0;
    if (n_dup)
        atomic_fetch_add_explicit(&p->duplicates, n_dup, memory_order_relaxed);
    return rc;
}

/* Applies one item. Utterances that carry their seq are gathered and stored by the batch's
 * flush_utterances (they commute with everything else in the batch: their conversation row is
 * made sure of when they are stored, and metrics are recomputed after every item is applied);
 * one without seq is numbered from the stored rows, so those gathered go first. */
static int apply_work(pipeline *p, work *w)
{
    const message *m = &w->msg;
    if (m->type == MSG_START || m->type == MSG_END || m->type == MSG_OUTCOME ||
        m->type == MSG_CONVERSATION) {
        if (store_put_conversation(p->st, m->conversation_id, &m->facts))
            return -1;
    }
    for (size_t i = 0; i < m->n_turns; i++) {
        const turn *t = &m->turns[i];
        const scored_turn *s = &w->scored[i];
        stored_utterance u = {
            .conversation_id = m->conversation_id,
            .turn = t,
            .text = p->store_text == STORE_TEXT_FULL ? t->text : s->redacted,
            .text_len = p->store_text == STORE_TEXT_FULL ? t->text_len : s->redacted_len,
            .redacted = p->store_text != STORE_TEXT_FULL && s->was_redacted,
            .sentiment = s->sentiment,
            .frustration_score = s->frustration_score,
            .markers = s->markers,
            .n_markers = s->n_markers,
            .category_mask = s->category_mask,
            .solution_first = s->solution_first,
            .model_id = w->model_id,
        };
        if (t->seq != WIRE_ABSENT) {
            if (p->n_pending == p->cap_pending) {
                size_t cap = p->cap_pending ? p->cap_pending * 2 : 256;
                stored_utterance *v = realloc(p->pending, cap * sizeof *v);
                if (v)
                    p->pending = v;
                bool *is_new = v ? realloc(p->pending_new, cap * sizeof *is_new) : NULL;
                if (is_new)
                    p->pending_new = is_new;
                if (v && is_new) {
                    p->cap_pending = cap;
                } else if (p->n_pending && flush_utterances(p)) {
                    return -1; /* without memory, what was gathered is stored now */
                }
            }
            if (p->n_pending < p->cap_pending) {
                p->pending[p->n_pending++] = u;
                continue;
            }
            /* No memory at all: this one is stored alone, below. */
        } else if (p->n_pending && flush_utterances(p)) {
            return -1;
        }
        bool inserted;
        if (store_put_utterance(p->st, &u, &inserted))
            return -1;
        if (inserted)
            cache_add(p, &u, store_last_seq(p->st));
        else
            atomic_fetch_add_explicit(&p->duplicates, 1, memory_order_relaxed);
    }
    return 0;
}


/* Metrics of a conversation that only received utterances are recomputed at most once per
 * METRICS_INTERVAL_MS: recomputing reads all its turns, so doing it every batch would make a
 * long conversation streamed turn by turn cost the square of its length. Until then the
 * conversation is "dirty"; the writer recomputes due ones with the next batch or, when idle,
 * in a transaction of their own. start, end, outcome and conversation messages recompute at
 * once, so an ended conversation's row is final and streamed or whole give the same row. */
#define METRICS_INTERVAL_MS 1000
#define RECENT_BUCKETS 4096
#define RECENT_MAX 100000

typedef struct recent {
    struct recent *next;
    uint64_t last_ms; /* when its metrics were last recomputed */
    bool dirty;       /* turns arrived since */
    /* Its stored turns, as scoredb_read_turns would read them, so that recomputing its metrics
     * need not read them again: complete while turns_gen is the pipeline's turns_gen. */
    at_turn *turns;
    size_t n_turns, cap_turns;
    uint64_t turns_gen;
    uint64_t batch_no; /* the latest batch that listed it (update_metrics) */
    bool is_final;     /* that batch holds a message other than utterance for it */
    bool is_ended;     /* ... an end or a whole conversation */
    char id[];
} recent;

/* The turn cache (recent.turns) is filled when a recomputation reads a conversation's turns,
 * or starts empty when the transaction created the conversation (it can have no other turns),
 * and every turn the writer stores joins it. A rollback, or a rescoring slice (it rewrites
 * stored turns), makes every cache stale at once by bumping the pipeline's turns_gen. A
 * conversation that ended (end, or sent whole) gives its copy up once its metrics are final: a
 * late outcome reads the turns again. Bounded: TURN_CACHE_MAX turns in all (1 MiB),
 * TURN_CACHE_CONV_MAX for one conversation; beyond, metrics are recomputed from the database as
 * before. */
#define TURN_CACHE_MAX 16384
#define TURN_CACHE_CONV_MAX 4096
/* turns_gen of a cache that missed a turn of the current transaction: only reading the turns
 * again makes it complete. */
#define TURNS_MISSED UINT64_MAX

static uint64_t mono_ms(void)
{
    return uv_hrtime() / 1000000;
}

static recent *recent_get(pipeline *p, const char *id)
{
    /* A conversation's lines mostly come in runs, and each is looked up twice. */
    if (p->last_recent && strcmp(p->last_recent->id, id) == 0)
        return p->last_recent;
    uint64_t h = hash_str(id) % RECENT_BUCKETS;
    for (recent *r = p->recent[h]; r; r = r->next)
        if (strcmp(r->id, id) == 0)
            return p->last_recent = r;
    if (p->n_recent >= RECENT_MAX)
        return NULL; /* full: recompute at once, as without throttling */
    size_t len = strlen(id);
    recent *r = malloc(sizeof *r + len + 1);
    if (!r)
        return NULL;
    memcpy(r->id, id, len + 1);
    r->last_ms = 0;
    r->dirty = false;
    r->turns = NULL;
    r->n_turns = r->cap_turns = 0;
    r->turns_gen = 0;
    r->batch_no = 0;
    r->is_final = r->is_ended = false;
    r->next = p->recent[h];
    p->recent[h] = r;
    p->n_recent++;
    return p->last_recent = r;
}

static void recent_free(pipeline *p, recent *r)
{
    if (p->last_recent == r)
        p->last_recent = NULL;
    p->n_cached_turns -= r->cap_turns;
    free(r->turns);
    free(r);
}

static void recent_free_all(pipeline *p)
{
    for (size_t b = 0; b < RECENT_BUCKETS; b++) {
        for (recent *r = p->recent[b], *next; r; r = next) {
            next = r->next;
            recent_free(p, r);
        }
        p->recent[b] = NULL;
    }
    p->n_recent = p->n_dirty = 0;
}

static void cache_drop(pipeline *p, recent *r)
{
    p->n_cached_turns -= r->cap_turns;
    free(r->turns);
    r->turns = NULL;
    r->n_turns = r->cap_turns = 0;
}

/* Room for need turns in r's cache, within the bounds. */
static bool cache_room(pipeline *p, recent *r, size_t need)
{
    if (need <= r->cap_turns)
        return true;
    size_t cap = r->cap_turns ? r->cap_turns : 16;
    while (cap < need)
        cap *= 2;
    if (cap > TURN_CACHE_CONV_MAX || p->n_cached_turns - r->cap_turns + cap > TURN_CACHE_MAX)
        return false;
    at_turn *t = realloc(r->turns, cap * sizeof *t);
    if (!t)
        return false;
    p->n_cached_turns += cap - r->cap_turns;
    r->turns = t;
    r->cap_turns = cap;
    return true;
}

/* A turn the writer stored (u, numbered seq) joins its conversation's cache: as
 * scoredb_read_turns reads it back from the row store.c writes. */
static void cache_add(pipeline *p, const stored_utterance *u, int64_t seq)
{
    recent *r = recent_get(p, u->conversation_id);
    if (!r || r->turns_gen == TURNS_MISSED)
        return;
    if (r->turns_gen != p->turns_gen) {
        if (!store_is_new_conversation(p->st, u->conversation_id))
            return; /* stale: the next recomputation reads the turns */
        r->n_turns = 0; /* a new conversation has no other turns */
        r->turns_gen = p->turns_gen;
    }
    if (!cache_room(p, r, r->n_turns + 1)) {
        r->turns_gen = TURNS_MISSED;
        cache_drop(p, r);
        return;
    }
    const turn *t = u->turn;
    r->turns[r->n_turns++] = (at_turn){
        .seq = seq,
        .speaker = t->speaker,
        .ts_ms = t->ts,
        .start_ms = t->start_ms,
        .end_ms = t->end_ms,
        .compound = u->sentiment.compound,
        .frustration_score = u->frustration_score,
        .category_mask = u->category_mask,
        .solution_first = u->solution_first < 0 ? -1 : u->solution_first != 0,
    };
}

/* Recomputes a conversation's metrics from its cached turns (r: its entry, or NULL when the
 * table is full), reading them (into the cache, when it has room) when the cache is stale. */
static int recompute(pipeline *p, const char *id, recent *r)
{
    if (!r)
        return store_update_metrics(p->st, id, p->silence_threshold_ms);
    if (r->turns_gen != p->turns_gen) {
        size_t old_cap = r->cap_turns;
        r->turns_gen = 0;
        if (store_read_turns(p->st, id, &r->turns, &r->n_turns, &r->cap_turns))
            return -1;
        p->n_cached_turns += r->cap_turns - old_cap;
        bool is_kept = r->cap_turns <= TURN_CACHE_CONV_MAX &&
                       p->n_cached_turns <= TURN_CACHE_MAX;
        int rc = store_update_metrics_with(p->st, id, r->turns, r->n_turns,
                                           p->silence_threshold_ms);
        if (is_kept)
            r->turns_gen = p->turns_gen;
        else
            cache_drop(p, r);
        return rc;
    }
    return store_update_metrics_with(p->st, id, r->turns, r->n_turns, p->silence_threshold_ms);
}

/* Makes every turn cache stale (a rollback, a rescoring slice). */
static void cache_invalidate(pipeline *p)
{
    p->turns_gen++;
}

/* Recomputes dirty conversations that are due, and forgets clean ones not seen for a while. */
static int flush_due(pipeline *p, uint64_t now)
{
    for (size_t b = 0; b < RECENT_BUCKETS && (p->n_dirty || p->n_recent); b++) {
        recent **link = &p->recent[b];
        while (*link) {
            recent *r = *link;
            if (r->dirty && now - r->last_ms >= METRICS_INTERVAL_MS) {
                if (recompute(p, r->id, r))
                    return -1;
                r->dirty = false;
                r->last_ms = now;
                p->n_dirty--;
            }
            if (!r->dirty && now - r->last_ms >= 10 * METRICS_INTERVAL_MS) {
                *link = r->next;
                recent_free(p, r);
                p->n_recent--;
                continue;
            }
            link = &r->next;
        }
    }
    return 0;
}

typedef struct touched_conv {
    const char *id;
    bool final; /* the batch holds a message other than utterance for it */
    recent *r;  /* its entry, or NULL when the table is full */
} touched_conv;


/* store_pending_metrics callback: a conversation marked in the database is dirty here too. A
 * full table leaves it to the next start. */
static int mark_pending(void *ud, const char *id)
{
    pipeline *p = ud;
    recent *r = recent_get(p, id);
    if (r && !r->dirty) {
        r->dirty = true;
        p->n_dirty++;
    }
    return 0;
}

/* After a rollback (inside the next transaction): the marks that the rolled-back transaction
 * would have cleared are still in the database, so their conversations are dirty again. */
static int reload_pending(pipeline *p)
{
    if (!p->is_pending_reload)
        return 0;
    if (store_pending_metrics(p->st, mark_pending, p))
        return -1;
    p->is_pending_reload = false;
    return 0;
}

/* Lists the conversation of an item of the batch being applied (apply_batch, which starts a
 * new batch_no), for update_metrics. Each conversation once: its entry remembers the batch that
 * last listed it (a conversation without an entry, the table being full, may be listed, and
 * recomputed, more than once). Done as each item is applied, while it is in the cache. */
static int note_touched(pipeline *p, const work *w)
{
    if (!w->msg.conversation_id)
        return 0;
    bool final = w->msg.type != MSG_UTTERANCE;
    bool ended = w->msg.type == MSG_END || w->msg.type == MSG_CONVERSATION;
    recent *r = recent_get(p, w->msg.conversation_id);
    if (r && r->batch_no == p->batch_no) {
        r->is_final |= final;
        r->is_ended |= ended;
        return 0;
    }
    if (r) {
        r->batch_no = p->batch_no;
        r->is_final = final;
        r->is_ended = ended;
    }
    if (p->n_touched == p->cap_touched) {
        size_t cap = p->cap_touched ? p->cap_touched * 2 : 256;
        touched_conv *t = realloc(p->touched, cap * sizeof *t);
        if (!t)
            return -1;
        p->touched = t;
        p->cap_touched = cap;
    }
    p->touched[p->n_touched++] = (touched_conv){w->msg.conversation_id, final, r};
    return 0;
}

/* Recomputes the metrics of the conversations the batch touched (note_touched), once each (see
 * above). */
static int update_metrics(pipeline *p)
{
    if (reload_pending(p))
        return -1;
    size_t n = p->n_touched;
    uint64_t now = mono_ms();
    for (size_t i = 0; i < n; i++) {
        const char *id = p->touched[i].id;
        recent *r = p->touched[i].r;
        bool final = r ? r->is_final : p->touched[i].final;
        if (!final && r && now - r->last_ms < METRICS_INTERVAL_MS) {
            /* Marked in every batch that defers it, not only the first: the mark must be
             * committed with these utterances, whatever became of earlier transactions. */
            if (store_defer_metrics(p->st, id))
                return -1;
            if (!r->dirty) {
                r->dirty = true;
                p->n_dirty++;
            }
            continue;
        }
        if (recompute(p, id, r))
            return -1;
        if (r && r->is_ended) {
            cache_drop(p, r);
            r->turns_gen = 0;
        }
        if (r) {
            r->last_ms = now;
            if (r->dirty) {
                r->dirty = false;
                p->n_dirty--;
            }
        }
    }
    return p->n_dirty || p->n_recent > RECENT_MAX / 2 ? flush_due(p, now) : 0;
}

/* ---- room and checkpoints (writer thread) ---------------------------------------------- */

#define CHECKPOINT_IDLE_MS 1000
#define FULL_LOG_INTERVAL_NS (60ull * 1000000000ull)
#define MIB 1048576.0

/* The database's size and cap, for the metrics. */
static void publish_size(pipeline *p)
{
    int64_t bytes, max_bytes;
    if (store_size(p->st, &bytes, &max_bytes) == 0) {
        atomic_store(&p->db_bytes, bytes);
        atomic_store(&p->db_max_bytes, max_bytes);
    }
}

/* Sets a new max_db_mb (start, reload) on the writer's connection, outside a transaction. */
static void apply_max_db_mb(pipeline *p)
{
    int want = atomic_load(&p->max_db_mb);
    if (want == p->applied_max_db_mb)
        return;
    bool is_start = p->applied_max_db_mb < 0;
    p->applied_max_db_mb = want;
    if (store_set_max_db_mb(p->st, want)) {
        log_msg(LOG_ERROR, "writer", "cannot apply max_db_mb = %d: %s", want,
                store_errmsg(p->st));
        return;
    }
    publish_size(p);
    double held_mib = (double)atomic_load(&p->db_bytes) / MIB;
    double cap_mib = (double)atomic_load(&p->db_max_bytes) / MIB;
    if (want == 0) {
        if (!is_start)
            log_msg(LOG_INFO, "writer", "no database size cap (max_db_mb = 0); the database "
                    "holds %.1f MiB", held_mib);
    } else if (cap_mib > want) {
        log_msg(LOG_WARN, "writer", "max_db_mb = %d is below the database's size (%.1f MiB): "
                "nothing more is stored until it is raised", want, held_mib);
    } else {
        log_msg(LOG_INFO, "writer", "database size cap %d MiB (max_db_mb); the database holds "
                "%.1f MiB", want, held_mib);
    }
}

/* A batch failed for lack of room: says so at once, then once a minute while it lasts. */
static void note_full(pipeline *p, size_t rows)
{
    uint64_t now = uv_hrtime();
    p->n_full_attempts++;
    if (!p->full_since_ns) {
        p->full_since_ns = now;
        atomic_store(&p->store_full, true);
    } else if (now - p->full_logged_ns < FULL_LOG_INTERVAL_NS) {
        return;
    }
    p->full_logged_ns = now;
    publish_size(p);
    char when[96] = "store full";
    if (now > p->full_since_ns)
        snprintf(when, sizeof when, "store still full after %llu s and %llu attempts",
                 (unsigned long long)((now - p->full_since_ns) / 1000000000u),
                 (unsigned long long)p->n_full_attempts);
    char cap[64] = "no max_db_mb: the disk is full";
    if (atomic_load(&p->db_max_bytes))
        snprintf(cap, sizeof cap, "max_db_mb is %d", p->applied_max_db_mb);
    log_msg(LOG_WARN, "writer", "%s: a batch of %zu rows cannot be committed (%s); the database "
            "holds %.1f MiB, %s. Nothing is acknowledged until there is room (raise [store] "
            "max_db_mb and reload, or free disk space); retrying", when, rows, p->last_error,
            (double)atomic_load(&p->db_bytes) / MIB, cap);
}

static void note_room(pipeline *p)
{
    log_msg(LOG_INFO, "writer", "the store has room again: committed after %.1f s and %llu "
            "attempts", (double)(uv_hrtime() - p->full_since_ns) / 1e9,
            (unsigned long long)p->n_full_attempts);
    p->full_since_ns = 0;
    p->n_full_attempts = 0;
    atomic_store(&p->store_full, false);
}

/* Idle: copies the WAL into the database and truncates it (see the top of the file). A failure
 * other than a reader in the way is logged once per streak; it is tried again later. */
static void idle_checkpoint(pipeline *p)
{
    bool is_complete;
    if (store_checkpoint(p->st, &is_complete)) {
        if (!p->is_checkpoint_failing)
            log_msg(LOG_WARN, "writer", "idle checkpoint failed (%s); trying again while idle",
                    store_errmsg(p->st));
        p->is_checkpoint_failing = true;
        return;
    }
    p->is_checkpoint_failing = false;
    if (is_complete)
        p->is_checkpoint_due = false;
}

/* When the writer is idle: recompute the dirty conversations that are due, in a transaction of
 * their own. A failure leaves them dirty for the next try. */
static void flush_idle(pipeline *p, bool all)
{
    apply_max_db_mb(p);
    if (store_begin(p->st))
        return;
    uint64_t now = all ? UINT64_MAX / 2 : mono_ms();
    if (reload_pending(p) || flush_due(p, now) || store_commit(p->st)) {
        store_rollback(p->st);
        p->is_pending_reload = true;
        cache_invalidate(p);
    } else {
        p->is_checkpoint_due = true;
    }
}

/* Lists an item of the batch being applied that has alerts, for their routing after it. */
static int note_alerting(pipeline *p, work *w)
{
    if (p->n_alerting == p->cap_alerting) {
        size_t cap = p->cap_alerting ? p->cap_alerting * 2 : 64;
        work **v = realloc(p->alerting, cap * sizeof *v);
        if (!v)
            return -1;
        p->alerting = v;
        p->cap_alerting = cap;
    }
    p->alerting[p->n_alerting++] = w;
    return 0;
}

/* A batch's transaction in three steps, so that the writer stores each item as it takes it
 * (writer_main) instead of waiting for the whole batch first. On failure each step rolls the
 * transaction back (batch_fail) and returns -1. */
#define FLUSH_ROWS 256

static int batch_fail(pipeline *p)
{
    /* Judged before the rollback, which would replace SQLite's error code. */
    p->last_transient = store_error_is_transient(p->st);
    p->last_full = store_error_is_full(p->st);
    snprintf(p->last_error, sizeof p->last_error, "%s", store_errmsg(p->st));
    store_rollback(p->st);
    p->is_pending_reload = true;
    cache_invalidate(p); /* turns it stored are gone again */
    return -1;
}

static int batch_open(pipeline *p)
{
    if (store_begin(p->st))
        return batch_fail(p);
    p->n_pending = 0;
    p->n_touched = 0;
    p->n_alerting = 0;
    p->batch_no++;
    return 0;
}

static int batch_add(pipeline *p, work *w)
{
    if (apply_work(p, w) || note_touched(p, w) || (w->n_alerts && note_alerting(p, w)))
        return batch_fail(p);
    /* Stored as they come rather than all at batch_close: the writer's work overlaps the
     * scoring of the rest of the batch. */
    if (p->n_pending >= FLUSH_ROWS && flush_utterances(p))
        return batch_fail(p);
    return 0;
}

static int batch_close(pipeline *p)
{
    if (p->n_pending && flush_utterances(p))
        return batch_fail(p);
    if (update_metrics(p))
        return batch_fail(p);
    /* Subscribers filter alerts by queue and agent, which the conversation row knows. */
    for (size_t k = 0; k < p->n_alerting; k++) {
        work *w = p->alerting[k];
        for (size_t i = 0; i < w->n_alerts; i++) {
            alert *a = &w->alerts[i];
            free(a->queue);
            free(a->agent_id);
            if (store_conversation_routing(p->st, a->conversation_id, &a->queue, &a->agent_id))
                return batch_fail(p);
        }
    }
    if (store_commit(p->st))
        return batch_fail(p);
    return 0;
}

static int apply_batch(pipeline *p, work *batch)
{
    if (batch_open(p))
        return -1;
    for (work *w = batch; w; w = w->next) {
        if (batch_add(p, w))
            return -1;
    }
    return batch_close(p);
}

static void deliver(pipeline *p, work *batch)
{
    pthread_mutex_lock(&p->done_mu);
    for (work *w = batch; w; w = w->next) {
        if (p->n_done == p->cap_done) {
            size_t n = p->cap_done ? p->cap_done * 2 : 1024;
            completion *c = realloc(p->done, n * sizeof *c);
            if (!c) {
                /* Without room the ack is late, never wrong: retry on the next batch. */
                break;
            }
            p->done = c;
            p->cap_done = n;
        }
        /* An abandoned line's utterances were not stored: no alert speaks for them. */
        if (w->n_alerts && !w->abandoned && p->n_alerts + w->n_alerts <= p->cap_alerts + 4096) {
            size_t need = p->n_alerts + w->n_alerts;
            if (need > p->cap_alerts) {
                size_t cap = p->cap_alerts ? p->cap_alerts : 64;
                while (cap < need)
                    cap *= 2;
                alert *a = realloc(p->alerts, cap * sizeof *a);
                if (a) {
                    p->alerts = a;
                    p->cap_alerts = cap;
                }
            }
            if (need <= p->cap_alerts) {
                memcpy(p->alerts + p->n_alerts, w->alerts, w->n_alerts * sizeof *w->alerts);
                p->n_alerts = need;
                free(w->alerts);
                w->alerts = NULL;
                w->n_alerts = 0;
            }
        }
        p->done[p->n_done++] = (completion){w->conn_id, w->line_no, w->bytes, w->read_ns,
                                            w->reply, w->failed, w->abandoned};
        w->reply = NULL;
    }
    pthread_mutex_unlock(&p->done_mu);
    uv_async_send(&p->async);
}

static void deadline_after(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void writer_beat(pipeline *p, bool idle)
{
    atomic_store(&p->writer_beat_ns, uv_hrtime());
    atomic_store(&p->writer_idle, idle);
}

/* queue_pop for the writer: waiting on an empty queue counts as healthy for the watchdog. It
 * takes every item queued at once, under one lock, and hands them out one by one. */
static work *writer_pop(pipeline *p, const struct timespec *deadline)
{
    work *w = p->taken;
    if (!w) {
        writer_beat(p, true);
        w = queue_take_all(&p->wq, deadline);
        writer_beat(p, false);
        if (!w)
            return NULL;
    }
    p->taken = w->next;
    w->next = NULL;
    return w;
}

/* Bookkeeping of one commit attempt that took busy_ns of the writer's time: the heartbeat, the
 * failure streak, the durations, the database's size. */
static void attempt_done(pipeline *p, int rc, uint64_t busy_ns)
{
    if (rc) {
        uint64_t zero = 0;
        atomic_compare_exchange_strong(&p->failing_since_ns, &zero, uv_hrtime() - busy_ns);
        return;
    }
    histogram_observe_us(&p->commit_latency, busy_ns / 1000);
    atomic_store(&p->failing_since_ns, 0);
    p->is_checkpoint_due = true;
    publish_size(p);
}

/* The start of a commit attempt: the cap in effect applied, the heartbeat; returns its time. */
static uint64_t attempt_start(pipeline *p)
{
    apply_max_db_mb(p);
    uint64_t t0 = uv_hrtime();
    atomic_store(&p->writer_beat_ns, t0);
    return t0;
}

/* One commit attempt of a whole batch: apply_batch, timed. */
static int commit_batch(pipeline *p, work *batch)
{
    uint64_t t0 = attempt_start(p);
    int rc = apply_batch(p, batch);
    attempt_done(p, rc, uv_hrtime() - t0);
    return rc;
}

/* Waits ms milliseconds, or less when pipeline_abandon is called meanwhile. The writer's
 * queue lock and condition serve: spurious wakeups (a push) only make it look again. */
static void writer_sleep(pipeline *p, int ms)
{
    struct timespec until;
    deadline_after(&until, ms);
    pthread_mutex_lock(&p->wq.mu);
    while (!atomic_load(&p->abandon) &&
           pthread_cond_timedwait(&p->wq.cv, &p->wq.mu, &until) == 0)
        ;
    pthread_mutex_unlock(&p->wq.mu);
}

/* Commits a batch, retrying with backoff while the failure may pass by itself (busy, disk
 * full, I/O): nothing is acknowledged meanwhile and the loop thread's bound turns the wait into
 * backpressure. Returns 0 once committed, -1 at once for a failure that would recur with the
 * same data, and 1 when the pipeline was abandoned before an attempt succeeded (no attempt is
 * made after pipeline_abandon). first is the outcome of the attempt writer_main made as it
 * gathered the batch (0 committed, -1 failed), or 1 when none was made. */
static int commit_with_retry(pipeline *p, work *batch, size_t rows, int first)
{
    int backoff_ms = 50;
    for (int rc = first;; rc = 1) {
        if (rc > 0) {
            if (atomic_load(&p->abandon))
                return 1;
            rc = commit_batch(p, batch);
        }
        if (!rc)
            break;
        atomic_fetch_add_explicit(&p->commit_failures, 1, memory_order_relaxed);
        if (!p->last_transient)
            return -1;
        if (p->last_full)
            note_full(p, rows);
        else
            log_msg(LOG_WARN, "writer", "batch of %zu rows not committed (%s); retrying in %d ms",
                    rows, p->last_error, backoff_ms);
        writer_sleep(p, backoff_ms);
        if (backoff_ms < 2000)
            backoff_ms *= 2;
    }
    if (p->full_since_ns)
        note_room(p);
    return 0;
}

/* Completes w without storing it (pipeline_abandon): it is not acknowledged. The first one
 * says so in the log, with the failure that kept it from being stored. */
static void abandon_work(pipeline *p, work *w)
{
    if (!p->n_abandoned) {
        if (atomic_load(&p->failing_since_ns))
            log_msg(LOG_WARN, "writer", "shutting down: no more commit attempts; the lines not "
                    "yet stored are given up (the last attempt failed: %s)", p->last_error);
        else
            log_msg(LOG_WARN, "writer", "shutting down: no more commit attempts; the lines not "
                    "yet stored are given up");
    }
    w->abandoned = true;
    p->n_abandoned++;
}

static void set_reply(work *w, json_t *obj);
static json_t *error_reply(const work *w, const char *code, const char *why);

/* A batch failed for a reason that will recur: replay it one item per transaction, so that
 * every other item is stored and only the culprit is answered with an `internal` error. */
static void isolate_failure(pipeline *p, work *batch)
{
    log_msg(LOG_ERROR, "writer", "a batch cannot be committed (%s); storing its lines one by one",
            p->last_error);
    work *w = batch;
    while (w) {
        work *next = w->next;
        w->next = NULL;
        int rc = commit_with_retry(p, w, work_rows(w), 1);
        if (rc > 0) {
            abandon_work(p, w);
        } else if (rc < 0) {
            w->failed = true;
            /* Not stored: no alert speaks for it. */
            for (size_t i = 0; i < w->n_alerts; i++)
                alert_fini(&w->alerts[i]);
            w->n_alerts = 0;
            log_msg(LOG_ERROR, "writer", "line %llu of a connection cannot be stored: %s",
                    (unsigned long long)w->line_no, p->last_error);
            /* The reply carries the line's id like every error; without memory the loop
             * thread still answers, without it. */
            set_reply(w, error_reply(w, "internal", "the server could not store this line; it "
                                     "was not stored (see the server log)"));
        }
        w->next = next;
        w = next;
    }
}

/* ---- rescoring (writer thread) --------------------------------------------------------- */

/* Completes one line outside a batch: its completion (and reply) goes to the loop thread. */
static void finish_one(pipeline *p, work *w)
{
    w->next = NULL;
    deliver(p, w);
    work_free(w);
}

/* Sets w's reply to obj (taken) plus the request's id. Without memory the line still
 * completes: the ack alone tells the client it is done. */
static void set_reply(work *w, json_t *obj)
{
    if (!obj)
        return;
    if (w->msg.id) {
        json_t *id = json_loads(w->msg.id, JSON_DECODE_ANY, NULL);
        if (id)
            json_object_set_new(obj, "id", id);
    }
    w->reply = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(obj);
}

static json_t *error_reply(const work *w, const char *code, const char *why)
{
    return json_pack("{s:s,s:I,s:s,s:s}", "type", "error", "line", (json_int_t)w->line_no,
                     "code", code, "message", why);
}

/* Ends the job: a "rescored" reply when code is NULL, else an error with code and why. */
static void end_rescore(pipeline *p, const char *code, const char *why)
{
    rescore_job *job = p->job;
    work *w = job->req;
    if (code) {
        set_reply(w, error_reply(w, code, why));
    } else {
        log_msg(LOG_INFO, "writer", "rescore done: %llu utterances in %llu conversations "
                "rescored with model %s, %llu without their original text skipped",
                (unsigned long long)job->counts.utterances,
                (unsigned long long)job->counts.conversations, job->model_id,
                (unsigned long long)job->counts.skipped);
        set_reply(w, json_pack("{s:s,s:I,s:s,s:I,s:I,s:I}", "type", "rescored", "line",
                               (json_int_t)w->line_no, "model_id", job->model_id,
                               "utterances", (json_int_t)job->counts.utterances,
                               "conversations", (json_int_t)job->counts.conversations,
                               "skipped", (json_int_t)job->counts.skipped));
    }
    finish_one(p, w);
    rescore_cursor_fini(&job->cur);
    at_scratch_free(job->scratch);
    free(job);
    p->job = NULL;
}

/* Takes a rescore request: it becomes the job, or is answered at once. */
static void start_rescore(pipeline *p, work *w)
{
    if (p->job) {
        set_reply(w, error_reply(w, "overloaded", "a rescore is already running; its result "
                                 "covers this request's utterances too, or send it again "
                                 "after it is done"));
        finish_one(p, w);
        return;
    }
    rescore_job *job = calloc(1, sizeof *job);
    if (!job || at_scratch_new(&job->scratch)) {
        free(job);
        set_reply(w, error_reply(w, "internal", "the server ran out of memory"));
        finish_one(p, w);
        return;
    }
    job->req = w;
    job->cur.since_ms = w->msg.since; /* WIRE_ABSENT is AT_NULL_INT: every conversation */
    p->job = job;
    log_msg(LOG_INFO, "writer", "rescore requested (line %llu)", (unsigned long long)w->line_no);
}

/* Runs one slice of the job in its own transaction, and ends the job when it is complete, has
 * failed or was asked to stop. */
static void rescore_step(pipeline *p)
{
    rescore_job *job = p->job;
    if (atomic_load(&p->stop_rescore)) {
        char why[256];
        snprintf(why, sizeof why, "the server is shutting down: the rescore stopped after %llu "
                 "utterances; send it again after the restart to resume where it stopped",
                 (unsigned long long)job->counts.utterances);
        log_msg(LOG_INFO, "writer", "rescore stopped for shutdown after %llu utterances",
                (unsigned long long)job->counts.utterances);
        end_rescore(p, "shutting_down", why);
        return;
    }
    const at_model *m;
    do {
        m = atomic_load(&p->model);
        atomic_store(&p->writer_hazard, m);
    } while (m != atomic_load(&p->model));
    if (strcmp(job->model_id, at_model_id(m)) != 0) {
        /* A new model: every row must be looked at again, and the counts describe its pass. */
        if (job->model_id[0])
            log_msg(LOG_INFO, "writer", "rescore: model %s replaced %s; starting over",
                    at_model_id(m), job->model_id);
        rescore_cursor_restart(&job->cur);
        memset(&job->counts, 0, sizeof job->counts);
        snprintf(job->model_id, sizeof job->model_id, "%s", at_model_id(m));
    }
    writer_beat(p, false);
    apply_max_db_mb(p);
    int rc = -1;
    if (store_begin(p->st) == 0) {
        rc = store_rescore(p->st, m, job->scratch, &job->cur,
                           (size_t)atomic_load(&p->batch_rows), p->silence_threshold_ms,
                           &job->counts);
        if (rc >= 0 && store_commit(p->st))
            rc = -1;
        if (rc < 0)
            store_rollback(p->st);
        else
            p->is_checkpoint_due = true;
    }
    atomic_store(&p->writer_hazard, NULL);
    cache_invalidate(p); /* the slice rewrote stored turns' scores */
    if (rc < 0) {
        char why[640];
        snprintf(why, sizeof why, "the rescore failed: %s; what it committed stays, and sending "
                 "it again resumes there", store_errmsg(p->st));
        log_msg(LOG_ERROR, "writer", "%s", why);
        end_rescore(p, "internal", why);
    } else if (rc == 0) {
        end_rescore(p, NULL, NULL);
    }
}

/* The next item for a batch, waiting until deadline (NULL = forever). Rescore requests are
 * taken here, and while a job runs an empty queue is its turn: a slice runs, and the queue is
 * looked at again. Idle, the writer recomputes dirty conversations, then checkpoints. */
static work *writer_next(pipeline *p, const struct timespec *deadline)
{
    for (;;) {
        work *w;
        bool has_dirty = p->n_dirty || p->is_pending_reload;
        if ((has_dirty || p->is_checkpoint_due) && !deadline && !p->job) {
            /* Idle with dirty conversations or a WAL to checkpoint: wake in time for them. */
            struct timespec due;
            deadline_after(&due, has_dirty ? METRICS_INTERVAL_MS / 4 : CHECKPOINT_IDLE_MS);
            w = writer_pop(p, &due);
            if (!w) {
                pthread_mutex_lock(&p->wq.mu);
                bool closed = p->wq.closed && !p->wq.head;
                pthread_mutex_unlock(&p->wq.mu);
                /* At shutdown every dirty conversation is recomputed, due or not; closing the
                 * store checkpoints. Once the drain was given up, no transaction is tried: the
                 * marks of the dirty ones stay for the next start. */
                bool is_abandoned = atomic_load(&p->abandon);
                if (has_dirty && !is_abandoned)
                    flush_idle(p, closed);
                else if (!closed && !is_abandoned)
                    idle_checkpoint(p);
                if (closed)
                    return NULL;
                continue;
            }
        } else if (p->job && !deadline) {
            struct timespec now;
            deadline_after(&now, 0);
            w = writer_pop(p, &now);
            if (!w) {
                rescore_step(p);
                continue;
            }
        } else {
            w = writer_pop(p, deadline);
        }
        if (w && w->msg.type == MSG_RESCORE) {
            start_rescore(p, w);
            continue;
        }
        return w;
    }
}

typedef struct id_list {
    char **ids; /* owned */
    size_t n, cap;
} id_list;

/* store_pending_metrics callback: collects the ids. */
static int collect_pending(void *ud, const char *id)
{
    id_list *v = ud;
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 256;
        char **ids = realloc(v->ids, cap * sizeof *ids);
        if (!ids)
            return -1;
        v->ids = ids;
        v->cap = cap;
    }
    if (!(v->ids[v->n] = strdup(id)))
        return -1;
    v->n++;
    return 0;
}

/* At start, before the first batch: recomputes the conversations whose marks a previous run
 * left in pending_metrics (it was killed, or gave up at its drain deadline), in slices of
 * batch_rows conversations, each its own transaction. What cannot be done now (the store is
 * full, say) is read again into the in-memory list with the next transaction, and left to the
 * writer's usual flushes. */
static void recover_pending(pipeline *p)
{
    id_list v = {NULL, 0, 0};
    if (store_pending_metrics(p->st, collect_pending, &v)) {
        log_msg(LOG_WARN, "writer", "cannot read the conversations whose metrics are pending: "
                "%s; recomputing them when possible", store_errmsg(p->st));
        p->is_pending_reload = true;
        goto out;
    }
    size_t done_n = 0, slice = (size_t)atomic_load(&p->batch_rows);
    while (done_n < v.n) {
        size_t end = v.n - done_n < slice ? v.n : done_n + slice;
        writer_beat(p, false);
        int rc = store_begin(p->st);
        for (size_t i = done_n; rc == 0 && i < end; i++)
            rc = store_update_metrics(p->st, v.ids[i], p->silence_threshold_ms);
        if (rc == 0)
            rc = store_commit(p->st);
        if (rc) {
            log_msg(LOG_WARN, "writer", "cannot recompute the pending metrics of %zu "
                    "conversations now (%s); trying again later", v.n - done_n,
                    store_errmsg(p->st));
            store_rollback(p->st);
            p->is_pending_reload = true; /* read again with the next transaction */
            break;
        }
        p->is_checkpoint_due = true;
        done_n = end;
    }
    if (done_n)
        log_msg(LOG_INFO, "writer", "recomputed the metrics of %zu conversations that the "
                "previous run had deferred and not recomputed (it did not stop cleanly)",
                done_n);
out:
    for (size_t i = 0; i < v.n; i++)
        free(v.ids[i]);
    free(v.ids);
}

static void *writer_main(void *arg)
{
    pipeline *p = arg;
    work *first;
    pthread_setname_np(pthread_self(), "writer");
    apply_max_db_mb(p);
    recover_pending(p);
    publish_size(p);
    while ((first = writer_next(p, NULL))) {
        /* Group commit: the batch closes after batch_rows rows or batch_ms milliseconds. Each
         * item is stored as it is taken, so the writer works while the workers score the rest
         * of the batch; after a failure the rest is only gathered, and commit_with_retry
         * applies the whole batch again. */
        work *batch = first, *tail = first;
        first->next = NULL;
        size_t rows = work_rows(first);
        int batch_rows = atomic_load(&p->batch_rows);
        struct timespec deadline;
        deadline_after(&deadline, atomic_load(&p->batch_ms));
        uint64_t t0 = attempt_start(p);
        int attempt = batch_open(p) || batch_add(p, first) ? -1 : 0;
        uint64_t busy_ns = uv_hrtime() - t0;
        while (rows < (size_t)batch_rows) {
            work *w = writer_next(p, &deadline);
            if (!w)
                break;
            w->next = NULL;
            tail->next = w;
            tail = w;
            rows += work_rows(w);
            if (!attempt) {
                uint64_t t = uv_hrtime();
                attempt = batch_add(p, w);
                busy_ns += uv_hrtime() - t;
            }
        }
        if (!attempt) {
            uint64_t t = uv_hrtime();
            attempt = batch_close(p);
            busy_ns += uv_hrtime() - t;
        }
        attempt_done(p, attempt, busy_ns);
        int rc = commit_with_retry(p, batch, rows, attempt);
        if (rc < 0)
            isolate_failure(p, batch);
        if (rc > 0) {
            for (work *w = batch; w; w = w->next)
                abandon_work(p, w);
        } else {
            atomic_fetch_add_explicit(&p->rows_committed, rows, memory_order_relaxed);
            atomic_fetch_add_explicit(&p->batches_committed, 1, memory_order_relaxed);
        }
        deliver(p, batch);
        while (batch) {
            work *next = batch->next;
            work_free(batch);
            batch = next;
        }
        /* Under steady ingest the queue is never empty: the job gets a slice per batch. */
        if (p->job)
            rescore_step(p);
    }
    return NULL;
}

/* ---- loop side ------------------------------------------------------------------------- */

/* Frees retired models that no worker has published. */
static void reap_models(pipeline *p)
{
    size_t kept = 0;
    for (size_t i = 0; i < p->n_retired; i++) {
        bool busy = atomic_load(&p->writer_hazard) == p->retired[i];
        for (int j = 0; j < p->n_workers && !busy; j++)
            busy = atomic_load(&p->workers[j].hazard) == p->retired[i];
        if (busy)
            p->retired[kept++] = p->retired[i];
        else
            at_model_free(p->retired[i]);
    }
    p->n_retired = kept;
}

int pipeline_set_model(pipeline *p, at_model *model)
{
    reap_models(p);
    if (p->n_retired == MAX_RETIRED)
        return -1;
    at_model *old = (at_model *)atomic_exchange(&p->model, model);
    p->retired[p->n_retired++] = old;
    reap_models(p);
    return 0;
}

const at_model *pipeline_model(pipeline *p)
{
    return atomic_load(&p->model);
}

static void on_async(uv_async_t *h)
{
    pipeline *p = h->data;
    if (p->n_retired)
        reap_models(p);
    pthread_mutex_lock(&p->done_mu);
    completion *done = p->done;
    size_t n = p->n_done;
    p->done = NULL;
    p->n_done = p->cap_done = 0;
    alert *alerts = p->alerts;
    size_t n_alerts = p->n_alerts;
    p->alerts = NULL;
    p->n_alerts = p->cap_alerts = 0;
    pthread_mutex_unlock(&p->done_mu);
    if (n)
        p->done_cb(p->done_ud, done, n);
    for (size_t i = 0; i < n; i++)
        free(done[i].reply);
    free(done);
    if (n_alerts && p->alert_cb)
        p->alert_cb(p->alert_ud, alerts, n_alerts);
    for (size_t i = 0; i < n_alerts; i++)
        alert_fini(&alerts[i]);
    free(alerts);
}

void pipeline_set_alert_cb(pipeline *p, pipeline_alert_cb cb, void *ud)
{
    p->alert_cb = cb;
    p->alert_ud = ud;
}

void pipeline_set_alert_rules(pipeline *p, double compound_floor, int consecutive_turns)
{
    atomic_store(&p->alert_floor, compound_floor);
    atomic_store(&p->alert_turns, consecutive_turns);
}

int pipeline_new(const config *cfg, at_model *model, store *st, uv_loop_t *loop,
                 pipeline_done_cb done, void *ud, pipeline **out)
{
    pipeline *p = calloc(1, sizeof *p);
    if (!p)
        return -1;
    atomic_store(&p->model, model);
    p->st = st;
    p->store_text = cfg->store_text;
    p->silence_threshold_ms = cfg->silence_threshold_ms;
    p->done_cb = done;
    p->done_ud = ud;
    atomic_store(&p->batch_rows, cfg->batch_rows);
    atomic_store(&p->batch_ms, cfg->batch_ms);
    atomic_store(&p->max_db_mb, cfg->max_db_mb);
    p->applied_max_db_mb = -1;
    p->turns_gen = 1;
    atomic_store(&p->alert_floor, cfg->alert_compound_floor);
    atomic_store(&p->alert_turns, cfg->alert_consecutive_turns);
    atomic_store(&p->writer_beat_ns, uv_hrtime());
    pthread_mutex_init(&p->done_mu, NULL);
    queue_init(&p->wq);
    if (uv_async_init(loop, &p->async, on_async)) {
        free(p);
        return -1;
    }
    p->async.data = p;
    p->n_workers = cfg->workers;
    p->workers = calloc((size_t)p->n_workers, sizeof *p->workers);
    if (!p->workers)
        return -1;
    for (int i = 0; i < p->n_workers; i++) {
        worker *wk = &p->workers[i];
        wk->p = p;
        queue_init(&wk->q);
        wk->spikes = calloc(SPIKE_SLOTS, sizeof *wk->spikes);
        if (!wk->spikes || at_scratch_new(&wk->scratch) ||
            pthread_create(&wk->thread, NULL, worker_main, wk)) {
            log_msg(LOG_ERROR, "pipeline", "cannot start scoring worker %d", i);
            return -1;
        }
    }
    if (pthread_create(&p->writer, NULL, writer_main, p)) {
        log_msg(LOG_ERROR, "pipeline", "cannot start the writer thread");
        return -1;
    }
    *out = p;
    return 0;
}

void pipeline_submit(pipeline *p, work *w)
{
    /* Control messages with no conversation go straight to the writer. */
    if (!w->msg.conversation_id) {
        queue_push(&p->wq, w);
        return;
    }
    /* A conversation's items all go to one worker, which scores them in order. */
    uint64_t h = 0;
    if (p->n_workers > 1) {
        h = 0xcbf29ce484222325ULL;
        for (const char *c = w->msg.conversation_id; *c; c++) {
            h ^= (unsigned char)*c;
            h *= 0x100000001b3ULL;
        }
    }
    /* Held until pipeline_flush: a lock and a wake-up per line were a tenth of the loop
     * thread's time when the worker keeps up and so sleeps between lines. */
    chain *ch = &p->workers[h % (uint64_t)p->n_workers].submitted;
    w->next = NULL;
    if (ch->tail)
        ch->tail->next = w;
    else
        ch->head = w;
    ch->tail = w;
}

void pipeline_flush(pipeline *p)
{
    for (int i = 0; i < p->n_workers; i++) {
        chain *ch = &p->workers[i].submitted;
        if (!ch->head)
            continue;
        queue_push_chain(&p->workers[i].q, ch->head, ch->tail);
        ch->head = ch->tail = NULL;
    }
}

void pipeline_stop_rescore(pipeline *p)
{
    atomic_store(&p->stop_rescore, true);
}

void pipeline_abandon(pipeline *p)
{
    /* Under the queue lock, so that a writer about to wait in writer_sleep sees the flag or
     * gets the wakeup. */
    pthread_mutex_lock(&p->wq.mu);
    atomic_store(&p->abandon, true);
    pthread_cond_broadcast(&p->wq.cv);
    pthread_mutex_unlock(&p->wq.mu);
}

void pipeline_set_batch(pipeline *p, int batch_rows, int batch_ms)
{
    atomic_store(&p->batch_rows, batch_rows);
    atomic_store(&p->batch_ms, batch_ms);
}

void pipeline_set_max_db_mb(pipeline *p, int max_db_mb)
{
    atomic_store(&p->max_db_mb, max_db_mb);
}

void pipeline_get_stats(pipeline *p, pipeline_stats *out)
{
    out->utterances_scored = atomic_load_explicit(&p->utterances_scored, memory_order_relaxed);
    out->rows_committed = atomic_load_explicit(&p->rows_committed, memory_order_relaxed);
    out->batches_committed = atomic_load_explicit(&p->batches_committed, memory_order_relaxed);
    out->commit_failures = atomic_load_explicit(&p->commit_failures, memory_order_relaxed);
    out->duplicates = atomic_load_explicit(&p->duplicates, memory_order_relaxed);
    out->pattern_limit_hits = atomic_load_explicit(&p->pattern_limit_hits, memory_order_relaxed);
    out->writer_beat_ns = atomic_load(&p->writer_beat_ns);
    out->writer_idle = atomic_load(&p->writer_idle);
    out->failing_since_ns = atomic_load(&p->failing_since_ns);
    out->store_full = atomic_load(&p->store_full);
    out->db_bytes = atomic_load(&p->db_bytes);
    out->db_max_bytes = atomic_load(&p->db_max_bytes);
}

const histogram *pipeline_commit_latency(pipeline *p)
{
    return &p->commit_latency;
}

static void on_async_closed(uv_handle_t *h)
{
    pipeline *p = h->data;
    for (size_t i = 0; i < p->n_done; i++)
        free(p->done[i].reply);
    free(p->done);
    pthread_mutex_destroy(&p->done_mu);
    free(p);
}

void pipeline_free(pipeline *p)
{
    if (!p)
        return;
    /* Workers first, so that everything they hold reaches the writer; then the writer. */
    pipeline_flush(p);
    for (int i = 0; i < p->n_workers; i++) {
        queue_close(&p->workers[i].q);
        pthread_join(p->workers[i].thread, NULL);
        queue_fini(&p->workers[i].q);
        at_scratch_free(p->workers[i].scratch);
        free(p->workers[i].spikes);
    }
    free(p->workers);
    queue_close(&p->wq);
    pthread_join(p->writer, NULL);
    queue_fini(&p->wq);
    free(p->touched);
    free(p->alerting);
    free(p->pending);
    free(p->pending_new);
    recent_free_all(p);
    for (size_t i = 0; i < p->n_alerts; i++)
        alert_fini(&p->alerts[i]);
    free(p->alerts);
    p->alerts = NULL;
    p->n_alerts = 0;
    store_close(p->st);
    for (size_t i = 0; i < p->n_retired; i++)
        at_model_free(p->retired[i]);
    at_model_free((at_model *)atomic_load(&p->model));
    /* Completions delivered after the loop stopped are moot: the connections are gone. */
    uv_close((uv_handle_t *)&p->async, on_async_closed);
}
