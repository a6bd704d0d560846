/*
 * store.c: the SQLite store. Owns the one database connection of the writer thread: opening it
 * (WAL, synchronous=FULL, busy timeout), bringing its schema up to date with the
 * migrations compiled in from schema/ (PRAGMA user_version counts the applied ones), and the
 * prepared statements that merge conversations and insert utterances, and the list of
 * conversations whose metrics the writer has deferred (pending_metrics). Markers, metrics and
 * rescoring are common/scoredb.c's, which `attune rescore` shares; the store owns one scoredb on
 * its connection.
 *
 * Invariants:
 *   - Only the writer thread touches a store (the connection is opened NOMUTEX).
 *   - Every statement is prepared once (in store_open; a multi-row insert when first used),
 *     reset (and its bindings cleared, except for the multi-row inserts, every use of which
 *     binds every parameter) after each use, and finalized in store_close.
 *   - store_put_utterance is all or nothing: it runs inside a savepoint, so a failure leaves no
 *     half-stored utterance in the caller's batch.
 *   - Every row's parent exists before the row is written: a conversation's row before its
 *     utterances and its pending_metrics mark, an utterance before its markers. The schema
 *     declares these foreign keys, but this connection does not enforce them (PRAGMA
 *     foreign_keys is off): checking cost a parent lookup per utterance and per marker row,
 *     for rows that have their parent by construction. Nothing here deletes a parent row, so
 *     no cascade is missed; tools that delete turn foreign keys on (schema/README.md).
 *   - Inside a transaction, an end's or an outcome's facts are held back (held_outcome) and
 *     written by the same UPDATE as the conversation's recomputed metrics, which rewrites the
 *     row anyway; store_commit writes what no recomputation took, and a merge writes what is
 *     held for its conversation before its own fields. So the row is what writing each at once
 *     would make it, written once instead of twice. Readers of the row inside the transaction
 *     (the metrics' facts) see the held facts applied.
 *   - Nothing here logs, and no error message carries transcript text: SQLite's messages name
 *     columns and constraints, never bound values.
 */
#include <math.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

#include "attuned.h"
#include "common.h"

/* Generated into build/schema_sql.c by packaging/embed_schema.sh from schema/NNNN_name.sql, in
 * file order, each NULL-terminated. Migration i (0-based) takes user_version from i to i + 1. */
extern const char *const schema_migrations[];
extern const char *const schema_names[];

#define BUSY_TIMEOUT_MS 5000

/* SQLite's automatic checkpoint (after a commit, once the WAL holds this many bytes of pages)
 * copies each page once however many commits rewrote it since the last one; its default, 1000
 * pages, made the writer copy and fsync the same pages over and over when many conversations
 * are streamed at once (each batch rewrites their index and table pages wherever they sit):
 * 16 MiB (4000 pages of 4 KiB then) took a quarter off the writer's system time with 64
 * connections interleaving conversations, and changed nothing measurable for one connection or
 * for ack latency. Set in pages of the database's own size (PRAGMA wal_autocheckpoint). */
#define WAL_AUTOCHECKPOINT_BYTES (16 << 20)
/* Checkpoints run on this connection only, never on a second one beside the writer: SQLite up
 * to 3.51.2 (Debian 12 has 3.40.1) can corrupt the database when one connection starts a
 * checkpoint while another commits a transaction that resets the WAL (sqlite.org/wal.html, "the
 * WAL-reset bug"). A checkpointer thread with its own connection measured about 5% faster
 * ingest with 64 connections, and was taken out for that reason. */

/* The page size of a database attuned creates (an existing one keeps its own: it cannot change
 * in WAL mode). With many conversations in progress each commit rewrites a leaf page per
 * conversation in the utterances' key index and the markers table; 8 KiB pages hold twice the
 * rows, so a conversation's rows span half as many pages and the b-trees are shallower, and
 * ingest over 64 connections measured 8% faster than with 4 KiB (1 KiB and 2 KiB were slower,
 * 16 KiB no better). */
#define NEW_DB_PAGE_SIZE 8192

/* The WAL file keeps the largest size it ever reached unless SQLite is told otherwise, so one
 * analyst transaction held open through a busy hour would leave gigabytes behind for good.
 * Beyond this size it is truncated back when the next transaction restarts it. Above its size
 * under steady load with the default batches (the auto-checkpoint's 16 MiB plus a batch), so
 * that normal operation never pays for truncating and regrowing it. */
#define WAL_SIZE_LIMIT_BYTES (32 << 20)

enum stmt_id {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_CONV_MERGE,
    ST_CONV_OUTCOME,
    ST_CONV_ENSURE,
    ST_NEXT_SEQ,
    ST_UTT_INSERT,
    ST_UTT_ROWID,
    ST_ROUTING_SELECT,
    ST_PAGE_COUNT,
    ST_PENDING_INSERT,
    ST_PENDING_DELETE,
    ST_PENDING_SELECT,
    N_STMTS
};

/* The columns an utterance row is written with, in the order of bind_utterance. */
#define UTT_COLUMNS                                                                            \
    "(conversation_id, seq, speaker, participant_id, ts, start_ms, end_ms, text, neg, neu,"  \
    " pos, compound, frustration_score, model_id, category_mask, solution_first, redacted)"
#define UTT_PARAMS 17

/* Utterances that carry their seq are inserted up to MULTI_ROWS to a statement (store_put_
 * utterances): a row costs SQLite about a third less that way than in a statement of its
 * own, which pays for starting, opening its cursors and halting. */
#define MULTI_ROWS 16

/* Utterances use ON CONFLICT ... DO NOTHING rather than INSERT OR IGNORE on purpose: OR IGNORE
 * would also silently drop a row that breaks a NOT NULL or CHECK constraint (a NaN sentiment, a
 * missing model id), and the writer would then acknowledge data that was never stored. */
