/*
 * test_config.c: attuned's config table and logger.
 *
 * Unit tests link lib only, so the two daemon modules under test are compiled into this file;
 * that also lets the tests walk the static key table. Link with -linih -lpthread (the
 * $(BUILD)/tests/% rule already passes $(INIH_LIBS) and -lpthread). Run from the repository
 * root: config.example.ini is read from there.
 */
#include "../../daemon/config.c"
#include "../../daemon/log.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#define EXAMPLE "config.example.ini"

/* Writes text to a new temporary file; returns its path in a static-lifetime buffer. */
static char *write_temp(const char *text)
{
    static char paths[8][64];
    static int next;
    char *path = paths[next++ % 8];
    snprintf(path, sizeof paths[0], "/tmp/test_config.XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t len = strlen(text);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
    return path;
}

/* Loads text from a temporary file into *c; returns config_load's result, err filled. */
static int load_text(config *c, const char *text, char *err, size_t err_len, char **path_out)
{
    char *path = write_temp(text);
    int rc = config_load(c, path, err, err_len);
    if (path_out != NULL)
        *path_out = path;
    else
        unlink(path);
    return rc;
}

/* Expects text to fail to load and err to contain each of the NULL-terminated fragments. The
 * config must be unchanged. */
static void expect_error(const char *text, unsigned line, ...)
{
    config c, before;
    char err[1024];
    char *path;
    config_defaults(&c);
    before = c;
    int rc = load_text(&c, text, err, sizeof err, &path);
    if (rc == 0)
        fail_msg("loaded without error: %s", text);
    char where[128];
    snprintf(where, sizeof where, "%s:%u: ", path, line);
    if (strncmp(err, where, strlen(where)) != 0)
        fail_msg("expected \"%s\" at the start of: %s", where, err);
    va_list ap;
    va_start(ap, line);
    for (const char *frag; (frag = va_arg(ap, const char *)) != NULL;)
        if (strstr(err, frag) == NULL)
            fail_msg("expected \"%s\" in: %s", frag, err);
    va_end(ap);
    assert_memory_equal(&c, &before, sizeof c);
    unlink(path);
}

static void test_defaults(void **state)
{
    (void)state;
    config c;
    config_defaults(&c);
    assert_string_equal(c.listen, "127.0.0.1:7420");
    assert_string_equal(c.db_path, "attune.db");
    assert_string_equal(c.lexicon_dir, "");
    assert_string_equal(c.auth_token, "");
    assert_string_equal(c.log_file, "");
    assert_string_equal(c.metrics_listen, "127.0.0.1:9420");
    assert_int_equal(c.log_level, LOG_INFO);
    assert_int_equal(c.store_text, STORE_TEXT_REDACTED);
    assert_int_equal(c.workers, 0);
    assert_int_equal(c.batch_rows, 16384);
    assert_int_equal(c.batch_ms, 20);
    assert_int_equal(c.max_line_bytes, 1048576);
    assert_int_equal(c.max_connections, 1024);
    assert_int_equal(c.idle_timeout_ms, 300000);
    assert_int_equal(c.line_timeout_ms, 30000);
    assert_int_equal(c.queue_lines, 32768);
    assert_int_equal(c.client_queue_bytes, 1048576);
    assert_int_equal(c.silence_threshold_ms, 3000);
    assert_true(c.alert_compound_floor == -0.5);
    assert_int_equal(c.alert_consecutive_turns, 2);
    assert_int_equal(c.subscriber_queue, 1000);
}

/* The table is well formed: unique keys, sections kept together, bounds ordered, every key
 * documented, enum names matching log.c's. */
static void test_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_KEYS; i++) {
        const struct key *k = &keys[i];
        assert_non_null(k->help);
        assert_non_null(k->unit);
        assert_true(k->min <= k->max);
        for (size_t j = i + 1; j < N_KEYS; j++) {
            assert_false(strcmp(k->section, keys[j].section) == 0 &&
                         strcmp(k->name, keys[j].name) == 0);
            /* A section seen before j's run must not reappear after another section. */
            if (j > i + 1 && strcmp(k->section, keys[j].section) == 0)
                assert_string_equal(keys[j - 1].section, k->section);
        }
    }
    for (int l = LOG_ERROR; l <= LOG_DEBUG; l++) {
        enum log_level parsed;
        assert_int_equal(log_level_parse(level_words[l], &parsed), 0);
        assert_int_equal(parsed, l);
    }
}

