/*
 * markers.c: the marker detector. Owns the pattern sets of lexicons/markers/ (one PCRE2
 * expression per line, compiled with JIT), the abuse and anger word lists, the negation-scope
 * cues and the settings (shouting thresholds, frustration weights).
 *
 * Invariants: an at__markers is immutable once built and shared read-only by threads; all
 * per-call state (match data, candidate stamps, lower-cased text, marker arrays) lives in an
 * at__mscratch. The prefilter never changes a result: a pattern is skipped only when a literal
 * that every match of it must contain is absent from the text.
 *
 * Candidate markers pass three gates, in order: the speaker (a category is for customers, or
 * for agents and bots), look-alike blocks (a `block` pattern of the same category overlapping
 * the candidate), and the negation scope (a negator or hypothetical cue among the words before
 * the candidate in the same clause). `fixed` patterns skip the scope gate.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

enum pattern_kind { KIND_MATCH, KIND_FIXED, KIND_BLOCK };
static const char *const kind_names[] = {"match", "fixed", "block"};

/* Pattern-id tags for markers that do not come from a regular expression. */
#define ID_SHOUT_CAPS "builtin:shouting-caps"
#define ID_SHOUT_PUNCT "builtin:shouting-punct"

typedef struct pattern {
    char *id;
    enum pattern_kind kind;
    at_category category;
    unsigned speakers; /* bit (1u << at_speaker) */
    pcre2_code *code;
    char *where; /* "file:line", for messages */
} pattern;

/* A required literal of a pattern, for the prefilter. */
typedef struct literal {
    char *text; /* lower-case ASCII, >= 3 bytes */
    size_t len;
    uint32_t pattern;
} literal;

enum scope_kind { SCOPE_NEGATOR = 1, SCOPE_HYPOTHETICAL = 2, SCOPE_BREAK = 3 };
static const char *const scope_names[] = {"", "negated by", "hypothetical", "break"};
static const char *const scope_kinds[] = {"", "negator", "hypothetical", "break"};

/* Lookup-table entries for word lists (abuse, anger) keep their pattern-id string here. */
typedef struct wordlist {
    at__strmap map; /* lower-cased phrase -> value (severity); tag = index into ids */
    char **ids;     /* "abuse:<canonical>" */
    size_t n_ids;
    size_t max_words;
} wordlist;

#define PREFILTER_BITS 16
#define PREFILTER_SIZE (1u << PREFILTER_BITS)

struct at__markers {
    pattern *patterns;
    size_t n_patterns;
    literal *literals;
    size_t n_literals;
    /* Prefilter index: literals grouped by a hash of their first three bytes. bucket_start has
     * PREFILTER_SIZE + 1 entries; bucket b holds literal indexes order[bucket_start[b] ..
     * bucket_start[b+1]). */
    uint32_t *bucket_start;
    uint32_t *order;
    uint32_t *unfiltered; /* patterns with no literal: always run */
    size_t n_unfiltered;

    at__strmap scope; /* word -> tag enum scope_kind */
    wordlist abuse;
    wordlist anger;
    double anger_max_valence; /* an anger word fires when its VADER valence is <= this */
    const at__vader *vader;   /* borrowed: the model owns both */

    /* settings.tsv */
    size_t scope_words;            /* words looked at before a candidate */
    double abuse_min_severity;     /* entries below are ignored */
    size_t shout_min_words;        /* all-caps words needed */
    double shout_min_upper_ratio;  /* share of letters upper case */
    double weight[AT_N_CATEGORIES]; /* frustration weight of each signal, [0,1] */
    double weight_sentiment;        /* weight of negative compound */

    pcre2_match_context *mctx;
};

/* A candidate marker before the gates. */
typedef struct cand {
    at_marker m;
    int pattern; /* index, or -1 for word lists and built-ins */
    enum pattern_kind kind;
} cand;

struct at__mscratch {
    pcre2_match_data *md;
    uint32_t *stamp; /* per pattern: generation when it became a candidate */
    size_t n_stamp;
    uint32_t generation;
    uint32_t *todo;
    size_t n_todo, cap_todo;
    char *lower;
    size_t cap_lower;
    cand *cands;
    size_t n_cands, cap_cands;
    at_marker *out;
    size_t cap_out;
    at__buf word;
};

/* ---- loading --------------------------------------------------------------------------- */

static unsigned category_speakers(at_category cat)
{
    if (at_category_family(cat) == AT_FAMILY_FRUSTRATION)
        return 1u << AT_SPEAKER_CUSTOMER;
    return (1u << AT_SPEAKER_AGENT) | (1u << AT_SPEAKER_BOT);
}

