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

#define LATE_MAX 6 /* texts of a dropped group looked for before a run, at most */

typedef struct pattern {
    char *id;
    enum pattern_kind kind;
    at_category category; /* for a block: the first category it guards */
    uint32_t block_mask;  /* for a block: bit (1u << cat) of every category it guards */
    unsigned speakers;    /* bit (1u << at_speaker) */
    uint8_t groups_mask;  /* prefilter: bits of the literal groups that must all be present */
    uint8_t anchor_bit;   /* the group every match starts with, or 0 */
    pcre2_code *code;
    pcre2_code *anchored; /* compiled PCRE2_ANCHORED, when anchor_bit: tried at each hit */
    bool is_jit, is_jit_anchored; /* JIT-compiled: matched with pcre2_jit_match */
    bool needs_caps; /* every match holds two capital ASCII letters in a row */
    /* A group dropped from the prefilter (drop_anywhere_groups) whose texts found only by a
     * search at every byte are few: its other texts stay in the tries, and when none of them
     * occurred these are looked for (lower_has) before the pattern runs. */
    uint8_t late_bit;  /* the group, or 0 */
    uint8_t n_late;
    char *late[LATE_MAX];
    uint8_t late_len[LATE_MAX];
    char *where; /* "file:line", for messages */
} pattern;

/* Whether code was JIT-compiled (the JIT fast path skips pcre2_match's checks). */
static bool has_jit(const pcre2_code *code)
{
    size_t size = 0;
    return code && pcre2_pattern_info(code, PCRE2_INFO_JITSIZE, &size) == 0 && size > 0;
}

static int match_at(const pcre2_code *code, bool is_jit, const char *text, size_t len,
                    size_t start, pcre2_match_data *md, pcre2_match_context *mctx)
{
    if (is_jit)
        return pcre2_jit_match(code, (PCRE2_SPTR)text, len, start, 0, md, mctx);
    return pcre2_match(code, (PCRE2_SPTR)text, len, start, 0, md, mctx);
}

/* A required literal of a pattern, for the prefilter. Literals with the same text are
 * contiguous (sorted) and compared once, as one utext. */
typedef struct literal {
    char *text; /* lower-case ASCII, >= 3 bytes */
    size_t len;
    uint32_t pattern;
    unsigned speakers; /* the pattern's, checked before comparing */
    uint8_t group_bit; /* which of the pattern's required groups this literal belongs to */
    bool is_anchor;    /* a match may start where it occurs: remember the position */
    bool is_ws;        /* it can only occur at a word start */
    bool is_we;        /* it counts only at a word end (no word character follows) */
    uint8_t offset;    /* anchors: bytes of the lead before this text (the match starts there) */
} literal;

/* A byte trie. Node 0 is the root; node n's children are edges first .. first + n_edges - 1
 * (edge_byte sorted, edge_child), and utext is the text that ends at n, or NO_UTEXT. Walking it
 * finds every literal that occurs, in time independent of how many there are. Every literal has
 * at least three bytes, so walks start from depth2, indexed by the first two bytes. */
typedef struct tnode {
    const char *skip;  /* skip_len bytes every text below shares: compared in one go */
    uint32_t first;    /* its first edge */
    uint32_t utext;    /* the text ending here (after the skip), or NO_UTEXT */
    uint16_t n_edges;
    uint8_t skip_len;
    uint8_t speakers;  /* the utext's speakers, so that other speakers' texts cost nothing */
} tnode;

/* The scan walks a packed copy of the trie: one byte array holding the nodes below depth 2 in
 * depth-first order, so that a walk reads a few neighbouring cache lines instead of chasing
 * pointers through separate node, edge, text and literal arrays. A packed node is
 *     skip_len, n_edges, speakers             3 bytes
 *     number of literals, their lentries      2 + 4 each
 *     skip bytes                              skip_len bytes
 *     edge bytes, sorted                      n_edges bytes
 *     child offsets into the array            4 bytes each
 * (multi-byte fields little-endian, read with memcpy). The array has PK_PAD zero bytes after
 * its end, so that skip and edge bytes can be compared eight at a time (walk_trie) without
 * branching on their count. The nodes at depth 2 are found through a 65536-bit set over the
 * first two bytes, then a hash table of them whose slot also says which third bytes follow:
 * one cache line for what took three (a set of three-byte hashes, keys, offsets). */
typedef struct d2slot {
    uint32_t off;  /* the offset in pk of the node */
    uint16_t key;  /* the two bytes, b0 | b1 << 8 (0: an empty slot) */
    uint16_t unused;
    uint64_t third; /* bit b & 63 for each byte b that follows them in some text */
} d2slot;

typedef struct ltrie {
    tnode *nodes;           /* build time only */
    uint8_t *edge_byte;
    uint32_t *edge_child;
    size_t n_nodes, n_edges;
    uint8_t *pk;            /* the packed nodes */
    size_t pk_len, pk_cap;
    uint64_t d2_bits[1024]; /* which first two bytes (b0 | b1 << 8) begin some text */
    unsigned speakers;      /* the speakers whose literals it holds (bit 1u << at_speaker) */
    d2slot *d2;             /* open addressing, d2_mask + 1 slots; with the third bytes, most
                             * walks that would end at once are never started */
    uint32_t d2_mask;
    bool is_high_first; /* every text begins with a byte >= 0x80 (an emoji, say) */
} ltrie;

enum { PK_HEAD = 3, PK_COUNT = 2, PK_PAD = 8 };

#define WALK_BATCH 32 /* word starts whose walks are prepared together */

/* What the scan needs of a literal, in 32 bits (literals[i] and lentries[i] describe the same
 * one): its pattern (bits 0-15), its group bit (16-19), for anchors literal.offset (20-25) and
 * for other literals LE_BOUNDED (20), the anchor flag (26), its speakers (27-30) and whether it
 * counts only at a word end (31).
 * Patterns past the first 65,536 go unfiltered. */
typedef uint32_t lentry;

enum {
    LE_PATTERN_MASK = 0xffff,
    LE_GROUP_SHIFT = 16,
    LE_OFFSET_SHIFT = 20,
    LE_ANCHOR = 1u << 26,
    LE_BOUNDED = 1u << LE_OFFSET_SHIFT, /* without LE_ANCHOR: its pattern is bounded */
    LE_SPEAKER_SHIFT = 27,
};
#define LE_WORD_END (UINT32_C(1) << 31)
#define LE_MAX_PATTERNS 65536

static inline uint32_t le_pattern(lentry e)
{
    return e & LE_PATTERN_MASK;
}

static inline unsigned le_group_bit(lentry e)
{
    return (e >> LE_GROUP_SHIFT) & 0xf;
}

static inline size_t le_offset(lentry e)
{
    return (e >> LE_OFFSET_SHIFT) & 0x3f;
}

static inline unsigned le_speakers(lentry e)
{
    return (e >> LE_SPEAKER_SHIFT) & 0xf;
}

/* A distinct literal text and its literals. */
typedef struct utext {
    const char *text;  /* borrowed from its first literal */
    uint32_t len;
    uint32_t first, n; /* literals[first .. first + n) */
    unsigned speakers; /* union of its literals' speakers */
    bool is_ws;        /* its literals occur at word starts (a text can have two utexts) */
} utext;

/* A scope cue is a word or a phrase of up to SCOPE_MAX_WORDS words. A `pass` phrase starts with
 * a negator but does not negate what follows ("can't believe", "no wonder"): the scan steps
 * over it. */
enum scope_kind { SCOPE_NEGATOR = 1, SCOPE_HYPOTHETICAL = 2, SCOPE_BREAK = 3, SCOPE_PASS = 4 };
static const char *const scope_names[] = {"", "negated by", "hypothetical", "break", "pass"};
static const char *const scope_kinds[] = {"", "negator", "hypothetical", "break", "pass"};
#define N_SCOPE_KINDS 4
#define SCOPE_MAX_WORDS 6

/* Lookup-table entries for word lists (abuse, anger) keep their pattern-id string here. */
typedef struct wordlist {
    at__strmap map;      /* lower-cased phrase -> value (severity); tag = index into ids */
    at__strmap prefixes; /* the first k words of every longer phrase: worth reading on */
    char **ids;          /* "abuse:<canonical>" */
    size_t n_ids;
    size_t max_words;
    uint64_t first[1024];  /* 65536 bits: some phrase's first word hashes here (first_key) */
} wordlist;

#define PREFILTER_MAX_STRINGS 64 /* a required set is cut to about this many literals */
#define PREFILTER_MAX_LEN 40      /* bytes of a literal the trie keeps */

struct at__markers {
    pattern *patterns;
    size_t n_patterns;
    literal *literals;
    size_t n_literals;
    utext *utexts;
    size_t n_utexts;
    lentry *lentries; /* n_literals, parallel to literals */
    uint8_t *groups_mask; /* per pattern: patterns[i].groups_mask, compact for the scan */
    /* Bounded patterns: prefiltered, not anchored. Their matches are searched for only up to
     * the last position where a literal of each group occurred (run_pattern), which the scan
     * records in the scratch's last_pos[bound_slot[pattern]]. */
    uint16_t *bound_slot; /* per pattern: its slot when bounded */
    size_t n_bounded;
    /* Prefilter index: tries of the distinct literal texts, [1] for texts that can only occur
     * at a word start (walked from word starts only), [0] for the others (walked from every
     * position). */
    /* [0]: every literal, for tracing (which shows other speakers' patterns too); [1 + s]:
     * the literals of speaker s's patterns only, so that a turn walks half the nodes. Each
     * pair: texts found anywhere, texts found at word starts. */
    ltrie trie[1 + AT_N_SPEAKERS][2];
    uint8_t tok_class[256]; /* word-list token classes of bytes (tok_class_of) */
    uint32_t *unfiltered; /* patterns with no literal: always run */
    size_t n_unfiltered;

    at__strmap scope;        /* word or phrase (single spaces) -> tag enum scope_kind */
    at__strmap scope_first;  /* the first word of every cue */
    at__strmap scope_prefix; /* the first k words of every longer cue: worth reading on */
    size_t scope_max_words;  /* longest phrase in scope, in words */
    wordlist abuse;
    wordlist anger;
    double anger_max_valence; /* an anger word fires when its VADER valence is <= this */
    const at__vader *vader;   /* borrowed: the model owns both */

    /* settings.tsv */
    size_t scope_words;            /* words looked at before a candidate */
    bool is_quote_gate;            /* candidates inside quotation marks are reported speech */
    double abuse_min_severity;     /* entries below are ignored */
    size_t shout_min_words;        /* all-caps words needed */
    double shout_min_upper_ratio;  /* share of letters upper case */
    double weight[AT_N_CATEGORIES]; /* frustration weight of each signal, [0,1] */
    double weight_sentiment;        /* weight of negative compound */

    pcre2_match_context *mctx;
    /* ATTUNE_PREFILTER=off: every pattern runs, as written (not rewritten by regex.c), on
     * every utterance of its speakers. Slow, and the same results, which is what the tests
     * check: the prefilter and the rewrite only save time. */
    bool is_as_written;
};

/* A candidate marker before the gates. */
#define PATTERN_WORDLIST (-1) /* abuse and anger word lists */
#define PATTERN_BUILTIN (-2)  /* shouting */
typedef struct cand {
    at_marker m;
    int pattern; /* index, PATTERN_WORDLIST or PATTERN_BUILTIN */
    enum pattern_kind kind;
} cand;

#define MAX_QUOTES 16 /* quoted spans remembered per utterance */
#define QUEUED 0x80u   /* groups flag: the pattern is already in todo */
#define NO_HIT UINT32_MAX
#define NO_UTEXT UINT32_MAX

