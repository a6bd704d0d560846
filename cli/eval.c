/*
 * eval.c: `attune eval`: scores labelled utterances ({"id","speaker","text","empathy":[...],
 * "dismissive":[...],"frustration":[...]}) and reports precision, recall and F1 per category
 * and micro-averaged per family. An utterance counts once per category (set semantics).
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

typedef struct counts {
    int tp, fp, fn;
} counts;

static double ratio(int a, int b)
{
    return b ? (double)a / b : 0.0;
}

static double f1(counts c)
{
    double p = ratio(c.tp, c.tp + c.fp), r = ratio(c.tp, c.tp + c.fn);
    return p + r > 0 ? 2 * p * r / (p + r) : 0.0;
}

/* Reads the gold labels of one family into a mask; unknown names are an input error. */
static bool gold_mask(json_t *obj, at_family fam, uint32_t *mask, const char *file, size_t line)
{
    json_t *arr = json_object_get(obj, at_family_name(fam));
    if (!arr)
        return true;
    if (!json_is_array(arr)) {
        fprintf(stderr, "attune: %s:%zu: field \"%s\" must be an array\n", file, line,
                at_family_name(fam));
        return false;
    }
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) {
        at_category cat;
        if (!json_is_string(v) ||
            at_category_parse(json_string_value(v), json_string_length(v), &cat) ||
            at_category_family(cat) != fam) {
            fprintf(stderr, "attune: %s:%zu: \"%s\" holds something that is not a %s category\n",
                    file, line, at_family_name(fam), at_family_name(fam));
            return false;
        }
        *mask |= 1u << cat;
    }
    return true;
}