/* config.example.ini loads cleanly, names every key of the table, and sets each to its
 * default, so the example and the table cannot drift apart. */
static void test_example(void **state)
{
    (void)state;
    config c, d;
    char err[1024];
    unsigned seen[N_KEYS];
    config_defaults(&d);
    config_defaults(&c);
    c.workers = 7; /* proves the file, not config_defaults, set it */
    int rc = load(&c, EXAMPLE, seen, err, sizeof err);
    if (rc != 0)
        fail_msg("%s", err);
    for (size_t i = 0; i < N_KEYS; i++)
        if (seen[i] == 0)
            fail_msg("%s lacks [%s] %s", EXAMPLE, keys[i].section, keys[i].name);
    assert_memory_equal(&c, &d, sizeof c);

    /* Every key's comment block states its default and whether SIGHUP reloads it. */
    FILE *f = fopen(EXAMPLE, "r");
    assert_non_null(f);
    char *lines[512] = {0};
    size_t n_lines = 0;
    char buf[512];
    while (n_lines < 512 && fgets(buf, sizeof buf, f) != NULL)
        lines[n_lines++] = strdup(buf);
    fclose(f);
    for (size_t i = 0; i < N_KEYS; i++) {
        const char *def_line = NULL;
        for (size_t l = seen[i] - 1; l > 0 && lines[l - 1][0] == ';'; l--) {
            if (strstr(lines[l - 1], "reload:") != NULL) {
                def_line = lines[l - 1];
                break;
            }
        }
        if (def_line == NULL)
            fail_msg("[%s] %s: no \"reload:\" comment above line %u", keys[i].section,
                     keys[i].name, seen[i]);
        const char *want = keys[i].reloadable ? "reload: yes" : "reload: no";
        if (strstr(def_line, want) == NULL)
            fail_msg("[%s] %s: expected \"%s\" in: %s", keys[i].section, keys[i].name, want,
                     def_line);
        char dflt[128];
        snprintf(dflt, sizeof dflt, "Default %s", keys[i].def[0] ? keys[i].def : "empty");
        if (strstr(def_line, dflt) == NULL)
            fail_msg("[%s] %s: expected \"%s\" in: %s", keys[i].section, keys[i].name, dflt,
                     def_line);
        if (keys[i].type == T_INT || keys[i].type == T_SIZE || keys[i].type == T_DOUBLE) {
            char bounds[128];
            if (keys[i].type == T_DOUBLE)
                snprintf(bounds, sizeof bounds, "Bounds %g..%g", keys[i].min, keys[i].max);
            else
                snprintf(bounds, sizeof bounds, "Bounds %.0f..%.0f", keys[i].min, keys[i].max);
            if (strstr(def_line, bounds) == NULL)
                fail_msg("[%s] %s: expected \"%s\" in: %s", keys[i].section, keys[i].name,
                         bounds, def_line);
        }
    }
    for (size_t l = 0; l < n_lines; l++)
        free(lines[l]);
}

