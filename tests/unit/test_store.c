/*
 * test_store.c: the SQLite store against real database files in a temporary directory.
 *
 * store.c is compiled into this test (it is daemon code, and unit tests link only lib), together
 * with the migrations as the build embeds them (build/schema_sql.c from `make
 * build/schema_sql.c`, found through -I$(BUILD)). Links with -lsqlite3 and build/libcommon.a
 * (common/scoredb.c stores the markers and metrics).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../daemon/store.c"

#include "schema_sql.c"

typedef struct fixture {
    char dir[64];
    char path[128];
    store *s;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/test_store.XXXXXX");
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof f->path, "%s/attune.db", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    store_close(f->s);
    const char *suffixes[] = {"", "-wal", "-shm", "-journal"};
    for (size_t i = 0; i < sizeof suffixes / sizeof *suffixes; i++) {
        char p[160];
        snprintf(p, sizeof p, "%s%s", f->path, suffixes[i]);
        unlink(p);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

static store *open_ok(fixture *f)
{
    char err[512] = "";
    int rc = store_open(f->path, &f->s, err, sizeof err);
    if (rc != 0)
        fail_msg("store_open: %s", err);
    assert_non_null(f->s);
    return f->s;
}

static int64_t q_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static bool q_is_null(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    bool is_null = sqlite3_column_type(st, 0) == SQLITE_NULL;
    sqlite3_finalize(st);
    return is_null;
}

/* Returns new text (free with free()), "(null)" for NULL. */
static char *q_text(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    const unsigned char *t = sqlite3_column_text(st, 0);
    char *out = strdup(t ? (const char *)t : "(null)");
    sqlite3_finalize(st);
    assert_non_null(out);
    return out;
}

static void assert_text(sqlite3 *db, const char *sql, const char *want)
{
    char *got = q_text(db, sql);
    if (strcmp(got, want) != 0)
        fail_msg("%s: got \"%s\", want \"%s\"", sql, got, want);
    free(got);
}

static void assert_integrity(store *s)
{
    assert_text(s->db, "PRAGMA integrity_check", "ok");
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(s->db, "PRAGMA foreign_key_check", -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE); /* no rows: no dangling references */
    sqlite3_finalize(st);
}

static int n_migrations(void)
{
    int n = 0;
    while (schema_migrations[n])
        n++;
    return n;
}

static conv_facts no_facts(void)
{
    conv_facts c;
    memset(&c, 0, sizeof c);
    c.started_at = c.ended_at = c.resolved_at = WIRE_ABSENT;
    c.resolved = c.escalated = c.transferred = -1;
    c.csat = NAN;
    c.nps = WIRE_ABSENT;
    return c;
}

static turn make_turn(int64_t seq, at_speaker speaker)
{
    turn t;
    memset(&t, 0, sizeof t);
    t.seq = seq;
    t.speaker = speaker;
    t.ts = t.start_ms = t.end_ms = WIRE_ABSENT;
    return t;
}

static stored_utterance make_utt(const char *conversation_id, const turn *t)
{
    stored_utterance u;
    memset(&u, 0, sizeof u);
    u.conversation_id = conversation_id;
    u.turn = t;
    u.sentiment = (at_sentiment){0.1, 0.7, 0.2, 0.25};
    u.frustration_score = NAN;
    u.model_id = "model-abc";
    return u;
}

static void put_ok(store *s, const stored_utterance *u, bool want_inserted)
{
    bool inserted = !want_inserted;
    if (store_put_utterance(s, u, &inserted) != 0)
        fail_msg("store_put_utterance: %s", store_errmsg(s));
    assert_int_equal(inserted, want_inserted);
}

/* ---- opening and migrations ------------------------------------------------------------- */

