/*
 * test_wire.c: the protocol's line parser (daemon/wire.c) reads every line the same way along
 * both of its paths: its own one-pass reader of flat objects (WIRE_PATH_ANY) and jansson
 * (WIRE_PATH_JANSSON). Each line below, and thousands of mutations of them, must get the same
 * message field by field, or the same error code, sentence and echoed id, from both. The lines
 * the fast path must read itself are checked to be read by it, so that the comparison is not
 * between jansson and jansson.
 *
 * wire.c is compiled into this test (it is daemon code, and unit tests link only lib).
 */
/* Before cmocka.h, whose fail() macro would stand for wire.c's own fail(). */
#include "../../daemon/wire.c"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Lines that the fast path must read itself. */
static const char *const fast_lines[] = {
    "{\"type\":\"utterance\",\"conversation_id\":\"c-1\",\"seq\":0,\"speaker\":\"agent\","
    "\"start_ms\":1281,\"end_ms\":6727,\"text\":\"Good morning, how can I help?\"}",
    "{\"type\":\"utterance\",\"conversation_id\":\"c-1\",\"seq\":1,\"speaker\":\"customer\","
    "\"text\":\"I was charged twice for \xc2\xa3" "19.99 \xf0\x9f\x98\xa1 caf\xc3\xa9\"}",
    " { \"type\" : \"utterance\" ,\t\"conversation_id\" :\"c-2\", \"speaker\":\"bot\", "
    "\"text\":\"\", \"ts\":\"2026-11-25T10:00:03.120Z\", \"participant_id\":\"p-9\" }\r\n",
    "{\"type\":\"start\",\"conversation_id\":\"c-3\",\"channel\":\"voice\",\"queue\":\"billing\","
    "\"agent_id\":\"a-027\",\"customer_id\":\"u-061347\",\"started_at\":\"2026-03-02T08:00:05.421Z\"}",
    "{\"type\":\"end\",\"conversation_id\":\"c-3\",\"ended_at\":1764064803120,\"resolved\":true,"
    "\"csat\":4,\"nps\":9,\"escalated\":false,\"transferred\":null}",
    "{\"type\":\"outcome\",\"conversation_id\":\"c-3\",\"resolved\":false,\"resolved_at\":null,"
    "\"csat\":5}",
    "{\"type\":\"hello\",\"token\":\"s3cret\",\"client\":\"platform 2.1\",\"acks\":\"none\"}",
    "{\"type\":\"ping\",\"id\":42}",
    "{\"type\":\"ping\",\"id\":\"req-7 \xc3\xa9\"}",
    "{\"type\":\"ping\",\"id\":null}",
    "{\"type\":\"ping\",\"id\":-999999999999999999}",
    "{\"type\":\"rescore\",\"since\":\"2026-01-01T00:00:00Z\"}",
    "{\"type\":\"utterance\",\"conversation_id\":\"c-4\",\"speaker\":\"agent\",\"text\":\"x\","
    "\"extra\":1,\"meta_flag\":true,\"note\":\"n\",\"\":null}",
    /* Valid JSON that the protocol refuses: the same errors either way. */
    "{\"type\":\"utterance\",\"conversation_id\":\"c-5\",\"speaker\":\"robot\",\"text\":\"x\"}",
    "{\"type\":\"utterance\",\"conversation_id\":\"c-5\",\"seq\":-1,\"speaker\":\"agent\","
    "\"text\":\"x\"}",
    "{\"type\":\"utterance\",\"conversation_id\":\"c-5\",\"seq\":\"1\",\"speaker\":\"agent\","
    "\"text\":\"x\"}",
    "{\"type\":\"utterance\",\"conversation_id\":\"\",\"speaker\":\"agent\",\"text\":\"x\"}",
    "{\"type\":\"utterance\",\"conversation_id\":\"c-5\",\"speaker\":\"agent\",\"text\":null}",
    "{\"type\":\"utterance\",\"conversation_id\":\"c-5\",\"speaker\":\"agent\",\"text\":1,"
    "\"id\":-0}",
    "{\"type\":\"utterance\",\"conversation_id\":\"c-5\",\"speaker\":\"agent\",\"text\":\"x\","
    "\"start_ms\":9,\"end_ms\":3}",
    "{\"type\":\"start\",\"conversation_id\":\"c-6\",\"channel\":\"fax\"}",
    "{\"type\":\"end\",\"conversation_id\":\"c-6\",\"csat\":6,\"id\":999999999999999999}",
    "{\"type\":\"end\",\"conversation_id\":\"c-6\",\"nps\":11}",
    "{\"type\":\"end\",\"conversation_id\":\"c-6\",\"resolved\":1}",
    "{\"type\":\"greet\",\"id\":\"x\"}",
    "{\"type\":7}",
    "{\"conversation_id\":\"c-7\"}",
    "{\"type\":\"utterance\",\"speaker\":\"agent\",\"text\":\"x\"}",
    "{\"type\":\"subscribe\"}",
};

