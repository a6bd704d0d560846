/*
 * test_regex.c: the expression rewrite of lib/regex.c. What it writes for plain alternations,
 * what it leaves alone (and why), and, the point of it all, that the rewritten expression
 * matches exactly what the original matches: both are compiled with PCRE2 as markers.c compiles
 * them and run at every start offset of texts chosen to tell the orders of alternatives apart.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "internal.h"

#define LEN(a) (sizeof(a) / sizeof((a)[0]))

/* The rewrite of src, or src itself when it is left as written (in a buffer of the test's). */
static const char *factor(const char *src, bool caseless)
{
    static char buf[4096];
    char *out = NULL;
    assert_int_equal(at__regex_factor(src, caseless, &out), 0);
    snprintf(buf, sizeof buf, "%s", out ? out : src);
    if (out)
        assert_string_not_equal(out, src); /* NULL, not a copy, when nothing changes */
    free(out);
    return buf;
}

static void test_gathers_alternatives_by_first_character(void **state)
{
    (void)state;
    assert_string_equal(factor("(?:again|another|still|not|nothing|never)", true),
                        "(?:a(?:gain|nother)|still|n(?:ot(?:|hing)|ever))");
    /* The order within a first character is kept: "not" is still tried before "nothing". */
    assert_string_equal(factor("\\b(?:broken|broke|broke down)\\b", true),
                        "\\b(?:broke(?:n|| down))\\b");
    /* A single alternative left after gathering needs no group: "g(?:reat)" is "great". */
    assert_string_equal(factor("(?:great job|great stuff)", true), "(?:great (?:job|stuff))");
    /* Caseless, "I" and "i" begin alike; case-sensitive, they never match the same text. */
    assert_string_equal(factor("(?:it's|I)", true), "(?:i(?:t's|))");
    assert_string_equal(factor("(?:it's|I|in)", false), "(?:i(?:t's|n)|I)");
    /* Lookaheads and atomic groups are rewritten too, and the top level is a group. */
    assert_string_equal(factor("x(?! (?:it|you|i)\\b)", true), "x(?! (?:i(?:t|)|you)\\b)");
    assert_string_equal(factor("(?>ab|ac)", true), "(?>a(?:b|c))");
    assert_string_equal(factor("ab|ac", true), "a(?:b|c)");
    /* Groups nested in alternatives are rewritten first. */
    assert_string_equal(factor("(?:sort (?:this|that)|see)", true),
                        "(?:s(?:ort (?:th(?:is|at))|ee))");
}

static void test_nothing_moves_across_an_alternative_without_a_literal_start(void **state)
{
    (void)state;
    /* [a-z]x may match where "ab" or "ac" do: "ac" must not move before it. */
    assert_string_equal(factor("(?:ab|[a-z]x|ac)", true), "(?:ab|[a-z]x|ac)");
    assert_string_equal(factor("(?:ab|\\w+|ac|ad)", true), "(?:ab|\\w+|a(?:c|d))");
    assert_string_equal(factor("(?:ab||ac)", true), "(?:ab||ac)");          /* empty */
    assert_string_equal(factor("(?:a?b|ac|ad)", true), "(?:a?b|a(?:c|d))");  /* quantified */
    assert_string_equal(factor("(?:a{2}|ac|ad)", true), "(?:a{2}|a(?:c|d))");
    /* A non-ASCII first character (its case partners are not ASCII's) never moves. */
    assert_string_equal(factor("(?:’s|’d| is)", true), "(?:’s|’d| is)");
}

static void test_leaves_alone_what_could_change_meaning(void **state)
{
    (void)state;
    const char *as_written[] = {
        "(ab|ac)",               /* captures: their numbers follow the text */
        "(?<w>ab|ac)\\k<w>",     /* named capture and back-reference */
        "(?:ab|ac)\\1",          /* back-reference */
        "(?-i:ab|ac)",           /* option setting */
        "(?:ab|(?i)ac)",         /* inline option, reaching the later alternatives */
        "(*UTF)(?:ab|ac)",       /* verb */
        "\\Q(?:ab|ac)\\E",       /* quoting */
        "(?:ab|ac)\\K",          /* moves the start of the match */
        "(?<=ab|ac)x",           /* a lookbehind's alternatives keep fixed lengths */
        "(?:ab|ac",              /* not an expression at all */
        "(?:ab|ac))",
        "[ab|ac",
        "plain text",
        "",
    };
    for (size_t i = 0; i < LEN(as_written); i++) {
        char *out = (char *)1;
        assert_int_equal(at__regex_factor(as_written[i], true, &out), 0);
        if (out)
            fail_msg("%s was rewritten to %s", as_written[i], out);
    }
}

