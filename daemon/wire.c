/*
 * wire.c: protocol version 1 (PROTOCOL.md) from bytes to a validated message. Runs on the loop
 * thread. Every field is checked for type and range; the first problem found becomes the
 * line's error, with a sentence that names the field. Nothing here allocates beyond the
 * message it returns (and, for a line with numbers jansson cannot hold, one copy of the line).
 *
 * Two things valid JSON may hold are refused as bad_field rather than invalid_json, naming
 * where they are: a NUL character ("\u0000") in any string, which the daemon would otherwise
 * cut short as a C string, and a number beyond what jansson holds (an integer outside 64 bits,
 * a real beyond the largest double), which RFC 8259 section 6 lets a parser refuse.
 */
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "attuned.h"
#include "common.h"

#define MAX_ID_BYTES 1024

static const char *const error_codes[] = {
    "ok", "invalid_json", "invalid_utf8", "not_object", "missing_field", "bad_field",
    "unknown_type", "line_too_long", "unauthorized", "overloaded", "shutting_down", "internal",
};

const char *wire_error_code(enum wire_error e)
{
    return (unsigned)e < sizeof error_codes / sizeof *error_codes ? error_codes[e] : "internal";
}

typedef struct ctx {
    char *why;
    size_t why_len;
    const char *where;      /* "" or "turns[3]." */
    int n_overflows;        /* numbers jansson could not hold, replaced by OVERFLOW_JSON */
    bool is_real_overflow;  /* the first of them was a real (else an integer) */
    size_t line_len;        /* bytes */
    message *msg;           /* what the line becomes (its block: msg_alloc) */
} ctx;

/* n bytes from the message's block (aligned for a turn when is_aligned), or from malloc when
 * it has no block or no room left in it. */
static void *msg_alloc(message *msg, size_t n, bool is_aligned)
{
    size_t at = msg->mem_used;
    if (is_aligned)
        at = (at + _Alignof(max_align_t) - 1) & ~(_Alignof(max_align_t) - 1);
    if (msg->mem && at <= msg->mem_cap && msg->mem_cap - at >= n) {
        msg->mem_used = at + n;
        return msg->mem + at;
    }
    return malloc(n);
}

static void msg_free(const message *msg, void *p)
{
    /* Most fields are absent or in the block: no call for them (the writer frees every line). */
    if (p && !(msg->mem && (char *)p >= msg->mem && (char *)p < msg->mem + msg->mem_cap))
        free(p);
}

/* A copy of the string s of len bytes, from the message's block. */
static char *msg_strdup(message *msg, const char *s, size_t len)
{
    char *d = msg_alloc(msg, len + 1, false);
    if (d) {
        memcpy(d, s, len);
        d[len] = '\0';
    }
    return d;
}

/* How every line is parsed. NUL characters are let through so that find_unfit can name the
 * field that holds one. Integers stay apart from reals (no JSON_DECODE_INT_AS_REAL): seq 1.0 is
 * refused, and an id is echoed as it was sent. */
#define LOAD_FLAGS (JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL)

/* What stands in for a number jansson cannot hold when the line is parsed again: an array, so
 * that it is refused where the number would be (as an object key), holding a string with a NUL,
 * so that find_unfit can tell where it stands. */
#define OVERFLOW_JSON "[\"\\u0000number out of range\"]"
#define OVERFLOW_STR "\0number out of range"
/* Numbers out of range replaced in one line before giving up on naming the field: each costs
 * one more parse of the line. */
#define MAX_OVERFLOWS 4

/* Length of the valid UTF-8 sequence at s[0, n), or 0 when there is none: as jansson checks,
 * no overlong forms, no surrogates, nothing past U+10FFFF. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4, cp = c & 0x07;
    else
        return 0;
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/* Makes s one line of valid UTF-8, in place: control characters become spaces, and bytes that
 * are not part of a valid sequence become '?'. Messages quote the client's input (an unknown
 * type, jansson's "near '...'"), and truncation may cut a character in two; a message that
 * jansson cannot encode would leave the line without its error. */
static void sanitize(char *s)
{
    unsigned char *p = (unsigned char *)s;
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq(p + i, n - i);
        if (p[i] < 0x20 || p[i] == 0x7f)
            p[i] = ' ';
        else if (!k)
            p[i] = '?';
        i += k ? k : 1;
    }
}

