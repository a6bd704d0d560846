/*
 * ext_sqlite.c: attune's SQLite loadable extension, for analysts who query the store (or any
 * table of text) directly:
 *
 *   sqlite> .load build/attune_sqlite
 *   sqlite> SELECT attune_sentiment(text), attune_score(text, speaker) FROM utterances;
 *   sqlite> SELECT corr(csat, empathy_score), median(resolution_ms) FROM conversations;
 *
 * Scalar functions: attune_sentiment(text) is the VADER compound (REAL); attune_score(text
 * [, speaker]) is the JSON that `attune score` writes for the text (sentiment, empathy,
 * dismissive, frustration, frustration_score, markers); attune_model_id() is the id of the model
 * they score with (compare it with utterances.model_id). Aggregates: corr(x, y) (Pearson r),
 * spearman(x, y), median(x) and percentile(x, p) with p from 0 to 100 (as SQLite's own
 * percentile extension; type 7 interpolation). Rows where an argument is NULL are skipped; a
 * result that cannot be computed (too few rows, a constant variable) is NULL.
 *
 * A thin wrapper over libattune (ARCHITECTURE.md): the numbers are at_score's and at_pearson's,
 * and the JSON is cli_put_result's. The model is built once per connection, on first use, from
 * $ATTUNE_LEXICONS, else lexicons/ beside the build directory holding this file, else the
 * installed lexicons; a model that cannot be built is an SQL error naming the directory.
 */
#include <dlfcn.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sqlite3ext.h>
SQLITE_EXTENSION_INIT1

#include "cli.h"

#define EXPORT __attribute__((visibility("default")))

/* What the scoring functions of one connection share. A connection runs one statement step at a
 * time, so one scratch suffices. */
typedef struct ext_state {
    int refs;           /* functions registered with this state; freed at 0 */
    at_model *model;    /* built on first use */
    at_scratch *scratch;
} ext_state;

static void state_unref(void *p)
{
    ext_state *st = p;
    if (--st->refs > 0)
        return;
    at_scratch_free(st->scratch);
    at_model_free(st->model);
    sqlite3_free(st);
}

static bool has_lexicons(const char *dir)
{
    char path[PATH_MAX + 32];
    struct stat sb;
    snprintf(path, sizeof path, "%s/vader/vader_lexicon.txt", dir);
    return stat(path, &sb) == 0;
}

/* The lexicon directory: $ATTUNE_LEXICONS, else lexicons/ next to the directory holding this
 * shared object (build/attune_sqlite.so in a source tree), else at_lexicon_dir_default's. */
static void lexicon_dir(char *out, size_t len)
{
    const char *env = getenv("ATTUNE_LEXICONS");
    if (env && *env) {
        snprintf(out, len, "%s", env);
        return;
    }
    /* Any address inside this shared object names its file (a data address: ISO C has no
     * conversion from a function pointer to void *). */
    static const char self = 0;
    Dl_info info;
    if (dladdr(&self, &info) && info.dli_fname) {
        const char *slash = strrchr(info.dli_fname, '/');
        int dir_len = slash ? (int)(slash - info.dli_fname) : 1;
        int n = snprintf(out, len, "%.*s/../lexicons", dir_len, slash ? info.dli_fname : ".");
        if (n > 0 && (size_t)n < len && has_lexicons(out))
            return;
    }
    at_lexicon_dir_default(out, len);
}

/* The connection's model, built when first needed; NULL after reporting an SQL error. */
static const at_model *get_model(sqlite3_context *ctx, at_scratch **scratch)
{
    ext_state *st = sqlite3_user_data(ctx);
    if (!st->model) {
        char dir[PATH_MAX], err[1024] = "";
        lexicon_dir(dir, sizeof dir);
        int rc = at_model_new(dir, &st->model, err, sizeof err);
        if (rc) {
            char *msg = sqlite3_mprintf("attune: cannot build the scoring model from %s: %s "
                                        "(set ATTUNE_LEXICONS to attune's lexicons/ directory)",
                                        dir, err[0] ? err : at_strerror(rc));
            if (msg) {
                sqlite3_result_error(ctx, msg, -1);
                sqlite3_free(msg);
            } else {
                sqlite3_result_error_nomem(ctx);
            }
            st->model = NULL;
            return NULL;
        }
    }
    if (!st->scratch && at_scratch_new(&st->scratch)) {
        sqlite3_result_error_nomem(ctx);
        return NULL;
    }
    *scratch = st->scratch;
    return st->model;
}

