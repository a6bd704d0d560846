/*
 * scoredb.c: what attuned's writer and `attune rescore` both do to scored data in SQLite: store
 * an utterance's markers, recompute a conversation's section-2 metrics from its stored turns
 * (ANALYTICS.md §2, through at_conversation_metrics), and rescore stored utterances with a
 * model. Keeping these in one place means a rescored conversation gets exactly the metrics the
 * daemon would have stored had the new model scored it in the first place.
 *
 * Invariants:
 *   - A scoredb borrows its connection. Statements are prepared once (in scoredb_new; a
 *     multi-row insert when first used), reset (and their bindings cleared, except for the
 *     multi-row inserts, every use of which binds every parameter) after each use, and
 *     finalized in scoredb_free.
 *   - Nothing here begins or ends a transaction: each call runs inside the caller's, so an
 *     utterance, its markers and its conversation's metrics always change together.
 *   - Nothing here logs, and no error message carries transcript text.
 */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "common.h"

enum stmt_id {
    ST_MARKER_INSERT,
    ST_MARKERS_DELETE,
    ST_TURNS_SELECT,
    ST_FACTS_SELECT,
    ST_METRICS_UPDATE,
    ST_METRICS_OUTCOME_UPDATE,
    ST_RESCORE_SELECT,
    ST_RESCORE_UPDATE,
    N_STMTS
};

/* The metric columns, ?2 ... ?35, of the row of conversation ?1. */
#define METRICS_SET                                                                            \
    "UPDATE conversations SET turns = ?2, agent_turns = ?3, customer_turns = ?4,"              \
    " duration_ms = ?5, first_response_ms = ?6, avg_response_ms = ?7, max_response_ms = ?8,"   \
    " customer_sentiment_q1 = ?9, customer_sentiment_q2 = ?10, customer_sentiment_q3 = ?11,"   \
    " customer_sentiment_q4 = ?12, customer_sentiment_start = ?13,"                             \
    " customer_sentiment_end = ?14, customer_sentiment_min = ?15,"                              \
    " customer_sentiment_mean = ?16, sentiment_trend = ?17, empathy_opportunities = ?18,"       \
    " empathy_responses = ?19, empathy_response_rate = ?20,"                                    \
    " solution_before_acknowledgement = ?21, empathy_score = ?22, frustration_peak = ?23,"     \
    " frustration_end = ?24, recovery = ?25, escalation_requested = ?26, churn_threat = ?27,"   \
    " legal_threat = ?28, abuse = ?29, interruptions_agent = ?30,"                              \
    " interruptions_customer = ?31, talk_ratio_agent = ?32, silence_ms = ?33,"                  \
    " resolution_ms = ?34, escalated = ?35"

static const char *const stmt_sql[N_STMTS] = {
    [ST_MARKER_INSERT] =
        "INSERT INTO markers (conversation_id, seq, ordinal, family, category, pattern,"
        " start_byte, end_byte) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [ST_MARKERS_DELETE] = "DELETE FROM markers WHERE conversation_id = ?1 AND seq = ?2",
    [ST_TURNS_SELECT] =
        "SELECT seq, speaker, ts, start_ms, end_ms, compound, frustration_score, category_mask,"
        " solution_first FROM utterances WHERE conversation_id = ?1",
    [ST_FACTS_SELECT] =
        "SELECT started_at, ended_at, resolved_at, resolved, escalated, transferred, csat, nps"
        " FROM conversations WHERE conversation_id = ?1",
    [ST_METRICS_UPDATE] = METRICS_SET " WHERE conversation_id = ?1",
    /* The same, with a held-back outcome (scoredb_outcome): its known fields replace the stored
     * ones exactly as attuned's outcome UPDATE does (escalated is among the metrics). */
    [ST_METRICS_OUTCOME_UPDATE] =
        METRICS_SET ", ended_at = COALESCE(?36, ended_at), resolved = COALESCE(?37, resolved),"
        " resolved_at = COALESCE(?38, resolved_at), csat = COALESCE(?39, csat),"
        " nps = COALESCE(?40, nps), transferred = COALESCE(?41, transferred),"
        " ended = MAX(ended, ?42), updated_at = ?43 WHERE conversation_id = ?1",
    /* Walks the primary key from the cursor, so each slice costs only its own rows however many
     * were visited before. A conversation's start decides whether `since` takes it in; one whose
     * start was never sent counts from when attuned first stored it. */
    [ST_RESCORE_SELECT] =
        "SELECT u.conversation_id, u.seq, u.speaker, u.text, u.redacted FROM utterances u"
        " JOIN conversations c ON c.conversation_id = u.conversation_id"
        " WHERE (u.conversation_id, u.seq) > (?1, ?2) AND u.model_id IS NOT ?3"
        " AND (?4 IS NULL OR COALESCE(c.started_at, c.created_at) >= ?4)"
        " ORDER BY u.conversation_id, u.seq LIMIT ?5",
    [ST_RESCORE_UPDATE] =
        "UPDATE utterances SET neg = ?3, neu = ?4, pos = ?5, compound = ?6,"
        " frustration_score = ?7, category_mask = ?8, solution_first = ?9, model_id = ?10"
        " WHERE conversation_id = ?1 AND seq = ?2",
};

