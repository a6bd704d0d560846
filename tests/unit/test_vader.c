/*
 * test_vader.c: unit tests of lib/vader.c. Every reference sentence of tests/fixtures/vader/
 * (scores of vaderSentiment 3.3.2) must score identically: neg/neu/pos to 3 decimals, compound
 * to 4. Focused cases then pin each rule and quirk on its own (expected values also from the
 * reference), plus loading errors, rounding, invalid UTF-8 and the trace.
 *
 * Lexicons come from $ATTUNE_LEXICONS (default "lexicons"), fixtures from $ATTUNE_FIXTURES
 * (default "tests/fixtures"); run from the repository root.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "internal.h"

static at__vader *vader;
static at__vscratch *scratch;

static const char *env_or(const char *name, const char *fallback)
{
    const char *v = getenv(name);
    return v && *v ? v : fallback;
}

static int setup(void **state)
{
    (void)state;
    char err[512] = "";
    uint64_t hash = 0;
    int rc = at__vader_new(env_or("ATTUNE_LEXICONS", "lexicons"), &hash, &vader, err, sizeof err);
    if (rc) {
        fprintf(stderr, "at__vader_new: %s (%s)\n", at_strerror(rc), err);
        return -1;
    }
    return at__vscratch_new(&scratch) ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    at__vscratch_free(scratch);
    at__vader_free(vader);
    return 0;
}

static at_sentiment score_n(const char *text, size_t len)
{
    at_sentiment s;
    assert_int_equal(at__vader_score(vader, scratch, text, len, &s, NULL), 0);
    return s;
}

static at_sentiment score(const char *text)
{
    return score_n(text, strlen(text));
}

static bool same(at_sentiment a, at_sentiment b)
{
    return a.neg == b.neg && a.neu == b.neu && a.pos == b.pos && a.compound == b.compound;
}

/* Expected values are the reference's, as printed by Python (so they parse to the same doubles
 * that at_round returns). */
static void expect(const char *text, double neg, double neu, double pos, double compound)
{
    at_sentiment want = {neg, neu, pos, compound};
    at_sentiment got = score(text);
    if (!same(got, want)) {
        print_error("\"%s\": got neg %.3f neu %.3f pos %.3f compound %.4f, want neg %.3f neu %.3f "
                    "pos %.3f compound %.4f\n",
                    text, got.neg, got.neu, got.pos, got.compound, neg, neu, pos, compound);
        fail();
    }
}

/* ---- the reference sentences ------------------------------------------------------------ */

static void check_fixture(const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/vader/%s", env_or("ATTUNE_FIXTURES", "tests/fixtures"), name);
    FILE *f = fopen(path, "r");
    if (!f) {
        print_error("cannot open %s\n", path);
        fail();
    }
    char *line = NULL;
    size_t cap = 0, n_lines = 0, n_bad = 0;
    while (getline(&line, &cap, f) > 0) {
        json_error_t je;
        json_t *j = json_loads(line, 0, &je);
        if (!j) {
            print_error("%s:%zu: %s\n", path, n_lines + 1, je.text);
            fail();
        }
        n_lines++;
        json_t *text = json_object_get(j, "text");
        assert_non_null(text);
        at_sentiment want = {
            json_number_value(json_object_get(j, "neg")),
            json_number_value(json_object_get(j, "neu")),
            json_number_value(json_object_get(j, "pos")),
            json_number_value(json_object_get(j, "compound")),
        };
        at_sentiment got = score_n(json_string_value(text), json_string_length(text));
        if (!same(got, want) && ++n_bad <= 5)
            print_message("%s:%zu: \"%s\"\n  got  neg %.3f neu %.3f pos %.3f compound %.4f\n"
                          "  want neg %.3f neu %.3f pos %.3f compound %.4f\n",
                          path, n_lines, json_string_value(text), got.neg, got.neu, got.pos,
                          got.compound, want.neg, want.neu, want.pos, want.compound);
        json_decref(j);
    }
    free(line);
    fclose(f);
    if (n_bad)
        print_error("%s: %zu of %zu sentences differ\n", path, n_bad, n_lines);
    assert_true(n_lines > 0);
    assert_int_equal(n_bad, 0);
}