static void test_fresh_db(void **state)
{
    fixture *f = *state;
    store *s = open_ok(f);
    assert_true(n_migrations() >= 1);
    assert_int_equal(q_int(s->db, "PRAGMA user_version"), n_migrations());
    /* Declared in the schema, not enforced on the writer's connection (store.c). */
    assert_int_equal(q_int(s->db, "PRAGMA foreign_keys"), 0);
    assert_int_equal(q_int(s->db, "SELECT count(*) FROM pragma_foreign_key_list('utterances')"
                                  " WHERE \"table\" = 'conversations' AND on_delete = 'CASCADE'"),
                     1);
    assert_int_equal(q_int(s->db, "SELECT count(*) FROM pragma_foreign_key_list('markers')"
                                  " WHERE \"table\" = 'utterances' AND on_delete = 'CASCADE'"),
                     2); /* one row per column of the composite key */
    assert_int_equal(q_int(s->db, "SELECT count(*) FROM pragma_foreign_key_list("
                                  "'pending_metrics') WHERE \"table\" = 'conversations'"),
                     1);
    assert_int_equal(q_int(s->db, "PRAGMA synchronous"), 2); /* FULL */
    /* A new database gets 8 KiB pages, and a checkpoint every 16 MiB of them. */
    assert_int_equal(q_int(s->db, "PRAGMA page_size"), NEW_DB_PAGE_SIZE);
    assert_int_equal(q_int(s->db, "PRAGMA wal_autocheckpoint"),
                     WAL_AUTOCHECKPOINT_BYTES / NEW_DB_PAGE_SIZE);
    /* Statement journals of multi-row inserts stay off the disk. */
    assert_int_equal(q_int(s->db, "PRAGMA temp_store"), 2); /* MEMORY */
    assert_int_equal(q_int(s->db, "PRAGMA cache_size"), -32768); /* 32 MiB */
    assert_int_equal(q_int(s->db, "SELECT count(*) FROM sqlite_schema WHERE type = 'table'"
                                  " AND name IN ('conversations', 'utterances', 'markers')"),
                     3);
    assert_integrity(s);

    /* WAL is a property of the file: a second connection sees it too. */
    sqlite3 *other = NULL;
    assert_int_equal(sqlite3_open_v2(f->path, &other, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_text(other, "PRAGMA journal_mode", "wal");
    sqlite3_close(other);
}

static void test_reopen_is_idempotent(void **state)
{
    fixture *f = *state;
    store *s = open_ok(f);
    conv_facts c = no_facts();
    c.channel = "chat";
    assert_int_equal(store_put_conversation(s, "c-1", &c), 0);
    store_close(s);
    f->s = NULL;

    for (int i = 0; i < 2; i++) {
        s = open_ok(f);
        assert_int_equal(q_int(s->db, "PRAGMA user_version"), n_migrations());
        assert_int_equal(q_int(s->db, "SELECT count(*) FROM conversations"), 1);
        assert_text(s->db, "SELECT channel FROM conversations", "chat");
        assert_integrity(s);
        store_close(s);
        f->s = NULL;
    }
}

static void test_newer_db_is_refused(void **state)
{
    fixture *f = *state;
    store_close(open_ok(f));
    f->s = NULL;

    int newer = n_migrations() + 1;
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", newer);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);

    char err[512] = "";
    store *s = NULL;
    assert_int_equal(store_open(f->path, &s, err, sizeof err), -1);
    assert_null(s);
    char want_db[32], want_known[32];
    snprintf(want_db, sizeof want_db, "schema version %d", newer);
    snprintf(want_known, sizeof want_known, "knows (%d", n_migrations());
    if (!strstr(err, want_db) || !strstr(err, want_known) || !strstr(err, f->path))
        fail_msg("refusal does not name both versions and the file: %s", err);

    /* Refused untouched. */
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(q_int(db, "PRAGMA user_version"), newer);
    sqlite3_close(db);
}

/* A newer database written by someone else keeps even its journal mode. */
static void test_newer_db_keeps_journal_mode(void **state)
{
    fixture *f = *state;
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "CREATE TABLE future (x); PRAGMA user_version = 9999",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);

    char err[512] = "";
    store *s = NULL;
    assert_int_equal(store_open(f->path, &s, err, sizeof err), -1);
    assert_non_null(strstr(err, "schema version 9999"));
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_text(db, "PRAGMA journal_mode", "delete");
    sqlite3_close(db);
}

static void test_not_a_database(void **state)
{
    fixture *f = *state;
    FILE *fp = fopen(f->path, "w");
    assert_non_null(fp);
    for (int i = 0; i < 64; i++)
        fputs("this is not an SQLite database, just text. ", fp);
    fclose(fp);
    char err[512] = "";
    store *s = NULL;
    assert_int_equal(store_open(f->path, &s, err, sizeof err), -1);
    assert_null(s);
    assert_non_null(strstr(err, "not a database"));
}

static void test_migration_names_checked(void **state)
{
    (void)state;
    char err[256] = "";
    assert_int_equal(check_migration_names(n_migrations(), err, sizeof err), 0);
    assert_string_equal(schema_names[0], "0001_init");
}

/* ---- conversations ---------------------------------------------------------------------- */

static void test_conversation_merge(void **state)
{
    fixture *f = *state;
    store *s = open_ok(f);

    conv_facts start = no_facts();
    start.channel = "chat";
    start.queue = "billing";
    start.agent_id = "a-7";
    start.customer_id = "u-9";
    start.started_at = 1795600000000;
    assert_int_equal(store_put_conversation(s, "c-1", &start), 0);

    conv_facts outcome = no_facts();
    outcome.resolved = 1;
    outcome.resolved_at = 1795600300000;
    outcome.csat = 4.5;
    outcome.nps = 9;
    outcome.escalated = 1;
    assert_int_equal(store_put_conversation(s, "c-1", &outcome), 0);

    /* A later message says escalated=false: the store keeps what the latest message says. */
    conv_facts end = no_facts();
    end.ended = true;
    end.ended_at = 1795600370000;
    end.escalated = 0;
    end.transferred = 1;
    assert_int_equal(store_put_conversation(s, "c-1", &end), 0);

    sqlite3 *db = s->db;
    assert_int_equal(q_int(db, "SELECT count(*) FROM conversations"), 1);
    assert_text(db,
                "SELECT channel || '|' || queue || '|' || agent_id || '|' || customer_id"
                " FROM conversations WHERE conversation_id = 'c-1'",
                "chat|billing|a-7|u-9");
    assert_int_equal(q_int(db, "SELECT started_at FROM conversations"), 1795600000000);
    assert_int_equal(q_int(db, "SELECT ended_at FROM conversations"), 1795600370000);
    assert_int_equal(q_int(db, "SELECT resolved FROM conversations"), 1);
    assert_int_equal(q_int(db, "SELECT resolved_at FROM conversations"), 1795600300000);
    assert_int_equal(q_int(db, "SELECT csat = 4.5 FROM conversations"), 1);
    assert_int_equal(q_int(db, "SELECT nps FROM conversations"), 9);
    assert_int_equal(q_int(db, "SELECT escalated FROM conversations"), 0);
    assert_int_equal(q_int(db, "SELECT transferred FROM conversations"), 1);
    assert_int_equal(q_int(db, "SELECT created_at > 1700000000000 AND updated_at >= created_at"
                               " FROM conversations"),
                     1);

    /* Only present fields overwrite. */
    conv_facts requeue = no_facts();
    requeue.queue = "retention";
    assert_int_equal(store_put_conversation(s, "c-1", &requeue), 0);
    assert_text(db, "SELECT queue || '|' || channel FROM conversations", "retention|chat");
    assert_int_equal(q_int(db, "SELECT csat = 4.5 AND nps = 9 FROM conversations"), 1);

    /* An outcome for a conversation never started creates it with just those facts. */
    assert_int_equal(store_put_conversation(s, "c-2", &outcome), 0);
    assert_true(q_is_null(db, "SELECT agent_id FROM conversations WHERE conversation_id = 'c-2'"));
    assert_true(q_is_null(db, "SELECT transferred FROM conversations"
                              " WHERE conversation_id = 'c-2'"));
    assert_integrity(s);
}

static void test_conversation_check_violation_is_an_error(void **state)
{
    fixture *f = *state;
    store *s = open_ok(f);
    conv_facts c = no_facts();
    c.csat = 7;
    c.channel = "chat"; /* a merge is written at once */
    assert_int_equal(store_begin(s), 0);
    assert_int_equal(store_put_conversation(s, "c-1", &c), -1);
    assert_non_null(strstr(store_errmsg(s), "CHECK constraint failed"));
    assert_false(store_error_is_transient(s));
    store_rollback(s);
    assert_int_equal(q_int(s->db, "SELECT count(*) FROM conversations"), 0);

    /* An outcome is held back until the conversation's metrics are recomputed, or until the
     * COMMIT: the violation is reported there, and the transaction is rolled back as before. */
    c.channel = NULL;
    assert_int_equal(store_begin(s), 0);
    assert_int_equal(store_put_conversation(s, "c-1", &c), 0);
    assert_int_equal(store_update_metrics(s, "c-1", 3000), -1);
    assert_non_null(strstr(store_errmsg(s), "CHECK constraint failed"));
    assert_false(store_error_is_transient(s));
    store_rollback(s);
    assert_int_equal(store_begin(s), 0);
    assert_int_equal(store_put_conversation(s, "c-1", &c), 0);
    assert_int_equal(store_commit(s), -1);
    assert_non_null(strstr(store_errmsg(s), "CHECK constraint failed"));
    assert_false(store_error_is_transient(s));
    store_rollback(s);
    assert_int_equal(q_int(s->db, "SELECT count(*) FROM conversations"), 0);
}

/* An end or an outcome inside a transaction is held back and written with the conversation's
 * metrics, or at COMMIT when no recomputation comes: the row is the same as when each is
 * written at once (outside a transaction), in any order with merges. */
static void test_held_outcomes_give_the_same_rows(void **state)
{
    fixture *f = *state;
    store *s = open_ok(f);
    conv_facts start = no_facts(), end = no_facts(), late = no_facts(), whole = no_facts();
    start.channel = "voice";
    start.started_at = 1700000000000;
    end.ended = true;
    end.ended_at = 1700000600000;
    end.resolved = 1;
    end.csat = 4;
    late.csat = 2;
    late.escalated = 1;
    late.resolved_at = 1700000700000;
    whole.queue = "billing";
    whole.csat = 5;
    whole.nps = 3;
    turn t0 = make_turn(0, AT_SPEAKER_CUSTOMER), t1 = make_turn(1, AT_SPEAKER_AGENT);
    t0.ts = 1700000001000;
    t1.ts = 1700000002000;
    stored_utterance u0 = make_utt("x", &t0), u1 = make_utt("x", &t1);
    /* Each conversation gets: start, two turns, end, outcome, merge; in one transaction with
     * recomputations after the outcome and at the end (a), after the end and at the end (b),
     * without any (c); and (w) every step written at once, each its own statement. */
    const char *ids[] = {"c-a", "c-b", "c-c", "c-w"};
    for (int k = 0; k < 4; k++) {
        bool is_tx = k < 3;
        u0.conversation_id = u1.conversation_id = ids[k];
        if (is_tx)
            assert_int_equal(store_begin(s), 0);
        assert_int_equal(store_put_conversation(s, ids[k], &start), 0);
        put_ok(s, &u0, true);
        put_ok(s, &u1, true);
        assert_int_equal(store_put_conversation(s, ids[k], &end), 0);
        if (k == 1 || k == 3)
            assert_int_equal(store_update_metrics(s, ids[k], 3000), 0);
        assert_int_equal(store_put_conversation(s, ids[k], &late), 0);
        if (k == 0)
            assert_int_equal(store_update_metrics(s, ids[k], 3000), 0);
        assert_int_equal(store_put_conversation(s, ids[k], &whole), 0); /* its csat wins */
        if (k != 2)
            assert_int_equal(store_update_metrics(s, ids[k], 3000), 0);
        if (is_tx)
            assert_int_equal(store_commit(s), 0);
    }
    static const char cols[] =
        "channel, queue, started_at, ended_at, resolved, resolved_at, csat, nps, escalated,"
        " transferred, ended, turns, duration_ms, resolution_ms, customer_sentiment_mean";
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT count(DISTINCT json_array(%s)) FROM conversations"
             " WHERE conversation_id IN ('c-a', 'c-b', 'c-w')", cols);
    assert_int_equal(q_int(s->db, sql), 1);
    assert_text(s->db, "SELECT json_array(csat, nps, escalated, resolved, resolved_at, ended,"
                       " turns, resolution_ms) FROM conversations WHERE conversation_id = 'c-a'",
                "[5.0,3,1,1,1700000700000,1,2,700000]");
    /* Without a recomputation the facts are written all the same (metrics stay as they were). */
    snprintf(sql, sizeof sql, "SELECT count(DISTINCT json_array(%.*s)) FROM conversations"
             " WHERE conversation_id IN ('c-c', 'c-w')", (int)(strstr(cols, ", turns") - cols),
             cols);
    assert_int_equal(q_int(s->db, sql), 1);
    assert_integrity(s);
}

