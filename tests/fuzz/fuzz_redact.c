/*
 * fuzz_redact.c: libFuzzer target for the redactor (at_redact), with the real lexicons
 * ($ATTUNE_LEXICONS, else lexicons/ under the working directory).
 *
 * The invariant that matters: whatever surrounds it, no payment card number survives. The
 * output may hold no window of 13 to 19 consecutive ASCII digits that passes the Luhn check
 * (checked here independently of lib/redact.c). Besides: redaction returns 0, its output is
 * NUL-terminated at out_len, a text with no redaction comes back unchanged, and one with
 * redactions holds a placeholder.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attune.h"

#define CHECK(cond)                                                                            \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);       \
            abort();                                                                           \
        }                                                                                      \
    } while (0)

static at_model *model;
static at_scratch *scratch;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *dir = getenv("ATTUNE_LEXICONS");
    char err[1024];
    int rc = at_model_new(dir ? dir : "lexicons", &model, err, sizeof err);
    if (rc) {
        fprintf(stderr, "fuzz_redact: cannot build the model: %s\n", err[0] ? err : at_strerror(rc));
        exit(1);
    }
    if (at_scratch_new(&scratch))
        exit(1);
    return 0;
}

static int luhn_ok(const char *d, size_t n)
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

/* The first Luhn-valid window of 13..19 digits inside a run of plain ASCII digits, or NULL. */
static const char *find_card(const char *s, size_t n, size_t *card_len)
{
    for (size_t i = 0; i < n;) {
        if (!isdigit((unsigned char)s[i])) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < n && isdigit((unsigned char)s[j]))
            j++;
        for (size_t len = 13; len <= 19; len++)
            for (size_t k = i; k + len <= j; k++)
                if (luhn_ok(s + k, len)) {
                    *card_len = len;
                    return s + k;
                }
        i = j;
    }
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size ? size : 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    const char *out;
    size_t out_len;
    unsigned n_redactions = 0;
    CHECK(at_redact(model, scratch, text, size, &out, &out_len, &n_redactions) == 0);
    CHECK(out != NULL && out[out_len] == '\0');
    size_t card_len;
    const char *card = find_card(out, out_len, &card_len);
    if (card) {
        fprintf(stderr, "a card number survived redaction: %.*s\n", (int)card_len, card);
        abort();
    }
    if (!n_redactions)
        CHECK(out_len == size && memcmp(out, text, size) == 0);
    else
        CHECK(memchr(out, '[', out_len) != NULL);
    free(text);
    return 0;
}
