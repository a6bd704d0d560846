/*
 * rescore.c: `attune rescore`: score stored utterances again with the current lexicons, so that
 * rule changes apply to past conversations too.
 *
 * One writer per database file (ARCHITECTURE.md): when no attuned holds the database's writer
 * lock, rescore takes it and rewrites the scores itself, in short transactions through the same
 * code the daemon stores with (common/scoredb.c). When a daemon holds it, rescore asks that daemon
 * to do the work (a `rescore` protocol line; README.md) and waits for its answer. Either way the
 * run is resumable: utterances already scored by the current model are passed over, so an
 * interrupted run continues where it stopped and a repeated one changes nothing.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "common.h"

/* Generated into build/schema_sql.c from schema/: the migrations this build knows. */
extern const char *const schema_migrations[];

#define DEFAULT_DB "./attune.db"
#define DEFAULT_CONNECT "127.0.0.1:7420"
#define DEFAULT_BATCH 512
#define DEFAULT_SILENCE_MS 3000

typedef struct options {
    const char *db;
    const char *lexicons;  /* NULL: the default lexicons */
    const char *connect;   /* NULL: where the lock holder says it listens, else the default */
    const char *token;     /* NULL: no hello token */
    int64_t since_ms;      /* AT_NULL_INT: every conversation */
    size_t batch;
    int64_t silence_threshold_ms;
    bool json;
} options;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: attune rescore [--db PATH] [--since DATE] [--lexicons DIR]\n"
            "                      [--connect HOST:PORT] [--token TOKEN] [--batch N]\n"
            "                      [--silence-threshold-ms MS] [--json]\n"
            "\n"
            "Scores every stored utterance again with the current lexicons and rewrites its\n"
            "sentiment, markers and model id, and its conversation's metrics. Utterances stored\n"
            "without text (store_text none), or whose text redaction changed, cannot be\n"
            "rescored: they keep their scores and are counted as skipped.\n"
            "\n"
            "  --db PATH           the database (default " DEFAULT_DB ")\n"
            "  --since DATE        only conversations started at or after DATE: YYYY-MM-DD,\n"
            "                      an RFC 3339 time (UTC without an offset) or epoch ms\n"
            "  --lexicons DIR      lexicons to score with (offline only; default: as attune score)\n"
            "  --connect HOST:PORT the attuned holding the database (default: the address in\n"
            "                      its lock file, else " DEFAULT_CONNECT ")\n"
            "  --token TOKEN       the daemon's auth_token (default $ATTUNE_TOKEN)\n"
            "  --batch N           utterances per transaction offline (default %d)\n"
            "  --silence-threshold-ms MS\n"
            "                      offline: the daemon's [analytics] silence_threshold_ms\n"
            "                      (default %d)\n"
            "  --json              print the result as one JSON object\n"
            "\n"
            "When attuned holds the database, it does the work with its own model: change its\n"
            "lexicons and reload it (SIGHUP) first; --lexicons is refused then.\n",
            DEFAULT_BATCH, DEFAULT_SILENCE_MS);
}

/* DATE through SQLite's own date parser (the schema's convention: ms since the epoch, UTC). */
static int parse_since(const char *s, int64_t *out)
{
    if (*s && strspn(s, "0123456789") == strlen(s)) {
        errno = 0;
        long long v = strtoll(s, NULL, 10);
        if (errno)
            return -1;
        *out = v;
        return 0;
    }
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int ok = sqlite3_open(":memory:", &db) == SQLITE_OK &&
             sqlite3_prepare_v2(db, "SELECT CAST(round((julianday(?1) - 2440587.5) * 86400000)"
                                " AS INTEGER)", -1, &st, NULL) == SQLITE_OK &&
             sqlite3_bind_text(st, 1, s, -1, SQLITE_STATIC) == SQLITE_OK &&
             sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL &&
             strchr(s, '-') != NULL; /* julianday() also takes bare Julian day numbers */
    if (ok)
        *out = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return ok ? 0 : -1;
}

static void print_result(const options *o, const char *via, const char *model_id,
                         const rescore_counts *c)
{
    if (o->json) {
        printf("{\"via\":\"%s\",\"model_id\":\"%s\",\"utterances\":%llu,\"conversations\":%llu,"
               "\"skipped\":%llu}\n", via, model_id, (unsigned long long)c->utterances,
               (unsigned long long)c->conversations, (unsigned long long)c->skipped);
        return;
    }
    printf("rescored %llu utterances in %llu conversations with model %s (%s)\n",
           (unsigned long long)c->utterances, (unsigned long long)c->conversations, model_id,
           via);
    if (c->skipped)
        printf("%llu utterances keep their old scores: stored without text (store_text none) "
               "or with text that redaction changed\n", (unsigned long long)c->skipped);
}

