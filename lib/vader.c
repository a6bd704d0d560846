/*
 * vader.c: VADER sentiment, reproducing the reference implementation (vaderSentiment 3.3.2)
 * exactly, quirks included (see shared/design/VADER.md for the rules).
 *
 * The model (at__vader) is built once from lexicons/vader/ and is read-only afterwards, so any
 * number of threads may score with it; it holds no match data or other mutable state. Everything
 * a call needs lives in the caller's scratch (at__vscratch), whose buffers grow and are reused,
 * so scoring does not allocate once they have grown.
 *
 * Text is handled as UTF-8 bytes, but every rule follows the reference's Python code-point
 * semantics: splitting and stripping on Unicode whitespace, lengths in code points, str.isupper()
 * by Unicode properties (PCRE2), str.lower() as far as any key can tell (see lower_utf8). Invalid
 * UTF-8 never fails: each byte that does not start a valid sequence counts as one uncased,
 * non-space character (as U+FFFD would).
 *
 * All words of the data files live in one map from the lower-cased word to its lexicon valence
 * and a tag of flags (lexicon, booster, negation, place in a multi-word idiom, which of the
 * keywords the rules compare against), so each token costs at most one hash lookup, and a Bloom
 * filter answers most tokens, which are in no list, without one. Keys that lower-casing changes
 * (":-D", ":-Þ") are dropped at load: the reference looks up lower-cased tokens only, so they
 * can never match.
 */
#include <locale.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "internal.h"

/* The reference's constants. */
#define C_INCR 0.733    /* emphasis of an ALL-CAPS word among others */
#define N_SCALAR (-0.74) /* negation factor */
#define ALPHA 15.0      /* normalisation of the compound */

/* Flags in the tag of an entry of at__vader.words. */
enum {
    W_LEX = 1 << 0,    /* in the lexicon; the entry's value is the valence */
    W_BOOST = 1 << 1,  /* a one-word booster or dampener; the value is boosts[tag >> W_BOOST_SHIFT] */
    W_NEG = 1 << 2,    /* a negation word */
    W_PHRASE = 1 << 3, /* a word of a multi-word special case or booster phrase */
    W_FIRST = 1 << 4,  /* the first word of such a phrase */
    W_LAST = 1 << 5,   /* the last word of such a phrase */
};
#define W_KW_SHIFT 6    /* 4 bits: the keyword (enum kw) the word is */
#define W_KW_MASK 0xf
#define W_BOOST_SHIFT 10

/* Byte classes, so that the loops over the text read one table entry per byte: the low 8 bits
 * are the byte lower-cased (ASCII), the bits above are these classes. */
enum {
    B_SPACE = 1 << 8,   /* ASCII whitespace */
    B_WSLEAD = 1 << 9,  /* may start a non-ASCII whitespace character */
    B_PUNCT = 1 << 10,  /* in string.punctuation */
    B_UPPER = 1 << 11,  /* A-Z */
    B_LOWER = 1 << 12,  /* a-z */
    B_HIGH = 1 << 13,   /* not ASCII */
    B_MARK = 1 << 14,   /* '!' or '?', counted for emphasis */
    B_QUOTE = 1 << 15,  /* '\'', as in "n't" */
    B_EMOJI = 1 << 16,  /* may start an emoji (emoji_lead) */
};
/* Bytes that need a closer look inside a token: they may end it or are counted. */
#define B_STOP (B_SPACE | B_WSLEAD | B_MARK)

/* The words the rules compare tokens against. */
enum kw {
    KW_NONE = 0, KW_NO, KW_KIND, KW_OF, KW_BUT, KW_LEAST, KW_AT, KW_VERY, KW_NEVER, KW_SO,
    KW_THIS, KW_WITHOUT, KW_DOUBT, KW_OR, KW_NOR, KW_COUNT
};
static const char *const kw_names[KW_COUNT] = {
    "", "no", "kind", "of", "but", "least", "at", "very", "never", "so",
    "this", "without", "doubt", "or", "nor",
};

#define BLOOM_BITS (1u << 17) /* 16 KiB: about 1% false positives for the 7,600 words */

struct emoji_name {
    size_t off; /* bytes into at__vader.emoji_text */
    size_t len; /* bytes */
};

struct at__vader {
    at__strmap words;          /* lower-cased word -> lexicon valence (value), W_ flags (tag) */
    double *boosts;            /* one-word booster values, indexed by the tag */
    size_t n_boosts;
    at__strmap specials;       /* special-case idiom ("the bomb") -> valence */
    at__strmap boost_phrases;  /* multi-word booster ("kind of") -> value */
    at__strmap emoji;          /* one code point, UTF-8 -> index into emoji_names (tag) */
    struct emoji_name *emoji_names;
    size_t n_emoji;
    at__buf emoji_text;        /* the descriptions, back to back */
    bool emoji_lead[256];      /* bytes that start the UTF-8 of some emoji code point */
    uint32_t cls[256];         /* each byte lower-cased, and its B_ classes */
    size_t max_word_len;       /* bytes of the longest key of words */
    uint64_t bloom[BLOOM_BITS / 64]; /* a Bloom filter of the keys of words: most tokens are in
                                      * no list, and this answers them without a map lookup */
    pcre2_code *re_lower;      /* a lower-case or title-case character: not str.isupper() */
    pcre2_code *re_upper;      /* an upper-case character */
    pcre2_code *re_cwl;        /* a character that str.lower() changes */
    uint64_t serial;           /* unique to this model in the process (word_cache) */
};

/* One token of the text being scored. */
struct tok {
    size_t off, len;       /* bytes in the (emoji-expanded) text, after the punctuation rule */
    size_t lo_off, lo_len; /* bytes of its lower-cased form in at__vscratch.lower */
    int flags;             /* the word's tag (W_ flags, keyword), 0 when it is in no list */
    double lex;            /* lexicon valence, when W_LEX */
    double boost;          /* booster value, when W_BOOST */
    bool is_upper;         /* Python's str.isupper() */
    bool has_nt;           /* the lower-cased token contains "n't" */
    uint32_t seen;         /* B_ classes of its bytes */
};

/* A scratch's memory of the lexicon lookups of short words: the few hundred words that make up
 * most text are looked up once per thread instead of hashed and probed at every occurrence.
 * Direct-mapped; a slot holds a word of up to 8 bytes (packed, and its length + 1, 0 for an
 * empty slot) and what word_get answered for it, NULL included. It belongs to the model whose
 * serial is word_cache_serial, and is emptied when the scratch is used with another model. */
#define WORD_CACHE_BITS 10
struct word_slot {
    uint64_t key;
    const at__strmap_entry *e;
    uint8_t len1;
};

