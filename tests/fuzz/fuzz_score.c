/*
 * fuzz_score.c: libFuzzer target for the scorer (at_score), with the real lexicons
 * ($ATTUNE_LEXICONS, else lexicons/ under the working directory).
 *
 * Each input is scored as every speaker. Whatever the bytes (invalid UTF-8, NULs, megabytes of
 * one letter), scoring must return 0 with scores in range: neg, neu and pos in [0,1], compound
 * in [-1,1], all finite; markers within the text, ordered by start then category, each in the
 * category mask and in its speaker's families; the frustration score in [0,1] and 0 for anyone
 * but the customer. Scoring the same input twice gives the same result.
 */
#include <math.h>
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
        fprintf(stderr, "fuzz_score: cannot build the model: %s\n", err[0] ? err : at_strerror(rc));
        exit(1);
    }
    if (at_scratch_new(&scratch))
        exit(1);
    return 0;
}

static int in01(double x)
{
    return isfinite(x) && x >= 0 && x <= 1;
}

static void check_result(const at_result *r, size_t len, at_speaker sp, unsigned flags)
{
    CHECK(in01(r->sentiment.neg) && in01(r->sentiment.neu) && in01(r->sentiment.pos));
    CHECK(isfinite(r->sentiment.compound) && r->sentiment.compound >= -1 &&
          r->sentiment.compound <= 1);
    CHECK(in01(r->frustration_score));
    if (sp != AT_SPEAKER_CUSTOMER)
        CHECK(r->frustration_score == 0);
    CHECK(r->n_limit_hits >= 0);
    if (flags & AT_SCORE_SENTIMENT_ONLY) {
        CHECK(r->n_markers == 0 && r->category_mask == 0);
        return;
    }
    uint32_t mask = 0;
    for (size_t i = 0; i < r->n_markers; i++) {
        const at_marker *m = &r->markers[i];
        CHECK((unsigned)m->category < AT_N_CATEGORIES);
        CHECK(m->start <= m->end && m->end <= len);
        CHECK(m->pattern_id != NULL);
        if (i) {
            const at_marker *p = &r->markers[i - 1];
            CHECK(p->start < m->start || (p->start == m->start && p->category <= m->category));
        }
        at_family fam = at_category_family(m->category);
        /* Frustration is the customer's; empathy and dismissiveness the agent's and bot's. */
        CHECK(sp != AT_SPEAKER_SYSTEM);
        CHECK((sp == AT_SPEAKER_CUSTOMER) == (fam == AT_FAMILY_FRUSTRATION));
        mask |= 1u << m->category;
    }
    CHECK((mask & ~r->category_mask) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Exactly the input's bytes, in their own allocation: ASan sees any read past the end. */
    char *text = malloc(size ? size : 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    for (int sp = 0; sp < AT_N_SPEAKERS; sp++) {
        at_result r;
        CHECK(at_score(model, scratch, text, size, (at_speaker)sp, 0, &r) == 0);
        check_result(&r, size, (at_speaker)sp, 0);
        if (sp == AT_SPEAKER_CUSTOMER) {
            at_sentiment first = r.sentiment;
            size_t n_markers = r.n_markers;
            uint32_t mask = r.category_mask;
            CHECK(at_score(model, scratch, text, size, (at_speaker)sp, 0, &r) == 0);
            CHECK(memcmp(&first, &r.sentiment, sizeof first) == 0);
            CHECK(n_markers == r.n_markers && mask == r.category_mask);
        }
    }
    at_result r;
    CHECK(at_score(model, scratch, text, size, AT_SPEAKER_AGENT, AT_SCORE_SENTIMENT_ONLY, &r) == 0);
    check_result(&r, size, AT_SPEAKER_AGENT, AT_SCORE_SENTIMENT_ONLY);
    free(text);
    return 0;
}