/* Marker rows go up to MARKER_ROWS to a statement (scoredb_put_marker_rows): SQLite's work per
 * statement is paid once for them all. */
#define MARKER_ROWS 16
#define MARKER_PARAMS 8

struct scoredb {
    sqlite3 *db;
    sqlite3_stmt *stmt[N_STMTS];
    sqlite3_stmt *marker_multi[MARKER_ROWS + 1]; /* [k]: a k-row insert, prepared when first used */
    char errmsg[512];
};

static int fail_sql(scoredb *sdb, const char *what)
{
    snprintf(sdb->errmsg, sizeof sdb->errmsg, "%s: %s", what, sqlite3_errmsg(sdb->db));
    return -1;
}

static int fail_with(scoredb *sdb, const char *what)
{
    snprintf(sdb->errmsg, sizeof sdb->errmsg, "%s", what);
    return -1;
}

static void done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

static int run(scoredb *sdb, enum stmt_id id, const char *what)
{
    sqlite3_stmt *st = sdb->stmt[id];
    int rc = sqlite3_step(st);
    int ret = rc == SQLITE_DONE ? 0 : fail_sql(sdb, what);
    done(st);
    return ret;
}

int scoredb_new(sqlite3 *db, scoredb **out, char *err, size_t err_len)
{
    *out = NULL;
    scoredb *sdb = calloc(1, sizeof *sdb);
    if (!sdb) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    sdb->db = db;
    for (int i = 0; i < N_STMTS; i++) {
        int rc = sqlite3_prepare_v3(db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                                    &sdb->stmt[i], NULL);
        if (rc != SQLITE_OK) {
            snprintf(err, err_len, "cannot prepare scoring statement %d: %s", i,
                     sqlite3_errmsg(db));
            scoredb_free(sdb);
            return -1;
        }
    }
    *out = sdb;
    return 0;
}

void scoredb_free(scoredb *sdb)
{
    if (!sdb)
        return;
    for (int i = 0; i < N_STMTS; i++)
        sqlite3_finalize(sdb->stmt[i]);
    for (int k = 0; k <= MARKER_ROWS; k++)
        sqlite3_finalize(sdb->marker_multi[k]);
    free(sdb);
}

const char *scoredb_errmsg(const scoredb *sdb)
{
    return sdb->errmsg[0] ? sdb->errmsg : sqlite3_errmsg(sdb->db);
}

int scoredb_solution_first(const at_result *r)
{
    const uint32_t ack = (1u << AT_CAT_ACKNOWLEDGEMENT) | (1u << AT_CAT_VALIDATION) |
                         (1u << AT_CAT_APOLOGY) | (1u << AT_CAT_REASSURANCE) |
                         (1u << AT_CAT_PERSPECTIVE_TAKING);
    bool seen_ack = false;
    for (size_t i = 0; i < r->n_markers; i++) {
        at_category c = r->markers[i].category;
        if (c == AT_CAT_OWNERSHIP)
            return seen_ack ? 0 : 1;
        if (ack & (1u << c))
            seen_ack = true;
    }
    return -1;
}

/* ---- markers ---------------------------------------------------------------------------- */