/* Scores argv[0] as speaker. Returns 0 with *r filled, 1 when the text is NULL (the result is
 * NULL), -1 after reporting an error. */
static int score_arg(sqlite3_context *ctx, sqlite3_value *text, at_speaker speaker,
                     unsigned flags, at_result *r)
{
    if (sqlite3_value_type(text) == SQLITE_NULL) {
        sqlite3_result_null(ctx);
        return 1;
    }
    const char *s = (const char *)sqlite3_value_text(text);
    int len = sqlite3_value_bytes(text);
    if (!s) {
        sqlite3_result_error_nomem(ctx);
        return -1;
    }
    at_scratch *scratch;
    const at_model *model = get_model(ctx, &scratch);
    if (!model)
        return -1;
    int rc = at_score(model, scratch, s, (size_t)len, speaker, flags, r);
    if (rc) {
        if (rc == AT_ENOMEM)
            sqlite3_result_error_nomem(ctx);
        else
            sqlite3_result_error(ctx, at_strerror(rc), -1);
        return -1;
    }
    return 0;
}

static void fn_sentiment(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    at_result r;
    if (score_arg(ctx, argv[0], AT_SPEAKER_CUSTOMER, AT_SCORE_SENTIMENT_ONLY, &r) == 0)
        sqlite3_result_double(ctx, r.sentiment.compound);
}

static void fn_score(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    at_speaker speaker = AT_SPEAKER_CUSTOMER;
    if (argc > 1 && sqlite3_value_type(argv[1]) != SQLITE_NULL) {
        const char *name = (const char *)sqlite3_value_text(argv[1]);
        if (!name || at_speaker_parse(name, (size_t)sqlite3_value_bytes(argv[1]), &speaker)) {
            sqlite3_result_error(ctx, "attune_score(): speaker must be 'customer', 'agent', "
                                 "'bot' or 'system'", -1);
            return;
        }
    }
    at_result r;
    if (score_arg(ctx, argv[0], speaker, 0, &r) != 0)
        return;
    char *json = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&json, &len);
    if (!f) {
        sqlite3_result_error_nomem(ctx);
        return;
    }
    putc('{', f);
    cli_put_result(f, &r, speaker, true);
    putc('}', f);
    if (fclose(f) != 0 || !json) {
        free(json);
        sqlite3_result_error_nomem(ctx);
        return;
    }
    sqlite3_result_text64(ctx, json, len, free, SQLITE_UTF8);
    sqlite3_result_subtype(ctx, 'J'); /* JSON, for json_object() and friends */
}

static void fn_model_id(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    (void)argv;
    at_scratch *scratch;
    const at_model *model = get_model(ctx, &scratch);
    if (model)
        sqlite3_result_text(ctx, at_model_id(model), -1, SQLITE_TRANSIENT);
}

/* ---- statistics aggregates -------------------------------------------------------------- */

/* The values of one group, kept until the final call. */
typedef struct agg {
    double *x, *y;
    size_t n, cap;
    double p;       /* percentile: the requested percentile, 0..100 */
    bool has_p;
    bool failed;    /* an error was reported; later rows are ignored */
} agg;