static const char *const stmt_sql[N_STMTS] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_CONV_MERGE] =
        "INSERT INTO conversations (conversation_id, channel, queue, agent_id, customer_id,"
        " started_at, ended_at, resolved, resolved_at, csat, nps, escalated, transferred,"
        " created_at, updated_at, ended)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14, ?15)"
        " ON CONFLICT (conversation_id) DO UPDATE SET"
        " channel = COALESCE(excluded.channel, channel),"
        " queue = COALESCE(excluded.queue, queue),"
        " agent_id = COALESCE(excluded.agent_id, agent_id),"
        " customer_id = COALESCE(excluded.customer_id, customer_id),"
        " started_at = COALESCE(excluded.started_at, started_at),"
        " ended_at = COALESCE(excluded.ended_at, ended_at),"
        " resolved = COALESCE(excluded.resolved, resolved),"
        " resolved_at = COALESCE(excluded.resolved_at, resolved_at),"
        " csat = COALESCE(excluded.csat, csat),"
        " nps = COALESCE(excluded.nps, nps),"
        " escalated = COALESCE(excluded.escalated, escalated),"
        " transferred = COALESCE(excluded.transferred, transferred),"
        " ended = MAX(ended, excluded.ended),"
        " updated_at = excluded.updated_at",
    /* end and outcome touch no indexed column, so they update only what they carry: the
     * merge above would rewrite all five secondary indexes of the row. */
    [ST_CONV_OUTCOME] =
        "UPDATE conversations SET"
        " ended_at = COALESCE(?2, ended_at), resolved = COALESCE(?3, resolved),"
        " resolved_at = COALESCE(?4, resolved_at), csat = COALESCE(?5, csat),"
        " nps = COALESCE(?6, nps), transferred = COALESCE(?7, transferred),"
        " ended = MAX(ended, ?8), updated_at = ?9, escalated = COALESCE(?10, escalated)"
        " WHERE conversation_id = ?1",
    [ST_CONV_ENSURE] =
        "INSERT INTO conversations (conversation_id, created_at, updated_at) VALUES (?1, ?2, ?2)"
        " ON CONFLICT (conversation_id) DO NOTHING",
    [ST_NEXT_SEQ] = "SELECT COALESCE(MAX(seq) + 1, 0) FROM utterances WHERE conversation_id = ?1",
    [ST_UTT_INSERT] =
        "INSERT INTO utterances " UTT_COLUMNS
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
        " ON CONFLICT (conversation_id, seq) DO NOTHING",
    [ST_UTT_ROWID] = "SELECT rowid FROM utterances WHERE conversation_id = ?1 AND seq = ?2",
    [ST_ROUTING_SELECT] = "SELECT queue, agent_id FROM conversations WHERE conversation_id = ?1",
    [ST_PAGE_COUNT] = "PRAGMA page_count",
    /* A conversation deferred again keeps the time it was first deferred. */
    [ST_PENDING_INSERT] =
        "INSERT INTO pending_metrics (conversation_id, deferred_at) VALUES (?1, ?2)"
        " ON CONFLICT (conversation_id) DO NOTHING",
    [ST_PENDING_DELETE] = "DELETE FROM pending_metrics WHERE conversation_id = ?1",
    [ST_PENDING_SELECT] = "SELECT conversation_id FROM pending_metrics",
};

/* Conversations whose row is known to exist in the current transaction, so that an utterance
 * needs no "ensure" statement when an earlier one of the batch already made sure. Open
 * addressing over string hashes; cleared at every BEGIN and ROLLBACK. */
#define ENSURED_SLOTS 8192
_Static_assert(ENSURED_SLOTS <= 65536, "ensured.used holds slot numbers in 16 bits");
typedef struct ensured {
    uint64_t hash[ENSURED_SLOTS];
    char *id[ENSURED_SLOTS];
    bool is_created[ENSURED_SLOTS]; /* this transaction inserted the row */
    uint32_t held[ENSURED_SLOTS];   /* 1 + its index in store.held, or 0 */
    uint16_t used[ENSURED_SLOTS / 2]; /* the slots taken, n of them: what ensured_clear clears */
    size_t n;
} ensured;

/* An end's or an outcome's facts held back from the row (store_put_conversation) until the
 * conversation's metrics are recomputed in the same transaction, which then writes both in one
 * UPDATE; whatever is still held at COMMIT is written first. */
typedef struct held_outcome {
    size_t slot; /* its conversation's slot in ensured */
    bool is_written;
    scoredb_outcome o;
} held_outcome;

struct store {
    sqlite3 *db;
    sqlite3_stmt *stmt[N_STMTS];
    sqlite3_stmt *utt_multi[MULTI_ROWS + 1]; /* [k]: a k-row insert, prepared when first used */
    /* Rows a multi-row insert stored are told from the resent ones by their rowids, which are
     * consecutive above the previous largest as long as that stays below SQLite's limit. Past
     * half of it (never, in practice) utterances go one to a statement. */
    bool is_multi_off;
    int64_t last_seq; /* the seq of the latest utterance store_put_utterance stored or found */
    scoredb_marker_row *mrows; /* store_put_utterances: markers of the rows stored, not yet */
    size_t n_mrows, cap_mrows;
    ensured *ensured;
    held_outcome *held; /* n_held of them this transaction, see held_outcome */
    size_t n_held, cap_held;
    scoredb *sdb; /* markers, metrics and rescoring on the same connection */
    int64_t page_size;       /* bytes */
    int64_t max_pages_none;  /* PRAGMA max_page_count when uncapped (the library's limit) */
    int64_t max_pages;       /* the cap in effect */
    char errmsg[512]; /* the last failure: what was being done and SQLite's message */
};

static uint64_t str_hash(const char *c)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *c; c++) {
        h ^= (unsigned char)*c;
        h *= 0x100000001b3ULL;
    }
    return h | 1; /* 0 marks an empty slot */
}

static void ensured_clear(ensured *e)
{
    for (size_t k = 0; k < e->n; k++) {
        size_t i = e->used[k];
        free(e->id[i]);
        e->id[i] = NULL;
        e->hash[i] = 0;
        e->is_created[i] = false;
        e->held[i] = 0;
    }
    e->n = 0;
}