struct at__vscratch {
    struct word_slot word_cache[1u << WORD_CACHE_BITS];
    uint64_t word_cache_serial;
    at__buf text;   /* the emoji-expanded text, when any emoji was replaced */
    at__buf lower;  /* the text lower-cased, each token at its own offset */
    at__buf cased;  /* the non-ASCII characters of one token, for the isupper test */
    at__buf gram;   /* an n-gram being looked up among the idioms */
    struct tok *toks;
    size_t n_toks, cap_toks;
    double *val;    /* the valence of each token */
    size_t *nz;     /* positions of non-zero valences (the "but" rule) */
    size_t cap_val;
    pcre2_match_data *md;
    int deferred_rc; /* the first error met where returning at once would clutter the rules
                      * (appending to the trace, growing the n-gram buffer) */
};

/* ---- characters ------------------------------------------------------------------------- */

/* Returns the length (1 to 4) of the valid UTF-8 sequence starting at p, or 0 when the byte at
 * p starts none (it then counts as one character of its own). */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        return n >= 2 && (p[1] & 0xc0) == 0x80 ? 2 : 0;
    if (c >= 0xe0 && c <= 0xef) {
        if (n < 3 || (p[2] & 0xc0) != 0x80)
            return 0;
        unsigned char lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
        return p[1] >= lo && p[1] <= hi ? 3 : 0;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        if (n < 4 || (p[2] & 0xc0) != 0x80 || (p[3] & 0xc0) != 0x80)
            return 0;
        unsigned char lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
        return p[1] >= lo && p[1] <= hi ? 4 : 0;
    }
    return 0;
}

/* Returns the byte length of the whitespace character at p (Python's str.isspace()), or 0. */
static size_t space_len(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    if (c < 0x80)
        return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) ? 1 : 0;
    if (c == 0xc2)
        return n >= 2 && (p[1] == 0x85 || p[1] == 0xa0) ? 2 : 0;
    if (n < 3 || (c != 0xe1 && c != 0xe2 && c != 0xe3))
        return 0;
    unsigned b = (unsigned)p[1] << 8 | p[2];
    switch (c) {
    case 0xe1: /* U+1680 */
        return b == 0x9a80 ? 3 : 0;
    case 0xe2: /* U+2000..U+200A, U+2028, U+2029, U+202F, U+205F */
        return (b >= 0x8080 && b <= 0x808a) || b == 0x80a8 || b == 0x80a9 || b == 0x80af ||
                       b == 0x819f
                   ? 3
                   : 0;
    default: /* U+3000 */
        return b == 0x8080 ? 3 : 0;
    }
}

/* Python's string.punctuation. */
static bool is_punct(unsigned char c)
{
    return (c >= 0x21 && c <= 0x2f) || (c >= 0x3a && c <= 0x40) || (c >= 0x5b && c <= 0x60) ||
           (c >= 0x7b && c <= 0x7e);
}

/* Trims Python whitespace from both ends of [*s, *s + *n). */
static void strip_space(const char **s, size_t *n)
{
    const unsigned char *p = (const unsigned char *)*s;
    size_t len = *n, k;
    while (len && (k = space_len(p, len)) > 0) {
        p += k;
        len -= k;
    }
    /* Whitespace cannot be told from the end of a UTF-8 sequence, so walk forward. */
    size_t end = 0;
    for (size_t i = 0; i < len;) {
        k = space_len(p + i, len - i);
        if (k) {
            i += k;
            continue;
        }
        size_t l = utf8_len(p + i, len - i);
        i += l ? l : 1;
        end = i;
    }
    *s = (const char *)p;
    *n = end;
}

/* Writes the str.lower() of src (n bytes) to dst (room for n bytes) and returns its length.
 * ASCII letters are lower-cased, and so is U+212A KELVIN SIGN, the only non-ASCII character whose
 * lower case is ASCII. Other non-ASCII characters are copied. That is exact for ASCII keys, which
 * all shipped data are: a token keeping a non-ASCII character matches none of them either way.
 * A non-ASCII key (say "café") would match only tokens already lower-case in those characters. */
static size_t lower_utf8(const char *src, size_t n, char *dst)
{
    const unsigned char *p = (const unsigned char *)src;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        if (c < 0x80) {
            dst[o++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
            i++;
        } else if (c == 0xe2 && i + 2 < n && p[i + 1] == 0x84 && p[i + 2] == 0xaa) {
            dst[o++] = 'k';
            i += 3;
        } else {
            dst[o++] = (char)c;
            i++;
        }
    }
    return o;
}

static bool re_find(const pcre2_code *re, const char *s, size_t n, pcre2_match_data *md)
{
    /* Callers pass valid UTF-8 only, so the UTF check is redundant. */
    return pcre2_match(re, (PCRE2_SPTR)s, n, 0, PCRE2_NO_UTF_CHECK, md, NULL) >= 0;
}

/* The Bloom filter's two bits of a word: both in one 64-bit word of it (one cache miss at
 * most), all taken from at__hash, which the lookup of a word that passes the filter
 * (at__strmap_get_h) then reuses: one hash per token. */
static inline uint64_t bloom_bits(uint64_t h)
{
    return UINT64_C(1) << ((h >> 40) & 63) | UINT64_C(1) << ((h >> 52) & 63);
}

static int bloom_add(at__vader *v, const char *w, size_t n)
{
    uint64_t h = at__hash(w, n);
    v->bloom[(h >> 20) % (BLOOM_BITS / 64)] |= bloom_bits(h);
    return 0;
}

/* The entry of lower-cased word w in v->words, or NULL; most words are rejected by the Bloom
 * filter without a probe of the table. */
static const at__strmap_entry *word_get(const at__vader *v, const char *w, size_t n)
{
    if (n > v->max_word_len)
        return NULL;
    uint64_t h = at__hash(w, n);
    uint64_t bits = bloom_bits(h);
    if ((v->bloom[(h >> 20) % (BLOOM_BITS / 64)] & bits) != bits)
        return NULL;
    return at__strmap_get_h(&v->words, w, n, h);
}

/* word_get through the scratch's word_cache. w must have 8 readable bytes (s->lower has 8
 * zero bytes past the text). */
static const at__strmap_entry *word_get_cached(const at__vader *v, at__vscratch *s,
                                               const char *w, size_t n)
{
    if (n > 8)
        return word_get(v, w, n);
    uint64_t key = at__load_prefix(w, n);
    uint64_t h = (key ^ n) * UINT64_C(0x9e3779b97f4a7c15);
    struct word_slot *slot = &s->word_cache[h >> (64 - WORD_CACHE_BITS)];
    if (slot->len1 == n + 1 && slot->key == key)
        return slot->e;
    const at__strmap_entry *e = word_get(v, w, n);
    *slot = (struct word_slot){key, e, (uint8_t)(n + 1)};
    return e;
}

