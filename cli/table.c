/*
 * table.c: the result tables of `attune report`: rows of typed cells (text, counts, reals,
 * durations, flags; any of them NULL), written as an aligned table for a terminal, as CSV
 * (RFC 4180: a header row, CRLF line ends, NULL as an empty field) or as JSON (an array of
 * objects, NULL as null).
 *
 * Tables round for reading (each column's decimals, durations as "3h 05m", NULL as "-"); CSV and
 * JSON keep what a double holds in 15 significant digits, durations in milliseconds.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

void table_init(table *t, const column *cols, size_t n_cols)
{
    memset(t, 0, sizeof *t);
    t->cols = cols;
    t->n_cols = n_cols;
}

void table_fini(table *t)
{
    for (size_t i = 0; i < t->n_rows * t->n_cols; i++)
        free(t->cells[i].text);
    free(t->cells);
}

cell *table_row(table *t)
{
    if (t->n_rows == t->cap_rows) {
        size_t cap = t->cap_rows ? 2 * t->cap_rows : 16;
        cell *c = realloc(t->cells, cap * t->n_cols * sizeof *c);
        if (!c)
            return NULL;
        t->cells = c;
        t->cap_rows = cap;
    }
    cell *row = t->cells + t->n_rows++ * t->n_cols;
    for (size_t i = 0; i < t->n_cols; i++)
        row[i] = (cell){.is_null = true};
    return row;
}

int cell_set_text(cell *c, const char *s)
{
    if (!s)
        return 0;
    c->text = strdup(s);
    if (!c->text)
        return -1;
    c->is_null = false;
    return 0;
}

void cell_set_num(cell *c, double x)
{
    c->is_null = isnan(x);
    c->num = x;
}

void table_apply_min_n(const table *t, cell *row, long min_n)
{
    for (size_t i = 0; i < t->n_cols; i++) {
        int n = t->cols[i].n_col;
        if (n >= 0 && (row[n].is_null || row[n].num < (double)min_n))
            row[i].is_null = true;
    }
}

/* "-0.000" and "-0" read as a sign that is not there. */
static void drop_negative_zero(char *s)
{
    if (s[0] == '-' && strspn(s + 1, "0.") == strlen(s + 1))
        memmove(s, s + 1, strlen(s));
}

static const char *format_duration(double ms, char *buf, size_t len)
{
    const char *sign = ms < 0 ? "-" : "";
    double s = fabs(ms) / 1000;
    if (s < 59.95) {
        snprintf(buf, len, "%s%.1fs", sign, s);
    } else if (s < 3599.5) {
        long long t = llround(s);
        snprintf(buf, len, "%s%lldm %02llds", sign, t / 60, t % 60);
    } else if (s < 86370) {
        long long t = llround(s / 60);
        snprintf(buf, len, "%s%lldh %02lldm", sign, t / 60, t % 60);
    } else {
        long long t = llround(s / 3600);
        snprintf(buf, len, "%s%lldd %02lldh", sign, t / 24, t % 24);
    }
    return buf;
}

/* The cell as a table shows it: borrowed, or written into buf. */
static const char *shown_text(const cell *c, const column *col, char *buf, size_t len)
{
    if (c->is_null)
        return "-";
    switch (col->kind) {
    case COL_TEXT: return c->text;
    case COL_COUNT: snprintf(buf, len, "%.0f", c->num); return buf;
    case COL_REAL:
        snprintf(buf, len, "%.*f", col->decimals, c->num);
        drop_negative_zero(buf);
        return buf;
    case COL_MS: return format_duration(c->num, buf, len);
    case COL_FLAG: return c->num != 0 ? "yes" : "no";
    }
    return "";
}

/* The cell as CSV and JSON give it (not NULL, not text): as exact as a double prints in 15
 * significant digits, without trailing zeros. */
static const char *machine_number(const cell *c, const column *col, char *buf, size_t len)
{
    if (col->kind == COL_COUNT || col->kind == COL_FLAG)
        snprintf(buf, len, "%.0f", col->kind == COL_FLAG ? (double)(c->num != 0) : c->num);
    else
        snprintf(buf, len, "%.15g", c->num == 0 ? 0.0 : c->num);
    return buf;
}

/* Terminal columns of UTF-8 text: one per code point, which is right for the names reports
 * hold. */
static size_t display_width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        w += ((unsigned char)*s & 0xC0) != 0x80;
    return w;
}

