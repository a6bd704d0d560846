/*
 * main.c: the `attune` command: dispatches to subcommands and holds what they share (finding
 * the lexicons, writing numbers and JSON strings the same way everywhere).
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: attune COMMAND [OPTIONS]\n"
            "\n"
            "commands:\n"
            "  score [--speaker S] [--text] [--lexicons DIR] [FILE...]\n"
            "        score NDJSON utterances (stdin when no FILE), one JSON line out per input\n"
            "  explain [--speaker S] [--lexicons DIR] TEXT...\n"
            "        show how a text was scored: tokens, rules, sum, compound, markers\n"
            "  eval [--lexicons DIR] [--errors] [--format table|json] [--min-f1 X] FILE\n"
            "        precision, recall and F1 per marker category on labelled utterances\n"
            "  version\n"
            "\n"
            "speakers: customer (default), agent, bot, system\n");
}

at_model *cli_load_model(const char *dir)
{
    char buf[PATH_MAX];
    if (!dir) {
        at_lexicon_dir_default(buf, sizeof buf);
        dir = buf;
    }
    at_model *model;
    char err[1024];
    int rc = at_model_new(dir, &model, err, sizeof err);
    if (rc) {
        fprintf(stderr, "attune: cannot build the model from %s: %s\n", dir,
                err[0] ? err : at_strerror(rc));
        return NULL;
    }
    return model;
}

void cli_put_number(FILE *f, double x, int ndigits)
{
    char s[64];
    snprintf(s, sizeof s, "%.*f", ndigits, at_round(x, ndigits));
    if (strcmp(s, "-0") == 0 || (s[0] == '-' && strspn(s + 1, "0.") == strlen(s + 1)))
        memmove(s, s + 1, strlen(s)); /* no "-0.0" */
    char *dot = strchr(s, '.');
    if (dot) {
        char *end = s + strlen(s) - 1;
        while (end > dot + 1 && *end == '0')
            *end-- = '\0';
    }
    fputs(s, f);
}

void cli_put_json_string(FILE *f, const char *s, size_t len)
{
    putc('"', f);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            putc('\\', f);
            putc(c, f);
        } else if (c == '\n') {
            fputs("\\n", f);
        } else if (c == '\t') {
            fputs("\\t", f);
        } else if (c == '\r') {
            fputs("\\r", f);
        } else if (c < 0x20) {
            fprintf(f, "\\u%04x", c);
        } else {
            putc(c, f);
        }
    }
    putc('"', f);
}

static void put_categories(FILE *f, const at_result *r, at_family fam)
{
    bool first = true;
    putc('[', f);
    for (int c = 0; c < AT_N_CATEGORIES; c++) {
        if (at_category_family((at_category)c) != fam || !(r->category_mask & (1u << c)))
            continue;
        fprintf(f, "%s\"%s\"", first ? "" : ",", at_category_name((at_category)c));
        first = false;
    }
    putc(']', f);
}

void cli_put_result(FILE *f, const at_result *r, at_speaker speaker, bool with_markers)
{
    fputs("\"sentiment\":{\"neg\":", f);
    cli_put_number(f, r->sentiment.neg, 3);
    fputs(",\"neu\":", f);
    cli_put_number(f, r->sentiment.neu, 3);
    fputs(",\"pos\":", f);
    cli_put_number(f, r->sentiment.pos, 3);
    fputs(",\"compound\":", f);
    cli_put_number(f, r->sentiment.compound, 4);
    fputs("},\"empathy\":", f);
    put_categories(f, r, AT_FAMILY_EMPATHY);
    fputs(",\"dismissive\":", f);
    put_categories(f, r, AT_FAMILY_DISMISSIVE);
    fputs(",\"frustration\":", f);
    put_categories(f, r, AT_FAMILY_FRUSTRATION);
    fputs(",\"frustration_score\":", f);
    if (speaker == AT_SPEAKER_CUSTOMER)
        cli_put_number(f, r->frustration_score, 4);
    else
        fputs("null", f);
    if (with_markers) {
        fputs(",\"markers\":[", f);
        for (size_t i = 0; i < r->n_markers; i++) {
            const at_marker *m = &r->markers[i];
            fprintf(f, "%s{\"family\":\"%s\",\"category\":\"%s\",\"pattern\":", i ? "," : "",
                    at_family_name(at_category_family(m->category)),
                    at_category_name(m->category));
            cli_put_json_string(f, m->pattern_id, strlen(m->pattern_id));
            fprintf(f, ",\"start\":%zu,\"end\":%zu}", m->start, m->end);
        }
        putc(']', f);
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "score") == 0)
        return cmd_score(argc - 1, argv + 1);
    if (strcmp(cmd, "explain") == 0)
        return cmd_explain(argc - 1, argv + 1);
    if (strcmp(cmd, "eval") == 0)
        return cmd_eval(argc - 1, argv + 1);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("attune %s\n", AT_VERSION);
        return EXIT_OK;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return EXIT_OK;
    }
    fprintf(stderr, "attune: unknown command \"%s\"\n", cmd);
    usage(stderr);
    return EXIT_USAGE;
}