/* ---- utterances ------------------------------------------------------------------------- */

static const at_marker two_markers[] = {
    {AT_CAT_APOLOGY, "apology.so_sorry", 0, 12},
    {AT_CAT_OWNERSHIP, "ownership.let_me_fix", 14, 24},
};

static void test_utterance_idempotent(void **state)
{
    fixture *f = *state;
    store *s = open_ok(f);
    turn t = make_turn(0, AT_SPEAKER_AGENT);
    t.ts = 1795600031000;
    t.participant_id = "a-7";
    static const char text[] = "I'm so sorry; let me fix this. TRAILING BYTES NOT STORED";
    stored_utterance u = make_utt("c-1", &t);
    u.text = text;
    u.text_len = 29;
    u.markers = two_markers;
    u.n_markers = 2;

    assert_int_equal(store_begin(s), 0);
    put_ok(s, &u, true);
    put_ok(s, &u, false);
    assert_int_equal(store_commit(s), 0);
    /* A resend in a later batch is still one row. */
    put_ok(s, &u, false);

    sqlite3 *db = s->db;
    assert_int_equal(q_int(db, "SELECT count(*) FROM utterances"), 1);
    assert_int_equal(q_int(db, "SELECT count(*) FROM markers"), 2);
    assert_text(db, "SELECT text FROM utterances", "I'm so sorry; let me fix this");
    assert_text(db, "SELECT speaker || '|' || participant_id || '|' || model_id FROM utterances",
                "agent|a-7|model-abc");
    assert_int_equal(q_int(db, "SELECT ts FROM utterances"), 1795600031000);
    assert_true(q_is_null(db, "SELECT start_ms FROM utterances"));
    assert_true(q_is_null(db, "SELECT end_ms FROM utterances"));
    assert_true(q_is_null(db, "SELECT frustration_score FROM utterances"));
    assert_int_equal(q_int(db, "SELECT neg = 0.1 AND neu = 0.7 AND pos = 0.2 AND compound = 0.25"
                               " FROM utterances"),
                     1);
    assert_text(db,
                "SELECT group_concat(ordinal || ':' || family || ':' || category || ':' || pattern"
                " || ':' || start_byte || '-' || end_byte, ' ')"
                " FROM (SELECT * FROM markers WHERE conversation_id = 'c-1' AND seq = 0"
                " ORDER BY ordinal)",
                "0:empathy:apology:apology.so_sorry:0-12 1:empathy:ownership:ownership.let_me_fix:14-24");
    assert_integrity(s);
}

