/*
 * report.c: `attune report NAME`: the fleet reports of ANALYTICS.md section 3. Rows come from
 * the report views of schema/0003_views.sql; what SQL lacks is computed here with libattune's
 * statistics (medians and p90, correlations and their intervals, fatigue slopes). Output is an
 * aligned table for a terminal, CSV (RFC 4180) or JSON for tools.
 *
 * The database is opened read-only: attuned is its only writer (ARCHITECTURE.md). --since and
 * --until select conversations by start time. What looks beyond one conversation (the
 * customer's next contact, the position in the agent's day) is computed by the views over all
 * conversations before the range applies, so a range never renumbers a shift or hides a repeat
 * contact that came after it. A value computed from fewer observations than its statistic needs
 * (or than --min-n) is NULL, never a made-up number; the counts beside it say why.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "common.h"

#define DEFAULT_DB "./attune.db"
#define DEFAULT_DAYS 7
#define MS_PER_DAY INT64_C(86400000)
/* The migration that adds the report views. */
#define REPORT_SCHEMA 3

typedef struct options {
    const char *db;
    const char *by_name;  /* agent, queue, channel or day */
    const char *by_col;   /* its column in the report views */
    int64_t since_ms;     /* AT_NULL_INT: no lower bound */
    int64_t until_ms;     /* AT_NULL_INT: no upper bound (exclusive) */
    long min_n;           /* values over fewer observations are NULL */
    long days;            /* repeat-contact window; 0 when not given */
    table_format fmt;
} options;

/* ---- queries ------------------------------------------------------------------------------ */

/* " AND <prefix>started_at >= :since AND <prefix>started_at < :until", for the bounds given. */
static void range_sql(const options *o, const char *prefix, char *buf, size_t len)
{
    int n = 0;
    buf[0] = '\0';
    if (o->since_ms != AT_NULL_INT)
        n = snprintf(buf, len, " AND %sstarted_at >= :since", prefix);
    if (o->until_ms != AT_NULL_INT)
        snprintf(buf + n, len - (size_t)n, " AND %sstarted_at < :until", prefix);
}

static void bind_named(sqlite3_stmt *st, const char *name, int64_t v)
{
    int i = sqlite3_bind_parameter_index(st, name);
    if (i > 0)
        sqlite3_bind_int64(st, i, v);
}

/* Prepares the SQL that fmt and ap make (sqlite3_vmprintf: %s only for names from this file,
 * never user input) and binds :since, :until and :window. Returns NULL after printing why. */
static sqlite3_stmt *prepare(sqlite3 *db, const options *o, const char *fmt, va_list ap)
{
    char *sql = sqlite3_vmprintf(fmt, ap);
    sqlite3_stmt *st = NULL;
    if (!sql) {
        fprintf(stderr, "attune: out of memory\n");
        return NULL;
    }
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "attune: %s: %s\n", o->db, sqlite3_errmsg(db));
        sqlite3_free(sql);
        return NULL;
    }
    sqlite3_free(sql);
    if (o->since_ms != AT_NULL_INT)
        bind_named(st, ":since", o->since_ms);
    if (o->until_ms != AT_NULL_INT)
        bind_named(st, ":until", o->until_ms);
    bind_named(st, ":window", (int64_t)o->days * MS_PER_DAY);
    return st;
}

static int step_error(sqlite3 *db, const options *o)
{
    fprintf(stderr, "attune: %s: %s\n", o->db, sqlite3_errmsg(db));
    return -1;
}

/* Appends a row per result row of st; its columns are the table's, in order. */
static int rows_from_sql(sqlite3 *db, const options *o, table *t, sqlite3_stmt *st)
{
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        cell *row = table_row(t);
        if (!row)
            goto nomem;
        for (size_t j = 0; j < t->n_cols; j++) {
            if (sqlite3_column_type(st, (int)j) == SQLITE_NULL)
                continue;
            if (t->cols[j].kind == COL_TEXT) {
                if (cell_set_text(&row[j], (const char *)sqlite3_column_text(st, (int)j)))
                    goto nomem;
            } else {
                cell_set_num(&row[j], sqlite3_column_double(st, (int)j));
            }
        }
        table_apply_min_n(t, row, o->min_n);
    }
    if (rc != SQLITE_DONE)
        return step_error(db, o);
    return 0;
