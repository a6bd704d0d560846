/*
 * conversation.c: the per-conversation metrics of ANALYTICS.md section 2, computed from a
 * conversation's scored turns and its facts. A pure function of its input: the same turns give
 * the same metrics whether they arrived one by one or all at once, and NULL (AT_NULL_INT / NAN)
 * always means "not applicable", never zero.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define EMPATHY_RESPONSE_MASK                                                                  \
    ((1u << AT_CAT_ACKNOWLEDGEMENT) | (1u << AT_CAT_VALIDATION) | (1u << AT_CAT_APOLOGY) |     \
     (1u << AT_CAT_REASSURANCE) | (1u << AT_CAT_PERSPECTIVE_TAKING))
#define EMPATHY_MASK ((1u << (AT_CAT_GRATITUDE + 1)) - 1u)
#define DISMISSIVE_MASK (((1u << (AT_CAT_BUT_NEGATION + 1)) - 1u) & ~EMPATHY_MASK)
#define FRUSTRATION_MASK (((1u << AT_N_CATEGORIES) - 1u) & ~(EMPATHY_MASK | DISMISSIVE_MASK))

/* An opportunity: a customer turn with a frustration signal or clearly negative sentiment. */
#define OPPORTUNITY_COMPOUND (-0.3)

static int cmp_seq(const void *a, const void *b)
{
    const at_turn *x = *(const at_turn *const *)a, *y = *(const at_turn *const *)b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* A turn's time: ts (chat), else the call start plus start_ms (voice). */
static int64_t turn_time(const at_turn *t, const at_conv_facts *f)
{
    if (t->ts_ms != AT_NULL_INT)
        return t->ts_ms;
    if (t->start_ms != AT_NULL_INT)
        return (f->started_at != AT_NULL_INT ? f->started_at : 0) + t->start_ms;
    return AT_NULL_INT;
}

static bool has_voice(const at_turn *t)
{
    return t->start_ms != AT_NULL_INT && t->end_ms != AT_NULL_INT;
}

int at_conversation_metrics(const at_turn *turns, size_t n_turns, const at_conv_facts *facts,
                            int64_t silence_threshold_ms, at_conv_metrics *out)
{
    const at_turn **t = malloc((n_turns ? n_turns : 1) * sizeof *t);
    if (!t)
        return AT_ENOMEM;
    for (size_t i = 0; i < n_turns; i++)
        t[i] = &turns[i];
    qsort(t, n_turns, sizeof *t, cmp_seq);

    at_conv_metrics m;
    m.turns = (int64_t)n_turns;
    m.agent_turns = m.customer_turns = 0;
    for (size_t i = 0; i < n_turns; i++) {
        m.agent_turns += t[i]->speaker == AT_SPEAKER_AGENT;
        m.customer_turns += t[i]->speaker == AT_SPEAKER_CUSTOMER;
    }

    /* Voice timing is present when any turn has both offsets; turns without them are left out
     * of the voice metrics. */
    bool voice = false;
    int64_t min_start = INT64_MAX, max_end = INT64_MIN;
    for (size_t i = 0; i < n_turns; i++) {
        if (!has_voice(t[i]))
            continue;
        voice = true;
        if (t[i]->start_ms < min_start)
            min_start = t[i]->start_ms;
        if (t[i]->end_ms > max_end)
            max_end = t[i]->end_ms;
    }

    /* duration */
    m.duration_ms = AT_NULL_INT;
    if (facts->started_at != AT_NULL_INT && facts->ended_at != AT_NULL_INT) {
        m.duration_ms = facts->ended_at - facts->started_at;
    } else if (voice) {
        m.duration_ms = max_end - min_start;
    } else {
        int64_t first = AT_NULL_INT, last = AT_NULL_INT;
        for (size_t i = 0; i < n_turns; i++) {
            int64_t tt = turn_time(t[i], facts);
            if (tt == AT_NULL_INT)
                continue;
            if (first == AT_NULL_INT)
                first = tt;
            last = tt;
        }
        if (first != AT_NULL_INT)
            m.duration_ms = last - first;
    }

    /* first response: the first agent turn after the first customer turn */
    m.first_response_ms = AT_NULL_INT;
    for (size_t i = 0; i < n_turns; i++) {
        if (t[i]->speaker != AT_SPEAKER_CUSTOMER)
            continue;
        for (size_t j = i + 1; j < n_turns; j++) {
            if (t[j]->speaker != AT_SPEAKER_AGENT)
                continue;
            if (has_voice(t[i]) && has_voice(t[j])) {
                m.first_response_ms = t[j]->start_ms - t[i]->end_ms;
            } else {
                int64_t a = turn_time(t[j], facts), c = turn_time(t[i], facts);
                if (a != AT_NULL_INT && c != AT_NULL_INT)
                    m.first_response_ms = a - c;
            }
            break;
        }
        break;
    }

    /* response times: agent turns directly after a customer turn */
    int64_t n_resp = 0, sum_resp = 0;
    m.max_response_ms = AT_NULL_INT;
    for (size_t i = 1; i < n_turns; i++) {
        if (t[i]->speaker != AT_SPEAKER_AGENT || t[i - 1]->speaker != AT_SPEAKER_CUSTOMER)
            continue;
        int64_t a = turn_time(t[i], facts), c = turn_time(t[i - 1], facts);
        if (a == AT_NULL_INT || c == AT_NULL_INT)
            continue;
        int64_t d = a - c;
        n_resp++;
        sum_resp += d;
        if (m.max_response_ms == AT_NULL_INT || d > m.max_response_ms)
            m.max_response_ms = d;
    }
    m.avg_response_ms = n_resp ? (double)sum_resp / (double)n_resp : NAN;

    /* customer sentiment by quarter */
    double qsum[4] = {0}, qn[4] = {0};
    int64_t ci = 0, nc = m.customer_turns;
    double csum = 0, cmin = NAN;
    m.frustration_peak = m.frustration_end = NAN;
    m.escalation_requested = m.churn_threat = m.legal_threat = m.abuse = 0;
    m.empathy_opportunities = m.empathy_responses = m.solution_before_acknowledgement = 0;
    for (size_t i = 0; i < n_turns; i++) {
        const at_turn *x = t[i];
        if (x->speaker != AT_SPEAKER_CUSTOMER)
            continue;
        int q = (int)(4 * ci / nc);
        qsum[q] += x->compound;
        qn[q] += 1;
        ci++;
        csum += x->compound;
        if (isnan(cmin) || x->compound < cmin)
            cmin = x->compound;
        if (!isnan(x->frustration_score)) {
            if (isnan(m.frustration_peak) || x->frustration_score > m.frustration_peak)
                m.frustration_peak = x->frustration_score;
            m.frustration_end = x->frustration_score;
        }
        m.escalation_requested |= (x->category_mask >> AT_CAT_ESCALATION_REQUEST) & 1;
        m.churn_threat |= (x->category_mask >> AT_CAT_CHURN_THREAT) & 1;
        m.legal_threat |= (x->category_mask >> AT_CAT_LEGAL_THREAT) & 1;
        m.abuse |= (x->category_mask >> AT_CAT_ABUSE) & 1;
        /* Empathy opportunity, and what the next agent turn did with it. */
        if ((x->category_mask & FRUSTRATION_MASK) || x->compound <= OPPORTUNITY_COMPOUND) {
            m.empathy_opportunities++;
            for (size_t j = i + 1; j < n_turns; j++) {
                if (t[j]->speaker != AT_SPEAKER_AGENT)
                    continue;
                if (t[j]->category_mask & EMPATHY_RESPONSE_MASK)
                    m.empathy_responses++;
                if (t[j]->solution_first == 1)
                    m.solution_before_acknowledgement++;
                break;
            }
        }
    }
    for (int q = 0; q < 4; q++)
        m.customer_sentiment_q[q] = qn[q] ? qsum[q] / qn[q] : NAN;
    m.customer_sentiment_start = m.customer_sentiment_q[0];
    m.customer_sentiment_end = m.customer_sentiment_q[3];
    m.customer_sentiment_min = cmin;
    m.customer_sentiment_mean = nc ? csum / (double)nc : NAN;
    m.sentiment_trend = m.customer_sentiment_end - m.customer_sentiment_start; /* NAN-safe */
    m.recovery = m.customer_sentiment_end - m.customer_sentiment_min;
    m.empathy_response_rate = m.empathy_opportunities
                                  ? (double)m.empathy_responses / (double)m.empathy_opportunities
                                  : NAN;

    /* empathy score */
    int64_t e = 0, d = 0;
    for (size_t i = 0; i < n_turns; i++) {
        if (t[i]->speaker != AT_SPEAKER_AGENT)
            continue;
        e += (t[i]->category_mask & EMPATHY_MASK) != 0;
        d += (t[i]->category_mask & DISMISSIVE_MASK) != 0;
    }
    m.empathy_score = e + d ? 100.0 * (double)(e - d) / (double)(e + d) : NAN;

    /* voice: interruptions, talk ratio, silence */
    m.interruptions_agent = m.interruptions_customer = m.silence_ms = AT_NULL_INT;
    m.talk_ratio_agent = NAN;
    if (voice) {
        m.interruptions_agent = m.interruptions_customer = m.silence_ms = 0;
        int64_t talk_agent = 0, talk_all = 0, max_end_so_far = INT64_MIN;
        const at_turn *last_agent = NULL, *last_customer = NULL;
        bool first = true;
        for (size_t i = 0; i < n_turns; i++) {
            const at_turn *x = t[i];
            if (!has_voice(x))
                continue;
            int64_t dur = x->end_ms - x->start_ms;
            talk_all += dur;
            if (x->speaker == AT_SPEAKER_AGENT) {
                talk_agent += dur;
                if (last_customer && x->start_ms < last_customer->end_ms)
                    m.interruptions_agent++;
                last_agent = x;
            } else if (x->speaker == AT_SPEAKER_CUSTOMER) {
                if (last_agent && x->start_ms < last_agent->end_ms)
                    m.interruptions_customer++;
                last_customer = x;
            }
            if (!first) {
                int64_t gap = x->start_ms - max_end_so_far;
                if (gap > silence_threshold_ms)
                    m.silence_ms += gap;
            }
            first = false;
            if (x->end_ms > max_end_so_far)
                max_end_so_far = x->end_ms;
        }
        m.talk_ratio_agent = talk_all > 0 ? (double)talk_agent / (double)talk_all : NAN;
    }

    /* outcome */
    m.resolved = facts->resolved >= 0 ? facts->resolved : AT_NULL_INT;
    m.resolution_ms = AT_NULL_INT;
    if (facts->resolved == 1 && facts->resolved_at != AT_NULL_INT) {
        int64_t from = facts->started_at;
        for (size_t i = 0; from == AT_NULL_INT && i < n_turns; i++)
            from = turn_time(t[i], facts);
        if (from != AT_NULL_INT)
            m.resolution_ms = facts->resolved_at - from;
    }
    m.csat = facts->csat;
    m.nps = facts->nps;
    m.transferred = facts->transferred >= 0 ? facts->transferred : AT_NULL_INT;
    m.escalated = facts->escalated == 1 || m.escalation_requested ? 1
                  : facts->escalated == 0                         ? 0
                                                                  : AT_NULL_INT;
    free(t);
    *out = m;
    return 0;
}