/* Several utterances to a statement: every one stored once, markers only with the rows it
 * stored, resends counted as duplicates: those stored before, one sent twice in the same call,
 * and a call longer than one statement. */
static void test_utterances_several_to_a_statement(void **state)
{
    fixture *f = *state;
    store *s = open_ok(f);
    enum { N = 2 * MULTI_ROWS + 3 };
    turn t[N];
    stored_utterance u[N];
    char ids[N][16];
    for (int i = 0; i < N; i++) {
        t[i] = make_turn(i / 2, i % 2 ? AT_SPEAKER_AGENT : AT_SPEAKER_CUSTOMER);
        snprintf(ids[i], sizeof ids[i], "c-%d", i % 2);
        u[i] = make_utt(ids[i], &t[i]);
        u[i].markers = two_markers;
        u[i].n_markers = (size_t)(i % 3);
    }
    size_t n_dup = 99;
    assert_int_equal(store_begin(s), 0);
    /* Seqs 0 and 1 of both conversations first, alone. */
    assert_int_equal(store_put_utterances(s, u, 4, &n_dup, NULL), 0);
    assert_int_equal(n_dup, 0);
    assert_int_equal(store_commit(s), 0);

    /* Everything: the first four again, and u[7] twice in the same statement (a resend within
     * the batch). */
    stored_utterance all[N + 1];
    memcpy(all, u, 8 * sizeof *u);
    all[8] = u[7];
    memcpy(all + 9, u + 8, (N - 8) * sizeof *u);
    assert_int_equal(store_begin(s), 0);
    if (store_put_utterances(s, all, N + 1, &n_dup, NULL))
        fail_msg("store_put_utterances: %s", store_errmsg(s));
    assert_int_equal(n_dup, 5);
    assert_int_equal(store_commit(s), 0);

    sqlite3 *db = s->db;
    assert_int_equal(q_int(db, "SELECT count(*) FROM utterances"), N);
    assert_int_equal(q_int(db, "SELECT count(DISTINCT conversation_id || '/' || seq)"
                               " FROM utterances"), N);
    int want_markers = 0;
    for (int i = 0; i < N; i++)
        want_markers += i % 3;
    assert_int_equal(q_int(db, "SELECT count(*) FROM markers"), want_markers);
    assert_int_equal(q_int(db, "SELECT count(*) FROM utterances WHERE conversation_id = 'c-1'"
                               " AND speaker = 'agent'"), N / 2);

    /* A resend of all of it, in a later batch, stores nothing. */
    assert_int_equal(store_begin(s), 0);
    assert_int_equal(store_put_utterances(s, u, N, &n_dup, NULL), 0);
    assert_int_equal(n_dup, N);
    assert_int_equal(store_commit(s), 0);
    assert_int_equal(q_int(db, "SELECT count(*) FROM utterances"), N);
    assert_int_equal(q_int(db, "SELECT count(*) FROM markers"), want_markers);

    /* An utterance without seq is refused: it must be numbered alone. */
    turn no_seq = make_turn(WIRE_ABSENT, AT_SPEAKER_AGENT);
    stored_utterance v = make_utt("c-0", &no_seq);
    assert_int_equal(store_begin(s), 0);
    assert_int_equal(store_put_utterances(s, &v, 1, &n_dup, NULL), -1);
    store_rollback(s);
    assert_integrity(s);
}

static void test_utterance_fields_for_customer_voice_turn(void **state)
{
    fixture *f = *state;
    store *s = open_ok(f);
    turn t = make_turn(3, AT_SPEAKER_CUSTOMER);
    t.start_ms = 12000;
    t.end_ms = 15500;
    stored_utterance u = make_utt("call-1", &t);
    u.text = NULL; /* store_text = none */
    u.frustration_score = 0.75;
    put_ok(s, &u, true);
    assert_true(q_is_null(s->db, "SELECT text FROM utterances"));
    assert_true(q_is_null(s->db, "SELECT ts FROM utterances"));
    assert_true(q_is_null(s->db, "SELECT participant_id FROM utterances"));
    assert_int_equal(q_int(s->db, "SELECT start_ms * 100000 + end_ms FROM utterances"),
                     12000 * (int64_t)100000 + 15500);
    assert_int_equal(q_int(s->db, "SELECT frustration_score = 0.75 FROM utterances"), 1);
    assert_text(s->db, "SELECT speaker FROM utterances", "customer");
    assert_int_equal(q_int(s->db, "SELECT count(*) FROM markers"), 0);
}