/* Reads a numeric argument. Returns 1 with *out, 0 when it is NULL, -1 after an error. */
static int num_arg(sqlite3_context *ctx, sqlite3_value *v, const char *fn, int pos, double *out)
{
    switch (sqlite3_value_numeric_type(v)) {
    case SQLITE_NULL:
        return 0;
    case SQLITE_INTEGER:
    case SQLITE_FLOAT:
        *out = sqlite3_value_double(v);
        return 1;
    default: {
        char *msg = sqlite3_mprintf("%s(): argument %d is not a number", fn, pos);
        if (msg) {
            sqlite3_result_error(ctx, msg, -1);
            sqlite3_free(msg);
        } else {
            sqlite3_result_error_nomem(ctx);
        }
        return -1;
    }
    }
}

static int agg_push(sqlite3_context *ctx, agg *a, double x, double y, bool with_y)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        double *nx = sqlite3_realloc64(a->x, cap * sizeof *nx);
        if (nx)
            a->x = nx;
        double *ny = with_y && nx ? sqlite3_realloc64(a->y, cap * sizeof *ny) : NULL;
        if (ny)
            a->y = ny;
        if (!nx || (with_y && !ny)) {
            a->failed = true;
            sqlite3_result_error_nomem(ctx);
            return -1;
        }
        a->cap = cap;
    }
    a->x[a->n] = x;
    if (with_y)
        a->y[a->n] = y;
    a->n++;
    return 0;
}

static void agg_free(agg *a)
{
    sqlite3_free(a->x);
    sqlite3_free(a->y);
    a->x = a->y = NULL;
    a->n = a->cap = 0;
}

static agg *get_agg(sqlite3_context *ctx)
{
    agg *a = sqlite3_aggregate_context(ctx, sizeof *a);
    if (!a)
        sqlite3_result_error_nomem(ctx);
    return a;
}

static void pair_step(sqlite3_context *ctx, sqlite3_value **argv, const char *fn)
{
    agg *a = get_agg(ctx);
    if (!a || a->failed)
        return;
    double x, y;
    int hx = num_arg(ctx, argv[0], fn, 1, &x);
    int hy = hx < 0 ? -1 : num_arg(ctx, argv[1], fn, 2, &y);
    if (hx < 0 || hy < 0) {
        a->failed = true;
        return;
    }
    if (hx && hy)
        agg_push(ctx, a, x, y, true);
}

static void result_real_or_null(sqlite3_context *ctx, double v)
{
    if (isnan(v))
        sqlite3_result_null(ctx);
    else
        sqlite3_result_double(ctx, v);
}

static void corr_step(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    pair_step(ctx, argv, "corr");
}

static void corr_final(sqlite3_context *ctx)
{
    agg *a = sqlite3_aggregate_context(ctx, 0);
    if (!a) {
        sqlite3_result_null(ctx);
        return;
    }
    if (!a->failed)
        result_real_or_null(ctx, at_pearson(a->x, a->y, a->n));
    agg_free(a);
}

static void spearman_step(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    pair_step(ctx, argv, "spearman");
}

static void spearman_final(sqlite3_context *ctx)
{
    agg *a = sqlite3_aggregate_context(ctx, 0);
    if (!a) {
        sqlite3_result_null(ctx);
        return;
    }
    if (!a->failed) {
        double rho;
        if (at_spearman(a->x, a->y, a->n, &rho))
            sqlite3_result_error_nomem(ctx);
        else
            result_real_or_null(ctx, rho);
    }
    agg_free(a);
}

static void median_step(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    agg *a = get_agg(ctx);
    if (!a || a->failed)
        return;
    double x;
    int h = num_arg(ctx, argv[0], "median", 1, &x);
    if (h < 0)
        a->failed = true;
    else if (h)
        agg_push(ctx, a, x, 0, false);
}

static void percentile_step(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    agg *a = get_agg(ctx);
    if (!a || a->failed)
        return;
    double p;
    int hp = num_arg(ctx, argv[1], "percentile", 2, &p);
    if (hp <= 0 || p < 0 || p > 100 || (a->has_p && p != a->p)) {
        if (hp >= 0)
            sqlite3_result_error(ctx, "percentile(): the second argument must be the same "
                                 "number from 0 to 100 for every row of a group", -1);
        a->failed = true;
        return;
    }
    a->p = p;
    a->has_p = true;
    double x;
    int h = num_arg(ctx, argv[0], "percentile", 1, &x);
    if (h < 0)
        a->failed = true;
    else if (h)
        agg_push(ctx, a, x, 0, false);
}