/* Lines the fast path must leave to jansson. */
static const char *const slow_lines[] = {
    "{\"type\":\"utterance\",\"conversation_id\":\"c-1\",\"speaker\":\"agent\","
    "\"text\":\"she said \\\"no\\\"\\n\"}",
    "{\"type\":\"utterance\",\"conversation_id\":\"c-1\",\"speaker\":\"agent\","
    "\"text\":\"nul \\u0000 here\"}",
    "{\"type\":\"end\",\"conversation_id\":\"c-1\",\"csat\":4.5}",
    "{\"type\":\"end\",\"conversation_id\":\"c-1\",\"csat\":4e0}",
    "{\"type\":\"utterance\",\"conversation_id\":\"c-1\",\"seq\":1.0,\"speaker\":\"agent\","
    "\"text\":\"x\"}",
    "{\"type\":\"utterance\",\"conversation_id\":\"c-1\",\"seq\":01,\"speaker\":\"agent\","
    "\"text\":\"x\"}",
    "{\"type\":\"utterance\",\"conversation_id\":\"c-1\",\"seq\":1234567890123456789,"
    "\"speaker\":\"agent\",\"text\":\"x\"}",
    "{\"type\":\"utterance\",\"conversation_id\":\"c-1\",\"seq\":99999999999999999999999,"
    "\"speaker\":\"agent\",\"text\":\"x\"}",
    "{\"type\":\"ping\",\"id\":-9223372036854775809}",
    "{\"kes\":9999999999999999999}",
    "{\"type\":\"utterance\",\"conversation_id\":\"c-1\",\"conversation_id\":\"c-2\","
    "\"speaker\":\"agent\",\"text\":\"x\"}",
    "{\"type\":\"ping\",\"x\":1,\"x\":2}",
    "{\"type\":\"ping\",\"a\":1,\"b\":1,\"c\":1,\"d\":1,\"e\":1,\"f\":1,\"g\":1,\"h\":1,\"i\":1}",
    "{\"type\":\"conversation\",\"conversation_id\":\"c-1\",\"turns\":[{\"speaker\":\"agent\","
    "\"text\":\"hi\"}],\"outcome\":{\"csat\":5}}",
    "{\"type\":\"subscribe\",\"events\":[\"alert\"],\"filter\":{\"queue\":\"billing\"}}",
    "{\"type\":\"ping\",\"id\":{\"a\":[1,2]}}",
    "{}",
    "[]",
    "42",
    "null",
    "",
    "   ",
    "{\"type\":\"ping\"",
    "{\"type\":\"ping\",}",
    "{\"type\":\"ping\"} x",
    "{\"type\":\"ping\"}{}",
    "{\"type\" \"ping\"}",
    "{\"type\":\"ping\" \"id\":1}",
    "{type:\"ping\"}",
    "{'type':'ping'}",
    "{\"type\":\"ping\",\"id\":tru}",
    "{\"type\":\"ping\",\"id\":truex}",
    "{\"type\":\"ping\",\"id\":nul}",
    "{\"type\":\"ping\",\"id\":-}",
    "{\"type\":\"ping\",\"id\":+1}",
    "{\"type\":\"ping\",\"id\":1x}",
    "{\"type\":\"ping\",\"id\":\"a\tb\"}",
    "{\"type\":\"ping\",\"id\":\"\xff\"}",
    "{\"type\":\"ping\",\"id\":\"\xc0\xaf\"}",
    "{\"type\":\"ping\",\"id\":\"\xed\xa0\x80\"}",
    "{\"type\":\"ping\",\"id\":\"\xf4\x90\x80\x80\"}",
    "{\"type\":\"ping\",\"id\":\"\xe2\x82\"}",
    "{\"type\":\"ping\",\"\xc3\":1}",
    "\xef\xbb\xbf{\"type\":\"ping\"}",
    "{\"type\":\"ping\",\"id\":\"unterminated}",
};

/* Bytes a mutation inserts or writes: JSON's syntax, escapes, digits, UTF-8 lead and
 * continuation bytes, a control character, a NUL. */