/* ---- loading ---------------------------------------------------------------------------- */

/* Returns whether a data key can ever be matched: the reference compares keys with lower-cased
 * tokens, so a key holding a character that lower-casing changes (":-D", ":-Þ") never matches. */
static bool key_matchable(const at__vader *v, const char *k, size_t n, pcre2_match_data *md)
{
    bool non_ascii = false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)k[i];
        if (c >= 'A' && c <= 'Z')
            return false;
        non_ascii |= c >= 0x80;
    }
    return !non_ascii || !re_find(v->re_cwl, k, n, md);
}

/* Sets flags on word (adding it when new) and, when has_value, its lexicon valence. */
static int word_merge(at__vader *v, const char *w, size_t n, int flags, bool has_value,
                      double value)
{
    const at__strmap_entry *e = at__strmap_get(&v->words, w, n);
    int tag = e ? e->tag | flags : flags;
    double old = e ? e->value : 0.0;
    if (n > v->max_word_len)
        v->max_word_len = n;
    return at__strmap_put(&v->words, w, n, has_value ? value : old, tag);
}

/* Marks every word of a multi-word phrase, so that n-grams of other words skip the lookup. */
static int mark_phrase_words(at__vader *v, const char *k, size_t n)
{
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && k[i] != ' ')
            continue;
        int flags = W_PHRASE | (start == 0 ? W_FIRST : 0) | (i == n ? W_LAST : 0);
        if (word_merge(v, k + start, i - start, flags, false, 0.0))
            return AT_ENOMEM;
        start = i + 1;
    }
    return 0;
}

struct line {
    const char *path;
    size_t no;           /* 1-based */
    const char *text;    /* the line, stripped */
    size_t text_len;
    const char *f[2];    /* the first two TAB-separated fields */
    size_t f_len[2];
    int n_fields;        /* 1 or 2 */
    pcre2_match_data *md;
    locale_t c_locale;
    char *err;
    size_t err_len;
};

/* Parses a decimal number the way Python's float() does for the data files (no "inf", "nan" or
 * underscores). */
static int parse_number(struct line *ln, const char *s, size_t n, double *out)
{
    strip_space(&s, &n);
    size_t i = 0, digits = 0;
    if (i < n && (s[i] == '+' || s[i] == '-'))
        i++;
    for (; i < n && s[i] >= '0' && s[i] <= '9'; i++)
        digits++;
    if (i < n && s[i] == '.')
        for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++)
            digits++;
    if (digits && i < n && (s[i] == 'e' || s[i] == 'E')) {
        size_t j = i + 1, exp_digits = 0;
        if (j < n && (s[j] == '+' || s[j] == '-'))
            j++;
        for (; j < n && s[j] >= '0' && s[j] <= '9'; j++)
            exp_digits++;
        if (exp_digits)
            i = j;
    }
    if (!digits || i != n || n > 64) {
        at__errf(ln->err, ln->err_len, "%s:%zu: \"%.*s\" is not a number", ln->path, ln->no,
                 (int)(n > 64 ? 64 : n), s);
        return AT_ESYNTAX;
    }
    /* The data uses '.', whatever LC_NUMERIC the application has set. */
    char buf[65];
    memcpy(buf, s, n);
    buf[n] = '\0';
    *out = strtod_l(buf, NULL, ln->c_locale);
    return 0;
}

static int need_tab(struct line *ln)
{
    if (ln->n_fields == 2)
        return 0;
    at__errf(ln->err, ln->err_len, "%s:%zu: expected a TAB between the word and its value",
             ln->path, ln->no);
    return AT_ESYNTAX;
}

static int lexicon_line(at__vader *v, struct line *ln)
{
    double value;
    int rc = need_tab(ln);
    if (!rc)
        rc = parse_number(ln, ln->f[1], ln->f_len[1], &value);
    if (rc || !key_matchable(v, ln->f[0], ln->f_len[0], ln->md))
        return rc;
    return word_merge(v, ln->f[0], ln->f_len[0], W_LEX, true, value);
}

static int emoji_line(at__vader *v, struct line *ln)
{
    int rc = need_tab(ln);
    if (rc)
        return rc;
    /* The reference walks the text by code point, so only one-code-point keys can match. */
    const unsigned char *k = (const unsigned char *)ln->f[0];
    size_t n = ln->f_len[0];
    if (!n || utf8_len(k, n) != n)
        return 0;
    struct emoji_name *names = realloc(v->emoji_names, (v->n_emoji + 1) * sizeof *names);
    if (!names)
        return AT_ENOMEM;
    v->emoji_names = names;
    names[v->n_emoji].off = v->emoji_text.len;
    names[v->n_emoji].len = ln->f_len[1];
    if (at__buf_append(&v->emoji_text, ln->f[1], ln->f_len[1]) ||
        at__strmap_put(&v->emoji, ln->f[0], n, 0.0, (int)v->n_emoji))
        return AT_ENOMEM;
    v->n_emoji++;
    v->emoji_lead[k[0]] = true;
    return 0;
}

static int booster_line(at__vader *v, struct line *ln)
{
    double value;
    int rc = need_tab(ln);
    if (!rc)
        rc = parse_number(ln, ln->f[1], ln->f_len[1], &value);
    const char *k = ln->f[0];
    size_t n = ln->f_len[0];
    if (rc || !key_matchable(v, k, n, ln->md))
        return rc;
    /* A token never holds a space, so only one-word boosters can match a token, and only
     * multi-word ones can match the n-grams of the idiom rule. */
    if (memchr(k, ' ', n)) {
        if (at__strmap_put(&v->boost_phrases, k, n, value, 0))
            return AT_ENOMEM;
        return mark_phrase_words(v, k, n);
    }
    const at__strmap_entry *e = at__strmap_get(&v->words, k, n);
    if (e && (e->tag & W_BOOST)) {
        v->boosts[e->tag >> W_BOOST_SHIFT] = value;
        return 0;
    }
    double *boosts = realloc(v->boosts, (v->n_boosts + 1) * sizeof *boosts);
    if (!boosts)
        return AT_ENOMEM;
    v->boosts = boosts;
    boosts[v->n_boosts] = value;
    return word_merge(v, k, n, W_BOOST | (int)(v->n_boosts++ << W_BOOST_SHIFT), false, 0.0);
}

static int negation_line(at__vader *v, struct line *ln)
{
    /* The whole line is the word. */
    if (!key_matchable(v, ln->text, ln->text_len, ln->md))
        return 0;
    return word_merge(v, ln->text, ln->text_len, W_NEG, false, 0.0);
}