static void quantile_final(sqlite3_context *ctx, double p)
{
    agg *a = sqlite3_aggregate_context(ctx, 0);
    if (!a) {
        sqlite3_result_null(ctx);
        return;
    }
    if (!a->failed)
        result_real_or_null(ctx, at_quantile(a->x, a->n, p));
    agg_free(a);
}

static void median_final(sqlite3_context *ctx)
{
    quantile_final(ctx, 0.5);
}

static void percentile_final(sqlite3_context *ctx)
{
    agg *a = sqlite3_aggregate_context(ctx, 0);
    quantile_final(ctx, a ? a->p / 100.0 : 0);
}

/* ---- registration ----------------------------------------------------------------------- */

#ifndef SQLITE_RESULT_SUBTYPE
#define SQLITE_RESULT_SUBTYPE 0 /* SQLite before 3.45 has no such flag and needs none */
#endif

EXPORT int sqlite3_attunesqlite_init(sqlite3 *db, char **pzErrMsg,
                                     const sqlite3_api_routines *pApi);

EXPORT int sqlite3_attunesqlite_init(sqlite3 *db, char **pzErrMsg,
                                     const sqlite3_api_routines *pApi)
{
    SQLITE_EXTENSION_INIT2(pApi);
    (void)pzErrMsg;
    ext_state *st = sqlite3_malloc(sizeof *st);
    if (!st)
        return SQLITE_NOMEM;
    memset(st, 0, sizeof *st);
    /* The model does not change within a connection, so scoring is deterministic. */
    const int det = SQLITE_UTF8 | SQLITE_DETERMINISTIC;
    static const struct {
        const char *name;
        int n_args;
        int flags;
        void (*fn)(sqlite3_context *, int, sqlite3_value **);
    } scalars[] = {
        {"attune_sentiment", 1, 0, fn_sentiment},
        {"attune_score", 1, SQLITE_RESULT_SUBTYPE, fn_score},
        {"attune_score", 2, SQLITE_RESULT_SUBTYPE, fn_score},
        {"attune_model_id", 0, 0, fn_model_id},
    };
    int rc = SQLITE_OK;
    for (size_t i = 0; rc == SQLITE_OK && i < sizeof scalars / sizeof *scalars; i++) {
        st->refs++;
        rc = sqlite3_create_function_v2(db, scalars[i].name, scalars[i].n_args,
                                        det | scalars[i].flags, st, scalars[i].fn, NULL, NULL,
                                        state_unref);
        /* On failure SQLite has already called the destructor. */
    }
    if (rc != SQLITE_OK)
        return rc;
    static const struct {
        const char *name;
        int n_args;
        void (*step)(sqlite3_context *, int, sqlite3_value **);
        void (*final)(sqlite3_context *);
    } aggregates[] = {
        {"corr", 2, corr_step, corr_final},
        {"spearman", 2, spearman_step, spearman_final},
        {"median", 1, median_step, median_final},
        {"percentile", 2, percentile_step, percentile_final},
    };
    for (size_t i = 0; rc == SQLITE_OK && i < sizeof aggregates / sizeof *aggregates; i++)
        rc = sqlite3_create_function_v2(db, aggregates[i].name, aggregates[i].n_args,
                                        det | SQLITE_INNOCUOUS, NULL, NULL, aggregates[i].step,
                                        aggregates[i].final, NULL);
    return rc;
}

/* The generic entry point, for a copy of this file under another name. */
EXPORT int sqlite3_extension_init(sqlite3 *db, char **pzErrMsg,
                                  const sqlite3_api_routines *pApi);

EXPORT int sqlite3_extension_init(sqlite3 *db, char **pzErrMsg,
                                  const sqlite3_api_routines *pApi)
{
    return sqlite3_attunesqlite_init(db, pzErrMsg, pApi);
}