/* ---- offline: this process is the writer -------------------------------------------------- */

static int exec_sql(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) == SQLITE_OK)
        return 0;
    fprintf(stderr, "attune: %s: %s\n", sql, msg ? msg : sqlite3_errmsg(db));
    sqlite3_free(msg);
    return -1;
}

/* The database must have the columns rescoring writes (schema 0002) and be no newer than this
 * build, whose metrics may not be what a newer schema expects. */
static int check_schema(sqlite3 *db, const char *path)
{
    sqlite3_stmt *st = NULL;
    int64_t version = -1;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        version = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    int n_known = 0;
    while (schema_migrations[n_known])
        n_known++;
    if (version < 0) {
        fprintf(stderr, "attune: %s: cannot read the schema version: %s\n", path,
                sqlite3_errmsg(db));
        return -1;
    }
    if (version < SCOREDB_MIN_SCHEMA) {
        fprintf(stderr, "attune: %s has schema version %lld, older than rescoring needs (%d): "
                "start attuned on it once to bring it up to date\n", path, (long long)version,
                SCOREDB_MIN_SCHEMA);
        return -1;
    }
    if (version > n_known) {
        fprintf(stderr, "attune: %s has schema version %lld, newer than this attune knows (%d): "
                "use the attune of the attuned that wrote it\n", path, (long long)version,
                n_known);
        return -1;
    }
    return 0;
}

static int rescore_offline(const options *o)
{
    int status = EXIT_INPUT;
    at_model *model = cli_load_model(o->lexicons);
    at_scratch *scratch = NULL;
    sqlite3 *db = NULL;
    scoredb *sdb = NULL;
    rescore_cursor cur = {.since_ms = o->since_ms};
    rescore_counts counts = {0};
    char err[1024];
    if (!model)
        goto fail;
    if (at_scratch_new(&scratch)) {
        fprintf(stderr, "attune: out of memory\n");
        goto fail;
    }
    /* Never create: a missing file is a mistake in --db, not a new empty store. */
    if (sqlite3_open_v2(o->db, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        fprintf(stderr, "attune: cannot open %s: %s\n", o->db,
                db ? sqlite3_errmsg(db) : "out of memory");
        goto fail;
    }
    sqlite3_busy_timeout(db, 5000);
    if (check_schema(db, o->db) ||
        exec_sql(db, "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON"))
        goto fail;
    if (scoredb_new(db, &sdb, err, sizeof err)) {
        fprintf(stderr, "attune: %s: %s\n", o->db, err);
        goto fail;
    }
    /* Short transactions: analysts' readers see each slice as it commits, and an interrupted
     * run loses at most the slice it was in. */
    for (;;) {
        if (exec_sql(db, "BEGIN IMMEDIATE"))
            goto fail;
        int rc = scoredb_rescore(sdb, model, scratch, &cur, o->batch, o->silence_threshold_ms,
                                 &counts);
        if (rc < 0) {
            fprintf(stderr, "attune: rescoring %s failed: %s\n", o->db, scoredb_errmsg(sdb));
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            goto fail;
        }
        if (exec_sql(db, "COMMIT")) {
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            goto fail;
        }
        if (rc == 0)
            break;
    }
    print_result(o, "offline", at_model_id(model), &counts);
    status = EXIT_OK;
fail:
    if (status != EXIT_OK && counts.utterances)
        fprintf(stderr, "attune: %llu utterances were rescored and committed before the "
                "failure; running attune rescore again resumes from there\n",
                (unsigned long long)counts.utterances);
    rescore_cursor_fini(&cur);
    scoredb_free(sdb);
    sqlite3_close(db);
    at_scratch_free(scratch);
    at_model_free(model);
    return status;
}

/* ---- through the daemon ----------------------------------------------------------------- */

/* Connects to HOST:PORT ([v6]:PORT too). An address the daemon listens on for every interface
 * is reached through loopback. Returns a socket or -1 (after printing why). */
static int dial(const char *address)
{
    char host[256];
    const char *colon = strrchr(address, ':');
    if (!colon || colon == address || (size_t)(colon - address) >= sizeof host || !colon[1]) {
        fprintf(stderr, "attune: \"%s\" is not HOST:PORT\n", address);
        return -1;
    }
    memcpy(host, address, (size_t)(colon - address));
    host[colon - address] = '\0';
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    if (strcmp(host, "0.0.0.0") == 0)
        strcpy(host, "127.0.0.1");
    else if (strcmp(host, "::") == 0)
        strcpy(host, "::1");
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, colon + 1, &hints, &res);
    if (rc) {
        fprintf(stderr, "attune: cannot resolve %s: %s\n", address, gai_strerror(rc));
        return -1;
    }
    int fd = -1, e = 0;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            e = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        fprintf(stderr, "attune: cannot connect to attuned at %s: %s\n", address, strerror(e));
    return fd;
}

