/*
 * config.c: attuned's settings, one typed table for every INI key.
 *
 * The table below is the single source of truth: each key's section, name, type, storage in
 * struct config, bounds, default, unit, whether SIGHUP may change it, and a line of help.
 * config_defaults() sets every default by parsing its text through the same code that parses
 * the file, so a default can never violate its own bounds. config.example.ini repeats the
 * table for people; tests/unit/test_config.c checks the two agree.
 *
 * The INI syntax is inih's. Unknown sections and keys, bad values, duplicate keys and syntax
 * errors are all errors of the form "FILE:LINE: [section] key: reason (expected ..., got ...)".
 * The libinih handler receives no line number (INI_HANDLER_LINENO is off in the packaged
 * library), so the file is fed to ini_parse_stream() through our own reader, which counts
 * lines and also refuses lines longer than inih's buffer rather than letting inih split them.
 * config_load() builds the new values in a copy and changes the caller's config only when the
 * whole file is valid, so a failed reload keeps the running config.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <ini.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "attuned.h"

enum key_type { T_STRING, T_INT, T_SIZE, T_DOUBLE, T_ENUM };

_Static_assert(sizeof(enum log_level) == sizeof(int), "enum stored as int");
_Static_assert(sizeof(enum store_text_policy) == sizeof(int), "enum stored as int");

/* Extra check for a string value that passed its length bounds; writes why on failure. */
typedef int (*check_fn)(const char *value, char *why, size_t why_len);

struct key {
    const char *section;
    const char *name;
    enum key_type type;
    size_t offset; /* in struct config */
    size_t size;   /* of that member */
    double min, max; /* value bounds; for strings, length bounds in bytes */
    const char *def; /* default, as it would be written in the file */
    const char *unit;
    bool reloadable; /* SIGHUP may change it */
    bool secret;     /* never echo the value in a message */
    const char *const *names; /* T_ENUM: the accepted words, indexed by value */
    check_fn check;
    const char *help;
};

#define FIELD(m) .offset = offsetof(config, m), .size = sizeof(((config *)0)->m)

static const char *const level_words[] = {"error", "warn", "info", "debug", NULL};
static const char *const store_text_names[] = {"redacted", "full", "none", NULL};

static int check_listen(const char *value, char *why, size_t why_len);
static int check_no_quotes(const char *value, char *why, size_t why_len);