static void test_reference_rules(void **state)
{
    (void)state;
    check_fixture("rules.jsonl");
}

static void test_reference_tweets(void **state)
{
    (void)state;
    check_fixture("tweets.jsonl");
}

/* ---- one rule at a time ----------------------------------------------------------------- */

static void test_but(void **state)
{
    (void)state;
    expect("The food is good but the service is bad", 0.347, 0.511, 0.142, -0.5859);
    expect("good but good good", 0.0, 0.094, 0.906, 0.8641);
    /* The reference scales the FIRST position holding an equal value: "best" (3.2) is halved
     * to 1.6 first, then "accept" (1.6) finds that position and halves it again, leaving
     * "accept" itself unscaled (a plain x0.5/x1.5 would give compound 0.7184). */
    expect("best but accept", 0.0, 0.185, 0.815, 0.5267);
    expect("best but accept ??", 0.0, 0.296, 0.704, 0.5803);
}

static void test_caps(void **state)
{
    (void)state;
    expect("The service was GOOD", 0.0, 0.452, 0.548, 0.5622);
    /* All caps: no differential, so no emphasis. */
    expect("THE SERVICE WAS GOOD", 0.0, 0.508, 0.492, 0.4404);
    /* A caps booster adds the caps emphasis to its boost. */
    expect("The service was VERY good", 0.0, 0.505, 0.495, 0.6028);
    /* str.isupper() by Unicode properties: "ÉTÉ" is upper (no differential), "été" and the
     * title-case "ǅ" are not, "Ⅰ" (a letter number) and "ΣΟΦΙΑ" are. */
    expect("\xc3\x89T\xc3\x89 GOOD", 0.0, 0.256, 0.744, 0.4404);
    expect("\xc3\xa9t\xc3\xa9 GOOD", 0.0, 0.216, 0.784, 0.5622);
    expect("\xc7\x85 GOOD", 0.0, 0.216, 0.784, 0.5622);
    expect("\xe2\x85\xa0 GOOD", 0.0, 0.256, 0.744, 0.4404);
    expect("\xce\xa3\xce\x9f\xce\xa6\xce\x99\xce\x91 GOOD", 0.0, 0.256, 0.744, 0.4404);
}

static void test_no(void **state)
{
    (void)state;
    /* "no" before a lexicon word scores 0 and negates that word. */
    expect("no problem", 0.0, 0.307, 0.693, 0.3089);
    expect("no good", 0.706, 0.294, 0.0, -0.3412);
    expect("no", 1.0, 0.0, 0.0, -0.296);
    expect("There is no way this is good", 0.218, 0.495, 0.287, 0.1779);
    expect("no happy or sad", 0.397, 0.265, 0.338, -0.1139);
}

static void test_negation(void **state)
{
    (void)state;
    expect("I don't like it", 0.413, 0.587, 0.0, -0.2755);
    expect("I ain't happy", 0.6, 0.4, 0.0, -0.4585);
    expect("not bad", 0.0, 0.26, 0.74, 0.431);
    expect("they are not too bad", 0.0, 0.584, 0.416, 0.431);
    expect("never so good", 0.0, 0.348, 0.652, 0.5777);
    expect("without doubt good", 0.0, 0.166, 0.834, 0.6136);
}

static void test_idioms(void **state)
{
    (void)state;
    expect("The food was the bomb", 0.0, 0.5, 0.5, 0.6124);
    expect("yeah right, that was great", 0.0, 0.323, 0.677, 0.743);
    expect("It was the kiss of death", 0.556, 0.444, 0.0, -0.6124);
    expect("That cake is to die for", 0.438, 0.562, 0.0, -0.5994);
    expect("sort of good", 0.0, 0.408, 0.592, 0.4404);
}

static void test_least(void **state)
{
    (void)state;
    expect("least good", 0.706, 0.294, 0.0, -0.3412);
    expect("the least good movie", 0.445, 0.555, 0.0, -0.3412);
    expect("at least good", 0.0, 0.408, 0.592, 0.4404);
    expect("very least good", 0.0, 0.386, 0.614, 0.4902);
}