nomem:
    fprintf(stderr, "attune: out of memory\n");
    return -1;
}

/* Runs the SQL that fmt makes into t. */
static int sql_rows(sqlite3 *db, const options *o, table *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sqlite3_stmt *st = prepare(db, o, fmt, ap);
    va_end(ap);
    if (!st)
        return -1;
    int rc = rows_from_sql(db, o, t, st);
    sqlite3_finalize(st);
    return rc;
}

/* ---- groups of values, for what is computed here ------------------------------------------ */

/* The rows of one group: keys, and the values or pairs that are not NULL. */
typedef struct group {
    char *key[2];
    size_t n_rows; /* rows of the group, NULL values included */
    double *x, *y; /* n values (y: pairs only) */
    size_t n, cap;
} group;

typedef int (*group_fn)(const group *g, void *ctx);

static int group_push(group *g, double x, double y)
{
    if (g->n == g->cap) {
        size_t cap = g->cap ? 2 * g->cap : 64;
        double *nx = realloc(g->x, cap * sizeof *nx);
        if (!nx)
            return -1;
        g->x = nx;
        double *ny = realloc(g->y, cap * sizeof *ny);
        if (!ny)
            return -1;
        g->y = ny;
        g->cap = cap;
    }
    g->x[g->n] = x;
    g->y[g->n] = y;
    g->n++;
    return 0;
}

static bool same_key(const char *a, const unsigned char *b)
{
    return a ? b && strcmp(a, (const char *)b) == 0 : !b;
}

/* Reads st, whose first n_keys columns are a group key (rows of a group adjacent) and whose
 * next n_values columns (1 or 2) are values, and calls fn once per group. */
static int for_each_group(sqlite3 *db, const options *o, sqlite3_stmt *st, size_t n_keys,
                          size_t n_values, group_fn fn, void *ctx)
{
    group g = {0};
    bool open = false;
    int rc, status = -1;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        bool same = open;
        for (size_t k = 0; k < n_keys && same; k++)
            same = same_key(g.key[k], sqlite3_column_text(st, (int)k));
        if (!same) {
            if (open && fn(&g, ctx))
                goto done;
            for (size_t k = 0; k < n_keys; k++) {
                free(g.key[k]);
                const unsigned char *s = sqlite3_column_text(st, (int)k);
                g.key[k] = s ? strdup((const char *)s) : NULL;
                if (s && !g.key[k])
                    goto nomem;
            }
            g.n = g.n_rows = 0;
            open = true;
        }
        g.n_rows++;
        int cx = (int)n_keys, cy = cx + 1;
        if (sqlite3_column_type(st, cx) == SQLITE_NULL ||
            (n_values == 2 && sqlite3_column_type(st, cy) == SQLITE_NULL))
            continue;
        if (group_push(&g, sqlite3_column_double(st, cx),
                       n_values == 2 ? sqlite3_column_double(st, cy) : 0))
            goto nomem;
    }
    if (rc != SQLITE_DONE) {
        step_error(db, o);
        goto done;
    }
    if (open && fn(&g, ctx))
        goto done;
    status = 0;
    goto done;
nomem:
    fprintf(stderr, "attune: out of memory\n");
done:
    for (size_t k = 0; k < n_keys; k++)
        free(g.key[k]);
    free(g.x);
    free(g.y);
    return status;
}

static int grouped(sqlite3 *db, const options *o, size_t n_keys, size_t n_values, group_fn fn,
                   void *ctx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sqlite3_stmt *st = prepare(db, o, fmt, ap);
    va_end(ap);
    if (!st)
        return -1;
    int rc = for_each_group(db, o, st, n_keys, n_values, fn, ctx);
    sqlite3_finalize(st);
    return rc;
}

static size_t max_size(size_t a, size_t b)
{
    return a > b ? a : b;
}

/* ---- the reports -------------------------------------------------------------------------- */

typedef struct report_ctx {
    table *t;
    const options *o;
    const char *dimension;
} report_ctx;

static cell *keyed_row(report_ctx *c, const group *g)
{
    cell *row = table_row(c->t);
    if (!row || cell_set_text(&row[0], c->dimension) || cell_set_text(&row[1], g->key[0])) {
        fprintf(stderr, "attune: out of memory\n");
        return NULL;
    }
    return row;
}