/* The slot holding id, or -1. */
static long ensured_find(const ensured *e, const char *id)
{
    uint64_t h = str_hash(id);
    for (size_t i = h % ENSURED_SLOTS;; i = (i + 1) % ENSURED_SLOTS) {
        if (!e->hash[i])
            return -1;
        if (e->hash[i] == h && strcmp(e->id[i], id) == 0)
            return (long)i;
    }
}

/* Notes that the transaction inserted the row of id (recorded by ensured_check). */
static void ensured_set_created(ensured *e, const char *id)
{
    long i = ensured_find(e, id);
    if (i >= 0)
        e->is_created[i] = true;
}

/* Returns true when id was already recorded; records it otherwise (while there is room). */
static bool ensured_check(ensured *e, const char *id)
{
    uint64_t h = str_hash(id);
    for (size_t i = h % ENSURED_SLOTS;; i = (i + 1) % ENSURED_SLOTS) {
        if (!e->hash[i]) {
            if (e->n * 2 >= ENSURED_SLOTS || !(e->id[i] = strdup(id)))
                return false; /* full: just run the statement */
            e->hash[i] = h;
            e->used[e->n++] = (uint16_t)i;
            return false;
        }
        if (e->hash[i] == h && strcmp(e->id[i], id) == 0)
            return true;
    }
}

/* Wall-clock time in milliseconds since the epoch, for created_at/updated_at. */
static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Records "what: <sqlite3_errmsg>" and returns -1. Call before resetting the statement. */
static int fail_sql(store *s, const char *what)
{
    snprintf(s->errmsg, sizeof s->errmsg, "%s: %s", what, sqlite3_errmsg(s->db));
    return -1;
}

static int fail_with(store *s, const char *what)
{
    snprintf(s->errmsg, sizeof s->errmsg, "%s", what);
    return -1;
}

static void done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/* Steps a statement that returns no rows to completion. Returns 0 or -1. */
static int run(store *s, enum stmt_id id, const char *what)
{
    sqlite3_stmt *st = s->stmt[id];
    int rc = sqlite3_step(st);
    int ret = rc == SQLITE_DONE ? 0 : fail_sql(s, what);
    done(st);
    return ret;
}

static void bind_text_or_null(sqlite3_stmt *st, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

/* WIRE_ABSENT is absent. */
static void bind_int_or_null(sqlite3_stmt *st, int i, int64_t v)
{
    if (v == WIRE_ABSENT)
        sqlite3_bind_null(st, i);
    else
        sqlite3_bind_int64(st, i, v);
}

/* -1 (any negative) is absent; anything else is stored as 0 or 1. */
static void bind_flag_or_null(sqlite3_stmt *st, int i, int v)
{
    if (v < 0)
        sqlite3_bind_null(st, i);
    else
        sqlite3_bind_int(st, i, v != 0);
}

/* ---- opening and migrations ------------------------------------------------------------- */

/* Runs one statement through sqlite3_exec on the raw connection (pragmas, migrations). */
static int exec_sql(sqlite3 *db, const char *sql, char *err, size_t err_len, const char *what)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) == SQLITE_OK)
        return 0;
    snprintf(err, err_len, "%s: %s", what, msg ? msg : sqlite3_errmsg(db));
    sqlite3_free(msg);
    return -1;
}

/* Reads a pragma's single value as text (into buf) or integer (into *num, when not NULL). */
static int read_pragma(sqlite3 *db, const char *sql, char *buf, size_t buf_len, int64_t *num,
                       char *err, size_t err_len)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        snprintf(err, err_len, "%s: %s", sql, sqlite3_errmsg(db));
        sqlite3_finalize(st);
        return -1;
    }
    if (buf) {
        const unsigned char *t = sqlite3_column_text(st, 0);
        snprintf(buf, buf_len, "%s", t ? (const char *)t : "");
    }
    if (num)
        *num = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return 0;
}

static int n_known_migrations(void)
{
    int n = 0;
    while (schema_migrations[n])
        n++;
    return n;
}

/* The embedded list must be 0001, 0002, ... with no gap: a migration's position is the
 * user_version it produces, so a missing or doubled number would skew every later one. */
static int check_migration_names(int n, char *err, size_t err_len)
{
    for (int i = 0; i < n; i++) {
        const char *name = schema_names[i];
        char *end = NULL;
        long num = name ? strtol(name, &end, 10) : 0;
        if (!name || end != name + 4 || *end != '_' || num != i + 1) {
            snprintf(err, err_len,
                     "embedded migration %d is named \"%s\"; expected %04d_name (build error)",
                     i + 1, name ? name : "(null)", i + 1);
            return -1;
        }
    }
    return 0;
}

static int refuse_newer(const char *path, int64_t version, int n_known, char *err, size_t err_len)
{
    snprintf(err, err_len,
             "database %s has schema version %lld, newer than this attuned knows (%d, up to "
             "migration %s); refusing to open it: use the attuned that wrote it or a newer one",
             path, (long long)version, n_known, n_known > 0 ? schema_names[n_known - 1] : "none");
    return -1;
}

/* Applies the missing migrations, each in its own IMMEDIATE transaction that also bumps
 * user_version. The version is read again under the write lock, so two processes opening the
 * same new file cannot both apply a migration. */