struct at__mscratch {
    pcre2_match_data *md;
    pcre2_match_context *mctx; /* the model's limits, and an offset limit per unanchored run */
    uint64_t *last_pos; /* per bounded pattern (bound_slot), MAX_GROUPS + 1 each: where a
                         * literal of each of its groups last occurred (low half), in which
                         * generation (high half) */
    uint32_t *stamp;  /* per pattern: generation when groups was last reset */
    uint8_t *groups;  /* per pattern: prefilter groups seen in this utterance, | QUEUED */
    uint32_t *hit_first, *hit_last; /* per pattern: its anchor hits, a list through hit_next */
    bool has_caps_pair; /* the utterance has two capital ASCII letters in a row */
    size_t *hit_pos;                /* byte offset of each anchor hit */
    uint32_t *hit_next;
    size_t n_hits, cap_hits;
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
    size_t quote_start[MAX_QUOTES], quote_end[MAX_QUOTES]; /* byte offsets of quoted spans */
    size_t n_quotes;
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
 * computes:
 *  - when the node can only match a few fixed strings, that exact set (lower-case): "sorry",
 *    "(?:so )?sorry" = {"so sorry", "sorry"}, "['’]" = {"'", "’"}, an assertion = {""};
 *  - its requirements: up to MAX_GROUPS groups, each a set of strings of which every match
 *    contains at least one.
 * A sequence multiplies the exact sets of consecutive elements ("I" "['’]?" "m" gives
 * {"im", "i'm", "i’m"}) and offers each product, and the groups of its other mandatory
 * elements, as candidate groups, keeping the best: those whose shortest string (spaces aside)
 * is longest. An alternation takes the union of its branches' best groups. Optional elements,
 * unbounded repeats and anything not understood require nothing, which is always safe. A
 * pattern runs only when a string of every group is in the lower-cased text; letters outside
 * ASCII are never literals because caseless matching may fold them.
 */

#define REQ_MAX 256       /* strings in one set before giving up on it */
#define LIT_MAX 48        /* longest literal kept, bytes */
#define MAX_GROUPS 3      /* sets that must all be present */
#define REQ_MIN_QUALITY 3 /* a set is useful when each string has >= 3 non-space bytes */

/* A set of strings. ws[i]: string i starts at a word start in the text (a word character with
 * no word character before it); for the empty string, that the position is just after a \b
 * assertion, so that a word character appended there starts a word. we[i]: string i ends at a
 * word end (it ends with a word character and no word character follows it); for the empty
 * string, that a \b (or the end of the text) is there, so that a string ending with a word
 * character put before it ends a word. */
typedef struct req {
    size_t n;
    char s[REQ_MAX][LIT_MAX];
    size_t len[REQ_MAX];
    bool ws[REQ_MAX];
    bool we[REQ_MAX];
} req;

typedef struct reqs {
    size_t n; /* groups, best first */
    req g[MAX_GROUPS];
} reqs;

typedef struct rnode {
    bool is_exact; /* exact holds every string the node can match */
    req exact;
    req lead;      /* every match starts with one of these ({""}: nothing known) */
    reqs groups;
    bool ends_nonword; /* every non-empty match ends with a non-word character */
    bool may_be_empty; /* it can match the empty string */
    bool is_capital;   /* a capital ASCII letter matched case-sensitively (maybe repeated) */
    bool needs_caps;   /* every match holds two capital ASCII letters in a row */
    bool has_small; /* small: the requirement with the fewest strings, for unions */
    req small;
} rnode;

typedef struct rparser {
    const char *p;
    const char *end;
    bool failed;
    bool is_case_sensitive; /* inside (?-i:...) */
} rparser;

/* The shortest string of the set with every string cut to cut bytes, not counting spaces at
 * either end. */
static size_t cut_quality(const req *r, size_t cut)
{
    size_t m = SIZE_MAX;
    for (size_t i = 0; i < r->n; i++) {
        const char *a = r->s[i], *b = r->s[i] + (r->len[i] < cut ? r->len[i] : cut);
        while (a < b && *a == ' ')
            a++;
        while (b > a && b[-1] == ' ')
            b--;
        if ((size_t)(b - a) < m)
            m = (size_t)(b - a);
    }
    return r->n ? m : 0;
}

/* The shortest string of the set, not counting spaces at either end. */
static size_t req_quality(const req *r)
{
    return cut_quality(r, SIZE_MAX);
}

static bool req_has(const req *r, const char *s, size_t len)
{
    for (size_t i = 0; i < r->n; i++)
        if (r->len[i] == len && memcmp(r->s[i], s, len) == 0)
            return true;
    return false;
}

/* Adds a string unless present (then it is a word start only if both are); false when the set
 * is full or the string too long. */
static bool req_put_ws(req *r, const char *s, size_t len, bool ws)
{
    for (size_t i = 0; i < r->n; i++)
        if (r->len[i] == len && memcmp(r->s[i], s, len) == 0) {
            r->ws[i] = r->ws[i] && ws;
            r->we[i] = false;
            return true;
        }
    if (r->n == REQ_MAX || len >= LIT_MAX)
        return false;
    memcpy(r->s[r->n], s, len);
    r->s[r->n][len] = '\0';
    r->len[r->n] = len;
    r->we[r->n] = false;
    r->ws[r->n++] = ws;
    return true;
}

static bool req_put(req *r, const char *s, size_t len)
{
    return req_put_ws(r, s, len, false);
}

/* *dst = *src, copying only the strings in use (a req is large). */
static void req_copy(req *dst, const req *src)
{
    if (dst == src)
        return;
    dst->n = src->n;
    for (size_t i = 0; i < src->n; i++) {
        memcpy(dst->s[i], src->s[i], src->len[i] + 1);
        dst->len[i] = src->len[i];
        dst->ws[i] = src->ws[i];
        dst->we[i] = src->we[i];
    }
}

static int cmp_str_index(const void *x, const void *y, void *arg)
{
    const req *r = arg;
    size_t i = *(const uint16_t *)x, j = *(const uint16_t *)y;
    size_t n = r->len[i] < r->len[j] ? r->len[i] : r->len[j];
    int c = memcmp(r->s[i], r->s[j], n);
    return c ? c : (r->len[i] > r->len[j]) - (r->len[i] < r->len[j]);
}

/* Sorts r's strings and merges duplicates (a word start only if all copies are). */
static void req_dedupe(req *r)
{
    uint16_t idx[REQ_MAX];
    for (size_t i = 0; i < r->n; i++)
        idx[i] = (uint16_t)i;
    qsort_r(idx, r->n, sizeof *idx, cmp_str_index, r);
    /* Compact in index order: string idx[k] moves to slot k' <= its rank, so copy through a
     * buffer of the kept indexes first. */
    uint16_t keep[REQ_MAX];
    bool ws[REQ_MAX], we[REQ_MAX];
    size_t n = 0;
    for (size_t k = 0; k < r->n; k++) {
        size_t i = idx[k];
        if (n && r->len[keep[n - 1]] == r->len[i] &&
            memcmp(r->s[keep[n - 1]], r->s[i], r->len[i]) == 0) {
            ws[n - 1] = ws[n - 1] && r->ws[i];
            we[n - 1] = we[n - 1] && r->we[i];
            continue;
        }
        ws[n] = r->ws[i];
        we[n] = r->we[i];
        keep[n++] = (uint16_t)i;
    }
    /* Slots are permuted: move each kept string to its final slot through a scratch copy. */
    static _Thread_local char buf[REQ_MAX][LIT_MAX];
    static _Thread_local size_t lens[REQ_MAX];
    for (size_t k = 0; k < n; k++) {
        memcpy(buf[k], r->s[keep[k]], r->len[keep[k]] + 1);
        lens[k] = r->len[keep[k]];
    }
    for (size_t k = 0; k < n; k++) {
        memcpy(r->s[k], buf[k], lens[k] + 1);
        r->len[k] = lens[k];
        r->ws[k] = ws[k];
        r->we[k] = we[k];
    }
    r->n = n;
}

/* Appends every string of b to r (keeping their word-start flags); false when the union has
 * more than REQ_MAX strings. */
static bool req_union(req *r, const req *b)
{
    for (size_t i = 0; i < b->n; i++) {
        if (r->n == REQ_MAX) {
            req_dedupe(r);
            if (r->n == REQ_MAX)
                return false;
        }
        if (b->len[i] >= LIT_MAX)
            return false;
        memcpy(r->s[r->n], b->s[i], b->len[i] + 1);
        r->len[r->n] = b->len[i];
        r->we[r->n] = b->we[i];
        r->ws[r->n++] = b->ws[i];
    }
    return true;
}

/* ASCII letters, digits and underscore: what \b sees as word characters (bytes of other UTF-8
 * characters count as non-word, which only ever adds word starts). */
static const uint8_t word_chars[256] = {
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
    ['8'] = 1, ['9'] = 1, ['_'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1,
    ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1,
    ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
    ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1,
    ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1,
    ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
    ['y'] = 1, ['z'] = 1,
};

static bool is_word_char(unsigned char c)
{
    return word_chars[c];
}

/* Word-list token bytes: TOK_START may begin a token (letters, digits and the * $ @ that
 * obfuscate profanity), TOK_BODY may continue one (also ' - and bytes of other characters). */
enum { TOK_START = 1, TOK_BODY = 2 };

static unsigned tok_class_of(unsigned char c)
{
    if ((word_chars[c] && c != '_') || c == '*' || c == '$' || c == '@')
        return TOK_START | TOK_BODY;
    return c == '\'' || c == '-' || c >= 0x80 ? TOK_BODY : 0;
}


static bool req_same(const req *a, const req *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (!req_has(b, a->s[i], a->len[i]))
            return false;
    return true;
}

/* Adds a group to rs in order (highest quality first, then fewest strings), keeping the best
 * MAX_GROUPS; groups below REQ_MIN_QUALITY are useless and dropped. */
static void req_shrink(req *r, size_t max_n);

/* Whether every match of b contains one of a: each string of b holds a string of a. A group
 * implied by another adds nothing to the prefilter. */
static bool req_implies(const req *b, const req *a)
{
    for (size_t i = 0; i < b->n; i++) {
        bool found = false;
        for (size_t j = 0; j < a->n && !found; j++)
            found = a->len[j] <= b->len[i] && strstr(b->s[i], a->s[j]) != NULL;
        if (!found)
            return false;
    }
    return true;
}

/* Whether each string of b is a string of a whose word-start and word-end flags include
 * b's. */
static bool req_flags_cover(const req *a, const req *b)
{
    for (size_t j = 0; j < b->n; j++) {
        bool found = false;
        for (size_t i = 0; i < a->n && !found; i++)
            if (a->len[i] == b->len[j] && memcmp(a->s[i], b->s[j], a->len[i]) == 0)
                found = (a->ws[i] || !b->ws[j]) && (a->we[i] || !b->we[j]);
        if (!found)
            return false;
    }
    return true;
}

static void reqs_add(reqs *rs, const req *r)
{
    /* A set too big for the prefilter is judged as the prefilter will use it, cut to shorter
     * prefixes: a product of many strings that shrinks to "are " must not win over the
     * three words it grew from. */
    req *cut = NULL;
    if (r->n > PREFILTER_MAX_STRINGS && (cut = malloc(sizeof *cut))) {
        req_copy(cut, r);
        req_shrink(cut, PREFILTER_MAX_STRINGS);
        r = cut;
    }
    size_t q = req_quality(r);
    if (q < REQ_MIN_QUALITY)
        goto out;
    for (size_t i = 0; i < rs->n; i++) {
        if (req_same(&rs->g[i], r)) {
            /* The same strings, found the same way or with more word starts and ends known
             * (the element "(?:joke|con)" and the product "(?:joke|con)\b"): keep the
             * stronger. */
            if (req_flags_cover(r, &rs->g[i]))
                req_copy(&rs->g[i], r);
            goto out;
        }
        if (req_implies(&rs->g[i], r))
            goto out;
    }
    /* Groups that r implies make room for it. */
    for (size_t i = 0; i < rs->n;) {
        if (req_implies(r, &rs->g[i])) {
            for (size_t k = i + 1; k < rs->n; k++)
                req_copy(&rs->g[k - 1], &rs->g[k]);
            rs->n--;
        } else {
            i++;
        }
    }
    size_t at = 0;
    while (at < rs->n) {
        size_t qa = req_quality(&rs->g[at]);
        if (q > qa || (q == qa && r->n < rs->g[at].n))
            break;
        at++;
    }
    if (at >= MAX_GROUPS)
        goto out;
    size_t last = rs->n < MAX_GROUPS ? rs->n : MAX_GROUPS - 1;
    for (size_t i = last; i > at; i--)
        req_copy(&rs->g[i], &rs->g[i - 1]);
    req_copy(&rs->g[at], r);
    if (rs->n < MAX_GROUPS)
        rs->n++;
out:
    free(cut);
}

/* a = a x b (every string of a followed by every string of b, duplicates merged); false when
 * it would not fit. */
static bool req_product(req *a, const req *b, req *tmp)
{
    if (a->n * b->n > REQ_MAX)
        return false;
    tmp->n = 0;
    for (size_t i = 0; i < a->n; i++)
        for (size_t j = 0; j < b->n; j++) {
            size_t len = a->len[i] + b->len[j];
            if (len >= LIT_MAX)
                return false;
            memcpy(tmp->s[tmp->n], a->s[i], a->len[i]);
            memcpy(tmp->s[tmp->n] + a->len[i], b->s[j], b->len[j]);
            tmp->s[tmp->n][len] = '\0';
            tmp->len[tmp->n] = len;
            /* The product starts where a's string does; an empty one after \b followed by a
             * word character starts a word. */
            /* It ends where b's string does; an empty one at \b after a word character ends
             * a word. */
            tmp->we[tmp->n] = b->len[j] ? b->we[j]
                              : a->len[i] ? a->we[i] ||
                                                (b->we[j] &&
                                                 is_word_char((unsigned char)a->s[i][a->len[i] - 1]))
                                          : a->we[i] || b->we[j];
            tmp->ws[tmp->n++] = a->len[i] ? a->ws[i]
                                : b->len[j] ? b->ws[j] || (a->ws[i] &&
                                                           is_word_char((unsigned char)b->s[j][0]))
                                            : a->ws[i] || b->ws[j];
        }
    /* Merge duplicates: sort an index, keep the first of each run (a word start only if all
     * are). */
    uint16_t idx[REQ_MAX];
    for (size_t i = 0; i < tmp->n; i++)
        idx[i] = (uint16_t)i;
    qsort_r(idx, tmp->n, sizeof *idx, cmp_str_index, tmp);
    a->n = 0;
    for (size_t k = 0; k < tmp->n; k++) {
        size_t i = idx[k];
        if (a->n && a->len[a->n - 1] == tmp->len[i] &&
            memcmp(a->s[a->n - 1], tmp->s[i], tmp->len[i]) == 0) {
            a->ws[a->n - 1] = a->ws[a->n - 1] && tmp->ws[i];
            a->we[a->n - 1] = a->we[a->n - 1] && tmp->we[i];
            continue;
        }
        memcpy(a->s[a->n], tmp->s[i], tmp->len[i] + 1);
        a->len[a->n] = tmp->len[i];
        a->we[a->n] = tmp->we[i];
        a->ws[a->n++] = tmp->ws[i];
    }
    return true;
}

static void req_empty(req *r)
{
    r->n = 1;
    r->s[0][0] = '\0';
    r->len[0] = 0;
    r->ws[0] = false;
    r->we[0] = false;
}

static void req_single(req *r, const char *s, size_t len, bool ws, bool we)
{
    r->n = 1;
    memcpy(r->s[0], s, len);
    r->s[0][len] = '\0';
    r->len[0] = len;
    r->ws[0] = ws;
    r->we[0] = we;
}

static void node_empty(rnode *n)
{
    n->is_exact = true;
    req_empty(&n->exact);
    req_empty(&n->lead);
    n->groups.n = 0;
    n->has_small = false;
    n->ends_nonword = n->may_be_empty = true;
    n->is_capital = n->needs_caps = false;
}

static void node_unknown(rnode *n)
{
    n->is_exact = false;
    n->exact.n = 0;
    req_empty(&n->lead);
    n->groups.n = 0;
    n->has_small = false;
    n->ends_nonword = n->may_be_empty = false;
    n->is_capital = n->needs_caps = false;
}

/* Keeps r as n's small requirement when it has fewer strings (ties: higher quality). */
static void offer_small(rnode *n, const req *r)
{
    size_t q = req_quality(r);
    if (q < REQ_MIN_QUALITY)
        return;
    if (!n->has_small || r->n < n->small.n ||
        (r->n == n->small.n && q > req_quality(&n->small))) {
        req_copy(&n->small, r);
        n->has_small = true;
    }
}

static void node_char(rnode *n, const char *bytes, size_t len)
{
    node_unknown(n);
    n->is_exact = true;
    req_put(&n->exact, bytes, len);
    req_copy(&n->lead, &n->exact);
    n->ends_nonword = !is_word_char((unsigned char)bytes[0]);
}

/* after_nonword: what precedes the node ends with a non-word character or \b, so a string
 * of it that begins with a word character begins a word. */
static void parse_alt(rparser *rp, rnode *out, bool after_nonword);

/* Copies the word-start flags of from's strings onto the same strings of r. */
static void mark_ws_like(req *r, const req *from)
{
    for (size_t i = 0; i < r->n; i++)
        for (size_t j = 0; j < from->n; j++)
            if (r->len[i] == from->len[j] && memcmp(r->s[i], from->s[j], r->len[i]) == 0)
                r->ws[i] = from->ws[j];
}

/* Reads a quantifier at rp->p: *lo and *hi (SIZE_MAX for unbounded); false when there is none
 * (1, 1). */
static bool parse_quant(rparser *rp, size_t *lo, size_t *hi)
{
    *lo = *hi = 1;
    if (rp->p >= rp->end)
        return false;
    char c = *rp->p;
    if (c == '?' || c == '*' || c == '+') {
        *lo = c == '+';
        *hi = c == '?' ? 1 : SIZE_MAX;
        rp->p++;
    } else if (c == '{') {
        const char *q = rp->p + 1;
        size_t a = 0, b;
        bool digits = false;
        while (q < rp->end && isdigit((unsigned char)*q)) {
            a = a * 10 + (size_t)(*q - '0');
            q++;
            digits = true;
        }
        if (!digits || q >= rp->end || (*q != '}' && *q != ','))
            return false; /* a literal '{' */
        b = a;
        if (*q == ',') {
            q++;
            b = SIZE_MAX;
            if (q < rp->end && isdigit((unsigned char)*q)) {
                b = 0;
                while (q < rp->end && isdigit((unsigned char)*q))
                    b = b * 10 + (size_t)(*q++ - '0');
            }
        }
        while (q < rp->end && *q != '}')
            q++;
        rp->p = q < rp->end ? q + 1 : q;
        *lo = a;
        *hi = b;
    } else {
        return false;
    }
    if (rp->p < rp->end && (*rp->p == '?' || *rp->p == '+'))
        rp->p++; /* lazy or possessive */
    return true;
}

/* A character class made only of single characters without case outside ASCII letters
 * ("['’]", "[sz]", "[,.]") is an exact set; anything else (ranges, negation, escapes such as
 * \s) is not. Leaves rp after the closing bracket. */
static void parse_class(rparser *rp, rnode *out)
{
    node_unknown(out);
    bool is_simple = true;
    req set;
    set.n = 0;
    if (rp->p < rp->end && *rp->p == '^') {
        is_simple = false;
        rp->p++;
    }
    bool first = true;
    while (rp->p < rp->end && (*rp->p != ']' || first)) {
        first = false;
        unsigned char c = (unsigned char)*rp->p;
        if (c == '\\' && rp->p + 1 < rp->end) {
            char e = rp->p[1];
            if (ispunct((unsigned char)e) || e == ' ') {
                char lc = e;
                is_simple = is_simple && req_put(&set, &lc, 1);
            } else {
                is_simple = false;
            }
            rp->p += 2;
        } else if (c == '[' && rp->p + 1 < rp->end && rp->p[1] == ':') {
            const char *q = strstr(rp->p, ":]");
            rp->p = q && q < rp->end ? q + 2 : rp->end;
            is_simple = false;
        } else if (c == 0xE2 && rp->p + 2 < rp->end && (unsigned char)rp->p[1] <= 0x81) {
            /* General punctuation (U+2000..U+207F): no case, compared as bytes. */
            is_simple = is_simple && req_put(&set, rp->p, 3);
            rp->p += 3;
        } else if (c == 0xF0 && rp->p + 3 < rp->end && (unsigned char)rp->p[1] == 0x9F) {
            /* Emoji and other symbols (U+1F000..U+1FFFF): no case either. */
            is_simple = is_simple && req_put(&set, rp->p, 4);
            rp->p += 4;
        } else if (c >= 0x80) {
            is_simple = false;
            rp->p++;
            while (rp->p < rp->end && ((unsigned char)*rp->p & 0xC0) == 0x80)
                rp->p++;
        } else if (rp->p + 2 < rp->end && rp->p[1] == '-' && rp->p[2] != ']') {
            is_simple = false; /* a range */
            rp->p += 3;
        } else {
            char lc = (char)tolower(c);
            is_simple = is_simple && req_put(&set, &lc, 1);
            rp->p++;
        }
    }
    if (rp->p < rp->end)
        rp->p++;
    else
        rp->failed = true;
    if (is_simple && set.n && set.n <= 8) {
        out->is_exact = true;
        req_copy(&out->exact, &set);
        req_copy(&out->lead, &set);
        out->ends_nonword = true;
        for (size_t i = 0; i < set.n; i++)
            out->ends_nonword = out->ends_nonword && !is_word_char((unsigned char)set.s[i][0]);
    }
}

/* Parses one atom into out. */
static void parse_atom(rparser *rp, rnode *out, bool after_nonword)
{
    node_unknown(out);
    char c = *rp->p++;
    if (c == '(') {
        bool capture_like = true, is_lookbehind = false;
        bool was_case_sensitive = rp->is_case_sensitive;
        if (rp->p < rp->end && *rp->p == '?') {
            rp->p++;
            char k = rp->p < rp->end ? *rp->p : '\0';
            if (k == ':' || k == '>' || k == '|') {
                rp->p++;
            } else if (k == '=' || k == '!' || (k == '<' && rp->p + 1 < rp->end &&
                                                  (rp->p[1] == '=' || rp->p[1] == '!'))) {
                capture_like = false;
                is_lookbehind = k == '<' && rp->p[1] == '=';
                rp->p += k == '<' ? 2 : 1;
            } else if (k == '<' || k == 'P' || k == '\'') {
                /* Named group: skip the name. */
                while (rp->p < rp->end && *rp->p != '>' && *rp->p != '\'')
                    rp->p++;
                if (rp->p < rp->end)
                    rp->p++;
            } else {
                /* Inline options such as (?i) or (?-i:...). Case does not matter to the
                 * prefilter: what matches "SO" case-sensitively still reads "so" in the
                 * lower-cased text, so a case-sensitive group requires its literals too. Only
                 * (?-i:...) is known to be case-sensitive (for needs_caps); any other change
                 * of i is taken as caseless, which claims nothing. */
                bool is_off = false, is_i_on = false, is_i_off = false;
                while (rp->p < rp->end && *rp->p != ')' && *rp->p != ':') {
                    if (*rp->p == '-')
                        is_off = true;
                    else if (*rp->p == 'i')
                        *(is_off ? &is_i_off : &is_i_on) = true;
                    rp->p++;
                }
                if (rp->p < rp->end && *rp->p == ')') {
                    rp->p++;
                    if (is_i_on || is_i_off)
                        rp->is_case_sensitive = false; /* for the rest of the group */
                    node_empty(out);
                    return;
                }
                if (is_i_on || is_i_off)
                    rp->is_case_sensitive = is_i_off && !is_i_on;
                if (rp->p < rp->end)
                    rp->p++;
            }
        }
        parse_alt(rp, out, after_nonword);
        rp->is_case_sensitive = was_case_sensitive;
        if (rp->p < rp->end && *rp->p == ')')
            rp->p++;
        else
            rp->failed = true;
        /* A lookbehind that always ends with a non-word character, (?<=["“]), leaves what
         * follows where a word may start, as \b does. */
        bool is_boundary = is_lookbehind && out->ends_nonword && !out->may_be_empty;
        if (!capture_like) {
            node_empty(out); /* asserts without consuming (or case-sensitive): requires nothing */
            out->exact.ws[0] = out->lead.ws[0] = is_boundary;
        }
        return;
    }
    if (c == '[') {
        parse_class(rp, out);
        return;
    }
    if (c == '\\') {
        if (rp->p >= rp->end) {
            rp->failed = true;
            return;
        }
        char e = *rp->p++;
        if (e == 'b' || e == 'B' || e == 'A' || e == 'z' || e == 'Z' || e == 'G') {
            node_empty(out); /* an assertion: consumes nothing */
            out->exact.ws[0] = out->lead.ws[0] = e == 'b' || e == 'A';
            out->exact.we[0] = out->lead.we[0] = e == 'b' || e == 'z' || e == 'Z';
            return;
        }
        if (e == 'p' || e == 'P' || e == 'x' || e == 'o' || e == 'g' || e == 'k' || e == 'N') {
            /* Skip the argument: {..}, <name>, 'name' or (for \g) a number. */
            char close = 0;
            if (rp->p < rp->end && *rp->p == '{')
                close = '}';
            else if (rp->p < rp->end && (e == 'k' || e == 'g') && *rp->p == '<')
                close = '>';
            else if (rp->p < rp->end && (e == 'k' || e == 'g') && *rp->p == '\'')
                close = '\'';
            if (close) {
                rp->p++;
                while (rp->p < rp->end && *rp->p != close)
                    rp->p++;
                if (rp->p < rp->end)
                    rp->p++;
            } else if (e == 'p' || e == 'P') {
                rp->p++;
            } else if (e == 'g') {
                if (rp->p < rp->end && (*rp->p == '-' || *rp->p == '+'))
                    rp->p++;
                while (rp->p < rp->end && isdigit((unsigned char)*rp->p))
                    rp->p++;
            }
            return;
        }
        if (isdigit((unsigned char)e)) {
            /* A back reference (\1): matches text, but not a known literal. */
            while (rp->p < rp->end && isdigit((unsigned char)*rp->p))
                rp->p++;
            return;
        }
        if (e == 'Q') {
            rp->failed = true; /* quoting is not worth understanding here */
            return;
        }
        if (ispunct((unsigned char)e) || e == ' ')
            node_char(out, &e, 1);
        out->ends_nonword = e == 's' || e == 'W' || e == 'h' || e == 'v' || e == 'R';
        return; /* \s \w \d and friends: not literal */
    }
    if (c == '^' || c == '$') {
        node_empty(out);
        out->exact.ws[0] = out->lead.ws[0] = c == '^';
        out->exact.we[0] = out->lead.we[0] = c == '$';
        return;
    }
    if (c == '.')
        return;
    if ((unsigned char)c == 0xE2 && rp->p + 1 < rp->end && (unsigned char)rp->p[0] <= 0x81) {
        node_char(out, rp->p - 1, 3); /* general punctuation, such as ’: no case */
        rp->p += 2;
        return;
    }
    if ((unsigned char)c == 0xF0 && rp->p + 2 < rp->end && (unsigned char)rp->p[0] == 0x9F) {
        node_char(out, rp->p - 1, 4); /* emoji and other symbols (U+1F000..U+1FFFF) */
        rp->p += 3;
        return;
    }
    if ((unsigned char)c >= 0x80) {
        /* Other non-ASCII: caseless UTF matching may fold it; not a prefilter literal. */
        while (rp->p < rp->end && ((unsigned char)*rp->p & 0xC0) == 0x80)
            rp->p++;
        return;
    }
    char lc = (char)tolower((unsigned char)c);
    node_char(out, &lc, 1);
    out->is_capital = rp->is_case_sensitive && c >= 'A' && c <= 'Z';
}

/* Applies a quantifier to a parsed atom. */
static void apply_quant(rnode *n, size_t lo, size_t hi)
{
    if (lo == 1 && hi == 1)
        return;
    if (lo == 0) {
        /* Optional: requires nothing; "x?" is still exact as {x, ""}. */
        n->groups.n = 0;
        n->has_small = false;
        n->may_be_empty = true;
        n->is_capital = n->needs_caps = false;
        if (n->is_exact && hi == 1)
            n->is_exact = req_put(&n->exact, "", 0);
        else
            n->is_exact = false;
        if (n->is_exact)
            req_copy(&n->lead, &n->exact);
        else
            req_empty(&n->lead);
        return;
    }
    /* At least once: its requirements stand, and its exact set becomes a group. */
    if (n->is_exact) {
        reqs_add(&n->groups, &n->exact);
        offer_small(n, &n->exact);
    }
    n->is_exact = false;
}

static void parse_seq(rparser *rp, rnode *out, bool after_nonword)
{
    node_empty(out); /* an empty sequence matches "" */
    rnode *cur = malloc(sizeof *cur);
    req *tmp = malloc(sizeof *tmp);
    req *sub = malloc(sizeof *sub);
    if (!cur || !tmp || !sub) {
        rp->failed = true; /* out of memory: the pattern simply goes unfiltered */
        goto done;
    }
    /* out->exact is the running product of exact elements since the last inexact one;
     * out->lead the product of the elements from the start while they are exact, closed by
     * the lead of the first inexact one. */
    bool is_whole = true, is_lead_open = true;
    char run[LIT_MAX]; /* consecutive single-string elements: a plain literal */
    size_t run_len = 0;
    bool run_ws = false, at_boundary = false; /* the run starts a word; the last was \b */
    bool run_we = false;                      /* the run ends a word */
    bool seq_ends_nonword = true, seq_may_be_empty = true;
    /* Two capitals in a row, each matched at least once: "SO" in (?-i:SO|SOOO+). */
    bool seq_needs_caps = false, prev_capital = false, only_capital = false;
    size_t n_elements = 0;
    /* sub: the product of the mandatory exact elements since the last optional or inexact
     * one. Optional elements multiply the running product until it is cut to short prefixes
     * ("that's", "this is"); the run after them (" on us", " on me") stays specific. */
    req_empty(sub);
    while (rp->p < rp->end && *rp->p != '|' && *rp->p != ')') {
        parse_atom(rp, cur, after_nonword);
        if (rp->failed)
            goto done;
        size_t lo, hi;
        if (parse_quant(rp, &lo, &hi))
            apply_quant(cur, lo, hi);
        {
            bool is_mandatory = !cur->may_be_empty;
            seq_needs_caps = seq_needs_caps || (is_mandatory && cur->needs_caps) ||
                             (is_mandatory && cur->is_capital && prev_capital);
            prev_capital = is_mandatory && cur->is_capital;
            only_capital = cur->is_capital;
            n_elements++;
        }
        /* After a space (or \b), strings that begin with a word character begin a word. */
        if (after_nonword) {
            for (size_t i = 0; cur->is_exact && i < cur->exact.n; i++)
                if (cur->exact.len[i] && is_word_char((unsigned char)cur->exact.s[i][0]))
                    cur->exact.ws[i] = true;
            for (size_t i = 0; i < cur->lead.n; i++)
                if (cur->lead.len[i] && is_word_char((unsigned char)cur->lead.s[i][0]))
                    cur->lead.ws[i] = true;
            /* A group that is exactly the lead occurs where the element starts. */
            for (size_t g = 0; g < cur->groups.n; g++)
                if (req_same(&cur->groups.g[g], &cur->lead))
                    mark_ws_like(&cur->groups.g[g], &cur->lead);
            if (cur->has_small && req_same(&cur->small, &cur->lead))
                mark_ws_like(&cur->small, &cur->lead);
        }
        {
            bool is_boundary = cur->is_exact && cur->exact.n == 1 && !cur->exact.len[0] &&
                               cur->exact.ws[0];
            after_nonword = is_boundary ||
                            (cur->ends_nonword && (!cur->may_be_empty || after_nonword));
            if (!cur->may_be_empty) {
                seq_ends_nonword = cur->ends_nonword;
                seq_may_be_empty = false;
            } else {
                seq_ends_nonword = seq_ends_nonword && cur->ends_nonword;
            }
        }
        if (cur->is_exact && cur->exact.n == 1 && run_len + cur->exact.len[0] < LIT_MAX) {
            if (!run_len && cur->exact.len[0])
                run_ws = cur->exact.ws[0] ||
                         (at_boundary && is_word_char((unsigned char)cur->exact.s[0][0]));
            if (cur->exact.len[0])
                run_we = cur->exact.we[0];
            else
                run_we = run_we || (cur->exact.we[0] && run_len &&
                                    is_word_char((unsigned char)run[run_len - 1]));
            memcpy(run + run_len, cur->exact.s[0], cur->exact.len[0]);
            run_len += cur->exact.len[0];
        } else {
            req_single(tmp, run, run_len, run_ws, run_we);
            offer_small(out, tmp);
            run_len = 0;
            run_we = false;
        }
        at_boundary = cur->is_exact && cur->exact.n == 1 && !cur->exact.len[0] &&
                      cur->exact.ws[0];
        if (cur->has_small)
            offer_small(out, &cur->small);
        if (cur->is_exact)
            offer_small(out, &cur->exact);
        /* A mandatory element's own strings are required too; they matter when the product
         * around them grows too big to be a useful set. */
        if (cur->is_exact && !cur->may_be_empty && cur->exact.n > 1)
            reqs_add(&out->groups, &cur->exact);
        {
            bool is_assertion = cur->is_exact && cur->exact.n == 1 && !cur->exact.len[0];
            if (cur->is_exact && (!cur->may_be_empty || is_assertion)) {
                if (!req_product(sub, &cur->exact, tmp)) {
                    reqs_add(&out->groups, sub);
                    req_copy(sub, &cur->exact);
                }
            } else {
                reqs_add(&out->groups, sub);
                req_empty(sub);
            }
        }
        if (is_lead_open) {
            bool fits = req_product(&out->lead, cur->is_exact ? &cur->exact : &cur->lead, tmp);
            is_lead_open = fits && cur->is_exact;
        }
        if (cur->is_exact && req_product(&out->exact, &cur->exact, tmp))
            continue;
        /* The product ends here: it is one candidate group. */
        reqs_add(&out->groups, &out->exact);
        offer_small(out, &out->exact);
        is_whole = false;
        if (cur->is_exact) {
            req_copy(&out->exact, &cur->exact);
        } else {
            req_empty(&out->exact);
            for (size_t i = 0; i < cur->groups.n; i++) {
                reqs_add(&out->groups, &cur->groups.g[i]);
                offer_small(out, &cur->groups.g[i]);
            }
        }
    }
    req_single(tmp, run, run_len, run_ws, run_we);
    offer_small(out, tmp);
    reqs_add(&out->groups, &out->exact);
    offer_small(out, &out->exact);
    reqs_add(&out->groups, sub);
    out->is_exact = is_whole;
    out->ends_nonword = seq_ends_nonword;
    out->may_be_empty = seq_may_be_empty;
    out->needs_caps = seq_needs_caps;
    out->is_capital = n_elements == 1 && only_capital;
    if (is_whole)
        req_copy(&out->lead, &out->exact);
done:
    free(cur);
    free(tmp);
    free(sub);
}

/* An alternation is exact when every branch is; it requires the union of one requirement of
 * each branch (every match goes through one branch, which contains a string of it): the best
 * groups when their union fits, else each branch's smallest requirement (a plain literal such as
 * "not" rather than a product of hundreds of strings). */
static void parse_alt(rparser *rp, rnode *out, bool after_nonword)
{
    parse_seq(rp, out, after_nonword);
    if (rp->failed || rp->p >= rp->end || *rp->p != '|')
        return;
    rnode *branch = malloc(sizeof *branch);
    req *best = malloc(sizeof *best);
    req *small = malloc(sizeof *small);
    if (!branch || !best || !small) {
        rp->failed = true;
        goto done;
    }
    bool has_best = out->groups.n > 0, has_small = out->has_small;
    bool needs_caps = out->needs_caps, is_capital = out->is_capital; /* in every branch */
    if (has_best)
        req_copy(best, &out->groups.g[0]);
    if (has_small)
        req_copy(small, &out->small);
    while (rp->p < rp->end && *rp->p == '|') {
        rp->p++;
        parse_seq(rp, branch, after_nonword);
        if (rp->failed)
            break;
        out->ends_nonword = out->ends_nonword && branch->ends_nonword;
        out->may_be_empty = out->may_be_empty || branch->may_be_empty;
        needs_caps = needs_caps && branch->needs_caps;
        is_capital = is_capital && branch->is_capital;
        if (!req_union(&out->lead, &branch->lead))
            req_empty(&out->lead);
        if (out->is_exact && branch->is_exact) {
            out->is_exact = req_union(&out->exact, &branch->exact);
        } else {
            out->is_exact = false;
        }
        has_best = has_best && branch->groups.n > 0;
        has_small = has_small && branch->has_small;
        if (has_best)
            has_best = req_union(best, &branch->groups.g[0]);
        if (has_small)
            has_small = req_union(small, &branch->small);
    }
    out->groups.n = 0;
    out->has_small = false;
    out->needs_caps = needs_caps && !rp->failed;
    out->is_capital = is_capital && !rp->failed;
    if (!rp->failed) {
        if (has_best)
            reqs_add(&out->groups, best);
        else if (has_small)
            reqs_add(&out->groups, small);
        if (out->is_exact)
            reqs_add(&out->groups, &out->exact);
        if (has_small)
            offer_small(out, small);
        if (has_best)
            offer_small(out, best);
    }
done:
    free(branch);
    free(best);
    free(small);
}

/* The length of s[0 .. len) without spaces at either end. */
static size_t trimmed_len(const char *s, size_t len)
{
    const char *a = s, *b = s + len;
    while (a < b && *a == ' ')
        a++;
    while (b > a && b[-1] == ' ')
        b--;
    return (size_t)(b - a);
}

/* Shrinks a set for the prefilter to about max_n strings. A prefix of a required string is
 * required too, so the set stays a valid requirement (and a valid lead) when
 *  - a string that begins with another string of the set is dropped (it adds nothing);
 *  - strings sharing their first L bytes are cut to them and merge: "that's just not ",
 *    "that's really not ", ... become "that's ".
 * L is the largest that leaves at most max_n strings with no string below REQ_MIN_QUALITY;
 * only strings that share L bytes with another are cut, the others stay whole. A merged string
 * is a word start only if all were (req_dedupe). */
static void req_shrink(req *r, size_t max_n)
{
    if (r->n <= max_n)
        return;
    req_dedupe(r); /* sorted: a string's extensions follow it, neighbours share the most */
    size_t n = 0;
    for (size_t i = 0; i < r->n; i++) {
        if (n && r->len[n - 1] <= r->len[i] &&
            memcmp(r->s[n - 1], r->s[i], r->len[n - 1]) == 0) {
            /* Where the longer one occurs the shorter does, but not at a word end. */
            r->ws[n - 1] = r->ws[n - 1] && r->ws[i];
            r->we[n - 1] = false;
            continue;
        }
        if (n != i) {
            memcpy(r->s[n], r->s[i], r->len[i] + 1);
            r->len[n] = r->len[i];
            r->ws[n] = r->ws[i];
            r->we[n] = r->we[i];
        }
        n++;
    }
    r->n = n;
    if (r->n <= max_n)
        return;
    /* At cut c, sorted neighbours i-1, i merge when their common prefix is >= c, so the set
     * has 1 + #{i : lcp[i] < c} strings. */
    size_t max_len = 0;
    size_t lcp[REQ_MAX + 1];
    for (size_t i = 0; i < r->n; i++) {
        if (r->len[i] > max_len)
            max_len = r->len[i];
        size_t k = 0;
        if (i)
            while (k < r->len[i] && k < r->len[i - 1] && r->s[i][k] == r->s[i - 1][k])
                k++;
        lcp[i] = k;
    }
    lcp[0] = lcp[r->n] = 0;
    size_t cut = 0;
    for (size_t c = max_len; c >= REQ_MIN_QUALITY; c--) {
        size_t count = 1, quality = SIZE_MAX;
        for (size_t i = 0; i < r->n; i++) {
            count += i && lcp[i] < c;
            bool is_cut = lcp[i] >= c || lcp[i + 1] >= c;
            size_t q = trimmed_len(r->s[i], is_cut ? c : r->len[i]);
            if (q < quality)
                quality = q;
        }
        if (quality < REQ_MIN_QUALITY)
            break;
        cut = c;
        if (count <= max_n)
            break;
    }
    if (!cut)
        return;
    for (size_t i = 0; i < r->n; i++)
        if (lcp[i] >= cut || lcp[i + 1] >= cut) {
            r->len[i] = cut;
            r->s[i][cut] = '\0';
            r->we[i] = false;
        }
    req_dedupe(r);
}

/* ---- building -------------------------------------------------------------------------- */

/* Compiles the expression src of pattern id (path and line_no name it in errors) with our
 * options plus options. Unless as_written, what is compiled is src rewritten by
 * at__regex_factor (same matches, fewer comparisons); src itself is compiled only when that
 * fails, so that errors are about what the lexicon says. */
static int compile_regex(const char *src, const char *path, int line_no, const char *id,
                         uint32_t options, bool as_written, pcre2_code **out, char *err,
                         size_t err_len)
{
    int ecode;
    PCRE2_SIZE eoff;
    options |= PCRE2_CASELESS | PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF;
    char *factored = NULL;
    if (!as_written && at__regex_factor(src, true, &factored))
        return AT_ENOMEM;
    pcre2_code *code = NULL;
    if (factored) {
        code = pcre2_compile((PCRE2_SPTR)factored, PCRE2_ZERO_TERMINATED, options, &ecode,
                             &eoff, NULL);
        free(factored);
        if (!code && ecode == PCRE2_ERROR_NOMEMORY)
            return AT_ENOMEM;
    }
    if (!code)
        code = pcre2_compile((PCRE2_SPTR)src, PCRE2_ZERO_TERMINATED, options, &ecode, &eoff,
                             NULL);
    if (!code) {
        if (ecode == PCRE2_ERROR_NOMEMORY)
            return AT_ENOMEM;
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ecode, msg, sizeof msg);
        at__errf(err, err_len, "%s:%d: pattern %s does not compile at offset %zu: %s", path,
                 line_no, id, (size_t)eoff, (char *)msg);
        return AT_ESYNTAX;
    }
    /* JIT is an optimisation: a platform without it still matches, only slower. */
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
    *out = code;
    return 0;
}

static int add_literal(at__markers *m, size_t *cap, const char *s, size_t len, uint32_t pat,
                       unsigned group, bool is_anchor, bool is_ws, bool is_we)
{
    /* Only the trie of word starts is cheap to search: a literal not known to start a word
     * is replaced by its tail from the first word start inside it (" sorry" -> "sorry", "'m
     * sorry" -> "sorry"), which is required just as much. An anchor remembers how far into
     * the match that tail starts. */
    size_t offset = 0;
    if (!is_ws || !is_word_char((unsigned char)s[0])) {
        for (size_t k = 1; k + REQ_MIN_QUALITY <= len; k++)
            if (is_word_char((unsigned char)s[k]) && !is_word_char((unsigned char)s[k - 1])) {
                offset = k;
                is_ws = true;
                break;
            }
        if (!offset)
            is_ws = false;
    }
    s += offset;
    len -= offset;
    if (m->n_literals == *cap) {
        size_t n = *cap ? *cap * 2 : 256;
        literal *p = realloc(m->literals, n * sizeof *p);
        if (!p)
            return AT_ENOMEM;
        m->literals = p;
        *cap = n;
    }
    /* A prefix of a required string is required too; short literals keep the trie small and
     * the walks short, and the regex checks the rest anyway. */
    if (len > PREFILTER_MAX_LEN) {
        len = PREFILTER_MAX_LEN;
        is_we = false;
    }
    literal *l = &m->literals[m->n_literals];
    l->text = dupn(s, len);
    if (!l->text)
        return AT_ENOMEM;
    l->len = len;
    l->pattern = pat;
    l->speakers = m->patterns[pat].speakers;
    l->group_bit = (uint8_t)(1u << group);
    l->is_anchor = is_anchor;
    l->is_ws = is_ws && is_word_char((unsigned char)s[0]);
    l->is_we = is_we && is_word_char((unsigned char)s[len - 1]);
    l->offset = (uint8_t)offset;
    m->n_literals++;
    return 0;
}

/* Builds node n of the trie over utexts[lo .. hi), which are sorted and share their first
 * depth bytes. A node's edges are allocated as one block, before its children's. */
static void build_node(ltrie *t, const utext *ut, const uint32_t *ids, uint32_t n, size_t lo,
                       size_t hi, size_t depth)
{
    t->nodes[n].utext = NO_UTEXT;
    t->nodes[n].skip = NULL;
    t->nodes[n].skip_len = 0;
    t->nodes[n].speakers = 0;
    /* Below depth 2 every node is one byte (the depth2 index relies on it); further down, a
     * chain of bytes shared by the whole range is one skip. The range is sorted, so what its
     * first and last texts share, all share. */
    if (depth >= 2 && lo < hi) {
        const utext *a = &ut[ids[lo]], *b = &ut[ids[hi - 1]];
        size_t l = depth;
        while (l < a->len && l < b->len && l - depth < 255 && a->text[l] == b->text[l])
            l++;
        t->nodes[n].skip = a->text + depth;
        t->nodes[n].skip_len = (uint8_t)(l - depth);
        depth = l;
    }
    if (lo < hi && ut[ids[lo]].len == depth) {
        t->nodes[n].utext = ids[lo];
        t->nodes[n].speakers = (uint8_t)ut[ids[lo]].speakers;
        lo++;
    }
    t->nodes[n].first = (uint32_t)t->n_edges;
    t->nodes[n].n_edges = 0;
    for (size_t i = lo; i < hi;) {
        unsigned char c = (unsigned char)ut[ids[i]].text[depth];
        while (i < hi && (unsigned char)ut[ids[i]].text[depth] == c)
            i++;
        t->edge_byte[t->n_edges] = c;
        t->edge_child[t->n_edges++] = (uint32_t)t->n_nodes++;
        t->nodes[n].n_edges++;
    }
    uint32_t e = t->nodes[n].first;
    for (size_t i = lo; i < hi; e++) {
        unsigned char c = (unsigned char)ut[ids[i]].text[depth];
        size_t j = i;
        while (j < hi && (unsigned char)ut[ids[j]].text[depth] == c)
            j++;
        build_node(t, ut, ids, t->edge_child[e], i, j, depth + 1);
        i = j;
    }
}

static inline uint32_t d2_slot(uint32_t k, uint32_t mask)
{
    return (k * 2654435761u >> 16) & mask;
}

/* The slot of trie t's table for the two bytes at low, which some text begins with. */
static inline uint32_t d2_find(const ltrie *t, const unsigned char *low)
{
    uint32_t k = low[0] | (uint32_t)low[1] << 8;
    uint32_t h = d2_slot(k, t->d2_mask);
    while (t->d2[h].key != k)
        h = (h + 1) & t->d2_mask;
    return h;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int b = 0; b < 4; b++)
        p[b] = (uint8_t)(v >> (8 * b));
}

