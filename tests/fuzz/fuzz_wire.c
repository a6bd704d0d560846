/*
 * fuzz_wire.c: libFuzzer target for attuned's message validator (wire_parse in daemon/wire.c).
 *
 * Every input is one protocol line. Whatever it holds, wire_parse must either accept it with a
 * message whose every field is within the bounds PROTOCOL.md gives, or reject it with one of
 * the protocol's error codes and one human sentence (NUL-terminated valid UTF-8 without control
 * characters, so that it fits on the error's line whatever the client sent) and, when the
 * line had an "id", a copy of it that is valid JSON. No string of an accepted message holds a
 * NUL character (which would cut it short as a C string): its text is exactly text_len bytes.
 * Nothing may leak either way (ASan). jansson alone (WIRE_PATH_JANSSON) must read the line the
 * same way as wire_parse, which reads most lines without it. The time parser is fed the same
 * bytes.
 */
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attuned.h"
#include "common.h"

#define CHECK(cond)                                                                            \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);       \
            abort();                                                                           \
        }                                                                                      \
    } while (0)

#define TIME_MAX_MS 253402300799999LL
#define SEQ_MAX 9007199254740991LL

static void check_id_string(const char *s, int required)
{
    if (!s) {
        CHECK(!required);
        return;
    }
    size_t n = strlen(s);
    CHECK(n >= 1 && n <= 1024);
}

static void check_time(int64_t t)
{
    CHECK(t == WIRE_ABSENT || (t >= 0 && t <= TIME_MAX_MS));
}

static void check_flag(int v)
{
    CHECK(v == -1 || v == 0 || v == 1);
}

static void check_facts(const conv_facts *f)
{
    check_id_string(f->queue, 0);
    check_id_string(f->agent_id, 0);
    check_id_string(f->customer_id, 0);
    if (f->channel) {
        static const char *const channels[] = {"chat", "voice", "email", "social", "sms"};
        int ok = 0;
        for (size_t i = 0; i < 5; i++)
            ok |= strcmp(f->channel, channels[i]) == 0;
        CHECK(ok);
    }
    check_time(f->started_at);
    check_time(f->ended_at);
    check_time(f->resolved_at);
    check_flag(f->resolved);
    check_flag(f->escalated);
    check_flag(f->transferred);
    CHECK(isnan(f->csat) || (f->csat >= 1 && f->csat <= 5));
    CHECK(f->nps == WIRE_ABSENT || (f->nps >= 0 && f->nps <= 10));
}

static void check_turn(const turn *t, int seq_given)
{
    CHECK((unsigned)t->speaker < AT_N_SPEAKERS);
    CHECK(t->text != NULL);
    CHECK(t->text[t->text_len] == '\0');
    CHECK(strlen(t->text) == t->text_len);
    CHECK(seq_given ? (t->seq >= 0 && t->seq <= SEQ_MAX)
                    : (t->seq == WIRE_ABSENT || (t->seq >= 0 && t->seq <= SEQ_MAX)));
    check_time(t->ts);
    CHECK(t->start_ms == WIRE_ABSENT || (t->start_ms >= 0 && t->start_ms <= SEQ_MAX));
    CHECK(t->end_ms == WIRE_ABSENT || (t->end_ms >= 0 && t->end_ms <= SEQ_MAX));
    if (t->start_ms != WIRE_ABSENT && t->end_ms != WIRE_ABSENT)
        CHECK(t->end_ms >= t->start_ms);
    check_id_string(t->participant_id, 0);
}