static int migrate(sqlite3 *db, const char *path, char *err, size_t err_len)
{
    int n_known = n_known_migrations();
    if (check_migration_names(n_known, err, err_len))
        return -1;
    for (;;) {
        if (exec_sql(db, "BEGIN IMMEDIATE", err, err_len, "cannot lock the database to migrate"))
            return -1;
        int64_t version;
        if (read_pragma(db, "PRAGMA user_version", NULL, 0, &version, err, err_len))
            goto fail;
        if (version < 0) {
            snprintf(err, err_len, "database %s has schema version %lld, which no attuned writes;"
                     " refusing to open it", path, (long long)version);
            goto fail;
        }
        if (version > n_known) {
            refuse_newer(path, version, n_known, err, err_len);
            goto fail;
        }
        if (version == n_known)
            return exec_sql(db, "COMMIT", err, err_len, "migration check");

        char what[128];
        snprintf(what, sizeof what, "migration %s failed", schema_names[version]);
        if (exec_sql(db, schema_migrations[version], err, err_len, what))
            goto fail;
        char bump[64];
        snprintf(bump, sizeof bump, "PRAGMA user_version = %lld", (long long)version + 1);
        if (exec_sql(db, bump, err, err_len, what) || exec_sql(db, "COMMIT", err, err_len, what))
            goto fail;
    }
fail:
    /* The error message is already in err; a failed ROLLBACK here changes nothing for the
     * caller, who closes the connection. */
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

int store_open(const char *path, store **out, char *err, size_t err_len)
{
    *out = NULL;
    /* SQLite's memory statistics take a global mutex on every allocation; nothing reads them.
     * This only works before the library initialises, and fails harmlessly afterwards. */
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    store *s = calloc(1, sizeof *s);
    if (!s || !(s->ensured = calloc(1, sizeof *s->ensured))) {
        free(s);
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    int rc = sqlite3_open_v2(path, &s->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, err_len, "cannot open database %s: %s", path,
                 s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        goto fail;
    }
    sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS);

    /* Refuse a newer database before changing anything in it (even its journal mode). */
    int64_t version;
    if (read_pragma(s->db, "PRAGMA user_version", NULL, 0, &version, err, err_len))
        goto fail;
    if (version > n_known_migrations()) {
        refuse_newer(path, version, n_known_migrations(), err, err_len);
        goto fail;
    }

    /* Before anything is written: only a new, empty database takes it. */
    char page_size[64];
    snprintf(page_size, sizeof page_size, "PRAGMA page_size = %d", NEW_DB_PAGE_SIZE);
    if (exec_sql(s->db, page_size, err, err_len, "cannot set the page size"))
        goto fail;
    char mode[32];
    if (read_pragma(s->db, "PRAGMA journal_mode = WAL", mode, sizeof mode, NULL, err, err_len))
        goto fail;
    /* An in-memory database (tests) cannot be WAL; a file that stays in another mode would let
     * analysts' readers block the writer, so it is refused. */
    if (strcmp(mode, "wal") != 0 && strcmp(mode, "memory") != 0) {
        snprintf(err, err_len, "database %s: cannot switch to WAL (journal_mode is %s)", path,
                 mode);
        goto fail;
    }
    /* A 32 MiB page cache: with many conversations interleaved the default 2 MiB thrashes,
     * turning every batch into page reads, and a batch's dirty pages (about 14 MiB for a
     * 16,384-row batch over 64 connections) must fit or spill into the WAL before the commit.
     * 64 MiB was no faster and 33 MB more resident. Foreign keys off: see the top of the file.
     * Statement journals in memory: a multi-row insert that may fail a CHECK keeps the pages
     * it changes that the transaction had already changed, a few pages a statement, and with
     * many conversations interleaved these spilled to a temporary file (65 MB written for
     * the 284,654-utterance bench over 64 connections). The writer makes no temp tables. */
    char pragmas[256];
    snprintf(pragmas, sizeof pragmas, "PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF;"
             " PRAGMA cache_size = -32768; PRAGMA temp_store = MEMORY;"
             " PRAGMA journal_size_limit = %d", WAL_SIZE_LIMIT_BYTES);
    if (exec_sql(s->db, pragmas, err, err_len, "cannot set pragmas"))
        goto fail;

    if (migrate(s->db, path, err, err_len))
        goto fail;
    if (read_pragma(s->db, "PRAGMA page_size", NULL, 0, &s->page_size, err, err_len) ||
        read_pragma(s->db, "PRAGMA max_page_count", NULL, 0, &s->max_pages_none, err, err_len))
        goto fail;
    char autocheckpoint[64];
    snprintf(autocheckpoint, sizeof autocheckpoint, "PRAGMA wal_autocheckpoint = %lld",
             (long long)(WAL_AUTOCHECKPOINT_BYTES / (s->page_size > 0 ? s->page_size : 4096)));
    if (exec_sql(s->db, autocheckpoint, err, err_len, "cannot set wal_autocheckpoint"))
        goto fail;
    s->max_pages = s->max_pages_none;

    for (int i = 0; i < N_STMTS; i++) {
        rc = sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->stmt[i],
                                NULL);
        if (rc != SQLITE_OK) {
            snprintf(err, err_len, "cannot prepare statement %d: %s", i, sqlite3_errmsg(s->db));
            goto fail;
        }
    }
    int64_t max_rowid;
    if (read_pragma(s->db, "SELECT COALESCE(MAX(rowid), 0) FROM utterances", NULL, 0, &max_rowid,
                    err, err_len))
        goto fail;
    s->is_multi_off = max_rowid > INT64_MAX / 2;
    if (scoredb_new(s->db, &s->sdb, err, err_len))
        goto fail;
    *out = s;
    return 0;
fail:
    store_close(s);
    return -1;
}

void store_close(store *s)
{
    if (!s)
        return;
    scoredb_free(s->sdb);
    for (int i = 0; i < N_STMTS; i++)
        sqlite3_finalize(s->stmt[i]);
    for (int k = 0; k <= MULTI_ROWS; k++)
        sqlite3_finalize(s->utt_multi[k]);
    /* Every statement is finalized, so this closes (and, as the last connection, checkpoints
     * the WAL) rather than leaving a zombie connection. */
    sqlite3_close(s->db);
    if (s->ensured) {
        ensured_clear(s->ensured);
        free(s->ensured);
    }
    free(s->mrows);
    free(s->held);
    free(s);
}

/* ---- transactions ----------------------------------------------------------------------- */

int store_begin(store *s)
{
    ensured_clear(s->ensured);
    s->n_held = 0;
    return run(s, ST_BEGIN, "BEGIN IMMEDIATE");
}

static int write_held(store *s);

/* A COMMIT that fails (SQLITE_BUSY, a full disk) can leave the transaction open; the caller
 * then calls store_rollback, which ends it. */
int store_commit(store *s)
{
    if (write_held(s))
        return -1;
    return run(s, ST_COMMIT, "COMMIT");
}