/* Binds one marker row to parameters base + 1 ... base + MARKER_PARAMS of st. */
static void bind_marker(sqlite3_stmt *st, int base, const char *conversation_id, int64_t seq,
                        size_t ordinal, const at_marker *m)
{
    sqlite3_bind_text(st, base + 1, conversation_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, base + 2, seq);
    sqlite3_bind_int64(st, base + 3, (int64_t)ordinal);
    sqlite3_bind_text(st, base + 4, at_family_name(at_category_family(m->category)), -1,
                      SQLITE_STATIC);
    sqlite3_bind_text(st, base + 5, at_category_name(m->category), -1, SQLITE_STATIC);
    if (m->pattern_id)
        sqlite3_bind_text(st, base + 6, m->pattern_id, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, base + 6);
    sqlite3_bind_int64(st, base + 7, (int64_t)m->start);
    sqlite3_bind_int64(st, base + 8, (int64_t)m->end);
}

int scoredb_put_markers(scoredb *sdb, const char *conversation_id, int64_t seq,
                        const at_marker *markers, size_t n_markers)
{
    sqlite3_stmt *st = sdb->stmt[ST_MARKER_INSERT];
    for (size_t i = 0; i < n_markers; i++) {
        bind_marker(st, 0, conversation_id, seq, i, &markers[i]);
        if (run(sdb, ST_MARKER_INSERT, "cannot store marker"))
            return -1;
    }
    return 0;
}

/* The k-row insert, prepared the first time it is needed; NULL on failure (errmsg set). */
static sqlite3_stmt *marker_multi_stmt(scoredb *sdb, size_t k)
{
    if (sdb->marker_multi[k])
        return sdb->marker_multi[k];
    static const char head[] = "INSERT INTO markers (conversation_id, seq, ordinal, family,"
                               " category, pattern, start_byte, end_byte) VALUES ";
    static const char row[] = "(?,?,?,?,?,?,?,?)";
    char sql[sizeof head + MARKER_ROWS * sizeof row];
    size_t n = sizeof head - 1;
    memcpy(sql, head, n);
    for (size_t j = 0; j < k; j++) {
        if (j)
            sql[n++] = ',';
        memcpy(sql + n, row, sizeof row - 1);
        n += sizeof row - 1;
    }
    sql[n] = '\0';
    if (sqlite3_prepare_v3(sdb->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &sdb->marker_multi[k],
                           NULL)) {
        fail_sql(sdb, "cannot prepare the insert of several markers");
        return NULL;
    }
    return sdb->marker_multi[k];
}

int scoredb_put_marker_rows(scoredb *sdb, const scoredb_marker_row *rows, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t k = n - i < MARKER_ROWS ? n - i : MARKER_ROWS;
        if (k == 1) {
            const scoredb_marker_row *r = &rows[i];
            sqlite3_stmt *st = sdb->stmt[ST_MARKER_INSERT];
            bind_marker(st, 0, r->conversation_id, r->seq, r->ordinal, r->marker);
            if (run(sdb, ST_MARKER_INSERT, "cannot store marker"))
                return -1;
            i++;
            continue;
        }
        sqlite3_stmt *st = marker_multi_stmt(sdb, k);
        if (!st)
            return -1;
        for (size_t j = 0; j < k; j++) {
            const scoredb_marker_row *r = &rows[i + j];
            bind_marker(st, (int)j * MARKER_PARAMS, r->conversation_id, r->seq, r->ordinal,
                        r->marker);
        }
        int rc = sqlite3_step(st);
        int ret = rc == SQLITE_DONE ? 0 : fail_sql(sdb, "cannot store marker");
        sqlite3_reset(st); /* every use binds all its parameters: no need to clear them */
        if (ret)
            return -1;
        i += k;
    }
    return 0;
}

/* ---- metrics ---------------------------------------------------------------------------- */

static int64_t col_int(sqlite3_stmt *st, int i)
{
    return sqlite3_column_type(st, i) == SQLITE_NULL ? AT_NULL_INT : sqlite3_column_int64(st, i);
}

static int col_flag(sqlite3_stmt *st, int i)
{
    return sqlite3_column_type(st, i) == SQLITE_NULL ? -1 : sqlite3_column_int(st, i) != 0;
}

