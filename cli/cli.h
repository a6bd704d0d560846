/*
 * cli.h: shared pieces of the `attune` command: subcommand entry points, the model loader that
 * finds the lexicon directory, and output helpers.
 */
#ifndef ATTUNE_CLI_H
#define ATTUNE_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include "attune.h"

/* Exit codes of every subcommand. */
enum { EXIT_OK = 0, EXIT_INPUT = 1, EXIT_USAGE = 2 };

int cmd_score(int argc, char **argv);
int cmd_explain(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_rescore(int argc, char **argv);

/* Finds the lexicon directory: dir when given, else $ATTUNE_LEXICONS, else lexicons/ beside the
 * build tree of the executable, else the installed data directory. Builds the model; on failure
 * prints the reason and returns NULL. */
at_model *cli_load_model(const char *dir);

/* Writes x rounded to ndigits decimals, without trailing zeros ("0.492", "0.0", "-1.0"). */
void cli_put_number(FILE *f, double x, int ndigits);
/* Writes s as a JSON string literal. */
void cli_put_json_string(FILE *f, const char *s, size_t len);
/* Writes the scoring fields (without braces): "sentiment":{...},"empathy":[...],... */
void cli_put_result(FILE *f, const at_result *r, at_speaker speaker, bool with_markers);

#endif