/* resolution-time: count, mean, median and p90 of resolution_ms. */
static const column resolution_cols[] = {
    COL("dimension", "dimension", COL_TEXT, 0),
    COL("group", "group", COL_TEXT, 0),
    COL("n", "n", COL_COUNT, 0),
    COLN("mean_ms", "mean", COL_MS, 0, 2),
    COLN("median_ms", "median", COL_MS, 0, 2),
    COLN("p90_ms", "p90", COL_MS, 0, 2),
};

static int resolution_group(const group *g, void *ctx)
{
    report_ctx *c = ctx;
    cell *row = keyed_row(c, g);
    if (!row)
        return -1;
    cell_set_num(&row[2], (double)g->n);
    if (g->n > 0) {
        double sum = 0;
        for (size_t i = 0; i < g->n; i++)
            sum += g->x[i];
        cell_set_num(&row[3], sum / (double)g->n);
        cell_set_num(&row[4], at_quantile(g->x, g->n, 0.5));
        cell_set_num(&row[5], at_quantile(g->x, g->n, 0.9));
    }
    table_apply_min_n(c->t, row, c->o->min_n);
    return 0;
}

static int report_resolution(sqlite3 *db, const options *o, table *t)
{
    char range[128], crange[128];
    range_sql(o, "", range, sizeof range);
    range_sql(o, "c.", crange, sizeof crange);
    table_init(t, resolution_cols, sizeof resolution_cols / sizeof *resolution_cols);
    report_ctx c = {t, o, o->by_name};
    if (grouped(db, o, 1, 1, resolution_group, &c,
                "SELECT %s AS grp, resolution_ms FROM report_conversations"
                " WHERE resolution_ms IS NOT NULL%s ORDER BY grp IS NULL, grp",
                o->by_col, range))
        return -1;
    /* Every tier gets a row, an empty one n = 0. */
    c.dimension = "empathy_tier";
    if (grouped(db, o, 1, 1, resolution_group, &c,
                "WITH tier(name, ord) AS (VALUES ('low', 1), ('medium', 2), ('high', 3),"
                " ('no opportunity', 4))"
                " SELECT tier.name, c.resolution_ms FROM tier LEFT JOIN report_conversations c"
                " ON c.empathy_tier = tier.name AND c.resolution_ms IS NOT NULL%s"
                " ORDER BY tier.ord",
                crange))
        return -1;
    snprintf(t->note, sizeof t->note,
             "n: resolved conversations with a resolution time. Empathy tiers by\n"
             "empathy_response_rate: low < 1/3, medium < 2/3, high otherwise.");
    return 0;
}

/* satisfaction: CSAT against every metric, strongest first. */
static const column satisfaction_cols[] = {
    COL("metric", "metric", COL_TEXT, 0),
    COL("n", "n", COL_COUNT, 0),
    COL("pearson_r", "r", COL_REAL, 3),
    COL("ci95_low", "ci95 low", COL_REAL, 3),
    COL("ci95_high", "ci95 high", COL_REAL, 3),
    COL("spearman_rho", "rho", COL_REAL, 3),
};

typedef struct sat_row {
    char *metric;
    size_t n;
    double r, lo, hi, rho;
} sat_row;

typedef struct sat_ctx {
    const options *o;
    sat_row *rows;
    size_t n_rows, cap;
} sat_ctx;

static int satisfaction_group(const group *g, void *ctx)
{
    sat_ctx *c = ctx;
    if (c->n_rows == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 64;
        sat_row *r = realloc(c->rows, cap * sizeof *r);
        if (!r)
            goto nomem;
        c->rows = r;
        c->cap = cap;
    }
    sat_row *r = &c->rows[c->n_rows];
    *r = (sat_row){.n = g->n, .r = NAN, .lo = NAN, .hi = NAN, .rho = NAN};
    if (!(r->metric = strdup(g->key[0] ? g->key[0] : "")))
        goto nomem;
    c->n_rows++;
    if (g->n < max_size(4, (size_t)c->o->min_n))
        return 0;
    r->r = at_pearson(g->x, g->y, g->n);
    at_fisher_ci95(r->r, g->n, &r->lo, &r->hi);
    if (at_spearman(g->x, g->y, g->n, &r->rho))
        goto nomem;
    return 0;
nomem:
    fprintf(stderr, "attune: out of memory\n");
    return -1;
}