static const struct key keys[] = {
    /* [server] */
    {.section = "server", .name = "listen", .type = T_STRING, FIELD(listen), .min = 1,
     .max = 255, .def = "127.0.0.1:7420", .unit = "HOST:PORT", .check = check_listen,
     .help = "address for protocol clients; IPv6 as [::1]:7420; port 0 picks a free port"},
    {.section = "server", .name = "max_connections", .type = T_INT, FIELD(max_connections),
     .min = 1, .max = 1000000, .def = "1024", .unit = "connections", .reloadable = true,
     .help = "connections beyond this are refused"},
    {.section = "server", .name = "max_line_bytes", .type = T_SIZE, FIELD(max_line_bytes),
     .min = 1024, .max = 67108864, .def = "1048576", .unit = "bytes",
     .help = "longest protocol line, newline excluded; longer lines are answered with an error"},
    {.section = "server", .name = "idle_timeout_ms", .type = T_INT, FIELD(idle_timeout_ms),
     .min = 0, .max = 86400000, .def = "300000", .unit = "ms", .reloadable = true,
     .help = "close a connection silent this long; 0 = never"},
    {.section = "server", .name = "line_timeout_ms", .type = T_INT, FIELD(line_timeout_ms),
     .min = 0, .max = 86400000, .def = "30000", .unit = "ms", .reloadable = true,
     .help = "a line not ended this long after its first byte: line_too_long, then close; "
             "0 = never"},
    {.section = "server", .name = "drain_timeout_ms", .type = T_INT, FIELD(drain_timeout_ms),
     .min = 0, .max = 3600000, .def = "30000", .unit = "ms", .reloadable = true,
     .help = "SIGTERM: lines still not stored this long after it are given up unacknowledged, "
             "exit 3; 0 = wait for ever"},
    {.section = "server", .name = "auth_token", .type = T_STRING, FIELD(auth_token), .min = 0,
     .max = 255, .def = "", .unit = "text", .reloadable = true, .secret = true,
     .check = check_no_quotes, .help = "token clients send in hello; empty = no authentication"},
    {.section = "server", .name = "client_queue_bytes", .type = T_INT, FIELD(client_queue_bytes),
     .min = 4096, .max = 1073741824, .def = "1048576", .unit = "bytes",
     .help = "unsent output per connection before reading from it pauses"},
    /* [store] */
    {.section = "store", .name = "db", .type = T_STRING, FIELD(db_path), .min = 1, .max = 4095,
     .def = "attune.db", .unit = "path", .check = check_no_quotes,
     .help = "SQLite database file, created when missing"},
    {.section = "store", .name = "store_text", .type = T_ENUM, FIELD(store_text), .min = 0,
     .max = 2, .def = "redacted", .unit = "policy", .names = store_text_names,
     .help = "utterance text kept in the database: redacted, full or none"},
    {.section = "store", .name = "batch_rows", .type = T_INT, FIELD(batch_rows), .min = 1,
     .max = 100000, .def = "16384", .unit = "rows", .reloadable = true,
     .help = "a transaction commits after this many rows ..."},
    {.section = "store", .name = "batch_ms", .type = T_INT, FIELD(batch_ms), .min = 1,
     .max = 10000, .def = "20", .unit = "ms", .reloadable = true,
     .help = "... or this long after its first row, whichever comes first"},
    {.section = "store", .name = "max_db_mb", .type = T_INT, FIELD(max_db_mb), .min = 0,
     .max = 4194304, .def = "0", .unit = "MiB", .reloadable = true,
     .help = "largest database size, 0 = no cap; at the cap nothing more is acknowledged"},
    /* [scoring] */
    {.section = "scoring", .name = "lexicons", .type = T_STRING, FIELD(lexicon_dir), .min = 0,
     .max = 4095, .def = "", .unit = "directory", .check = check_no_quotes,
     .help = "lexicon directory; empty = installed or in-tree lexicons/ (contents reload on SIGHUP)"},
    {.section = "scoring", .name = "workers", .type = T_INT, FIELD(workers), .min = 0, .max = 256,
     .def = "0", .unit = "threads", .help = "scoring threads; 0 = online CPUs - 1, at least 1"},
    {.section = "scoring", .name = "queue_lines", .type = T_INT, FIELD(queue_lines), .min = 16,
     .max = 1000000, .def = "32768", .unit = "lines",
     .help = "bound of each worker's input queue and of the writer's queue"},
    /* [log] */
    {.section = "log", .name = "level", .type = T_ENUM, FIELD(log_level), .min = 0, .max = 3,
     .def = "info", .unit = "level", .reloadable = true, .names = level_words,
     .help = "error, warn, info or debug; transcript text appears only at debug"},
    {.section = "log", .name = "file", .type = T_STRING, FIELD(log_file), .min = 0, .max = 4095,
     .def = "", .unit = "path", .reloadable = true, .check = check_no_quotes,
     .help = "append log lines here; empty = stderr; reopened on SIGHUP"},
    /* [metrics] */
    {.section = "metrics", .name = "listen", .type = T_STRING, FIELD(metrics_listen), .min = 0,
     .max = 255, .def = "127.0.0.1:9420", .unit = "HOST:PORT", .check = check_listen,
     .help = "address of the metrics endpoint; empty = off"},
    /* [analytics] */
    {.section = "analytics", .name = "silence_threshold_ms", .type = T_INT,
     FIELD(silence_threshold_ms), .min = 0, .max = 3600000, .def = "3000", .unit = "ms",
     .help = "voice: gaps between turns longer than this add to silence_ms"},
    /* [alerts] */
    {.section = "alerts", .name = "compound_floor", .type = T_DOUBLE,
     FIELD(alert_compound_floor), .min = -1, .max = 1, .def = "-0.5", .unit = "compound",
     .reloadable = true, .help = "frustration_spike: customer compound sentiment below this ..."},
    {.section = "alerts", .name = "consecutive_turns", .type = T_INT,
     FIELD(alert_consecutive_turns), .min = 1, .max = 100, .def = "2", .unit = "turns",
     .reloadable = true, .help = "... for this many consecutive customer turns raises the alert"},
    {.section = "alerts", .name = "subscriber_queue", .type = T_INT, FIELD(subscriber_queue),
     .min = 1, .max = 1000000, .def = "1000", .unit = "alerts",
     .help = "alert lines buffered per subscriber; alerts beyond it are dropped"},
};