static double col_real(sqlite3_stmt *st, int i)
{
    return sqlite3_column_type(st, i) == SQLITE_NULL ? NAN : sqlite3_column_double(st, i);
}

static void bind_int_or_null(sqlite3_stmt *st, int i, int64_t v)
{
    if (v == AT_NULL_INT)
        sqlite3_bind_null(st, i);
    else
        sqlite3_bind_int64(st, i, v);
}

static void bind_real_or_null(sqlite3_stmt *st, int i, double v)
{
    if (isnan(v))
        sqlite3_bind_null(st, i);
    else
        sqlite3_bind_double(st, i, v);
}

int scoredb_read_turns(scoredb *sdb, const char *conversation_id, at_turn **turns, size_t *n,
                       size_t *cap)
{
    *n = 0;
    sqlite3_stmt *st = sdb->stmt[ST_TURNS_SELECT];
    sqlite3_bind_text(st, 1, conversation_id, -1, SQLITE_STATIC);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == *cap) {
            size_t new_cap = *cap ? *cap * 2 : 64;
            at_turn *nt = realloc(*turns, new_cap * sizeof *nt);
            if (!nt) {
                done(st);
                return fail_with(sdb, "out of memory computing metrics");
            }
            *turns = nt;
            *cap = new_cap;
        }
        at_turn *t = &(*turns)[(*n)++];
        t->seq = sqlite3_column_int64(st, 0);
        const char *sp = (const char *)sqlite3_column_text(st, 1);
        if (!sp || at_speaker_parse(sp, strlen(sp), &t->speaker))
            t->speaker = AT_SPEAKER_SYSTEM;
        t->ts_ms = col_int(st, 2);
        t->start_ms = col_int(st, 3);
        t->end_ms = col_int(st, 4);
        t->compound = sqlite3_column_double(st, 5);
        t->frustration_score = col_real(st, 6);
        t->category_mask = (uint32_t)sqlite3_column_int64(st, 7);
        t->solution_first = col_flag(st, 8);
    }
    if (rc != SQLITE_DONE) {
        fail_sql(sdb, "cannot read turns for metrics");
        done(st);
        return -1;
    }
    done(st);
    return 0;
}

int scoredb_update_metrics(scoredb *sdb, const char *conversation_id,
                           int64_t silence_threshold_ms)
{
    at_turn *turns = NULL;
    size_t n = 0, cap = 0;
    int rc = scoredb_read_turns(sdb, conversation_id, &turns, &n, &cap);
    if (rc == 0)
        rc = scoredb_update_metrics_with(sdb, conversation_id, turns, n, silence_threshold_ms);
    free(turns);
    return rc;
}

int scoredb_update_metrics_with(scoredb *sdb, const char *conversation_id,
                                const at_turn *turns, size_t n, int64_t silence_threshold_ms)
{
    return scoredb_update_metrics_outcome(sdb, conversation_id, turns, n, silence_threshold_ms,
                                          NULL);
}

static void bind_flag_or_null(sqlite3_stmt *st, int i, int v)
{
    if (v < 0)
        sqlite3_bind_null(st, i);
    else
        sqlite3_bind_int(st, i, v != 0);
}

void scoredb_outcome_merge(scoredb_outcome *into, const scoredb_outcome *o)
{
    if (o->ended_at != AT_NULL_INT)
        into->ended_at = o->ended_at;
    if (o->resolved >= 0)
        into->resolved = o->resolved;
    if (o->resolved_at != AT_NULL_INT)
        into->resolved_at = o->resolved_at;
    if (!isnan(o->csat))
        into->csat = o->csat;
    if (o->nps != AT_NULL_INT)
        into->nps = o->nps;
    if (o->escalated >= 0)
        into->escalated = o->escalated;
    if (o->transferred >= 0)
        into->transferred = o->transferred;
    into->ended |= o->ended;
    into->updated_at = o->updated_at;
}