static void test_seq_autonumbering(void **state)
{
    fixture *f = *state;
    store *s = open_ok(f);
    turn t = make_turn(WIRE_ABSENT, AT_SPEAKER_CUSTOMER);
    stored_utterance u = make_utt("c-1", &t);
    static const at_marker anger[] = {{AT_CAT_ANGER, "anger.furious", 5, 12}};
    u.markers = anger;
    u.n_markers = 1;

    assert_int_equal(store_begin(s), 0);
    for (int i = 0; i < 3; i++)
        put_ok(s, &u, true);
    assert_int_equal(store_commit(s), 0);
    assert_text(s->db, "SELECT group_concat(seq, ',') FROM (SELECT seq FROM utterances"
                       " WHERE conversation_id = 'c-1' ORDER BY seq)",
                "0,1,2");
    /* Markers carry the seq the store assigned. */
    assert_text(s->db, "SELECT group_concat(seq, ',') FROM (SELECT seq FROM markers"
                       " ORDER BY seq)",
                "0,1,2");

    /* After an explicit seq, numbering continues past the highest one. */
    turn t10 = make_turn(10, AT_SPEAKER_AGENT);
    stored_utterance u10 = make_utt("c-1", &t10);
    put_ok(s, &u10, true);
    put_ok(s, &u, true);
    assert_int_equal(q_int(s->db, "SELECT max(seq) FROM utterances"), 11);

    /* Each conversation numbers on its own. */
    stored_utterance other = make_utt("c-2", &t);
    put_ok(s, &other, true);
    assert_int_equal(q_int(s->db, "SELECT seq FROM utterances WHERE conversation_id = 'c-2'"),
                     0);
    assert_integrity(s);
}

static void test_utterance_creates_conversation(void **state)
{
    fixture *f = *state;
    store *s = open_ok(f);
    turn t = make_turn(0, AT_SPEAKER_CUSTOMER);
    stored_utterance u = make_utt("c-early", &t);
    put_ok(s, &u, true);
    assert_int_equal(q_int(s->db, "SELECT count(*) FROM conversations"
                                  " WHERE conversation_id = 'c-early'"),
                     1);
    assert_true(q_is_null(s->db, "SELECT started_at FROM conversations"));

    /* The start that arrives late merges into the row the utterance created. */
    conv_facts start = no_facts();
    start.agent_id = "a-1";
    start.started_at = 1795600000000;
    assert_int_equal(store_put_conversation(s, "c-early", &start), 0);
    assert_text(s->db, "SELECT agent_id FROM conversations", "a-1");
    assert_int_equal(q_int(s->db, "SELECT count(*) FROM conversations"), 1);
    assert_integrity(s);
}

/* ---- transactions ----------------------------------------------------------------------- */

static void test_rollback_leaves_nothing(void **state)
{
    fixture *f = *state;
    store *s = open_ok(f);
    conv_facts c = no_facts();
    c.queue = "billing";
    turn t = make_turn(0, AT_SPEAKER_AGENT);
    stored_utterance u = make_utt("c-1", &t);
    u.markers = two_markers;
    u.n_markers = 2;

    assert_int_equal(store_begin(s), 0);
    assert_int_equal(store_put_conversation(s, "c-1", &c), 0);
    put_ok(s, &u, true);
    store_rollback(s);
    assert_int_equal(q_int(s->db, "SELECT (SELECT count(*) FROM conversations)"
                                  " + (SELECT count(*) FROM utterances)"
                                  " + (SELECT count(*) FROM markers)"),
                     0);
    store_rollback(s); /* nothing open: harmless */

    /* The same rows go in on a later batch. */
    assert_int_equal(store_begin(s), 0);
    assert_int_equal(store_put_conversation(s, "c-1", &c), 0);
    put_ok(s, &u, true);
    assert_int_equal(store_commit(s), 0);
    assert_int_equal(q_int(s->db, "SELECT count(*) FROM markers"), 2);
    assert_integrity(s);
}

static void test_begin_twice_fails(void **state)
{
    fixture *f = *state;
    store *s = open_ok(f);
    assert_int_equal(store_begin(s), 0);
    assert_int_equal(store_begin(s), -1);
    assert_non_null(strstr(store_errmsg(s), "within a transaction"));
    store_rollback(s);
    assert_int_equal(store_commit(s), -1); /* no transaction is active */
    assert_int_equal(store_begin(s), 0);
    assert_int_equal(store_commit(s), 0);
}

/* A bad utterance fails alone: the rest of its batch commits, and the message names the column
 * but not the transcript. */
/* Runs a rescoring pass to its end in slices of max_rows, one transaction each. */
static rescore_counts rescore_all(store *s, const at_model *m, at_scratch *sc, int64_t since_ms,
                                  size_t max_rows)
{
    rescore_cursor cur = {.since_ms = since_ms};
    rescore_counts counts = {0};
    int rc;
    do {
        assert_int_equal(store_begin(s), 0);
        rc = store_rescore(s, m, sc, &cur, max_rows, 3000, &counts);
        if (rc < 0)
            fail_msg("store_rescore: %s", store_errmsg(s));
        assert_int_equal(store_commit(s), 0);
    } while (rc == 1);
    rescore_cursor_fini(&cur);
    return counts;
}

