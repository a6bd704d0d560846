/*
 * regex.c: rewriting marker expressions into a form PCRE2 matches faster, with the same
 * matches.
 *
 * The lexicons list words as plain alternations, "(?:again|another|still|not|nothing|never)",
 * which PCRE2 tries one alternative after the other at every position it reaches. The rewrite
 * (at__regex_factor) gathers alternatives that begin with the same literal character into one
 * branch, "(?:a(?:gain|nother)|still|n(?:ot|othing|ever))", so that a position is turned away
 * after one comparison per distinct first character instead of one per word.
 *
 * Invariant: the rewritten expression matches exactly what the original matches, at the same
 * offsets, under the options markers.c compiles with (caseless, UTF). Alternatives are only
 * reordered relative to alternatives that cannot match at the same position (they begin with
 * different literal characters, compared caselessly), and never across an alternative that does
 * not begin with a plain literal (a class, an escape, a group, an empty one), so the first
 * alternative that matches at a position is the one that matched before. Expressions whose
 * meaning could depend on the order of their text (captures and back-references, inline option
 * changes, verbs, \Q..\E) are left as written, as are the insides of lookbehinds (whose
 * alternatives must keep their fixed lengths).
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* A slice of the expression being rewritten. */
typedef struct span {
    const char *s;
    size_t len;
} span;

static bool is_quantifier(char c)
{
    return c == '?' || c == '*' || c == '+' || c == '{';
}

/* The length of the UTF-8 character starting with byte c (1 for a stray continuation byte). */
static size_t utf8_len(unsigned char c)
{
    return c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
}

static size_t item_end(const char *s, size_t len, size_t i);

/* The end of the escape at s[i] == '\\', or 0 when it is not one the rewrite carries over: a
 * back-reference (\1, \g, \k), \Q..\E quoting, \K (which moves the start of the match). */
static size_t escape_end(const char *s, size_t len, size_t i)
{
    if (i + 1 >= len || strchr("123456789gkQEK", s[i + 1]))
        return 0;
    char c = s[i + 1];
    if ((c == 'p' || c == 'P' || c == 'x' || c == 'o' || c == 'N') && i + 2 < len &&
        s[i + 2] == '{') {
        const char *close = memchr(s + i + 2, '}', len - i - 2);
        return close ? (size_t)(close - s) + 1 : 0;
    }
    size_t end = i + 1 + utf8_len((unsigned char)c);
    return end <= len ? end : 0;
}

/* The end of the character class at s[i] == '['. */
static size_t class_end(const char *s, size_t len, size_t i)
{
    size_t j = i + 1;
    if (j < len && s[j] == '^')
        j++;
    if (j < len && s[j] == ']') /* a leading ] is literal */
        j++;
    while (j < len && s[j] != ']') {
        if (s[j] == '\\') {
            j = escape_end(s, len, j);
            if (!j)
                return 0;
        } else if (s[j] == '[' && j + 1 < len && s[j + 1] == ':') {
            const char *close = strstr(s + j + 2, ":]");
            if (!close || (size_t)(close - s) >= len)
                return 0;
            j = (size_t)(close - s) + 2;
        } else {
            j++;
        }
    }
    return j < len ? j + 1 : 0;
}

/* Whether the group opening at s[i] == '(' is one the rewrite may carry over: non-capturing,
 * atomic or a lookaround. Captures, named groups, option settings, conditionals, recursion and
 * verbs are not. */
static bool group_ok(const char *s, size_t len, size_t i)
{
    static const char *const ok[] = {"(?:", "(?=", "(?!", "(?<=", "(?<!", "(?>"};
    for (size_t k = 0; k < sizeof ok / sizeof *ok; k++) {
        size_t n = strlen(ok[k]);
        if (len - i >= n && memcmp(s + i, ok[k], n) == 0)
            return true;
    }
    return false;
}

/* The end of the group opening at s[i] == '(', or 0. */
static size_t group_end(const char *s, size_t len, size_t i)
{
    if (!group_ok(s, len, i))
        return 0;
    size_t j = i + 1;
    while (j < len && s[j] != ')') {
        j = item_end(s, len, j);
        if (!j)
            return 0;
    }
    return j < len ? j + 1 : 0;
}

/* The end of the item (one character, escape, class or group; '|' and quantifiers count as
 * items of one character) starting at s[i], or 0 when the expression is not one the rewrite
 * handles. */
static size_t item_end(const char *s, size_t len, size_t i)
{
    switch (s[i]) {
    case '\\':
        return escape_end(s, len, i);
    case '[':
        return class_end(s, len, i);
    case '(':
        return group_end(s, len, i);
    case ')':
        return 0; /* unbalanced */
    default: {
        size_t end = i + utf8_len((unsigned char)s[i]);
        return end <= len ? end : 0;
    }
    }
}

/* The key an alternative is gathered by: its first character (lower-cased when matching is
 * caseless) when that is a plain ASCII literal not under a quantifier; else -1 (it may match
 * where others do, so nothing moves across it). Two ASCII letters that differ other than by
 * case never match the same character, caseless or not. */