static char *dupn(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

/* Splits line (modified in place) at tabs into at most max fields; returns the count. */
static size_t split_tabs(char *line, char **fields, size_t max)
{
    size_t n = 0;
    char *p = line;
    while (n < max) {
        fields[n++] = p;
        char *t = strchr(p, '\t');
        if (!t)
            break;
        if (n == max)
            break; /* the last field keeps any further tabs */
        *t = '\0';
        p = t + 1;
    }
    return n;
}

/* Iterates the lines of a loaded file: strips "\r", skips blank lines and # comments. */
typedef struct line_iter {
    char *p;
    char *end;
    int line_no;
} line_iter;

static char *next_line(line_iter *it)
{
    while (it->p < it->end) {
        char *line = it->p;
        char *nl = memchr(line, '\n', (size_t)(it->end - line));
        if (nl) {
            *nl = '\0';
            it->p = nl + 1;
        } else {
            it->p = it->end;
        }
        it->line_no++;
        size_t n = strlen(line);
        if (n && line[n - 1] == '\r')
            line[--n] = '\0';
        const char *s = line;
        while (*s == ' ')
            s++;
        if (*s == '\0' || *s == '#')
            continue;
        return line;
    }
    return NULL;
}

static int load_file(const char *dir, const char *name, uint64_t *hash, char **data, size_t *len,
                     char *path, size_t path_len, char *err, size_t err_len)
{
    snprintf(path, path_len, "%s/markers/%s", dir, name);
    int rc = at__read_file(path, data, len, err, err_len);
    if (rc)
        return rc;
    *hash = at__fnv1a(*hash, name, strlen(name));
    *hash = at__fnv1a(*hash, *data, *len);
    return 0;
}

/* ---- required literals of a regular expression (for the prefilter) ------------------------
 *
 * A small recursive-descent reading of the PCRE2 syntax our pattern files use. For each node it
 * computes a "requirement": a set of lower-case strings of which every match contains at least
 * one, or "unknown". Sequences take their best mandatory element (the one whose shortest string
 * is longest); alternations take the union; optional elements and anything not understood give
 * "unknown", which is always safe.
 */

#define REQ_MAX 64 /* alternatives kept before giving up */
#define LIT_MAX 64

typedef struct req {
    bool known;
    size_t n;
    char s[REQ_MAX][LIT_MAX];
    size_t len[REQ_MAX];
} req;

typedef struct rparser {
    const char *p;
    const char *end;
    bool failed;
} rparser;

static size_t req_min_len(const req *r)
{
    size_t m = SIZE_MAX;
    for (size_t i = 0; i < r->n; i++)
        if (r->len[i] < m)
            m = r->len[i];
    return r->n ? m : 0;
}

/* Better means: known, every string >= 3 bytes, the shortest string longest, fewest strings. */
static bool req_better(const req *a, const req *b)
{
    if (!a->known || req_min_len(a) < 3)
        return false;
    if (!b->known || req_min_len(b) < 3)
        return true;
    if (req_min_len(a) != req_min_len(b))
        return req_min_len(a) > req_min_len(b);
    return a->n < b->n;
}

static void parse_alt(rparser *rp, req *out);

/* Skips a quantifier at rp->p; returns true when it makes the element optional. Sets *repeats
 * when it allows more than one occurrence. */
static bool parse_quant(rparser *rp, bool *repeats)
{
    bool optional = false;
    *repeats = false;
    if (rp->p >= rp->end)
        return false;
    char c = *rp->p;
    if (c == '?' || c == '*') {
        optional = true;
        *repeats = c == '*';
        rp->p++;
    } else if (c == '+') {
        *repeats = true;
        rp->p++;
    } else if (c == '{') {
        const char *q = rp->p + 1;
        long lo = 0;
        bool digits = false;
        while (q < rp->end && isdigit((unsigned char)*q)) {
            lo = lo * 10 + (*q - '0');
            q++;
            digits = true;
        }
        if (!digits || q >= rp->end || (*q != '}' && *q != ','))
            return false; /* a literal '{' */
        while (q < rp->end && *q != '}')
            q++;
        rp->p = q < rp->end ? q + 1 : q;
        optional = lo == 0;
        *repeats = true;
    } else {
        return false;
    }
    if (rp->p < rp->end && (*rp->p == '?' || *rp->p == '+'))
        rp->p++; /* lazy or possessive */
    return optional;
}

/* Parses one atom. Sets *lit to the literal character it denotes (lower-cased), or -1. */
static void parse_atom(rparser *rp, req *out, int *lit)
{
    out->known = false;
    out->n = 0;
    *lit = -1;
    char c = *rp->p++;
    if (c == '(') {
        bool capture_like = true;
        if (rp->p < rp->end && *rp->p == '?') {
            rp->p++;
            char k = rp->p < rp->end ? *rp->p : '\0';
            if (k == ':' || k == '>' || k == '|') {
                rp->p++;
            } else if (k == '=' || k == '!' || (k == '<' && rp->p + 1 < rp->end &&
                                                  (rp->p[1] == '=' || rp->p[1] == '!'))) {
                /* A lookaround asserts without consuming: no requirement from it. */
                capture_like = false;
                rp->p += k == '<' ? 2 : 1;
            } else if (k == '<' || k == 'P' || k == '\'') {
                /* Named group: skip the name. */
                while (rp->p < rp->end && *rp->p != '>' && *rp->p != '\'')
                    rp->p++;
                if (rp->p < rp->end)
                    rp->p++;
            } else {
                /* Inline options such as (?i) or (?i:...). */
                while (rp->p < rp->end && *rp->p != ')' && *rp->p != ':')
                    rp->p++;
                if (rp->p < rp->end && *rp->p == ')') {
                    rp->p++;
                    out->known = true; /* matches the empty string: a requirement of "" */
                    out->n = 1;
                    out->s[0][0] = '\0';
                    out->len[0] = 0;
                    return;
                }
                if (rp->p < rp->end)
                    rp->p++;
            }
        }
        req inner;
        parse_alt(rp, &inner);
        if (rp->p < rp->end && *rp->p == ')')
            rp->p++;
        else
            rp->failed = true;
        if (capture_like)
            *out = inner;
        else {
            out->known = true; /* zero-width: requires nothing, contributes "" */
            out->n = 1;
            out->s[0][0] = '\0';
            out->len[0] = 0;
        }
        return;
    }
    if (c == '[') {
        /* A class: skip to its closing bracket. */
        if (rp->p < rp->end && *rp->p == '^')
            rp->p++;
        if (rp->p < rp->end && *rp->p == ']')
            rp->p++;
        while (rp->p < rp->end && *rp->p != ']') {
            if (*rp->p == '\\' && rp->p + 1 < rp->end)
                rp->p++;
            else if (*rp->p == '[' && rp->p + 1 < rp->end && rp->p[1] == ':') {
                const char *q = strstr(rp->p, ":]");
                if (q && q < rp->end)
                    rp->p = q + 1;
            }
            rp->p++;
        }
        if (rp->p < rp->end)
            rp->p++;
        return;
    }
    if (c == '\\') {
        if (rp->p >= rp->end) {
            rp->failed = true;
            return;
        }
        char e = *rp->p++;
        if (e == 'b' || e == 'B' || e == 'A' || e == 'z' || e == 'Z' || e == 'G') {
            out->known = true; /* an assertion: consumes nothing */
            out->n = 1;
            out->s[0][0] = '\0';
            out->len[0] = 0;
            return;
        }
        if (e == 'p' || e == 'P' || e == 'x' || e == 'o' || e == 'g' || e == 'k' || e == 'N') {
            if (rp->p < rp->end && *rp->p == '{') {
                while (rp->p < rp->end && *rp->p != '}')
                    rp->p++;
                if (rp->p < rp->end)
                    rp->p++;
            } else if (e == 'p' || e == 'P') {
                rp->p++;
            }
            return;
        }
        if (e == 'Q') {
            rp->failed = true; /* quoting is not worth understanding here */
            return;
        }
        if (ispunct((unsigned char)e) || e == ' ') {
            *lit = e;
            return;
        }
        return; /* \s \w \d and friends: not literal */
    }
    if (c == '.' || c == '^' || c == '$') {
        if (c != '.') {
            out->known = true;
            out->n = 1;
            out->s[0][0] = '\0';
            out->len[0] = 0;
        }
        return;
    }
    if ((unsigned char)c >= 0x80) {
        /* Non-ASCII: caseless UTF matching may fold it; not a prefilter literal. */
        while (rp->p < rp->end && ((unsigned char)*rp->p & 0xC0) == 0x80)
            rp->p++;
        return;
    }
    *lit = tolower((unsigned char)c);
}

/* Cross product of the running literal with a set is not attempted; a literal run simply
 * becomes one candidate requirement of the sequence. */
static void req_single(req *r, const char *s, size_t len)
{
    r->known = true;
    r->n = 1;
    if (len >= LIT_MAX)
        len = LIT_MAX - 1;
    memcpy(r->s[0], s, len);
    r->s[0][len] = '\0';
    r->len[0] = len;
}

static void parse_seq(rparser *rp, req *best)
{
    best->known = false;
    best->n = 0;
    char run[LIT_MAX];
    size_t run_len = 0;
    req cur;
    while (rp->p < rp->end && *rp->p != '|' && *rp->p != ')') {
        int lit;
        parse_atom(rp, &cur, &lit);
        if (rp->failed)
            return;
        bool repeats;
        bool optional = parse_quant(rp, &repeats);
        if (lit >= 0 && !optional && !repeats) {
            if (run_len + 1 < LIT_MAX)
                run[run_len++] = (char)lit;
            continue;
        }
        /* The run ends here. A repeated literal still requires one occurrence of itself. */
        if (lit >= 0 && !optional && run_len + 1 < LIT_MAX)
            run[run_len++] = (char)lit;
        if (run_len) {
            req r;
            req_single(&r, run, run_len);
            if (req_better(&r, best))
                *best = r;
            run_len = 0;
        }
        /* Zero-width atoms (assertions, lookarounds) do not break a literal run in the text,
         * but treating them as breaks is only conservative. */
        if (!optional && cur.known && req_better(&cur, best))
            *best = cur;
    }
    if (run_len) {
        req r;
        req_single(&r, run, run_len);
        if (req_better(&r, best))
            *best = r;
    }
}

static void parse_alt(rparser *rp, req *out)
{
    req branch;
    parse_seq(rp, out);
    bool ok = out->known && req_min_len(out) >= 3;
    while (rp->p < rp->end && *rp->p == '|') {
        rp->p++;
        parse_seq(rp, &branch);
        if (rp->failed)
            return;
        if (!ok || !branch.known || req_min_len(&branch) < 3 || out->n + branch.n > REQ_MAX) {
            ok = false;
            continue;
        }
        for (size_t i = 0; i < branch.n; i++) {
            memcpy(out->s[out->n], branch.s[i], LIT_MAX);
            out->len[out->n++] = branch.len[i];
        }
    }
    if (!ok) {
        out->known = false;
        out->n = 0;
    }
}

/* ---- building -------------------------------------------------------------------------- */

static int add_literal(at__markers *m, size_t *cap, const char *s, size_t len, uint32_t pat)
{
    if (m->n_literals == *cap) {
        size_t n = *cap ? *cap * 2 : 256;
        literal *p = realloc(m->literals, n * sizeof *p);
        if (!p)
            return AT_ENOMEM;
        m->literals = p;
        *cap = n;
    }
    literal *l = &m->literals[m->n_literals];
    l->text = dupn(s, len);
    if (!l->text)
        return AT_ENOMEM;
    l->len = len;
    l->pattern = pat;
    m->n_literals++;
    return 0;
}

static uint32_t tri_key(const char *s)
{
    uint32_t k = ((uint32_t)(unsigned char)s[0] << 16) | ((uint32_t)(unsigned char)s[1] << 8) |
                 (uint32_t)(unsigned char)s[2];
    k *= 2654435761u;
    return k >> (32 - PREFILTER_BITS);
}

static int build_prefilter(at__markers *m)
{
    size_t cap = 0;
    m->unfiltered = malloc((m->n_patterns + 1) * sizeof *m->unfiltered);
    if (!m->unfiltered)
        return AT_ENOMEM;
    for (size_t i = 0; i < m->n_patterns; i++) {
        const char *src = strchr(m->patterns[i].where, '\n') + 1; /* see load_patterns */
        size_t len = strlen(src);
        rparser rp = {src, src + len, false};
        req r;
        parse_alt(&rp, &r);
        if (rp.failed || rp.p != rp.end || !r.known || req_min_len(&r) < 3) {
            m->unfiltered[m->n_unfiltered++] = (uint32_t)i;
            continue;
        }
        for (size_t j = 0; j < r.n; j++)
            if (add_literal(m, &cap, r.s[j], r.len[j], (uint32_t)i))
                return AT_ENOMEM;
    }
    m->bucket_start = calloc(PREFILTER_SIZE + 1, sizeof *m->bucket_start);
    m->order = malloc((m->n_literals + 1) * sizeof *m->order);
    if (!m->bucket_start || !m->order)
        return AT_ENOMEM;
    for (size_t i = 0; i < m->n_literals; i++)
        m->bucket_start[tri_key(m->literals[i].text) + 1]++;
    for (size_t b = 0; b < PREFILTER_SIZE; b++)
        m->bucket_start[b + 1] += m->bucket_start[b];
    uint32_t *fill = malloc(PREFILTER_SIZE * sizeof *fill);
    if (!fill)
        return AT_ENOMEM;
    memcpy(fill, m->bucket_start, PREFILTER_SIZE * sizeof *fill);
    for (size_t i = 0; i < m->n_literals; i++)
        m->order[fill[tri_key(m->literals[i].text)]++] = (uint32_t)i;
    free(fill);
    return 0;
}

static int parse_speakers(const char *s, at_category cat, unsigned *out)
{
    unsigned allowed = category_speakers(cat);
    if (strcmp(s, "*") == 0) {
        *out = allowed;
        return 0;
    }
    unsigned mask = 0;
    while (*s) {
        const char *comma = strchr(s, ',');
        size_t n = comma ? (size_t)(comma - s) : strlen(s);
        at_speaker sp;
        if (at_speaker_parse(s, n, &sp))
            return AT_ESYNTAX;
        mask |= 1u << sp;
        s += n + (comma ? 1 : 0);
    }
    if (!mask || (mask & ~allowed))
        return AT_EINVAL;
    *out = mask;
    return 0;
}

static int load_patterns(at__markers *m, const char *dir, const char *name, at_family family,
                         uint64_t *hash, at__strmap *ids, size_t *cap, char *err,
                         size_t err_len)
{
    char path[4096];
    char *data = NULL;
    size_t len;
    int rc = load_file(dir, name, hash, &data, &len, path, sizeof path, err, err_len);
    if (rc)
        return rc;
    line_iter it = {data, data + len, 0};
    char *line;
    while ((line = next_line(&it))) {
        char *f[5];
        if (split_tabs(line, f, 5) != 5) {
            at__errf(err, err_len, "%s:%d: expected 5 tab-separated fields: id, kind, category, "
                     "speakers, regex", path, it.line_no);
            rc = AT_ESYNTAX;
            goto fail;
        }
        int kind = -1;
        for (int k = 0; k < 3; k++)
            if (strcmp(f[1], kind_names[k]) == 0)
                kind = k;
        if (kind < 0) {
            at__errf(err, err_len, "%s:%d: unknown kind \"%s\" (match, fixed or block)", path,
                     it.line_no, f[1]);
            rc = AT_ESYNTAX;
            goto fail;
        }
        at_category cat;
        if (at_category_parse(f[2], strlen(f[2]), &cat) || at_category_family(cat) != family) {
            at__errf(err, err_len, "%s:%d: \"%s\" is not a %s category", path, it.line_no, f[2],
                     at_family_name(family));
            rc = AT_ESYNTAX;
            goto fail;
        }
        unsigned speakers;
        int src = parse_speakers(f[3], cat, &speakers);
        if (src) {
            at__errf(err, err_len, "%s:%d: speakers \"%s\": %s", path, it.line_no, f[3],
                     src == AT_EINVAL ? "a speaker this category does not apply to"
                                      : "expected customer, agent, bot, system or *");
            rc = AT_ESYNTAX;
            goto fail;
        }
        if (!*f[0] || at__strmap_get(ids, f[0], strlen(f[0]))) {
            at__errf(err, err_len, "%s:%d: pattern id \"%s\" is empty or used twice", path,
                     it.line_no, f[0]);
            rc = AT_ESYNTAX;
            goto fail;
        }
        int ecode;
        PCRE2_SIZE eoff;
        pcre2_code *code = pcre2_compile((PCRE2_SPTR)f[4], PCRE2_ZERO_TERMINATED,
                                         PCRE2_CASELESS | PCRE2_UTF | PCRE2_UCP |
                                             PCRE2_MATCH_INVALID_UTF,
                                         &ecode, &eoff, NULL);
        if (!code) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(ecode, msg, sizeof msg);
            at__errf(err, err_len, "%s:%d: pattern %s does not compile at offset %zu: %s", path,
                     it.line_no, f[0], (size_t)eoff, (char *)msg);
            rc = AT_ESYNTAX;
            goto fail;
        }
        /* JIT is an optimisation: a platform without it still matches, only slower. */
        pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
        if (m->n_patterns == *cap) {
            size_t n = *cap ? *cap * 2 : 64;
            pattern *p = realloc(m->patterns, n * sizeof *p);
            if (!p) {
                pcre2_code_free(code);
                rc = AT_ENOMEM;
                goto fail;
            }
            m->patterns = p;
            *cap = n;
        }
        pattern *p = &m->patterns[m->n_patterns];
        memset(p, 0, sizeof *p);
        p->code = code;
        p->kind = (enum pattern_kind)kind;
        p->category = cat;
        p->speakers = speakers;
        p->id = strdup(f[0]);
        /* "file:line\nregex": the regex is kept for the prefilter analysis. */
        size_t wlen = strlen(path) + strlen(f[4]) + 32;
        p->where = malloc(wlen);
        m->n_patterns++;
        if (!p->id || !p->where) {
            rc = AT_ENOMEM;
            goto fail;
        }
        snprintf(p->where, wlen, "%s:%d\n%s", name, it.line_no, f[4]);
        if (at__strmap_put(ids, p->id, strlen(p->id), 0, 0)) {
            rc = AT_ENOMEM;
            goto fail;
        }
    }
    free(data);
    return 0;
fail:
    free(data);
    return rc;
}