static void test_rescore(void **state)
{
    fixture *f = *state;
    store *s = open_ok(f);
    const char *dir = getenv("ATTUNE_LEXICONS");
    at_model *m = NULL;
    at_scratch *sc = NULL;
    char err[512];
    if (at_model_new(dir ? dir : "lexicons", &m, err, sizeof err))
        fail_msg("at_model_new: %s", err);
    assert_int_equal(at_scratch_new(&sc), 0);

    /* Three conversations stored by an older model with no markers: one of two turns, one of
     * four (it spans slices of two), one started before `since`. One turn has no text, one
     * holds a redaction placeholder: neither can be scored as it was. */
    static const struct {
        const char *cid;
        int64_t seq;
        at_speaker speaker;
        const char *text;
    } rows[] = {
        {"a", 0, AT_SPEAKER_CUSTOMER, "This is the third time I have called!"},
        {"a", 1, AT_SPEAKER_AGENT, "I am so sorry, let me fix that for you."},
        {"b", 0, AT_SPEAKER_CUSTOMER, "I want to cancel my account"},
        {"b", 1, AT_SPEAKER_AGENT, NULL},
        {"b", 2, AT_SPEAKER_CUSTOMER, "My email is [EMAIL], write to me"},
        {"b", 3, AT_SPEAKER_AGENT, "Calm down, that's our policy."},
        {"old", 0, AT_SPEAKER_CUSTOMER, "Let me speak to a manager"},
    };
    conv_facts old = no_facts();
    old.started_at = 1000;
    assert_int_equal(store_put_conversation(s, "old", &old), 0);
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++) {
        turn t = make_turn(rows[i].seq, rows[i].speaker);
        stored_utterance u = make_utt(rows[i].cid, &t);
        u.text = rows[i].text;
        u.text_len = rows[i].text ? strlen(rows[i].text) : 0;
        u.model_id = "m-old";
        /* What the writer records when redaction replaced something (migration 0004). */
        u.redacted = rows[i].text && strstr(rows[i].text, "[EMAIL]") != NULL;
        put_ok(s, &u, true);
    }

    rescore_counts c = rescore_all(s, m, sc, 2000, 2);
    assert_int_equal(c.utterances, 4);
    assert_int_equal(c.conversations, 2); /* "b" spans slices and counts once */
    assert_int_equal(c.skipped, 2);
    sqlite3 *db = s->db;
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM utterances WHERE model_id = '%s'",
             at_model_id(m));
    assert_int_equal(q_int(db, sql), 4);
    assert_text(db, "SELECT group_concat(conversation_id || seq, ',') FROM (SELECT * FROM"
                    " utterances WHERE model_id = 'm-old' ORDER BY 1, 2)", "b1,b2,old0");
    /* What the daemon would store for each rescored turn: at_score's scores and markers. */
    bool b_churn = false;
    for (size_t i = 0; i < 6; i++) {
        if (!rows[i].text || strchr(rows[i].text, '['))
            continue;
        at_result r;
        assert_int_equal(at_score(m, sc, rows[i].text, strlen(rows[i].text), rows[i].speaker, 0,
                                  &r), 0);
        if (rows[i].speaker == AT_SPEAKER_CUSTOMER)
            b_churn |= strcmp(rows[i].cid, "b") == 0 &&
                       (r.category_mask & (1u << AT_CAT_CHURN_THREAT));
        snprintf(sql, sizeof sql, "SELECT category_mask FROM utterances WHERE"
                 " conversation_id = '%s' AND seq = %d", rows[i].cid, (int)rows[i].seq);
        assert_int_equal(q_int(db, sql), r.category_mask);
        snprintf(sql, sizeof sql, "SELECT count(*) FROM markers WHERE"
                 " conversation_id = '%s' AND seq = %d", rows[i].cid, (int)rows[i].seq);
        assert_int_equal(q_int(db, sql), r.n_markers);
        snprintf(sql, sizeof sql, "SELECT compound = %.4f FROM utterances WHERE"
                 " conversation_id = '%s' AND seq = %d", r.sentiment.compound, rows[i].cid,
                 (int)rows[i].seq);
        assert_int_equal(q_int(db, sql), 1);
        snprintf(sql, sizeof sql, "SELECT coalesce(solution_first, -1) FROM utterances WHERE"
                 " conversation_id = '%s' AND seq = %d", rows[i].cid, (int)rows[i].seq);
        assert_int_equal(q_int(db, sql), scoredb_solution_first(&r));
        snprintf(sql, sizeof sql, "SELECT frustration_score IS NULL FROM utterances WHERE"
                 " conversation_id = '%s' AND seq = %d", rows[i].cid, (int)rows[i].seq);
        assert_int_equal(q_int(db, sql), rows[i].speaker != AT_SPEAKER_CUSTOMER);
    }
    /* The metrics of the rescored conversations were recomputed; the old one was left. */
    assert_int_equal(q_int(db, "SELECT turns FROM conversations WHERE conversation_id = 'a'"), 2);
    assert_int_equal(q_int(db, "SELECT churn_threat * 10 + turns FROM conversations"
                               " WHERE conversation_id = 'b'"), b_churn * 10 + 4);
    assert_true(q_is_null(db, "SELECT turns FROM conversations WHERE conversation_id = 'old'"));

    /* Resumable: a second pass finds only what it skipped, and with no `since` the old one. */
    c = rescore_all(s, m, sc, AT_NULL_INT, 1);
    assert_int_equal(c.utterances, 1);
    assert_int_equal(c.conversations, 1);
    assert_int_equal(c.skipped, 2);
    c = rescore_all(s, m, sc, AT_NULL_INT, 100);
    assert_int_equal(c.utterances, 0);
    assert_int_equal(c.conversations, 0);
    assert_integrity(s);
    at_scratch_free(sc);
    at_model_free(m);
}

/* A failing utterance fails the transaction (there is no savepoint per utterance: it made
 * SQLite journal every page); the writer rolls back and replays item by item. The error names
 * the column, never the text, and is not transient, so the writer does not retry it blindly. */
