/*
 * test_conversation.c: at_conversation_metrics against hand-computed expectations for small
 * chat and voice conversations (ANALYTICS.md section 2).
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "attune.h"

#define N AT_NULL_INT
#define CAT(c) (1u << AT_CAT_##c)

static at_turn chat(int64_t seq, at_speaker sp, int64_t ts, double compound, double fr,
                    uint32_t mask, int solution_first)
{
    return (at_turn){seq, sp, ts, N, N, compound, fr, mask, solution_first};
}

static at_turn voice(int64_t seq, at_speaker sp, int64_t start, int64_t end, double compound)
{
    return (at_turn){seq, sp, N, start, end, compound,
                     sp == AT_SPEAKER_CUSTOMER ? 0.1 : NAN, 0, -1};
}

static at_conv_facts no_facts(void)
{
    return (at_conv_facts){N, N, N, -1, -1, -1, NAN, N};
}

static void assert_near(double got, double want)
{
    if (isnan(want)) {
        assert_true(isnan(got));
        return;
    }
    assert_false(isnan(got));
    assert_true(fabs(got - want) < 1e-9);
}

/* A chat: customer angry, agent fixes first then apologises; customer calms. Turns are given
 * out of order to check they are taken in seq order. */
static void test_chat(void **state)
{
    (void)state;
    const at_speaker C = AT_SPEAKER_CUSTOMER, A = AT_SPEAKER_AGENT;
    at_turn t[] = {
        chat(2, C, 1000 + 40000, -0.5, 0.6, CAT(ANGER), -1),
        chat(0, C, 1000 + 0, -0.6, 0.7, CAT(ANGER) | CAT(ESCALATION_REQUEST), -1),
        chat(1, A, 1000 + 30000, 0.2, NAN, CAT(OWNERSHIP) | CAT(APOLOGY), 1),
        chat(3, A, 1000 + 45000, 0.3, NAN, CAT(APOLOGY), -1),
        chat(4, C, 1000 + 60000, 0.4, 0.0, 0, -1),
        chat(5, A, 1000 + 61000, 0.1, NAN, CAT(MINIMISING), -1),
        chat(6, C, 1000 + 70000, 0.6, 0.0, 0, -1),
    };
    at_conv_facts f = no_facts();
    f.started_at = 1000;
    f.resolved = 1;
    f.resolved_at = 1000 + 90000;
    f.csat = 4;
    at_conv_metrics m;
    assert_int_equal(at_conversation_metrics(t, 7, &f, 3000, &m), 0);
    assert_int_equal(m.turns, 7);
    assert_int_equal(m.agent_turns, 3);
    assert_int_equal(m.customer_turns, 4);
    assert_int_equal(m.duration_ms, 70000); /* no ended_at: last turn time - first */
    assert_int_equal(m.first_response_ms, 30000);
    /* agent after customer: seq1 (30000), seq3 (5000), seq5 (1000) */
    assert_near(m.avg_response_ms, 12000.0);
    assert_int_equal(m.max_response_ms, 30000);
    /* 4 customer turns: one per quarter */
    assert_near(m.customer_sentiment_q[0], -0.6);
    assert_near(m.customer_sentiment_q[1], -0.5);
    assert_near(m.customer_sentiment_q[2], 0.4);
    assert_near(m.customer_sentiment_q[3], 0.6);
    assert_near(m.customer_sentiment_start, -0.6);
    assert_near(m.customer_sentiment_end, 0.6);
    assert_near(m.customer_sentiment_min, -0.6);
    assert_near(m.customer_sentiment_mean, (-0.6 - 0.5 + 0.4 + 0.6) / 4);
    assert_near(m.sentiment_trend, 1.2);
    assert_near(m.recovery, 1.2);
    /* opportunities: seq0 and seq2; both answered with an apology */
    assert_int_equal(m.empathy_opportunities, 2);
    assert_int_equal(m.empathy_responses, 2);
    assert_near(m.empathy_response_rate, 1.0);
    assert_int_equal(m.solution_before_acknowledgement, 1); /* seq1 offers the fix first */
    /* E = 2 (seq1, seq3), D = 1 (seq5) */
    assert_near(m.empathy_score, 100.0 * (2 - 1) / 3);
    assert_near(m.frustration_peak, 0.7);
    assert_near(m.frustration_end, 0.0);
    assert_int_equal(m.escalation_requested, 1);
    assert_int_equal(m.churn_threat, 0);
    assert_int_equal(m.escalated, 1); /* detected request, no outcome flag */
    assert_int_equal(m.resolved, 1);
    assert_int_equal(m.resolution_ms, 90000);
    assert_near(m.csat, 4);
    assert_int_equal(m.nps, N);
    assert_int_equal(m.transferred, N);
    /* no voice timing: voice metrics are NULL */
    assert_int_equal(m.interruptions_agent, N);
    assert_int_equal(m.silence_ms, N);
    assert_true(isnan(m.talk_ratio_agent));
}