/* |r| descending, NULL last, then by name. */
static int cmp_strength(const void *a, const void *b)
{
    const sat_row *x = a, *y = b;
    bool nx = isnan(x->r), ny = isnan(y->r);
    if (nx != ny)
        return nx - ny;
    if (!nx && fabs(x->r) != fabs(y->r))
        return fabs(x->r) < fabs(y->r) ? 1 : -1;
    return strcmp(x->metric, y->metric);
}

static int report_satisfaction(sqlite3 *db, const options *o, table *t)
{
    char range[128];
    range_sql(o, "", range, sizeof range);
    table_init(t, satisfaction_cols, sizeof satisfaction_cols / sizeof *satisfaction_cols);
    sat_ctx c = {.o = o};
    int status = grouped(db, o, 1, 2, satisfaction_group, &c,
                         "SELECT metric, value, csat FROM report_satisfaction_pairs"
                         " WHERE 1%s ORDER BY metric", range);
    if (status == 0) {
        qsort(c.rows, c.n_rows, sizeof *c.rows, cmp_strength);
        for (size_t i = 0; i < c.n_rows && status == 0; i++) {
            const sat_row *r = &c.rows[i];
            cell *row = table_row(t);
            if (!row || cell_set_text(&row[0], r->metric)) {
                fprintf(stderr, "attune: out of memory\n");
                status = -1;
                break;
            }
            cell_set_num(&row[1], (double)r->n);
            cell_set_num(&row[2], r->r);
            cell_set_num(&row[3], r->lo);
            cell_set_num(&row[4], r->hi);
            cell_set_num(&row[5], r->rho);
        }
    }
    for (size_t i = 0; i < c.n_rows; i++)
        free(c.rows[i].metric);
    free(c.rows);
    snprintf(t->note, sizeof t->note,
             "CSAT against each metric over the n conversations with both. r: Pearson, with\n"
             "its 95%% interval (Fisher z); rho: Spearman. NULL when n < %zu.",
             max_size(4, (size_t)o->min_n));
    return status;
}

/* escalations: the escalated share by group and by empathy response. */
static const column escalation_cols[] = {
    COL("dimension", "dimension", COL_TEXT, 0),
    COL("group", "group", COL_TEXT, 0),
    COL("conversations", "conversations", COL_COUNT, 0),
    COL("n", "n", COL_COUNT, 0),
    COL("escalated", "escalated", COL_COUNT, 0),
    COLN("escalation_rate", "rate", COL_REAL, 3, 3),
};

static int report_escalations(sqlite3 *db, const options *o, table *t)
{
    char range[128], crange[128];
    range_sql(o, "", range, sizeof range);
    range_sql(o, "c.", crange, sizeof crange);
    table_init(t, escalation_cols, sizeof escalation_cols / sizeof *escalation_cols);
    if (sql_rows(db, o, t,
                 "SELECT %Q, %s AS grp, count(*), count(escalated), count(nullif(escalated, 0)),"
                 " avg(escalated) FROM report_conversations WHERE 1%s"
                 " GROUP BY grp ORDER BY grp IS NULL, grp",
                 o->by_name, o->by_col, range) ||
        sql_rows(db, o, t,
                 "WITH response(name, ord) AS (VALUES ('with', 1), ('without', 2),"
                 " ('no opportunity', 3))"
                 " SELECT 'empathy_response', response.name, count(c.conversation_id),"
                 " count(c.escalated), count(nullif(c.escalated, 0)), avg(c.escalated)"
                 " FROM response LEFT JOIN report_conversations c"
                 " ON c.empathy_response = response.name%s"
                 " GROUP BY response.name ORDER BY response.ord",
                 crange))
        return -1;
    snprintf(t->note, sizeof t->note,
             "rate = escalated / n, n: conversations whose escalation is known. Empathy\n"
             "response: with = at least one empathy opportunity answered.");
    return 0;
}

/* repeat-contacts: the share followed by the same customer within --days. */
static const column repeat_cols[] = {
    COL("dimension", "dimension", COL_TEXT, 0),
    COL("group", "group", COL_TEXT, 0),
    COL("conversations", "conversations", COL_COUNT, 0),
    COL("repeated", "repeated", COL_COUNT, 0),
    COLN("repeat_rate", "repeat rate", COL_REAL, 3, 2),
    COLN("fcr_rate", "fcr", COL_REAL, 3, 2),
};