static void put_padded(FILE *f, const char *s, size_t width, bool right)
{
    size_t w = display_width(s);
    if (right)
        fprintf(f, "%*s", (int)(width > w ? width - w : 0), "");
    /* A line break or tab inside a name would break the rows apart. */
    for (; *s; s++)
        putc((unsigned char)*s < 0x20 ? '?' : *s, f);
    if (!right)
        fprintf(f, "%*s", (int)(width > w ? width - w : 0), "");
}

static int put_table(FILE *f, const table *t)
{
    size_t *width = calloc(t->n_cols, sizeof *width);
    char buf[64];
    if (!width) {
        fprintf(stderr, "attune: out of memory\n");
        return -1;
    }
    for (size_t j = 0; j < t->n_cols; j++)
        width[j] = display_width(t->cols[j].title);
    for (size_t i = 0; i < t->n_rows; i++)
        for (size_t j = 0; j < t->n_cols; j++) {
            size_t w = display_width(shown_text(&t->cells[i * t->n_cols + j], &t->cols[j], buf,
                                                sizeof buf));
            if (w > width[j])
                width[j] = w;
        }
    /* Every report ends with a number column, so padding every column keeps lines free of
     * trailing blanks. */
    for (size_t j = 0; j < t->n_cols; j++) {
        fputs(j ? "  " : "", f);
        put_padded(f, t->cols[j].title, width[j], t->cols[j].kind != COL_TEXT);
    }
    putc('\n', f);
    for (size_t j = 0; j < t->n_cols; j++) {
        fputs(j ? "  " : "", f);
        for (size_t k = 0; k < width[j]; k++)
            putc('-', f);
    }
    putc('\n', f);
    for (size_t i = 0; i < t->n_rows; i++) {
        for (size_t j = 0; j < t->n_cols; j++) {
            fputs(j ? "  " : "", f);
            put_padded(f, shown_text(&t->cells[i * t->n_cols + j], &t->cols[j], buf, sizeof buf),
                       width[j], t->cols[j].kind != COL_TEXT);
        }
        putc('\n', f);
    }
    if (t->n_rows == 0)
        fputs("(no conversations)\n", f);
    if (t->note[0])
        fprintf(f, "\n%s\n", t->note);
    free(width);
    return 0;
}

/* RFC 4180: a field with a comma, quote or line break is quoted, its quotes doubled. */
static void put_csv_field(FILE *f, const char *s)
{
    if (!s[strcspn(s, ",\"\r\n")]) {
        fputs(s, f);
        return;
    }
    putc('"', f);
    for (; *s; s++) {
        if (*s == '"')
            putc('"', f);
        putc(*s, f);
    }
    putc('"', f);
}

static void put_csv(FILE *f, const table *t)
{
    char buf[64];
    for (size_t j = 0; j < t->n_cols; j++) {
        fputs(j ? "," : "", f);
        put_csv_field(f, t->cols[j].name);
    }
    fputs("\r\n", f);
    for (size_t i = 0; i < t->n_rows; i++) {
        for (size_t j = 0; j < t->n_cols; j++) {
            const cell *c = &t->cells[i * t->n_cols + j];
            fputs(j ? "," : "", f);
            if (c->is_null)
                continue;
            if (t->cols[j].kind == COL_TEXT)
                put_csv_field(f, c->text);
            else
                fputs(machine_number(c, &t->cols[j], buf, sizeof buf), f);
        }
        fputs("\r\n", f);
    }
}

static void put_json(FILE *f, const table *t)
{
    char buf[64];
    fputs("[", f);
    for (size_t i = 0; i < t->n_rows; i++) {
        fputs(i ? ",\n{" : "\n{", f);
        for (size_t j = 0; j < t->n_cols; j++) {
            const cell *c = &t->cells[i * t->n_cols + j];
            const column *col = &t->cols[j];
            fputs(j ? "," : "", f);
            cli_put_json_string(f, col->name, strlen(col->name));
            putc(':', f);
            if (c->is_null)
                fputs("null", f);
            else if (col->kind == COL_TEXT)
                cli_put_json_string(f, c->text, strlen(c->text));
            else if (col->kind == COL_FLAG)
                fputs(c->num != 0 ? "true" : "false", f);
            else
                fputs(machine_number(c, col, buf, sizeof buf), f);
        }
        putc('}', f);
    }
    fputs(t->n_rows ? "\n]\n" : "]\n", f);
}

int table_write(FILE *f, const table *t, table_format fmt)
{
    int rc = 0;
    if (fmt == FMT_CSV)
        put_csv(f, t);
    else if (fmt == FMT_JSON)
        put_json(f, t);
    else
        rc = put_table(f, t);
    return rc;
}