static int load_scope(at__markers *m, const char *dir, uint64_t *hash, char *err, size_t err_len)
{
    char path[4096];
    char *data = NULL;
    size_t len;
    int rc = load_file(dir, "scope.tsv", hash, &data, &len, path, sizeof path, err, err_len);
    if (rc)
        return rc;
    line_iter it = {data, data + len, 0};
    char *line;
    while ((line = next_line(&it))) {
        char *f[2];
        if (split_tabs(line, f, 2) != 2) {
            at__errf(err, err_len, "%s:%d: expected kind TAB word", path, it.line_no);
            rc = AT_ESYNTAX;
            goto fail;
        }
        int kind = 0;
        for (int k = 1; k <= 3; k++)
            if (strcmp(f[0], scope_kinds[k]) == 0)
                kind = k;
        if (!kind) {
            at__errf(err, err_len, "%s:%d: unknown kind \"%s\" (negator, hypothetical or break)",
                     path, it.line_no, f[0]);
            rc = AT_ESYNTAX;
            goto fail;
        }
        for (char *c = f[1]; *c; c++)
            *c = (char)tolower((unsigned char)*c);
        if (at__strmap_put(&m->scope, f[1], strlen(f[1]), 0, kind)) {
            rc = AT_ENOMEM;
            goto fail;
        }
    }
    free(data);
    return 0;
fail:
    free(data);
    return rc;
}

