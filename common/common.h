/*
 * common.h: code that attuned and the attune command share beyond lib (which never touches
 * SQLite or files other than lexicons). Both link these modules; nothing here uses libuv.
 *
 *   dblock.c   the advisory lock that makes one process the writer of a database file
 *   scoredb.c  what is done to scored data in SQLite: markers, metrics, rescoring
 *   timeparse.c  RFC 3339 times
 */
#ifndef ATTUNE_COMMON_H
#define ATTUNE_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "attune.h"

/* ---- dblock.c --------------------------------------------------------------------------- */

/* One writer per database file (ARCHITECTURE.md): attuned holds an exclusive flock() on
 * "<db>-attuned.lock" for as long as it has the database open, and `attune rescore` takes the same
 * lock before it writes offline. The lock file is created when missing and never removed
 * (removing it would let two processes lock two different files of the same name). */

/* Writes "<db_path>-attuned.lock" into out (len bytes). Returns 0, or -1 when it does not fit. */
int dblock_path(const char *db_path, char *out, size_t len);
/* Takes the lock without waiting. Returns 0 with *fd_out open (keep it open while the lock is
 * needed; dblock_release releases it), 1 when another process holds it (*fd_out = -1), or -1 with
 * a reason in err. */
int dblock_acquire(const char *db_path, int *fd_out, char *err, size_t err_len);
/* Records the holder in the lock file: its pid and, when not NULL, the HOST:PORT where it takes
 * protocol connections, so that `attune rescore` can find the daemon. Best effort: a lock file
 * that could only be opened read-only keeps its old text. */
void dblock_describe(int fd, const char *listen);
/* Reads what the holder recorded: its listen address into listen (len bytes, "" when none) and
 * its pid into *pid (0 when none). Returns 0, or -1 when the file cannot be read. */
int dblock_read(const char *db_path, char *listen, size_t len, long *pid);
/* Releases the lock and closes fd; a negative fd is a no-op. */
void dblock_release(int fd);

/* ---- timeparse.c ------------------------------------------------------------------------ */

/* An RFC 3339 date-time (YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM); 't' or a space for 'T'
 * and 'z' for 'Z' as RFC 3339 allows) as milliseconds since the epoch in *ms. Digits below a
 * millisecond are dropped; a leap second (:60) counts as :59. Returns 0, or -1 when s is not
 * one. */
int rfc3339_ms(const char *s, int64_t *ms);

/* ---- scoredb.c -------------------------------------------------------------------------- */

typedef struct scoredb scoredb;

/* The oldest schema (PRAGMA user_version) that scoredb can work on: 0002 added category_mask,
 * solution_first and the metric columns. */
#define SCOREDB_MIN_SCHEMA 2

/* Prepares the statements on db, which is borrowed and must outlive the scoredb (free it before
 * closing db). Returns 0 with *out new (free with scoredb_free), or -1 with a reason in err. */
int scoredb_new(sqlite3 *db, scoredb **out, char *err, size_t err_len);
void scoredb_free(scoredb *sdb);
/* The last failure: what was being done and SQLite's message (never transcript text). */
const char *scoredb_errmsg(const scoredb *sdb);

/* Whether an agent turn offers a fix (an ownership marker) before acknowledging the customer
 * (acknowledgement, validation, apology, reassurance or perspective-taking): 1 before, 0 after,
 * -1 when it offers no fix. This is at_turn's solution_first. */
int scoredb_solution_first(const at_result *r);

/* Inserts an utterance's markers (ordinal = index) for (conversation_id, seq). Inside the
 * caller's transaction. Returns 0 or -1. */
int scoredb_put_markers(scoredb *sdb, const char *conversation_id, int64_t seq,
                        const at_marker *markers, size_t n_markers);

/* One marker row: the marker at index ordinal of utterance (conversation_id, seq); borrowed. */
typedef struct scoredb_marker_row {
    const char *conversation_id;
    int64_t seq;
    size_t ordinal;
    const at_marker *marker;
} scoredb_marker_row;

/* Inserts n marker rows (of any utterances), several to a statement: what scoredb_put_markers
 * does for each of their utterances, for less work. Inside the caller's transaction. Returns 0
 * or -1. */
int scoredb_put_marker_rows(scoredb *sdb, const scoredb_marker_row *rows, size_t n);

/* Recomputes the section-2 metrics of a conversation from its stored turns and facts
 * (at_conversation_metrics) and writes them into its row, inside the caller's transaction.
 * Returns 0 or -1. */