static int report_repeat(sqlite3 *db, const options *o, table *t)
{
    char range[128];
    range_sql(o, "", range, sizeof range);
    table_init(t, repeat_cols, sizeof repeat_cols / sizeof *repeat_cols);
    /* A conversation with no next one has gap_ms NULL: not repeated. */
    if (sql_rows(db, o, t,
                 "SELECT 'all', 'all', count(*), total(r), avg(r), 1 - avg(r)"
                 " FROM (SELECT coalesce(gap_ms <= :window, 0) AS r FROM report_next_contact"
                 " WHERE 1%s)",
                 range) ||
        sql_rows(db, o, t,
                 "SELECT %Q, grp, count(*), total(r), avg(r), 1 - avg(r)"
                 " FROM (SELECT %s AS grp, coalesce(gap_ms <= :window, 0) AS r"
                 " FROM report_next_contact WHERE 1%s)"
                 " GROUP BY grp ORDER BY grp IS NULL, grp",
                 o->by_name, o->by_col, range))
        return -1;
    snprintf(t->note, sizeof t->note,
             "repeated: the same customer started another conversation within %ld days.\n"
             "fcr: first-contact resolution, 1 - repeat rate.", o->days);
    return 0;
}

/* agents: per agent, the mean of each metric over the conversations that have it. */
static const column agent_cols[] = {
    COL("agent_id", "agent", COL_TEXT, 0),
    COL("conversations", "conversations", COL_COUNT, 0),
    COLN("empathy_score", "empathy", COL_REAL, 1, 3),
    COL("n_empathy_score", "n", COL_COUNT, 0),
    COLN("response_rate", "response", COL_REAL, 3, 5),
    COL("n_response_rate", "n", COL_COUNT, 0),
    COLN("dismissive_rate", "dismissive", COL_REAL, 3, 7),
    COL("n_dismissive_rate", "n", COL_COUNT, 0),
    COLN("csat", "csat", COL_REAL, 2, 9),
    COL("n_csat", "n", COL_COUNT, 0),
    COLN("resolution_ms", "resolution", COL_MS, 0, 11),
    COL("n_resolution_ms", "n", COL_COUNT, 0),
};

static int report_agents(sqlite3 *db, const options *o, table *t)
{
    char range[128];
    range_sql(o, "", range, sizeof range);
    table_init(t, agent_cols, sizeof agent_cols / sizeof *agent_cols);
    if (sql_rows(db, o, t,
                 "SELECT agent_id, count(*),"
                 " avg(empathy_score), count(empathy_score),"
                 " avg(empathy_response_rate), count(empathy_response_rate),"
                 " avg(CAST(dismissive_turns AS REAL) / nullif(agent_turns, 0)),"
                 " count(nullif(agent_turns, 0)),"
                 " avg(csat), count(csat), avg(resolution_ms), count(resolution_ms)"
                 " FROM report_conversations WHERE agent_id IS NOT NULL%s"
                 " GROUP BY agent_id ORDER BY agent_id",
                 range))
        return -1;
    snprintf(t->note, sizeof t->note,
             "Means over the agent's conversations that have the value (n). dismissive:\n"
             "share of agent turns with a dismissive marker; resolution: mean time to resolve.");
    return 0;
}

/* fatigue: per agent and day, the slope of the response rate against shift position. */
static const column fatigue_cols[] = {
    COL("agent_id", "agent", COL_TEXT, 0),
    COL("day", "day", COL_TEXT, 0),
    COL("conversations", "conversations", COL_COUNT, 0),
    COL("n", "n", COL_COUNT, 0),
    COLN("mean_rate", "mean rate", COL_REAL, 3, 3),
    COL("slope", "slope", COL_REAL, 4),
    COL("flagged", "flagged", COL_FLAG, 0),
};