void store_rollback(store *s)
{
    /* Some errors (I/O, disk full, out of memory) make SQLite roll back on its own; a second
     * ROLLBACK would only fail with "no transaction is active". */
    ensured_clear(s->ensured);
    s->n_held = 0;
    if (sqlite3_get_autocommit(s->db))
        return;
    run(s, ST_ROLLBACK, "ROLLBACK");
}

int store_checkpoint(store *s, bool *is_complete)
{
    *is_complete = false;
    /* Without waiting: a reader still on the WAL makes the checkpoint copy what it can and
     * return SQLITE_BUSY, instead of holding the writer for the busy timeout. */
    sqlite3_busy_timeout(s->db, 0);
    int rc = sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
    sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS);
    if (rc == SQLITE_OK)
        *is_complete = true;
    else if (rc != SQLITE_BUSY)
        return fail_sql(s, "checkpoint");
    return 0;
}

bool store_error_is_full(const store *s)
{
    return (sqlite3_errcode(s->db) & 0xff) == SQLITE_FULL;
}

bool store_error_is_transient(const store *s)
{
    switch (sqlite3_errcode(s->db) & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_FULL:
    case SQLITE_IOERR:
    case SQLITE_NOMEM:
    case SQLITE_CANTOPEN:
    case SQLITE_PROTOCOL:
        return true;
    default:
        return false;
    }
}

const char *store_errmsg(const store *s)
{
    return s->errmsg[0] ? s->errmsg : sqlite3_errmsg(s->db);
}

/* ---- size ------------------------------------------------------------------------------- */

int store_set_max_db_mb(store *s, int max_db_mb)
{
    int64_t pages = s->max_pages_none;
    if (max_db_mb > 0 && (int64_t)max_db_mb * 1048576 / s->page_size < pages)
        pages = (int64_t)max_db_mb * 1048576 / s->page_size;
    /* SQLite never sets it below the database's current page count, and answers the value it
     * set. */
    char sql[64], err[256];
    snprintf(sql, sizeof sql, "PRAGMA max_page_count = %lld", (long long)pages);
    int64_t got;
    if (read_pragma(s->db, sql, NULL, 0, &got, err, sizeof err))
        return fail_with(s, err);
    s->max_pages = got;
    return 0;
}

int store_size(store *s, int64_t *bytes, int64_t *max_bytes)
{
    sqlite3_stmt *st = s->stmt[ST_PAGE_COUNT];
    if (sqlite3_step(st) != SQLITE_ROW) {
        fail_sql(s, "cannot read the page count");
        done(st);
        return -1;
    }
    *bytes = sqlite3_column_int64(st, 0) * s->page_size;
    done(st);
    *max_bytes = s->max_pages < s->max_pages_none ? s->max_pages * s->page_size : 0;
    return 0;
}

/* ---- writes ----------------------------------------------------------------------------- */

static int ensure_conversation(store *s, const char *conversation_id, const char *what);

/* Writes an end's or an outcome's facts into the row at once (ST_CONV_OUTCOME). */
static int write_outcome(store *s, const char *conversation_id, const scoredb_outcome *o)
{
    sqlite3_stmt *up = s->stmt[ST_CONV_OUTCOME];
    sqlite3_bind_text(up, 1, conversation_id, -1, SQLITE_STATIC);
    scoredb_bind_outcome(up, 2, o);
    bind_flag_or_null(up, 10, o->escalated);
    return run(s, ST_CONV_OUTCOME, "cannot store outcome");
}

/* Holds o back for the conversation's metrics recomputation in this transaction (see
 * held_outcome), merged over what an earlier end or outcome of the transaction holds, as the
 * UPDATEs would have merged them. Returns false when it cannot be held (outside a transaction,
 * a full ensured table, no memory): the caller writes it now. */
static bool hold_outcome(store *s, const char *conversation_id, const scoredb_outcome *o)
{
    if (sqlite3_get_autocommit(s->db))
        return false; /* no COMMIT of ours would write it */
    long slot = ensured_find(s->ensured, conversation_id);
    if (slot < 0)
        return false;
    uint32_t ix = s->ensured->held[slot];
    if (ix && !s->held[ix - 1].is_written) {
        scoredb_outcome_merge(&s->held[ix - 1].o, o);
        return true;
    }
    if (s->n_held == s->cap_held) {
        size_t cap = s->cap_held ? s->cap_held * 2 : 256;
        held_outcome *v = cap <= UINT32_MAX - 1 ? realloc(s->held, cap * sizeof *v) : NULL;
        if (!v)
            return false;
        s->held = v;
        s->cap_held = cap;
    }
    s->held[s->n_held] = (held_outcome){(size_t)slot, false, *o};
    s->ensured->held[slot] = (uint32_t)++s->n_held;
    return true;
}

/* The outcome held back for a conversation and not yet written, or NULL. */
static held_outcome *held_for(store *s, const char *conversation_id)
{
    if (!s->n_held)
        return NULL;
    long slot = ensured_find(s->ensured, conversation_id);
    if (slot < 0 || !s->ensured->held[slot])
        return NULL;
    held_outcome *h = &s->held[s->ensured->held[slot] - 1];
    return h->is_written ? NULL : h;
}

/* Before COMMIT: writes the outcomes still held back (no recomputation took them). */
static int write_held(store *s)
{
    for (size_t i = 0; i < s->n_held; i++) {
        held_outcome *h = &s->held[i];
        if (h->is_written)
            continue;
        if (write_outcome(s, s->ensured->id[h->slot], &h->o))
            return -1;
        h->is_written = true;
    }
    return 0;
}

