/*
 * score.c: `attune score` (NDJSON or plain text in, one JSON line out per utterance, input
 * fields copied through unchanged) and `attune explain` (a readable breakdown of one text).
 *
 * A bad input line gives one error on stderr naming the file, line number and problem; scoring
 * carries on with the next line and the exit status is 1.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* Keys the output adds; an input object that has them gets them replaced, not duplicated. */
static const char *const output_keys[] = {"sentiment", "dismissive", "empathy", "frustration",
                                          "frustration_score", "markers"};

typedef struct scorer {
    at_model *model;
    at_scratch *scratch;
    at_speaker default_speaker;
    const char *file; /* for messages */
    size_t line_no;
    int n_errors;
} scorer;

static void input_error(scorer *sc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void input_error(scorer *sc, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "attune: %s:%zu: ", sc->file, sc->line_no);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    sc->n_errors++;
}

static bool parse_speaker_arg(const char *s, at_speaker *out)
{
    if (at_speaker_parse(s, strlen(s), out) == 0)
        return true;
    fprintf(stderr, "attune: unknown speaker \"%s\" (customer, agent, bot or system)\n", s);
    return false;
}

/* Validates an utterance-like object: text (string) and optional speaker. where names the
 * object in messages ("" or "turns[3]: "). */
static bool check_turn(scorer *sc, json_t *obj, const char *where, const char **text,
                       size_t *len, at_speaker *speaker)
{
    json_t *t = json_object_get(obj, "text");
    if (!t) {
        input_error(sc, "%smissing field \"text\"", where);
        return false;
    }
    if (!json_is_string(t)) {
        input_error(sc, "%sfield \"text\" must be a string", where);
        return false;
    }
    *text = json_string_value(t);
    *len = json_string_length(t);
    *speaker = sc->default_speaker;
    json_t *s = json_object_get(obj, "speaker");
    if (s) {
        if (!json_is_string(s) ||
            at_speaker_parse(json_string_value(s), json_string_length(s), speaker)) {
            input_error(sc, "%sfield \"speaker\" must be \"customer\", \"agent\", \"bot\" or "
                        "\"system\"", where);
            return false;
        }
    }
    return true;
}

static bool score_text(scorer *sc, const char *text, size_t len, at_speaker speaker,
                       at_result *r)
{
    int rc = at_score(sc->model, sc->scratch, text, len, speaker, 0, r);
    if (rc) {
        input_error(sc, "scoring failed: %s", at_strerror(rc));
        return false;
    }
    if (r->n_limit_hits)
        fprintf(stderr, "attune: %s:%zu: warning: %d pattern(s) hit the PCRE2 match limit and "
                "were skipped\n", sc->file, sc->line_no, r->n_limit_hits);
    return true;
}

/* Writes obj's own serialisation minus its closing brace, for the result to be appended. */
static void put_object_open(json_t *obj, const char *raw, size_t raw_len)
{
    bool clash = false;
    for (size_t i = 0; i < sizeof output_keys / sizeof *output_keys; i++)
        clash |= json_object_get(obj, output_keys[i]) != NULL;
    if (!clash && raw) {
        /* The input bytes themselves, so that every field is copied exactly as sent. */
        while (raw_len && raw[raw_len - 1] != '}')
            raw_len--;
        raw_len--; /* the closing brace */
        fwrite(raw, 1, raw_len, stdout);
        size_t k = raw_len;
        while (k && (raw[k - 1] == ' ' || raw[k - 1] == '\t'))
            k--;
        if (raw[k - 1] != '{')
            putchar(',');
        return;
    }
    for (size_t i = 0; i < sizeof output_keys / sizeof *output_keys; i++)
        json_object_del(obj, output_keys[i]);
    char *s = json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(17));
    size_t n = strlen(s);
    fwrite(s, 1, n - 1, stdout);
    if (json_object_size(obj))
        putchar(',');
    free(s);
}

static void score_json_line(scorer *sc, const char *line, size_t len)
{
    json_error_t jerr;
    json_t *obj = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!obj) {
        input_error(sc, "invalid JSON at column %d: %s", jerr.column, jerr.text);
        return;
    }
    if (!json_is_object(obj)) {
        input_error(sc, "expected a JSON object");
        goto done;
    }
    json_t *type = json_object_get(obj, "type");
    const char *tname = "utterance";
    if (type) {
        if (!json_is_string(type)) {
            input_error(sc, "field \"type\" must be a string");
            goto done;
        }
        tname = json_string_value(type);
    }
    at_result r;
    if (strcmp(tname, "utterance") == 0) {
        const char *text;
        size_t tlen;
        at_speaker speaker;
        if (!check_turn(sc, obj, "", &text, &tlen, &speaker) ||
            !score_text(sc, text, tlen, speaker, &r))
            goto done;
        put_object_open(obj, line, len);
        cli_put_result(stdout, &r, speaker, true);
        fputs("}\n", stdout);
    } else if (strcmp(tname, "conversation") == 0) {
        json_t *cid = json_object_get(obj, "conversation_id");
        json_t *turns = json_object_get(obj, "turns");
        if (!cid || !json_is_string(cid)) {
            input_error(sc, cid ? "field \"conversation_id\" must be a string"
                                : "missing field \"conversation_id\"");
            goto done;
        }
        if (!turns || !json_is_array(turns)) {
            input_error(sc, turns ? "field \"turns\" must be an array"
                                  : "missing field \"turns\"");
            goto done;
        }
        size_t i;
        json_t *turn;
        json_array_foreach(turns, i, turn) {
            char where[48];
            snprintf(where, sizeof where, "turns[%zu]: ", i);
            if (!json_is_object(turn)) {
                input_error(sc, "%sexpected a JSON object", where);
                continue;
            }
            const char *text;
            size_t tlen;
            at_speaker speaker;
            if (!check_turn(sc, turn, where, &text, &tlen, &speaker) ||
                !score_text(sc, text, tlen, speaker, &r))
                continue;
            json_t *out = json_deep_copy(turn);
            json_object_set(out, "conversation_id", cid);
            if (!json_object_get(out, "seq"))
                json_object_set_new(out, "seq", json_integer((json_int_t)i));
            put_object_open(out, NULL, 0);
            cli_put_result(stdout, &r, speaker, true);
            fputs("}\n", stdout);
            json_decref(out);
        }
    } else if (strcmp(tname, "hello") && strcmp(tname, "start") && strcmp(tname, "end") &&
               strcmp(tname, "outcome") && strcmp(tname, "ping") && strcmp(tname, "subscribe")) {
        /* Other protocol messages carry no text and are passed over; anything else is a
         * mistake worth reporting. */
        input_error(sc, "unknown type \"%s\" (expected utterance or conversation)", tname);
    }