static inline uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Appends node n and, depth first, its subtree to t->pk; returns its offset or -1. */
static int64_t pack_node(ltrie *t, const at__markers *m, uint32_t n)
{
    const tnode *node = &t->nodes[n];
    bool has_text = node->utext != NO_UTEXT;
    size_t n_lits = 0;
    if (has_text) {
        const utext *u = &m->utexts[node->utext];
        for (uint32_t e = u->first; e < u->first + u->n; e++)
            n_lits += (le_speakers(m->lentries[e]) & t->speakers) != 0;
    }
    size_t size = PK_HEAD + PK_COUNT + n_lits * sizeof(lentry) + node->skip_len +
                  node->n_edges * 5u;
    if (t->pk_len + size > UINT32_MAX)
        return -1;
    if (t->pk_len + size + PK_PAD > t->pk_cap) {
        size_t cap = t->pk_cap ? t->pk_cap * 2 : 4096;
        while (cap < t->pk_len + size + PK_PAD)
            cap *= 2;
        uint8_t *pk = realloc(t->pk, cap);
        if (!pk)
            return -1;
        t->pk = pk;
        t->pk_cap = cap;
    }
    size_t at = t->pk_len;
    uint8_t *p = t->pk + at;
    p[0] = node->skip_len;
    p[1] = (uint8_t)node->n_edges;
    p[2] = has_text ? (uint8_t)(node->speakers & t->speakers) : 0;
    p += PK_HEAD;
    p[0] = (uint8_t)n_lits;
    p[1] = (uint8_t)(n_lits >> 8);
    if (has_text) {
        const utext *u = &m->utexts[node->utext];
        size_t k = 0;
        for (uint32_t e = u->first; e < u->first + u->n; e++)
            if (le_speakers(m->lentries[e]) & t->speakers)
                memcpy(p + PK_COUNT + k++ * sizeof(lentry), &m->lentries[e], sizeof(lentry));
    }
    p += PK_COUNT + n_lits * sizeof(lentry);
    memcpy(p, node->skip, node->skip_len);
    p += node->skip_len;
    for (uint32_t e = 0; e < node->n_edges; e++)
        p[e] = t->edge_byte[node->first + e];
    size_t children = (size_t)(p - t->pk) + node->n_edges;
    t->pk_len = at + size;
    memset(t->pk + t->pk_len, 0, PK_PAD);
    for (uint32_t e = 0; e < node->n_edges; e++) {
        int64_t off = pack_node(t, m, t->edge_child[node->first + e]);
        if (off < 0)
            return -1;
        put_u32(t->pk + children + 4 * e, (uint32_t)off);
    }
    return (int64_t)at;
}

