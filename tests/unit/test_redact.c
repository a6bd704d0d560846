/*
 * test_redact.c: at_redact. Card numbers are generated (Luhn-valid) and written every way people
 * write them in chat and speech-to-text; after redaction no Luhn-valid run of 13 to 19 digits
 * may remain, by an independent check that reads digits and spoken digits across separators.
 */
#include <ctype.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>

#include "attune.h"

static at_model *model;
static at_scratch *scratch;

static int setup(void **state)
{
    (void)state;
    const char *dir = getenv("ATTUNE_LEXICONS");
    char err[512];
    if (at_model_new(dir ? dir : "lexicons", &model, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    return at_scratch_new(&scratch);
}

static int teardown(void **state)
{
    (void)state;
    at_scratch_free(scratch);
    at_model_free(model);
    return 0;
}

static const char *redact(const char *text)
{
    static char buf[4096];
    const char *out;
    size_t len;
    assert_int_equal(at_redact(model, scratch, text, strlen(text), &out, &len, NULL), 0);
    assert_true(len < sizeof buf);
    memcpy(buf, out, len);
    buf[len] = '\0';
    return buf;
}

/* ---- an independent checker ------------------------------------------------------------ */

static bool luhn_ok(const char *d, size_t n)
{
    int sum = 0;
    for (size_t i = 0; i < n; i++) {
        int v = d[n - 1 - i] - '0';
        if (i & 1)
            v = v * 2 > 9 ? v * 2 - 9 : v * 2;
        sum += v;
    }
    return sum % 10 == 0;
}

static int spoken(const char *w, size_t n)
{
    static const char *const words[] = {"zero", "one", "two", "three", "four",
                                        "five", "six", "seven", "eight", "nine"};
    for (int k = 0; k < 10; k++)
        if (strlen(words[k]) == n && strncasecmp(w, words[k], n) == 0)
            return k;
    if ((n == 2 && strncasecmp(w, "oh", 2) == 0) || (n == 1 && tolower(w[0]) == 'o'))
        return 0;
    return -1;
}

/* True when the text still holds a Luhn-valid run of 13..19 digits, reading digits and spoken
 * digits and skipping anything that is not a letter-word. */
static bool leaks_card(const char *t)
{
    char d[512];
    size_t n = 0;
    for (size_t i = 0; t[i];) {
        if (isdigit((unsigned char)t[i])) {
            d[n++] = t[i++];
        } else if (isalpha((unsigned char)t[i])) {
            size_t j = i;
            while (isalpha((unsigned char)t[j]))
                j++;
            int k = spoken(t + i, j - i);
            if (k >= 0) {
                d[n++] = (char)('0' + k);
            } else {
                /* a word breaks the run: check what was collected */
                for (size_t len = 13; len <= 19; len++)
                    for (size_t s = 0; s + len <= n; s++)
                        if (luhn_ok(d + s, len))
                            return true;
                n = 0;
            }
            i = j;
        } else {
            i++;
        }
        if (n >= sizeof d - 1)
            n = 0;
    }
    for (size_t len = 13; len <= 19; len++)
        for (size_t s = 0; s + len <= n; s++)
            if (luhn_ok(d + s, len))
                return true;
    return false;
}

/* A Luhn-valid number of n digits with the given prefix. */
static void make_card(char *out, const char *prefix, size_t n, unsigned *seed)
{
    size_t p = strlen(prefix);
    memcpy(out, prefix, p);
    for (size_t i = p; i < n - 1; i++)
        out[i] = (char)('0' + (rand_r(seed) % 10));
    for (int c = 0; c < 10; c++) {
        out[n - 1] = (char)('0' + c);
        if (luhn_ok(out, n))
            break;
    }
    out[n] = '\0';
}

static void render(char *out, size_t cap, const char *card, int style)
{
    static const char *const words[] = {"zero", "one", "two", "three", "four",
                                        "five", "six", "seven", "eight", "nine"};
    size_t n = strlen(card), o = 0;
    for (size_t i = 0; i < n && o + 16 < cap; i++) {
        switch (style) {
        case 0: out[o++] = card[i]; break;                                 /* plain */
        case 1: if (i && i % 4 == 0) out[o++] = ' '; out[o++] = card[i]; break;  /* 4-4-4-4 */
        case 2: if (i && i % 4 == 0) out[o++] = '-'; out[o++] = card[i]; break;  /* dashes */
        case 3: if (i == 4 || i == 10) out[o++] = ' '; out[o++] = card[i]; break; /* 4-6-rest */
        case 4: if (i) out[o++] = ' '; out[o++] = card[i]; break;          /* every digit */
        case 5: /* spoken, speech-to-text */
            o += (size_t)snprintf(out + o, cap - o, "%s%s", i ? " " : "", words[card[i] - '0']);
            break;
        case 6: /* mixed: digits then spoken, "oh" for zero */
            if (i) out[o++] = ' ';
            if (i % 3 == 0)
                o += (size_t)snprintf(out + o, cap - o, "%s",
                                      card[i] == '0' ? "oh" : words[card[i] - '0']);
            else
                out[o++] = card[i];
            break;
        default: /* split across words: "4532 015 112 830 366" with dots */
            if (i && i % 3 == 0) out[o++] = '.';
            out[o++] = card[i];
            break;
        }
    }
    out[o] = '\0';
}

static void test_card_corpus_leaves_no_luhn_valid_number(void **state)
{
    (void)state;
    static const char *const frames[][2] = {
        {"my card is ", " thanks"}, {"", ""}, {"ok it's ", ", expiry next year"},
        {"number: ", "."}, {"card number ", " and the name is Jo"}, {"(", ")"},
        {"it's ", "!"}, {"the long number on it is ", " ok"},
    };
    static const struct {
        const char *prefix;
        size_t n;
    } kinds[] = {{"4", 16}, {"5", 16}, {"37", 15}, {"6011", 16}, {"4", 13}, {"35", 19}};
    unsigned seed = 42;
    int n = 0;
    for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
        for (int style = 0; style < 8; style++) {
            for (int rep = 0; rep < 5; rep++) {
                char card[32], shaped[512], text[768];
                make_card(card, kinds[k].prefix, kinds[k].n, &seed);
                render(shaped, sizeof shaped, card, style);
                snprintf(text, sizeof text, "%s%s%s", frames[(style + rep) % 8][0], shaped,
                         frames[(style + rep) % 8][1]);
                assert_true(leaks_card(text)); /* the checker sees the card before */
                const char *out = redact(text);
                if (leaks_card(out))
                    fail_msg("card survived: \"%s\" -> \"%s\"", text, out);
                assert_non_null(strstr(out, "[CARD]"));
                n++;
            }
        }
    }
    assert_int_equal(n, 6 * 8 * 5);
}

/* Found by tests/fuzz/fuzz_redact.c: digits glued to letters, runs longer than 63 digits, and a
 * card run that another pattern's match overlaps each let a card number through. */
static void test_cards_in_awkward_places(void **state)
{
    (void)state;
    const char *const cases[] = {
        "card4111111111111111x",
        "4111 1111 1111 1111thanks",
        "ref1234 4111 1111 1111 1111",
        "1111111111111111111111111111111111111111111111111111111111111114111111111111111",
        "+1 22 333 44 4111111111111111",
        "+1 22 333 44 4111 1111 1111 1111 ok",
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        assert_true(leaks_card(cases[i]));
        const char *out = redact(cases[i]);
        if (leaks_card(out))
            fail_msg("card survived: \"%s\" -> \"%s\"", cases[i], out);
    }
    /* Overlapping matches are replaced as one, by the placeholder of the first. */
    assert_string_equal(redact("+1 22 333 44 4111111111111111"), "[PHONE]");
}

static void test_other_secrets(void **state)
{
    (void)state;
    assert_string_equal(redact("mail me at jo.smith+cs@example.co.uk please"),
                        "mail me at [EMAIL] please");
    assert_string_equal(redact("call 555-867-5309 or (555) 867 5309"),
                        "call [PHONE] or [PHONE]");
    assert_string_equal(redact("my number is +44 7700 900123"), "my number is [PHONE]");
    assert_string_equal(redact("ssn 123-45-6789"), "ssn [SSN]");
    assert_string_equal(redact("IBAN GB82 WEST 1234 5698 7654 32 ok"), "IBAN [IBAN] ok");
    assert_string_equal(redact("pay to DE89370400440532013000"), "pay to [IBAN]");
    assert_string_equal(redact("the cvv is 123"), "the [CVV]");
    assert_string_equal(redact("it expires 12/27"), "it [EXPIRY]");
}

static void test_secrets_with_the_fewest_digits(void **state)
{
    (void)state;
    /* Each pattern runs only on texts with at least as many digits as its shortest match
     * (redact.tsv, digits:N): these hold exactly that many, and are still caught. */
    assert_string_equal(redact("ring 12 345 678 today"), "ring [PHONE] today");
    assert_string_equal(redact("or +1 23 456 78 today"), "or [PHONE] today");
    assert_string_equal(redact("text 0123456789 now"), "text [PHONE] now");
    assert_string_equal(redact("cvc: 123"), "[CVV]");
    assert_string_equal(redact("exp 1/27 ok"), "[EXPIRY] ok");
    assert_string_equal(redact("ssn 123 45 6789."), "ssn [SSN].");
}

static void test_ordinary_numbers_stay(void **state)
{
    (void)state;
    const char *keep[] = {
        "order 12345 arrived", "I have 2 questions and one complaint", "it cost £34.99",
        "ref A1234567", "call me at 3 o'clock", "IBAN GB00 WEST ABCD EFGH IJKL (bad check)",
        "account 1234 5678 is mine", "the year 2026",
    };
    for (size_t i = 0; i < sizeof keep / sizeof *keep; i++)
        assert_string_equal(redact(keep[i]), keep[i]);
}

static void test_scores_do_not_depend_on_redaction(void **state)
{
    (void)state;
    /* Scoring uses the text as received; redaction is a separate step on what is stored. */
    const char *text = "This is terrible, my card 4111 1111 1111 1111 was charged twice!";
    at_result r1;
    assert_int_equal(at_score(model, scratch, text, strlen(text), AT_SPEAKER_CUSTOMER, 0, &r1), 0);
    double c1 = r1.sentiment.compound;
    redact(text);
    at_result r2;
    assert_int_equal(at_score(model, scratch, text, strlen(text), AT_SPEAKER_CUSTOMER, 0, &r2), 0);
    assert_true(c1 == r2.sentiment.compound);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_card_corpus_leaves_no_luhn_valid_number),
        cmocka_unit_test(test_cards_in_awkward_places),
        cmocka_unit_test(test_other_secrets),
        cmocka_unit_test(test_secrets_with_the_fewest_digits),
        cmocka_unit_test(test_ordinary_numbers_stay),
        cmocka_unit_test(test_scores_do_not_depend_on_redaction),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