static const char mutation_bytes[] = "{}[]\":,\\ \t\n-+.eE0189tfnulra\x80\xbf\xc3\xe2\xf0\xff\x01";

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rng(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static void assert_same_str(const char *a, const char *b, const char *line, const char *what)
{
    if ((a == NULL) != (b == NULL) || (a && strcmp(a, b) != 0))
        fail_msg("%s differs (fast \"%s\", jansson \"%s\") for line: %s", what,
                 a ? a : "(null)", b ? b : "(null)", line);
}

static void assert_same_int(int64_t a, int64_t b, const char *line, const char *what)
{
    if (a != b)
        fail_msg("%s differs (fast %lld, jansson %lld) for line: %s", what, (long long)a,
                 (long long)b, line);
}

static void assert_same_facts(const conv_facts *a, const conv_facts *b, const char *line)
{
    assert_same_str(a->channel, b->channel, line, "channel");
    assert_same_str(a->queue, b->queue, line, "queue");
    assert_same_str(a->agent_id, b->agent_id, line, "agent_id");
    assert_same_str(a->customer_id, b->customer_id, line, "customer_id");
    assert_same_int(a->started_at, b->started_at, line, "started_at");
    assert_same_int(a->ended_at, b->ended_at, line, "ended_at");
    assert_same_int(a->resolved_at, b->resolved_at, line, "resolved_at");
    assert_same_int(a->resolved, b->resolved, line, "resolved");
    assert_same_int(a->escalated, b->escalated, line, "escalated");
    assert_same_int(a->transferred, b->transferred, line, "transferred");
    assert_same_int(a->nps, b->nps, line, "nps");
    assert_same_int(a->ended, b->ended, line, "ended");
    if (!(isnan(a->csat) && isnan(b->csat)) && a->csat != b->csat)
        fail_msg("csat differs (fast %g, jansson %g) for line: %s", a->csat, b->csat, line);
}

static void assert_same_message(const message *a, const message *b, const char *line)
{
    assert_same_int(a->type, b->type, line, "type");
    assert_same_str(a->id, b->id, line, "id");
    assert_same_str(a->conversation_id, b->conversation_id, line, "conversation_id");
    assert_same_facts(&a->facts, &b->facts, line);
    assert_same_int((int64_t)a->n_turns, (int64_t)b->n_turns, line, "n_turns");
    for (size_t i = 0; i < a->n_turns; i++) {
        const turn *x = &a->turns[i], *y = &b->turns[i];
        assert_same_int(x->seq, y->seq, line, "seq");
        assert_same_int(x->speaker, y->speaker, line, "speaker");
        assert_same_int((int64_t)x->text_len, (int64_t)y->text_len, line, "text_len");
        if (memcmp(x->text, y->text, x->text_len + 1) != 0)
            fail_msg("text differs for line: %s", line);
        assert_same_int(x->ts, y->ts, line, "ts");
        assert_same_int(x->start_ms, y->start_ms, line, "start_ms");
        assert_same_int(x->end_ms, y->end_ms, line, "end_ms");
        assert_same_str(x->participant_id, y->participant_id, line, "participant_id");
    }
    assert_same_str(a->token, b->token, line, "token");
    assert_same_int(a->acks_none, b->acks_none, line, "acks_none");
    assert_same_str(a->filter_queue, b->filter_queue, line, "filter_queue");
    assert_same_str(a->filter_agent_id, b->filter_agent_id, line, "filter_agent_id");
    assert_same_int(a->since, b->since, line, "since");
}

/* Whether the fast path reads the line itself (wire_parse_via has set it up). */
static bool is_fast(const char *line, size_t len)
{
    fields fl;
    if (!fast_parse(line, len, &fl))
        return false;
    fields_release(&fl);
    return true;
}

/* Parses the line along both paths and fails unless they agree. Returns whether the fast path
 * read it itself. */
static bool check_line(const char *line, size_t len)
{
    message fast, slow;
    char fast_why[320], slow_why[320];
    char *fast_id = NULL, *slow_id = NULL;
    fast_why[0] = slow_why[0] = '\0';
    enum wire_error fe = wire_parse_via(WIRE_PATH_ANY, line, len, &fast, fast_why,
                                        sizeof fast_why, &fast_id);
    enum wire_error se = wire_parse_via(WIRE_PATH_JANSSON, line, len, &slow, slow_why,
                                        sizeof slow_why, &slow_id);
    /* The line as a C string for messages (mutations may hold a NUL). */
    char shown[512];
    snprintf(shown, sizeof shown, "%.*s", (int)(len < 400 ? len : 400), line);
    if (fe != se)
        fail_msg("error differs (fast %s \"%s\", jansson %s \"%s\") for line: %s",
                 wire_error_code(fe), fast_why, wire_error_code(se), slow_why, shown);
    if (fe == WIRE_OK) {
        assert_same_message(&fast, &slow, shown);
        message_fini(&fast);
        message_fini(&slow);
    } else {
        assert_same_str(fast_why, slow_why, shown, "error sentence");
        assert_same_str(fast_id, slow_id, shown, "echoed id");
    }
    free(fast_id);
    free(slow_id);
    return is_fast(line, len);
}

static void test_fast_lines_are_read_by_the_fast_path_as_jansson_reads_them(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof fast_lines / sizeof *fast_lines; i++) {
        if (!check_line(fast_lines[i], strlen(fast_lines[i])))
            fail_msg("the fast path declined line %zu: %s", i, fast_lines[i]);
    }
}