static void wordlist_fini(wordlist *w)
{
    at__strmap_fini(&w->map);
    for (size_t i = 0; i < w->n_ids; i++)
        free(w->ids[i]);
    free(w->ids);
}

/* Loads a word list: phrase [TAB canonical [TAB value]]. Ids are prefix:canonical. */
static int load_wordlist(wordlist *w, const char *dir, const char *name, const char *prefix,
                         double min_value, uint64_t *hash, char *err, size_t err_len)
{
    char path[4096];
    char *data = NULL;
    size_t len;
    int rc = load_file(dir, name, hash, &data, &len, path, sizeof path, err, err_len);
    if (rc)
        return rc;
    line_iter it = {data, data + len, 0};
    char *line;
    size_t cap = 0;
    while ((line = next_line(&it))) {
        char *f[3];
        size_t n = split_tabs(line, f, 3);
        double value = 0;
        if (n == 3) {
            char *endp;
            value = strtod(f[2], &endp);
            if (endp == f[2] || *endp) {
                at__errf(err, err_len, "%s:%d: value \"%s\" is not a number", path, it.line_no,
                         f[2]);
                rc = AT_ESYNTAX;
                goto fail;
            }
            if (value < min_value)
                continue;
        }
        for (char *c = f[0]; *c; c++)
            *c = (char)tolower((unsigned char)*c);
        size_t words = 1;
        for (char *c = f[0]; *c; c++)
            words += *c == ' ';
        if (words > w->max_words)
            w->max_words = words;
        if (w->n_ids == cap) {
            cap = cap ? cap * 2 : 256;
            char **ids = realloc(w->ids, cap * sizeof *ids);
            if (!ids) {
                rc = AT_ENOMEM;
                goto fail;
            }
            w->ids = ids;
        }
        const char *canon = n >= 2 && *f[1] ? f[1] : f[0];
        size_t idlen = strlen(prefix) + strlen(canon) + 2;
        char *id = malloc(idlen);
        if (!id) {
            rc = AT_ENOMEM;
            goto fail;
        }
        snprintf(id, idlen, "%s:%s", prefix, canon);
        w->ids[w->n_ids] = id;
        if (at__strmap_put(&w->map, f[0], strlen(f[0]), value, (int)w->n_ids)) {
            rc = AT_ENOMEM;
            goto fail;
        }
        w->n_ids++;
    }
    free(data);
    return 0;
fail:
    free(data);
    return rc;
}