static int special_line(at__vader *v, struct line *ln)
{
    double value;
    int rc = need_tab(ln);
    if (!rc)
        rc = parse_number(ln, ln->f[1], ln->f_len[1], &value);
    if (rc || !key_matchable(v, ln->f[0], ln->f_len[0], ln->md))
        return rc;
    if (at__strmap_put(&v->specials, ln->f[0], ln->f_len[0], value, 0))
        return AT_ENOMEM;
    return mark_phrase_words(v, ln->f[0], ln->f_len[0]);
}

typedef int (*line_fn)(at__vader *v, struct line *ln);

/* Reads dir/vader/name, feeds it into *hash and hands each non-blank line, stripped of
 * surrounding whitespace like the reference's line.strip(), to fn. */
static int load_file(at__vader *v, const char *dir, const char *name, line_fn fn,
                     struct line *ln, uint64_t *hash)
{
    char path[4096];
    int n = snprintf(path, sizeof path, "%s/vader/%s", dir, name);
    if (n < 0 || (size_t)n >= sizeof path) {
        at__errf(ln->err, ln->err_len, "%s/vader/%s: path too long", dir, name);
        return AT_EIO;
    }
    char *data;
    size_t len;
    int rc = at__read_file(path, &data, &len, ln->err, ln->err_len);
    if (rc)
        return rc;
    *hash = at__fnv1a(*hash, data, len);
    ln->path = path;
    ln->no = 0;
    for (size_t pos = 0; pos < len;) {
        const char *s = data + pos;
        const char *nl = memchr(s, '\n', len - pos);
        size_t line_len = nl ? (size_t)(nl - s) : len - pos;
        pos += line_len + 1;
        ln->no++;
        for (size_t i = 0, k; i < line_len; i += k) {
            k = utf8_len((const unsigned char *)s + i, line_len - i);
            if (!k) {
                at__errf(ln->err, ln->err_len, "%s:%zu: invalid UTF-8", path, ln->no);
                rc = AT_ESYNTAX;
                goto fail;
            }
        }
        strip_space(&s, &line_len);
        if (!line_len)
            continue;
        const char *tab = memchr(s, '\t', line_len);
        ln->text = s;
        ln->text_len = line_len;
        ln->f[0] = s;
        ln->f_len[0] = tab ? (size_t)(tab - s) : line_len;
        ln->n_fields = tab ? 2 : 1;
        if (tab) {
            const char *f1 = tab + 1, *end = s + line_len;
            const char *tab2 = memchr(f1, '\t', (size_t)(end - f1));
            ln->f[1] = f1;
            ln->f_len[1] = (size_t)((tab2 ? tab2 : end) - f1);
        }
        rc = fn(v, ln);
        if (rc)
            goto fail;
    }
    free(data);
    return 0;
fail:
    free(data);
    return rc;
}

static int compile(pcre2_code **out, const char *pattern, char *err, size_t err_len)
{
    int code;
    PCRE2_SIZE off;
    *out = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP,
                         &code, &off, NULL);
    if (!*out) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        at__errf(err, err_len, "vader: PCRE2 cannot compile %s: %s", pattern, (char *)msg);
        return AT_ESYNTAX;
    }
    /* JIT is only a speed-up; without it matching still works. */
    pcre2_jit_compile(*out, PCRE2_JIT_COMPLETE);
    return 0;
}

int at__vader_new(const char *dir, uint64_t *hash, at__vader **out, char *err, size_t err_len)
{
    static const struct {
        const char *name;
        line_fn fn;
    } files[] = {
        {"vader_lexicon.txt", lexicon_line},
        {"emoji_utf8_lexicon.txt", emoji_line},
        {"boosters.tsv", booster_line},
        {"negations.txt", negation_line},
        {"special_cases.tsv", special_line},
    };
    struct line ln = {.err = err, .err_len = err_len};
    int rc = AT_ENOMEM;
    at__vader *v = calloc(1, sizeof *v);
    if (!v)
        return AT_ENOMEM;
    static _Atomic uint64_t last_serial;
    v->serial = atomic_fetch_add(&last_serial, 1) + 1; /* 0 is no model's: an empty cache */
    at__strmap_init(&v->words);
    at__strmap_init(&v->specials);
    at__strmap_init(&v->boost_phrases);
    at__strmap_init(&v->emoji);
    for (int c = 0; c < 256; c++) {
        unsigned char u = (unsigned char)c;
        v->cls[c] = (uint32_t)((c < 0x80 && space_len(&u, 1) ? B_SPACE : 0) |
                                    (c == 0xc2 || (c >= 0xe1 && c <= 0xe3) ? B_WSLEAD : 0) |
                                    (is_punct(u) ? B_PUNCT : 0) |
                                    (c >= 'A' && c <= 'Z' ? B_UPPER : 0) |
                                    (c >= 'a' && c <= 'z' ? B_LOWER : 0) |
                                    (c >= 0x80 ? B_HIGH : 0) |
                                    (c == '!' || c == '?' ? B_MARK : 0) |
                                    (c == '\'' ? B_QUOTE : 0) |
                                    (c >= 'A' && c <= 'Z' ? c + 32 : c));
    }
    /* str.isupper() is false when any character is lower or title case, and needs one upper-case
     * character; Python takes these from the same Unicode properties. */
    if ((rc = compile(&v->re_lower, "[\\p{Lowercase}\\p{Lt}]", err, err_len)) ||
        (rc = compile(&v->re_upper, "\\p{Uppercase}", err, err_len)) ||
        (rc = compile(&v->re_cwl, "\\p{Changes_When_Lowercased}", err, err_len)))
        goto fail;
    rc = AT_ENOMEM;
    ln.md = pcre2_match_data_create(1, NULL);
    if (!ln.md)
        goto fail;
    ln.c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
    if (!ln.c_locale)
        goto fail;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        rc = load_file(v, dir, files[i].name, files[i].fn, &ln, hash);
        if (rc)
            goto fail;
    }
    rc = AT_ENOMEM;
    for (int k = 1; k < KW_COUNT; k++)
        if (word_merge(v, kw_names[k], strlen(kw_names[k]), k << W_KW_SHIFT, false, 0.0))
            goto fail;
    for (int c = 0; c < 256; c++)
        if (v->emoji_lead[c])
            v->cls[c] |= B_EMOJI;
    for (size_t i = 0; i < v->words.n_slots; i++)
        if (v->words.slots[i].key &&
            bloom_add(v, v->words.slots[i].key, v->words.slots[i].key_len))
            goto fail;
    freelocale(ln.c_locale);
    pcre2_match_data_free(ln.md);
    *out = v;
    return 0;
fail:
    if (ln.c_locale)
        freelocale(ln.c_locale);
    pcre2_match_data_free(ln.md);
    at__vader_free(v);
    return rc;
}