#define N_KEYS (sizeof keys / sizeof keys[0])

/* Flag names main.c passes to config_set() that are not "section.key" or a unique key name. */
static const struct {
    const char *flag, *section, *name;
} aliases[] = {
    {"listen", "server", "listen"},
    {"db", "store", "db"},
    {"log-level", "log", "level"},
    {"log-file", "log", "file"},
    {"metrics-listen", "metrics", "listen"},
};

/* ---- value parsing ---------------------------------------------------------------------- */

/* Copies at most 60 bytes of v into a quoted "got ..." form for messages. */
static void quote_value(const struct key *k, const char *v, char *out, size_t out_len)
{
    if (k->secret) {
        snprintf(out, out_len, "%zu bytes", strlen(v));
        return;
    }
    size_t n = strlen(v);
    if (n > 60)
        snprintf(out, out_len, "\"%.60s...\"", v);
    else
        snprintf(out, out_len, "\"%s\"", v);
}

static void describe_range(const struct key *k, char *out, size_t out_len)
{
    switch (k->type) {
    case T_DOUBLE:
        snprintf(out, out_len, "a number in %g..%g", k->min, k->max);
        break;
    case T_STRING:
        if (k->min > 0)
            snprintf(out, out_len, "%g..%g bytes", k->min, k->max);
        else
            snprintf(out, out_len, "at most %g bytes", k->max);
        break;
    default:
        snprintf(out, out_len, "an integer in %.0f..%.0f %s", k->min, k->max, k->unit);
        break;
    }
}

static int parse_integer(const char *v, long long *out)
{
    /* strtoll skips leading space and accepts what inih already stripped; insist on digits. */
    const char *p = v;
    if (*p == '+' || *p == '-')
        p++;
    if (*p < '0' || *p > '9')
        return -1;
    errno = 0;
    char *end;
    long long x = strtoll(v, &end, 10);
    if (*end != '\0')
        return -1;
    if (errno == ERANGE)
        x = v[0] == '-' ? LLONG_MIN : LLONG_MAX; /* reported as out of range below */
    *out = x;
    return 0;
}

/* Parses v for k and stores it in c. On failure writes "reason (expected ..., got ...)". */
static int set_value(config *c, const struct key *k, const char *v, char *why, size_t why_len)
{
    char *field = (char *)c + k->offset;
    char got[96], range[96];
    quote_value(k, v, got, sizeof got);
    describe_range(k, range, sizeof range);

    switch (k->type) {
    case T_STRING: {
        size_t n = strlen(v);
        if ((double)n < k->min) {
            snprintf(why, why_len, "must not be empty (expected %s)", k->unit);
            return -1;
        }
        if ((double)n > k->max || n >= k->size) {
            snprintf(why, why_len, "too long (expected %s, got %zu bytes)", range, n);
            return -1;
        }
        for (size_t i = 0; i < n; i++) {
            unsigned char ch = (unsigned char)v[i];
            if (ch < 0x20 || ch == 0x7f) {
                snprintf(why, why_len, "contains a control character (expected printable text)");
                return -1;
            }
        }
        if (n > 0 && k->check != NULL && k->check(v, why, why_len) != 0)
            return -1;
        memcpy(field, v, n + 1);
        return 0;
    }
    case T_INT:
    case T_SIZE: {
        long long x;
        if (parse_integer(v, &x) != 0) {
            snprintf(why, why_len, "not an integer (expected %s, got %s)", range, got);
            return -1;
        }
        if ((double)x < k->min || (double)x > k->max) {
            snprintf(why, why_len, "out of range (expected %s, got %s)", range, got);
            return -1;
        }
        if (k->type == T_INT) {
            int i = (int)x;
            memcpy(field, &i, sizeof i);
        } else {
            size_t s = (size_t)x;
            memcpy(field, &s, sizeof s);
        }
        return 0;
    }
    case T_DOUBLE: {
        errno = 0;
        char *end;
        double d = strtod(v, &end);
        if (v[0] == '\0' || *end != '\0' || !isfinite(d)) {
            snprintf(why, why_len, "not a number (expected %s, got %s)", range, got);
            return -1;
        }
        if (d < k->min || d > k->max) {
            snprintf(why, why_len, "out of range (expected %s, got %s)", range, got);
            return -1;
        }
        memcpy(field, &d, sizeof d);
        return 0;
    }
    case T_ENUM: {
        for (int i = 0; k->names[i] != NULL; i++) {
            if (strcmp(v, k->names[i]) == 0) {
                memcpy(field, &i, sizeof i);
                return 0;
            }
        }
        char list[128] = "";
        size_t len = 0;
        for (int i = 0; k->names[i] != NULL && len < sizeof list; i++) {
            int w = snprintf(list + len, sizeof list - len, "%s%s", i > 0 ? ", " : "",
                             k->names[i]);
            if (w < 0)
                break;
            len += (size_t)w;
        }
        snprintf(why, why_len, "unknown value (expected one of %s, got %s)", list, got);
        return -1;
    }
    }
    snprintf(why, why_len, "internal error: unknown key type");
    return -1;
}