typedef struct setting {
    const char *key;
    double lo, hi;
} setting;

static int load_settings(at__markers *m, const char *dir, uint64_t *hash, char *err,
                         size_t err_len)
{
    char path[4096];
    char *data = NULL;
    size_t len;
    int rc = load_file(dir, "settings.tsv", hash, &data, &len, path, sizeof path, err, err_len);
    if (rc)
        return rc;
    /* Defaults, overridden by the file. */
    m->scope_words = 4;
    m->abuse_min_severity = 1.0;
    m->shout_min_words = 3;
    m->shout_min_upper_ratio = 0.6;
    m->anger_max_valence = -2.0;
    m->weight_sentiment = 0.5;
    line_iter it = {data, data + len, 0};
    char *line;
    while ((line = next_line(&it))) {
        char *f[2];
        if (split_tabs(line, f, 2) != 2) {
            at__errf(err, err_len, "%s:%d: expected key TAB value", path, it.line_no);
            rc = AT_ESYNTAX;
            goto fail;
        }
        char *endp;
        double v = strtod(f[1], &endp);
        if (endp == f[1] || *endp || !isfinite(v)) {
            at__errf(err, err_len, "%s:%d: %s: \"%s\" is not a number", path, it.line_no, f[0],
                     f[1]);
            rc = AT_ESYNTAX;
            goto fail;
        }
        double lo = 0, hi = 1;
        if (strcmp(f[0], "scope_words") == 0) {
            lo = 0, hi = 20;
            m->scope_words = (size_t)v;
        } else if (strcmp(f[0], "abuse_min_severity") == 0) {
            lo = 0, hi = 3;
            m->abuse_min_severity = v;
        } else if (strcmp(f[0], "shouting_min_words") == 0) {
            lo = 1, hi = 100;
            m->shout_min_words = (size_t)v;
        } else if (strcmp(f[0], "shouting_min_upper_ratio") == 0) {
            m->shout_min_upper_ratio = v;
        } else if (strcmp(f[0], "anger_max_valence") == 0) {
            lo = -4, hi = 0;
            m->anger_max_valence = v;
        } else if (strcmp(f[0], "weight.sentiment") == 0) {
            m->weight_sentiment = v;
        } else if (strncmp(f[0], "weight.", 7) == 0) {
            at_category cat;
            if (at_category_parse(f[0] + 7, strlen(f[0] + 7), &cat) ||
                at_category_family(cat) != AT_FAMILY_FRUSTRATION) {
                at__errf(err, err_len, "%s:%d: %s: not a frustration signal", path, it.line_no,
                         f[0]);
                rc = AT_ESYNTAX;
                goto fail;
            }
            m->weight[cat] = v;
        } else {
            at__errf(err, err_len, "%s:%d: unknown setting \"%s\"", path, it.line_no, f[0]);
            rc = AT_ESYNTAX;
            goto fail;
        }
        if (v < lo || v > hi) {
            at__errf(err, err_len, "%s:%d: %s = %g is out of range [%g, %g]", path, it.line_no,
                     f[0], v, lo, hi);
            rc = AT_ESYNTAX;
            goto fail;
        }
    }
    free(data);
    return 0;
fail:
    free(data);
    return rc;
}

int at__markers_new(const char *dir, const at__vader *vader, uint64_t *hash, at__markers **out,
                    char *err, size_t err_len)
{
    static const char *const files[AT_N_FAMILIES] = {"empathy.tsv", "dismissive.tsv",
                                                     "frustration.tsv"};
    at__markers *m = calloc(1, sizeof *m);
    if (!m)
        return AT_ENOMEM;
    m->vader = vader;
    at__strmap_init(&m->scope);
    at__strmap_init(&m->abuse.map);
    at__strmap_init(&m->anger.map);
    at__strmap ids;
    at__strmap_init(&ids);
    size_t cap = 0;
    int rc = load_settings(m, dir, hash, err, err_len);
    if (rc)
        goto fail;
    for (int fam = 0; fam < AT_N_FAMILIES; fam++) {
        rc = load_patterns(m, dir, files[fam], (at_family)fam, hash, &ids, &cap, err, err_len);
        if (rc)
            goto fail;
    }
    rc = load_scope(m, dir, hash, err, err_len);
    if (rc)
        goto fail;
    rc = load_wordlist(&m->abuse, dir, "profanity.tsv", "abuse", m->abuse_min_severity, hash,
                       err, err_len);
    if (rc)
        goto fail;
    rc = load_wordlist(&m->anger, dir, "anger.txt", "anger", -1e9, hash, err, err_len);
    if (rc)
        goto fail;
    rc = build_prefilter(m);
    if (rc)
        goto fail;
    m->mctx = pcre2_match_context_create(NULL);
    if (!m->mctx) {
        rc = AT_ENOMEM;
        goto fail;
    }
    /* Bound the work a hostile text can cause: a pattern over these limits is skipped. */
    pcre2_set_match_limit(m->mctx, 100000);
    pcre2_set_depth_limit(m->mctx, 1000);
    at__strmap_fini(&ids);
    *out = m;
    return 0;
fail:
    at__strmap_fini(&ids);
    at__markers_free(m);
    return rc;
}

