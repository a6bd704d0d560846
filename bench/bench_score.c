/*
 * bench_score.c: single-core throughput of at_score on an utterance corpus.
 *
 * Reads an NDJSON corpus of {"speaker","text"} lines (bench/gen_corpus.py --format utterances)
 * into one buffer, builds a model from a lexicon directory (and optionally a second one to
 * compare), pins itself to one CPU and measures utterances/s and MB/s for sentiment-only and
 * full scoring. Each measurement scores the corpus round and round until the thread has had at
 * least --seconds of CPU time; each is repeated --repeats times and the best is reported.
 *
 * Rates are per second of the thread's CPU time: on an idle machine that is wall time, and on a
 * shared one (other builds and tests running) it still gives what one core does, where wall
 * time would count the time the thread spent waiting for the CPU. The wall-time rate and the
 * share of the CPU the thread got are printed next to it. With a second model the
 * rounds interleave (A sentiment, A full, B full, A sentiment, ...) so that drift in clock speed
 * or background load hits both models alike, and the time ratio B/A is printed.
 *
 * Honesty: every result is folded into a checksum that is printed, so the compiler cannot drop
 * the calls; one exact pass per model also counts markers, which must be equal for a model and
 * its padded copy when the padding patterns cannot match (it is printed for both).
 *
 * Output: a readable report on stdout; with --json FILE also one JSON object per line (results,
 * models, memory) for bench/summary.py.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "attune.h"

/* The corpus: all texts back to back in one buffer (each NUL-terminated for convenience). */
typedef struct utterance {
    size_t off;
    size_t len;
    at_speaker speaker;
} utterance;

typedef struct corpus {
    char *text;
    size_t text_len; /* bytes used, including the NULs */
    utterance *utts;
    size_t n_utts;
    size_t n_bytes; /* sum of text lengths (the MB/s numerator) */
    size_t n_by_speaker[AT_N_SPEAKERS];
} corpus;

typedef struct bench_model {
    const char *label; /* "A" or "B" */
    const char *dir;
    at_model *model;
    double build_ms;
    size_t n_patterns;
    size_t n_unfiltered;
    long rss_before_kb; /* VmRSS just before at_model_new */
    long rss_after_kb;  /* and just after */
    /* One exact pass in full mode (deterministic, independent of timing). */
    uint64_t pass_markers;
    uint64_t pass_by_category[AT_N_CATEGORIES];
    double pass_compound_sum;
    uint64_t pass_limit_hits;
} bench_model;

typedef struct result {
    const char *mode; /* "sentiment" or "full" */
    bench_model *bm;
    double best_s;        /* wall seconds of the best repeat */
    double best_cpu_s;    /* thread CPU seconds of that repeat */
    size_t best_n;        /* utterances scored in the best repeat */
    size_t best_bytes;    /* bytes scored in the best repeat */
    double best_rate;     /* utterances per CPU second */
    double worst_rate;
    uint64_t checksum;    /* over every call of every repeat */
} result;

