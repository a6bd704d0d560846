/*
 * model.c: the public face of libattune. Builds a model (VADER data + marker sets) from a
 * lexicon directory, names categories and speakers, and scores or explains one utterance.
 *
 * A model is immutable once at_model_new returns; scratch objects hold all per-call state, so
 * any number of threads may score with one model, each with its own scratch.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

struct at_model {
    at__vader *vader;
    at__markers *markers;
    at__redactor *redactor;
    char id[24];     /* "m-" + 16 hex digits */
    double build_ms; /* wall time of at_model_new */
};

struct at_scratch {
    at__vscratch *vader;
    at__mscratch *markers;
    at__rscratch *redact;
};

static const char *const category_names[AT_N_CATEGORIES] = {
    "acknowledgement", "validation", "apology", "reassurance", "perspective_taking",
    "active_listening", "ownership", "gratitude",
    "minimising", "deflecting", "policy_wall", "blaming", "impatience", "but_negation",
    "anger", "escalation_request", "churn_threat", "repeat_contact", "effort", "legal_threat",
    "abuse", "shouting", "sarcasm",
};

static const char *const family_names[AT_N_FAMILIES] = {"empathy", "dismissive", "frustration"};
static const char *const speaker_names[AT_N_SPEAKERS] = {"customer", "agent", "bot", "system"};

const char *at_strerror(int code)
{
    switch (code) {
    case AT_OK: return "success";
    case AT_ENOMEM: return "out of memory";
    case AT_EIO: return "lexicon file could not be read";
    case AT_ESYNTAX: return "lexicon file is malformed";
    case AT_EINVAL: return "invalid argument";
    case AT_ELIMIT: return "pattern hit a match limit";
    default: return "unknown error";
    }
}

const char *at_category_name(at_category cat)
{
    return (unsigned)cat < AT_N_CATEGORIES ? category_names[cat] : "unknown";
}

at_family at_category_family(at_category cat)
{
    if (cat <= AT_CAT_GRATITUDE)
        return AT_FAMILY_EMPATHY;
    if (cat <= AT_CAT_BUT_NEGATION)
        return AT_FAMILY_DISMISSIVE;
    return AT_FAMILY_FRUSTRATION;
}

const char *at_family_name(at_family fam)
{
    return (unsigned)fam < AT_N_FAMILIES ? family_names[fam] : "unknown";
}

static int parse_name(const char *const *names, int n, const char *s, size_t len)
{
    for (int i = 0; i < n; i++)
        if (strlen(names[i]) == len && memcmp(names[i], s, len) == 0)
            return i;
    return -1;
}

int at_category_parse(const char *name, size_t len, at_category *out)
{
    int i = parse_name(category_names, AT_N_CATEGORIES, name, len);
    if (i < 0)
        return AT_EINVAL;
    *out = (at_category)i;
    return 0;
}

int at_speaker_parse(const char *name, size_t len, at_speaker *out)
{
    int i = parse_name(speaker_names, AT_N_SPEAKERS, name, len);
    if (i < 0)
        return AT_EINVAL;
    *out = (at_speaker)i;
    return 0;
}

const char *at_speaker_name(at_speaker speaker)
{
    return (unsigned)speaker < AT_N_SPEAKERS ? speaker_names[speaker] : "unknown";
}

#ifndef ATTUNE_DATADIR
#define ATTUNE_DATADIR "/usr/local/share/attune"
#endif

static bool has_lexicons(const char *dir)
{
    char path[4096];
    int n = snprintf(path, sizeof path, "%s/vader/vader_lexicon.txt", dir);
    return n > 0 && (size_t)n < sizeof path && access(path, R_OK) == 0;
}

int at_lexicon_dir_default(char *out, size_t len)
{
    const char *env = getenv("ATTUNE_LEXICONS");
    if (env && *env) {
        snprintf(out, len, "%s", env);
        return has_lexicons(out) ? 0 : AT_EINVAL;
    }
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            snprintf(out, len, "%s/../lexicons", exe);
            if (has_lexicons(out))
                return 0;
        }
    }
    snprintf(out, len, "%s/lexicons", ATTUNE_DATADIR);
    return has_lexicons(out) ? 0 : AT_EINVAL;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int at_model_new(const char *lexicon_dir, at_model **out, char *err, size_t err_len)
{
    double t0 = now_ms();
    if (err && err_len)
        err[0] = '\0';
    at_model *m = calloc(1, sizeof *m);
    if (!m)
        return AT_ENOMEM;
    uint64_t hash = 0xcbf29ce484222325ULL;
    int rc = at__vader_new(lexicon_dir, &hash, &m->vader, err, err_len);
    if (rc)
        goto fail;
    rc = at__markers_new(lexicon_dir, m->vader, &hash, &m->markers, err, err_len);
    if (rc)
        goto fail;
    /* Redaction changes what is stored, never a score: it is not part of the model id. */
    rc = at__redactor_new(lexicon_dir, &m->redactor, err, err_len);
    if (rc)
        goto fail;
    snprintf(m->id, sizeof m->id, "m-%016llx", (unsigned long long)hash);
    m->build_ms = now_ms() - t0;
    *out = m;
    return 0;
fail:
    if (rc == AT_ENOMEM && err && err_len && !err[0])
        at__errf(err, err_len, "%s: out of memory", lexicon_dir);
    at_model_free(m);
    return rc;
}

