/*
 * redact.c: removes secrets from a text before it is stored. Two mechanisms:
 *
 *  - payment cards, found by a scanner rather than a regular expression because people write
 *    them in every shape: grouped, spaced, dashed, split across words, or spoken ("four five
 *    three two ..." from speech-to-text). A run of digit tokens (digit groups and digit words,
 *    joined by spaces, dashes, dots or commas) is redacted whole when any 13 to 19 consecutive
 *    digits in it pass the Luhn check, so no Luhn-valid card number survives. Digit groups
 *    count even when glued to letters ("card4111..."), and runs of any length are checked;
 *  - the patterns of lexicons/redact.tsv (e-mail, phone, SSN, IBAN with its mod-97 check, CVV
 *    and expiry phrases), each replaced by its placeholder.
 *
 * Invariants: the redactor is part of the immutable model; per-call buffers live in the scratch
 * (at__rscratch). Redaction never changes scores: callers score the text as received.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

enum check { CHECK_NONE, CHECK_LUHN, CHECK_IBAN };

/* What a text must contain for a pattern to be worth running: most texts hold no digit and no
 * '@', and then only the card scanner (spoken digits) has anything to do; a text with a price
 * or a date has too few digits for a phone number (min_digits). */
enum requires { REQUIRES_ANY, REQUIRES_DIGIT, REQUIRES_AT };

typedef struct rpattern {
    char *id;
    char *placeholder;
    enum check check;
    enum requires requires;
    unsigned min_digits; /* REQUIRES_DIGIT: every match holds at least this many digits */
    pcre2_code *code;
} rpattern;

struct at__redactor {
    rpattern *patterns;
    size_t n_patterns;
    pcre2_match_context *mctx;
};

typedef struct span {
    size_t start, end;
    const char *placeholder;
} span;

struct at__rscratch {
    pcre2_match_data *md;
    span *spans;
    size_t n_spans, cap_spans;
    at__buf out;
};

/* The digits of a run as they are read: the last 19 are kept, and is_card is set as soon as a
 * window of 13 to 19 of them that ends at a new digit passes the Luhn check. */
typedef struct digit_run {
    char last[19];
    size_t n; /* digits read so far */
    bool is_card;
} digit_run;


/* ---- loading --------------------------------------------------------------------------- */

void at__redactor_free(at__redactor *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_patterns; i++) {
        free(r->patterns[i].id);
        free(r->patterns[i].placeholder);
        pcre2_code_free(r->patterns[i].code);
    }
    free(r->patterns);
    pcre2_match_context_free(r->mctx);
    free(r);
}