static void check_message(const message *m)
{
    CHECK((unsigned)m->type <= MSG_RESCORE);
    switch (m->type) {
    case MSG_HELLO:
    case MSG_PING:
    case MSG_SUBSCRIBE:
    case MSG_RESCORE:
        CHECK(m->conversation_id == NULL && m->n_turns == 0);
        if (m->type == MSG_SUBSCRIBE) {
            check_id_string(m->filter_queue, 0);
            check_id_string(m->filter_agent_id, 0);
        }
        if (m->type == MSG_RESCORE)
            check_time(m->since);
        return;
    default:
        break;
    }
    check_id_string(m->conversation_id, 1);
    check_facts(&m->facts);
    if (m->type == MSG_UTTERANCE)
        CHECK(m->n_turns == 1);
    else if (m->type != MSG_CONVERSATION)
        CHECK(m->n_turns == 0);
    for (size_t i = 0; i < m->n_turns; i++)
        check_turn(&m->turns[i], m->type == MSG_CONVERSATION);
    if (m->type == MSG_END || m->type == MSG_CONVERSATION)
        CHECK(m->facts.ended);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    message msg;
    char why[320];
    char *id = NULL;
    memset(why, 'x', sizeof why);
    enum wire_error e = wire_parse((const char *)data, size, &msg, why, sizeof why, &id);

    /* jansson alone must read the line the same way (wire.c's fast path reads most lines
     * without it): the same error and sentence, or the same message. */
    message slow;
    char slow_why[320];
    char *slow_id = NULL;
    memset(slow_why, 'x', sizeof slow_why);
    enum wire_error se = wire_parse_via(WIRE_PATH_JANSSON, (const char *)data, size, &slow,
                                        slow_why, sizeof slow_why, &slow_id);
    CHECK(se == e);
    if (e == WIRE_OK) {
        CHECK(slow.type == msg.type && slow.n_turns == msg.n_turns);
        CHECK((slow.id == NULL) == (msg.id == NULL) && (!msg.id || !strcmp(slow.id, msg.id)));
        for (size_t i = 0; i < msg.n_turns; i++) {
            CHECK(slow.turns[i].text_len == msg.turns[i].text_len);
            CHECK(memcmp(slow.turns[i].text, msg.turns[i].text, msg.turns[i].text_len) == 0);
            CHECK(slow.turns[i].seq == msg.turns[i].seq);
        }
        message_fini(&slow);
    } else {
        CHECK(strcmp(slow_why, why) == 0);
        CHECK((slow_id == NULL) == (id == NULL) && (!id || !strcmp(slow_id, id)));
        free(slow_id);
    }

    if (e == WIRE_OK) {
        CHECK(id == NULL);
        check_message(&msg);
        message_fini(&msg);
    } else {
        /* The codes a line itself can earn; the server adds the others. */
        CHECK(e == WIRE_INVALID_JSON || e == WIRE_INVALID_UTF8 || e == WIRE_NOT_OBJECT ||
              e == WIRE_MISSING_FIELD || e == WIRE_BAD_FIELD || e == WIRE_UNKNOWN_TYPE ||
              e == WIRE_INTERNAL);
        CHECK(memchr(why, '\0', sizeof why) != NULL);
        CHECK(why[0] != '\0');
        /* One line that jansson can encode in the error reply: valid UTF-8, no control
         * characters. */
        for (const char *q = why; *q; q++)
            CHECK((unsigned char)*q >= 0x20 && *q != 0x7f);
        json_t *msg_json = json_string(why);
        CHECK(msg_json != NULL);
        json_decref(msg_json);
        CHECK(strcmp(wire_error_code(e), "internal") != 0 || e == WIRE_INTERNAL);
        if (id) {
            /* Echoed back as the error's "id": it must parse again (as the server does, with
             * any NUL it holds). */
            json_t *v = json_loads(id, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
            CHECK(v != NULL);
            json_decref(v);
            free(id);
        }
    }

    /* The RFC 3339 parser reads a NUL-terminated string. */
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    int64_t ms;
    if (rfc3339_ms(s, &ms) == 0)
        CHECK(ms > -62167219200000LL - 86400000LL * 2 && ms < 253402300800000LL + 86400000LL);
    free(s);
    return 0;
}