static enum wire_error fail(ctx *c, enum wire_error e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static enum wire_error fail(ctx *c, enum wire_error e, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(c->why, c->why_len, "%s", msg);
    sanitize(c->why);
    return e;
}

/* ---- the fields of an object ---------------------------------------------------------- */

/* Every key the protocol gives a meaning, in order of length (fields_find relies on it). */
enum field {
    F_ID, F_TS, F_SEQ, F_NPS, F_TYPE, F_TEXT, F_CSAT, F_ACKS, F_QUEUE, F_TOKEN, F_TURNS, F_SINCE,
    F_CLIENT, F_EVENTS, F_FILTER, F_END_MS, F_SPEAKER, F_CHANNEL, F_OUTCOME, F_START_MS,
    F_RESOLVED, F_AGENT_ID, F_ENDED_AT, F_ESCALATED, F_STARTED_AT, F_RESOLVED_AT, F_TRANSFERRED,
    F_CUSTOMER_ID, F_PARTICIPANT_ID, F_CONVERSATION_ID, N_FIELDS,
};

static const char *const field_names[N_FIELDS] = {
    "id", "ts", "seq", "nps", "type", "text", "csat", "acks", "queue", "token", "turns", "since",
    "client", "events", "filter", "end_ms", "speaker", "channel", "outcome", "start_ms",
    "resolved", "agent_id", "ended_at", "escalated", "started_at", "resolved_at", "transferred",
    "customer_id", "participant_id", "conversation_id",
};

#define MAX_FIELD_LEN 15 /* bytes: conversation_id, the longest name */

/* field_by_len[n] .. field_by_len[n + 1] - 1: the fields whose names have n bytes. */
static unsigned char field_by_len[MAX_FIELD_LEN + 2];

static void fields_init(void)
{
    size_t n = 0;
    for (int i = 0; i < N_FIELDS; i++) {
        size_t len = strlen(field_names[i]);
        assert(len <= MAX_FIELD_LEN && (i == 0 || len >= strlen(field_names[i - 1])));
        while (n <= len)
            field_by_len[n++] = (unsigned char)i;
    }
    while (n < sizeof field_by_len)
        field_by_len[n++] = N_FIELDS;
}

/* The values of an object's known keys (NULL where absent), found in one walk over its keys:
 * a json_object_get per field hashed the name and searched a bucket, present or not, which was
 * a twentieth of the loop thread's work per line. Keys are unique (load_line). */
typedef struct fields {
    json_t *v[N_FIELDS];
} fields;

/* The field named by the key of len bytes, or N_FIELDS. */
static int field_of(const unsigned char *key, size_t len)
{
    if (len > MAX_FIELD_LEN)
        return N_FIELDS;
    for (int i = field_by_len[len]; i < field_by_len[len + 1]; i++)
        if (memcmp(key, field_names[i], len) == 0)
            return i;
    return N_FIELDS;
}

static void fields_find(json_t *obj, fields *fl)
{
    memset(fl, 0, sizeof *fl);
    for (void *it = json_object_iter(obj); it; it = json_object_iter_next(obj, it)) {
        int f = field_of((const unsigned char *)json_object_iter_key(it),
                         json_object_iter_key_len(it));
        if (f < N_FIELDS)
            fl->v[f] = json_object_iter_value(it);
    }
}

/* ---- the fast path -------------------------------------------------------------------- */

/*
 * jansson reads a line a byte at a time through its stream, copying each byte into a buffer and
 * each key into a hashtable: about 32,000 instructions for a 190-byte utterance line, two
 * thirds of the loop thread's work. Nearly every line a platform streams is a flat object of
 * plain strings, small integers, booleans and nulls. fast_parse reads such a line in one pass
 * and makes the values of its known fields with jansson's own constructors, so that everything
 * after it (parse_object, the id's echo) is the same code on the same kind of values. It
 * declines every line it is not sure to read exactly as jansson does (LOAD_FLAGS), and that
 * line is parsed by jansson as before:
 *   - an escape (a backslash anywhere in a string), a control character or invalid UTF-8;
 *   - a real (".", "e" or "E"), an integer of more than 18 digits, a leading zero;
 *   - a nested object or array, an empty object, anything not an object;
 *   - a repeated key (JSON_REJECT_DUPLICATES), or more than FAST_MAX_UNKNOWN unknown keys;
 *   - anything that is not valid JSON: a missing colon or comma, trailing bytes, a bad literal.
 * A declined line costs the scan up to where it stopped. tests/unit/test_wire.c and fuzz_wire
 * check that both paths give every line the same message or the same error.
 */
#define FAST_MAX_UNKNOWN 8

/* Bytes that may stand in a string as they are, without ending it or being checked: printable
 * ASCII but '"' and '\\'. */
static bool is_plain_byte[256];

static void fast_init(void)
{
    for (int b = 0x20; b < 0x80; b++)
        is_plain_byte[b] = b != '"' && b != '\\';
}

static bool is_json_space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

static const unsigned char *skip_space(const unsigned char *p, const unsigned char *end)
{
    while (p < end && is_json_space((char)*p))
        p++;
    return p;
}

/* The closing quote of the string whose bytes begin at p, or NULL when it does not close or
 * holds an escape, a control character or invalid UTF-8. */
static const unsigned char *scan_string(const unsigned char *p, const unsigned char *end)
{
    for (;;) {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        /* Eight bytes a step while none is a quote, a backslash, a control character or
         * above ASCII. Of each test's flags the lowest is exact (a borrow flags only bytes
         * above a true one), and the lowest byte comes first in the text. */
        const uint64_t ones = UINT64_C(0x0101010101010101), highs = ones * 0x80;
        while (end - p >= 8) {
            uint64_t x;
            memcpy(&x, p, 8);
            uint64_t q = x ^ (ones * '"'), b = x ^ (ones * '\\');
            uint64_t special =
                (((q - ones) & ~q) | ((b - ones) & ~b) | ((x - ones * 0x20) & ~x) | x) & highs;
            if (special) {
                p += __builtin_ctzll(special) / 8;
                break;
            }
            p += 8;
        }
#endif
        while (p < end && is_plain_byte[*p])
            p++;
        if (p == end)
            return NULL;
        if (*p == '"')
            return p;
        size_t n = *p >= 0x80 ? utf8_seq(p, (size_t)(end - p)) : 0;
        if (!n)
            return NULL;
        p += n;
    }
}

/* Past the integer at p written as JSON writes it (-?(0|[1-9][0-9]*)) with at most 18 digits,
 * so that it fits json_int_t, with its value in *out; NULL for anything else. */
static const unsigned char *scan_integer(const unsigned char *p, const unsigned char *end,
                                         json_int_t *out)
{
    bool is_negative = p < end && *p == '-';
    p += is_negative;
    const unsigned char *digits = p;
    json_int_t v = 0;
    while (p < end && *p >= '0' && *p <= '9' && p - digits < 18)
        v = v * 10 + (*p++ - '0');
    size_t n = (size_t)(p - digits);
    if (n == 0 || (digits[0] == '0' && n > 1))
        return NULL;
    if (p < end && ((*p >= '0' && *p <= '9') || *p == '.' || *p == 'e' || *p == 'E'))
        return NULL; /* a 19th digit, or a real */
    *out = is_negative ? -v : v;
    return p;
}

/* Past the literal word (true, false, null) at p, or NULL. */
static const unsigned char *scan_word(const unsigned char *p, const unsigned char *end,
                                      const char *word, size_t len)
{
    return (size_t)(end - p) >= len && memcmp(p, word, len) == 0 ? p + len : NULL;
}

/* Releases the values fast_parse made. */
static void fields_release(fields *fl)
{
    for (int i = 0; i < N_FIELDS; i++)
        json_decref(fl->v[i]);
}

/* Fills fl with the values of the line's known fields when the line is one flat object this
 * path reads as jansson does (see above); returns false, having made nothing, otherwise. */
static bool fast_parse(const char *line, size_t len, fields *fl)
{
    const unsigned char *p = (const unsigned char *)line, *end = p + len;
    const unsigned char *unknown[FAST_MAX_UNKNOWN];
    size_t unknown_len[FAST_MAX_UNKNOWN];
    int n_unknown = 0;
    memset(fl, 0, sizeof *fl);
    p = skip_space(p, end);
    if (p == end || *p != '{')
        return false;
    p = skip_space(p + 1, end);
    for (;;) {
        if (p == end || *p != '"')
            goto decline;
        const unsigned char *key = p + 1, *key_end = scan_string(key, end);
        if (!key_end)
            goto decline;
        size_t key_len = (size_t)(key_end - key);
        int f = field_of(key, key_len);
        if (f < N_FIELDS && fl->v[f])
            goto decline;
        if (f == N_FIELDS) {
            for (int i = 0; i < n_unknown; i++)
                if (unknown_len[i] == key_len && memcmp(unknown[i], key, key_len) == 0)
                    goto decline;
            if (n_unknown == FAST_MAX_UNKNOWN)
                goto decline;
            unknown[n_unknown] = key;
            unknown_len[n_unknown++] = key_len;
        }
        p = skip_space(key_end + 1, end);
        if (p == end || *p != ':')
            goto decline;
        p = skip_space(p + 1, end);
        if (p == end)
            goto decline;
        json_t *v = NULL;
        const unsigned char *s = p + 1;
        json_int_t n;
        switch (*p) {
        case '"':
            if (!(p = scan_string(s, end)))
                goto decline;
            if (f < N_FIELDS)
                v = json_stringn_nocheck((const char *)s, (size_t)(p - s));
            p++;
            break;
        case 't':
            p = scan_word(p, end, "true", 4);
            v = json_true();
            break;
        case 'f':
            p = scan_word(p, end, "false", 5);
            v = json_false();
            break;
        case 'n':
            p = scan_word(p, end, "null", 4);
            v = json_null();
            break;
        default:
            if ((p = scan_integer(p, end, &n)) && f < N_FIELDS)
                v = json_integer(n);
            break;
        }
        if (!p || (f < N_FIELDS && !v))
            goto decline; /* not JSON this path reads, or out of memory (jansson reports it) */
        if (f < N_FIELDS)
            fl->v[f] = v;
        p = skip_space(p, end);
        if (p == end)
            goto decline;
        if (*p == '}')
            break;
        if (*p != ',')
            goto decline;
        p = skip_space(p + 1, end);
    }
    if (skip_space(p + 1, end) == end)
        return true;
decline:
    fields_release(fl);
    memset(fl, 0, sizeof *fl);
    return false;
}

/* Time bounds: 1970 .. 9999-12-31 in ms. */
#define TIME_MAX_MS 253402300799999LL

static enum wire_error get_time(ctx *c, const fields *fl, enum field k, int64_t *out)
{
    json_t *v = fl->v[k];
    const char *key = field_names[k];
    *out = WIRE_ABSENT;
    if (!v || json_is_null(v))
        return WIRE_OK;
    if (json_is_integer(v)) {
        json_int_t n = json_integer_value(v);
        if (n < 0 || n > TIME_MAX_MS)
            return fail(c, WIRE_BAD_FIELD, "field \"%s%s\" must be milliseconds since the epoch "
                        "between 0 and %lld", c->where, key, (long long)TIME_MAX_MS);
        *out = n;
        return WIRE_OK;
    }
    int64_t ms;
    if (!json_is_string(v) || rfc3339_ms(json_string_value(v), &ms) || ms < 0 ||
        ms > TIME_MAX_MS)
        return fail(c, WIRE_BAD_FIELD, "field \"%s%s\" must be an RFC 3339 time such as "
                    "\"2026-11-25T10:00:03.120Z\" or integer milliseconds since the epoch",
                    c->where, key);
    *out = ms;
    return WIRE_OK;
}

static enum wire_error get_int(ctx *c, const fields *fl, enum field k, int64_t lo, int64_t hi,
                               int64_t *out)
{
    json_t *v = fl->v[k];
    const char *key = field_names[k];
    *out = WIRE_ABSENT;
    if (!v || json_is_null(v))
        return WIRE_OK;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return fail(c, WIRE_BAD_FIELD, "field \"%s%s\" must be an integer from %lld to %lld",
                    c->where, key, (long long)lo, (long long)hi);
    *out = json_integer_value(v);
    return WIRE_OK;
}

static enum wire_error get_bool(ctx *c, const fields *fl, enum field k, int *out)
{
    json_t *v = fl->v[k];
    const char *key = field_names[k];
    *out = -1;
    if (!v || json_is_null(v))
        return WIRE_OK;
    if (!json_is_boolean(v))
        return fail(c, WIRE_BAD_FIELD, "field \"%s%s\" must be true or false", c->where, key);
    *out = json_is_true(v);
    return WIRE_OK;
}

/* An optional string of 1..MAX_ID_BYTES bytes. *out is new (free with free()). */
static enum wire_error get_str(ctx *c, const fields *fl, enum field k, bool required, char **out)
{
    json_t *v = fl->v[k];
    const char *key = field_names[k];
    *out = NULL;
    if (!v || json_is_null(v)) {
        if (required)
            return fail(c, WIRE_MISSING_FIELD, "missing field \"%s%s\"", c->where, key);
        return WIRE_OK;
    }
    if (!json_is_string(v) || json_string_length(v) == 0 ||
        json_string_length(v) > MAX_ID_BYTES ||
        strlen(json_string_value(v)) != json_string_length(v))
        return fail(c, WIRE_BAD_FIELD, "field \"%s%s\" must be a non-empty string of at most %d "
                    "bytes", c->where, key, MAX_ID_BYTES);
    *out = msg_strdup(c->msg, json_string_value(v), json_string_length(v));
    return *out ? WIRE_OK : WIRE_INTERNAL;
}

static enum wire_error get_outcome(ctx *c, const fields *fl, conv_facts *f)
{
    enum wire_error e;
    if ((e = get_bool(c, fl, F_RESOLVED, &f->resolved)) ||
        (e = get_time(c, fl, F_RESOLVED_AT, &f->resolved_at)) ||
        (e = get_bool(c, fl, F_ESCALATED, &f->escalated)) ||
        (e = get_bool(c, fl, F_TRANSFERRED, &f->transferred)) ||
        (e = get_int(c, fl, F_NPS, 0, 10, &f->nps)))
        return e;
    json_t *v = fl->v[F_CSAT];
    f->csat = NAN;
    if (v && !json_is_null(v)) {
        if (!json_is_number(v) || json_number_value(v) < 1 || json_number_value(v) > 5)
            return fail(c, WIRE_BAD_FIELD, "field \"%scsat\" must be a number from 1 to 5",
                        c->where);
        f->csat = json_number_value(v);
    }
    return WIRE_OK;
}

static enum wire_error get_meta(ctx *c, const fields *fl, conv_facts *f)
{
    enum wire_error e;
    static const char *const channels[] = {"chat", "voice", "email", "social", "sms"};
    if ((e = get_str(c, fl, F_CHANNEL, false, &f->channel)))
        return e;
    if (f->channel) {
        bool ok = false;
        for (size_t i = 0; i < 5; i++)
            ok |= strcmp(f->channel, channels[i]) == 0;
        if (!ok)
            return fail(c, WIRE_BAD_FIELD, "field \"channel\" must be chat, voice, email, social "
                        "or sms");
    }
    if ((e = get_str(c, fl, F_QUEUE, false, &f->queue)) ||
        (e = get_str(c, fl, F_AGENT_ID, false, &f->agent_id)) ||
        (e = get_str(c, fl, F_CUSTOMER_ID, false, &f->customer_id)) ||
        (e = get_time(c, fl, F_STARTED_AT, &f->started_at)))
        return e;
    return WIRE_OK;
}

static enum wire_error get_turn(ctx *c, const fields *fl, turn *t)
{
    enum wire_error e;
    json_t *sp = fl->v[F_SPEAKER];
    if (!sp)
        return fail(c, WIRE_MISSING_FIELD, "missing field \"%sspeaker\"", c->where);
    if (!json_is_string(sp) ||
        at_speaker_parse(json_string_value(sp), json_string_length(sp), &t->speaker))
        return fail(c, WIRE_BAD_FIELD, "field \"%sspeaker\" must be agent, customer, bot or "
                    "system", c->where);
    json_t *tx = fl->v[F_TEXT];
    if (!tx)
        return fail(c, WIRE_MISSING_FIELD, "missing field \"%stext\"", c->where);
    if (!json_is_string(tx))
        return fail(c, WIRE_BAD_FIELD, "field \"%stext\" must be a string", c->where);
    t->text_len = json_string_length(tx);
    t->text = msg_strdup(c->msg, json_string_value(tx), t->text_len);
    if (!t->text)
        return WIRE_INTERNAL;
    if ((e = get_int(c, fl, F_SEQ, 0, 9007199254740991LL, &t->seq)) ||
        (e = get_time(c, fl, F_TS, &t->ts)) ||
        (e = get_int(c, fl, F_START_MS, 0, 9007199254740991LL, &t->start_ms)) ||
        (e = get_int(c, fl, F_END_MS, 0, 9007199254740991LL, &t->end_ms)) ||
        (e = get_str(c, fl, F_PARTICIPANT_ID, false, &t->participant_id)))
        return e;
    if (t->start_ms != WIRE_ABSENT && t->end_ms != WIRE_ABSENT && t->end_ms < t->start_ms)
        return fail(c, WIRE_BAD_FIELD, "field \"%send_ms\" must not be before \"%sstart_ms\"",
                    c->where, c->where);
    return WIRE_OK;
}

static void facts_init(conv_facts *f)
{
    memset(f, 0, sizeof *f);
    f->started_at = f->ended_at = f->resolved_at = WIRE_ABSENT;
    f->resolved = f->escalated = f->transferred = -1;
    f->csat = NAN;
    f->nps = WIRE_ABSENT;
}

void message_fini(message *msg)
{
    free(msg->id);
    msg_free(msg, msg->conversation_id);
    msg_free(msg, msg->facts.channel);
    msg_free(msg, msg->facts.queue);
    msg_free(msg, msg->facts.agent_id);
    msg_free(msg, msg->facts.customer_id);
    for (size_t i = 0; i < msg->n_turns; i++) {
        msg_free(msg, msg->turns[i].text);
        msg_free(msg, msg->turns[i].participant_id);
    }
    msg_free(msg, msg->turns);
    msg_free(msg, msg->token);
    msg_free(msg, msg->filter_queue);
    msg_free(msg, msg->filter_agent_id);
    free(msg->mem);
    memset(msg, 0, sizeof *msg);
}

/* Gives a message about a conversation its block: room for its n_turns turns and for every
 * string of the line, whose copies (each with its NUL) together take no more bytes than the
 * line itself (len). Without memory the fields are allocated one by one. */
static void msg_reserve(message *msg, size_t len, size_t n_turns)
{
    size_t turns_bytes = n_turns * sizeof(turn);
    if (n_turns > SIZE_MAX / 2 / sizeof(turn) || len > SIZE_MAX / 2 - turns_bytes)
        return;
    msg->mem_cap = turns_bytes + len + 1;
    msg->mem = malloc(msg->mem_cap);
    msg->mem_used = 0;
    if (!msg->mem)
        msg->mem_cap = 0;
}

/* n zeroed turns, from the message's block. */
static turn *msg_turns(message *msg, size_t n)
{
    turn *t = msg_alloc(msg, n * sizeof *t, true);
    if (t)
        memset(t, 0, n * sizeof *t);
    return t;
}

static enum wire_error parse_object(ctx *c, const fields *fl, message *msg)
{
    enum wire_error e;
    json_t *type = fl->v[F_TYPE];
    if (!type)
        return fail(c, WIRE_MISSING_FIELD, "missing field \"type\"");
    if (!json_is_string(type))
        return fail(c, WIRE_BAD_FIELD, "field \"type\" must be a string");
    /* In enum msg_type order. */
    static const char *const types[] = {"hello", "utterance", "conversation", "start", "end",
                                        "outcome", "subscribe", "ping", "rescore"};
    const char *tname = json_string_value(type);
    int t = -1;
    for (int i = 0; i < (int)(sizeof types / sizeof *types) && t < 0; i++)
        if (strcmp(tname, types[i]) == 0)
            t = i;
    if (t < 0)
        return fail(c, WIRE_UNKNOWN_TYPE, "unknown type \"%.64s\"; expected hello, utterance, "
                    "conversation, start, end, outcome, subscribe, ping or rescore", tname);
    msg->type = (enum msg_type)t;
    facts_init(&msg->facts);
    msg->since = WIRE_ABSENT;
    switch (msg->type) {
    case MSG_PING:
        return WIRE_OK;
    case MSG_RESCORE:
        /* No conversation_id: the request goes to the writer, which rescores every stored
         * utterance (of conversations started since `since`) with the current model. */
        return get_time(c, fl, F_SINCE, &msg->since);
    case MSG_HELLO: {
        json_t *tok = fl->v[F_TOKEN];
        if (tok && !json_is_string(tok))
            return fail(c, WIRE_BAD_FIELD, "field \"token\" must be a string");
        if (tok && !(msg->token = strdup(json_string_value(tok))))
            return WIRE_INTERNAL;
        json_t *cl = fl->v[F_CLIENT];
        if (cl && !json_is_string(cl))
            return fail(c, WIRE_BAD_FIELD, "field \"client\" must be a string");
        json_t *acks = fl->v[F_ACKS];
        if (acks) {
            if (!json_is_string(acks) || (strcmp(json_string_value(acks), "batch") &&
                                          strcmp(json_string_value(acks), "none")))
                return fail(c, WIRE_BAD_FIELD, "field \"acks\" must be \"batch\" or \"none\"");
            msg->acks_none = strcmp(json_string_value(acks), "none") == 0;
        }
        return WIRE_OK;
    }
    case MSG_SUBSCRIBE: {
        json_t *ev = fl->v[F_EVENTS];
        if (!ev)
            return fail(c, WIRE_MISSING_FIELD, "missing field \"events\"");
        if (!json_is_array(ev) || json_array_size(ev) == 0)
            return fail(c, WIRE_BAD_FIELD, "field \"events\" must be a non-empty array such as "
                        "[\"alert\"]");
        size_t i;
        json_t *v;
        json_array_foreach(ev, i, v) {
            if (!json_is_string(v) || strcmp(json_string_value(v), "alert"))
                return fail(c, WIRE_BAD_FIELD, "field \"events[%zu]\" must be \"alert\"", i);
        }
        json_t *f = fl->v[F_FILTER];
        if (f && !json_is_null(f)) {
            if (!json_is_object(f))
                return fail(c, WIRE_BAD_FIELD, "field \"filter\" must be an object");
            c->where = "filter.";
            fields ffl;
            fields_find(f, &ffl);
            if ((e = get_str(c, &ffl, F_QUEUE, false, &msg->filter_queue)) ||
                (e = get_str(c, &ffl, F_AGENT_ID, false, &msg->filter_agent_id)))
                return e;
            c->where = "";
        }
        return WIRE_OK;
    }
    default:
        break;
    }
    /* Only these, whose fields nobody takes out of the message. */
    json_t *turns = msg->type == MSG_CONVERSATION ? fl->v[F_TURNS] : NULL;
    msg_reserve(msg, c->line_len, msg->type == MSG_UTTERANCE ? 1 : json_array_size(turns));
    if ((e = get_str(c, fl, F_CONVERSATION_ID, true, &msg->conversation_id)))
        return e;
    switch (msg->type) {
    case MSG_UTTERANCE:
        msg->turns = msg_turns(msg, 1);
        if (!msg->turns)
            return WIRE_INTERNAL;
        msg->n_turns = 1;
        return get_turn(c, fl, &msg->turns[0]);
    case MSG_START:
        return get_meta(c, fl, &msg->facts);
    case MSG_END:
        msg->facts.ended = true;
        if ((e = get_time(c, fl, F_ENDED_AT, &msg->facts.ended_at)))
            return e;
        return get_outcome(c, fl, &msg->facts);
    case MSG_OUTCOME:
        return get_outcome(c, fl, &msg->facts);
    case MSG_CONVERSATION: {
        /* A whole transcript: its metrics are final, as after an `end`. */
        msg->facts.ended = true;
        if ((e = get_meta(c, fl, &msg->facts)))
            return e;
        json_t *oc = fl->v[F_OUTCOME];
        if (oc && !json_is_null(oc)) {
            if (!json_is_object(oc))
                return fail(c, WIRE_BAD_FIELD, "field \"outcome\" must be an object");
            c->where = "outcome.";
            fields ofl;
            fields_find(oc, &ofl);
            if ((e = get_outcome(c, &ofl, &msg->facts)))
                return e;
            c->where = "";
        }
        if (!turns)
            return fail(c, WIRE_MISSING_FIELD, "missing field \"turns\"");
        if (!json_is_array(turns))
            return fail(c, WIRE_BAD_FIELD, "field \"turns\" must be an array of utterances");
        size_t n = json_array_size(turns);
        msg->turns = msg_turns(msg, n ? n : 1);
        if (!msg->turns)
            return WIRE_INTERNAL;
        for (size_t i = 0; i < n; i++) {
            char where[40];
            snprintf(where, sizeof where, "turns[%zu].", i);
            c->where = where;
            json_t *tv = json_array_get(turns, i);
            msg->n_turns = i + 1;
            if (!json_is_object(tv))
                return fail(c, WIRE_BAD_FIELD, "field \"turns[%zu]\" must be an object", i);
            fields tfl;
            fields_find(tv, &tfl);
            if ((e = get_turn(c, &tfl, &msg->turns[i])))
                return e;
            /* Turns without seq take their index, so a resent conversation is idempotent. */
            if (msg->turns[i].seq == WIRE_ABSENT)
                msg->turns[i].seq = (int64_t)i;
        }
        c->where = "";
        return WIRE_OK;
    }
    default:
        return WIRE_INTERNAL;
    }
}

/* ---- values no field may hold ---------------------------------------------------------- */

enum unfit { FIT = 0, UNFIT_NUL, UNFIT_OVERFLOW };

static bool is_overflow_marker(json_t *v)
{
    json_t *s = json_array_get(v, 0);
    return json_array_size(v) == 1 && json_is_string(s) &&
           json_string_length(s) == sizeof OVERFLOW_STR - 1 &&
           memcmp(json_string_value(s), OVERFLOW_STR, sizeof OVERFLOW_STR - 1) == 0;
}

/* Puts seg (and a '.' when path goes on with a key) in front of path, keeping the front when
 * the whole does not fit. */
static void path_prepend(char *path, size_t path_len, const char *seg)
{
    bool dot = path[0] && path[0] != '[';
    size_t n = strlen(path), m = strnlen(seg, 64);
    char head[80];
    snprintf(head, sizeof head, "%.*s%s", (int)m, seg, dot ? "." : "");
    m = strlen(head);
    if (m >= path_len)
        m = path_len - 1;
    if (n + m >= path_len)
        n = path_len - 1 - m;
    memmove(path + m, path, n);
    memcpy(path, head, m);
    path[n + m] = '\0';
}

/* Finds the first value, in the order of the line (jansson keeps keys in insertion order), that
 * no field may hold: a string with a NUL character, which would be cut short wherever the daemon
 * uses it as a C string, or a number that was out of range (c->n_overflows). Unknown fields are
 * searched too, so that no string with a NUL is ever let through. Writes its path
 * ("turns[2].text") into path, which the caller sets to "". */
static enum unfit find_unfit(const ctx *c, json_t *v, char *path, size_t path_len)
{
    enum unfit u = FIT;
    if (json_is_string(v))
        return memchr(json_string_value(v), '\0', json_string_length(v)) ? UNFIT_NUL : FIT;
    if (c->n_overflows && is_overflow_marker(v))
        return UNFIT_OVERFLOW;
    if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) {
            if ((u = find_unfit(c, e, path, path_len))) {
                char seg[32];
                snprintf(seg, sizeof seg, "[%zu]", i);
                path_prepend(path, path_len, seg);
                return u;
            }
        }
    } else if (json_is_object(v)) {
        const char *key;
        json_t *e;
        json_object_foreach(v, key, e) {
            if ((u = find_unfit(c, e, path, path_len))) {
                path_prepend(path, path_len, key);
                return u;
            }
        }
    }
    return FIT;
}