static void test_load_values(void **state)
{
    (void)state;
    config c;
    char err[1024];
    config_defaults(&c);
    int rc = load_text(&c,
                       "# comment\n"
                       "[server]\n"
                       "listen = [::1]:0\n"
                       "auth_token = s3cret\n"
                       "max_line_bytes = 67108864\n"
                       "idle_timeout_ms = 0\n"
                       "\n"
                       "[store]\r\n"
                       "db = /var/lib/attune/attune.db ; inline comment\r\n"
                       "store_text = none\n"
                       "[log]\n"
                       "level = debug\n"
                       "file =\n"
                       "[metrics]\n"
                       "listen =\n"
                       "[alerts]\n"
                       "compound_floor = -1\n"
                       "[scoring]\n"
                       "workers = 256\n",
                       err, sizeof err, NULL);
    if (rc != 0)
        fail_msg("%s", err);
    assert_string_equal(c.listen, "[::1]:0");
    assert_string_equal(c.auth_token, "s3cret");
    assert_int_equal(c.max_line_bytes, 67108864);
    assert_int_equal(c.idle_timeout_ms, 0);
    assert_string_equal(c.db_path, "/var/lib/attune/attune.db");
    assert_int_equal(c.store_text, STORE_TEXT_NONE);
    assert_int_equal(c.log_level, LOG_DEBUG);
    assert_string_equal(c.metrics_listen, "");
    assert_true(c.alert_compound_floor == -1.0);
    assert_int_equal(c.workers, 256);
    /* Keys absent from the file keep their values. */
    assert_int_equal(c.batch_rows, 16384);

    rc = load_text(&c, "[store]\nstore_text = full\n[log]\nlevel = warn\n", err, sizeof err, NULL);
    assert_int_equal(rc, 0);
    assert_int_equal(c.store_text, STORE_TEXT_FULL);
    assert_int_equal(c.log_level, LOG_WARN);
    rc = load_text(&c, "[store]\nstore_text = redacted\n[log]\nlevel = error\n", err, sizeof err,
                   NULL);
    assert_int_equal(rc, 0);
    assert_int_equal(c.store_text, STORE_TEXT_REDACTED);
    assert_int_equal(c.log_level, LOG_ERROR);
}

static void test_unknown(void **state)
{
    (void)state;
    expect_error("[server]\nlisten = 127.0.0.1:1\n\nlisten_adress = 1.2.3.4:5\n", 4,
                 "[server] listen_adress: unknown key", "max_connections", NULL);
    expect_error("; c\n[srever]\nlisten = 127.0.0.1:1\n", 3,
                 "[srever] listen: unknown section", "server, store, scoring", NULL);
    expect_error("listen = 127.0.0.1:1\n", 1, "listen: key outside any section", NULL);
    /* A key that exists, but in another section. */
    expect_error("[store]\nworkers = 2\n", 2, "[store] workers: unknown key", NULL);
}