static void test_emoji(void **state)
{
    (void)state;
    expect("\xf0\x9f\x98\x80", 0.0, 0.286, 0.714, 0.3612);
    /* The description is glued to what follows: "grinning facehappy". */
    expect("I am \xf0\x9f\x98\x80happy", 0.0, 0.545, 0.455, 0.3612);
    expect("\xf0\x9f\x98\x80\xf0\x9f\x98\x80 ok", 0.0, 0.217, 0.783, 0.7351);
    /* Emoticons survive the punctuation rule. */
    expect(":) :-) :D", 0.0, 0.0, 1.0, 0.8531);
}

static void test_kind_of(void **state)
{
    (void)state;
    expect("it was kind of good", 0.0, 0.605, 0.395, 0.3832);
    expect("it was kind good", 0.0, 0.241, 0.759, 0.743);
    /* KELVIN SIGN lower-cases to 'k', as in Python. */
    expect("so \xe2\x84\xaaind", 0.0, 0.213, 0.787, 0.5709);
}

static void test_punctuation(void **state)
{
    (void)state;
    expect("good?", 0.0, 0.0, 1.0, 0.4404);
    expect("good!", 0.0, 0.0, 1.0, 0.4926);
    expect("good!!!!!!", 0.0, 0.0, 1.0, 0.6209);
    expect("good??", 0.0, 0.0, 1.0, 0.504);
    expect("good????", 0.0, 0.0, 1.0, 0.594);
}

static void test_empty(void **state)
{
    (void)state;
    at_sentiment zero = {0, 0, 0, 0};
    assert_true(same(score(""), zero));
    assert_true(same(score_n(NULL, 0), zero));
    assert_true(same(score("   \t\n "), zero));
    /* NO-BREAK SPACE, IDEOGRAPHIC SPACE, EM SPACE are whitespace too. */
    assert_true(same(score("\xc2\xa0\xe3\x80\x80\xe2\x80\x83"), zero));
}

static void test_invalid_utf8(void **state)
{
    (void)state;
    /* Each invalid byte counts as one uncased character, like U+FFFD. */
    at_sentiment a = score("\xff\xfe GOOD \xc3 day \xe2\x82");
    at_sentiment b = score("\xef\xbf\xbd\xef\xbf\xbd GOOD \xef\xbf\xbd day \xef\xbf\xbd\xef\xbf\xbd");
    assert_true(same(a, b));
    /* A truncated emoji is not an emoji. */
    score_n("\xf0\x9f\x98", 3);
}

static void test_valence(void **state)
{
    (void)state;
    double v = 0;
    assert_true(at__vader_valence(vader, "GOOD", 4, &v));
    assert_true(v == 1.9);
    assert_true(at__vader_valence(vader, "no", 2, &v));
    assert_true(v == -1.2);
    /* In the map as a booster or negation, but not in the lexicon. */
    assert_false(at__vader_valence(vader, "very", 4, &v));
    assert_false(at__vader_valence(vader, "not", 3, &v));
    assert_false(at__vader_valence(vader, "xyzzy", 5, &v));
    /* ":-Þ" is a key, but lower-casing the word can never give it back. */
    assert_false(at__vader_valence(vader, ":-\xc3\x9e", 4, &v));
}

static void test_trace(void **state)
{
    (void)state;
    at__buf trace = {0};
    at_sentiment s;
    const char *text = "The service was VERY good but not GREAT!";
    assert_int_equal(at__vader_score(vader, scratch, text, strlen(text), &s, &trace), 0);
    assert_true(same(s, score(text)));
    assert_non_null(trace.data);
    assert_non_null(strstr(trace.data, "token \"GREAT\" lexicon 3.1; caps +0.733 -> 3.833"));
    assert_non_null(strstr(trace.data, "booster \"very\" +1.026"));
    assert_non_null(strstr(trace.data, "negation \"not\""));
    assert_non_null(strstr(trace.data, "\"but\" at token 6"));
    assert_non_null(strstr(trace.data, "punctuation emphasis 0.292 (! x 1, ? x 0)"));
    assert_non_null(strstr(trace.data, "compound -0.6229"));
    at__buf_fini(&trace);
}

/* ---- rounding --------------------------------------------------------------------------- */