/* ---- jansson's memory while a line is parsed -------------------------------------------- */

/* jansson allocates every value, key and hashtable of a parsed line separately and frees them
 * one by one in json_decref: about 25 malloc/free pairs per protocol line, an eighth of its cost.
 * While wire_parse runs, its allocations come from a fixed arena instead, bumped and never
 * freed piece by piece, and emptied when the line's value has been released; when the whole
 * value fits in the arena, emptying it is the release, without json_decref. The allocator
 * functions are process-wide (json_set_alloc_funcs) but the arena has one user at a time:
 * the thread that claimed it (in attuned, the loop thread); every other allocation, and what
 * does not fit, goes to malloc as before. Freeing a pointer into the arena does nothing, so
 * it does not matter which thread frees what. Nothing allocated in the arena outlives
 * wire_parse: the message's strings are copied out of jansson's values into its own block
 * (msg_reserve), and the id is dumped with the arena paused. */
#define ARENA_BYTES (64 * 1024)

static _Alignas(16) unsigned char arena[ARENA_BYTES];
static size_t arena_used;              /* bytes handed out since the arena was last emptied */
static bool is_arena_spilled;          /* the line's holder got memory from malloc since */
static atomic_flag arena_claimed = ATOMIC_FLAG_INIT;
static _Thread_local bool is_arena_mine; /* this thread claimed the arena for its line */
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void *arena_malloc(size_t n)
{
    if (is_arena_mine) {
        size_t need = (n + 15) & ~(size_t)15;
        if (need >= n && ARENA_BYTES - arena_used >= need) {
            void *p = arena + arena_used;
            arena_used += need;
            return p;
        }
        is_arena_spilled = true;
    }
    return malloc(n);
}