void scoredb_bind_outcome(sqlite3_stmt *st, int first, const scoredb_outcome *o)
{
    bind_int_or_null(st, first, o->ended_at);
    bind_flag_or_null(st, first + 1, o->resolved);
    bind_int_or_null(st, first + 2, o->resolved_at);
    bind_real_or_null(st, first + 3, o->csat);
    bind_int_or_null(st, first + 4, o->nps);
    bind_flag_or_null(st, first + 5, o->transferred);
    sqlite3_bind_int(st, first + 6, o->ended ? 1 : 0);
    sqlite3_bind_int64(st, first + 7, o->updated_at);
}

int scoredb_update_metrics_outcome(scoredb *sdb, const char *conversation_id,
                                   const at_turn *turns, size_t n, int64_t silence_threshold_ms,
                                   const scoredb_outcome *o)
{
    at_conv_facts f = {AT_NULL_INT, AT_NULL_INT, AT_NULL_INT, -1, -1, -1, NAN, AT_NULL_INT};
    sqlite3_stmt *st = sdb->stmt[ST_FACTS_SELECT];
    sqlite3_bind_text(st, 1, conversation_id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        f.started_at = col_int(st, 0);
        f.ended_at = col_int(st, 1);
        f.resolved_at = col_int(st, 2);
        f.resolved = col_flag(st, 3);
        f.escalated = col_flag(st, 4);
        f.transferred = col_flag(st, 5);
        f.csat = col_real(st, 6);
        f.nps = col_int(st, 7);
    } else if (rc != SQLITE_DONE) {
        fail_sql(sdb, "cannot read conversation for metrics");
        done(st);
        return -1;
    }
    done(st);
    if (o) {
        /* The facts as they are once the outcome is written. */
        if (o->ended_at != AT_NULL_INT)
            f.ended_at = o->ended_at;
        if (o->resolved >= 0)
            f.resolved = o->resolved != 0;
        if (o->resolved_at != AT_NULL_INT)
            f.resolved_at = o->resolved_at;
        if (!isnan(o->csat))
            f.csat = o->csat;
        if (o->nps != AT_NULL_INT)
            f.nps = o->nps;
        if (o->escalated >= 0)
            f.escalated = o->escalated != 0;
        if (o->transferred >= 0)
            f.transferred = o->transferred != 0;
    }

    at_conv_metrics m;
    if (at_conversation_metrics(turns, n, &f, silence_threshold_ms, &m))
        return fail_with(sdb, "out of memory computing metrics");

    enum stmt_id id = o ? ST_METRICS_OUTCOME_UPDATE : ST_METRICS_UPDATE;
    st = sdb->stmt[id];
    sqlite3_bind_text(st, 1, conversation_id, -1, SQLITE_STATIC);
    bind_int_or_null(st, 2, m.turns);
    bind_int_or_null(st, 3, m.agent_turns);
    bind_int_or_null(st, 4, m.customer_turns);
    bind_int_or_null(st, 5, m.duration_ms);
    bind_int_or_null(st, 6, m.first_response_ms);
    bind_real_or_null(st, 7, m.avg_response_ms);
    bind_int_or_null(st, 8, m.max_response_ms);
    for (int q = 0; q < 4; q++)
        bind_real_or_null(st, 9 + q, m.customer_sentiment_q[q]);
    bind_real_or_null(st, 13, m.customer_sentiment_start);
    bind_real_or_null(st, 14, m.customer_sentiment_end);
    bind_real_or_null(st, 15, m.customer_sentiment_min);
    bind_real_or_null(st, 16, m.customer_sentiment_mean);
    bind_real_or_null(st, 17, m.sentiment_trend);
    bind_int_or_null(st, 18, m.empathy_opportunities);
    bind_int_or_null(st, 19, m.empathy_responses);
    bind_real_or_null(st, 20, m.empathy_response_rate);
    bind_int_or_null(st, 21, m.solution_before_acknowledgement);
    bind_real_or_null(st, 22, m.empathy_score);
    bind_real_or_null(st, 23, m.frustration_peak);
    bind_real_or_null(st, 24, m.frustration_end);
    bind_real_or_null(st, 25, m.recovery);
    bind_int_or_null(st, 26, m.escalation_requested);
    bind_int_or_null(st, 27, m.churn_threat);
    bind_int_or_null(st, 28, m.legal_threat);
    bind_int_or_null(st, 29, m.abuse);
    bind_int_or_null(st, 30, m.interruptions_agent);
    bind_int_or_null(st, 31, m.interruptions_customer);
    bind_real_or_null(st, 32, m.talk_ratio_agent);
    bind_int_or_null(st, 33, m.silence_ms);
    bind_int_or_null(st, 34, m.resolution_ms);
    bind_int_or_null(st, 35, m.escalated);
    if (o)
        scoredb_bind_outcome(st, 36, o);
    return run(sdb, id, "cannot store conversation metrics");
}