static void test_failed_utterance_fails_the_transaction(void **state)
{
    fixture *f = *state;
    store *s = open_ok(f);
    static const char secret[] = "SECRET account number 1234";
    turn t0 = make_turn(0, AT_SPEAKER_CUSTOMER), t1 = make_turn(1, AT_SPEAKER_AGENT);
    stored_utterance u0 = make_utt("c-1", &t0), u1 = make_utt("c-new", &t1);
    u1.text = secret;
    u1.text_len = strlen(secret);
    u1.markers = two_markers;
    u1.n_markers = 2;
    u1.sentiment.compound = NAN; /* NULL in SQLite: breaks NOT NULL */

    assert_int_equal(store_begin(s), 0);
    put_ok(s, &u0, true);
    bool inserted = true;
    assert_int_equal(store_put_utterance(s, &u1, &inserted), -1);
    assert_false(inserted);
    assert_non_null(strstr(store_errmsg(s), "utterances.compound"));
    assert_null(strstr(store_errmsg(s), "SECRET"));
    assert_false(store_error_is_transient(s));
    store_rollback(s);
    assert_int_equal(q_int(s->db, "SELECT count(*) FROM utterances"), 0);
    assert_int_equal(q_int(s->db, "SELECT count(*) FROM conversations"), 0);

    /* The replay of the good item alone commits. */
    assert_int_equal(store_begin(s), 0);
    put_ok(s, &u0, true);
    assert_int_equal(store_commit(s), 0);
    assert_int_equal(q_int(s->db, "SELECT count(*) FROM utterances"), 1);
    assert_integrity(s);
}

static int64_t file_size(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    return n;
}

/* Stores n utterances of conversation cid, seq from first, each with 1 KiB of text, in one
 * transaction. Returns what store_commit (or the first failing put) returned. */
static int put_many(store *s, const char *cid, int first, int n)
{
    static char text[1024];
    memset(text, 'x', sizeof text - 1);
    if (store_begin(s))
        return -1;
    for (int i = first; i < first + n; i++) {
        turn t = make_turn(i, AT_SPEAKER_CUSTOMER);
        stored_utterance u = make_utt(cid, &t);
        u.text = text;
        u.text_len = sizeof text - 1;
        bool inserted;
        if (store_put_utterance(s, &u, &inserted)) {
            store_rollback(s);
            return -1;
        }
    }
    if (store_commit(s)) {
        store_rollback(s);
        return -1;
    }
    return 0;
}

/* Deferred metrics (migration 0005): a mark is durable with the transaction that makes it,
 * undone with its rollback, kept as first made when made again, listed, cleared by the
 * recomputation, and removed with its conversation. */
static int count_pending(void *ud, const char *conversation_id)
{
    (void)conversation_id;
    (*(int *)ud)++;
    return 0;
}