static void arena_free(void *p)
{
    if ((unsigned char *)p >= arena && (unsigned char *)p < arena + ARENA_BYTES)
        return;
    free(p);
}

/* What the first wire_parse sets up, for every thread. */
static void init(void)
{
    json_set_alloc_funcs(arena_malloc, arena_free);
    fields_init();
    fast_init();
}

/* AddressSanitizer must see every allocation to catch a use after free, so its builds (make
 * asan) leave jansson on malloc. */
#if defined(__SANITIZE_ADDRESS__)
#define IS_ARENA_USED false
#else
#define IS_ARENA_USED true
#endif

/* Starts a line: claims the arena when nobody holds it (else jansson uses malloc). */
static void arena_begin(void)
{
    pthread_once(&init_once, init);
    is_arena_mine = IS_ARENA_USED && !atomic_flag_test_and_set(&arena_claimed);
    if (is_arena_mine)
        is_arena_spilled = false;
}

/* Whether every value parsed since arena_begin lies in the arena, so that emptying it
 * releases them all and json_decref's walk of the value, freeing piece by piece into an arena
 * that ignores it, can be skipped. Values that jansson does not allocate (true, false, null)
 * are static and have no count to keep. */
static bool arena_holds_all(void)
{
    return is_arena_mine && !is_arena_spilled;
}