static double now_s(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Reads "Key:   123 kB" from /proc/self/status; returns kB or -1. */
static long proc_status_kb(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    size_t klen = strlen(key);
    long kb = -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
            kb = strtol(line + klen + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("bench_score: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n);
    if (!p)
        die("%s", "out of memory");
    return p;
}

static void corpus_load(corpus *c, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        die("cannot open corpus %s", path);
    memset(c, 0, sizeof *c);
    size_t cap_text = 1 << 20, cap_utts = 1 << 14;
    c->text = xrealloc(NULL, cap_text);
    c->utts = xrealloc(NULL, cap_utts * sizeof *c->utts);
    char *line = NULL;
    size_t line_cap = 0;
    ssize_t n;
    size_t lineno = 0;
    while ((n = getline(&line, &line_cap, f)) >= 0) {
        lineno++;
        if (n == 0 || line[0] == '\n')
            continue;
        json_error_t jerr;
        json_t *o = json_loadb(line, (size_t)n, 0, &jerr);
        const char *sp = NULL, *tx = NULL;
        size_t sp_len = 0, tx_len = 0;
        if (o && json_is_object(o)) {
            json_t *js = json_object_get(o, "speaker");
            json_t *jt = json_object_get(o, "text");
            if (json_is_string(js) && json_is_string(jt)) {
                sp = json_string_value(js);
                sp_len = json_string_length(js);
                tx = json_string_value(jt);
                tx_len = json_string_length(jt);
            }
        }
        at_speaker speaker;
        if (!sp || at_speaker_parse(sp, sp_len, &speaker) != 0) {
            fprintf(stderr, "bench_score: %s:%zu: expected {\"speaker\",\"text\"}\n", path,
                    lineno);
            exit(1);
        }
        while (c->text_len + tx_len + 1 > cap_text)
            cap_text *= 2;
        c->text = xrealloc(c->text, cap_text);
        if (c->n_utts == cap_utts) {
            cap_utts *= 2;
            c->utts = xrealloc(c->utts, cap_utts * sizeof *c->utts);
        }
        memcpy(c->text + c->text_len, tx, tx_len);
        c->text[c->text_len + tx_len] = '\0';
        c->utts[c->n_utts++] = (utterance){c->text_len, tx_len, speaker};
        c->text_len += tx_len + 1;
        c->n_bytes += tx_len;
        c->n_by_speaker[speaker]++;
        json_decref(o);
    }
    free(line);
    fclose(f);
    if (c->n_utts == 0)
        die("corpus %s has no utterances", path);
}

static inline uint64_t fold(uint64_t h, const at_result *r)
{
    /* Compound to 4 decimals, the marker count and the category mask all reach the checksum. */
    int64_t q = (int64_t)llround(r->sentiment.compound * 10000.0);
    h ^= (uint64_t)q + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h ^= ((uint64_t)r->n_markers << 32) ^ r->category_mask;
    h *= 0x100000001b3ull;
    return h;
}

static void score_or_die(const at_model *m, at_scratch *s, const corpus *c, size_t i,
                         unsigned flags, at_result *r)
{
    const utterance *u = &c->utts[i];
    int rc = at_score(m, s, c->text + u->off, u->len, u->speaker, flags, r);
    if (rc != 0) {
        fprintf(stderr, "bench_score: at_score failed on utterance %zu: %s\n", i,
                at_strerror(rc));
        exit(1);
    }
}

/* One exact pass in full mode: marker totals (the same for a model and its padded copy when
 * the padding cannot match). Also warms caches, JIT stacks and the scratch buffers. */
static void exact_pass(bench_model *bm, at_scratch *s, const corpus *c)
{
    at_result r;
    for (size_t i = 0; i < c->n_utts; i++) {
        score_or_die(bm->model, s, c, i, 0, &r);
        bm->pass_markers += r.n_markers;
        for (size_t k = 0; k < r.n_markers; k++)
            bm->pass_by_category[r.markers[k].category]++;
        bm->pass_compound_sum += r.sentiment.compound;
        bm->pass_limit_hits += (uint64_t)r.n_limit_hits;
    }
}

/* Scores utterances round-robin from the start of the corpus until the thread has had min_s of
 * CPU time (or ten times that in wall time passed: a machine too busy to measure). The clocks
 * are read every 256 calls, which costs well under 1%. */
static void measure(result *res, at_scratch *s, const corpus *c, double min_s)
{
    unsigned flags = strcmp(res->mode, "sentiment") == 0 ? AT_SCORE_SENTIMENT_ONLY : 0;
    const at_model *m = res->bm->model;
    at_result r;
    uint64_t h = res->checksum;
    size_t i = 0, n = 0, bytes = 0;
    double t0 = now_s(CLOCK_MONOTONIC), c0 = now_s(CLOCK_THREAD_CPUTIME_ID), t1, c1;
    do {
        for (int k = 0; k < 256; k++) {
            score_or_die(m, s, c, i, flags, &r);
            h = fold(h, &r);
            bytes += c->utts[i].len;
            n++;
            if (++i == c->n_utts)
                i = 0;
        }
        t1 = now_s(CLOCK_MONOTONIC);
        c1 = now_s(CLOCK_THREAD_CPUTIME_ID);
    } while (c1 - c0 < min_s && t1 - t0 < 10.0 * min_s);
    double cpu = c1 - c0;
    double wall = t1 - t0;
    double rate = (double)n / (cpu > 0 ? cpu : wall);
    res->checksum = h;
    if (rate > res->best_rate) {
        res->best_rate = rate;
        res->best_s = wall;
        res->best_cpu_s = cpu;
        res->best_n = n;
        res->best_bytes = bytes;
    }
    if (res->worst_rate == 0 || rate < res->worst_rate)
        res->worst_rate = rate;
}

static int pin_cpu(int want)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return -1;
    int cpu = want;
    if (cpu < 0) {
        /* The highest allowed CPU: CPU 0 tends to take more interrupts. */
        for (int i = CPU_SETSIZE - 1; i >= 0; i--)
            if (CPU_ISSET(i, &set)) {
                cpu = i;
                break;
            }
    }
    if (cpu < 0)
        return -1;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
        fprintf(stderr, "bench_score: cannot pin to CPU %d: %s (running unpinned)\n", cpu,
                strerror(errno));
        return -1;
    }
    return cpu;
}

static void build_model(bench_model *bm)
{
    char err[512] = "";
    bm->rss_before_kb = proc_status_kb("VmRSS");
    int rc = at_model_new(bm->dir, &bm->model, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "bench_score: cannot build a model from %s: %s (%s)\n", bm->dir,
                err[0] ? err : "no detail", at_strerror(rc));
        exit(1);
    }
    bm->rss_after_kb = proc_status_kb("VmRSS");
    bm->build_ms = at_model_build_ms(bm->model);
    bm->n_patterns = at_model_n_patterns(bm->model);
    bm->n_unfiltered = at_model_n_unfiltered(bm->model);
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            fprintf(f, "\\u%04x", (unsigned char)*s);
        else
            fputc(*s, f);
    }
    fputc('"', f);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bench_score [options] CORPUS.ndjson\n"
            "  -l, --lexicons DIR  lexicon directory (default $ATTUNE_LEXICONS or lexicons)\n"
            "  -c, --compare DIR   a second lexicon directory: measure full scoring with it too\n"
            "                      (interleaved) and print the time ratio\n"
            "  -m, --modes LIST    sentiment,full (default), or none: build, one exact pass, memory\n"
            "  -t, --seconds S     minimum CPU seconds per measurement (default 2)\n"
            "  -r, --repeats N     measurements per mode; the best is reported (default 3)\n"
            "  -C, --cpu N         CPU to pin to (default: the highest allowed)\n"
            "  -j, --json FILE     also write results as JSON lines to FILE\n");
}