void at__vader_free(at__vader *v)
{
    if (!v)
        return;
    at__strmap_fini(&v->words);
    at__strmap_fini(&v->specials);
    at__strmap_fini(&v->boost_phrases);
    at__strmap_fini(&v->emoji);
    at__buf_fini(&v->emoji_text);
    free(v->emoji_names);
    free(v->boosts);
    pcre2_code_free(v->re_lower);
    pcre2_code_free(v->re_upper);
    pcre2_code_free(v->re_cwl);
    free(v);
}

bool at__vader_valence(const at__vader *v, const char *word, size_t len, double *valence)
{
    /* Lower-casing never lengthens a word, so a longer word can only match after shrinking
     * KELVIN SIGNs; only then is the heap needed. */
    char stack[256];
    char *buf = len <= 256 ? stack : malloc(len);
    if (!buf)
        return false;
    size_t n = lower_utf8(word, len, buf);
    const at__strmap_entry *e = word_get(v, buf, n);
    if (buf != stack)
        free(buf);
    if (!e || !(e->tag & W_LEX))
        return false;
    *valence = e->value;
    return true;
}

/* ---- scratch ---------------------------------------------------------------------------- */

int at__vscratch_new(at__vscratch **out)
{
    at__vscratch *s = calloc(1, sizeof *s);
    if (!s)
        return AT_ENOMEM;
    /* One pair of offsets is all the isupper tests need, whatever the model. */
    s->md = pcre2_match_data_create(1, NULL);
    if (!s->md) {
        free(s);
        return AT_ENOMEM;
    }
    *out = s;
    return 0;
}

void at__vscratch_free(at__vscratch *s)
{
    if (!s)
        return;
    at__buf_fini(&s->text);
    at__buf_fini(&s->lower);
    at__buf_fini(&s->cased);
    at__buf_fini(&s->gram);
    free(s->toks);
    free(s->val);
    free(s->nz);
    pcre2_match_data_free(s->md);
    free(s);
}

/* ---- tracing ---------------------------------------------------------------------------- */

static void tracef(at__vscratch *s, at__buf *trace, const char *fmt, ...) AT__PRINTF(3, 4);

/* Appends to the trace; the first failure is kept in s->deferred_rc so that scoring need not check
 * every line. */