/* Stops allocating from the arena, e.g. for a string that must outlive the line. */
static void arena_pause(void)
{
    is_arena_mine = false;
}

static void arena_resume(void)
{
    is_arena_mine = true;
}

/* Ends a line once its value is released: the arena is empty again and free to claim. */
static void arena_end(bool was_mine)
{
    is_arena_mine = false;
    if (was_mine) {
        arena_used = 0;
        atomic_flag_clear(&arena_claimed);
    }
}

/* ---- parsing --------------------------------------------------------------------------- */

/* Whether the line holds the text \u0000 (or a backslash too near its end to tell), the only
 * way a NUL can enter a string: memchr for backslashes is far cheaper than walking the value. */
static bool may_hold_nul(const char *line, size_t len)
{
    const char *p = line, *end = line + len;
    while ((p = memchr(p, '\\', (size_t)(end - p)))) {
        if (end - p < 6 || memcmp(p + 1, "u0000", 5) == 0)
            return true;
        p += 2; /* the escaped character is never a backslash that starts an escape */
    }
    return false;
}

/* Where a marker stands in the line parsed again, and the length of the number it replaced. */
typedef struct overflow {
    size_t at, len;
} overflow;

/* A byte position in the line parsed again, as a position in the line the client sent. */
static size_t line_pos(const overflow *ov, int n_ov, size_t pos)
{
    size_t m = sizeof OVERFLOW_JSON - 1, grown = 0, shrunk = 0;
    for (int i = 0; i < n_ov && pos > ov[i].at; i++) {
        if (pos < ov[i].at + m)
            return ov[i].at + shrunk - grown; /* inside a marker: where its number started */
        grown += m;
        shrunk += ov[i].len;
    }
    return pos + shrunk - grown;
}