int store_put_conversation(store *s, const char *conversation_id, const conv_facts *f)
{
    if (!conversation_id || !f)
        return fail_with(s, "store_put_conversation: no conversation_id or facts");
    bool has_meta = f->channel || f->queue || f->agent_id || f->customer_id ||
                    f->started_at != WIRE_ABSENT;
    if (!has_meta) {
        if (ensure_conversation(s, conversation_id, "cannot create conversation"))
            return -1;
        scoredb_outcome o = {
            .ended_at = f->ended_at,
            .resolved_at = f->resolved_at,
            .resolved = f->resolved < 0 ? -1 : f->resolved != 0,
            .escalated = f->escalated < 0 ? -1 : f->escalated != 0,
            .transferred = f->transferred < 0 ? -1 : f->transferred != 0,
            .csat = f->csat,
            .nps = f->nps,
            .ended = f->ended,
            .updated_at = now_ms(),
        };
        if (hold_outcome(s, conversation_id, &o))
            return 0;
        return write_outcome(s, conversation_id, &o);
    }
    /* What an earlier end or outcome of the transaction holds back goes first: the merge's
     * fields must win over it, as they would have in arrival order. */
    long slot = ensured_find(s->ensured, conversation_id);
    if (slot >= 0 && s->ensured->held[slot]) {
        held_outcome *h = &s->held[s->ensured->held[slot] - 1];
        if (!h->is_written && write_outcome(s, conversation_id, &h->o))
            return -1;
        h->is_written = true;
    }
    ensured_check(s->ensured, conversation_id);
    sqlite3_stmt *st = s->stmt[ST_CONV_MERGE];
    sqlite3_bind_text(st, 1, conversation_id, -1, SQLITE_STATIC);
    bind_text_or_null(st, 2, f->channel);
    bind_text_or_null(st, 3, f->queue);
    bind_text_or_null(st, 4, f->agent_id);
    bind_text_or_null(st, 5, f->customer_id);
    bind_int_or_null(st, 6, f->started_at);
    bind_int_or_null(st, 7, f->ended_at);
    bind_flag_or_null(st, 8, f->resolved);
    bind_int_or_null(st, 9, f->resolved_at);
    if (isnan(f->csat))
        sqlite3_bind_null(st, 10);
    else
        sqlite3_bind_double(st, 10, f->csat);
    bind_int_or_null(st, 11, f->nps);
    bind_flag_or_null(st, 12, f->escalated);
    bind_flag_or_null(st, 13, f->transferred);
    sqlite3_bind_int64(st, 14, now_ms());
    sqlite3_bind_int(st, 15, f->ended ? 1 : 0);
    /* Only an insert sets the last rowid (an upsert that updates leaves it), and a new row's is
     * never 0: so it tells whether the row was created. */
    sqlite3_set_last_insert_rowid(s->db, 0);
    if (run(s, ST_CONV_MERGE, "cannot store conversation"))
        return -1;
    if (sqlite3_last_insert_rowid(s->db) != 0)
        ensured_set_created(s->ensured, conversation_id);
    return 0;
}

/* Binds u, numbered seq, to parameters base + 1 ... base + UTT_PARAMS of st. */
static void bind_utterance(sqlite3_stmt *st, int base, const stored_utterance *u, int64_t seq)
{
    const turn *t = u->turn;
    sqlite3_bind_text(st, base + 1, u->conversation_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, base + 2, seq);
    sqlite3_bind_text(st, base + 3, at_speaker_name(t->speaker), -1, SQLITE_STATIC);
    bind_text_or_null(st, base + 4, t->participant_id);
    bind_int_or_null(st, base + 5, t->ts);
    bind_int_or_null(st, base + 6, t->start_ms);
    bind_int_or_null(st, base + 7, t->end_ms);
    if (u->text)
        sqlite3_bind_text(st, base + 8, u->text, (int)u->text_len, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, base + 8);
    sqlite3_bind_double(st, base + 9, u->sentiment.neg);
    sqlite3_bind_double(st, base + 10, u->sentiment.neu);
    sqlite3_bind_double(st, base + 11, u->sentiment.pos);
    sqlite3_bind_double(st, base + 12, u->sentiment.compound);
    if (isnan(u->frustration_score))
        sqlite3_bind_null(st, base + 13);
    else
        sqlite3_bind_double(st, base + 13, u->frustration_score);
    bind_text_or_null(st, base + 14, u->model_id);
    sqlite3_bind_int64(st, base + 15, (int64_t)u->category_mask);
    bind_flag_or_null(st, base + 16, u->solution_first);
    sqlite3_bind_int(st, base + 17, u->redacted ? 1 : 0);
}

/* Makes sure the conversation row of an utterance exists (see the top of the file). */
static int ensure_conversation(store *s, const char *conversation_id, const char *what)
{
    if (ensured_check(s->ensured, conversation_id))
        return 0;
    sqlite3_stmt *st = s->stmt[ST_CONV_ENSURE];
    sqlite3_bind_text(st, 1, conversation_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, now_ms());
    if (run(s, ST_CONV_ENSURE, what))
        return -1;
    if (sqlite3_changes(s->db) == 1)
        ensured_set_created(s->ensured, conversation_id);
    return 0;
}

bool store_is_new_conversation(store *s, const char *conversation_id)
{
    long i = ensured_find(s->ensured, conversation_id);
    return i >= 0 && s->ensured->is_created[i];
}

static int check_utterance(store *s, const stored_utterance *u)
{
    if (!u || !u->conversation_id || !u->turn)
        return fail_with(s, "store_put_utterance: no conversation_id or turn");
    if (u->text && u->text_len > INT_MAX)
        return fail_with(s, "cannot store utterance: text longer than 2 GiB");
    if (u->n_markers && !u->markers)
        return fail_with(s, "store_put_utterance: n_markers without markers");
    return 0;
}

static int put_utterance(store *s, const stored_utterance *u, bool *inserted)
{
    const turn *t = u->turn;
    sqlite3_stmt *st;
    if (ensure_conversation(s, u->conversation_id, "cannot create conversation for utterance"))
        return -1;

    int64_t seq = t->seq;
    if (seq == WIRE_ABSENT) {
        /* Numbered in arrival order: one past the highest stored seq, read under the same
         * write transaction as the insert, through the primary key index. */
        st = s->stmt[ST_NEXT_SEQ];
        sqlite3_bind_text(st, 1, u->conversation_id, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_ROW) {
            fail_sql(s, "cannot number utterance");
            done(st);
            return -1;
        }
        seq = sqlite3_column_int64(st, 0);
        done(st);
    }

    bind_utterance(s->stmt[ST_UTT_INSERT], 0, u, seq);
    if (run(s, ST_UTT_INSERT, "cannot store utterance"))
        return -1;
    s->last_seq = seq;
    if (sqlite3_changes(s->db) != 1) {
        *inserted = false; /* a resend: the stored row and its markers stay as they are */
        return 0;
    }

    if (scoredb_put_markers(s->sdb, u->conversation_id, seq, u->markers, u->n_markers))
        return fail_with(s, scoredb_errmsg(s->sdb));
    *inserted = true;
    return 0;
}