/* Builds trie t over the utexts whose is_ws equals is_ws (they are sorted by text). */
static int build_trie(at__markers *m, ltrie *t, bool is_ws, unsigned speakers)
{
    size_t max_nodes = 1, n_ids = 0;
    uint32_t *ids = malloc((m->n_utexts + 1) * sizeof *ids);
    if (!ids)
        return AT_ENOMEM;
    t->speakers = speakers;
    for (size_t i = 0; i < m->n_utexts; i++)
        if (m->utexts[i].is_ws == is_ws && (m->utexts[i].speakers & speakers)) {
            ids[n_ids++] = (uint32_t)i;
            max_nodes += m->utexts[i].len; /* every byte is at most one node and one edge */
        }
    t->nodes = malloc(max_nodes * sizeof *t->nodes);
    t->edge_byte = malloc(max_nodes);
    t->edge_child = malloc(max_nodes * sizeof *t->edge_child);
    if (!t->nodes || !t->edge_byte || !t->edge_child) {
        free(ids);
        return AT_ENOMEM;
    }
    t->n_nodes = 1;
    t->n_edges = 0;
    t->is_high_first = true;
    for (size_t k = 0; k < n_ids; k++)
        t->is_high_first = t->is_high_first && (unsigned char)m->utexts[ids[k]].text[0] >= 0x80;
    build_node(t, m->utexts, ids, 0, 0, n_ids, 0);
    free(ids);
    /* A text's literal count is stored in 16 bits. */
    for (size_t i = 0; i < m->n_utexts; i++)
        if (m->utexts[i].n > UINT16_MAX)
            return AT_ENOMEM;
    /* The nodes at depth 2, in order of their two bytes, then packed one subtree after the
     * other. */
    memset(t->d2_bits, 0, sizeof t->d2_bits);
    size_t n_d2 = 0;
    for (uint32_t a = 0; a < t->nodes[0].n_edges; a++) {
        uint32_t n1 = t->edge_child[t->nodes[0].first + a];
        for (uint32_t b = 0; b < t->nodes[n1].n_edges; b++) {
            uint32_t k = t->edge_byte[t->nodes[0].first + a] |
                         (uint32_t)t->edge_byte[t->nodes[n1].first + b] << 8;
            t->d2_bits[k >> 6] |= (uint64_t)1 << (k & 63);
            n_d2++;
        }
    }
    /* No text begins with a NUL byte, so key 0 marks an empty slot. */
    size_t slots = 16;
    while (slots < 2 * n_d2)
        slots *= 2;
    t->d2_mask = (uint32_t)(slots - 1);
    t->d2 = calloc(slots, sizeof *t->d2);
    if (!t->d2)
        return AT_ENOMEM;
    for (uint32_t a = 0; a < t->nodes[0].n_edges; a++) {
        uint32_t n1 = t->edge_child[t->nodes[0].first + a];
        for (uint32_t b = 0; b < t->nodes[n1].n_edges; b++) {
            uint32_t k = t->edge_byte[t->nodes[0].first + a] |
                         (uint32_t)t->edge_byte[t->nodes[n1].first + b] << 8;
            uint32_t r = d2_slot(k, t->d2_mask);
            while (t->d2[r].key)
                r = (r + 1) & t->d2_mask;
            t->d2[r].key = (uint16_t)k;
            int64_t off = pack_node(t, m, t->edge_child[t->nodes[n1].first + b]);
            if (off < 0)
                return AT_ENOMEM;
            t->d2[r].off = (uint32_t)off;
        }
    }
    for (size_t i = 0; i < m->n_utexts; i++)
        if (m->utexts[i].is_ws == is_ws && (m->utexts[i].speakers & speakers)) {
            const unsigned char *text = (const unsigned char *)m->utexts[i].text;
            d2slot *d = &t->d2[d2_find(t, text)];
            d->third |= (uint64_t)1 << (text[2] & 63); /* texts have >= 3 bytes */
        }
    free(t->nodes);
    free(t->edge_byte);
    free(t->edge_child);
    t->nodes = NULL;
    t->edge_byte = NULL;
    t->edge_child = NULL;
    return 0;
}