static size_t error_pos(const json_error_t *jerr)
{
    return jerr->position > 0 ? (size_t)jerr->position : 0;
}

/* The error of a line jansson refused, at byte pos of the line as the client sent it. */
static enum wire_error load_error(ctx *c, const json_error_t *jerr, size_t pos)
{
    switch (json_error_code(jerr)) {
    case json_error_invalid_utf8:
        return fail(c, WIRE_INVALID_UTF8, "the line is not valid UTF-8 (byte %zu)", pos);
    case json_error_null_byte_in_key:
        /* jansson keeps keys as C strings and refuses these while parsing; no field is named
         * so, and the value of any other field must not hold a NUL either. */
        return fail(c, WIRE_BAD_FIELD, "an object key contains a NUL character (\\u0000) "
                    "(byte %zu)", pos);
    default:
        return fail(c, WIRE_INVALID_JSON, "invalid JSON at byte %zu: %s", pos, jerr->text);
    }
}

static bool is_number_byte(char ch)
{
    return (ch >= '0' && ch <= '9') || ch == '-' || ch == '+' || ch == '.' || ch == 'e' ||
           ch == 'E';
}

/* Parses a line in which jansson found a number it cannot hold (jerr). Each such number, up to
 * MAX_OVERFLOWS, is replaced by OVERFLOW_JSON and the line parsed again, so that the rest of it
 * is still checked as JSON and find_unfit can name the field. Returns the value, or NULL with
 * the line's error in *e. */