static int fatigue_group(const group *g, void *ctx)
{
    report_ctx *c = ctx;
    cell *row = table_row(c->t);
    if (!row || cell_set_text(&row[0], g->key[0]) || cell_set_text(&row[1], g->key[1])) {
        fprintf(stderr, "attune: out of memory\n");
        return -1;
    }
    cell_set_num(&row[2], (double)g->n_rows);
    cell_set_num(&row[3], (double)g->n);
    if (g->n > 0) {
        double sum = 0;
        for (size_t i = 0; i < g->n; i++)
            sum += g->y[i];
        cell_set_num(&row[4], sum / (double)g->n);
    }
    double slope = g->n >= max_size(2, (size_t)c->o->min_n) ? at_slope(g->x, g->y, g->n) : NAN;
    cell_set_num(&row[5], slope);
    cell_set_num(&row[6], slope < 0 && g->n >= 5);
    table_apply_min_n(c->t, row, c->o->min_n);
    return 0;
}

static int report_fatigue(sqlite3 *db, const options *o, table *t)
{
    char range[128];
    range_sql(o, "", range, sizeof range);
    table_init(t, fatigue_cols, sizeof fatigue_cols / sizeof *fatigue_cols);
    report_ctx c = {t, o, NULL};
    if (grouped(db, o, 2, 2, fatigue_group, &c,
                "SELECT agent_id, day, position, empathy_response_rate FROM report_fatigue"
                " WHERE 1%s ORDER BY agent_id, day, position",
                range))
        return -1;
    snprintf(t->note, sizeof t->note,
             "slope: change of empathy_response_rate per conversation of the agent's day,\n"
             "over the n conversations with a rate; flagged when negative with n >= 5.");
    return 0;
}

/* trend: per day, customer sentiment, frustration and CSAT. */
static const column trend_cols[] = {
    COL("day", "day", COL_TEXT, 0),
    COL("conversations", "conversations", COL_COUNT, 0),
    COLN("sentiment", "sentiment", COL_REAL, 3, 3),
    COL("n_sentiment", "n", COL_COUNT, 0),
    COLN("frustration", "frustration", COL_REAL, 3, 5),
    COL("n_frustration", "n", COL_COUNT, 0),
    COLN("csat", "csat", COL_REAL, 2, 7),
    COL("n_csat", "n", COL_COUNT, 0),
};

static int report_trend(sqlite3 *db, const options *o, table *t)
{
    char range[128];
    range_sql(o, "", range, sizeof range);
    table_init(t, trend_cols, sizeof trend_cols / sizeof *trend_cols);
    if (sql_rows(db, o, t,
                 "SELECT day, count(*),"
                 " avg(customer_sentiment_mean), count(customer_sentiment_mean),"
                 " avg(frustration_peak), count(frustration_peak), avg(csat), count(csat)"
                 " FROM report_conversations WHERE day IS NOT NULL%s GROUP BY day ORDER BY day",
                 range))
        return -1;
    snprintf(t->note, sizeof t->note,
             "Per day (UTC): the mean of each conversation's customer sentiment (compound)\n"
             "and peak frustration, and mean CSAT.");
    return 0;
}

typedef struct report_def {
    const char *name;
    int (*run)(sqlite3 *db, const options *o, table *t);
    bool takes_by;
} report_def;

static const report_def reports[] = {
    {"resolution-time", report_resolution, true},
    {"satisfaction", report_satisfaction, false},
    {"escalations", report_escalations, true},
    {"repeat-contacts", report_repeat, true},
    {"agents", report_agents, false},
    {"fatigue", report_fatigue, false},
    {"trend", report_trend, false},
};
#define N_REPORTS (sizeof reports / sizeof *reports)