int store_put_utterance(store *s, const stored_utterance *u, bool *inserted)
{
    bool is_new = false;
    if (inserted)
        *inserted = false;
    if (check_utterance(s, u))
        return -1;

    /* No savepoint per utterance (it made SQLite journal every page an utterance touched):
     * a failure here fails the caller's transaction, which the writer rolls back and replays
     * item by item to isolate the one that cannot be stored. */
    if (put_utterance(s, u, &is_new))
        return -1;
    if (inserted)
        *inserted = is_new;
    return 0;
}

/* The k-row insert, prepared the first time it is needed; NULL on failure (errmsg set). */
static sqlite3_stmt *utt_multi_stmt(store *s, size_t k)
{
    if (s->utt_multi[k])
        return s->utt_multi[k];
    static const char head[] = "INSERT INTO utterances " UTT_COLUMNS " VALUES ";
    static const char row[] = "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";
    static const char tail[] = " ON CONFLICT (conversation_id, seq) DO NOTHING";
    char sql[sizeof head + MULTI_ROWS * sizeof row + sizeof tail];
    size_t n = 0;
    memcpy(sql, head, sizeof head - 1);
    n += sizeof head - 1;
    for (size_t j = 0; j < k; j++) {
        if (j)
            sql[n++] = ',';
        memcpy(sql + n, row, sizeof row - 1);
        n += sizeof row - 1;
    }
    memcpy(sql + n, tail, sizeof tail);
    if (sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s->utt_multi[k], NULL)) {
        fail_sql(s, "cannot prepare the insert of several utterances");
        return NULL;
    }
    return s->utt_multi[k];
}

/* Which of the k rows just offered to a multi-row insert it stored (is_new), given that it
 * stored n_changed of them: the others were there already (a resend), or were offered twice in
 * the same statement. Stored rows got the rowids up to the last one it inserted, consecutively
 * (see is_multi_off), and older rows have smaller ones. */
static int tell_new_rows(store *s, const stored_utterance *us, size_t k, int64_t n_changed,
                         bool *is_new)
{
    int64_t last = sqlite3_last_insert_rowid(s->db), first = last - n_changed + 1;
    int64_t rowid[MULTI_ROWS];
    sqlite3_stmt *st = s->stmt[ST_UTT_ROWID];
    for (size_t j = 0; j < k; j++) {
        sqlite3_bind_text(st, 1, us[j].conversation_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, us[j].turn->seq);
        int rc = sqlite3_step(st);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
            fail_sql(s, "cannot look up a stored utterance");
            done(st);
            return -1;
        }
        rowid[j] = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
        done(st);
        is_new[j] = rc == SQLITE_ROW && rowid[j] >= first && rowid[j] <= last;
        for (size_t i = 0; i < j && is_new[j]; i++)
            if (is_new[i] && rowid[i] == rowid[j])
                is_new[j] = false; /* the same utterance twice in one statement */
    }
    return 0;
}

/* Stores the marker rows gathered by gather_markers, several to a statement. */
static int flush_markers(store *s)
{
    int rc = scoredb_put_marker_rows(s->sdb, s->mrows, s->n_mrows);
    s->n_mrows = 0;
    return rc ? fail_with(s, scoredb_errmsg(s->sdb)) : 0;
}

/* Gathers the markers of a stored utterance for flush_markers (or, without memory to gather
 * them, stores them at once). */
static int gather_markers(store *s, const stored_utterance *u)
{
    if (s->n_mrows + u->n_markers > s->cap_mrows) {
        size_t cap = s->cap_mrows ? s->cap_mrows : 64;
        while (cap < s->n_mrows + u->n_markers)
            cap *= 2;
        scoredb_marker_row *v = realloc(s->mrows, cap * sizeof *v);
        if (!v) {
            if (flush_markers(s) ||
                scoredb_put_markers(s->sdb, u->conversation_id, u->turn->seq, u->markers,
                                    u->n_markers))
                return fail_with(s, scoredb_errmsg(s->sdb));
            return 0;
        }
        s->mrows = v;
        s->cap_mrows = cap;
    }
    for (size_t i = 0; i < u->n_markers; i++)
        s->mrows[s->n_mrows++] = (scoredb_marker_row){u->conversation_id, u->turn->seq, i,
                                                      &u->markers[i]};
    return 0;
}

/* Up to MULTI_ROWS utterances, each with its seq, in one statement; the markers of those it
 * stored are gathered for flush_markers. */
static int put_chunk(store *s, const stored_utterance *us, size_t k, size_t *n_duplicates,
                     bool *is_new_out)
{
    for (size_t j = 0; j < k; j++) {
        /* A conversation's lines mostly come in runs: the one before made sure already. */
        if (j && strcmp(us[j].conversation_id, us[j - 1].conversation_id) == 0)
            continue;
        if (ensure_conversation(s, us[j].conversation_id,
                                "cannot create conversation for utterance"))
            return -1;
    }
    sqlite3_stmt *st = utt_multi_stmt(s, k);
    if (!st)
        return -1;
    for (size_t j = 0; j < k; j++)
        bind_utterance(st, (int)j * UTT_PARAMS, &us[j], us[j].turn->seq);
    int rc = sqlite3_step(st);
    int64_t n_changed = sqlite3_changes(s->db);
    /* Reset only: every use binds all k * UTT_PARAMS parameters again, and clearing them first
     * cost as much as a tenth of the binding. */
    if (rc != SQLITE_DONE) {
        fail_sql(s, "cannot store utterance");
        sqlite3_reset(st);
        return -1;
    }
    sqlite3_reset(st);
    bool is_new[MULTI_ROWS];
    for (size_t j = 0; j < k; j++)
        is_new[j] = n_changed == (int64_t)k;
    if (n_changed > 0 && n_changed < (int64_t)k && tell_new_rows(s, us, k, n_changed, is_new))
        return -1;
    if (n_changed > 0 && sqlite3_last_insert_rowid(s->db) > INT64_MAX / 2)
        s->is_multi_off = true;
    for (size_t j = 0; j < k; j++) {
        if (is_new_out)
            is_new_out[j] = is_new[j];
        if (!is_new[j]) {
            (*n_duplicates)++; /* a resend: the stored row and its markers stay as they are */
            continue;
        }
        if (gather_markers(s, &us[j]))
            return -1;
    }
    return 0;
}