int at__redactor_new(const char *dir, at__redactor **out, char *err, size_t err_len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/redact.tsv", dir);
    char *data = NULL;
    size_t len;
    int rc = at__read_file(path, &data, &len, err, err_len);
    if (rc)
        return rc;
    at__redactor *r = calloc(1, sizeof *r);
    if (!r) {
        free(data);
        return AT_ENOMEM;
    }
    r->mctx = pcre2_match_context_create(NULL);
    if (!r->mctx) {
        rc = AT_ENOMEM;
        goto fail;
    }
    pcre2_set_match_limit(r->mctx, 100000);
    pcre2_set_depth_limit(r->mctx, 1000);
    int line_no = 0;
    for (char *line = data, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        line_no++;
        size_t n = strlen(line);
        if (n && line[n - 1] == '\r')
            line[--n] = '\0';
        if (!n || line[0] == '#')
            continue;
        char *f[5];
        int nf = 0;
        for (char *p = line; nf < 5; nf++) {
            f[nf] = p;
            char *tab = nf < 4 ? strchr(p, '\t') : NULL;
            if (!tab) {
                nf++;
                break;
            }
            *tab = '\0';
            p = tab + 1;
        }
        if (nf != 5) {
            at__errf(err, err_len, "%s:%d: expected 5 tab-separated fields: id, placeholder, "
                     "check, requires, regex", path, line_no);
            rc = AT_ESYNTAX;
            goto fail;
        }
        enum requires requires;
        unsigned min_digits = 0;
        char *end = NULL;
        if (strcmp(f[3], "any") == 0) {
            requires = REQUIRES_ANY;
        } else if (strcmp(f[3], "digit") == 0) {
            requires = REQUIRES_DIGIT;
            min_digits = 1;
        } else if (strncmp(f[3], "digits:", 7) == 0 && f[3][7] >= '1' && f[3][7] <= '9' &&
                   (min_digits = (unsigned)strtoul(f[3] + 7, &end, 10)) <= 64 && !*end) {
            requires = REQUIRES_DIGIT;
        } else if (strcmp(f[3], "@") == 0) {
            requires = REQUIRES_AT;
        } else {
            at__errf(err, err_len, "%s:%d: unknown requirement \"%s\" (any, digit, digits:N "
                     "with N from 1 to 64, or @)", path, line_no, f[3]);
            rc = AT_ESYNTAX;
            goto fail;
        }
        enum check check;
        if (strcmp(f[2], "none") == 0)
            check = CHECK_NONE;
        else if (strcmp(f[2], "luhn") == 0)
            check = CHECK_LUHN;
        else if (strcmp(f[2], "iban") == 0)
            check = CHECK_IBAN;
        else {
            at__errf(err, err_len, "%s:%d: unknown check \"%s\" (none, luhn or iban)", path,
                     line_no, f[2]);
            rc = AT_ESYNTAX;
            goto fail;
        }
        int ecode;
        PCRE2_SIZE eoff;
        pcre2_code *code = pcre2_compile((PCRE2_SPTR)f[4], PCRE2_ZERO_TERMINATED,
                                         PCRE2_CASELESS | PCRE2_UTF | PCRE2_MATCH_INVALID_UTF,
                                         &ecode, &eoff, NULL);
        if (!code) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(ecode, msg, sizeof msg);
            at__errf(err, err_len, "%s:%d: pattern %s does not compile at offset %zu: %s", path,
                     line_no, f[0], (size_t)eoff, (char *)msg);
            rc = AT_ESYNTAX;
            goto fail;
        }
        pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
        rpattern *np = realloc(r->patterns, (r->n_patterns + 1) * sizeof *np);
        if (!np) {
            pcre2_code_free(code);
            rc = AT_ENOMEM;
            goto fail;
        }
        r->patterns = np;
        rpattern *p = &r->patterns[r->n_patterns++];
        p->code = code;
        p->check = check;
        p->requires = requires;
        p->min_digits = min_digits;
        p->id = strdup(f[0]);
        p->placeholder = strdup(f[1]);
        if (!p->id || !p->placeholder) {
            rc = AT_ENOMEM;
            goto fail;
        }
    }
    free(data);
    *out = r;
    return 0;
fail:
    free(data);
    at__redactor_free(r);
    return rc;
}