static json_t *load_overflowing(ctx *c, const char *line, size_t len, json_error_t *jerr,
                                enum wire_error *e)
{
    size_t m = sizeof OVERFLOW_JSON - 1, n = len, first_end = error_pos(jerr);
    overflow ov[MAX_OVERFLOWS];
    int n_ov = 0;
    json_t *v = NULL;
    char *buf = malloc(len + MAX_OVERFLOWS * m);
    if (!buf) {
        *e = fail(c, WIRE_INTERNAL, "the server ran out of memory parsing the line");
        return NULL;
    }
    memcpy(buf, line, len);
    for (;;) {
        /* jansson stops just past the number. */
        size_t end = error_pos(jerr), start;
        if (end > n)
            end = n;
        for (start = end; start > 0 && is_number_byte(buf[start - 1]); start--)
            ;
        while (start < end && buf[start] != '-' && !(buf[start] >= '0' && buf[start] <= '9'))
            start++;
        if (n_ov == MAX_OVERFLOWS || start == end) {
            *e = fail(c, WIRE_BAD_FIELD, "a number ending at byte %zu is out of range (more "
                      "than 64 bits, or beyond the largest double)", first_end);
            goto done;
        }
        if (n_ov == 0)
            c->is_real_overflow = memchr(buf + start, '.', end - start) ||
                                  memchr(buf + start, 'e', end - start) ||
                                  memchr(buf + start, 'E', end - start);
        memmove(buf + start + m, buf + end, n - end);
        memcpy(buf + start, OVERFLOW_JSON, m);
        n = n - (end - start) + m;
        ov[n_ov].at = start;
        ov[n_ov].len = end - start;
        n_ov++;
        if ((v = json_loadb(buf, n, LOAD_FLAGS, jerr)))
            break;
        if (json_error_code(jerr) != json_error_numeric_overflow) {
            *e = load_error(c, jerr, line_pos(ov, n_ov, error_pos(jerr)));
            goto done;
        }
    }
    c->n_overflows = n_ov;
done:
    free(buf);
    return v;
}