void at__markers_free(at__markers *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_patterns; i++) {
        pcre2_code_free(m->patterns[i].code);
        free(m->patterns[i].id);
        free(m->patterns[i].where);
    }
    free(m->patterns);
    for (size_t i = 0; i < m->n_literals; i++)
        free(m->literals[i].text);
    free(m->literals);
    free(m->bucket_start);
    free(m->order);
    free(m->unfiltered);
    at__strmap_fini(&m->scope);
    wordlist_fini(&m->abuse);
    wordlist_fini(&m->anger);
    pcre2_match_context_free(m->mctx);
    free(m);
}

size_t at__markers_n_patterns(const at__markers *m)
{
    return m->n_patterns;
}

size_t at__markers_n_unfiltered(const at__markers *m)
{
    return m->n_unfiltered;
}

int at__mscratch_new(at__mscratch **out)
{
    at__mscratch *s = calloc(1, sizeof *s);
    if (!s)
        return AT_ENOMEM;
    s->md = pcre2_match_data_create(1, NULL);
    if (!s->md) {
        free(s);
        return AT_ENOMEM;
    }
    *out = s;
    return 0;
}

void at__mscratch_free(at__mscratch *s)
{
    if (!s)
        return;
    pcre2_match_data_free(s->md);
    free(s->stamp);
    free(s->todo);
    free(s->lower);
    free(s->cands);
    free(s->out);
    at__buf_fini(&s->word);
    free(s);
}

/* ---- scoring --------------------------------------------------------------------------- */

static int push_cand(at__mscratch *s, at_category cat, const char *id, size_t start, size_t end,
                     int pat, enum pattern_kind kind)
{
    if (s->n_cands == s->cap_cands) {
        size_t n = s->cap_cands ? s->cap_cands * 2 : 32;
        cand *c = realloc(s->cands, n * sizeof *c);
        if (!c)
            return AT_ENOMEM;
        s->cands = c;
        s->cap_cands = n;
    }
    cand *c = &s->cands[s->n_cands++];
    c->m.category = cat;
    c->m.pattern_id = id;
    c->m.start = start;
    c->m.end = end;
    c->pattern = pat;
    c->kind = kind;
    return 0;
}

static bool is_word_byte(unsigned char c)
{
    return isalnum(c) || c == '\'' || c >= 0x80;
}

/* Reads the word that ends at text[end) backwards, lower-cased into s->word, with the
 * typographic apostrophe folded to '. Returns its start. */
static size_t word_before(at__mscratch *s, const char *text, size_t end)
{
    size_t start = end;
    while (start > 0 && is_word_byte((unsigned char)text[start - 1]))
        start--;
    s->word.len = 0;
    for (size_t i = start; i < end; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c == 0xE2 && i + 2 < end && (unsigned char)text[i + 1] == 0x80 &&
            (unsigned char)text[i + 2] == 0x99) {
            at__buf_append(&s->word, "'", 1);
            i += 2;
            continue;
        }
        char lc = (char)tolower(c);
        at__buf_append(&s->word, &lc, 1);
    }
    return start;
}

/* The scope gate: looks at up to scope_words words before start, within its clause. Returns
 * 0 when the candidate stands, or SCOPE_NEGATOR / SCOPE_HYPOTHETICAL with the cue's span. */
static int scope_check(const at__markers *m, at__mscratch *s, const char *text, size_t start,
                       size_t *cue_start, size_t *cue_end)
{
    size_t pos = start;
    for (size_t n = 0; n < m->scope_words;) {
        /* Skip spaces and other non-word bytes; clause punctuation ends the scope. */
        while (pos > 0 && !is_word_byte((unsigned char)text[pos - 1])) {
            char c = text[pos - 1];
            if (c == '.' || c == '!' || c == '?' || c == ';' || c == ':' || c == ',' ||
                c == '\n' || c == '(' || c == ')')
                return 0;
            if (c == '-' && pos >= 2 && text[pos - 2] == ' ')
                return 0; /* a dash between words */
            pos--;
        }
        if (pos == 0)
            return 0;
        size_t end = pos;
        size_t wstart = word_before(s, text, end);
        if (!s->word.len || !s->word.data)
            return 0;
        const at__strmap_entry *e = at__strmap_get(&m->scope, s->word.data, s->word.len);
        int kind = e ? e->tag : 0;
        if (!kind && s->word.len >= 3 &&
            memcmp(s->word.data + s->word.len - 3, "n't", 3) == 0)
            kind = SCOPE_NEGATOR;
        if (kind == SCOPE_BREAK)
            return 0;
        if (kind) {
            *cue_start = wstart;
            *cue_end = end;
            return kind;
        }
        pos = wstart;
        n++;
    }
    return 0;
}