void at_model_free(at_model *model)
{
    if (!model)
        return;
    at__markers_free(model->markers);
    at__redactor_free(model->redactor);
    at__vader_free(model->vader);
    free(model);
}

const char *at_model_id(const at_model *model)
{
    return model->id;
}

double at_model_build_ms(const at_model *model)
{
    return model->build_ms;
}

size_t at_model_n_patterns(const at_model *model)
{
    return at__markers_n_patterns(model->markers);
}

size_t at_model_n_unfiltered(const at_model *model)
{
    return at__markers_n_unfiltered(model->markers);
}

int at_scratch_new(at_scratch **out)
{
    at_scratch *s = calloc(1, sizeof *s);
    if (!s)
        return AT_ENOMEM;
    if (at__vscratch_new(&s->vader) || at__mscratch_new(&s->markers) ||
        at__rscratch_new(&s->redact)) {
        at_scratch_free(s);
        return AT_ENOMEM;
    }
    *out = s;
    return 0;
}

void at_scratch_free(at_scratch *scratch)
{
    if (!scratch)
        return;
    at__vscratch_free(scratch->vader);
    at__mscratch_free(scratch->markers);
    at__rscratch_free(scratch->redact);
    free(scratch);
}

static int score(const at_model *model, at_scratch *scratch, const char *text, size_t len,
                 at_speaker speaker, unsigned flags, at_result *out, at__buf *trace)
{
    if ((unsigned)speaker >= AT_N_SPEAKERS)
        return AT_EINVAL;
    memset(out, 0, sizeof *out);
    int rc = at__vader_score(model->vader, scratch->vader, text, len, &out->sentiment, trace);
    if (rc)
        return rc;
    if (flags & AT_SCORE_SENTIMENT_ONLY)
        return 0;
    return at__markers_score(model->markers, scratch->markers, text, len, speaker,
                             out->sentiment.compound, out, trace);
}

int at_score(const at_model *model, at_scratch *scratch, const char *text, size_t len,
             at_speaker speaker, unsigned flags, at_result *out)
{
    return score(model, scratch, text, len, speaker, flags, out, NULL);
}

int at_redact(const at_model *model, at_scratch *scratch, const char *text, size_t len,
              const char **out, size_t *out_len, unsigned *n_redactions)
{
    return at__redact(model->redactor, scratch->redact, text, len, out, out_len, n_redactions);
}

int at_explain(const at_model *model, const char *text, size_t len, at_speaker speaker,
               char **out)
{
    at_scratch *scratch = NULL;
    at__buf trace = {0};
    at_result r;
    int rc = at_scratch_new(&scratch);
    if (rc)
        goto fail;
    rc = AT_ENOMEM;
    if (at__buf_printf(&trace, "model %s, speaker %s, %zu bytes\nsentiment (vader):\n",
                       model->id, at_speaker_name(speaker), len))
        goto fail;
    rc = score(model, scratch, text, len, speaker, 0, &r, &trace);
    if (rc)
        goto fail;
    rc = AT_ENOMEM;
    if (!r.n_markers && at__buf_printf(&trace, "markers: none\n"))
        goto fail;
    if (r.n_limit_hits &&
        at__buf_printf(&trace, "warning: %d pattern(s) hit the PCRE2 match limit and were "
                       "skipped\n", r.n_limit_hits))
        goto fail;
    if (at__buf_printf(&trace, "result: neg %.3f neu %.3f pos %.3f compound %.4f, %zu marker(s)",
                       r.sentiment.neg, r.sentiment.neu, r.sentiment.pos, r.sentiment.compound,
                       r.n_markers))
        goto fail;
    if (speaker == AT_SPEAKER_CUSTOMER &&
        at__buf_printf(&trace, ", frustration %.4f", r.frustration_score))
        goto fail;
    if (at__buf_printf(&trace, "\n"))
        goto fail;
    at_scratch_free(scratch);
    *out = trace.data;
    return 0;
fail:
    at__buf_fini(&trace);
    at_scratch_free(scratch);
    return rc;
}