/* ---- command line ------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: attune report NAME [--db PATH] [--by agent|queue|channel|day]\n"
            "                     [--since DATE] [--until DATE] [--min-n N] [--days N]\n"
            "                     [--format table|csv|json]\n"
            "\n"
            "reports (ANALYTICS.md section 3):\n"
            "  resolution-time  count, mean, median, p90 of resolution time by group and by\n"
            "                   empathy tier\n"
            "  satisfaction     Pearson r (95%% interval), Spearman rho and n of CSAT against\n"
            "                   every conversation metric, strongest first\n"
            "  escalations      escalation rate by group, with vs without an empathy response\n"
            "  repeat-contacts  share of conversations followed by another from the same\n"
            "                   customer within --days; first-contact resolution\n"
            "  agents           per agent: empathy score, response rate, dismissive rate, CSAT,\n"
            "                   resolution time, each with n\n"
            "  fatigue          per agent and day: slope of the empathy response rate over the\n"
            "                   shift; flagged when falling over at least 5 conversations\n"
            "  trend            per day: customer sentiment, frustration, CSAT\n"
            "\n"
            "  --db PATH        the database, opened read-only (default " DEFAULT_DB ")\n"
            "  --by GROUP       resolution-time, escalations, repeat-contacts: group by agent\n"
            "                   (default), queue, channel or day\n"
            "  --since DATE     conversations started at or after DATE\n"
            "  --until DATE     conversations started before DATE; a bare day is included\n"
            "                   whole\n"
            "                   DATE: YYYY-MM-DD (UTC) or RFC 3339 (2024-05-01T09:30:00Z,\n"
            "                   2024-05-01T11:30:00+02:00)\n"
            "  --min-n N        show NULL for values over fewer than N observations (default 1;\n"
            "                   correlations need 4 whatever N)\n"
            "  --days N         repeat-contacts: the window in days (default %d)\n"
            "  --format F       table (default), csv (RFC 4180) or json (array of objects)\n",
            DEFAULT_DAYS);
}

static void list_reports(FILE *f)
{
    fputs("valid reports:", f);
    for (size_t i = 0; i < N_REPORTS; i++)
        fprintf(f, " %s", reports[i].name);
    putc('\n', f);
}

/* DATE: YYYY-MM-DD (midnight UTC; *is_day set) or an RFC 3339 date-time (rfc3339_ms).
 * Returns 0 or -1. */
static int parse_date(const char *s, int64_t *ms, bool *is_day)
{
    *is_day = strlen(s) == 10;
    if (!*is_day)
        return rfc3339_ms(s, ms);
    char full[32];
    snprintf(full, sizeof full, "%sT00:00:00Z", s);
    return rfc3339_ms(full, ms);
}

static bool parse_count(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

/* Opens the database read-only and checks that it has the report views. Returns NULL after
 * printing why not. */
static sqlite3 *open_db(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0) {
        fprintf(stderr, "attune: no database at %s: %s\n", path, strerror(errno));
        return NULL;
    }
    if (S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "attune: %s is a directory, not a database\n", path);
        return NULL;
    }
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        fprintf(stderr, "attune: cannot open %s: %s\n", path,
                db ? sqlite3_errmsg(db) : "out of memory");
        goto fail;
    }
    /* attuned writes in WAL mode; a reader waits out a checkpoint rather than failing. */
    sqlite3_busy_timeout(db, 5000);
    int64_t version = -1, has_conversations = 0, has_views = 0;
    if (sqlite3_prepare_v2(db,
                           "SELECT (SELECT user_version FROM pragma_user_version),"
                           " (SELECT count(*) FROM sqlite_schema WHERE type = 'table'"
                           "  AND name = 'conversations'),"
                           " (SELECT count(*) FROM sqlite_schema WHERE type = 'view'"
                           "  AND name = 'report_conversations')",
                           -1, &st, NULL) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW) {
        fprintf(stderr, "attune: %s: %s\n", path, sqlite3_errmsg(db));
        goto fail;
    }
    version = sqlite3_column_int64(st, 0);
    has_conversations = sqlite3_column_int64(st, 1);
    has_views = sqlite3_column_int64(st, 2);
    sqlite3_finalize(st);
    st = NULL;
    if (!has_conversations) {
        fprintf(stderr, "attune: %s is not an attune database (it has no conversations "
                "table)\n", path);
        goto fail;
    }
    if (!has_views) {
        fprintf(stderr, "attune: %s has schema version %lld, older than reports need (%d, the "
                "report views): start attuned on it once to bring it up to date\n", path,
                (long long)version, REPORT_SCHEMA);
        goto fail;
    }
    return db;
fail:
    sqlite3_finalize(st);
    sqlite3_close(db);
    return NULL;
}