static void free_trie(ltrie *t)
{
    free(t->nodes);
    free(t->edge_byte);
    free(t->edge_child);
    free(t->pk);
    free(t->d2);
}

static int cmp_literal(const void *a, const void *b)
{
    const literal *x = a, *y = b;
    if (x->is_ws != y->is_ws)
        return x->is_ws ? 1 : -1;
    int c = strcmp(x->text, y->text);
    if (c)
        return c;
    return x->pattern < y->pattern ? -1 : x->pattern > y->pattern;
}

/* Texts that may occur anywhere are looked for at every byte of every turn; texts that begin
 * words, only at word starts. A pattern that has a group found at word starts only does not
 * need its other groups that hold a text that may occur anywhere and begins with an ASCII byte
 * (except its anchor, which says where to match): they are dropped, so that the prefilter
 * passes it a little more often, but the anywhere tries keep only texts that begin with a byte
 * >= 0x80 (emoji), whose search skips ASCII eight bytes a step. The literals of pattern p are
 * m->literals[first ..).
 *
 * When one group is dropped and its texts that may occur anywhere are few (at most LATE_MAX
 * once those containing another are left out: "manager" covers "managers"), the group is kept
 * in part: its texts found at word starts stay in the tries, and the others become the
 * pattern's late texts, looked for (lower_has) before it runs when none of those occurred
 * (run_pattern). The group still does not hold the pattern back in the scan. */
static bool has_substring(const char *s, size_t len, const char *sub, size_t sub_len)
{
    return sub_len <= len && memmem(s, len, sub, sub_len) != NULL;
}

static int drop_anywhere_groups(at__markers *m, pattern *p, size_t first)
{
    unsigned anywhere = 0, ascii = 0, present = 0;
    for (size_t k = first; k < m->n_literals; k++) {
        const literal *l = &m->literals[k];
        present |= l->group_bit;
        if (!l->is_ws) {
            anywhere |= l->group_bit;
            if ((unsigned char)l->text[0] < 0x80)
                ascii |= l->group_bit;
        }
    }
    unsigned drop = ascii & ~(unsigned)p->anchor_bit;
    if (!drop || !(present & ~anywhere))
        return 0;
    /* The late texts: the group's texts found anywhere that contain no other one. */
    const literal *late[LATE_MAX];
    size_t n_late = 0;
    bool is_late = (drop & (drop - 1)) == 0; /* one group */
    for (size_t k = first; k < m->n_literals && is_late; k++) {
        const literal *l = &m->literals[k];
        if (!(l->group_bit & drop) || l->is_ws)
            continue;
        bool covered = false;
        for (size_t j = first; j < m->n_literals && !covered; j++) {
            const literal *o = &m->literals[j];
            covered = j != k && (o->group_bit & drop) && !o->is_ws &&
                      has_substring(l->text, l->len, o->text, o->len) &&
                      (o->len < l->len || j < k); /* of equal texts, the first is kept */
        }
        if (covered)
            continue;
        if (n_late == LATE_MAX)
            is_late = false;
        else
            late[n_late++] = l;
    }
    for (size_t j = 0; j < n_late && is_late; j++) {
        p->late[j] = dupn(late[j]->text, late[j]->len);
        if (!p->late[j])
            return AT_ENOMEM;
        p->late_len[j] = (uint8_t)late[j]->len; /* <= PREFILTER_MAX_LEN */
        p->n_late = (uint8_t)(j + 1);
    }
    if (is_late)
        p->late_bit = (uint8_t)drop;
    size_t n = first;
    for (size_t k = first; k < m->n_literals; k++) {
        if ((m->literals[k].group_bit & drop) && !(is_late && m->literals[k].is_ws))
            free(m->literals[k].text);
        else
            m->literals[n++] = m->literals[k];
    }
    m->n_literals = n;
    p->groups_mask = (uint8_t)(p->groups_mask & ~drop);
    return 0;
}