static void test_bad_values(void **state)
{
    (void)state;
    expect_error("[store]\nbatch_rows = 0\n", 2, "[store] batch_rows: out of range",
                 "1..100000 rows", "got \"0\"", NULL);
    expect_error("[store]\nbatch_rows = 100001\n", 2, "out of range", NULL);
    expect_error("[store]\nbatch_rows = 12x\n", 2, "[store] batch_rows: not an integer",
                 "got \"12x\"", NULL);
    expect_error("[store]\nbatch_rows = 99999999999999999999999\n", 2, "out of range", NULL);
    expect_error("[store]\nbatch_ms =\n", 2, "[store] batch_ms: not an integer", NULL);
    expect_error("[server]\nmax_line_bytes = 1023\n", 2, "[server] max_line_bytes: out of range",
                 "1024..67108864 bytes", NULL);
    expect_error("[server]\nmax_line_bytes = -1\n", 2, "out of range", NULL);
    expect_error("[server]\nidle_timeout_ms = -5\n", 2, "out of range", NULL);
    expect_error("[server]\nline_timeout_ms = -1\n", 2, "[server] line_timeout_ms: out of range",
                 "0..86400000 ms", "got \"-1\"", NULL);
    expect_error("[server]\nline_timeout_ms = 86400001\n", 2, "out of range", NULL);
    expect_error("[server]\nline_timeout_ms = 30s\n", 2, "[server] line_timeout_ms: not an integer",
                 NULL);
    expect_error("[alerts]\ncompound_floor = -1.5\n", 2, "[alerts] compound_floor: out of range",
                 "-1..1", NULL);
    expect_error("[alerts]\ncompound_floor = nan\n", 2, "not a number", NULL);
    expect_error("[alerts]\ncompound_floor = 0.5x\n", 2, "not a number", NULL);
    expect_error("[scoring]\nworkers = 257\n", 2, "0..256 threads", NULL);
    expect_error("[scoring]\nqueue_lines = 15\n", 2, "16..1000000 lines", NULL);
    expect_error("[store]\nstore_text = FULL\n", 2, "[store] store_text: unknown value",
                 "redacted, full, none", "got \"FULL\"", NULL);
    expect_error("[log]\nlevel = verbose\n", 2, "[log] level: unknown value",
                 "error, warn, info, debug", NULL);
    expect_error("[store]\ndb =\n", 2, "[store] db: must not be empty", NULL);
    expect_error("[store]\nbatch_ms = 5\n\nmax_db_mb = -1\n", 4, "[store] max_db_mb: out of range",
                 "0..4194304 MiB", "got \"-1\"", NULL);
    expect_error("[store]\nmax_db_mb = 4194305\n", 2, "[store] max_db_mb: out of range", NULL);
    expect_error("[store]\nmax_db_mb = 10MB\n", 2, "[store] max_db_mb: not an integer",
                 "got \"10MB\"", NULL);
    expect_error("[store]\ndb = \"attune.db\"\n", 2, "remove the quotes", NULL);
    /* A secret is never echoed. */
    char token[400];
    snprintf(token, sizeof token, "%0*d", 300, 7);
    config c;
    char err[1024];
    config_defaults(&c);
    assert_int_equal(config_set(&c, "auth_token", token, err, sizeof err), -1);
    assert_non_null(strncmp(err, "too long", 8) == 0 ? err : NULL);
    assert_null(strstr(err, "0000000007"));
    expect_error("[server]\nauth_token = \"abc\"\n", 2, "[server] auth_token: values are taken",
                 NULL);
    /* The first error is reported, not a later one. */
    expect_error("[store]\nbatch_rows = 0\nbatch_ms = 0\n", 2, "batch_rows", NULL);
}

static void test_listen(void **state)
{
    (void)state;
    static const char *const good[] = {"127.0.0.1:7420", "0.0.0.0:0", "[::1]:7420",
                                       "[::]:65535", "10.1.2.3:1"};
    static const char *const bad[] = {"127.0.0.1",   "127.0.0.1:",     "127.0.0.1:65536",
                                      "127.0.0.1:-1", "127.0.0.1:80x", "localhost:7420",
                                      "::1:7420",     "[::1]",         "[::1]7420",
                                      "[zz]:80",      ":7420",         "1.2.3:80",
                                      "127.0.0.1:0080000"};
    config c;
    char err[512];
    config_defaults(&c);
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        if (config_set(&c, "listen", good[i], err, sizeof err) != 0)
            fail_msg("%s: %s", good[i], err);
        assert_string_equal(c.listen, good[i]);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (config_set(&c, "listen", bad[i], err, sizeof err) == 0)
            fail_msg("accepted %s", bad[i]);
        assert_non_null(strstr(err, "expected IPV4:PORT or [IPV6]:PORT"));
    }
    assert_string_equal(c.listen, "10.1.2.3:1");
    assert_int_equal(config_set(&c, "listen", "::1:7420", err, sizeof err), -1);
    assert_non_null(strstr(err, "need brackets"));
    expect_error("[metrics]\nlisten = 127.0.0.1:99999\n", 2, "[metrics] listen: bad port",
                 "127.0.0.1:99999", NULL);
    expect_error("[server]\nlisten =\n", 2, "[server] listen: must not be empty", NULL);
}