/* ---- rescoring -------------------------------------------------------------------------- */

void rescore_cursor_fini(rescore_cursor *cur)
{
    free(cur->conversation_id);
    free(cur->last_counted);
    cur->conversation_id = cur->last_counted = NULL;
}

void rescore_cursor_restart(rescore_cursor *cur)
{
    int64_t since_ms = cur->since_ms;
    rescore_cursor_fini(cur);
    memset(cur, 0, sizeof *cur);
    cur->since_ms = since_ms;
}

/* One utterance of a slice, read before any of them is rewritten: the select walks the table
 * that the updates change. */
typedef struct slice_row {
    char *conversation_id;
    int64_t seq;
    at_speaker speaker;
    char *text; /* NULL: stored without text */
    size_t text_len;
    bool redacted; /* the stored text is not what was scored: it cannot be rescored */
} slice_row;

static void free_rows(slice_row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(rows[i].conversation_id);
        free(rows[i].text);
    }
    free(rows);
}

static char *dup_bytes(const void *p, size_t len)
{
    char *s = malloc(len + 1);
    if (s) {
        memcpy(s, p, len);
        s[len] = '\0';
    }
    return s;
}

/* Reads up to max_rows rows after the cursor into *out (new; free with free_rows). Returns the
 * count, or -1. */
static ssize_t read_slice(scoredb *sdb, const rescore_cursor *cur, const char *model_id,
                          size_t max_rows, slice_row **out)
{
    *out = NULL;
    slice_row *rows = calloc(max_rows, sizeof *rows);
    if (!rows)
        return fail_with(sdb, "out of memory rescoring");
    sqlite3_stmt *st = sdb->stmt[ST_RESCORE_SELECT];
    /* Before the first row the cursor is ("", -1), below every key: seq is never negative. */
    sqlite3_bind_text(st, 1, cur->conversation_id ? cur->conversation_id : "", -1,
                      SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, cur->conversation_id ? cur->seq : -1);
    sqlite3_bind_text(st, 3, model_id, -1, SQLITE_STATIC);
    bind_int_or_null(st, 4, cur->since_ms);
    sqlite3_bind_int64(st, 5, max_rows > (size_t)INT_MAX ? INT_MAX : (int64_t)max_rows);
    size_t n = 0;
    bool oom = false;
    int rc = SQLITE_DONE;
    while (n < max_rows && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        slice_row *r = &rows[n++];
        const void *cid = sqlite3_column_text(st, 0);
        r->conversation_id = dup_bytes(cid ? cid : "", (size_t)sqlite3_column_bytes(st, 0));
        r->seq = sqlite3_column_int64(st, 1);
        const char *sp = (const char *)sqlite3_column_text(st, 2);
        if (!sp || at_speaker_parse(sp, strlen(sp), &r->speaker))
            r->speaker = AT_SPEAKER_SYSTEM;
        if (sqlite3_column_type(st, 3) != SQLITE_NULL) {
            const void *text = sqlite3_column_text(st, 3);
            r->text_len = (size_t)sqlite3_column_bytes(st, 3);
            r->text = dup_bytes(text ? text : "", r->text_len);
            r->redacted = sqlite3_column_int(st, 4) != 0;
            oom |= !r->text;
        }
        if ((oom |= !r->conversation_id))
            break;
    }
    if (oom || (n < max_rows && rc != SQLITE_DONE)) {
        if (oom)
            fail_with(sdb, "out of memory rescoring");
        else
            fail_sql(sdb, "cannot read utterances to rescore");
        done(st);
        free_rows(rows, n);
        return -1;
    }
    done(st);
    *out = rows;
    return (ssize_t)n;
}