int scoredb_update_metrics(scoredb *sdb, const char *conversation_id,
                           int64_t silence_threshold_ms);
/* The stored turns of a conversation, as scoredb_update_metrics reads them, into *turns (n of
 * them; the array grows with realloc, *cap entries; free it with free()). Returns 0 or -1. */
int scoredb_read_turns(scoredb *sdb, const char *conversation_id, at_turn **turns, size_t *n,
                       size_t *cap);
/* scoredb_update_metrics from the conversation's turns as given (every stored turn, exactly as
 * scoredb_read_turns would read them) instead of reading them. Returns 0 or -1. */
int scoredb_update_metrics_with(scoredb *sdb, const char *conversation_id,
                                const at_turn *turns, size_t n, int64_t silence_threshold_ms);

/* An end's or an outcome's facts that attuned holds back from the conversation's row until
 * the metrics recomputation of the same transaction, which rewrites the row anyway, so that the
 * row is written once. Each known field replaces the stored one; the others (AT_NULL_INT, -1,
 * NAN) keep it. */
typedef struct scoredb_outcome {
    int64_t ended_at, resolved_at;        /* ms since the epoch */
    int resolved, escalated, transferred; /* 0, 1, or -1 */
    double csat;
    int64_t nps;
    bool ended;                           /* an end: `ended` becomes 1 */
    int64_t updated_at;                   /* ms since the epoch: the row's updated_at */
} scoredb_outcome;

/* Merges o over into as writing both in turn would: each known field of o replaces into's,
 * ended accumulates, updated_at is o's. */
void scoredb_outcome_merge(scoredb_outcome *into, const scoredb_outcome *o);

/* Binds o's ended_at, resolved, resolved_at, csat, nps, transferred, ended and updated_at, in
 * that order, to parameters first .. first + 7 of st, absent fields as NULL (escalated is left
 * to the caller: a metric too). */
void scoredb_bind_outcome(sqlite3_stmt *st, int first, const scoredb_outcome *o);

/* scoredb_update_metrics_with that also writes outcome (unless NULL) into the row, in the same
 * UPDATE: the metrics are computed from the stored facts with the outcome applied, and the row
 * ends up as if the outcome had been written first. Returns 0 or -1. */
int scoredb_update_metrics_outcome(scoredb *sdb, const char *conversation_id,
                                   const at_turn *turns, size_t n, int64_t silence_threshold_ms,
                                   const scoredb_outcome *outcome);

/* Where a rescoring run is: utterances are visited in (conversation_id, seq) order, after the
 * last one visited. Zero-initialise, then set since_ms; free with rescore_cursor_fini. */
typedef struct rescore_cursor {
    int64_t since_ms;       /* only conversations that started (or, with no known start, were
                             * first stored) at or after this time; AT_NULL_INT = all */
    char *conversation_id;  /* the last utterance visited, NULL before the first (owned) */
    int64_t seq;
    char *last_counted;     /* the last conversation counted in counts->conversations (owned) */
} rescore_cursor;

void rescore_cursor_fini(rescore_cursor *cur);
/* Starts the run over from the first utterance (a new model: rows visited with the old one must
 * be visited again). Keeps since_ms. */
void rescore_cursor_restart(rescore_cursor *cur);

typedef struct rescore_counts {
    uint64_t utterances;      /* rescored */
    uint64_t conversations;   /* with at least one rescored utterance; metrics recomputed */
    uint64_t skipped;         /* not rescorable, left as they were: stored without text
                               * (store_text none), or with text that redaction changed */
} rescore_counts;

/* Rescores up to max_rows utterances after the cursor whose model_id is not the model's: each is
 * scored again from its stored text (unless it has none, or holds a redaction placeholder: see
 * scoredb.c), and its sentiment, frustration_score, category_mask,
 * solution_first, markers and model_id are rewritten; then the metrics of every conversation
 * touched are recomputed. Runs inside the caller's write transaction, so a slice is applied
 * whole or not at all. The cursor and counts advance when this returns 0 or 1; after a failure
 * (here or at the caller's COMMIT) the caller rolls back and ends the run. Rows already scored
 * by the model are passed over, which makes an interrupted run resumable by a new one and a
 * repeated run a no-op.
 * Returns 1 when more rows may follow, 0 when the run is complete, -1 on failure. */
int scoredb_rescore(scoredb *sdb, const at_model *model, at_scratch *scratch,
                    rescore_cursor *cur, size_t max_rows, int64_t silence_threshold_ms,
                    rescore_counts *counts);

#endif