/* HOST:PORT where HOST is a numeric IPv4 address or a bracketed IPv6 address and PORT is
 * 0..65535. Names are refused because the listener binds numeric addresses only. */
static int check_listen(const char *value, char *why, size_t why_len)
{
    static const char expected[] = "expected IPV4:PORT or [IPV6]:PORT with port 0..65535";
    char host[256];
    const char *port;
    size_t v_len = strlen(value);
    if (v_len >= sizeof host) {
        snprintf(why, why_len, "address too long (%s)", expected);
        return -1;
    }
    if (value[0] == '[') {
        const char *close = strchr(value, ']');
        if (close == NULL || close[1] != ':') {
            snprintf(why, why_len, "bad address (%s, got \"%s\")", expected, value);
            return -1;
        }
        size_t n = (size_t)(close - value - 1);
        memcpy(host, value + 1, n);
        host[n] = '\0';
        port = close + 2;
        struct in6_addr a6;
        if (inet_pton(AF_INET6, host, &a6) != 1) {
            snprintf(why, why_len, "bad IPv6 address (%s, got \"%s\")", expected, value);
            return -1;
        }
    } else {
        const char *colon = strrchr(value, ':');
        if (colon == NULL) {
            snprintf(why, why_len, "missing port (%s, got \"%s\")", expected, value);
            return -1;
        }
        if (memchr(value, ':', (size_t)(colon - value)) != NULL) {
            snprintf(why, why_len, "IPv6 addresses need brackets, as in [::1]:7420 (%s, got \"%s\")",
                     expected, value);
            return -1;
        }
        size_t n = (size_t)(colon - value);
        memcpy(host, value, n);
        host[n] = '\0';
        port = colon + 1;
        struct in_addr a4;
        if (inet_pton(AF_INET, host, &a4) != 1) {
            snprintf(why, why_len, "bad IPv4 address (%s, got \"%s\")", expected, value);
            return -1;
        }
    }
    long p = -1;
    if (port[0] >= '0' && port[0] <= '9' && strlen(port) <= 5) {
        char *end;
        p = strtol(port, &end, 10);
        if (*end != '\0')
            p = -1;
    }
    if (p < 0 || p > 65535) {
        snprintf(why, why_len, "bad port (%s, got \"%s\")", expected, value);
        return -1;
    }
    return 0;
}

/* inih keeps quotes as part of the value; a quoted path or token is almost always a mistake. */
static int check_no_quotes(const char *value, char *why, size_t why_len)
{
    size_t n = strlen(value);
    if (n >= 2 && ((value[0] == '"' && value[n - 1] == '"') ||
                   (value[0] == '\'' && value[n - 1] == '\''))) {
        snprintf(why, why_len, "values are taken literally; remove the quotes");
        return -1;
    }
    return 0;
}

/* ---- the file ----------------------------------------------------------------------------- */