static void test_pending_metrics(void **state)
{
    fixture *f = *state;
    store *s = open_ok(f);
    assert_int_equal(q_int(s->db, "SELECT count(*) FROM pending_metrics"), 0);
    assert_int_equal(put_many(s, "c-1", 0, 3), 0);
    assert_int_equal(store_begin(s), 0);
    assert_int_equal(store_defer_metrics(s, "c-1"), 0);
    store_rollback(s);
    assert_int_equal(q_int(s->db, "SELECT count(*) FROM pending_metrics"), 0);

    assert_int_equal(store_begin(s), 0);
    assert_int_equal(store_defer_metrics(s, "c-1"), 0);
    assert_int_equal(store_commit(s), 0);
    assert_int_equal(sqlite3_exec(s->db, "UPDATE pending_metrics SET deferred_at = 7", NULL,
                                  NULL, NULL), SQLITE_OK);
    assert_int_equal(store_begin(s), 0);
    assert_int_equal(store_defer_metrics(s, "c-1"), 0); /* again: kept as it was */
    assert_int_equal(store_commit(s), 0);
    assert_int_equal(q_int(s->db, "SELECT deferred_at FROM pending_metrics"), 7);
    int n = 0;
    assert_int_equal(store_pending_metrics(s, count_pending, &n), 0);
    assert_int_equal(n, 1);
    assert_true(q_is_null(s->db, "SELECT turns FROM conversations"));

    assert_int_equal(store_begin(s), 0);
    assert_int_equal(store_update_metrics(s, "c-1", 3000), 0);
    assert_int_equal(store_commit(s), 0);
    assert_int_equal(q_int(s->db, "SELECT count(*) FROM pending_metrics"), 0);
    assert_int_equal(q_int(s->db, "SELECT turns FROM conversations"), 3);
    n = 0;
    assert_int_equal(store_pending_metrics(s, count_pending, &n), 0);
    assert_int_equal(n, 0);

    /* A mark refers to its conversation, and goes with it when a tool that deletes turns
     * foreign keys on (the store's connection does not enforce them: its callers mark only
     * conversations they stored). */
    assert_int_equal(store_begin(s), 0);
    assert_int_equal(store_defer_metrics(s, "c-1"), 0);
    assert_int_equal(store_commit(s), 0);
    assert_integrity(s);
    assert_int_equal(sqlite3_exec(s->db, "PRAGMA foreign_keys = ON; DELETE FROM conversations",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    assert_int_equal(q_int(s->db, "SELECT count(*) FROM pending_metrics"), 0);
    assert_integrity(s);
}

/* A database of the previous release (migrations up to 0004) with data in it: opening it
 * applies what is missing, keeps the data, and the store works on it. */
static void test_migrates_a_database_of_the_previous_release(void **state)
{
    fixture *f = *state;
    int n_old = 0;
    while (schema_names[n_old] && strcmp(schema_names[n_old], "0004_redaction") != 0)
        n_old++;
    assert_non_null(schema_names[n_old]);
    n_old++;
    assert_true(n_migrations() > n_old);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    for (int i = 0; i < n_old; i++) {
        assert_int_equal(sqlite3_exec(db, schema_migrations[i], NULL, NULL, NULL), SQLITE_OK);
        char bump[64];
        snprintf(bump, sizeof bump, "PRAGMA user_version = %d", i + 1);
        assert_int_equal(sqlite3_exec(db, bump, NULL, NULL, NULL), SQLITE_OK);
    }
    assert_int_equal(sqlite3_exec(db, "INSERT INTO conversations (conversation_id, channel)"
                                      " VALUES ('c-old', 'chat');"
                                      "INSERT INTO utterances (conversation_id, seq, speaker,"
                                      " neg, neu, pos, compound, model_id)"
                                      " VALUES ('c-old', 0, 'customer', 0, 1, 0, 0, 'm-old')",
                                  NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);

    store *s = open_ok(f);
    assert_int_equal(q_int(s->db, "PRAGMA user_version"), n_migrations());
    /* An existing database keeps its page size; the checkpoint still comes every 16 MiB. */
    assert_int_equal(q_int(s->db, "PRAGMA page_size"), 4096);
    assert_int_equal(q_int(s->db, "PRAGMA wal_autocheckpoint"), WAL_AUTOCHECKPOINT_BYTES / 4096);
    assert_int_equal(q_int(s->db, "SELECT count(*) FROM pending_metrics"), 0);
    assert_text(s->db, "SELECT channel FROM conversations", "chat");
    turn t = make_turn(1, AT_SPEAKER_AGENT);
    stored_utterance u = make_utt("c-old", &t);
    assert_int_equal(store_begin(s), 0);
    put_ok(s, &u, true);
    assert_int_equal(store_defer_metrics(s, "c-old"), 0);
    assert_int_equal(store_commit(s), 0);
    assert_int_equal(store_begin(s), 0);
    assert_int_equal(store_update_metrics(s, "c-old", 3000), 0);
    assert_int_equal(store_commit(s), 0);
    assert_int_equal(q_int(s->db, "SELECT turns FROM conversations"), 2);
    assert_int_equal(q_int(s->db, "SELECT count(*) FROM pending_metrics"), 0);
    assert_integrity(s);
}

/* The idle checkpoint copies the WAL into the database and truncates it; a reader still on the
 * WAL makes it incomplete (without waiting), and the next attempt after it left completes. */
static void test_checkpoint(void **state)
{
    fixture *f = *state;
    store *s = open_ok(f);
    char wal[160];
    snprintf(wal, sizeof wal, "%s-wal", f->path);
    assert_int_equal(put_many(s, "c-1", 0, 100), 0);
    assert_true(file_size(wal) > 0);
    bool is_complete = false;
    assert_int_equal(store_checkpoint(s, &is_complete), 0);
    assert_true(is_complete);
    assert_int_equal(file_size(wal), 0);

    sqlite3 *reader = NULL;
    assert_int_equal(sqlite3_open_v2(f->path, &reader, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_exec(reader, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(q_int(reader, "SELECT count(*) FROM utterances"), 100);
    assert_int_equal(put_many(s, "c-1", 100, 100), 0);
    int64_t held = file_size(wal);
    assert_true(held > 0);
    assert_int_equal(store_checkpoint(s, &is_complete), 0);
    assert_false(is_complete);
    assert_int_equal(file_size(wal), held);
    assert_int_equal(q_int(reader, "SELECT count(*) FROM utterances"), 100); /* its snapshot */
    assert_int_equal(sqlite3_exec(reader, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(store_checkpoint(s, &is_complete), 0);
    assert_true(is_complete);
    assert_int_equal(file_size(wal), 0);
    assert_int_equal(q_int(reader, "SELECT count(*) FROM utterances"), 200);
    sqlite3_close(reader);
    assert_integrity(s);
}

/* max_db_mb: a transaction that would grow the database beyond the cap fails as a full disk
 * (transient: the writer retries it), leaves nothing behind, and commits once the cap is
 * raised. A cap below the current size holds the database where it is; 0 lifts the cap. */
static void test_max_db_mb(void **state)
{
    fixture *f = *state;
    store *s = open_ok(f);
    int64_t bytes = 0, max_bytes = -1;
    assert_int_equal(store_size(s, &bytes, &max_bytes), 0);
    assert_true(bytes > 0);
    assert_int_equal(max_bytes, 0);
    assert_int_equal(store_set_max_db_mb(s, 1), 0);
    assert_int_equal(store_size(s, &bytes, &max_bytes), 0);
    assert_int_equal(max_bytes, 1048576);

    int stored = 0, rc;
    while ((rc = put_many(s, "c-1", stored, 50)) == 0)
        stored += 50;
    assert_true(stored > 100);
    assert_true(stored < 1000);
    /* put_many rolled back; the error is still the failing statement's. */
    assert_true(store_error_is_full(s));
    assert_true(store_error_is_transient(s));
    assert_non_null(strstr(store_errmsg(s), "full"));
    assert_int_equal(q_int(s->db, "SELECT count(*) FROM utterances"), stored);
    assert_int_equal(store_size(s, &bytes, &max_bytes), 0);
    assert_true(bytes <= 1048576);

    /* Below the current size: held there, nothing more fits. */
    assert_int_equal(store_set_max_db_mb(s, 0), 0);
    assert_int_equal(put_many(s, "c-2", 0, 200), 0);
    assert_int_equal(store_size(s, &bytes, &max_bytes), 0);
    assert_true(bytes > 1048576);
    assert_int_equal(store_set_max_db_mb(s, 1), 0);
    assert_int_equal(store_size(s, &bytes, &max_bytes), 0);
    assert_int_equal(max_bytes, bytes);
    assert_int_equal(put_many(s, "c-3", 0, 50), -1);
    assert_true(store_error_is_full(s));

    /* Raised: the same rows fit. */
    assert_int_equal(store_set_max_db_mb(s, 64), 0);
    assert_int_equal(put_many(s, "c-3", 0, 50), 0);
    assert_int_equal(q_int(s->db, "SELECT count(*) FROM utterances"), stored + 250);
    assert_integrity(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fresh_db, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_is_idempotent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_newer_db_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrates_a_database_of_the_previous_release, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_pending_metrics, setup, teardown),
        cmocka_unit_test_setup_teardown(test_newer_db_keeps_journal_mode, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_a_database, setup, teardown),
        cmocka_unit_test(test_migration_names_checked),
        cmocka_unit_test_setup_teardown(test_conversation_merge, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conversation_check_violation_is_an_error, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_held_outcomes_give_the_same_rows, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_utterance_idempotent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_utterances_several_to_a_statement, setup, teardown),
        cmocka_unit_test_setup_teardown(test_utterance_fields_for_customer_voice_turn, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_seq_autonumbering, setup, teardown),
        cmocka_unit_test_setup_teardown(test_utterance_creates_conversation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rollback_leaves_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_begin_twice_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_utterance_fails_the_transaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rescore, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checkpoint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_db_mb, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