static int run_pattern(const at__markers *m, at__mscratch *s, uint32_t pi, const char *text,
                       size_t len, int *n_limit_hits)
{
    const pattern *p = &m->patterns[pi];
    PCRE2_SIZE off = 0;
    while (off <= len) {
        int rc = pcre2_match(p->code, (PCRE2_SPTR)text, len, off, 0, s->md, m->mctx);
        if (rc == PCRE2_ERROR_NOMATCH)
            return 0;
        if (rc < 0) {
            /* Match or depth limit (or another runtime error): skip this pattern. */
            (*n_limit_hits)++;
            return 0;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(s->md);
        if (ov[1] < ov[0]) /* \K games; not used by our patterns */
            return 0;
        if (push_cand(s, p->category, p->id, ov[0], ov[1], (int)pi, p->kind))
            return AT_ENOMEM;
        off = ov[1] > ov[0] ? ov[1] : ov[0] + 1;
    }
    return 0;
}

/* Word-list lookups (abuse, anger): every run of 1..max_words words. */
static int run_wordlist(const at__markers *m, at__mscratch *s, const wordlist *w, at_category cat,
                        size_t len, bool anger)
{
    if (!w->n_ids)
        return 0;
    const char *lower = s->lower;
    size_t i = 0;
    while (i < len) {
        /* A token: bytes other than space and the punctuation that ends words; keep * $ @ that
         * obfuscate profanity ("f*ck", "a$$"). */
        while (i < len && !(isalnum((unsigned char)lower[i]) || lower[i] == '*' ||
                            lower[i] == '$' || lower[i] == '@'))
            i++;
        if (i >= len)
            break;
        size_t start = i;
        size_t end = start;
        size_t words = 0;
        size_t j = start;
        size_t best_end = 0;
        const at__strmap_entry *best = NULL;
        while (words < w->max_words && j < len) {
            while (j < len && (isalnum((unsigned char)lower[j]) || lower[j] == '*' ||
                               lower[j] == '$' || lower[j] == '@' || lower[j] == '\'' ||
                               lower[j] == '-' || (unsigned char)lower[j] >= 0x80))
                j++;
            end = j;
            /* Trailing apostrophes and hyphens are punctuation, not part of the word. */
            while (end > start && (lower[end - 1] == '\'' || lower[end - 1] == '-'))
                end--;
            words++;
            const at__strmap_entry *e = at__strmap_get(&w->map, lower + start, end - start);
            if (e) {
                best = e;
                best_end = end;
            }
            if (j >= len || lower[j] != ' ')
                break;
            j++;
        }
        if (best) {
            bool fires = true;
            if (anger) {
                double v;
                fires = at__vader_valence(m->vader, lower + start, best_end - start, &v) &&
                        v <= m->anger_max_valence;
            }
            if (fires) {
                if (push_cand(s, cat, w->ids[best->tag], start, best_end, -1, KIND_MATCH))
                    return AT_ENOMEM;
                i = best_end;
                continue;
            }
        }
        /* Advance past the first word only. */
        while (i < len && (isalnum((unsigned char)lower[i]) || lower[i] == '*' ||
                           lower[i] == '$' || lower[i] == '@' || lower[i] == '\'' ||
                           lower[i] == '-' || (unsigned char)lower[i] >= 0x80))
            i++;
    }
    return 0;
}

/* Shouting: enough all-caps words making up most letters, or "!!" / "?!" runs. */
static int run_shouting(const at__markers *m, at__mscratch *s, const char *text, size_t len)
{
    size_t upper = 0, letters = 0, caps_words = 0, first = 0, last = 0;
    size_t i = 0;
    while (i < len) {
        while (i < len && !isalpha((unsigned char)text[i]))
            i++;
        size_t start = i;
        size_t up = 0, n = 0;
        while (i < len && (isalpha((unsigned char)text[i]) || text[i] == '\'')) {
            if (isalpha((unsigned char)text[i])) {
                n++;
                up += isupper((unsigned char)text[i]) != 0;
            }
            i++;
        }
        if (!n)
            continue;
        upper += up;
        letters += n;
        if (up == n && n >= 2) {
            if (!caps_words)
                first = start;
            last = i;
            caps_words++;
        }
    }
    if (caps_words >= m->shout_min_words && letters &&
        (double)upper >= m->shout_min_upper_ratio * (double)letters) {
        if (push_cand(s, AT_CAT_SHOUTING, ID_SHOUT_CAPS, first, last, -1, KIND_FIXED))
            return AT_ENOMEM;
    }
    for (i = 0; i + 1 < len; i++) {
        char a = text[i], b = text[i + 1];
        if ((a == '!' && (b == '!' || b == '?')) || (a == '?' && b == '!')) {
            size_t end = i + 2;
            while (end < len && (text[end] == '!' || text[end] == '?'))
                end++;
            if (push_cand(s, AT_CAT_SHOUTING, ID_SHOUT_PUNCT, i, end, -1, KIND_FIXED))
                return AT_ENOMEM;
            break;
        }
    }
    return 0;
}

static int cmp_marker(const void *a, const void *b)
{
    const at_marker *x = a, *y = b;
    if (x->start != y->start)
        return x->start < y->start ? -1 : 1;
    if (x->category != y->category)
        return (int)x->category - (int)y->category;
    return x->end < y->end ? 1 : x->end > y->end ? -1 : 0;
}

static void trace_cand(at__buf *trace, const char *text, const cand *c, const char *verdict)
{
    if (!trace)
        return;
    int n = (int)(c->m.end - c->m.start);
    at__buf_printf(trace, "  %-11s %-20s %-28s [%zu,%zu) \"%.*s\"%s%s\n",
                   at_family_name(at_category_family(c->m.category)),
                   at_category_name(c->m.category), c->m.pattern_id, c->m.start, c->m.end,
                   n > 60 ? 60 : n, text + c->m.start, verdict ? "  suppressed: " : "",
                   verdict ? verdict : "");
}

int at__markers_score(const at__markers *m, at__mscratch *s, const char *text, size_t len,
                      at_speaker speaker, double compound, at_result *out, at__buf *trace)
{
    s->n_cands = 0;
    out->markers = NULL;
    out->n_markers = 0;
    out->category_mask = 0;
    out->n_limit_hits = 0;

    if (s->n_stamp < m->n_patterns) {
        uint32_t *st = realloc(s->stamp, m->n_patterns * sizeof *st);
        uint32_t *td = realloc(s->todo, (m->n_patterns + 1) * sizeof *td);
        if (st)
            s->stamp = st;
        if (td)
            s->todo = td;
        if (!st || !td)
            return AT_ENOMEM;
        memset(s->stamp, 0, m->n_patterns * sizeof *st);
        s->n_stamp = m->n_patterns;
        s->cap_todo = m->n_patterns + 1;
        s->generation = 0;
    }
    if (++s->generation == 0) {
        memset(s->stamp, 0, s->n_stamp * sizeof *s->stamp);
        s->generation = 1;
    }
    if (s->cap_lower < len + 1) {
        char *l = realloc(s->lower, len + 1);
        if (!l)
            return AT_ENOMEM;
        s->lower = l;
        s->cap_lower = len + 1;
    }
    for (size_t i = 0; i < len; i++)
        s->lower[i] = (char)tolower((unsigned char)text[i]);
    s->lower[len] = '\0';

    /* Prefilter: patterns whose required literal occurs in the text, plus the unfiltered. When
     * tracing, patterns for other speakers run too so that the trace can say why they did not
     * count. */
    unsigned speaker_bit = 1u << speaker;
    s->n_todo = 0;
    for (size_t i = 0; i + 3 <= len; i++) {
        uint32_t k = tri_key(s->lower + i);
        for (uint32_t j = m->bucket_start[k]; j < m->bucket_start[k + 1]; j++) {
            const literal *l = &m->literals[m->order[j]];
            if (s->stamp[l->pattern] == s->generation)
                continue;
            if (l->len <= len - i && memcmp(s->lower + i, l->text, l->len) == 0) {
                if (!trace && !(m->patterns[l->pattern].speakers & speaker_bit))
                    continue;
                s->stamp[l->pattern] = s->generation;
                s->todo[s->n_todo++] = l->pattern;
            }
        }
    }
    for (size_t i = 0; i < m->n_unfiltered; i++) {
        uint32_t pi = m->unfiltered[i];
        if (trace || (m->patterns[pi].speakers & speaker_bit))
            s->todo[s->n_todo++] = pi;
    }
    for (size_t i = 0; i < s->n_todo; i++)
        if (run_pattern(m, s, s->todo[i], text, len, &out->n_limit_hits))
            return AT_ENOMEM;
    if (trace || speaker == AT_SPEAKER_CUSTOMER) {
        if (run_wordlist(m, s, &m->abuse, AT_CAT_ABUSE, len, false) ||
            run_wordlist(m, s, &m->anger, AT_CAT_ANGER, len, true) ||
            run_shouting(m, s, text, len))
            return AT_ENOMEM;
    }

    /* Gates. Blocks first: a block pattern suppresses overlapping candidates of its category. */
    size_t n_out = 0;
    if (s->cap_out < s->n_cands) {
        at_marker *o = realloc(s->out, s->n_cands * sizeof *o);
        if (!o)
            return AT_ENOMEM;
        s->out = o;
        s->cap_out = s->n_cands;
    }
    if (trace && s->n_cands)
        at__buf_printf(trace, "markers (%s turn):\n", at_speaker_name(speaker));
    for (size_t i = 0; i < s->n_cands; i++) {
        cand *c = &s->cands[i];
        char why[256];
        if (c->kind == KIND_BLOCK) {
            if (trace && (category_speakers(c->m.category) & speaker_bit))
                trace_cand(trace, text, c, "a look-alike guard (kind block), never a marker");
            continue;
        }
        unsigned speakers = c->pattern >= 0 ? m->patterns[c->pattern].speakers
                                            : category_speakers(c->m.category);
        if (!(speakers & speaker_bit)) {
            snprintf(why, sizeof why, "wrong speaker (%s; %s is for %s)",
                     at_speaker_name(speaker), at_category_name(c->m.category),
                     at_category_family(c->m.category) == AT_FAMILY_FRUSTRATION
                         ? "customer turns"
                         : "agent and bot turns");
            trace_cand(trace, text, c, why);
            continue;
        }
        const cand *blocker = NULL;
        for (size_t j = 0; j < s->n_cands && !blocker; j++) {
            const cand *b = &s->cands[j];
            if (b->kind == KIND_BLOCK && b->m.category == c->m.category &&
                (m->patterns[b->pattern].speakers & speaker_bit) && b->m.start < c->m.end &&
                c->m.start < b->m.end)
                blocker = b;
        }
        if (blocker) {
            snprintf(why, sizeof why, "look-alike, blocked by %s", blocker->m.pattern_id);
            trace_cand(trace, text, c, why);
            continue;
        }
        if (c->kind == KIND_MATCH) {
            size_t cs, ce;
            int kind = scope_check(m, s, text, c->m.start, &cs, &ce);
            if (kind) {
                snprintf(why, sizeof why, "%s \"%.*s\"", scope_names[kind], (int)(ce - cs),
                         text + cs);
                trace_cand(trace, text, c, why);
                continue;
            }
        }
        /* One marker per category and span: drop a candidate inside one already kept. */
        bool dup = false;
        for (size_t j = 0; j < n_out && !dup; j++) {
            at_marker *o = &s->out[j];
            if (o->category == c->m.category && o->start < c->m.end && c->m.start < o->end) {
                dup = true;
                if (c->m.end - c->m.start > o->end - o->start)
                    *o = c->m; /* keep the longer span */
            }
        }
        if (dup) {
            trace_cand(trace, text, c, "overlaps another marker of the same category");
            continue;
        }
        trace_cand(trace, text, c, NULL);
        s->out[n_out++] = c->m;
        out->category_mask |= 1u << c->m.category;
    }
    qsort(s->out, n_out, sizeof *s->out, cmp_marker);
    out->markers = s->out;
    out->n_markers = n_out;

    /* Frustration (customer turns only): 1 - (1 - w_s * max(0, -compound)) * prod(1 - w_c) over
     * the signals that fired. Each factor is in [0,1], so the score is in [0,1]; it rises with
     * every signal and with negative sentiment, and one strong signal alone can approach its
     * weight. */
    out->frustration_score = 0;
    if (speaker == AT_SPEAKER_CUSTOMER) {
        double neg = compound < 0 ? -compound : 0;
        double keep = 1.0 - m->weight_sentiment * neg;
        for (int c = AT_CAT_ANGER; c <= AT_CAT_SARCASM; c++)
            if (out->category_mask & (1u << c))
                keep *= 1.0 - m->weight[c];
        out->frustration_score = at_round(1.0 - keep, 4);
        if (trace) {
            at__buf_printf(trace, "frustration = 1 - (1 - %.2f x %.4f)", m->weight_sentiment,
                           neg);
            for (int c = AT_CAT_ANGER; c <= AT_CAT_SARCASM; c++)
                if (out->category_mask & (1u << c))
                    at__buf_printf(trace, " x (1 - %.2f %s)", m->weight[c],
                                   at_category_name((at_category)c));
            at__buf_printf(trace, " = %.4f\n", out->frustration_score);
        }
    }
    return 0;
}