done:
    json_decref(obj);
}

static void score_stream(scorer *sc, FILE *in, bool plain)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    sc->line_no = 0;
    while ((n = getline(&line, &cap, in)) >= 0) {
        sc->line_no++;
        size_t len = (size_t)n;
        if (len && line[len - 1] == '\n')
            len--;
        if (len && line[len - 1] == '\r')
            len--;
        if (plain) {
            at_result r;
            if (!score_text(sc, line, len, sc->default_speaker, &r))
                continue;
            fputs("{\"text\":", stdout);
            cli_put_json_string(stdout, line, len);
            putchar(',');
            cli_put_result(stdout, &r, sc->default_speaker, true);
            fputs("}\n", stdout);
            continue;
        }
        size_t k = 0;
        while (k < len && (line[k] == ' ' || line[k] == '\t'))
            k++;
        if (k == len)
            continue; /* blank lines are allowed between records */
        score_json_line(sc, line, len);
    }
    free(line);
}

int cmd_score(int argc, char **argv)
{
    static const struct option opts[] = {
        {"speaker", required_argument, NULL, 's'},
        {"text", no_argument, NULL, 't'},
        {"lexicons", required_argument, NULL, 'L'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    scorer sc = {.default_speaker = AT_SPEAKER_CUSTOMER};
    bool plain = false;
    const char *lexicons = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "s:tL:h", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            if (!parse_speaker_arg(optarg, &sc.default_speaker))
                return EXIT_USAGE;
            break;
        case 't': plain = true; break;
        case 'L': lexicons = optarg; break;
        case 'h':
            puts("usage: attune score [--speaker S] [--text] [--lexicons DIR] [FILE...]");
            return EXIT_OK;
        default: return EXIT_USAGE;
        }
    }
    sc.model = cli_load_model(lexicons);
    if (!sc.model)
        return EXIT_INPUT;
    if (at_scratch_new(&sc.scratch)) {
        at_model_free(sc.model);
        fprintf(stderr, "attune: out of memory\n");
        return EXIT_INPUT;
    }
    int status = EXIT_OK;
    if (optind == argc) {
        sc.file = "<stdin>";
        score_stream(&sc, stdin, plain);
    }
    for (int i = optind; i < argc; i++) {
        FILE *f = strcmp(argv[i], "-") == 0 ? stdin : fopen(argv[i], "r");
        if (!f) {
            fprintf(stderr, "attune: %s: cannot open: %s\n", argv[i], strerror(errno));
            status = EXIT_INPUT;
            continue;
        }
        sc.file = f == stdin ? "<stdin>" : argv[i];
        score_stream(&sc, f, plain);
        if (f != stdin)
            fclose(f);
    }
    at_scratch_free(sc.scratch);
    at_model_free(sc.model);
    if (fflush(stdout) != 0) {
        fprintf(stderr, "attune: writing output: %s\n", strerror(errno));
        return EXIT_INPUT;
    }
    return sc.n_errors ? EXIT_INPUT : status;
}

int cmd_explain(int argc, char **argv)
{
    static const struct option opts[] = {
        {"speaker", required_argument, NULL, 's'},
        {"lexicons", required_argument, NULL, 'L'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    at_speaker speaker = AT_SPEAKER_CUSTOMER;
    const char *lexicons = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "s:L:h", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            if (!parse_speaker_arg(optarg, &speaker))
                return EXIT_USAGE;
            break;
        case 'L': lexicons = optarg; break;
        case 'h':
            puts("usage: attune explain [--speaker S] [--lexicons DIR] TEXT...");
            return EXIT_OK;
        default: return EXIT_USAGE;
        }
    }
    if (optind == argc) {
        fprintf(stderr, "attune: explain needs a TEXT\n");
        return EXIT_USAGE;
    }
    /* The words of the command line, joined by single spaces, are the text. */
    size_t len = 0;
    for (int i = optind; i < argc; i++)
        len += strlen(argv[i]) + 1;
    char *text = malloc(len + 1);
    if (!text)
        return EXIT_INPUT;
    text[0] = '\0';
    for (int i = optind; i < argc; i++) {
        if (i > optind)
            strcat(text, " ");
        strcat(text, argv[i]);
    }
    at_model *model = cli_load_model(lexicons);
    if (!model) {
        free(text);
        return EXIT_INPUT;
    }
    char *out = NULL;
    int rc = at_explain(model, text, strlen(text), speaker, &out);
    if (rc) {
        fprintf(stderr, "attune: explain failed: %s\n", at_strerror(rc));
    } else {
        printf("text: %s\n%s", text, out);
    }
    free(out);
    free(text);
    at_model_free(model);
    return rc ? EXIT_INPUT : EXIT_OK;
}