/* A call with an interruption each way and one long silence. */
static void test_voice(void **state)
{
    (void)state;
    const at_speaker C = AT_SPEAKER_CUSTOMER, A = AT_SPEAKER_AGENT;
    at_turn t[] = {
        voice(0, C, 0, 4000, -0.4),      /* */
        voice(1, A, 3500, 9000, 0.2),     /* starts before the customer's end: interruption */
        voice(2, C, 8000, 10000, 0.1),    /* starts before the agent's end: interruption */
        voice(3, A, 15000, 20000, 0.3),   /* gap 15000 - 10000 = 5000 > 3000: silence */
        voice(4, C, 21000, 22000, 0.5),   /* gap 1000: not silence */
    };
    at_conv_facts f = no_facts();
    f.started_at = 1000000;
    at_conv_metrics m;
    assert_int_equal(at_conversation_metrics(t, 5, &f, 3000, &m), 0);
    assert_int_equal(m.interruptions_agent, 1);
    assert_int_equal(m.interruptions_customer, 1);
    assert_int_equal(m.silence_ms, 5000);
    assert_near(m.talk_ratio_agent, (5500.0 + 5000.0) / (4000 + 5500 + 2000 + 5000 + 1000));
    assert_int_equal(m.duration_ms, 22000);  /* voice: max end - min start */
    assert_int_equal(m.first_response_ms, -500); /* agent start - customer end */
    /* 3 customer turns: quarters 1, 2, 3; q4 empty */
    assert_near(m.customer_sentiment_q[0], -0.4);
    assert_near(m.customer_sentiment_q[1], 0.1);
    assert_near(m.customer_sentiment_q[2], 0.5);
    assert_true(isnan(m.customer_sentiment_q[3]));
    assert_true(isnan(m.customer_sentiment_end));
    assert_true(isnan(m.sentiment_trend));
    assert_true(isnan(m.recovery));
    /* opportunity: seq0 (compound -0.4 <= -0.3), agent answered with no empathy */
    assert_int_equal(m.empathy_opportunities, 1);
    assert_int_equal(m.empathy_responses, 0);
    assert_near(m.empathy_response_rate, 0.0);
    assert_true(isnan(m.empathy_score)); /* no empathy and no dismissive turns */
    /* no outcome: NULL, not zero */
    assert_int_equal(m.resolved, N);
    assert_int_equal(m.resolution_ms, N);
    assert_int_equal(m.escalated, N);
    assert_true(isnan(m.csat));
}

static void test_no_opportunity_and_silence_threshold(void **state)
{
    (void)state;
    const at_speaker C = AT_SPEAKER_CUSTOMER, A = AT_SPEAKER_AGENT;
    at_turn t[] = {
        voice(0, A, 0, 1000, 0.5),
        voice(1, C, 4000, 5000, 0.2), /* gap exactly 3000: not longer than the threshold */
        voice(2, A, 9001, 9500, 0.2), /* gap 4001: counted whole */
    };
    at_conv_facts f = no_facts();
    f.started_at = 0;
    f.ended_at = 60000;
    f.escalated = 0;
    at_conv_metrics m;
    assert_int_equal(at_conversation_metrics(t, 3, &f, 3000, &m), 0);
    assert_int_equal(m.silence_ms, 4001);
    assert_int_equal(m.empathy_opportunities, 0);
    assert_true(isnan(m.empathy_response_rate)); /* NULL, not zero */
    assert_int_equal(m.duration_ms, 60000);      /* ended_at - started_at wins */
    assert_int_equal(m.escalated, 0);
    assert_int_equal(m.interruptions_agent, 0);
}

static void test_empty_conversation(void **state)
{
    (void)state;
    at_conv_facts f = no_facts();
    at_conv_metrics m;
    assert_int_equal(at_conversation_metrics(NULL, 0, &f, 3000, &m), 0);
    assert_int_equal(m.turns, 0);
    assert_int_equal(m.duration_ms, N);
    assert_int_equal(m.first_response_ms, N);
    assert_true(isnan(m.customer_sentiment_mean));
    assert_true(isnan(m.frustration_peak));
    assert_int_equal(m.abuse, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chat),
        cmocka_unit_test(test_voice),
        cmocka_unit_test(test_no_opportunity_and_silence_threshold),
        cmocka_unit_test(test_empty_conversation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