static double round_slow(double x, int ndigits)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%.*f", ndigits, x);
    return strtod(buf, NULL);
}

static void test_round(void **state)
{
    (void)state;
    assert_true(at_round(2.675, 2) == 2.67);  /* 2.67499999... in binary */
    assert_true(at_round(0.125, 2) == 0.12);  /* an exact tie goes to even */
    assert_true(at_round(0.375, 2) == 0.38);
    assert_true(at_round(0.0005, 3) == 0.001);
    assert_true(at_round(1.0005, 3) == 1.0);
    double z = at_round(-0.0004, 3);
    assert_true(z == 0.0 && signbit(z));
    /* The fast path must agree with formatting and reading back, ties included. */
    uint64_t r = 88172645463325252ULL;
    for (int i = 0; i < 200000; i++) {
        r ^= r << 13;
        r ^= r >> 7;
        r ^= r << 17;
        int nd = 3 + (int)(r & 1);
        double x = (double)(r >> 11) / 9007199254740992.0 * 2.0 - 1.0;
        if (i % 4 == 0) /* exact halves and their neighbours */
            x = ((double)(int64_t)(r % 20001) - 10000.0 + 0.5) / (nd == 3 ? 1000.0 : 10000.0);
        if (i % 4 == 1)
            x = nextafter(x, (r & 2) ? 2.0 : -2.0);
        if (at_round(x, nd) != round_slow(x, nd)) {
            print_error("at_round(%.17g, %d) = %.17g, want %.17g\n", x, nd, at_round(x, nd),
                        round_slow(x, nd));
            fail();
        }
    }
}

/* ---- loading ---------------------------------------------------------------------------- */

struct tmp_lex {
    char root[64];
    char dir[96];
};

static void write_file(const struct tmp_lex *t, const char *name, const char *content)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", t->dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
}

/* A lexicon directory with small files; lexicon is the content of vader_lexicon.txt. */
static void tmp_lex_make(struct tmp_lex *t, const char *lexicon)
{
    strcpy(t->root, "/tmp/attune-test-vader-XXXXXX");
    assert_non_null(mkdtemp(t->root));
    snprintf(t->dir, sizeof t->dir, "%s/vader", t->root);
    assert_int_equal(mkdir(t->dir, 0700), 0);
    write_file(t, "vader_lexicon.txt", lexicon);
    write_file(t, "emoji_utf8_lexicon.txt", "\xf0\x9f\x98\x80\tgrinning face\n");
    write_file(t, "boosters.tsv", "very\t0.293\nkind of\t-0.293\n");
    write_file(t, "negations.txt", "not\n");
    write_file(t, "special_cases.tsv", "the bomb\t3\n");
}

static void tmp_lex_remove(struct tmp_lex *t)
{
    static const char *const names[] = {"vader_lexicon.txt", "emoji_utf8_lexicon.txt",
                                        "boosters.tsv", "negations.txt", "special_cases.tsv"};
    char path[256];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", t->dir, names[i]);
        unlink(path);
    }
    rmdir(t->dir);
    rmdir(t->root);
}

static void expect_load_error(const char *lexicon, int want_rc, const char *want_err)
{
    struct tmp_lex t;
    tmp_lex_make(&t, lexicon);
    char err[512] = "";
    uint64_t hash = 0;
    at__vader *v = NULL;
    int rc = at__vader_new(t.root, &hash, &v, err, sizeof err);
    tmp_lex_remove(&t);
    assert_null(v);
    assert_int_equal(rc, want_rc);
    if (!strstr(err, want_err)) {
        print_error("error \"%s\" lacks \"%s\"\n", err, want_err);
        fail();
    }
}

static void test_load_errors(void **state)
{
    (void)state;
    expect_load_error("good\t1.9\nbroken line\n", AT_ESYNTAX, "vader_lexicon.txt:2: ");
    expect_load_error("good\tabc\n", AT_ESYNTAX, "vader_lexicon.txt:1: ");
    expect_load_error("good\t1.9\nbad\t\xff\n", AT_ESYNTAX, "vader_lexicon.txt:2: invalid UTF-8");

    char err[512] = "";
    uint64_t hash = 0;
    at__vader *v = NULL;
    assert_int_equal(at__vader_new("/nonexistent/attune", &hash, &v, err, sizeof err), AT_EIO);
    assert_non_null(strstr(err, "vader_lexicon.txt"));
}