static int send_all(int fd, const char *s, size_t len)
{
    while (len) {
        ssize_t n = send(fd, s, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        s += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Reads one line (without its newline) into *line (new, free with free()). Returns 0, or -1 at
 * EOF or on an error. buf holds what was read past the line. */
static int read_line(int fd, char **buf, size_t *len, size_t *cap, char **line)
{
    for (;;) {
        char *nl = *len ? memchr(*buf, '\n', *len) : NULL;
        if (nl) {
            size_t n = (size_t)(nl - *buf);
            *line = malloc(n + 1);
            if (!*line)
                return -1;
            memcpy(*line, *buf, n);
            (*line)[n] = '\0';
            memmove(*buf, nl + 1, *len - n - 1);
            *len -= n + 1;
            return 0;
        }
        if (*cap - *len < 4096) {
            size_t ncap = *cap ? *cap * 2 : 8192;
            char *nb = realloc(*buf, ncap);
            if (!nb)
                return -1;
            *buf = nb;
            *cap = ncap;
        }
        ssize_t n = recv(fd, *buf + *len, *cap - *len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        *len += (size_t)n;
    }
}

static int rescore_via_daemon(const options *o)
{
    char address[300];
    if (o->connect) {
        snprintf(address, sizeof address, "%s", o->connect);
    } else {
        long pid;
        if (dblock_read(o->db, address, sizeof address, &pid) || !address[0])
            snprintf(address, sizeof address, "%s", DEFAULT_CONNECT);
    }
    int fd = dial(address);
    if (fd < 0) {
        fprintf(stderr, "attune: attuned holds %s, so it must do the rescoring: give its "
                "address with --connect\n", o->db);
        return EXIT_INPUT;
    }
    /* Line 1 authenticates (a hello is harmless without a token); line 2 is the request. The
     * daemon answers line 2 when the whole run is done: a rescored line or an error, then the
     * ack through 2. */
    json_t *hello = json_pack("{s:s,s:s}", "type", "hello", "client", "attune-rescore/" AT_VERSION);
    json_t *req = json_pack("{s:s,s:s}", "type", "rescore", "id", "rescore");
    if (hello && o->token)
        json_object_set_new(hello, "token", json_string(o->token));
    if (req && o->since_ms != AT_NULL_INT)
        json_object_set_new(req, "since", json_integer((json_int_t)o->since_ms));
    char *l1 = hello ? json_dumps(hello, JSON_COMPACT) : NULL;
    char *l2 = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(hello);
    json_decref(req);
    int status = EXIT_INPUT;
    char *buf = NULL, *line = NULL;
    size_t len = 0, cap = 0;
    bool answered = false;
    if (!l1 || !l2) {
        fprintf(stderr, "attune: out of memory\n");
        goto done;
    }
    if (send_all(fd, l1, strlen(l1)) || send_all(fd, "\n", 1) ||
        send_all(fd, l2, strlen(l2)) || send_all(fd, "\n", 1)) {
        fprintf(stderr, "attune: cannot send to attuned at %s: %s\n", address, strerror(errno));
        goto done;
    }
    if (!o->json)
        fprintf(stderr, "attune: attuned (%s) holds %s; it is rescoring with its own model\n",
                address, o->db);
    for (;;) {
        free(line);
        line = NULL;
        if (read_line(fd, &buf, &len, &cap, &line)) {
            fprintf(stderr, "attune: attuned closed the connection before the rescore was done; "
                    "what it committed stays, and running attune rescore again resumes from "
                    "there\n");
            goto done;
        }
        json_t *m = json_loads(line, 0, NULL);
        const char *type = json_string_value(json_object_get(m, "type"));
        json_int_t at = json_integer_value(json_object_get(m, "line"));
        if (type && strcmp(type, "rescored") == 0) {
            rescore_counts c = {
                .utterances = (uint64_t)json_integer_value(json_object_get(m, "utterances")),
                .conversations =
                    (uint64_t)json_integer_value(json_object_get(m, "conversations")),
                .skipped =
                    (uint64_t)json_integer_value(json_object_get(m, "skipped")),
            };
            const char *id = json_string_value(json_object_get(m, "model_id"));
            print_result(o, "daemon", id ? id : "?", &c);
            answered = true;
            status = EXIT_OK;
        } else if (type && strcmp(type, "error") == 0) {
            const char *msg = json_string_value(json_object_get(m, "message"));
            const char *code = json_string_value(json_object_get(m, "code"));
            fprintf(stderr, "attune: attuned refused the %s: %s (%s)\n",
                    at == 1 ? "connection" : "rescore", msg ? msg : "no message",
                    code ? code : "?");
            if (code && strcmp(code, "unknown_type") == 0)
                fprintf(stderr, "attune: that attuned predates rescoring; stop it and run "
                        "attune rescore offline\n");
            answered = true;
            status = EXIT_INPUT;
        } else if (type && strcmp(type, "ack") == 0 &&
                   json_integer_value(json_object_get(m, "through")) >= 2) {
            json_decref(m);
            if (!answered)
                fprintf(stderr, "attune: attuned finished the rescore but sent no summary\n");
            status = answered ? status : EXIT_OK;
            break;
        }
        json_decref(m);
    }
done:
    free(line);
    free(buf);
    free(l1);
    free(l2);
    close(fd);
    return status;
}

int cmd_rescore(int argc, char **argv)
{
    static const struct option opts[] = {
        {"db", required_argument, NULL, 'd'},
        {"since", required_argument, NULL, 's'},
        {"lexicons", required_argument, NULL, 'L'},
        {"connect", required_argument, NULL, 'c'},
        {"token", required_argument, NULL, 't'},
        {"batch", required_argument, NULL, 'b'},
        {"silence-threshold-ms", required_argument, NULL, 'S'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    options o = {
        .db = DEFAULT_DB,
        .token = getenv("ATTUNE_TOKEN"),
        .since_ms = AT_NULL_INT,
        .batch = DEFAULT_BATCH,
        .silence_threshold_ms = DEFAULT_SILENCE_MS,
    };
    int c;
    char *end;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'd': o.db = optarg; break;
        case 'L': o.lexicons = optarg; break;
        case 'c': o.connect = optarg; break;
        case 't': o.token = optarg; break;
        case 'j': o.json = true; break;
        case 's':
            if (parse_since(optarg, &o.since_ms)) {
                fprintf(stderr, "attune: --since \"%s\" is not a date (YYYY-MM-DD), an RFC 3339 "
                        "time or epoch milliseconds\n", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'b': {
            long v = strtol(optarg, &end, 10);
            if (*end || end == optarg || v < 1 || v > 100000) {
                fprintf(stderr, "attune: --batch must be an integer from 1 to 100000\n");
                return EXIT_USAGE;
            }
            o.batch = (size_t)v;
            break;
        }
        case 'S': {
            long v = strtol(optarg, &end, 10);
            if (*end || end == optarg || v < 0 || v > 3600000) {
                fprintf(stderr, "attune: --silence-threshold-ms must be an integer from 0 to "
                        "3600000\n");
                return EXIT_USAGE;
            }
            o.silence_threshold_ms = v;
            break;
        }
        case 'h': usage(stdout); return EXIT_OK;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "attune: rescore: unexpected argument \"%s\"\n", argv[optind]);
        return EXIT_USAGE;
    }
    if (o.token && !*o.token)
        o.token = NULL;
    struct stat sb;
    if (stat(o.db, &sb) != 0) {
        fprintf(stderr, "attune: no database at %s: %s\n", o.db, strerror(errno));
        return EXIT_INPUT;
    }

    char err[1024];
    int lock_fd;
    int rc = dblock_acquire(o.db, &lock_fd, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, "attune: %s\n", err);
        return EXIT_INPUT;
    }
    if (rc == 0) {
        dblock_describe(lock_fd, NULL);
        int status = rescore_offline(&o);
        dblock_release(lock_fd);
        return status;
    }
    if (o.lexicons) {
        fprintf(stderr, "attune: attuned holds %s and rescores with its own lexicons: point its "
                "[scoring] lexicons at %s, reload it (SIGHUP), then run attune rescore without "
                "--lexicons\n", o.db, o.lexicons);
        return EXIT_INPUT;
    }
    return rescore_via_daemon(&o);
}