static pcre2_code *compile(const char *src, bool caseless)
{
    int ecode;
    PCRE2_SIZE eoff;
    pcre2_code *code = pcre2_compile((PCRE2_SPTR)src, PCRE2_ZERO_TERMINATED,
                                     (caseless ? PCRE2_CASELESS : 0) | PCRE2_UTF | PCRE2_UCP |
                                         PCRE2_MATCH_INVALID_UTF,
                                     &ecode, &eoff, NULL);
    if (!code)
        fail_msg("%s does not compile (error %d at %zu)", src, ecode, (size_t)eoff);
    return code;
}

/* Both expressions give the same result (no match, or the same span) at every start offset of
 * every text, anchored and not. */
static void assert_same_matches(const char *a_src, const char *b_src, bool caseless,
                                const char *const *texts, size_t n_texts)
{
    pcre2_code *a = compile(a_src, caseless), *b = compile(b_src, caseless);
    pcre2_match_data *ma = pcre2_match_data_create(1, NULL), *mb = pcre2_match_data_create(1, NULL);
    assert_non_null(ma);
    assert_non_null(mb);
    size_t n_matches = 0;
    for (size_t t = 0; t < n_texts; t++) {
        size_t len = strlen(texts[t]);
        for (size_t off = 0; off <= len; off++) {
            for (int anchored = 0; anchored < 2; anchored++) {
                uint32_t opt = anchored ? PCRE2_ANCHORED : 0;
                int ra = pcre2_match(a, (PCRE2_SPTR)texts[t], len, off, opt, ma, NULL);
                int rb = pcre2_match(b, (PCRE2_SPTR)texts[t], len, off, opt, mb, NULL);
                if (ra != rb)
                    fail_msg("%s and %s differ on \"%s\" at %zu: %d, %d", a_src, b_src, texts[t],
                             off, ra, rb);
                if (ra < 0)
                    continue;
                n_matches++;
                PCRE2_SIZE *oa = pcre2_get_ovector_pointer(ma), *ob = pcre2_get_ovector_pointer(mb);
                if (oa[0] != ob[0] || oa[1] != ob[1])
                    fail_msg("%s and %s match \"%s\" from %zu differently: %zu-%zu, %zu-%zu",
                             a_src, b_src, texts[t], off, (size_t)oa[0], (size_t)oa[1],
                             (size_t)ob[0], (size_t)ob[1]);
            }
        }
    }
    assert_true(n_matches > 0); /* the texts do exercise the expression */
    pcre2_match_data_free(ma);
    pcre2_match_data_free(mb);
    pcre2_code_free(a);
    pcre2_code_free(b);
}

static void test_rewritten_expressions_match_the_same(void **state)
{
    (void)state;
    static const char *const texts[] = {
        "broke down again, not nothing", "it is broken", "nothing not never",
        "I thought it's fine", "IT'S BROKE DOWN", "so it's not working, so I left",
        "so its gone", "sort this out or sort that", "great job great stuff great",
        "ſtill waiting", "KELVIN \xe2\x84\xaa", "café ok", "n't", "isn’t it", "broke",
        "cancelled canceled cancels", "crashes crashing crashed", "abc acme ac", "",
    };
    static const char *const exprs[] = {
        "\\b(?:again|another|yet another|still|not|nothing|never|no one|nobody|none)\\b",
        "\\b(?:broken|broke|broke down|blame)\\b",
        "\\b(?:so now|so it['’]?s|so I)\\b",
        "(?:it's|I|in|is)",
        "(?:not|nothing)",
        "(?:great|great job|great stuff)(?: (?:work|job|stuff))?",
        "\\b(?:sort (?:this|that|it|out)|see)\\b",
        "\\b(?:cancel(?:l?ed|s)|crashed|crash(?:es|ing))\\b",
        "(?:still|stuck|k|kelvin \\x{212a})",
        "n['’]t\\b(?! (?:it|you|they|we|he|she|i)\\b)",
        "(?>broke|broken)",
        "(?:ab|\\w+|ac)",
    };
    for (size_t i = 0; i < LEN(exprs); i++) {
        for (int caseless = 1; caseless >= 0; caseless--) {
            char *out = NULL;
            assert_int_equal(at__regex_factor(exprs[i], caseless, &out), 0);
            assert_same_matches(exprs[i], out ? out : exprs[i], caseless, texts, LEN(texts));
            free(out);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gathers_alternatives_by_first_character),
        cmocka_unit_test(test_nothing_moves_across_an_alternative_without_a_literal_start),
        cmocka_unit_test(test_leaves_alone_what_could_change_meaning),
        cmocka_unit_test(test_rewritten_expressions_match_the_same),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
