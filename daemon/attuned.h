/*
 * attuned.h: interfaces between the daemon's modules. Nothing here is used outside daemon/.
 *
 *   config.c   typed table of every INI key; load, validate, --check-config
 *   log.c      levelled one-line logging to stderr or a file
 *   wire.c     parse and validate one protocol line into a message (loop thread)
 *   store.c    the SQLite store: migrations, batched upserts (writer thread only)
 *   pipeline.c scoring workers and the writer thread, bounded queues, commit callbacks
 *   server.c   libuv listener, connections, framing, acks, backpressure (loop thread)
 *   framer.c   a connection's bytes split into lines, bounded (pure: fuzzed directly)
 *   metrics.c  HTTP endpoint: GET /metrics (Prometheus text) and /healthz (loop thread)
 *   watchdog.c writer health and systemd WATCHDOG=1 pings (loop thread)
 *   main.c     start-up and shut-down order only
 */
#ifndef ATTUNED_H
#define ATTUNED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "attune.h"
#include "common.h"

#define ATTUNED_VERSION "attuned/" AT_VERSION
#define ATTUNED_PROTOCOL 1

/* ---- log.c ------------------------------------------------------------------------------ */

enum log_level { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

/* Parses "error", "warn", "info", "debug". Returns 0 or -1. */
int log_level_parse(const char *s, enum log_level *out);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* Opens path for appending (NULL or "" = stderr). Reopening is safe at any time (SIGHUP). */
int log_open(const char *path);
void log_close(void);
/* One line: "2026-11-25T10:00:00.123Z level module: message". Thread-safe. Transcript text
 * must only ever be logged at LOG_DEBUG. */
void log_msg(enum log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- config.c --------------------------------------------------------------------------- */

enum store_text_policy { STORE_TEXT_REDACTED = 0, STORE_TEXT_FULL = 1, STORE_TEXT_NONE = 2 };

typedef struct config {
    char listen[256];        /* HOST:PORT */
    char db_path[4096];
    char lexicon_dir[4096];  /* "" = installed or in-tree lexicons/ */
    char auth_token[256];    /* "" = no authentication */
    char log_file[4096];     /* "" = stderr */
    char metrics_listen[256];
    enum log_level log_level;
    enum store_text_policy store_text;
    int workers;             /* scoring threads; 0 in the file means cores - 1, at least 1 */
    int batch_rows;          /* a batch commits after this many rows ... */
    int batch_ms;            /* ... or this many milliseconds, whichever first */
    int max_db_mb;           /* database size cap, MiB (PRAGMA max_page_count); 0 = none */
    size_t max_line_bytes;
    int max_connections;
    int idle_timeout_ms;     /* 0 = never */
    int line_timeout_ms;     /* a line must end this long after its first byte; 0 = never */
    int drain_timeout_ms;    /* SIGTERM: give up what is not stored after this long; 0 = never */
    int queue_lines;         /* bound of each worker's input queue and of the writer queue */
    int client_queue_bytes;  /* unsent output per connection before it is paused */
    int silence_threshold_ms;
    double alert_compound_floor;
    int alert_consecutive_turns;
    int subscriber_queue;    /* alert lines buffered per subscriber before dropping */
} config;

/* Sets every key to its default. */
void config_defaults(config *c);
/* Loads an INI file over the current values. Unknown sections/keys and bad values are errors:
 * returns -1 with "file:line: key: reason" in err. */
int config_load(config *c, const char *path, char *err, size_t err_len);
/* Applies one key (as from a flag: "listen", "db", ...). Returns -1 with a reason in err. */
int config_set(config *c, const char *key, const char *value, char *err, size_t err_len);
/* Copies the keys that SIGHUP may change from src into dst. */
void config_apply_reloadable(config *dst, const config *src);
/* Resolves derived values (workers = cores - 1 when 0). */
void config_finish(config *c);

/* ---- wire.c ----------------------------------------------------------------------------- */

enum msg_type {
    MSG_HELLO,
    MSG_UTTERANCE,
    MSG_CONVERSATION,
    MSG_START,
    MSG_END,
    MSG_OUTCOME,
    MSG_SUBSCRIBE,
    MSG_PING,
    MSG_RESCORE, /* an extension of PROTOCOL.md, documented in README.md */
};

/* Absent optional integers hold this value. */
#define WIRE_ABSENT INT64_MIN

/* Conversation-level facts; each field may be absent (NULL / WIRE_ABSENT / -1 for flags). */
typedef struct conv_facts {
    char *channel, *queue, *agent_id, *customer_id;
    int64_t started_at, ended_at, resolved_at; /* ms since the epoch */
    int resolved, escalated, transferred;     /* -1 absent, 0, 1 */
    double csat;                              /* NAN when absent */
    int64_t nps;
    bool ended;                               /* an `end` was received */
} conv_facts;

typedef struct turn {
    int64_t seq; /* WIRE_ABSENT: numbered by the store in arrival order */
    at_speaker speaker;
    char *text;
    size_t text_len;
    int64_t ts;  /* ms since the epoch */
    int64_t start_ms, end_ms;
    char *participant_id;
} turn;

typedef struct message {
    enum msg_type type;
    char *id;              /* the line's "id", echoed in errors */
    char *conversation_id;
    conv_facts facts;      /* start, end, outcome, conversation */
    turn *turns;           /* utterance: 1; conversation: n */
    size_t n_turns;
    /* hello */
    char *token;
    bool acks_none;
    /* subscribe */
    char *filter_queue, *filter_agent_id;
    /* rescore: conversations started at or after this time (ms), or WIRE_ABSENT for all */
    int64_t since;
    /* One block holding the turns and strings above (owned), so that a line costs one
     * allocation rather than one per field; what did not fit in it has its own. */
    char *mem;
    size_t mem_used, mem_cap;
} message;

/* Error codes of PROTOCOL.md. */
enum wire_error {
    WIRE_OK = 0,
    WIRE_INVALID_JSON,
    WIRE_INVALID_UTF8,
    WIRE_NOT_OBJECT,
    WIRE_MISSING_FIELD,
    WIRE_BAD_FIELD,
    WIRE_UNKNOWN_TYPE,
    WIRE_LINE_TOO_LONG,
    WIRE_UNAUTHORIZED,
    WIRE_OVERLOADED,
    WIRE_SHUTTING_DOWN,
    WIRE_INTERNAL,
};

const char *wire_error_code(enum wire_error e);
/* Parses and validates one line (without its newline). On success fills *msg (free with
 * message_fini). On failure returns the code, writes one human sentence naming the field or
 * limit into why, and copies the line's "id" (if any) into *id_out (free with free()). */
enum wire_error wire_parse(const char *line, size_t len, message *msg, char *why, size_t why_len,
                           char **id_out);
void message_fini(message *msg);
/* How wire_parse reads a line's JSON: WIRE_PATH_ANY reads a flat object without escapes,
 * reals or nesting (nearly every line) in one pass of its own and hands every other line to
 * jansson; WIRE_PATH_JANSSON hands every line to jansson. Both give every line the same message
 * or the same error (tests/unit/test_wire.c compares them). */
enum wire_path { WIRE_PATH_ANY, WIRE_PATH_JANSSON };
/* wire_parse along the given path. */
enum wire_error wire_parse_via(enum wire_path path, const char *line, size_t len, message *msg,
                               char *why, size_t why_len, char **id_out);

/* ---- store.c ---------------------------------------------------------------------------- */

typedef struct store store;

/* One scored utterance as the writer stores it. */
typedef struct stored_utterance {
    const char *conversation_id;
    const turn *turn;          /* borrowed; text already per policy (NULL for none) */
    const char *text;          /* what to store (NULL = no text) */
    size_t text_len;
    bool redacted;             /* text differs from what was scored (placeholders) */
    at_sentiment sentiment;
    double frustration_score;  /* NAN for non-customer turns */
    const at_marker *markers;
    size_t n_markers;
    uint32_t category_mask;    /* bit per category that fired */
    int solution_first;        /* see at_turn: 1, 0, or -1 for no fix offered */
    const char *model_id;
} stored_utterance;

/* Opens (creating when needed) the database, sets WAL and synchronous=FULL, applies the
 * migrations compiled in from schema/ in order (PRAGMA user_version). A database newer than
 * this binary is refused. Returns 0 or -1 with a reason in err. */
int store_open(const char *path, store **out, char *err, size_t err_len);
void store_close(store *s);
int store_begin(store *s);
/* Writes the outcomes still held back (store_put_conversation), then COMMIT. */
int store_commit(store *s);
void store_rollback(store *s);
/* Outside a transaction: copies the WAL into the database and truncates it, without waiting
 * for readers. *is_complete is false when a reader still uses part of the WAL (try again
 * later). Returns 0, or -1 on an error (store_errmsg). */
int store_checkpoint(store *s, bool *is_complete);
/* Caps the database at max_db_mb MiB (0 = no cap) on this connection (PRAGMA max_page_count);
 * a cap below the current size holds the database at that size. A write beyond the cap fails
 * like a full disk (store_error_is_full). Outside a transaction. Returns 0 or -1. */
int store_set_max_db_mb(store *s, int max_db_mb);
/* The database's size (pages in use, those still in the WAL included) and the cap in effect
 * (0 = none), in bytes. Returns 0 or -1. */
int store_size(store *s, int64_t *bytes, int64_t *max_bytes);
/* Merges the present fields of facts into the conversation row, creating it when needed.
 * Inside a transaction, the facts of an end or an outcome (no channel, queue, agent, customer
 * or start time) may be held back until store_update_metrics* of the conversation or
 * store_commit writes them, so a failure to store them (a CHECK constraint) may be reported
 * there instead; either fails the transaction. */
int store_put_conversation(store *s, const char *conversation_id, const conv_facts *facts);
/* Inserts an utterance unless (conversation_id, seq) exists; *inserted tells which. Creates
 * the conversation when unknown. Markers are stored only when the utterance is new. */
int store_put_utterance(store *s, const stored_utterance *u, bool *inserted);
/* store_put_utterance for n utterances that all have their seq, several to a statement (the
 * same rows, markers and errors, for less work); *n_duplicates counts those already stored, and
 * is_new (NULL, or n entries) tells which were stored. A failure fails the caller's
 * transaction, as one of store_put_utterance does. */
int store_put_utterances(store *s, const stored_utterance *us, size_t n, size_t *n_duplicates,
                         bool *is_new);
/* The seq store_put_utterance last gave an utterance (or found it had). */
int64_t store_last_seq(const store *s);
/* Whether the current transaction created the conversation's row (a store_put_* call inserted
 * it), so that every turn it has was stored by this transaction. False when unsure. */
bool store_is_new_conversation(store *s, const char *conversation_id);
/* The conversation's stored turns (scoredb_read_turns). Returns 0 or -1. */
int store_read_turns(store *s, const char *conversation_id, at_turn **turns, size_t *n,
                     size_t *cap);
/* store_update_metrics from the conversation's stored turns as given, without reading them. */
int store_update_metrics_with(store *s, const char *conversation_id, const at_turn *turns,
                              size_t n_turns, int64_t silence_threshold_ms);
/* Recomputes the section-2 metrics of a conversation from its stored turns and facts and
 * writes them into its row, with the facts held back for it (store_put_conversation), and
 * clears its pending_metrics mark (inside the caller's transaction). */
int store_update_metrics(store *s, const char *conversation_id, int64_t silence_threshold_ms);
/* Marks a conversation's metrics as deferred (pending_metrics), inside the caller's
 * transaction: the one that stores the utterances that made them stale, so that the mark is
 * durable exactly when they are. A mark that exists stays as it is. store_update_metrics clears
 * it. */
int store_defer_metrics(store *s, const char *conversation_id);
/* Calls fn with the id of every conversation marked deferred (borrowed for the call; fn must
 * not use the store). A non-zero return from fn stops the walk: -1 (out of memory). Returns 0 or
 * -1. */
int store_pending_metrics(store *s, int (*fn)(void *ud, const char *conversation_id), void *ud);
/* One slice of a rescoring run (scoredb_rescore) inside the caller's transaction. Returns 1 when
 * more rows may follow, 0 when the run is complete, -1 on failure. */
int store_rescore(store *s, const at_model *model, at_scratch *scratch, rescore_cursor *cur,
                  size_t max_rows, int64_t silence_threshold_ms, rescore_counts *counts);
/* Reads a conversation's queue and agent_id (new strings or NULL; free with free()). */
int store_conversation_routing(store *s, const char *conversation_id, char **queue,
                               char **agent_id);
/* Whether the last failure may pass by itself (busy, locked, disk full, I/O), as opposed to
 * one that will recur for the same data (a constraint). */
bool store_error_is_transient(const store *s);
/* Whether the last failure was for lack of room: the disk is full or max_db_mb is reached. */
bool store_error_is_full(const store *s);
/* The last SQLite error, for logs. */
const char *store_errmsg(const store *s);

#endif
