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
int cmd_report(int argc, char **argv);

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

/* ---- table.c: result tables written as an aligned table, CSV or JSON ---------------------- */

typedef enum col_kind {
    COL_TEXT,  /* left-aligned in tables */
    COL_COUNT, /* integer */
    COL_REAL,  /* `decimals` in tables, full precision in CSV and JSON */
    COL_MS,    /* a duration in ms: "3h 05m" in tables, a number of ms in CSV and JSON */
    COL_FLAG,  /* yes/no in tables, 1/0 in CSV, true/false in JSON */
} col_kind;

typedef struct column {
    const char *name;  /* CSV header and JSON key */
    const char *title; /* table header */
    col_kind kind;
    int decimals;
    int n_col;         /* the count column this value is computed over, or -1 */
} column;

/* A column; COLN when its value is computed over the count in column n_col. */
#define COL(name, title, kind, decimals) {name, title, kind, decimals, -1}
#define COLN(name, title, kind, decimals, n_col) {name, title, kind, decimals, n_col}

typedef struct cell {
    bool is_null;
    double num;
    char *text; /* COL_TEXT (owned) */
} cell;

typedef struct table {
    const column *cols;
    size_t n_cols;
    cell *cells; /* n_rows * n_cols */
    size_t n_rows, cap_rows;
    char note[256]; /* printed under a table (table format only) */
} table;

typedef enum table_format { FMT_TABLE, FMT_CSV, FMT_JSON } table_format;

/* Starts an empty table of the columns cols (borrowed; static in practice). */
void table_init(table *t, const column *cols, size_t n_cols);
void table_fini(table *t);
/* Appends a row of NULLs. Returns it (valid until the next table_row), or NULL when out of
 * memory. */
cell *table_row(table *t);
/* Sets a text cell to a copy of s; NULL s leaves it NULL. Returns 0, or -1 when out of
 * memory. */
int cell_set_text(cell *c, const char *s);
/* Sets a number cell; NAN is NULL. */
void cell_set_num(cell *c, double x);
/* In row, makes NULL every value whose count column (n_col) is NULL or below min_n. */
void table_apply_min_n(const table *t, cell *row, long min_n);
/* Writes t in fmt (a table ends with t->note). Returns 0, or -1 when out of memory. */
int table_write(FILE *f, const table *t, table_format fmt);

#endif