static int build_prefilter(at__markers *m)
{
    size_t cap = 0;
    m->unfiltered = malloc((m->n_patterns + 1) * sizeof *m->unfiltered);
    if (!m->unfiltered)
        return AT_ENOMEM;
    for (size_t i = 0; i < m->n_patterns; i++)
        m->patterns[i].is_jit = has_jit(m->patterns[i].code);
    for (size_t i = 0; i < m->n_patterns; i++) {
        if (m->is_as_written) {
            m->unfiltered[m->n_unfiltered++] = (uint32_t)i;
            continue;
        }
        const char *src = strchr(m->patterns[i].where, '\n') + 1; /* see load_patterns */
        size_t len = strlen(src);
        rparser rp = {src, src + len, false, false};
        rnode *node = malloc(sizeof *node);
        if (!node)
            return AT_ENOMEM;
        parse_alt(&rp, node, false);
        m->patterns[i].needs_caps = !rp.failed && rp.p == rp.end && node->needs_caps;
        const reqs *r = &node->groups;
        if (rp.failed || rp.p != rp.end || r->n == 0 || i >= LE_MAX_PATTERNS) {
            m->unfiltered[m->n_unfiltered++] = (uint32_t)i;
            free(node);
            continue;
        }
        /* A pattern whose every match starts with a string of a set (its lead) is tried,
         * anchored, only where one occurs; the lead is one of its groups or one more. */
        pattern *p = &m->patterns[i];
        for (size_t g = 0; g < node->groups.n; g++)
            req_shrink(&node->groups.g[g], PREFILTER_MAX_STRINGS);
        req_shrink(&node->lead, PREFILTER_MAX_STRINGS);
        size_t n_groups = r->n, anchor = SIZE_MAX;
        if (req_quality(&node->lead) >= REQ_MIN_QUALITY) {
            for (size_t g = 0; g < r->n && anchor == SIZE_MAX; g++)
                if (req_same(&r->g[g], &node->lead)) {
                    /* The group is the lead: found where matches start, at word starts when
                     * the lead's strings are. */
                    anchor = g;
                    mark_ws_like(&node->groups.g[g], &node->lead);
                }
            if (anchor == SIZE_MAX)
                anchor = n_groups++;
        }
        if (anchor != SIZE_MAX) {
            int rc = compile_regex(src, p->where, 0, p->id, PCRE2_ANCHORED, m->is_as_written,
                                   &p->anchored, NULL, 0);
            if (rc == AT_ENOMEM) {
                free(node);
                return rc;
            }
            if (rc)
                anchor = SIZE_MAX; /* cannot happen: the expression compiled unanchored */
            else
                p->anchor_bit = (uint8_t)(1u << anchor);
            p->is_jit_anchored = has_jit(p->anchored);
        }
        if (anchor == SIZE_MAX && n_groups > r->n)
            n_groups = r->n;
        p->groups_mask = (uint8_t)((1u << n_groups) - 1);
        size_t first_literal = m->n_literals;
        for (size_t g = 0; g < n_groups; g++) {
            const req *set = g < r->n ? &r->g[g] : &node->lead;
            for (size_t j = 0; j < set->n; j++)
                if (add_literal(m, &cap, set->s[j], set->len[j], (uint32_t)i, (unsigned)g,
                                g == anchor, set->ws[j], set->we[j])) {
                    free(node);
                    return AT_ENOMEM;
                }
        }
        int rc = drop_anywhere_groups(m, p, first_literal);
        free(node);
        if (rc)
            return rc;
    }
    /* Distinct texts, each compared once per position however many patterns want it. */
    if (m->n_literals > 1)
        qsort(m->literals, m->n_literals, sizeof *m->literals, cmp_literal);
    m->utexts = malloc((m->n_literals + 1) * sizeof *m->utexts);
    m->lentries = malloc((m->n_literals + 1) * sizeof *m->lentries);
    m->groups_mask = malloc(m->n_patterns + 1);
    if (!m->utexts || !m->lentries || !m->groups_mask)
        return AT_ENOMEM;
    for (size_t i = 0; i < m->n_patterns; i++)
        m->groups_mask[i] = m->patterns[i].groups_mask;
    m->bound_slot = calloc(m->n_patterns + 1, sizeof *m->bound_slot);
    if (!m->bound_slot)
        return AT_ENOMEM;
    for (size_t i = 0; i < m->n_patterns; i++)
        if (m->patterns[i].groups_mask && !m->patterns[i].anchored)
            m->bound_slot[i] = (uint16_t)m->n_bounded++; /* i < LE_MAX_PATTERNS */
    _Static_assert(LIT_MAX <= 64 && MAX_GROUPS + 1 <= 4 && AT_N_SPEAKERS <= 4,
                   "literal offsets, group and speaker bits fit");
    for (size_t i = 0; i < m->n_literals; i++) {
        const literal *l = &m->literals[i];
        m->lentries[i] = l->pattern | (uint32_t)l->group_bit << LE_GROUP_SHIFT |
                         (l->is_anchor ? (uint32_t)l->offset << LE_OFFSET_SHIFT
                          : !m->patterns[l->pattern].anchored ? LE_BOUNDED
                                                               : 0) |
                         (l->is_anchor ? LE_ANCHOR : 0) | (uint32_t)l->speakers << LE_SPEAKER_SHIFT |
                         (l->is_we ? LE_WORD_END : 0);
    }
    for (size_t i = 0; i < m->n_literals; i++) {
        const literal *l = &m->literals[i];
        utext *u = &m->utexts[m->n_utexts];
        if (m->n_utexts && u[-1].is_ws == l->is_ws && strcmp(u[-1].text, l->text) == 0) {
            u[-1].n++;
            u[-1].speakers |= l->speakers;
            continue;
        }
        memset(u, 0, sizeof *u);
        u->text = l->text;
        u->len = (uint32_t)l->len;
        u->first = (uint32_t)i;
        u->n = 1;
        u->speakers = l->speakers;
        u->is_ws = l->is_ws;
        m->n_utexts++;
    }
    for (int t = 0; t <= AT_N_SPEAKERS; t++) {
        unsigned speakers = t ? 1u << (t - 1) : (1u << AT_N_SPEAKERS) - 1;
        int rc = build_trie(m, &m->trie[t][0], false, speakers);
        if (!rc)
            rc = build_trie(m, &m->trie[t][1], true, speakers);
        if (rc)
            return rc;
    }
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
        /* A block may guard several categories of its family: "acknowledgement,apology". */
        at_category cat = AT_N_CATEGORIES;
        uint32_t block_mask = 0;
        for (const char *c = f[2];;) {
            const char *comma = strchr(c, ',');
            size_t n = comma ? (size_t)(comma - c) : strlen(c);
            at_category one;
            if (at_category_parse(c, n, &one) || at_category_family(one) != family ||
                (comma && kind != KIND_BLOCK)) {
                at__errf(err, err_len, "%s:%d: \"%s\" is not a %s category%s", path, it.line_no,
                         f[2], at_family_name(family),
                         comma && kind != KIND_BLOCK ? " (only a block may list several)" : "");
                rc = AT_ESYNTAX;
                goto fail;
            }
            if (cat == AT_N_CATEGORIES)
                cat = one;
            block_mask |= 1u << one;
            if (!comma)
                break;
            c = comma + 1;
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
        /* "@id" reuses the expression of another pattern (of any file); it is compiled once
         * every file is loaded, by resolve_refs. */
        pcre2_code *code = NULL;
        if (f[4][0] != '@') {
            rc = compile_regex(f[4], path, it.line_no, f[0], PCRE2_USE_OFFSET_LIMIT,
                               m->is_as_written, &code, err, err_len);
            if (rc)
                goto fail;
        }
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
        p->block_mask = kind == KIND_BLOCK ? block_mask : 0;
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
        if (at__strmap_put(ids, p->id, strlen(p->id), 0, (int)(m->n_patterns - 1))) {
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
        for (int k = 1; k <= N_SCOPE_KINDS; k++)
            if (strcmp(f[0], scope_kinds[k]) == 0)
                kind = k;
        if (!kind) {
            at__errf(err, err_len,
                     "%s:%d: unknown kind \"%s\" (negator, hypothetical, break or pass)", path,
                     it.line_no, f[0]);
            rc = AT_ESYNTAX;
            goto fail;
        }
        /* Phrases are stored with single spaces; the scan reads the text the same way. */
        size_t words = 1, n = 0;
        bool is_valid = *f[1] && *f[1] != ' ';
        for (char *c = f[1]; *c; c++) {
            if (*c == ' ' && (c[1] == ' ' || c[1] == '\0'))
                is_valid = false;
            words += *c == ' ';
            f[1][n++] = (char)tolower((unsigned char)*c);
        }
        if (!is_valid || words > SCOPE_MAX_WORDS || (kind == SCOPE_PASS && words < 2)) {
            at__errf(err, err_len, "%s:%d: \"%s\": a cue is 1 to %d words separated by single "
                     "spaces (a pass cue at least 2)", path, it.line_no, f[1], SCOPE_MAX_WORDS);
            rc = AT_ESYNTAX;
            goto fail;
        }
        if (words > m->scope_max_words)
            m->scope_max_words = words;
        size_t first = 0;
        while (first < n && f[1][first] != ' ')
            first++;
        if (at__strmap_put(&m->scope_first, f[1], first, 0, 0) ||
            at__strmap_put(&m->scope, f[1], n, 0, kind)) {
            rc = AT_ENOMEM;
            goto fail;
        }
        for (size_t k = 0; k < n; k++)
            if (f[1][k] == ' ' && at__strmap_put(&m->scope_prefix, f[1], k, 0, 0)) {
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
    at__strmap_fini(&w->prefixes);
    for (size_t i = 0; i < w->n_ids; i++)
        free(w->ids[i]);
    free(w->ids);
}

/* A word's bit in wordlist.first, for the quick rejection of words no phrase starts with. s must
 * have 8 readable bytes (the scratch's lower does): a word of up to 8 bytes is its packed bytes
 * times a constant, no full hash for each of a customer's words. */
static uint32_t first_key(const char *s, size_t len)
{
    if (len > 8)
        return (uint32_t)(at__hash(s, len) & 0xffff);
    return (uint32_t)(((at__load_prefix(s, len) ^ len) * UINT64_C(0x9e3779b97f4a7c15)) >> 48);
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
        /* A phrase can only match where its first word is a whole token. */
        size_t first_len = strcspn(f[0], " ");
        char word[8] = {0}; /* first_key reads 8 bytes */
        memcpy(word, f[0], first_len < 8 ? first_len : 8);
        uint32_t k = first_key(first_len > 8 ? f[0] : word, first_len);
        w->first[k >> 6] |= (uint64_t)1 << (k & 63);
        for (char *c = f[0]; *c; c++)
            if (*c == ' ' && at__strmap_put(&w->prefixes, f[0], (size_t)(c - f[0]), 0, 0)) {
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
    m->scope_words = 6;
    m->is_quote_gate = true;
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
        } else if (strcmp(f[0], "quoted_speech") == 0) {
            m->is_quote_gate = v != 0;
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

/* Compiles the "@id" patterns with the expression of the pattern they name. */
static int resolve_refs(at__markers *m, const char *dir, const at__strmap *ids, char *err,
                        size_t err_len)
{
    for (size_t i = 0; i < m->n_patterns; i++) {
        pattern *p = &m->patterns[i];
        if (p->code)
            continue;
        char *nl = strchr(p->where, '\n');
        const char *ref = nl + 2; /* after "\n@" */
        const at__strmap_entry *e = at__strmap_get(ids, ref, strlen(ref));
        const pattern *target = e ? &m->patterns[e->tag] : NULL;
        if (!target || !target->code) {
            at__errf(err, err_len, "%s/markers/%.*s: pattern %s: \"@%s\" names no pattern with "
                     "an expression of its own", dir, (int)(nl - p->where), p->where, p->id,
                     ref);
            return AT_ESYNTAX;
        }
        const char *src = strchr(target->where, '\n') + 1;
        size_t wlen = (size_t)(nl - p->where) + strlen(src) + 2;
        char *where = malloc(wlen);
        if (!where)
            return AT_ENOMEM;
        snprintf(where, wlen, "%.*s\n%s", (int)(nl - p->where), p->where, src);
        free(p->where);
        p->where = where;
        int rc = compile_regex(src, p->where, 0, p->id, PCRE2_USE_OFFSET_LIMIT,
                               m->is_as_written, &p->code, err, err_len);
        if (rc)
            return rc;
    }
    return 0;
}

/* A match context with the limits every match runs under. */
static pcre2_match_context *new_match_context(void)
{
    pcre2_match_context *c = pcre2_match_context_create(NULL);
    if (c) {
        /* Bound the work a hostile text can cause: a pattern over these limits is skipped. */
        pcre2_set_match_limit(c, 100000);
        pcre2_set_depth_limit(c, 1000);
    }
    return c;
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
    const char *env = getenv("ATTUNE_PREFILTER");
    m->is_as_written = env && strcmp(env, "off") == 0;
    for (int c = 0; c < 256; c++)
        m->tok_class[c] = (uint8_t)tok_class_of((unsigned char)c);
    at__strmap_init(&m->scope);
    at__strmap_init(&m->scope_first);
    at__strmap_init(&m->scope_prefix);
    at__strmap_init(&m->abuse.map);
    at__strmap_init(&m->abuse.prefixes);
    at__strmap_init(&m->anger.map);
    at__strmap_init(&m->anger.prefixes);
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
    rc = resolve_refs(m, dir, &ids, err, err_len);
    if (rc)
        goto fail;
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
    m->mctx = new_match_context();
    if (!m->mctx) {
        rc = AT_ENOMEM;
        goto fail;
    }
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
        pcre2_code_free(m->patterns[i].anchored);
        free(m->patterns[i].id);
        free(m->patterns[i].where);
        for (unsigned k = 0; k < m->patterns[i].n_late; k++)
            free(m->patterns[i].late[k]);
    }
    free(m->patterns);
    for (size_t i = 0; i < m->n_literals; i++)
        free(m->literals[i].text);
    free(m->literals);
    free(m->utexts);
    free(m->lentries);
    free(m->groups_mask);
    free(m->bound_slot);
    for (int t = 0; t <= AT_N_SPEAKERS; t++) {
        free_trie(&m->trie[t][0]);
        free_trie(&m->trie[t][1]);
    }
    free(m->unfiltered);
    at__strmap_fini(&m->scope);
    at__strmap_fini(&m->scope_first);
    at__strmap_fini(&m->scope_prefix);
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
    s->mctx = new_match_context();
    if (!s->md || !s->mctx) {
        pcre2_match_data_free(s->md);
        pcre2_match_context_free(s->mctx);
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
    pcre2_match_context_free(s->mctx);
    free(s->last_pos);
    free(s->stamp);
    free(s->groups);
    free(s->hit_first);
    free(s->hit_last);
    free(s->hit_pos);
    free(s->hit_next);
    free(s->todo);
    free(s->lower);
    free(s->cands);
    free(s->out);
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

/* Bytes of words for the scope gate: ASCII letters and digits, the apostrophe, and every byte of
 * other UTF-8 characters (the C locale's isalnum, which attune never changes). */
static bool is_word_byte(unsigned char c)
{
    return (word_chars[c] && c != '_') || c == '\'' || c >= 0x80;
}

#define SCOPE_BUF 160 /* bytes of lower-cased words a cue lookup reads */

/* Appends the word that starts at text[*i) to buf at *b, lower-cased with the typographic
 * apostrophe folded, and moves *i past it. False when no word starts there or it would not
 * fit in SCOPE_BUF (too long to be a cue); *i and *b are then unchanged. */
static bool scope_word(const char *text, size_t len, size_t *i, char *buf, size_t *b)
{
    size_t k = *i, n = *b;
    if (k >= len || !is_word_byte((unsigned char)text[k]))
        return false;
    while (k < len && is_word_byte((unsigned char)text[k])) {
        if (n + 2 >= SCOPE_BUF)
            return false;
        unsigned char c = (unsigned char)text[k];
        if (c == 0xE2 && k + 2 < len && (unsigned char)text[k + 1] == 0x80 &&
            (unsigned char)text[k + 2] == 0x99) {
            buf[n++] = '\'';
            k += 3;
            continue;
        }
        buf[n++] = (char)((unsigned)c - 'A' < 26u ? c + ('a' - 'A') : c);
        k++;
    }
    *i = k;
    *b = n;
    return true;
}

/* The scope cue (word or phrase) that starts at text[wstart), longest first; 0 when none. Sets
 * *cue_end to the end of the cue in text. Most words begin no cue: one lookup of the first word
 * in scope_first says so. A phrase's words are separated by spaces only (punctuation ends it,
 * and the phrase is looked up with single spaces); the next word is read only while the words
 * so far begin some longer cue (scope_prefix). */
static int scope_cue_at(const at__markers *m, const char *text, size_t len, size_t wstart,
                        size_t *cue_end)
{
    char buf[SCOPE_BUF];
    size_t i = wstart, b = 0;
    if (!scope_word(text, len, &i, buf, &b))
        return 0;
    size_t first_len = b, first_end = i;
    if (at__strmap_get(&m->scope_first, buf, b)) {
        const at__strmap_entry *best = at__strmap_get(&m->scope, buf, b);
        size_t best_end = i;
        for (size_t words = 1; words < m->scope_max_words && i < len && text[i] == ' ' &&
                               at__strmap_get(&m->scope_prefix, buf, b);
             words++) {
            while (i < len && text[i] == ' ')
                i++;
            buf[b++] = ' ';
            if (!scope_word(text, len, &i, buf, &b))
                break;
            const at__strmap_entry *e = at__strmap_get(&m->scope, buf, b);
            if (e) {
                best = e;
                best_end = i;
            }
        }
        if (best) {
            *cue_end = best_end;
            return best->tag;
        }
    }
    /* Any other word ending in "n't" negates. */
    if (first_len >= 3 && memcmp(buf + first_len - 3, "n't", 3) == 0) {
        *cue_end = first_end;
        return SCOPE_NEGATOR;
    }
    return 0;
}

/* The word just before text[pos) when only spaces separate them: is it a hypothetical cue? */
static bool hypothetical_before(const at__markers *m, const char *text, size_t len, size_t pos,
                                size_t *cue_start, size_t *cue_end)
{
    while (pos > 0 && text[pos - 1] == ' ')
        pos--;
    if (pos == 0 || !is_word_byte((unsigned char)text[pos - 1]))
        return false;
    size_t wstart = pos;
    while (wstart > 0 && is_word_byte((unsigned char)text[wstart - 1]))
        wstart--;
    size_t end;
    if (scope_cue_at(m, text, len, wstart, &end) != SCOPE_HYPOTHETICAL)
        return false;
    *cue_start = wstart;
    *cue_end = end;
    return true;
}

/* The scope gate: looks at up to scope_words words before start, within its clause. Returns
 * 0 when the candidate stands, or SCOPE_NEGATOR / SCOPE_HYPOTHETICAL with the cue's span. A cue
 * is recognised at the word where it begins, so a phrase ("no need to") is found once the scan
 * reaches its first word; a pass phrase ("can't believe") is stepped over.
 *
 * A break word (a conjunction or a subject pronoun) starts a new clause, and so does a candidate
 * that itself begins with one ("I'm leaving" in "if it's not sorted I'm leaving"): negators
 * before it belong to another clause. A hypothetical cue right before the break word still
 * governs the clause it opens ("if I cancel", "unless we switch"). */
static int scope_check(const at__markers *m, const char *text, size_t len, size_t start,
                       size_t *cue_start, size_t *cue_end)
{
    size_t end;
    if (scope_cue_at(m, text, len, start, &end) == SCOPE_BREAK)
        return hypothetical_before(m, text, len, start, cue_start, cue_end)
                   ? SCOPE_HYPOTHETICAL
                   : 0;
    size_t pos = start;
    for (size_t n = 0; n < m->scope_words;) {
        /* Skip spaces and other non-word bytes; clause punctuation ends the scope. */
        while (pos > 0 && !is_word_byte((unsigned char)text[pos - 1])) {
            char c = text[pos - 1];
            if (c == '.' || c == '!' || c == '?' || c == ';' || c == ':' || c == ',' ||
                c == '\n' || c == '(' || c == ')' || c == '"')
                return 0;
            if (c == '-' && pos >= 2 && text[pos - 2] == ' ')
                return 0; /* a dash between words */
            pos--;
        }
        if (pos == 0)
            return 0;
        size_t wstart = pos;
        while (wstart > 0 && is_word_byte((unsigned char)text[wstart - 1]))
            wstart--;
        int kind = scope_cue_at(m, text, len, wstart, &end);
        if (kind == SCOPE_BREAK)
            return hypothetical_before(m, text, len, wstart, cue_start, cue_end)
                       ? SCOPE_HYPOTHETICAL
                       : 0;
        if (kind == SCOPE_NEGATOR || kind == SCOPE_HYPOTHETICAL) {
            *cue_start = wstart;
            *cue_end = end;
            return kind;
        }
        pos = wstart;
        n++;
    }
    return 0;
}

/* Quoted spans: text between a pair of straight double quotes, between curly double quotes,
 * or between single quotes (straight or curly) used as quotation marks rather than apostrophes:
 * an opening one follows a non-word byte and precedes a word, a closing one follows a word and
 * precedes a non-word byte. A candidate inside a quoted span is reported speech. */
static bool is_alnum_at(const char *text, size_t len, size_t i)
{
    return i < len && (isalnum((unsigned char)text[i]) || (unsigned char)text[i] >= 0x80);
}

/* Bit 7 of each byte of x that equals c, and no other bit (exact: no false positives from
 * borrows, unlike the shorter haszero test). */
static inline uint64_t bytes_equal(uint64_t x, unsigned char c)
{
    const uint64_t lows = UINT64_C(0x7f7f7f7f7f7f7f7f);
    uint64_t y = x ^ (c * UINT64_C(0x0101010101010101));
    return ~(((y & lows) + lows) | y | lows);
}

/* The first position >= i of low (the lower-cased text, with eight NULs after len) holding
 * '"', '\'' or 0xE2 (the first byte of the curly quotes), or len: eight bytes a step. */
static size_t next_quote_byte(const unsigned char *low, size_t len, size_t i)
{
    for (; i < len; i += 8) {
        uint64_t x;
        memcpy(&x, low + i, 8);
        uint64_t hit = bytes_equal(x, '"') | bytes_equal(x, '\'') | bytes_equal(x, 0xE2);
        if (hit)
            return i + (size_t)(__builtin_ctzll(hit) >> 3); /* < len: the NULs never match */
    }
    return len;
}

static void find_quotes(at__mscratch *s, const char *text, size_t len)
{
    s->n_quotes = 0;
    size_t open_double = SIZE_MAX, open_single = SIZE_MAX;
    const unsigned char *low = (const unsigned char *)s->lower; /* same bytes where it matters */
    for (size_t i = next_quote_byte(low, len, 0); i < len && s->n_quotes < MAX_QUOTES;
         i = next_quote_byte(low, len, i + 1)) {
        unsigned char c = (unsigned char)text[i];
        int kind = 0; /* 1 double opens or closes, 2 double opens, 3 double closes, 4 single */
        size_t width = 1;
        if (c == '"') {
            kind = 1;
        } else if (c == '\'') {
            kind = 4;
        } else if (c == 0xE2 && i + 2 < len && (unsigned char)text[i + 1] == 0x80) {
            unsigned char d = (unsigned char)text[i + 2];
            width = 3;
            kind = d == 0x9C ? 2 : d == 0x9D ? 3 : (d == 0x98 || d == 0x99) ? 4 : 0;
        }
        if (!kind)
            continue;
        if (kind <= 3) {
            if (open_double == SIZE_MAX && kind != 3) {
                open_double = i + width;
            } else if (open_double != SIZE_MAX && kind != 2) {
                s->quote_start[s->n_quotes] = open_double;
                s->quote_end[s->n_quotes++] = i;
                open_double = SIZE_MAX;
            }
        } else {
            bool after_word = i > 0 && is_alnum_at(text, len, i - 1);
            bool before_word = is_alnum_at(text, len, i + width);
            if (!after_word && before_word && open_single == SIZE_MAX) {
                open_single = i + width;
            } else if (!before_word && open_single != SIZE_MAX && i > open_single) {
                s->quote_start[s->n_quotes] = open_single;
                s->quote_end[s->n_quotes++] = i;
                open_single = SIZE_MAX;
            }
        }
        i += width - 1;
    }
}

static bool is_quoted(at__mscratch *s, const char *text, size_t len, size_t start, size_t end)
{
    if (s->n_quotes == SIZE_MAX)
        find_quotes(s, text, len);
    for (size_t i = 0; i < s->n_quotes; i++)
        if (s->quote_start[i] <= start && end <= s->quote_end[i])
            return true;
    return false;
}

/* Remembers that a match of pattern pi may start at pos (positions arrive in order). */
static int add_hit(at__mscratch *s, uint32_t pi, size_t pos)
{
    if (s->n_hits == s->cap_hits) {
        size_t n = s->cap_hits ? s->cap_hits * 2 : 64;
        size_t *hp = realloc(s->hit_pos, n * sizeof *hp);
        if (hp)
            s->hit_pos = hp;
        uint32_t *hn = realloc(s->hit_next, n * sizeof *hn);
        if (hn)
            s->hit_next = hn;
        if (!hp || !hn)
            return AT_ENOMEM;
        s->cap_hits = n;
    }
    /* Keep the list sorted and without duplicates: positions mostly arrive in order (append),
     * but an anchor literal cut after its first word start reports an earlier one. */
    uint32_t prev = NO_HIT, at = s->hit_first[pi];
    if (s->hit_last[pi] != NO_HIT && s->hit_pos[s->hit_last[pi]] < pos) {
        prev = s->hit_last[pi];
        at = NO_HIT;
    } else {
        while (at != NO_HIT && s->hit_pos[at] < pos) {
            prev = at;
            at = s->hit_next[at];
        }
        if (at != NO_HIT && s->hit_pos[at] == pos)
            return 0;
    }
    uint32_t h = (uint32_t)s->n_hits++;
    s->hit_pos[h] = pos;
    s->hit_next[h] = at;
    if (prev == NO_HIT)
        s->hit_first[pi] = h;
    else
        s->hit_next[prev] = h;
    if (at == NO_HIT)
        s->hit_last[pi] = h;
    return 0;
}

/* A literal text occurs at pos: note the groups (and anchor positions) of the patterns that
 * want it, and queue a pattern once all its groups are present. */
static int prefilter_hit(const at__markers *m, at__mscratch *s, const uint8_t *lits, uint32_t n,
                         size_t pos, bool at_word_end)
{
    /* The trie holds only the literals of the speaker's patterns (all of them when tracing).
     * A pattern's state is reset when first touched in this utterance, without a branch: which
     * way it would go depends on the text. */
    for (uint32_t e = 0; e < n; e++) {
        lentry l;
        memcpy(&l, lits + e * sizeof l, sizeof l);
        if ((l & LE_WORD_END) && !at_word_end)
            continue;
        uint32_t pi = le_pattern(l);
        uint32_t keep = (uint32_t)(s->stamp[pi] == s->generation) - 1u; /* 0: fresh */
        keep = ~keep;                                                    /* ~0: keep state */
        s->stamp[pi] = s->generation;
        s->hit_first[pi] |= ~keep; /* NO_HIT is all ones */
        s->hit_last[pi] |= ~keep;
        unsigned g = (s->groups[pi] & keep) | le_group_bit(l);
        s->groups[pi] = (uint8_t)g;
        /* Where a literal of the group last occurred: the generation in the high half says
         * whether the low half is of this utterance. The anywhere trie is walked after the
         * word starts, so positions do not come in order: the greater one is kept. */
        if ((l & (LE_ANCHOR | LE_BOUNDED)) == LE_BOUNDED) {
            uint64_t *last = &s->last_pos[(size_t)m->bound_slot[pi] * (MAX_GROUPS + 1) +
                                          (size_t)__builtin_ctz(le_group_bit(l))];
            uint64_t gen = (uint64_t)s->generation << 32;
            uint64_t p32 = pos < UINT32_MAX ? pos : UINT32_MAX;
            uint64_t was = (*last & ~UINT64_C(0xffffffff)) == gen ? (uint32_t)*last : 0;
            *last = gen | (p32 > was ? p32 : was);
        }
        if ((l & LE_ANCHOR) && pos >= le_offset(l) && add_hit(s, pi, pos - le_offset(l)))
            return AT_ENOMEM;
        /* Complete, and not queued (QUEUED not set); a late group's bit may be set too. */
        if ((g & (m->groups_mask[pi] | QUEUED)) == m->groups_mask[pi]) {
            s->groups[pi] = (uint8_t)(g | QUEUED);
            s->todo[s->n_todo++] = pi;
        }
    }
    return 0;
}

/* The offset of the packed node of trie t at depth 2 for the three bytes at low, or
 * UINT32_MAX when no text begins with them (the two-byte set is exact, the third byte a
 * filter). */
static inline uint32_t d2_node(const ltrie *t, const unsigned char *low)
{
    uint32_t k = low[0] | (uint32_t)low[1] << 8;
    if (!(t->d2_bits[k >> 6] & ((uint64_t)1 << (k & 63))))
        return UINT32_MAX;
    const d2slot *d = &t->d2[d2_find(t, low)];
    return d->third >> (low[2] & 63) & 1 ? d->off : UINT32_MAX;
}

/* Walks trie t from its depth-2 node off, for position i of the lower-cased text, noting
 * every text that occurs there. */
static int walk_trie(const at__markers *m, const ltrie *t, uint32_t off, at__mscratch *s,
                     const unsigned char *low, size_t len, size_t i, unsigned speaker_bit,
                     at__buf *trace)
{
    /* Few branches: which way they go depends on the text, so they are mispredicted often and
     * cost more than the bytes compared. Bytes past len are the lower buffer's NULs, which no
     * skip or edge byte equals, so the end of the text needs no test of its own: j <= len. */
    const uint64_t *first = at__first_bytes;
    unsigned want = trace ? ~0u : speaker_bit;
    for (size_t j = i + 2;;) {
        const uint8_t *p = t->pk + off;
        unsigned skip_len = p[0], n_edges = p[1], speakers = p[2];
        uint32_t n_lits = p[PK_HEAD] | (uint32_t)p[PK_HEAD + 1] << 8;
        const uint8_t *lits = p + PK_HEAD + PK_COUNT;
        p = lits + n_lits * sizeof(lentry);
        /* The skip bytes, eight at a time. */
        for (unsigned k = 0;; k += 8) {
            uint64_t a, b;
            memcpy(&a, low + j + k, 8);
            memcpy(&b, p + k, 8);
            unsigned left = skip_len - k;
            if ((a ^ b) & first[left < 8 ? left : 8])
                return 0;
            if (left <= 8)
                break;
            if (j + k + 8 >= len) /* the rest of the skip is past the text */
                return 0;
        }
        j += skip_len;
        p += skip_len;
        if ((speakers & want) &&
            prefilter_hit(m, s, lits, n_lits, i, !is_word_char(low[j])))
            return AT_ENOMEM;
        /* The edge byte equal to low[j], eight edges at a time. */
        for (unsigned e = 0;; e += 8) {
            uint64_t x;
            memcpy(&x, p + e, 8);
            unsigned left = n_edges - e;
            uint64_t hit = bytes_equal(x, low[j]) & first[left < 8 ? left : 8];
            if (hit) {
                e += (unsigned)__builtin_ctzll(hit) >> 3;
                off = get_u32(p + n_edges + 4 * e);
                break;
            }
            if (left <= 8)
                return 0;
        }
        j++;
    }
}

/* Whether the lower-cased text of length len holds the text t (>= 2 bytes): where its first two
 * bytes occur, found eight positions a step (memmem's set-up costs more, on texts this short),
 * then compared. The lower buffer has eight NULs after len. */
static bool lower_has(const at__mscratch *s, size_t len, const char *t, size_t t_len)
{
    const unsigned char *low = (const unsigned char *)s->lower;
    for (size_t i = 0; i + t_len <= len; i += 8) {
        uint64_t x, y;
        memcpy(&x, low + i, 8);
        memcpy(&y, low + i + 1, 8);
        uint64_t hit = bytes_equal(x, (unsigned char)t[0]) & bytes_equal(y, (unsigned char)t[1]);
        while (hit) {
            size_t k = i + ((size_t)__builtin_ctzll(hit) >> 3);
            if (k + t_len <= len && memcmp(low + k, t, t_len) == 0)
                return true;
            hit &= hit - 1;
        }
    }
    return false;
}

/* Runs pattern pi over text: anchored at each remembered hit when it has an anchor (a match
 * can only start there), else scanning. Matches do not overlap, leftmost first, either way. */
static int run_pattern(const at__markers *m, at__mscratch *s, uint32_t pi, const char *text,
                       size_t len, int *n_limit_hits)
{
    const pattern *p = &m->patterns[pi];
    if (p->needs_caps && !s->has_caps_pair)
        return 0;
    if (p->late_bit && !(s->groups[pi] & p->late_bit)) {
        bool found = false;
        for (unsigned k = 0; k < p->n_late && !found; k++)
            found = lower_has(s, len, p->late[k], p->late_len[k]);
        if (!found)
            return 0; /* no text of the late group: no match */
    }
    if (p->anchored) {
        size_t next = 0;
        for (uint32_t h = s->hit_first[pi]; h != NO_HIT; h = s->hit_next[h]) {
            size_t pos = s->hit_pos[h];
            if (pos < next)
                continue;
            int rc = match_at(p->anchored, p->is_jit_anchored, text, len, pos, s->md, m->mctx);
            if (rc == PCRE2_ERROR_NOMATCH)
                continue;
            if (rc < 0) {
                (*n_limit_hits)++;
                return 0;
            }
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(s->md);
            if (push_cand(s, p->category, p->id, ov[0], ov[1], (int)pi, p->kind))
                return AT_ENOMEM;
            next = ov[1] > ov[0] ? ov[1] : ov[0] + 1;
        }
        return 0;
    }
    /* A match holds a literal of each of its pattern's groups, so it starts at or before the
     * last position where one of each occurred (the prefilter queued the pattern, so each
     * did): no need to try starting later. */
    PCRE2_SIZE limit = PCRE2_UNSET;
    if (p->groups_mask) {
        const uint64_t *last = s->last_pos + (size_t)m->bound_slot[pi] * (MAX_GROUPS + 1);
        for (size_t k = 0; k < MAX_GROUPS + 1; k++) {
            uint32_t at = (uint32_t)last[k];
            if ((p->groups_mask >> k & 1) && at < limit)
                limit = at == UINT32_MAX ? PCRE2_UNSET : at;
        }
    }
    pcre2_set_offset_limit(s->mctx, limit);
    PCRE2_SIZE off = 0;
    while (off <= len) {
        int rc = match_at(p->code, p->is_jit, text, len, off, s->md, s->mctx);
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

/* The phrase of list w starting at the token lower[start .. end1) (its first word, which
 * ends the token run at j1) that fires, if any: the longest, and for anger only when VADER
 * rates it at most anger_max_valence. Returns its end, or 0. */
static size_t wordlist_at(const at__markers *m, const wordlist *w, const char *lower,
                          size_t len, size_t start, size_t end1, size_t j1, bool anger,
                          const at__strmap_entry **fired)
{
    size_t end = end1, j = j1, words = 1, best_end = 0;
    const at__strmap_entry *best = NULL;
    for (;;) {
        const at__strmap_entry *e = at__strmap_get(&w->map, lower + start, end - start);
        if (e) {
            best = e;
            best_end = end;
        }
        if (j >= len || lower[j] != ' ' || words == w->max_words ||
            !at__strmap_get(&w->prefixes, lower + start, end - start))
            break;
        j++;
        while (j < len && (m->tok_class[(unsigned char)lower[j]] & TOK_BODY))
            j++;
        end = j;
        /* Trailing apostrophes and hyphens are punctuation, not part of the word. */
        while (end > start && (lower[end - 1] == '\'' || lower[end - 1] == '-'))
            end--;
        words++;
    }
    if (!best)
        return 0;
    if (anger) {
        double v;
        if (!at__vader_valence(m->vader, lower + start, best_end - start, &v) ||
            v > m->anger_max_valence)
            return 0;
    }
    *fired = best;
    return best_end;
}

/* Word-list lookups (abuse, anger): every run of 1..max_words words starting at a token. The
 * tokens and their first-word keys are shared by the lists; after a phrase fires, its list
 * goes on after the phrase. */
static int run_wordlists(const at__markers *m, at__mscratch *s, size_t len)
{
    const wordlist *lists[2] = {&m->abuse, &m->anger};
    static const at_category cats[2] = {AT_CAT_ABUSE, AT_CAT_ANGER};
    size_t resume[2] = {0, 0};
    const char *lower = s->lower;
    size_t i = 0;
    if (!m->abuse.n_ids && !m->anger.n_ids)
        return 0;
    while (i < len) {
        /* A token: bytes other than space and the punctuation that ends words; keep * $ @ that
         * obfuscate profanity ("f*ck", "a$$"). */
        while (i < len && !(m->tok_class[(unsigned char)lower[i]] & TOK_START))
            i++;
        if (i >= len)
            break;
        size_t start = i, j = i;
        while (j < len && (m->tok_class[(unsigned char)lower[j]] & TOK_BODY))
            j++;
        size_t end = j;
        while (end > start && (lower[end - 1] == '\'' || lower[end - 1] == '-'))
            end--;
        uint32_t k = first_key(lower + start, end - start);
        for (int l = 0; l < 2; l++) {
            const wordlist *w = lists[l];
            if (!w->n_ids || start < resume[l] ||
                !(w->first[k >> 6] & ((uint64_t)1 << (k & 63))))
                continue; /* no phrase starts like this word */
            const at__strmap_entry *e = NULL;
            size_t fired_end = wordlist_at(m, w, lower, len, start, end, j, l == 1, &e);
            if (fired_end) {
                if (push_cand(s, cats[l], w->ids[e->tag], start, fired_end, PATTERN_WORDLIST,
                              KIND_MATCH))
                    return AT_ENOMEM;
                resume[l] = fired_end;
            }
        }
        i = j;
    }
    return 0;
}

/* Shouting: enough all-caps words making up most letters, or "!!" / "?!" runs. */
static int run_shouting(const at__markers *m, at__mscratch *s, const char *text, size_t len,
                        size_t n_upper)
{
    size_t upper = 0, letters = 0, caps_words = 0, first = 0, last = 0;
    size_t i = 0;
    /* An all-caps word has two capitals at least: with fewer capitals in the whole text than
     * the words need, there is nothing to count. */
    if (n_upper < 2 * m->shout_min_words)
        i = len;
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
        if (push_cand(s, AT_CAT_SHOUTING, ID_SHOUT_CAPS, first, last, PATTERN_BUILTIN, KIND_FIXED))
            return AT_ENOMEM;
    }
    const char *bang = memchr(text, '!', len);
    for (i = bang ? (size_t)(bang - text) - (bang > text && bang[-1] == '?') : len; i + 1 < len;
         i++) {
        char a = text[i], b = text[i + 1];
        if ((a == '!' && (b == '!' || b == '?')) || (a == '?' && b == '!')) {
            size_t end = i + 2;
            while (end < len && (text[end] == '!' || text[end] == '?'))
                end++;
            if (push_cand(s, AT_CAT_SHOUTING, ID_SHOUT_PUNCT, i, end, PATTERN_BUILTIN, KIND_FIXED))
                return AT_ENOMEM;
            break;
        }
    }
    return 0;
}

static int cmp_cand(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->m.category != y->m.category)
        return (int)x->m.category - (int)y->m.category;
    size_t lx = x->m.end - x->m.start, ly = y->m.end - y->m.start;
    if (lx != ly)
        return lx > ly ? -1 : 1;
    if (x->m.start != y->m.start)
        return x->m.start < y->m.start ? -1 : 1;
    return strcmp(x->m.pattern_id, y->m.pattern_id);
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

/* The word characters (is_word_char) among eight lower-cased bytes: each one's high bit. */
static inline uint64_t word_bits8(uint64_t x)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    uint64_t low7 = x & ~highs;
    uint64_t digit = (low7 + (0x80 - '0') * ones) & ~(low7 + (0x7f - '9') * ones);
    uint64_t letter = (low7 + (0x80 - 'a') * ones) & ~(low7 + (0x7f - 'z') * ones);
    uint64_t t = low7 ^ ('_' * ones); /* a zero byte where '_' was */
    uint64_t under = ~((t + ~highs) | t);
    return (digit | letter | under) & ~x & highs;
}

/* Copies text[0 .. len) to dst with ASCII capitals lower-cased; returns how many there were.
 * Eight bytes a step: a byte is a capital when it is ASCII, >= 'A' and not > 'Z', which the
 * additions below put in each byte's high bit without carries between bytes. */
static size_t lower_ascii(char *dst, const char *text, size_t len, bool *has_pair)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    size_t n_upper = 0, i = 0;
    uint64_t pairs = 0, prev = 0; /* bit 7 of byte k: bytes k-1 and k are capitals */
    for (; i + 8 <= len; i += 8) {
        uint64_t x;
        memcpy(&x, text + i, 8);
        uint64_t low7 = x & ~highs;
        uint64_t ge_a = low7 + (0x80 - 'A') * ones;
        uint64_t gt_z = low7 + (0x7f - 'Z') * ones;
        uint64_t upper = ge_a & ~gt_z & ~x & highs;
        x |= upper >> 2;
        memcpy(dst + i, &x, 8);
        n_upper += (size_t)(((upper >> 7) * ones) >> 56);
        pairs |= upper & (upper << 8 | prev >> 56);
        prev = upper;
    }
    unsigned prev_upper = (unsigned)(prev >> 63);
    for (; i < len; i++) {
        unsigned c = (unsigned char)text[i];
        unsigned is_upper = c - 'A' < 26u;
        n_upper += is_upper;
        pairs |= is_upper & prev_upper;
        prev_upper = is_upper;
        dst[i] = (char)(is_upper ? c + ('a' - 'A') : c);
    }
    *has_pair = pairs != 0;
    return n_upper;
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
        uint8_t *gr = realloc(s->groups, m->n_patterns);
        uint32_t *hf = realloc(s->hit_first, m->n_patterns * sizeof *hf);
        uint32_t *hl = realloc(s->hit_last, m->n_patterns * sizeof *hl);
        uint64_t *lp = realloc(s->last_pos, m->n_patterns * (MAX_GROUPS + 1) * sizeof *lp);
        if (lp)
            s->last_pos = lp;
        if (st)
            s->stamp = st;
        if (td)
            s->todo = td;
        if (gr)
            s->groups = gr;
        if (hf)
            s->hit_first = hf;
        if (hl)
            s->hit_last = hl;
        if (!st || !td || !gr || !hf || !hl || !lp)
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
    if (s->cap_lower < len + 8) {
        char *l = realloc(s->lower, len + 8);
        if (!l)
            return AT_ENOMEM;
        s->lower = l;
        s->cap_lower = len + 8;
    }
    /* capitals, for run_shouting; two in a row, for needs_caps */
    size_t n_upper = lower_ascii(s->lower, text, len, &s->has_caps_pair);
    memset(s->lower + len, 0, 8); /* word_bits8 reads eight bytes at a time */

    /* Prefilter: patterns whose required literal occurs in the text, plus the unfiltered. When
     * tracing, patterns for other speakers run too so that the trace can say why they did not
     * count. */
    unsigned speaker_bit = 1u << speaker;
    s->n_todo = 0;
    s->n_hits = 0;
    const unsigned char *low = (const unsigned char *)s->lower;
    /* Texts that begin words are looked for at word starts only; the few that may occur
     * anywhere (their pattern does not say what precedes them), at every position whose two
     * bytes begin one of them. */
    const ltrie *tries = m->trie[trace ? 0 : 1 + speaker];
    const ltrie *starts = &tries[1], *anywhere = &tries[0];
    {
        /* Word starts, found eight bytes a step (word_starts8), then up to WALK_BATCH at a
         * time: their first nodes are fetched together, so that the cache misses of the walks
         * overlap instead of following one another. */
        size_t pos[WALK_BATCH];
        uint32_t off[WALK_BATCH];
        size_t n = 0;
        uint64_t prev = 0; /* the previous step's word bits */
        for (size_t base = 0; base + 3 <= len; base += 8) {
            uint64_t x = 0;
            memcpy(&x, low + base, 8); /* lower has eight NULs after len */
            uint64_t word = word_bits8(x);
            uint64_t start = word & ~(word << 8 | prev >> 56);
            prev = word;
            while (start) {
                size_t i = base + (size_t)(__builtin_ctzll(start) >> 3);
                start &= start - 1;
                if (i + 3 > len)
                    continue;
                uint32_t node = d2_node(starts, low + i);
                if (node == UINT32_MAX)
                    continue;
                pos[n] = i;
                off[n] = node;
                __builtin_prefetch(starts->pk + off[n]);
                if (++n == WALK_BATCH) {
                    for (size_t k = 0; k < n; k++)
                        if (walk_trie(m, starts, off[k], s, low, len, pos[k], speaker_bit,
                                      trace))
                            return AT_ENOMEM;
                    n = 0;
                }
            }
        }
        for (size_t k = 0; k < n; k++)
            if (walk_trie(m, starts, off[k], s, low, len, pos[k], speaker_bit, trace))
                return AT_ENOMEM;
    }
    if (anywhere->pk_len)
        for (size_t i = 0; i + 3 <= len; i++) {
            if (anywhere->is_high_first && !(low[i] & 0x80)) {
                /* Only a byte >= 0x80 can begin a text: skip ASCII eight bytes a step. */
                uint64_t x;
                memcpy(&x, low + i, 8); /* lower has eight NULs after len */
                uint64_t high = x & UINT64_C(0x8080808080808080);
                i += high ? (size_t)__builtin_ctzll(high) >> 3 : 8;
                i--; /* the loop's i++ */
                continue;
            }
            uint32_t node = d2_node(anywhere, low + i);
            if (node != UINT32_MAX &&
                walk_trie(m, anywhere, node, s, low, len, i, speaker_bit, trace))
                return AT_ENOMEM;
        }
    for (size_t i = 0; i < m->n_unfiltered; i++) {
        uint32_t pi = m->unfiltered[i];
        if (trace || (m->patterns[pi].speakers & speaker_bit))
            s->todo[s->n_todo++] = pi;
    }
    /* Markers first; a block only matters when a candidate of a category it guards exists, so
     * blocks run last and only then (not when tracing: the trace shows every guard). */
    for (size_t i = 0; i < s->n_todo; i++)
        if (m->patterns[s->todo[i]].kind != KIND_BLOCK &&
            run_pattern(m, s, s->todo[i], text, len, &out->n_limit_hits))
            return AT_ENOMEM;
    if (trace || speaker == AT_SPEAKER_CUSTOMER) {
        if (run_wordlists(m, s, len) ||
            run_shouting(m, s, text, len, n_upper))
            return AT_ENOMEM;
    }
    uint32_t cand_mask = 0;
    for (size_t i = 0; i < s->n_cands; i++)
        cand_mask |= 1u << s->cands[i].m.category;
    for (size_t i = 0; i < s->n_todo; i++) {
        const pattern *p = &m->patterns[s->todo[i]];
        if (p->kind == KIND_BLOCK && (trace || (p->block_mask & cand_mask)) &&
            run_pattern(m, s, s->todo[i], text, len, &out->n_limit_hits))
            return AT_ENOMEM;
    }

    /* Gates: speaker, quotation, look-alike blocks (a block pattern suppresses overlapping
     * candidates of the categories it guards), then the negation scope. */
    s->n_quotes = SIZE_MAX; /* found on first use */
    size_t n_out = 0;
    if (s->cap_out < s->n_cands) {
        at_marker *o = realloc(s->out, s->n_cands * sizeof *o);
        if (!o)
            return AT_ENOMEM;
        s->out = o;
        s->cap_out = s->n_cands;
    }
    /* Longest candidate first within a category, so that the overlap rule below keeps the same
     * marker whatever order the prefilter ran the patterns in. */
    if (s->n_cands > 1)
        qsort(s->cands, s->n_cands, sizeof *s->cands, cmp_cand);
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
        /* The reasons are written only for a trace: formatting them was a hundredth of the
         * scoring time. */
        if (!(speakers & speaker_bit)) {
            if (trace) {
                snprintf(why, sizeof why, "wrong speaker (%s; %s is for %s)",
                         at_speaker_name(speaker), at_category_name(c->m.category),
                         at_category_family(c->m.category) == AT_FAMILY_FRUSTRATION
                             ? "customer turns"
                             : "agent and bot turns");
                trace_cand(trace, text, c, why);
            }
            continue;
        }
        if (m->is_quote_gate && c->pattern != PATTERN_BUILTIN &&
            is_quoted(s, text, len, c->m.start, c->m.end)) {
            trace_cand(trace, text, c, "inside quotation marks (reported speech)");
            continue;
        }
        const cand *blocker = NULL;
        for (size_t j = 0; j < s->n_cands && !blocker; j++) {
            const cand *b = &s->cands[j];
            if (b->kind == KIND_BLOCK &&
                (m->patterns[b->pattern].block_mask & (1u << c->m.category)) &&
                (m->patterns[b->pattern].speakers & speaker_bit) && b->m.start < c->m.end &&
                c->m.start < b->m.end)
                blocker = b;
        }
        if (blocker) {
            if (trace) {
                snprintf(why, sizeof why, "look-alike, blocked by %s", blocker->m.pattern_id);
                trace_cand(trace, text, c, why);
            }
            continue;
        }
        if (c->kind == KIND_MATCH) {
            size_t cs, ce;
            int kind = scope_check(m, text, len, c->m.start, &cs, &ce);
            if (kind) {
                if (trace) {
                    snprintf(why, sizeof why, "%s \"%.*s\"", scope_names[kind],
                             (int)(ce - cs), text + cs);
                    trace_cand(trace, text, c, why);
                }
                continue;
            }
        }
        /* One marker per category and span: drop a candidate that overlaps a longer one kept. */
        bool dup = false;
        for (size_t j = 0; j < n_out && !dup; j++) {
            const at_marker *o = &s->out[j];
            dup = o->category == c->m.category && o->start < c->m.end && c->m.start < o->end;
        }
        if (dup) {
            trace_cand(trace, text, c, "overlaps another marker of the same category");
            continue;
        }
        trace_cand(trace, text, c, NULL);
        s->out[n_out++] = c->m;
        out->category_mask |= 1u << c->m.category;
    }
    if (n_out > 1)
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
