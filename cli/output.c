/*
 * output.c: how attune writes numbers, JSON strings and scoring results, the same way
 * everywhere: `attune score` lines and the SQLite extension's attune_score() are byte for byte
 * the same JSON for the same text.
 */
#include <string.h>

#include "cli.h"

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