static void test_syntax(void **state)
{
    (void)state;
    expect_error("[server]\nmax_connections = 5\nmax_connections = 6\n", 3,
                 "[server] max_connections: duplicate key (first set on line 2)", NULL);
    expect_error("[server]\nmax_connections = 5\n  idle_timeout_ms = 6\n", 3, "indented line",
                 NULL);
    expect_error("[server]\n\nthis line has no equals sign\n", 3, "syntax error", NULL);
    expect_error("[server\nlisten = 127.0.0.1:1\n", 1, "syntax error", NULL);
    /* A syntax error before a semantic one is the one reported. */
    expect_error("[server]\nnonsense\nmax_connections = 0\n", 2, "syntax error", NULL);
    char text[400];
    snprintf(text, sizeof text, "[store]\n; long line next\ndb = /%0*d\nbatch_rows = 0\n", 250, 1);
    expect_error(text, 3, "line: too long", NULL);

    config c;
    char err[512];
    config_defaults(&c);
    assert_int_equal(config_load(&c, "/nonexistent/attuned.ini", err, sizeof err), -1);
    assert_string_equal(err, "/nonexistent/attuned.ini: cannot open: No such file or directory");
}

static void test_set(void **state)
{
    (void)state;
    config c;
    char err[512];
    config_defaults(&c);
    assert_int_equal(config_set(&c, "listen", "0.0.0.0:7000", err, sizeof err), 0);
    assert_int_equal(config_set(&c, "db", "/tmp/x.db", err, sizeof err), 0);
    assert_int_equal(config_set(&c, "log-level", "debug", err, sizeof err), 0);
    assert_int_equal(config_set(&c, "log-file", "/tmp/attuned.log", err, sizeof err), 0);
    assert_int_equal(config_set(&c, "metrics-listen", "", err, sizeof err), 0);
    assert_int_equal(config_set(&c, "server.max_connections", "9", err, sizeof err), 0);
    assert_int_equal(config_set(&c, "batch_rows", "77", err, sizeof err), 0);
    assert_int_equal(config_set(&c, "queue-lines", "100", err, sizeof err), 0);
    assert_int_equal(config_set(&c, "alerts.compound_floor", "0.25", err, sizeof err), 0);
    assert_int_equal(config_set(&c, "store_text", "full", err, sizeof err), 0);
    assert_string_equal(c.listen, "0.0.0.0:7000");
    assert_string_equal(c.db_path, "/tmp/x.db");
    assert_int_equal(c.log_level, LOG_DEBUG);
    assert_string_equal(c.log_file, "/tmp/attuned.log");
    assert_string_equal(c.metrics_listen, "");
    assert_int_equal(c.max_connections, 9);
    assert_int_equal(c.batch_rows, 77);
    assert_int_equal(c.queue_lines, 100);
    assert_true(c.alert_compound_floor == 0.25);
    assert_int_equal(c.store_text, STORE_TEXT_FULL);

    assert_int_equal(config_set(&c, "nope", "1", err, sizeof err), -1);
    assert_non_null(strncmp(err, "unknown setting", 15) == 0 ? err : NULL);
    assert_int_equal(config_set(&c, "server.nope", "1", err, sizeof err), -1);
    assert_int_equal(config_set(&c, "metrics.listen", "bad", err, sizeof err), -1);
    assert_non_null(strncmp(err, "missing port", 12) == 0 ? err : NULL);
    assert_int_equal(config_set(&c, "log-level", "loud", err, sizeof err), -1);
    assert_non_null(strstr(err, "unknown value (expected one of error, warn, info, debug"));
    assert_int_equal(config_set(&c, "batch_rows", "0", err, sizeof err), -1);
    assert_int_equal(c.batch_rows, 77);
    assert_int_equal(c.log_level, LOG_DEBUG);
}

