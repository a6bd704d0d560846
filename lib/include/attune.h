/*
 * attune.h: the whole public API of libattune, attune's scoring core.
 *
 * A model (at_model) is built once from a lexicon directory, is immutable afterwards and may be
 * shared read-only by any number of threads. Each thread scores with its own scratch object
 * (at_scratch). Scoring one utterance gives its VADER sentiment, the empathy, dismissive and
 * frustration markers that fired (with byte offsets and the id of the pattern that fired) and a
 * frustration score in [0,1].
 *
 * Conventions: functions return 0 on success or a negative AT_E... code; at_strerror() gives
 * static text for a code. Constructors hand the object out through `T **out`. Parameters are
 * borrowed unless a comment says "takes". x_free(NULL) is a no-op. The library never prints and
 * never exits.
 */
#ifndef ATTUNE_H
#define ATTUNE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AT_VERSION "0.1.0"

/* Error codes (always negative). */
enum {
    AT_OK = 0,
    AT_ENOMEM = -1,   /* out of memory */
    AT_EIO = -2,      /* a lexicon file could not be read */
    AT_ESYNTAX = -3,  /* a lexicon file has a malformed line or a pattern does not compile */
    AT_EINVAL = -4,   /* an argument is out of range */
    AT_ELIMIT = -5,   /* a pattern hit the PCRE2 match or depth limit (it was skipped) */
};

/* Returns static text describing an AT_E... code. */
const char *at_strerror(int code);

typedef enum at_speaker {
    AT_SPEAKER_CUSTOMER = 0,
    AT_SPEAKER_AGENT = 1,
    AT_SPEAKER_BOT = 2,
    AT_SPEAKER_SYSTEM = 3,
} at_speaker;
#define AT_N_SPEAKERS 4

/* Parses "customer", "agent", "bot" or "system" (len bytes). Returns 0 and sets *out, or
 * AT_EINVAL. */
int at_speaker_parse(const char *name, size_t len, at_speaker *out);
/* Returns the static name of a speaker. */
const char *at_speaker_name(at_speaker speaker);

typedef enum at_family {
    AT_FAMILY_EMPATHY = 0,
    AT_FAMILY_DISMISSIVE = 1,
    AT_FAMILY_FRUSTRATION = 2,
} at_family;
#define AT_N_FAMILIES 3

/* Marker categories, grouped by family. The order is the order of output arrays. */
typedef enum at_category {
    /* empathy (agent and bot turns) */
    AT_CAT_ACKNOWLEDGEMENT = 0,
    AT_CAT_VALIDATION,
    AT_CAT_APOLOGY,
    AT_CAT_REASSURANCE,
    AT_CAT_PERSPECTIVE_TAKING,
    AT_CAT_ACTIVE_LISTENING,
    AT_CAT_OWNERSHIP,
    AT_CAT_GRATITUDE,
    /* dismissive sub-kinds (agent and bot turns) */
    AT_CAT_MINIMISING,
    AT_CAT_DEFLECTING,
    AT_CAT_POLICY_WALL,
    AT_CAT_BLAMING,
    AT_CAT_IMPATIENCE,
    AT_CAT_BUT_NEGATION,
    /* frustration signals (customer turns) */
    AT_CAT_ANGER,
    AT_CAT_ESCALATION_REQUEST,
    AT_CAT_CHURN_THREAT,
    AT_CAT_REPEAT_CONTACT,
    AT_CAT_EFFORT,
    AT_CAT_LEGAL_THREAT,
    AT_CAT_ABUSE,
    AT_CAT_SHOUTING,
    AT_CAT_SARCASM,
    AT_N_CATEGORIES
} at_category;

/* Returns the static name of a category ("acknowledgement", "policy_wall", ...). */
const char *at_category_name(at_category cat);
/* Returns the family a category belongs to. */
at_family at_category_family(at_category cat);
/* Returns the static name of a family ("empathy", "dismissive", "frustration"). */
const char *at_family_name(at_family fam);
/* Parses a category name. Returns 0 and sets *out, or AT_EINVAL. */
int at_category_parse(const char *name, size_t len, at_category *out);