int at__rscratch_new(at__rscratch **out)
{
    at__rscratch *s = calloc(1, sizeof *s);
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

void at__rscratch_free(at__rscratch *s)
{
    if (!s)
        return;
    pcre2_match_data_free(s->md);
    free(s->spans);
    at__buf_fini(&s->out);
    free(s);
}

/* ---- checks ---------------------------------------------------------------------------- */

/* Byte classes for the card scanner, ASCII whatever the locale: a table lookup instead of a
 * call of the <ctype.h> functions for every byte of every text. */
enum { B_DIGIT = 1, B_ALPHA = 2, B_LEAD = 4 /* e f n o s t z: may begin a digit word */ };
#define L(c) [c] = B_ALPHA, [(c) - 32] = B_ALPHA
#define LL(c) [c] = B_ALPHA | B_LEAD, [(c) - 32] = B_ALPHA | B_LEAD
static const unsigned char byte_class[256] = {
    ['0'] = B_DIGIT, ['1'] = B_DIGIT, ['2'] = B_DIGIT, ['3'] = B_DIGIT, ['4'] = B_DIGIT,
    ['5'] = B_DIGIT, ['6'] = B_DIGIT, ['7'] = B_DIGIT, ['8'] = B_DIGIT, ['9'] = B_DIGIT,
    L('a'),  L('b'), L('c'), L('d'), LL('e'), LL('f'), L('g'), L('h'),  L('i'),
    L('j'),  L('k'), L('l'), L('m'), LL('n'), LL('o'), L('p'), L('q'),  L('r'),
    LL('s'), LL('t'), L('u'), L('v'), L('w'),  L('x'),  L('y'), LL('z'),
};
#undef L
#undef LL

static inline bool is_digit(unsigned char c)
{
    return byte_class[c] & B_DIGIT;
}

static inline bool is_alpha(unsigned char c)
{
    return byte_class[c] & B_ALPHA;
}

static inline bool is_alnum(unsigned char c)
{
    return byte_class[c] & (B_DIGIT | B_ALPHA);
}

static bool luhn(const char *d, size_t n)
{
    int sum = 0;
    for (size_t i = 0; i < n; i++) {
        int v = d[n - 1 - i] - '0';
        if (i % 2) {
            v *= 2;
            if (v > 9)
                v -= 9;
        }
        sum += v;
    }
    return sum % 10 == 0;
}

static void run_push(digit_run *r, char digit)
{
    size_t kept = r->n < sizeof r->last ? r->n : sizeof r->last;
    if (kept == sizeof r->last) {
        memmove(r->last, r->last + 1, kept - 1);
        kept--;
    }
    r->last[kept++] = digit;
    r->n++;
    for (size_t len = 13; len <= kept && !r->is_card; len++)
        r->is_card = luhn(r->last + kept - len, len);
}

static bool iban_ok(const char *s, size_t len)
{
    char c[64];
    size_t n = 0;
    for (size_t i = 0; i < len && n < sizeof c; i++)
        if (isalnum((unsigned char)s[i]))
            c[n++] = (char)toupper((unsigned char)s[i]);
    if (n < 15 || n > 34)
        return false;
    /* Move the first four characters to the end; letters count as 10..35; mod 97 == 1. */
    int rem = 0;
    for (size_t k = 0; k < n; k++) {
        char ch = c[(k + 4) % n];
        if (isdigit((unsigned char)ch))
            rem = (rem * 10 + (ch - '0')) % 97;
        else
            rem = (rem * 100 + (ch - 'A' + 10)) % 97;
    }
    return rem == 1;
}

/* ---- scanning -------------------------------------------------------------------------- */

static int add_span(at__rscratch *s, size_t start, size_t end, const char *placeholder)
{
    if (s->n_spans == s->cap_spans) {
        size_t n = s->cap_spans ? s->cap_spans * 2 : 16;
        span *p = realloc(s->spans, n * sizeof *p);
        if (!p)
            return AT_ENOMEM;
        s->spans = p;
        s->cap_spans = n;
    }
    s->spans[s->n_spans++] = (span){start, end, placeholder};
    return 0;
}

/* A word of at most 8 ASCII letters as a number, lower-cased, its first letter lowest. */
#define PACK(a, b, c, d, e)                                                                  \
    ((uint64_t)(a) | (uint64_t)(b) << 8 | (uint64_t)(c) << 16 | (uint64_t)(d) << 24 |       \
     (uint64_t)(e) << 32)

static uint64_t pack_word(const char *w, size_t wl)
{
    uint64_t x = 0;
    for (size_t k = 0; k < wl; k++)
        x |= (uint64_t)((unsigned char)w[k] | 0x20) << (8 * k);
    return x;
}

/* The digit that the word w (1 to 5 ASCII letters, any case) names: a digit word of
 * zero .. nine, "oh" or "o" (zero); -1 for any other word. Comparing packed words, and only
 * with the digit words of w's length, costs a fraction of a strncasecmp with each digit word,
 * which was most of the redaction's time. */
static int digit_word(const char *w, size_t wl)
{
    static const uint64_t packed[12] = {
        PACK('o', 0, 0, 0, 0),         PACK('o', 'h', 0, 0, 0),       PACK('o', 'n', 'e', 0, 0),
        PACK('t', 'w', 'o', 0, 0),     PACK('s', 'i', 'x', 0, 0),     PACK('z', 'e', 'r', 'o', 0),
        PACK('f', 'o', 'u', 'r', 0),   PACK('f', 'i', 'v', 'e', 0),   PACK('n', 'i', 'n', 'e', 0),
        PACK('t', 'h', 'r', 'e', 'e'), PACK('s', 'e', 'v', 'e', 'n'), PACK('e', 'i', 'g', 'h', 't')};
    static const int8_t digits[12] = {0, 0, 1, 2, 6, 0, 4, 5, 9, 3, 7, 8};
    static const uint8_t first[7] = {0, 0, 1, 2, 5, 9, 12}; /* packed[first[n] .. first[n + 1]) */
    if (wl < 1 || wl > 5)
        return -1;
    uint64_t x = pack_word(w, wl);
    for (int k = first[wl]; k < first[wl + 1]; k++)
        if (x == packed[k])
            return digits[k];
    return -1;
}

/* Reads the token at text[i): a digit group (its digits are pushed) or a digit word (one
 * digit, "oh" and "o" read as zero), which must be a whole word. Returns the token's end, or i
 * when it is neither. */
static size_t digit_token(const char *text, size_t len, size_t i, digit_run *r)
{
    size_t j = i;
    if (is_digit((unsigned char)text[i])) {
        while (j < len && is_digit((unsigned char)text[j]))
            run_push(r, text[j++]);
        return j;
    }
    if (i > 0 && is_alnum((unsigned char)text[i - 1]))
        return i;
    while (j < len && is_alpha((unsigned char)text[j]))
        j++;
    size_t wl = j - i;
    if (j < len && is_digit((unsigned char)text[j]))
        return i;
    if (wl > 5) /* longer than any digit word */
        return i;
    int digit = digit_word(text + i, wl);
    if (digit < 0)
        return i;
    run_push(r, (char)('0' + digit));
    return j;
}

/* The number of ASCII digits in text, eight bytes a step. */
static unsigned count_digits(const char *text, size_t len)
{
    const uint64_t ones = UINT64_C(0x0101010101010101), highs = ones * 0x80;
    unsigned n = 0;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t x;
        memcpy(&x, text + i, 8);
        uint64_t low7 = x & ~highs; /* bytes >= 0x80 are excluded by ~x below */
        uint64_t digit = (low7 + (0x80 - '0') * ones) & ~(low7 + (0x7f - '9') * ones) & ~x & highs;
        /* One per digit byte, summed into the top byte by the multiply (at most 8): a popcount
         * instruction is not in the baseline x86-64 the build targets. */
        n += (unsigned)(((digit >> 7) * ones) >> 56);
    }
    for (; i < len; i++)
        n += (unsigned char)(text[i] - '0') <= 9;
    return n;
}