static void test_reloadable(void **state)
{
    (void)state;
    config running, fresh, expect;
    char err[1024];
    config_defaults(&running);
    config_finish(&running);
    expect = running;
    config_defaults(&fresh);
    int rc = load_text(&fresh,
                       "[server]\nlisten = 127.0.0.1:1\nmax_connections = 3\nidle_timeout_ms = 4\n"
                       "auth_token = t\nmax_line_bytes = 2048\nclient_queue_bytes = 8192\n"
                       "[store]\ndb = other.db\nstore_text = full\nbatch_rows = 5\nbatch_ms = 6\n"
                       "max_db_mb = 8\n"
                       "[scoring]\nlexicons = /x\nworkers = 9\nqueue_lines = 99\n"
                       "[log]\nlevel = debug\nfile = /tmp/a.log\n"
                       "[metrics]\nlisten =\n"
                       "[analytics]\nsilence_threshold_ms = 1\n"
                       "[alerts]\ncompound_floor = 0.1\nconsecutive_turns = 7\n"
                       "subscriber_queue = 3\n",
                       err, sizeof err, NULL);
    if (rc != 0)
        fail_msg("%s", err);
    config_apply_reloadable(&running, &fresh);
    /* Changed: exactly the keys the table marks reloadable. */
    expect.max_connections = 3;
    expect.idle_timeout_ms = 4;
    strcpy(expect.auth_token, "t");
    expect.batch_rows = 5;
    expect.batch_ms = 6;
    expect.max_db_mb = 8;
    expect.log_level = LOG_DEBUG;
    strcpy(expect.log_file, "/tmp/a.log");
    expect.alert_compound_floor = 0.1;
    expect.alert_consecutive_turns = 7;
    assert_memory_equal(&running, &expect, sizeof running);
    assert_string_equal(running.listen, "127.0.0.1:7420");
    assert_string_equal(running.db_path, "attune.db");
    assert_true(running.workers >= 1);
    assert_int_equal(running.queue_lines, 32768);
}

static void test_finish(void **state)
{
    (void)state;
    config c;
    config_defaults(&c);
    config_finish(&c);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int want = cpus > 2 ? (int)(cpus - 1) : 1;
    if (want > 256)
        want = 256;
    assert_int_equal(c.workers, want);
    c.workers = 5;
    config_finish(&c);
    assert_int_equal(c.workers, 5);
}

/* Reads a whole small file into buf; returns its length. */
static size_t slurp(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
    return n;
}

/* "2026-11-25T10:00:00.123Z " */
static void assert_timestamp(const char *s)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ ";
    for (size_t i = 0; i < sizeof shape - 1; i++) {
        if (shape[i] == 'd') {
            if (s[i] < '0' || s[i] > '9')
                fail_msg("bad timestamp at %zu: %s", i, s);
        } else if (s[i] != shape[i]) {
            fail_msg("bad timestamp at %zu: %s", i, s);
        }
    }
}

