/*
 * main.c: the `attune` command: dispatches to subcommands and holds what they share (finding
 * the lexicons; output helpers are in output.c).
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
            "  rescore [--db PATH] [--since DATE] [--lexicons DIR] [--connect HOST:PORT]\n"
            "        score stored utterances again with the current lexicons (through the\n"
            "        running attuned when it holds the database)\n"
            "  report NAME [--db PATH] [--by GROUP] [--since DATE] [--until DATE] [--min-n N]\n"
            "         [--days N] [--format table|csv|json]\n"
            "        fleet reports: resolution-time, satisfaction, escalations, repeat-contacts,\n"
            "        agents, fatigue, trend (attune report --help)\n"
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
    if (strcmp(cmd, "rescore") == 0)
        return cmd_rescore(argc - 1, argv + 1);
    if (strcmp(cmd, "report") == 0)
        return cmd_report(argc - 1, argv + 1);
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