/* Sentiment scores, rounded as the reference VADER does: neg, neu, pos to 3 decimals, compound
 * to 4. */
typedef struct at_sentiment {
    double neg;
    double neu;
    double pos;
    double compound;
} at_sentiment;

/* One marker that fired. Offsets are bytes into the scored text, [start, end). */
typedef struct at_marker {
    at_category category;
    const char *pattern_id; /* borrowed from the model */
    size_t start;
    size_t end;
} at_marker;

/* The result of scoring one utterance. Arrays are borrowed from the scratch object and stay
 * valid until its next use. */
typedef struct at_result {
    at_sentiment sentiment;
    const at_marker *markers; /* ordered by start offset, then category */
    size_t n_markers;
    uint32_t category_mask; /* bit (1u << cat) set when category cat fired */
    double frustration_score; /* [0,1]; 0 for speakers other than customer */
    int n_limit_hits; /* patterns skipped because they hit a PCRE2 limit */
} at_result;

typedef struct at_model at_model;
typedef struct at_scratch at_scratch;

/* Builds a model from a lexicon directory (see lexicons/README.md for the layout). All patterns
 * are compiled (with JIT where available). On failure returns a negative code and, when err is
 * not NULL, writes a message naming the file, line and reason into err (err_len bytes, always
 * NUL-terminated). On success *out is new (free with at_model_free). */
int at_model_new(const char *lexicon_dir, at_model **out, char *err, size_t err_len);
void at_model_free(at_model *model);

/* A stable id of the model's content (hex digest of every lexicon file), borrowed. Two models
 * built from identical files have the same id. */
const char *at_model_id(const at_model *model);
/* Wall time the build took, in milliseconds. */
double at_model_build_ms(const at_model *model);
/* Number of marker patterns, and of those that have no prefilter literal (always run). */
size_t at_model_n_patterns(const at_model *model);
size_t at_model_n_unfiltered(const at_model *model);

/* Creates per-thread scratch for scoring with any model. *out is new (free with
 * at_scratch_free). */
int at_scratch_new(at_scratch **out);
void at_scratch_free(at_scratch *scratch);

/* Scoring options (bit flags). */
enum {
    AT_SCORE_SENTIMENT_ONLY = 1u << 0, /* skip markers and frustration */
};

/* Scores one utterance of len bytes of UTF-8 text (it need not be NUL-terminated). Fills *out
 * with arrays borrowed from scratch. Returns 0, or AT_ENOMEM. Patterns that hit a PCRE2 limit
 * are skipped and counted in out->n_limit_hits; that is not an error. */
int at_score(const at_model *model, at_scratch *scratch, const char *text, size_t len,
             at_speaker speaker, unsigned flags, at_result *out);

/* Scores text like at_score and writes a readable explanation: every token with its lexicon
 * valence and each rule that changed it, the sum, punctuation emphasis, the compound, each marker
 * with its pattern id, and each candidate marker that was suppressed and why. *out is new
 * (free with free()). */
int at_explain(const at_model *model, const char *text, size_t len, at_speaker speaker,
               char **out);

/* ---- conversation metrics (ANALYTICS.md section 2) ------------------------------------- */

/* Absent integers hold AT_NULL_INT; absent reals hold NAN. */
#define AT_NULL_INT INT64_MIN

/* One turn as the metrics need it. */
typedef struct at_turn {
    int64_t seq;
    at_speaker speaker;
    int64_t ts_ms;            /* wall time, ms since the epoch, or AT_NULL_INT */
    int64_t start_ms, end_ms; /* voice offsets from the call start, or AT_NULL_INT */
    double compound;
    double frustration_score; /* customer turns; NAN otherwise */
    uint32_t category_mask;   /* bit (1u << at_category) per category that fired */
    int solution_first;       /* agent turns: 1 when the turn offers a fix (an ownership marker)
                               * before any empathy marker, 0 when after one, -1 when no fix */
} at_turn;