static void test_other_lines_go_to_jansson(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof slow_lines / sizeof *slow_lines; i++) {
        if (check_line(slow_lines[i], strlen(slow_lines[i])))
            fail_msg("the fast path read line %zu itself: %s", i, slow_lines[i]);
    }
}

/* A text longer than the parse arena: the fast path's values spill to malloc and are released
 * one by one (ASan and valgrind see a leak otherwise). */
static void test_long_text_spills_out_of_the_arena(void **state)
{
    (void)state;
    size_t text_len = ARENA_BYTES + 1000;
    const char *head = "{\"type\":\"utterance\",\"conversation_id\":\"c-1\",\"speaker\":\"agent\","
                       "\"text\":\"";
    size_t n = strlen(head) + text_len + 2;
    char *line = malloc(n + 1);
    assert_non_null(line);
    strcpy(line, head);
    memset(line + strlen(head), 'a', text_len);
    strcpy(line + strlen(head) + text_len, "\"}");
    assert_true(check_line(line, n));
    /* And a bad field in the same line: the error path releases them too. */
    memcpy(line + strlen("{\"type\":\"utterance\",\"conversation_id\":\"c-1\",\"speaker\":\""),
           "robot", 5);
    assert_true(check_line(line, n));
    free(line);
}

/* Every line above, mutated at random a byte or a few at a time: deletions, insertions and
 * replacements with the bytes that matter to JSON, and a repeated key. */
static void test_mutated_lines_agree(void **state)
{
    (void)state;
    const char *const *sets[] = {fast_lines, slow_lines};
    size_t set_sizes[] = {sizeof fast_lines / sizeof *fast_lines,
                          sizeof slow_lines / sizeof *slow_lines};
    size_t n_fast = 0, n_lines = 0;
    char buf[1024];
    for (int round = 0; round < 400; round++) {
        for (int s = 0; s < 2; s++) {
            for (size_t i = 0; i < set_sizes[s]; i++) {
                size_t len = strlen(sets[s][i]);
                memcpy(buf, sets[s][i], len);
                int n_mutations = 1 + (int)(rng() % 3);
                for (int m = 0; m < n_mutations; m++) {
                    size_t at = len ? rng() % (len + 1) : 0;
                    char b = mutation_bytes[rng() % (sizeof mutation_bytes - 1)];
                    switch (rng() % 4) {
                    case 0: /* delete */
                        if (at < len) {
                            memmove(buf + at, buf + at + 1, len - at - 1);
                            len--;
                        }
                        break;
                    case 1: /* insert */
                        if (len < sizeof buf - 1) {
                            memmove(buf + at + 1, buf + at, len - at);
                            buf[at] = b;
                            len++;
                        }
                        break;
                    case 2: /* replace */
                        if (at < len)
                            buf[at] = b;
                        break;
                    default: { /* repeat the first key and its value after the '{' */
                        const char *key = memchr(buf, '"', len);
                        const char *comma = key ? memchr(key, ',', len - (size_t)(key - buf))
                                                : NULL;
                        size_t k = comma ? (size_t)(comma - key) + 1 : 0;
                        if (k && len + k < sizeof buf && key > buf) {
                            size_t pos = (size_t)(key - buf);
                            memmove(buf + pos + k, buf + pos, len - pos);
                            len += k;
                        }
                        break;
                    }
                    }
                }
                n_fast += check_line(buf, len);
                n_lines++;
            }
        }
    }
    /* Most mutations break a line (and many leave it to jansson); a good share must still be
     * read by the fast path (about one in ten), or this compares nothing. */
    if (n_fast < n_lines / 20)
        fail_msg("only %zu of %zu mutated lines took the fast path", n_fast, n_lines);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fast_lines_are_read_by_the_fast_path_as_jansson_reads_them),
        cmocka_unit_test(test_other_lines_go_to_jansson),
        cmocka_unit_test(test_long_text_spills_out_of_the_arena),
        cmocka_unit_test(test_mutated_lines_agree),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