struct load_state {
    const char *path;
    FILE *f;
    char *buf; /* the current physical line, from getline */
    size_t buf_cap;
    unsigned line;      /* number of the line inih is handling */
    bool is_indented;   /* it started with a blank: inih treats it as a continuation */
    bool stop;          /* an error was recorded; the reader reports end of file */
    int read_errno;
    unsigned err_line;  /* first error found by the handler or the reader, 0 = none */
    config *c;
    unsigned *seen;     /* per key: line where it was set, 0 = not in the file */
    char *err;
    size_t err_len;
};

static void load_error(struct load_state *st, const char *section, const char *name,
                       const char *why)
{
    if (st->err_line != 0)
        return;
    st->err_line = st->line;
    st->stop = true;
    if (section != NULL && section[0] != '\0')
        snprintf(st->err, st->err_len, "%s:%u: [%s] %s: %s", st->path, st->line, section, name,
                 why);
    else
        snprintf(st->err, st->err_len, "%s:%u: %s: %s", st->path, st->line, name, why);
}

/* fgets-compatible reader for ini_parse_stream: hands inih one whole line at a time, counting
 * them, and refuses lines that would not fit in inih's buffer instead of letting inih split
 * them into two lines (which would misnumber every following line). */
static char *read_line(char *str, int num, void *stream)
{
    struct load_state *st = stream;
    if (st->stop)
        return NULL;
    ssize_t n = getline(&st->buf, &st->buf_cap, st->f);
    if (n < 0) {
        if (ferror(st->f))
            st->read_errno = errno ? errno : EIO;
        return NULL;
    }
    st->line++;
    char why[128];
    if (memchr(st->buf, '\0', (size_t)n) != NULL) {
        snprintf(why, sizeof why, "contains a NUL byte (expected a text file)");
        load_error(st, NULL, "line", why);
        return NULL;
    }
    if (n + 1 > num) {
        snprintf(why, sizeof why, "too long (expected at most %d bytes per line, got %zd)",
                 num - 2, n);
        load_error(st, NULL, "line", why);
        return NULL;
    }
    st->is_indented = st->buf[0] == ' ' || st->buf[0] == '\t';
    memcpy(str, st->buf, (size_t)n + 1);
    return str;
}

static const struct key *find_key(const char *section, const char *name)
{
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

static bool section_exists(const char *section)
{
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(keys[i].section, section) == 0)
            return true;
    return false;
}

/* Lists the keys of a section, or the sections when section is NULL, for error messages. */
static void list_names(const char *section, char *out, size_t out_len)
{
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < N_KEYS && len < out_len; i++) {
        const char *word;
        if (section == NULL) {
            if (i > 0 && strcmp(keys[i - 1].section, keys[i].section) == 0)
                continue; /* the table keeps each section's keys together */
            word = keys[i].section;
        } else {
            if (strcmp(keys[i].section, section) != 0)
                continue;
            word = keys[i].name;
        }
        int w = snprintf(out + len, out_len - len, "%s%s", len > 0 ? ", " : "", word);
        if (w < 0)
            break;
        len += (size_t)w;
    }
}

static int handle(void *user, const char *section, const char *name, const char *value)
{
    struct load_state *st = user;
    char why[512], list[256];
    if (st->err_line != 0)
        return 0;
    if (st->is_indented) {
        load_error(st, section, name,
                   "indented line (inih reads it as a continuation of the previous value; "
                   "expected key = value at the start of the line)");
        return 0;
    }
    if (section[0] == '\0') {
        list_names(NULL, list, sizeof list);
        snprintf(why, sizeof why, "key outside any section (expected it under one of [%s])",
                 list);
        load_error(st, NULL, name, why);
        return 0;
    }
    if (!section_exists(section)) {
        list_names(NULL, list, sizeof list);
        snprintf(why, sizeof why, "unknown section (expected one of %s, got [%s])", list,
                 section);
        load_error(st, section, name, why);
        return 0;
    }
    const struct key *k = find_key(section, name);
    if (k == NULL) {
        list_names(section, list, sizeof list);
        snprintf(why, sizeof why, "unknown key (expected one of %s)", list);
        load_error(st, section, name, why);
        return 0;
    }
    size_t i = (size_t)(k - keys);
    if (st->seen[i] != 0) {
        snprintf(why, sizeof why, "duplicate key (first set on line %u)", st->seen[i]);
        load_error(st, section, name, why);
        return 0;
    }
    if (set_value(st->c, k, value, why, sizeof why) != 0) {
        load_error(st, section, name, why);
        return 0;
    }
    st->seen[i] = st->line;
    return 1;
}