int cmd_report(int argc, char **argv)
{
    static const struct option opts[] = {
        {"db", required_argument, NULL, 'd'},
        {"by", required_argument, NULL, 'b'},
        {"since", required_argument, NULL, 's'},
        {"until", required_argument, NULL, 'u'},
        {"min-n", required_argument, NULL, 'n'},
        {"days", required_argument, NULL, 'D'},
        {"format", required_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static const struct { const char *name, *col; } dims[] = {
        {"agent", "agent_id"}, {"queue", "queue"}, {"channel", "channel"}, {"day", "day"},
    };
    options o = {
        .db = DEFAULT_DB,
        .since_ms = AT_NULL_INT,
        .until_ms = AT_NULL_INT,
        .min_n = 1,
    };
    bool has_by = false, is_day;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'd': o.db = optarg; break;
        case 'b':
            for (size_t i = 0; i < sizeof dims / sizeof *dims; i++)
                if (strcmp(optarg, dims[i].name) == 0) {
                    o.by_name = dims[i].name;
                    o.by_col = dims[i].col;
                }
            if (!o.by_name) {
                fprintf(stderr, "attune: --by must be agent, queue, channel or day\n");
                return EXIT_USAGE;
            }
            has_by = true;
            break;
        case 's':
        case 'u': {
            int64_t ms;
            if (parse_date(optarg, &ms, &is_day)) {
                fprintf(stderr, "attune: --%s \"%s\" is not a date: use YYYY-MM-DD or an RFC "
                        "3339 time with Z or an offset, such as 2024-05-01T09:30:00Z\n",
                        c == 's' ? "since" : "until", optarg);
                return EXIT_USAGE;
            }
            if (c == 's')
                o.since_ms = ms;
            else
                o.until_ms = is_day ? ms + MS_PER_DAY : ms;
            break;
        }
        case 'n':
            if (!parse_count(optarg, 1, 1000000000, &o.min_n)) {
                fprintf(stderr, "attune: --min-n must be an integer from 1 to 1000000000\n");
                return EXIT_USAGE;
            }
            break;
        case 'D':
            if (!parse_count(optarg, 1, 36500, &o.days)) {
                fprintf(stderr, "attune: --days must be an integer from 1 to 36500\n");
                return EXIT_USAGE;
            }
            break;
        case 'f':
            if (strcmp(optarg, "table") == 0)
                o.fmt = FMT_TABLE;
            else if (strcmp(optarg, "csv") == 0)
                o.fmt = FMT_CSV;
            else if (strcmp(optarg, "json") == 0)
                o.fmt = FMT_JSON;
            else {
                fprintf(stderr, "attune: --format must be table, csv or json\n");
                return EXIT_USAGE;
            }
            break;
        case 'h': usage(stdout); return EXIT_OK;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "attune: report: which report? ");
        list_reports(stderr);
        return EXIT_USAGE;
    }
    if (optind + 1 < argc) {
        fprintf(stderr, "attune: report: unexpected argument \"%s\"\n", argv[optind + 1]);
        return EXIT_USAGE;
    }
    const report_def *rep = NULL;
    for (size_t i = 0; i < N_REPORTS; i++)
        if (strcmp(argv[optind], reports[i].name) == 0)
            rep = &reports[i];
    if (!rep) {
        fprintf(stderr, "attune: unknown report \"%s\"; ", argv[optind]);
        list_reports(stderr);
        return EXIT_USAGE;
    }
    if (has_by && !rep->takes_by) {
        fprintf(stderr, "attune: --by applies to resolution-time, escalations and "
                "repeat-contacts, not %s\n", rep->name);
        return EXIT_USAGE;
    }
    if (o.days && rep->run != report_repeat) {
        fprintf(stderr, "attune: --days applies to repeat-contacts only\n");
        return EXIT_USAGE;
    }
    if (o.since_ms != AT_NULL_INT && o.until_ms != AT_NULL_INT && o.since_ms >= o.until_ms) {
        fprintf(stderr, "attune: --since must be before --until\n");
        return EXIT_USAGE;
    }
    if (!o.by_name) {
        o.by_name = dims[0].name;
        o.by_col = dims[0].col;
    }
    if (!o.days)
        o.days = DEFAULT_DAYS;

    sqlite3 *db = open_db(o.db);
    if (!db)
        return EXIT_INPUT;
    table t;
    int rc = rep->run(db, &o, &t);
    sqlite3_close(db);
    if (rc == 0) {
        rc = table_write(stdout, &t, o.fmt);
        if (rc == 0 && (fflush(stdout) != 0 || ferror(stdout))) {
            fprintf(stderr, "attune: cannot write the report: %s\n", strerror(errno));
            rc = -1;
        }
    }
    table_fini(&t);
    return rc ? EXIT_INPUT : EXIT_OK;
}