int store_put_utterances(store *s, const stored_utterance *us, size_t n, size_t *n_duplicates,
                         bool *is_new)
{
    *n_duplicates = 0;
    for (size_t i = 0; i < n; i++) {
        if (check_utterance(s, &us[i]))
            return -1;
        if (us[i].turn->seq == WIRE_ABSENT)
            return fail_with(s, "store_put_utterances: an utterance without seq");
    }
    s->n_mrows = 0;
    for (size_t i = 0; i < n;) {
        size_t k = n - i < MULTI_ROWS ? n - i : MULTI_ROWS;
        if (s->is_multi_off || k == 1) {
            bool inserted;
            if (put_utterance(s, &us[i], &inserted))
                return -1;
            *n_duplicates += !inserted;
            if (is_new)
                is_new[i] = inserted;
            i++;
            continue;
        }
        if (put_chunk(s, &us[i], k, n_duplicates, is_new ? is_new + i : NULL))
            return -1;
        i += k;
    }
    /* After every utterance: a marker's row refers to its utterance's. */
    return s->n_mrows ? flush_markers(s) : 0;
}

/* ---- metrics and rescoring -------------------------------------------------------------- */

int store_update_metrics(store *s, const char *conversation_id, int64_t silence_threshold_ms)
{
    held_outcome *h = held_for(s, conversation_id);
    if (h) {
        at_turn *turns = NULL;
        size_t n = 0, cap = 0;
        int rc = scoredb_read_turns(s->sdb, conversation_id, &turns, &n, &cap);
        if (rc == 0)
            rc = scoredb_update_metrics_outcome(s->sdb, conversation_id, turns, n,
                                                silence_threshold_ms, &h->o);
        free(turns);
        if (rc)
            return fail_with(s, scoredb_errmsg(s->sdb));
        h->is_written = true;
    } else if (scoredb_update_metrics(s->sdb, conversation_id, silence_threshold_ms)) {
        return fail_with(s, scoredb_errmsg(s->sdb));
    }
    sqlite3_stmt *st = s->stmt[ST_PENDING_DELETE];
    sqlite3_bind_text(st, 1, conversation_id, -1, SQLITE_STATIC);
    return run(s, ST_PENDING_DELETE, "cannot clear deferred metrics");
}

int store_update_metrics_with(store *s, const char *conversation_id, const at_turn *turns,
                              size_t n_turns, int64_t silence_threshold_ms)
{
    held_outcome *h = held_for(s, conversation_id);
    if (scoredb_update_metrics_outcome(s->sdb, conversation_id, turns, n_turns,
                                       silence_threshold_ms, h ? &h->o : NULL))
        return fail_with(s, scoredb_errmsg(s->sdb));
    if (h)
        h->is_written = true;
    sqlite3_stmt *st = s->stmt[ST_PENDING_DELETE];
    sqlite3_bind_text(st, 1, conversation_id, -1, SQLITE_STATIC);
    return run(s, ST_PENDING_DELETE, "cannot clear deferred metrics");
}

int store_read_turns(store *s, const char *conversation_id, at_turn **turns, size_t *n,
                     size_t *cap)
{
    if (scoredb_read_turns(s->sdb, conversation_id, turns, n, cap))
        return fail_with(s, scoredb_errmsg(s->sdb));
    return 0;
}

int store_defer_metrics(store *s, const char *conversation_id)
{
    sqlite3_stmt *st = s->stmt[ST_PENDING_INSERT];
    sqlite3_bind_text(st, 1, conversation_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, now_ms());
    return run(s, ST_PENDING_INSERT, "cannot record deferred metrics");
}

int store_pending_metrics(store *s, int (*fn)(void *ud, const char *conversation_id), void *ud)
{
    sqlite3_stmt *st = s->stmt[ST_PENDING_SELECT];
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(st, 0);
        if (id && fn(ud, id)) {
            done(st);
            return fail_with(s, "out of memory listing deferred metrics");
        }
    }
    int ret = rc == SQLITE_DONE ? 0 : fail_sql(s, "cannot list deferred metrics");
    done(st);
    return ret;
}

int store_rescore(store *s, const at_model *model, at_scratch *scratch, rescore_cursor *cur,
                  size_t max_rows, int64_t silence_threshold_ms, rescore_counts *counts)
{
    int rc = scoredb_rescore(s->sdb, model, scratch, cur, max_rows, silence_threshold_ms,
                             counts);
    if (rc < 0)
        return fail_with(s, scoredb_errmsg(s->sdb));
    return rc;
}

int store_conversation_routing(store *s, const char *conversation_id, char **queue,
                               char **agent_id)
{
    *queue = *agent_id = NULL;
    sqlite3_stmt *st = s->stmt[ST_ROUTING_SELECT];
    sqlite3_bind_text(st, 1, conversation_id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const char *q = (const char *)sqlite3_column_text(st, 0);
        const char *a = (const char *)sqlite3_column_text(st, 1);
        *queue = q ? strdup(q) : NULL;
        *agent_id = a ? strdup(a) : NULL;
    } else if (rc != SQLITE_DONE) {
        fail_sql(s, "cannot read conversation routing");
        done(st);
        return -1;
    }
    done(st);
    return 0;
}

int64_t store_last_seq(const store *s)
{
    return s->last_seq;
}