static void test_load_small(void **state)
{
    (void)state;
    struct tmp_lex t;
    /* CRLF, blank lines, extra columns, a duplicate (the last wins) and an upper-case key. */
    tmp_lex_make(&t, "good\t1.0\t0.5\t[1]\r\n\ngood\t1.9\n:D\t2.0\nbomb\t-2.2\n");
    char err[512] = "";
    uint64_t h1 = 0, h2 = 0;
    at__vader *v1 = NULL, *v2 = NULL;
    assert_int_equal(at__vader_new(t.root, &h1, &v1, err, sizeof err), 0);
    assert_int_equal(at__vader_new(t.root, &h2, &v2, err, sizeof err), 0);
    tmp_lex_remove(&t);
    assert_true(h1 != 0 && h1 == h2);
    double val = 0;
    assert_true(at__vader_valence(v1, "good", 4, &val));
    assert_true(val == 1.9);
    assert_false(at__vader_valence(v1, ":d", 2, &val));
    at_sentiment s, want = {0.0, 0.5, 0.5, 0.6124};
    assert_int_equal(at__vader_score(v1, scratch, "The food was the bomb", 21, &s, NULL), 0);
    assert_true(same(s, want));
    at__vader_free(v1);
    at__vader_free(v2);
}

/* A scratch remembers the lookups of short words (word_cache): used with another model, it
 * must answer from that model, also when the new model sits where a freed one was. */
static void test_scratch_follows_the_model(void **state)
{
    (void)state;
    const char *lexicons[] = {"good\t1.9\n", "good\t-1.9\n", "good\t3.1\n"};
    at__vader *v[3] = {NULL, NULL, NULL};
    char err[512] = "";
    for (int i = 0; i < 3; i++) {
        struct tmp_lex t;
        tmp_lex_make(&t, lexicons[i]);
        uint64_t hash = 0;
        assert_int_equal(at__vader_new(t.root, &hash, &v[i], err, sizeof err), 0);
        tmp_lex_remove(&t);
    }
    at_sentiment s;
    double want[3];
    for (int i = 0; i < 3; i++) {
        /* Each model on a fresh scratch: the reference. */
        at__vscratch *fresh = NULL;
        assert_int_equal(at__vscratch_new(&fresh), 0);
        assert_int_equal(at__vader_score(v[i], fresh, "good", 4, &s, NULL), 0);
        want[i] = s.compound;
        at__vscratch_free(fresh);
    }
    assert_true(want[0] > 0 && want[1] < 0 && want[2] > want[0]);
    for (int round = 0; round < 2; round++)
        for (int i = 0; i < 2; i++) {
            assert_int_equal(at__vader_score(v[i], scratch, "good", 4, &s, NULL), 0);
            assert_true(s.compound == want[i]);
        }
    /* The third model is built where the first was, when the allocator reuses its block. */
    at__vader_free(v[0]);
    struct tmp_lex t;
    tmp_lex_make(&t, lexicons[2]);
    uint64_t hash = 0;
    assert_int_equal(at__vader_new(t.root, &hash, &v[0], err, sizeof err), 0);
    tmp_lex_remove(&t);
    assert_int_equal(at__vader_score(v[0], scratch, "good", 4, &s, NULL), 0);
    assert_true(s.compound == want[2]);
    at__vader_free(v[0]);
    at__vader_free(v[1]);
    at__vader_free(v[2]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_rules),
        cmocka_unit_test(test_reference_tweets),
        cmocka_unit_test(test_but),
        cmocka_unit_test(test_caps),
        cmocka_unit_test(test_no),
        cmocka_unit_test(test_negation),
        cmocka_unit_test(test_idioms),
        cmocka_unit_test(test_least),
        cmocka_unit_test(test_emoji),
        cmocka_unit_test(test_kind_of),
        cmocka_unit_test(test_punctuation),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_valence),
        cmocka_unit_test(test_trace),
        cmocka_unit_test(test_round),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_load_small),
        cmocka_unit_test(test_scratch_follows_the_model),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