static int first_key(span a, bool caseless)
{
    if (a.len == 0)
        return -1;
    unsigned char c = (unsigned char)a.s[0];
    if (c >= 0x80 || strchr("\\^$.|?*+()[]{}", c))
        return -1;
    if (a.len > 1 && is_quantifier(a.s[1]))
        return -1;
    return caseless && c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

/* Splits body at its top-level '|' into *alts (new array, free with free()). Returns 0,
 * AT_ENOMEM, or AT_ESYNTAX when the body is not understood. */
static int split_alts(span body, span **alts, size_t *n_alts)
{
    size_t n = 1;
    for (size_t i = 0; i < body.len;) {
        if (body.s[i] == '|') {
            n++;
            i++;
            continue;
        }
        size_t end = item_end(body.s, body.len, i);
        if (!end)
            return AT_ESYNTAX;
        i = end;
    }
    span *a = malloc(n * sizeof *a);
    if (!a)
        return AT_ENOMEM;
    size_t k = 0, start = 0;
    for (size_t i = 0; i < body.len;) {
        if (body.s[i] == '|') {
            a[k++] = (span){body.s + start, i - start};
            start = ++i;
            continue;
        }
        i = item_end(body.s, body.len, i);
    }
    a[k] = (span){body.s + start, body.len - start};
    *alts = a;
    *n_alts = n;
    return 0;
}

/* Appends alternatives alts[0 .. n), gathered by first character, joined by '|'; *n_out gets
 * how many alternatives that makes. */
static int emit_alts(at__buf *out, const span *alts, size_t n, bool caseless, size_t *n_out)
{
    /* next[i] chains alternative i to the next one with its key in the same run (since the
     * last alternative without a key): those go out right after the first of the chain, in
     * their order, and are marked taken. */
    size_t first_of[128], last_of[128];
    size_t *next = malloc((n ? n : 1) * sizeof *next);
    bool *taken = calloc(n ? n : 1, sizeof *taken);
    span *rests = malloc((n ? n : 1) * sizeof *rests);
    int rc = AT_ENOMEM;
    if (!next || !taken || !rests)
        goto fail;
    for (size_t k = 0; k < 128; k++)
        first_of[k] = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        next[i] = SIZE_MAX;
        int key = first_key(alts[i], caseless);
        if (key < 0) {
            for (size_t k = 0; k < 128; k++)
                first_of[k] = SIZE_MAX;
            continue;
        }
        if (first_of[key] == SIZE_MAX) {
            first_of[key] = i;
        } else {
            next[last_of[key]] = i;
            taken[i] = true;
        }
        last_of[key] = i;
    }
    *n_out = 0;
    for (size_t i = 0; i < n; i++) {
        if (taken[i])
            continue;
        if (*n_out && (rc = at__buf_append(out, "|", 1)))
            goto fail;
        ++*n_out;
        if (next[i] == SIZE_MAX) {
            if ((rc = at__buf_append(out, alts[i].s, alts[i].len)))
                goto fail;
            continue;
        }
        /* Two or more share the first character: it once, then what follows in each. One
         * alternative after gathering needs no group of its own: "c(?:x)" is "cx". */
        size_t n_rests = 0, n_inner = 0;
        for (size_t j = i; j != SIZE_MAX; j = next[j])
            rests[n_rests++] = (span){alts[j].s + 1, alts[j].len - 1};
        at__buf inner = {0};
        rc = emit_alts(&inner, rests, n_rests, caseless, &n_inner);
        bool bare = n_inner == 1;
        if (!rc && (at__buf_append(out, alts[i].s, 1) ||
                    (!bare && at__buf_append(out, "(?:", 3)) ||
                    at__buf_append(out, inner.data ? inner.data : "", inner.len) ||
                    (!bare && at__buf_append(out, ")", 1))))
            rc = AT_ENOMEM;
        at__buf_fini(&inner);
        if (rc)
            goto fail;
    }
    rc = 0;
fail:
    free(rests);
    free(taken);
    free(next);
    return rc;
}

/* Appends expr (a sequence of items, possibly with top-level alternatives) rewritten: each
 * group's inside first, then its alternatives gathered. */
static int rewrite(at__buf *out, span expr, bool caseless)
{
    at__buf seq = {0}; /* expr with its groups rewritten */
    int rc = 0;
    for (size_t i = 0; i < expr.len && !rc;) {
        size_t end = expr.s[i] == '|' ? i + 1 : item_end(expr.s, expr.len, i);
        if (!end) {
            rc = AT_ESYNTAX;
            break;
        }
        /* A group (item_end checked its kind). Inside a lookbehind each alternative must keep
         * a fixed length: left alone. The others, "(?:", "(?=", "(?!", "(?>", are rewritten. */
        if (expr.s[i] == '(' && expr.s[i + 2] != '<') {
            rc = at__buf_append(&seq, expr.s + i, 3);
            if (!rc)
                rc = rewrite(&seq, (span){expr.s + i + 3, end - 1 - (i + 3)}, caseless);
            if (!rc)
                rc = at__buf_append(&seq, ")", 1);
        } else {
            rc = at__buf_append(&seq, expr.s + i, end - i);
        }
        i = end;
    }
    span *alts = NULL;
    size_t n_alts = 0, n_out = 0;
    if (!rc)
        rc = split_alts((span){seq.data ? seq.data : "", seq.len}, &alts, &n_alts);
    if (!rc)
        rc = emit_alts(out, alts, n_alts, caseless, &n_out);
    free(alts);
    at__buf_fini(&seq);
    return rc;
}

int at__regex_factor(const char *src, bool caseless, char **out)
{
    *out = NULL;
    at__buf b = {0};
    int rc = rewrite(&b, (span){src, strlen(src)}, caseless);
    if (rc == AT_ESYNTAX || (!rc && b.data && strcmp(b.data, src) == 0)) {
        at__buf_fini(&b);
        return 0; /* left as written */
    }
    if (rc) {
        at__buf_fini(&b);
        return rc;
    }
    *out = b.data; /* NULL for an empty expression, which rewrites to itself */
    return 0;
}