/* Loads path over *c, recording in seen[] (N_KEYS entries) the line that set each key. On error
 * *c is unchanged. */
static int load(config *c, const char *path, unsigned *seen, char *err, size_t err_len)
{
    config tmp = *c;
    struct load_state st = {
        .path = path, .c = &tmp, .seen = seen, .err = err, .err_len = err_len,
    };
    memset(seen, 0, N_KEYS * sizeof *seen);
    if (err_len > 0)
        err[0] = '\0';
    st.f = fopen(path, "re");
    if (st.f == NULL) {
        snprintf(err, err_len, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    int rc = ini_parse_stream(read_line, &st, handle, &st);
    free(st.buf);
    fclose(st.f);
    if (rc > 0 && (st.err_line == 0 || (unsigned)rc < st.err_line)) {
        /* inih found a malformed line before any error of ours. */
        snprintf(err, err_len,
                 "%s:%d: syntax error (expected [section], key = value, or a comment starting "
                 "with ; or #)",
                 path, rc);
        return -1;
    }
    if (st.err_line != 0)
        return -1;
    if (rc == -2) {
        snprintf(err, err_len, "%s: out of memory", path);
        return -1;
    }
    if (st.read_errno != 0) {
        snprintf(err, err_len, "%s:%u: read error: %s", path, st.line + 1,
                 strerror(st.read_errno));
        return -1;
    }
    if (rc != 0) {
        snprintf(err, err_len, "%s: cannot parse (inih error %d)", path, rc);
        return -1;
    }
    *c = tmp;
    return 0;
}

/* ---- the contract --------------------------------------------------------------------------- */

void config_defaults(config *c)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < N_KEYS; i++) {
        char why[256];
        int rc = set_value(c, &keys[i], keys[i].def, why, sizeof why);
        if (rc != 0) {
            /* A default that fails its own validation is a programming error in the table. */
            fprintf(stderr, "attuned: config table: [%s] %s: default: %s\n", keys[i].section,
                    keys[i].name, why);
            abort();
        }
    }
}

int config_load(config *c, const char *path, char *err, size_t err_len)
{
    unsigned seen[N_KEYS];
    return load(c, path, seen, err, err_len);
}

int config_set(config *c, const char *key, const char *value, char *err, size_t err_len)
{
    const struct key *k = NULL;
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0] && k == NULL; i++)
        if (strcmp(key, aliases[i].flag) == 0)
            k = find_key(aliases[i].section, aliases[i].name);

    /* "section.key", else a key name found in exactly one section; '-' may stand for '_'. */
    char name[128];
    size_t key_len = strlen(key);
    if (k == NULL && key_len < sizeof name) {
        for (size_t i = 0; i <= key_len; i++)
            name[i] = key[i] == '-' ? '_' : key[i];
        char *dot = strchr(name, '.');
        if (dot != NULL) {
            *dot = '\0';
            k = find_key(name, dot + 1);
        } else {
            int matches = 0;
            for (size_t i = 0; i < N_KEYS; i++) {
                if (strcmp(keys[i].name, name) == 0) {
                    k = &keys[i];
                    matches++;
                }
            }
            if (matches > 1) {
                snprintf(err, err_len, "ambiguous setting (expected section.%s)", key);
                return -1;
            }
        }
    }
    if (k == NULL) {
        snprintf(err, err_len, "unknown setting (expected section.key as in the config file)");
        return -1;
    }
    /* The caller names the flag; err is only the reason. */
    return set_value(c, k, value != NULL ? value : "", err, err_len);
}

void config_apply_reloadable(config *dst, const config *src)
{
    for (size_t i = 0; i < N_KEYS; i++)
        if (keys[i].reloadable)
            memcpy((char *)dst + keys[i].offset, (const char *)src + keys[i].offset,
                   keys[i].size);
}

void config_finish(config *c)
{
    if (c->workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        long w = n - 1;
        if (w < 1)
            w = 1;
        const struct key *k = find_key("scoring", "workers");
        if (w > (long)k->max)
            w = (long)k->max;
        c->workers = (int)w;
    }
}
