/*
 * test_framer.c: attuned's line framer (daemon/framer.c), which is pure C, so its source is
 * compiled into this file. Every case is fed whole, byte by byte and in chunks of 3, and must
 * give the same events; the byte accounting must balance after every feed.
 */
#include "../../daemon/framer.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

/* Events rendered as text: "L:<line>|" for a line, "T|" for a too-long line (cut or not: which
 * of the two depends on how the bytes arrive). */
static void run(const char *in, size_t in_len, size_t max, size_t chunk, char *out, size_t out_len,
                size_t *pending)
{
    framer f;
    framer_init(&f, max);
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < in_len; i += chunk) {
        size_t n = in_len - i < chunk ? in_len - i : chunk;
        assert_int_equal(framer_feed(&f, in + i, n), 0);
        for (;;) {
            bool has = framer_has_line(&f);
            const char *line;
            size_t len;
            enum framer_event ev = framer_next(&f, &line, &len);
            assert_int_equal(has, ev == FRAMER_LINE || ev == FRAMER_TOO_LONG);
            if (ev == FRAMER_NONE)
                break;
            if (ev == FRAMER_LINE) {
                assert_true(len <= max);
                o += (size_t)snprintf(out + o, out_len - o, "L:%.*s|", (int)len, line);
            } else {
                assert_null(line);
                o += (size_t)snprintf(out + o, out_len - o, "T|");
            }
            assert_true(o < out_len);
        }
        assert_true(f.n_bytes_in == f.n_bytes_delivered + f.n_bytes_dropped + framer_pending(&f));
    }
    *pending = framer_pending(&f);
    framer_fini(&f);
}

static void expect(const char *in, size_t max, const char *want, size_t want_pending)
{
    static const size_t chunks[] = {1, 3, 1 << 20};
    for (size_t k = 0; k < sizeof chunks / sizeof *chunks; k++) {
        char got[4096];
        size_t pending;
        run(in, strlen(in), max, chunks[k], got, sizeof got, &pending);
        if (strcmp(got, want) != 0)
            fail_msg("input %s, chunk %zu: got %s, want %s", in, chunks[k], got, want);
        assert_int_equal(pending, want_pending);
    }
}

static void test_lines_and_crlf(void **state)
{
    (void)state;
    expect("a\nbb\r\n\n\r\nccc", 8, "L:a|L:bb|L:|L:|", 3);
    expect("x\r\r\n", 8, "L:x\r|", 0); /* only the last '\r' goes */
    expect("\ra\n", 8, "L:\ra|", 0);
    expect("no newline", 64, "", 10);
}

static void test_the_limit(void **state)
{
    (void)state;
    expect("12345678\n", 8, "L:12345678|", 0);
    expect("12345678\r\n", 8, "L:12345678|", 0); /* the '\r' does not count */
    expect("123456789\nok\n", 8, "T|L:ok|", 0);
    expect("123456789\r\nok\n", 8, "T|L:ok|", 0);
    /* max bytes and a '\r' wait for their '\n'; max + 1 other bytes are cut at once. */
    expect("12345678\r", 8, "", 9);
    expect("123456789", 8, "T|", 0);
    /* A cut line is dropped up to its newline, however long, and reported once. */
    expect("123456789abcdefghijklmnop\nok\n", 8, "T|L:ok|", 0);
    expect("123456789abc\r\n12345678\r\n", 8, "T|L:12345678|", 0);
}

static void test_nul_and_any_byte_pass_through(void **state)
{
    (void)state;
    static const char in[] = "a\0b\n\xff\xfe\n";
    framer f;
    framer_init(&f, 16);
    assert_int_equal(framer_feed(&f, in, sizeof in - 1), 0);
    const char *line;
    size_t len;
    assert_int_equal(framer_next(&f, &line, &len), FRAMER_LINE);
    assert_int_equal(len, 3);
    assert_memory_equal(line, "a\0b", 3);
    assert_int_equal(framer_next(&f, &line, &len), FRAMER_LINE);
    assert_int_equal(len, 2);
    assert_int_equal(framer_next(&f, &line, &len), FRAMER_NONE);
    framer_fini(&f);
}

/* The buffer stays within one line plus one feed, however much arrives while discarding. */
static void test_memory_is_bounded(void **state)
{
    (void)state;
    framer f;
    framer_init(&f, 1024);
    char chunk[4096];
    memset(chunk, 'x', sizeof chunk);
    int n_cut = 0;
    for (int i = 0; i < 10000; i++) {
        assert_int_equal(framer_feed(&f, chunk, sizeof chunk), 0);
        const char *line;
        size_t len;
        enum framer_event ev;
        while ((ev = framer_next(&f, &line, &len)) != FRAMER_NONE)
            n_cut += ev == FRAMER_TOO_LONG_CUT;
        assert_true(f.cap <= 8192);
    }
    assert_int_equal(n_cut, 1);
    assert_int_equal(framer_feed(&f, "\nok\n", 4), 0);
    const char *line;
    size_t len;
    assert_int_equal(framer_next(&f, &line, &len), FRAMER_LINE);
    assert_int_equal(len, 2);
    assert_true(f.n_bytes_in == f.n_bytes_delivered + f.n_bytes_dropped);
    framer_fini(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lines_and_crlf),
        cmocka_unit_test(test_the_limit),
        cmocka_unit_test(test_nul_and_any_byte_pass_through),
        cmocka_unit_test(test_memory_is_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