int cmd_eval(int argc, char **argv)
{
    static const struct option opts[] = {
        {"lexicons", required_argument, NULL, 'L'},
        {"errors", no_argument, NULL, 'e'},
        {"format", required_argument, NULL, 'f'},
        {"min-f1", required_argument, NULL, 'm'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *lexicons = NULL;
    bool show_errors = false, json = false;
    double min_f1 = -1;
    int c;
    while ((c = getopt_long(argc, argv, "L:ef:m:h", opts, NULL)) != -1) {
        switch (c) {
        case 'L': lexicons = optarg; break;
        case 'e': show_errors = true; break;
        case 'f':
            if (strcmp(optarg, "json") == 0)
                json = true;
            else if (strcmp(optarg, "table") != 0) {
                fprintf(stderr, "attune: --format must be table or json\n");
                return EXIT_USAGE;
            }
            break;
        case 'm': min_f1 = strtod(optarg, NULL); break;
        case 'h':
            puts("usage: attune eval [--lexicons DIR] [--errors] [--format table|json] "
                 "[--min-f1 X] FILE");
            return EXIT_OK;
        default: return EXIT_USAGE;
        }
    }
    if (optind + 1 != argc) {
        fprintf(stderr, "attune: eval needs exactly one FILE of labelled utterances\n");
        return EXIT_USAGE;
    }
    const char *file = argv[optind];
    FILE *in = fopen(file, "r");
    if (!in) {
        fprintf(stderr, "attune: %s: cannot open: %s\n", file, strerror(errno));
        return EXIT_INPUT;
    }
    at_model *model = cli_load_model(lexicons);
    at_scratch *scratch = NULL;
    if (!model || at_scratch_new(&scratch)) {
        fclose(in);
        at_model_free(model);
        return EXIT_INPUT;
    }
    counts per[AT_N_CATEGORIES] = {{0}};
    int n_items = 0, n_bad = 0;
    char *line = NULL;
    size_t cap = 0, line_no = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, in)) >= 0) {
        line_no++;
        json_error_t jerr;
        json_t *obj = json_loadb(line, (size_t)n, 0, &jerr);
        if (!obj || !json_is_object(obj)) {
            if (strspn(line, " \t\r\n") != (size_t)n) {
                fprintf(stderr, "attune: %s:%zu: not a JSON object\n", file, line_no);
                n_bad++;
            }
            json_decref(obj);
            continue;
        }
        json_t *text = json_object_get(obj, "text");
        json_t *sp = json_object_get(obj, "speaker");
        at_speaker speaker = AT_SPEAKER_CUSTOMER;
        uint32_t gold = 0;
        if (!json_is_string(text) ||
            (sp && (!json_is_string(sp) || at_speaker_parse(json_string_value(sp),
                                                            json_string_length(sp), &speaker)))) {
            fprintf(stderr, "attune: %s:%zu: needs a string \"text\" and a valid \"speaker\"\n",
                    file, line_no);
            n_bad++;
            json_decref(obj);
            continue;
        }
        bool ok = true;
        for (int f = 0; f < AT_N_FAMILIES; f++)
            ok &= gold_mask(obj, (at_family)f, &gold, file, line_no);
        at_result r;
        if (!ok || at_score(model, scratch, json_string_value(text), json_string_length(text),
                            speaker, 0, &r)) {
            n_bad++;
            json_decref(obj);
            continue;
        }
        n_items++;
        for (int k = 0; k < AT_N_CATEGORIES; k++) {
            bool g = gold & (1u << k), p = r.category_mask & (1u << k);
            per[k].tp += g && p;
            per[k].fp += !g && p;
            per[k].fn += g && !p;
            if (show_errors && g != p) {
                json_t *id = json_object_get(obj, "id");
                const char *pid = "";
                for (size_t i = 0; i < r.n_markers; i++)
                    if (r.markers[i].category == (at_category)k)
                        pid = r.markers[i].pattern_id;
                fprintf(stderr, "%s %-18s %-8s %-8s %s %s\n", g ? "FN" : "FP",
                        at_category_name((at_category)k), json_is_string(id) ?
                        json_string_value(id) : "-", at_speaker_name(speaker),
                        json_string_value(text), pid);
            }
        }
        json_decref(obj);
    }
    free(line);
    fclose(in);

    counts fam[AT_N_FAMILIES] = {{0}};
    for (int k = 0; k < AT_N_CATEGORIES; k++) {
        counts *f = &fam[at_category_family((at_category)k)];
        f->tp += per[k].tp;
        f->fp += per[k].fp;
        f->fn += per[k].fn;
    }
    if (json) {
        printf("{\"utterances\":%d,\"categories\":[", n_items);
        for (int k = 0; k < AT_N_CATEGORIES; k++) {
            counts x = per[k];
            printf("%s{\"family\":\"%s\",\"category\":\"%s\",\"support\":%d,\"tp\":%d,"
                   "\"fp\":%d,\"fn\":%d,\"precision\":%.4f,\"recall\":%.4f,\"f1\":%.4f}",
                   k ? "," : "", at_family_name(at_category_family((at_category)k)),
                   at_category_name((at_category)k), x.tp + x.fn, x.tp, x.fp, x.fn,
                   ratio(x.tp, x.tp + x.fp), ratio(x.tp, x.tp + x.fn), f1(x));
        }
        printf("],\"families\":[");
        for (int f = 0; f < AT_N_FAMILIES; f++) {
            counts x = fam[f];
            printf("%s{\"family\":\"%s\",\"tp\":%d,\"fp\":%d,\"fn\":%d,\"micro_precision\":%.4f,"
                   "\"micro_recall\":%.4f,\"micro_f1\":%.4f}",
                   f ? "," : "", at_family_name((at_family)f), x.tp, x.fp, x.fn,
                   ratio(x.tp, x.tp + x.fp), ratio(x.tp, x.tp + x.fn), f1(x));
        }
        printf("]}\n");
    } else {
        printf("%-12s %-20s %7s %5s %5s %5s %9s %7s %7s\n", "family", "category", "support",
               "tp", "fp", "fn", "precision", "recall", "f1");
        for (int k = 0; k < AT_N_CATEGORIES; k++) {
            counts x = per[k];
            printf("%-12s %-20s %7d %5d %5d %5d %9.3f %7.3f %7.3f\n",
                   at_family_name(at_category_family((at_category)k)),
                   at_category_name((at_category)k), x.tp + x.fn, x.tp, x.fp, x.fn,
                   ratio(x.tp, x.tp + x.fp), ratio(x.tp, x.tp + x.fn), f1(x));
        }
        for (int f = 0; f < AT_N_FAMILIES; f++) {
            counts x = fam[f];
            printf("%-12s %-20s %7d %5d %5d %5d %9.3f %7.3f %7.3f\n", at_family_name((at_family)f),
                   "(micro)", x.tp + x.fn, x.tp, x.fp, x.fn, ratio(x.tp, x.tp + x.fp),
                   ratio(x.tp, x.tp + x.fn), f1(x));
        }
        printf("%d utterances\n", n_items);
    }
    int status = n_bad ? EXIT_INPUT : EXIT_OK;
    for (int f = 0; f < AT_N_FAMILIES && min_f1 >= 0; f++) {
        if (f1(fam[f]) < min_f1) {
            fprintf(stderr, "attune: %s micro-F1 %.3f is below %.3f\n",
                    at_family_name((at_family)f), f1(fam[f]), min_f1);
            status = EXIT_INPUT;
        }
    }
    at_scratch_free(scratch);
    at_model_free(model);
    return status;
}