/* The colons of the line that follow a '"' (whitespace between them aside). Every key of every
 * object is a string followed by one such colon, so there are at least as many as keys; a
 * colon inside a string can only add to them. */
static size_t count_key_colons(const char *line, size_t len)
{
    size_t n = 0;
    const char *p = line, *end = line + len;
    while ((p = memchr(p, ':', (size_t)(end - p)))) {
        const char *q = p;
        while (q > line && is_json_space(q[-1]))
            q--;
        n += q > line && q[-1] == '"';
        p++;
    }
    return n;
}

/* The key/value pairs of every object within v. */
static size_t count_pairs(json_t *v)
{
    size_t n = 0;
    if (json_is_object(v)) {
        const char *key;
        json_t *e;
        n = json_object_size(v);
        json_object_foreach(v, key, e) {
            if (json_is_object(e) || json_is_array(e))
                n += count_pairs(e);
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) {
            if (json_is_object(e) || json_is_array(e))
                n += count_pairs(e);
        }
    }
    return n;
}

/* json_loadb with LOAD_FLAGS, without paying JSON_REJECT_DUPLICATES's second lookup of every
 * key (a fiftieth of this thread's work per line). The line is parsed without the flag, then
 * again with it unless the value surely lost no key to a duplicate: without the flag a
 * duplicate replaces the earlier pair, so the objects hold as many pairs as the line has keys
 * exactly when no key was repeated, and the keys are at most count_key_colons. A failed parse
 * is repeated too, so that the error is the one LOAD_FLAGS gives (a duplicate may come before
 * the other fault). Colons inside strings after a '"' only cost the second parse. */
static json_t *load_line(const char *line, size_t len, json_error_t *jerr)
{
    /* Without an error record to fill: a failure is parsed again for its error. */
    json_t *v = json_loadb(line, len, LOAD_FLAGS & ~JSON_REJECT_DUPLICATES, NULL);
    if (v) {
        size_t n_colons = count_key_colons(line, len);
        /* The top object's pairs alone, when they are all the colons: the common case,
         * without a walk. */
        if ((json_is_object(v) && json_object_size(v) == n_colons) ||
            count_pairs(v) == n_colons)
            return v;
        json_decref(v);
    }
    return json_loadb(line, len, LOAD_FLAGS, jerr);
}

/* wire_parse with the arena in place. */
static enum wire_error parse_line(const char *line, size_t len, message *msg, char *why,
                                  size_t why_len, char **id_out, bool may_be_fast)
{
    ctx c = {why, why_len, "", 0, false, len, msg};
    memset(msg, 0, sizeof *msg);
    *id_out = NULL;
    json_error_t jerr;
    enum wire_error e;
    fields fl;
    json_t *obj = NULL;
    if (!may_be_fast || !fast_parse(line, len, &fl)) {
        /* DECODE_ANY: a line that is valid JSON but not an object ("42", "null") is
         * not_object, not invalid_json. */
        obj = load_line(line, len, &jerr);
        if (!obj) {
            if (json_error_code(&jerr) != json_error_numeric_overflow)
                return load_error(&c, &jerr, error_pos(&jerr));
            if (!(obj = load_overflowing(&c, line, len, &jerr, &e)))
                return e;
        }
        if (!json_is_object(obj)) {
            e = fail(&c, WIRE_NOT_OBJECT, "a line must be one JSON object");
            memset(&fl, 0, sizeof fl);
            goto done;
        }
        fields_find(obj, &fl);
    }
    char path[160];
    path[0] = '\0';
    json_t *id = fl.v[F_ID];
    /* An id with a number out of range cannot be echoed as it was sent. */
    if (id && !(c.n_overflows && find_unfit(&c, id, path, sizeof path) == UNFIT_OVERFLOW)) {
        /* The id outlives the line: not from the arena. */
        bool was_mine = is_arena_mine;
        arena_pause();
        msg->id = json_dumps(id, JSON_ENCODE_ANY | JSON_COMPACT);
        if (was_mine)
            arena_resume();
        if (!msg->id) {
            e = WIRE_INTERNAL;
            goto done;
        }
    }
    path[0] = '\0';
    /* A string can hold a NUL only through the escape \u0000 (a raw NUL byte is invalid JSON),
     * so a line without that text needs no walk unless a number was out of range. */
    enum unfit unfit = FIT;
    if (obj && (c.n_overflows || may_hold_nul(line, len)))
        unfit = find_unfit(&c, obj, path, sizeof path);
    switch (unfit) {
    case UNFIT_NUL:
        e = fail(&c, WIRE_BAD_FIELD, "field \"%s\" contains a NUL character (\\u0000)", path);
        goto done;
    case UNFIT_OVERFLOW:
        e = fail(&c, WIRE_BAD_FIELD, "field \"%s\" is out of range: %s", path,
                 c.is_real_overflow ? "a number beyond the largest double"
                                    : "an integer that does not fit in 64 bits");
        goto done;
    case FIT:
        break;
    }
    e = parse_object(&c, &fl, msg);
done:
    if (e == WIRE_INTERNAL)
        snprintf(why, why_len, "the server ran out of memory parsing the line");
    if (e != WIRE_OK) {
        *id_out = msg->id;
        msg->id = NULL;
        message_fini(msg);
    }
    if (!arena_holds_all()) {
        if (obj)
            json_decref(obj);
        else
            fields_release(&fl);
    }
    return e;
}

enum wire_error wire_parse_via(enum wire_path path, const char *line, size_t len, message *msg,
                               char *why, size_t why_len, char **id_out)
{
    arena_begin();
    bool was_mine = is_arena_mine;
    enum wire_error e = parse_line(line, len, msg, why, why_len, id_out,
                                   path != WIRE_PATH_JANSSON);
    arena_end(was_mine);
    return e;
}

enum wire_error wire_parse(const char *line, size_t len, message *msg, char *why, size_t why_len,
                           char **id_out)
{
    return wire_parse_via(WIRE_PATH_ANY, line, len, msg, why, why_len, id_out);
}