static int scan_cards(at__rscratch *s, const char *text, size_t len)
{
    size_t i = 0;
    while (i < len) {
        /* A run starts at a digit, or at a digit word that is a word of its own: most bytes
         * are skipped without reading a token (every digit word and "oh" begins with one of
         * e, f, n, o, s, t, z). */
        unsigned c = byte_class[(unsigned char)text[i]];
        if (!c) {
            i++;
            continue;
        }
        if (c & B_ALPHA) {
            /* A word: read once, and passed over unless it is a digit word of its own (not
             * glued to a letter or digit on either side), which digit_token reads again. */
            size_t j = i + 1;
            while (j < len && is_alpha((unsigned char)text[j]))
                j++;
            if (!(c & B_LEAD) || j - i > 5 || (i > 0 && is_alnum((unsigned char)text[i - 1])) ||
                (j < len && is_digit((unsigned char)text[j])) || digit_word(text + i, j - i) < 0) {
                i = j;
                continue;
            }
        }
        digit_run r = {.n = 0};
        size_t end = digit_token(text, len, i, &r); /* a digit group or the digit word above */
        size_t start = i, run_end = end;
        /* Extend over separators and further digit tokens. */
        for (;;) {
            size_t j = run_end;
            while (j < len && (text[j] == ' ' || text[j] == '-' || text[j] == '.' ||
                               text[j] == ',' || text[j] == '/' || text[j] == '\t'))
                j++;
            if (j == run_end || j >= len)
                break;
            /* Digits glued to letters still count ("4111 1111 1111 1111thanks"). */
            digit_run next = r;
            size_t e = digit_token(text, len, j, &next);
            if (e == j)
                break;
            r = next;
            run_end = e;
        }
        if (r.is_card) {
            if (add_span(s, start, run_end, "[CARD]"))
                return AT_ENOMEM;
        }
        i = run_end > i ? run_end : i + 1;
    }
    return 0;
}