/* Conversation-level facts (from start, end and outcome messages). */
typedef struct at_conv_facts {
    int64_t started_at, ended_at, resolved_at; /* ms since the epoch, or AT_NULL_INT */
    int resolved, escalated, transferred;      /* 0, 1, or -1 when unknown */
    double csat;                               /* NAN when unknown */
    int64_t nps;                               /* AT_NULL_INT when unknown */
} at_conv_facts;

/* Every metric of ANALYTICS.md section 2, under the names used there. NULL (not applicable) is
 * AT_NULL_INT or NAN. */
typedef struct at_conv_metrics {
    int64_t turns, agent_turns, customer_turns;
    int64_t duration_ms, first_response_ms, max_response_ms;
    double avg_response_ms;
    double customer_sentiment_q[4]; /* q1..q4 */
    double customer_sentiment_start, customer_sentiment_end, customer_sentiment_min,
        customer_sentiment_mean, sentiment_trend;
    int64_t empathy_opportunities, empathy_responses;
    double empathy_response_rate;
    int64_t solution_before_acknowledgement;
    double empathy_score;
    double frustration_peak, frustration_end, recovery;
    int64_t escalation_requested, churn_threat, legal_threat, abuse;
    int64_t interruptions_agent, interruptions_customer;
    double talk_ratio_agent;
    int64_t silence_ms;
    int64_t resolved, resolution_ms;
    double csat;
    int64_t nps, escalated, transferred;
} at_conv_metrics;

/* Computes the metrics of a conversation from its turns (any order; they are taken in seq
 * order) and facts. silence_threshold_ms: gaps longer than this count as silence. Returns 0 or
 * AT_ENOMEM. */
int at_conversation_metrics(const at_turn *turns, size_t n_turns, const at_conv_facts *facts,
                            int64_t silence_threshold_ms, at_conv_metrics *out);

/* ---- statistics (ANALYTICS.md section 3), shared by `attune report` and the SQLite
 * extension ------------------------------------------------------------------------------- */

/* Pearson r of n pairs; NAN when n < 2 or a variable is constant. */
double at_pearson(const double *x, const double *y, size_t n);
/* Spearman rho: Pearson r of the ranks, ties taking their average rank. Returns AT_ENOMEM or 0
 * with the value (NAN as for at_pearson) in *out. */
int at_spearman(const double *x, const double *y, size_t n, double *out);
/* 95 % confidence interval of r by the Fisher transform, tanh(atanh(r) +- 1.96/sqrt(n-3));
 * NAN bounds when n < 4 or r is NAN. */
void at_fisher_ci95(double r, size_t n, double *lo, double *hi);
/* The p-quantile (0 <= p <= 1) by linear interpolation between closest ranks (type 7). Sorts
 * x in place. NAN when n == 0. */
double at_quantile(double *x, size_t n, double p);
/* Least-squares slope of y against x; NAN when n < 2 or x is constant. */
double at_slope(const double *x, const double *y, size_t n);

/* Finds the lexicon directory used when none is configured: $ATTUNE_LEXICONS, else lexicons/
 * beside the build directory of the running executable (an in-tree build), else the installed
 * data directory (ATTUNE_DATADIR/lexicons). Writes it into out (len bytes). Returns 0, or
 * AT_EINVAL when none holds vader/vader_lexicon.txt (out then holds the installed path). */
int at_lexicon_dir_default(char *out, size_t len);

/* Removes secrets from text before it is stored: payment card numbers in any written or spoken
 * shape (Luhn-checked), and the patterns of lexicons/redact.tsv (e-mail, phone, SSN, IBAN, CVV
 * and expiry phrases), each replaced by its placeholder ("[CARD]", "[EMAIL]", ...). *out is
 * borrowed from scratch until its next use; *n_redactions (may be NULL) counts replacements.
 * Returns 0 or AT_ENOMEM. */
int at_redact(const at_model *model, at_scratch *scratch, const char *text, size_t len,
              const char **out, size_t *out_len, unsigned *n_redactions);

/* Rounds like Python's round(x, ndigits): half to even on the exact binary value. */
double at_round(double x, int ndigits);

#ifdef __cplusplus
}
#endif

#endif