static void test_log(void **state)
{
    (void)state;
    char path[] = "/tmp/test_log.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(log_open(path), 0);
    log_set_level(LOG_INFO);
    assert_int_equal(log_get_level(), LOG_INFO);
    log_msg(LOG_INFO, "server", "listening on %s", "127.0.0.1:7420");
    log_msg(LOG_DEBUG, "wire", "hidden %d", 1);
    log_msg(LOG_ERROR, "store", "two\nlines\tand\x01");
    log_msg(LOG_WARN, "", "no module");
    char buf[4096];
    size_t n = slurp(path, buf, sizeof buf);
    const char *l1 = buf;
    const char *l2 = strchr(l1, '\n') + 1;
    const char *l3 = strchr(l2, '\n') + 1;
    assert_int_equal(strlen(l3) + (size_t)(l3 - buf), n);
    assert_timestamp(l1);
    assert_timestamp(l2);
    assert_timestamp(l3);
    assert_memory_equal(l1 + 25, "info server: listening on 127.0.0.1:7420\n", l2 - l1 - 25);
    assert_int_equal(l2 - l1 - 25, strlen("info server: listening on 127.0.0.1:7420\n"));
    assert_string_equal(strchr(l3, '\n') + 1, "");
    char want2[] = "error store: two\\nlines\\tand\\x01\n";
    assert_memory_equal(l2 + 25, want2, strlen(want2));
    assert_string_equal(l3 + 25, "warn -: no module\n");
    assert_null(strstr(buf, "hidden"));

    /* Rotation: the old file is renamed away, log_open reopens the path. */
    char rotated[64];
    snprintf(rotated, sizeof rotated, "%s.1", path);
    assert_int_equal(rename(path, rotated), 0);
    log_set_level(LOG_DEBUG);
    log_msg(LOG_DEBUG, "main", "after rotation");
    assert_int_equal(log_open(path), 0);
    log_msg(LOG_DEBUG, "main", "reopened");
    n = slurp(path, buf, sizeof buf);
    assert_int_equal(n, 25 + strlen("debug main: reopened\n"));
    slurp(rotated, buf, sizeof buf);
    assert_non_null(strstr(buf, "debug main: after rotation\n"));

    /* A long message is cut, marked, and still one line. */
    char *big = malloc(100000);
    memset(big, 'x', 99999);
    big[99999] = '\0';
    log_msg(LOG_INFO, "t", "%s", big);
    free(big);
    char *all = malloc(200000);
    n = slurp(path, all, 200000);
    const char *last = strstr(all, "info t: ");
    assert_non_null(last);
    assert_non_null(strstr(last, " [truncated]\n"));
    assert_int_equal(all[n - 1], '\n');
    assert_null(memchr(last, '\n', (size_t)(all + n - 1 - last)));

    /* An unopenable path fails and leaves the current destination. */
    assert_int_equal(log_open("/nonexistent/dir/x.log"), -1);
    log_msg(LOG_INFO, "t", "still here");
    slurp(path, all, 200000);
    assert_non_null(strstr(all, "info t: still here\n"));
    free(all);

    log_close();
    log_set_level(LOG_INFO);
    unlink(path);
    unlink(rotated);

    enum log_level l;
    assert_int_equal(log_level_parse("warn", &l), 0);
    assert_int_equal(l, LOG_WARN);
    assert_int_equal(log_level_parse("WARN", &l), -1);
    assert_int_equal(log_level_parse("warning", &l), -1);
    assert_int_equal(log_level_parse(NULL, &l), -1);
}

static void *log_thread(void *arg)
{
    int id = (int)(intptr_t)arg;
    for (int i = 0; i < 2000; i++)
        log_msg(LOG_INFO, "thread", "worker %d line %d %s", id, i,
                "padding padding padding padding padding padding padding padding");
    return NULL;
}

/* Lines from concurrent threads never interleave. */
static void test_log_threads(void **state)
{
    (void)state;
    char path[] = "/tmp/test_log.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(log_open(path), 0);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, log_thread, (void *)(intptr_t)i), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    log_close();
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[512];
    int count[4] = {0};
    while (fgets(line, sizeof line, f) != NULL) {
        int id, n;
        assert_timestamp(line);
        if (sscanf(line + 25, "info thread: worker %d line %d padding", &id, &n) != 2 || id < 0 ||
            id > 3 || n != count[id])
            fail_msg("bad line: %s", line);
        assert_non_null(strstr(line, "padding padding\n"));
        count[id]++;
    }
    fclose(f);
    for (int i = 0; i < 4; i++)
        assert_int_equal(count[i], 2000);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),   cmocka_unit_test(test_table),
        cmocka_unit_test(test_example),    cmocka_unit_test(test_load_values),
        cmocka_unit_test(test_unknown),    cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_listen),     cmocka_unit_test(test_syntax),
        cmocka_unit_test(test_set),        cmocka_unit_test(test_reloadable),
        cmocka_unit_test(test_finish),     cmocka_unit_test(test_log),
        cmocka_unit_test(test_log_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