/* Scores one stored utterance again and rewrites its row and markers. */
static int rescore_row(scoredb *sdb, const at_model *model, at_scratch *scratch,
                       const slice_row *r)
{
    at_result res;
    int rc = at_score(model, scratch, r->text, r->text_len, r->speaker, 0, &res);
    if (rc) {
        snprintf(sdb->errmsg, sizeof sdb->errmsg, "cannot rescore an utterance: %s",
                 at_strerror(rc));
        return -1;
    }
    sqlite3_stmt *st = sdb->stmt[ST_RESCORE_UPDATE];
    sqlite3_bind_text(st, 1, r->conversation_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, r->seq);
    sqlite3_bind_double(st, 3, res.sentiment.neg);
    sqlite3_bind_double(st, 4, res.sentiment.neu);
    sqlite3_bind_double(st, 5, res.sentiment.pos);
    sqlite3_bind_double(st, 6, res.sentiment.compound);
    /* As the daemon stores it: a frustration score only for customer turns. */
    if (r->speaker == AT_SPEAKER_CUSTOMER)
        sqlite3_bind_double(st, 7, res.frustration_score);
    else
        sqlite3_bind_null(st, 7);
    sqlite3_bind_int64(st, 8, (int64_t)res.category_mask);
    int sf = scoredb_solution_first(&res);
    if (sf < 0)
        sqlite3_bind_null(st, 9);
    else
        sqlite3_bind_int(st, 9, sf);
    sqlite3_bind_text(st, 10, at_model_id(model), -1, SQLITE_STATIC);
    if (run(sdb, ST_RESCORE_UPDATE, "cannot rewrite a rescored utterance"))
        return -1;
    st = sdb->stmt[ST_MARKERS_DELETE];
    sqlite3_bind_text(st, 1, r->conversation_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, r->seq);
    if (run(sdb, ST_MARKERS_DELETE, "cannot remove the old markers of an utterance"))
        return -1;
    return scoredb_put_markers(sdb, r->conversation_id, r->seq, res.markers, res.n_markers);
}

int scoredb_rescore(scoredb *sdb, const at_model *model, at_scratch *scratch,
                    rescore_cursor *cur, size_t max_rows, int64_t silence_threshold_ms,
                    rescore_counts *counts)
{
    if (max_rows == 0)
        max_rows = 1;
    slice_row *rows;
    ssize_t n = read_slice(sdb, cur, at_model_id(model), max_rows, &rows);
    if (n < 0)
        return -1;
    rescore_counts c = *counts;
    /* Rows come in key order, so a conversation's rows are adjacent: its metrics are recomputed
     * once, after its last rescored row of the slice. */
    const char *pending = NULL; /* a conversation with rescored rows and stale metrics */
    const char *counted = cur->last_counted;
    int ret = -1;
    for (ssize_t i = 0; i < n; i++) {
        const slice_row *r = &rows[i];
        if (pending && strcmp(pending, r->conversation_id) != 0) {
            if (scoredb_update_metrics(sdb, pending, silence_threshold_ms))
                goto out;
            pending = NULL;
        }
        /* No text (store_text = none), or redacted text: placeholders such as "[CARD]" would
         * score differently, and marker offsets refer to the text as received. */
        if (!r->text || r->redacted) {
            c.skipped++;
            continue;
        }
        if (rescore_row(sdb, model, scratch, r))
            goto out;
        c.utterances++;
        pending = r->conversation_id;
        if (!counted || strcmp(counted, r->conversation_id) != 0) {
            c.conversations++;
            counted = r->conversation_id;
        }
    }
    if (pending && scoredb_update_metrics(sdb, pending, silence_threshold_ms))
        goto out;

    if (n > 0) {
        char *cid = strdup(rows[n - 1].conversation_id);
        char *last = counted == cur->last_counted ? NULL : strdup(counted);
        if (!cid || (counted != cur->last_counted && !last)) {
            free(cid);
            free(last);
            fail_with(sdb, "out of memory rescoring");
            goto out;
        }
        free(cur->conversation_id);
        cur->conversation_id = cid;
        cur->seq = rows[n - 1].seq;
        if (last) {
            free(cur->last_counted);
            cur->last_counted = last;
        }
    }
    *counts = c;
    ret = (size_t)n == max_rows ? 1 : 0;
out:
    free_rows(rows, (size_t)n);
    return ret;
}