int main(int argc, char **argv)
{
    const char *lex = getenv("ATTUNE_LEXICONS");
    const char *cmp = NULL, *modes = "sentiment,full", *json_path = NULL;
    double min_s = 2.0;
    int repeats = 3, want_cpu = -1;
    static const struct option opts[] = {
        {"lexicons", required_argument, NULL, 'l'}, {"compare", required_argument, NULL, 'c'},
        {"modes", required_argument, NULL, 'm'},    {"seconds", required_argument, NULL, 't'},
        {"repeats", required_argument, NULL, 'r'},  {"cpu", required_argument, NULL, 'C'},
        {"json", required_argument, NULL, 'j'},     {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "l:c:m:t:r:C:j:h", opts, NULL)) != -1) {
        switch (opt) {
        case 'l': lex = optarg; break;
        case 'c': cmp = optarg; break;
        case 'm': modes = optarg; break;
        case 't': min_s = atof(optarg); break;
        case 'r': repeats = atoi(optarg); break;
        case 'C': want_cpu = atoi(optarg); break;
        case 'j': json_path = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc - 1 || repeats < 1 || !(min_s >= 0)) {
        usage(stderr);
        return 2;
    }
    if (!lex || !*lex)
        lex = "lexicons";
    bool do_sent = strstr(modes, "sentiment") != NULL;
    bool do_full = strstr(modes, "full") != NULL;
    if (!do_sent && !do_full && strcmp(modes, "none") != 0) {
        usage(stderr);
        return 2;
    }
    FILE *jf = NULL;
    if (json_path && !(jf = fopen(json_path, "w")))
        die("cannot write %s", json_path);

    int cpu = pin_cpu(want_cpu);
    long rss_start = proc_status_kb("VmRSS");
    corpus c;
    corpus_load(&c, argv[optind]);
    long rss_corpus = proc_status_kb("VmRSS");
    printf("corpus: %s: %zu utterances, %.2f MB of text, %.1f bytes per utterance "
           "(customer %zu, agent %zu, bot %zu, system %zu)\n",
           argv[optind], c.n_utts, (double)c.n_bytes / 1e6, (double)c.n_bytes / (double)c.n_utts,
           c.n_by_speaker[AT_SPEAKER_CUSTOMER], c.n_by_speaker[AT_SPEAKER_AGENT],
           c.n_by_speaker[AT_SPEAKER_BOT], c.n_by_speaker[AT_SPEAKER_SYSTEM]);
    if (cpu >= 0)
        printf("pinned to CPU %d; each measurement >= %.1f CPU s, best of %d\n", cpu, min_s,
               repeats);
    else
        printf("not pinned; each measurement >= %.1f CPU s, best of %d\n", min_s, repeats);

    bench_model models[2] = {{.label = "A", .dir = lex}, {.label = "B", .dir = cmp}};
    size_t n_models = cmp ? 2 : 1;
    at_scratch *s;
    if (at_scratch_new(&s) != 0)
        die("%s", "at_scratch_new failed");
    for (size_t k = 0; k < n_models; k++) {
        bench_model *bm = &models[k];
        build_model(bm);
        exact_pass(bm, s, &c);
        printf("model %s: %s: built in %.1f ms, %zu marker patterns (%zu without a prefilter "
               "literal), +%.1f MB RSS\n",
               bm->label, bm->dir, bm->build_ms, bm->n_patterns, bm->n_unfiltered,
               (double)(bm->rss_after_kb - bm->rss_before_kb) / 1024.0);
        printf("model %s: one pass fires %" PRIu64 " markers, compound sum %.4f, %" PRIu64
               " limit hits\n",
               bm->label, bm->pass_markers, bm->pass_compound_sum, bm->pass_limit_hits);
    }
    if (n_models == 2) {
        bool same = models[0].pass_markers == models[1].pass_markers &&
                    memcmp(models[0].pass_by_category, models[1].pass_by_category,
                           sizeof models[0].pass_by_category) == 0;
        printf("markers per pass, A vs B: %s\n",
               same ? "identical (the extra patterns of B never fire)"
                    : "DIFFERENT (some extra patterns of B fire on this corpus)");
        for (int cat = 0; cat < AT_N_CATEGORIES && !same; cat++)
            if (models[0].pass_by_category[cat] != models[1].pass_by_category[cat])
                printf("  %-20s A %" PRIu64 "  B %" PRIu64 "\n", at_category_name(cat),
                       models[0].pass_by_category[cat], models[1].pass_by_category[cat]);
    }

    result res[3];
    size_t n_res = 0;
    if (do_sent)
        res[n_res++] = (result){.mode = "sentiment", .bm = &models[0]};
    if (do_full)
        res[n_res++] = (result){.mode = "full", .bm = &models[0]};
    if (do_full && n_models == 2)
        res[n_res++] = (result){.mode = "full", .bm = &models[1]};

    /* Warm-up: a short run of each measurement (JIT code and tables into cache, CPU clock up). */
    for (size_t k = 0; k < n_res; k++) {
        result warm = res[k];
        measure(&warm, s, &c, min_s > 0.5 ? 0.5 : min_s);
        res[k].checksum = warm.checksum;
    }
    for (int rep = 0; rep < repeats; rep++)
        for (size_t k = 0; k < n_res; k++)
            measure(&res[k], s, &c, min_s);

    if (n_res)
        printf("\n%-10s %-5s %12s %9s %8s %12s %6s %8s  %s\n", "mode", "model", "utterances/s",
               "MB/s", "us/utt", "wall utt/s", "cpu%", "spread%", "checksum");
    for (size_t k = 0; k < n_res; k++) {
        result *r = &res[k];
        double mbs = (double)r->best_bytes / 1e6 / r->best_cpu_s;
        printf("%-10s %-5s %12.0f %9.2f %8.3f %12.0f %6.1f %8.1f  %016" PRIx64 "\n", r->mode,
               r->bm->label, r->best_rate, mbs, 1e6 / r->best_rate,
               (double)r->best_n / r->best_s, 100.0 * r->best_cpu_s / r->best_s,
               100.0 * (r->best_rate - r->worst_rate) / r->best_rate, r->checksum);
        if (r->best_cpu_s < 0.9 * r->best_s)
            printf("  note: the thread got %.0f%% of the CPU (the machine is busy); the rates are "
                   "per CPU second\n", 100.0 * r->best_cpu_s / r->best_s);
        if (jf) {
            fprintf(jf, "{\"bench\":\"attune\",\"mode\":\"%s\",\"model\":\"%s\",\"lexicons\":",
                    r->mode, r->bm->label);
            json_str(jf, r->bm->dir);
            fprintf(jf,
                    ",\"utt_per_s\":%.1f,\"mb_per_s\":%.3f,\"wall_utt_per_s\":%.1f,"
                    "\"seconds\":%.3f,\"cpu_seconds\":%.3f,\"utterances\":%zu,\"bytes\":%zu,"
                    "\"worst_utt_per_s\":%.1f,\"checksum\":\"%016" PRIx64 "\"}\n",
                    r->best_rate, mbs, (double)r->best_n / r->best_s, r->best_s, r->best_cpu_s,
                    r->best_n, r->best_bytes, r->worst_rate, r->checksum);
        }
    }
    if (do_full && n_models == 2) {
        double ratio = res[n_res - 2].best_rate / res[n_res - 1].best_rate;
        printf("\nfull scoring time per utterance, B / A: %.3fx\n", ratio);
        if (jf)
            fprintf(jf, "{\"bench\":\"attune-ratio\",\"full_time_b_over_a\":%.4f}\n", ratio);
    }

    long rss_end = proc_status_kb("VmRSS"), hwm = proc_status_kb("VmHWM");
    printf("\nmemory: VmRSS %.1f MB (start %.1f, corpus +%.1f), VmHWM %.1f MB\n",
           (double)rss_end / 1024.0, (double)rss_start / 1024.0,
           (double)(rss_corpus - rss_start) / 1024.0, (double)hwm / 1024.0);
    if (jf) {
        for (size_t k = 0; k < n_models; k++) {
            bench_model *bm = &models[k];
            fprintf(jf, "{\"bench\":\"attune-model\",\"model\":\"%s\",\"lexicons\":", bm->label);
            json_str(jf, bm->dir);
            fprintf(jf,
                    ",\"build_ms\":%.2f,\"n_patterns\":%zu,\"n_unfiltered\":%zu,"
                    "\"rss_delta_kb\":%ld,\"pass_markers\":%" PRIu64 ",\"pass_limit_hits\":%" PRIu64
                    ",\"pass_compound_sum\":%.4f}\n",
                    bm->build_ms, bm->n_patterns, bm->n_unfiltered,
                    bm->rss_after_kb - bm->rss_before_kb, bm->pass_markers, bm->pass_limit_hits,
                    bm->pass_compound_sum);
        }
        fprintf(jf,
                "{\"bench\":\"attune-memory\",\"models\":%zu,\"vmrss_kb\":%ld,\"vmhwm_kb\":%ld,"
                "\"start_kb\":%ld,\"corpus_kb\":%ld,\"cpu\":%d,\"utterances\":%zu,\"bytes\":%zu}\n",
                n_models, rss_end, hwm, rss_start, rss_corpus - rss_start, cpu, c.n_utts,
                c.n_bytes);
        fclose(jf);
    }

    at_scratch_free(s);
    for (size_t k = 0; k < n_models; k++)
        at_model_free(models[k].model);
    free(c.utts);
    free(c.text);
    return 0;
}