static int cmp_span(const void *a, const void *b)
{
    const span *x = a, *y = b;
    if (x->start != y->start)
        return x->start < y->start ? -1 : 1;
    return x->end > y->end ? -1 : x->end < y->end;
}

int at__redact(const at__redactor *r, at__rscratch *s, const char *text, size_t len,
               const char **out, size_t *out_len, unsigned *n_redactions)
{
    s->n_spans = 0;
    s->out.len = 0;
    int rc = scan_cards(s, text, len);
    if (rc)
        return rc;
    bool has_at = memchr(text, '@', len) != NULL;
    unsigned n_digits = count_digits(text, len);
    for (size_t pi = 0; pi < r->n_patterns; pi++) {
        const rpattern *p = &r->patterns[pi];
        if ((p->requires == REQUIRES_DIGIT && n_digits < p->min_digits) ||
            (p->requires == REQUIRES_AT && !has_at))
            continue;
        PCRE2_SIZE off = 0;
        while (off <= len) {
            int m = pcre2_match(p->code, (PCRE2_SPTR)text, len, off, 0, s->md, r->mctx);
            if (m < 0)
                break; /* no match, or a limit: the other patterns and the scanner still ran */
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(s->md);
            bool ok = true;
            if (p->check == CHECK_LUHN) {
                digit_run run = {.n = 0};
                for (size_t k = ov[0]; k < ov[1]; k++)
                    if (is_digit((unsigned char)text[k]))
                        run_push(&run, text[k]);
                ok = run.is_card;
            } else if (p->check == CHECK_IBAN) {
                ok = iban_ok(text + ov[0], ov[1] - ov[0]);
            }
            if (ok && ov[1] > ov[0] && add_span(s, ov[0], ov[1], p->placeholder))
                return AT_ENOMEM;
            off = ov[1] > ov[0] ? ov[1] : ov[0] + 1;
        }
    }
    if (s->n_spans > 1)
        qsort(s->spans, s->n_spans, sizeof *s->spans, cmp_span);
    size_t pos = 0;
    unsigned n = 0;
    if (at__buf_reserve(&s->out, len))
        return AT_ENOMEM;
    for (size_t i = 0; i < s->n_spans; i++) {
        const span *sp = &s->spans[i];
        if (sp->start < pos) {
            /* Inside or overlapping a span already replaced: its placeholder covers this one
             * too, or the part past it would be kept (half a card number). */
            if (sp->end > pos)
                pos = sp->end;
            continue;
        }
        if (at__buf_append(&s->out, text + pos, sp->start - pos) ||
            at__buf_append(&s->out, sp->placeholder, strlen(sp->placeholder)))
            return AT_ENOMEM;
        pos = sp->end;
        n++;
    }
    if (at__buf_append(&s->out, text + pos, len - pos))
        return AT_ENOMEM;
    *out = s->out.data;
    *out_len = s->out.len;
    if (n_redactions)
        *n_redactions = n;
    return 0;
}