static void tracef(at__vscratch *s, at__buf *trace, const char *fmt, ...)
{
    if (!trace || s->deferred_rc)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || at__buf_reserve(trace, (size_t)n)) {
        s->deferred_rc = AT_ENOMEM;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(trace->data + trace->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    trace->len += (size_t)n;
}

/* Traces only when tracing, so that scoring without a trace pays no call. Expects the scratch
 * in s and the trace buffer in trace. */
#define TRACE(...)                                                                                 \
    do {                                                                                           \
        if (trace)                                                                                 \
            tracef(s, trace, __VA_ARGS__);                                                         \
    } while (0)

/* ---- scoring ---------------------------------------------------------------------------- */

/* Replaces each code point that is an emoji by its description, preceded by a space unless the
 * previous character written was a space (the reference's quirk: nothing follows it, so "😀x"
 * becomes "grinning facex"). Sets *out to text itself when nothing was replaced. */
static int expand_emoji(const at__vader *v, at__vscratch *s, const char *text, size_t len,
                        const char **out, size_t *out_len)
{
    const unsigned char *p = (const unsigned char *)text;
    bool copying = false;
    size_t done = 0; /* bytes of text already copied */
    for (size_t i = 0; i < len; i++) {
        /* Stepping by byte is safe: the bytes inside a valid sequence never start an emoji. */
        if (!v->emoji_lead[p[i]])
            continue;
        size_t k = p[i] < 0x80 ? 1 : utf8_len(p + i, len - i);
        const at__strmap_entry *e = k ? at__strmap_get(&v->emoji, text + i, k) : NULL;
        if (!e)
            continue;
        /* The last character written is the text's own, or a description (never a space), or
         * nothing yet, which counts as a space. */
        bool prev_space = i > done ? p[i - 1] == ' ' : !copying;
        if (!copying) {
            s->text.len = 0;
            copying = true;
        }
        const struct emoji_name *name = &v->emoji_names[e->tag];
        if (at__buf_append(&s->text, text + done, i - done) ||
            (!prev_space && at__buf_append(&s->text, " ", 1)) ||
            at__buf_append(&s->text, v->emoji_text.data + name->off, name->len))
            return AT_ENOMEM;
        i += k - 1;
        done = i + 1;
    }
    if (!copying) {
        *out = text;
        *out_len = len;
        return 0;
    }
    if (at__buf_append(&s->text, text + done, len - done))
        return AT_ENOMEM;
    *out = s->text.data;
    *out_len = s->text.len;
    return 0;
}

/* Splits t on runs of whitespace into s->toks, applying the punctuation rule: a token loses its
 * leading and trailing ASCII punctuation unless 2 or fewer characters would remain. On the same
 * pass it lower-cases the text into s->lower at the same offsets (ASCII; non-ASCII tokens are
 * redone by classify), counts the '!' and '?' of the whole text and collects the classes of all
 * bytes into *seen_all. */
static int tokenize(const at__vader *v, at__vscratch *s, const char *t, size_t len,
                    size_t *n_excl, size_t *n_quest, unsigned *seen_all)
{
    const unsigned char *p = (const unsigned char *)t;
    const uint32_t *cls = v->cls;
    size_t n = 0, ne = 0, nq = 0;
    unsigned all = 0;
    s->lower.len = 0;
    if (at__buf_reserve(&s->lower, len + 8))
        return AT_ENOMEM;
    unsigned char *lo = (unsigned char *)s->lower.data;
    memset(lo + len, 0, 8); /* word_get_cached reads eight bytes at a time */
    if (s->word_cache_serial != v->serial) {
        memset(s->word_cache, 0, sizeof s->word_cache);
        s->word_cache_serial = v->serial;
    }
    for (size_t i = 0; i < len;) {
        unsigned c = cls[p[i]];
        all |= c;
        if (c & B_SPACE) {
            i++;
            continue;
        }
        size_t k = c & B_WSLEAD ? space_len(p + i, len - i) : 0;
        if (k) {
            i += k;
            continue;
        }
        size_t start = i;
        unsigned seen = 0;
        for (; i < len; i++) {
            c = cls[p[i]];
            if (c & B_STOP) {
                if ((c & B_SPACE) || ((c & B_WSLEAD) && space_len(p + i, len - i)))
                    break;
                ne += p[i] == '!';
                nq += p[i] == '?';
            }
            seen |= c;
            lo[i] = (unsigned char)c;
        }
        seen &= ~0xffu;
        all |= seen;
        if (n == s->cap_toks) {
            size_t cap = s->cap_toks ? s->cap_toks * 2 : 32;
            struct tok *toks = realloc(s->toks, cap * sizeof *toks);
            if (!toks)
                return AT_ENOMEM;
            s->toks = toks;
            s->cap_toks = cap;
        }
        size_t a = start, b = i;
        while (a < b && (cls[p[a]] & B_PUNCT))
            a++;
        while (b > a && (cls[p[b - 1]] & B_PUNCT))
            b--;
        /* The rule counts characters: bytes when ASCII; otherwise count up to 3 where it can
         * matter (2 characters take 8 bytes at most). */
        size_t chars = b - a;
        if ((seen & B_HIGH) && chars <= 8) {
            chars = 0;
            for (size_t j = a; j < b && chars <= 2; chars++) {
                size_t l = utf8_len(p + j, b - j);
                j += l ? l : 1;
            }
        }
        struct tok *tk = &s->toks[n++];
        tk->off = chars <= 2 ? start : a;
        tk->len = chars <= 2 ? i - start : b - a;
        tk->lo_off = tk->off;
        tk->lo_len = tk->len;
        /* Punctuation has no other class, so the classes seen hold for the stripped token. */
        tk->seen = seen;
    }
    s->n_toks = n;
    *n_excl = ne;
    *n_quest = nq;
    *seen_all = all;
    return 0;
}

/* Finishes a token: lower-cases it properly when it is not ASCII, decides str.isupper() and
 * looks it up. */
static int classify(const at__vader *v, at__vscratch *s, const char *t, struct tok *tk)
{
    const unsigned char *p = (const unsigned char *)t + tk->off;
    char *lo = s->lower.data + tk->lo_off;
    unsigned seen = tk->seen;
    tk->is_upper = (seen & B_UPPER) && !(seen & B_LOWER);
    if (seen & B_HIGH) {
        /* Lower-casing never lengthens, so the token's own bytes of s->lower have room. */
        tk->lo_len = lower_utf8((const char *)p, tk->len, lo);
        if (!(seen & B_LOWER)) {
            /* Test the valid non-ASCII characters by their Unicode properties; invalid bytes
             * are uncased. */
            s->cased.len = 0;
            for (size_t i = 0, k; i < tk->len; i += k ? k : 1) {
                k = utf8_len(p + i, tk->len - i);
                if (k > 1 && at__buf_append(&s->cased, (const char *)p + i, k))
                    return AT_ENOMEM;
            }
            if (s->cased.len) {
                if (re_find(v->re_lower, s->cased.data, s->cased.len, s->md))
                    tk->is_upper = false;
                else if (!(seen & B_UPPER))
                    tk->is_upper = re_find(v->re_upper, s->cased.data, s->cased.len, s->md);
            }
        }
    }
    tk->has_nt = false;
    for (size_t i = 1; (seen & B_QUOTE) && i + 1 < tk->lo_len; i++)
        if (lo[i] == '\'' && lo[i - 1] == 'n' && lo[i + 1] == 't') {
            tk->has_nt = true;
            break;
        }
    const at__strmap_entry *e = word_get_cached(v, s, lo, tk->lo_len);
    tk->flags = e ? e->tag : 0;
    tk->lex = e && (e->tag & W_LEX) ? e->value : 0.0;
    tk->boost = e && (e->tag & W_BOOST) ? v->boosts[e->tag >> W_BOOST_SHIFT] : 0.0;
    return 0;
}

static enum kw kw(const struct tok *tk)
{
    return (enum kw)((tk->flags >> W_KW_SHIFT) & W_KW_MASK);
}

static bool in_lexicon(const struct tok *tk)
{
    return tk->flags & W_LEX;
}

/* The reference's negated([word]): a negation word, or any word containing "n't". */
static bool negates(const struct tok *tk)
{
    return (tk->flags & W_NEG) || tk->has_nt;
}

static bool so_or_this(const struct tok *tk)
{
    return kw(tk) == KW_SO || kw(tk) == KW_THIS;
}

/* Looks up the n-gram of tokens idx[0..n) (lower-cased, joined by spaces) in m. */
static const at__strmap_entry *gram_get(const at__strmap *m, at__vscratch *s,
                                        const size_t *idx, int n)
{
    /* Most windows cannot be a phrase, judging by where their words stand in the phrases; they
     * need no string. */
    if (!m->n_used || !(s->toks[idx[0]].flags & W_FIRST) || !(s->toks[idx[n - 1]].flags & W_LAST))
        return NULL;
    for (int j = 1; j < n - 1; j++)
        if (!(s->toks[idx[j]].flags & W_PHRASE))
            return NULL;
    s->gram.len = 0;
    for (int j = 0; j < n; j++) {
        const struct tok *tk = &s->toks[idx[j]];
        if ((j && at__buf_append(&s->gram, " ", 1)) ||
            at__buf_append(&s->gram, s->lower.data + tk->lo_off, tk->lo_len)) {
            s->deferred_rc = AT_ENOMEM;
            return NULL;
        }
    }
    return at__strmap_get(m, s->gram.data, s->gram.len);
}

/* The special-case idioms and multi-word boosters around token i (i >= 3). */
static double idioms_check(const at__vader *v, at__vscratch *s, size_t i, double val,
                           at__buf *trace)
{
    size_t n = s->n_toks;
    /* The windows in the reference's order: "i-1 i", "i-2 i-1 i", "i-2 i-1", "i-3 i-2 i-1",
     * "i-3 i-2"; the first special case found wins. */
    const size_t w[5][3] = {
        {i - 1, i, 0}, {i - 2, i - 1, i}, {i - 2, i - 1, 0}, {i - 3, i - 2, i - 1}, {i - 3, i - 2, 0},
    };
    const int w_len[5] = {2, 3, 2, 3, 2};
    const at__strmap_entry *e;
    for (int j = 0; j < 5; j++) {
        if ((e = gram_get(&v->specials, s, w[j], w_len[j]))) {
            val = e->value;
            TRACE("; idiom \"%s\" = %g", e->key, val);
            break;
        }
    }
    /* Then idioms starting at i override. */
    const size_t after[3] = {i, i + 1, i + 2};
    if (n - 1 > i && (e = gram_get(&v->specials, s, after, 2))) {
        val = e->value;
        TRACE("; idiom \"%s\" = %g", e->key, val);
    }
    if (n - 1 > i + 1 && (e = gram_get(&v->specials, s, after, 3))) {
        val = e->value;
        TRACE("; idiom \"%s\" = %g", e->key, val);
    }
    /* Booster phrases before i add their value, unsigned: "i-3 i-2 i-1", "i-3 i-2", "i-2 i-1". */
    const int b[3] = {3, 4, 2};
    for (int j = 0; j < 3; j++) {
        if ((e = gram_get(&v->boost_phrases, s, w[b[j]], w_len[b[j]]))) {
            val = val + e->value;
            TRACE("; booster phrase \"%s\" %+g -> %g", e->key, e->value, val);
        }
    }
    return val;
}

/* The reference's _negation_check for the word k + 1 places before token i. */
static double negation_check(at__vscratch *s, size_t k, size_t i, double val, at__buf *trace)
{
    const struct tok *tk = s->toks;
    const struct tok *neg = NULL;
    double f = 1.0;
    if (k == 0) {
        if (negates(&tk[i - 1]))
            neg = &tk[i - 1];
    } else if (k == 1) {
        if (kw(&tk[i - 2]) == KW_NEVER && so_or_this(&tk[i - 1]))
            f = 1.25;
        else if (kw(&tk[i - 2]) == KW_WITHOUT && kw(&tk[i - 1]) == KW_DOUBT)
            f = 1.0; /* "without doubt" is not a negation */
        else if (negates(&tk[i - 2]))
            neg = &tk[i - 2];
    } else {
        /* The grouping is the reference's: "so"/"this" right before the word is enough. */
        if ((kw(&tk[i - 3]) == KW_NEVER && so_or_this(&tk[i - 2])) || so_or_this(&tk[i - 1]))
            f = 1.25;
        else if (kw(&tk[i - 3]) == KW_WITHOUT &&
                 (kw(&tk[i - 2]) == KW_DOUBT || kw(&tk[i - 1]) == KW_DOUBT))
            f = 1.0;
        else if (negates(&tk[i - 3]))
            neg = &tk[i - 3];
    }
    if (neg) {
        val = val * N_SCALAR;
        TRACE("; negation \"%.*s\" x%g -> %g", (int)neg->lo_len,
               s->lower.data + neg->lo_off, N_SCALAR, val);
    } else if (f != 1.0) {
        val = val * f;
        TRACE("; \"never so/this\" x1.25 -> %g", val);
    }
    return val;
}

/* The reference's scalar_inc_dec: the boost a preceding word gives valence val. */
static double scalar_inc_dec(const struct tok *w, double val, bool cap_diff)
{
    double scalar = 0.0;
    if (w->flags & W_BOOST) {
        scalar = w->boost;
        if (val < 0)
            scalar *= -1;
        if (w->is_upper && cap_diff) {
            if (val > 0)
                scalar += C_INCR;
            else
                scalar -= C_INCR;
        }
    }
    return scalar;
}

/* The valence of token i, which is in the lexicon (the reference's sentiment_valence). */
static double token_valence(const at__vader *v, at__vscratch *s, size_t i, bool cap_diff,
                            at__buf *trace)
{
    const struct tok *tk = s->toks, *w = &tk[i];
    size_t n = s->n_toks;
    double val = w->lex;
    TRACE(" lexicon %g", val);
    if (kw(w) == KW_NO && i != n - 1 && in_lexicon(&tk[i + 1])) {
        /* "no" before a lexicon word negates that word instead of counting itself. */
        val = 0.0;
        TRACE("; \"no\" before a lexicon word -> 0");
    }
    if ((i > 0 && kw(&tk[i - 1]) == KW_NO) || (i > 1 && kw(&tk[i - 2]) == KW_NO) ||
        (i > 2 && kw(&tk[i - 3]) == KW_NO &&
         (kw(&tk[i - 1]) == KW_OR || kw(&tk[i - 1]) == KW_NOR))) {
        val = w->lex * N_SCALAR;
        TRACE("; after \"no\" x%g -> %g", N_SCALAR, val);
    }
    if (w->is_upper && cap_diff) {
        if (val > 0)
            val += C_INCR;
        else
            val -= C_INCR;
        TRACE("; caps %+g -> %g", val > 0 ? C_INCR : -C_INCR, val);
    }
    for (size_t k = 0; k < 3; k++) {
        if (i <= k || in_lexicon(&tk[i - k - 1]))
            continue;
        const struct tok *b = &tk[i - k - 1];
        double sc = scalar_inc_dec(b, val, cap_diff);
        if (k == 1 && sc != 0)
            sc = sc * 0.95;
        if (k == 2 && sc != 0)
            sc = sc * 0.9;
        val = val + sc;
        if (sc != 0)
            TRACE("; booster \"%.*s\" %+g -> %g", (int)b->lo_len,
                   s->lower.data + b->lo_off, sc, val);
        val = negation_check(s, k, i, val, trace);
        if (k == 2)
            val = idioms_check(v, s, i, val, trace);
    }
    /* "least" before the word negates it, except in "at least" and "very least". */
    if (i > 1 && !in_lexicon(&tk[i - 1]) && kw(&tk[i - 1]) == KW_LEAST) {
        if (kw(&tk[i - 2]) != KW_AT && kw(&tk[i - 2]) != KW_VERY) {
            val = val * N_SCALAR;
            TRACE("; least x%g -> %g", N_SCALAR, val);
        }
    } else if (i > 0 && !in_lexicon(&tk[i - 1]) && kw(&tk[i - 1]) == KW_LEAST) {
        val = val * N_SCALAR;
        TRACE("; least x%g -> %g", N_SCALAR, val);
    }
    return val;
}

/* The reference's _but_check, quirk included: for each position j in order it scales the FIRST
 * position holding a value equal to the value at j (x0.5 before "but", x1.5 after), so equal
 * valences interact. Zeros are skipped: scaling a zero leaves a zero. */
static void but_check(at__vscratch *s, size_t bi, at__buf *trace)
{
    size_t n = s->n_toks, n_nz = 0;
    double *val = s->val;
    for (size_t j = 0; j < n; j++)
        if (val[j] != 0)
            s->nz[n_nz++] = j;
    TRACE("  \"but\" at token %zu:", bi + 1);
    for (size_t a = 0; a < n_nz; a++) {
        double x = val[s->nz[a]];
        if (x == 0)
            continue;
        size_t si = s->nz[a];
        for (size_t b = 0; b < a; b++) {
            if (val[s->nz[b]] == x) {
                si = s->nz[b];
                break;
            }
        }
        if (si == bi)
            continue;
        val[si] = x * (si < bi ? 0.5 : 1.5);
        TRACE(" token %zu x%g -> %g;", si + 1, si < bi ? 0.5 : 1.5, val[si]);
    }
    TRACE("\n");
}

static int grow_values(at__vscratch *s, size_t n)
{
    if (n <= s->cap_val)
        return 0;
    size_t cap = s->cap_val ? s->cap_val : 32;
    while (cap < n)
        cap *= 2;
    double *val = realloc(s->val, cap * sizeof *val);
    if (!val)
        return AT_ENOMEM;
    s->val = val;
    size_t *nz = realloc(s->nz, cap * sizeof *nz);
    if (!nz)
        return AT_ENOMEM;
    s->nz = nz;
    s->cap_val = cap;
    return 0;
}

int at__vader_score(const at__vader *v, at__vscratch *s, const char *text, size_t len,
                    at_sentiment *out, at__buf *trace)
{
    const char *t;
    size_t t_len, n_excl, n_quest;
    memset(out, 0, sizeof *out);
    s->deferred_rc = 0;
    unsigned seen_all;
    int rc = tokenize(v, s, text, len, &n_excl, &n_quest, &seen_all);
    if (rc)
        return rc;
    t = text;
    t_len = len;
    /* Only a text holding a byte that may start an emoji needs expanding, and tokenizing again
     * when an emoji was replaced. */
    if ((seen_all & B_EMOJI) && !(rc = expand_emoji(v, s, text, len, &t, &t_len)) && t != text)
        rc = tokenize(v, s, t, t_len, &n_excl, &n_quest, &seen_all);
    if (rc)
        return rc;
    size_t n = s->n_toks;
    if (!n) {
        TRACE("  no tokens: neg 0 neu 0 pos 0 compound 0\n");
        return s->deferred_rc;
    }
    if (grow_values(s, n))
        return AT_ENOMEM;
    size_t n_upper = 0;
    for (size_t i = 0; i < n; i++) {
        if ((rc = classify(v, s, t, &s->toks[i])))
            return rc;
        n_upper += s->toks[i].is_upper;
    }
    /* Caps only count as emphasis when some tokens are ALL CAPS and some are not. */
    bool cap_diff = n_upper > 0 && n_upper < n;

    size_t bi = n; /* the first "but" */
    for (size_t i = 0; i < n; i++) {
        const struct tok *tk = &s->toks[i];
        if (kw(tk) == KW_BUT && bi == n)
            bi = i;
        TRACE("  token \"%.*s\"", (int)tk->len, t + tk->off);
        double val = 0.0;
        if (tk->flags & W_BOOST)
            TRACE(" booster %+g, scores 0", tk->boost);
        else if (i < n - 1 && kw(tk) == KW_KIND && kw(&s->toks[i + 1]) == KW_OF)
            TRACE(" (\"kind of\") scores 0");
        else if (!in_lexicon(tk))
            TRACE(" 0");
        else
            val = token_valence(v, s, i, cap_diff, trace);
        s->val[i] = val;
        TRACE("\n");
    }
    if (s->deferred_rc)
        return s->deferred_rc;
    if (bi < n)
        but_check(s, bi, trace);

    /* Sums in the reference's order, so that the last bits agree. */
    double sum = 0.0, pos_sum = 0.0, neg_sum = 0.0;
    size_t neu_count = 0;
    for (size_t i = 0; i < n; i++) {
        double x = s->val[i];
        sum += x;
        if (x > 0)
            pos_sum += x + 1;
        if (x < 0)
            neg_sum += x - 1;
        if (x == 0)
            neu_count++;
    }
    double ep = (double)(n_excl > 4 ? 4 : n_excl) * 0.292;
    double qm = n_quest > 1 ? (n_quest <= 3 ? (double)n_quest * 0.18 : 0.96) : 0.0;
    double punct = ep + qm;
    double total_s = sum;
    if (total_s > 0)
        total_s += punct;
    else if (total_s < 0)
        total_s -= punct;
    double compound = total_s / sqrt(total_s * total_s + ALPHA);
    if (compound < -1.0)
        compound = -1.0;
    else if (compound > 1.0)
        compound = 1.0;
    if (pos_sum > fabs(neg_sum))
        pos_sum += punct;
    else if (pos_sum < fabs(neg_sum))
        neg_sum -= punct;
    double total = pos_sum + fabs(neg_sum) + (double)neu_count;
    out->pos = at_round(fabs(pos_sum / total), 3);
    out->neg = at_round(fabs(neg_sum / total), 3);
    out->neu = at_round(fabs((double)neu_count / total), 3);
    out->compound = at_round(compound, 4);
    TRACE("  sum %g, punctuation emphasis %g (! x %zu, ? x %zu), compound %.4f, "
           "pos %.3f neu %.3f neg %.3f\n",
           sum, punct, n_excl, n_quest, out->compound, out->pos, out->neu, out->neg);
    return s->deferred_rc;
}

/* ---- rounding --------------------------------------------------------------------------- */

double at_round(double x, int ndigits)
{
    static const double pow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                   1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                   1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    if (!isfinite(x))
        return x;
    if (ndigits < 0) {
        /* Rounding to tens, hundreds...: attune never does it, so plain scaling will do. */
        double p = pow(10.0, -ndigits);
        return nearbyint(x / p) * p;
    }
    /* A double of 2^52 or more is an integer: rounding to digits after the point keeps it. */
    if (fabs(x) >= 4503599627370496.0)
        return x;
    if (ndigits <= 22) {
        /* Fast path, exact: p + e is x * 10^ndigits exactly (fma gives the product's error), so
         * the integer nearest to it, ties to even, is r adjusted by e where p lies on a half. */
        double p = x * pow10[ndigits];
        if (fabs(p) < 4503599627370496.0) {
            double e = fma(x, pow10[ndigits], -p);
            double r = nearbyint(p);
            double d = p - r; /* exact: a multiple of p's ulp, at most 0.5 */
            /* On a half, e decides; e == 0 is a true tie, which nearbyint sent to even. Where
             * |d| < 0.5, |e| (half an ulp of p at most) cannot reach the half. */
            if (d == 0.5 && e > 0)
                r += 1;
            else if (d == -0.5 && e < 0)
                r -= 1;
            /* The division is correctly rounded, like strtod of the decimal digits. */
            return r / pow10[ndigits];
        }
    }
    /* Python formats the value correctly rounded (half to even on the exact binary value), as
     * glibc's printf does, then reads the decimal back. */
    char buf[512];
    int n = snprintf(buf, sizeof buf, "%.*f", ndigits, x);
    if (n < 0 || (size_t)n >= sizeof buf)
        return x;
    if (ndigits <= 22) {
        /* Reading back "ddd.ddd" is one correctly rounded division of two exact doubles when
         * the digits fit in 53 bits, so it equals strtod's result; this way LC_NUMERIC's
         * decimal point does not matter. */
        uint64_t m = 0;
        bool fits = true;
        for (const char *c = buf; *c && fits; c++) {
            if (*c >= '0' && *c <= '9') {
                fits = m < (UINT64_C(1) << 53) / 10;
                m = m * 10 + (uint64_t)(*c - '0');
            }
        }
        if (fits) {
            double r = (double)m / pow10[ndigits];
            return buf[0] == '-' ? -r : r;
        }
    }
    return strtod(buf, NULL);
}
