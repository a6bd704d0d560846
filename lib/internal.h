/*
 * internal.h: declarations shared by the lib/ sources only. Nothing here is API.
 *
 * Modules: util.c (growable buffer, string map, file reading), vader.c (VADER sentiment),
 * markers.c (pattern sets, prefilter, negation scope), regex.c (rewriting expressions to match
 * faster), model.c (building a model, scoring).
 */
#ifndef AT_INTERNAL_H
#define AT_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "attune.h"

#define AT__PRINTF(a, b) __attribute__((format(printf, a, b)))

/* The scanners read words eight bytes at a time and take "the first n bytes" of a load as its
 * low bytes (at__first_bytes, the tries' skip compares, the word-start bits): little-endian
 * hosts only. Refused here rather than scoring wrongly. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "attune's scanners assume a little-endian host"
#endif

/* ---- regex.c --------------------------------------------------------------------------- */

/* Rewrites the PCRE2 expression src so that alternatives beginning with the same literal
 * character are tried as one branch, with the same matches at the same offsets when compiled
 * with PCRE2_UTF (and PCRE2_CASELESS when caseless is true, the options the rewrite assumes).
 * Sets *out to the new expression (free with free()), or to NULL when src is left as written:
 * nothing to gather, or constructs the rewrite does not carry over (captures, back-references,
 * option settings, verbs, \Q..\E); src need not be a valid expression. Returns 0 or
 * AT_ENOMEM. */
int at__regex_factor(const char *src, bool caseless, char **out);

/* ---- util.c ---------------------------------------------------------------------------- */

/* A growable byte buffer, always NUL-terminated when data is not NULL. */
typedef struct at__buf {
    char *data;
    size_t len; /* bytes used, excluding the NUL */
    size_t cap; /* bytes allocated */
} at__buf;

void at__buf_fini(at__buf *b);
int at__buf_reserve(at__buf *b, size_t extra);
int at__buf_append(at__buf *b, const char *s, size_t len);
int at__buf_printf(at__buf *b, const char *fmt, ...) AT__PRINTF(2, 3);

/* An open-addressing map from byte strings to a double and an int payload. Keys are copied. */
typedef struct at__strmap_entry {
    char *key;
    size_t key_len;
    double value;
    int tag;
} at__strmap_entry;

typedef struct at__strmap {
    at__strmap_entry *slots;
    size_t n_slots; /* a power of two */
    size_t n_used;
} at__strmap;

void at__strmap_init(at__strmap *m);
void at__strmap_fini(at__strmap *m);
/* Inserts or overwrites key. Returns 0 or AT_ENOMEM. */
int at__strmap_put(at__strmap *m, const char *key, size_t len, double value, int tag);
/* Returns the entry for key, or NULL. */
const at__strmap_entry *at__strmap_get(const at__strmap *m, const char *key, size_t len);
/* The same, with h = at__hash(key, len) computed by the caller (who needed it anyway). */
const at__strmap_entry *at__strmap_get_h(const at__strmap *m, const char *key, size_t len,
                                         uint64_t h);

uint64_t at__hash(const char *s, size_t len);

/* at__first_bytes[n]: the mask of the first n (0..8) bytes of an 8-byte load. */
extern const uint64_t at__first_bytes[9];

/* The first n (0..8) bytes at p as a number, the others zero: a short word as one key. p must
 * have 8 readable bytes. */
static inline uint64_t at__load_prefix(const char *p, size_t n)
{
    uint64_t x;
    __builtin_memcpy(&x, p, 8);
    return x & at__first_bytes[n];
}

/* Reads a whole file. *out is new (free with free()), NUL-terminated. Returns 0 or AT_EIO/AT_ENOMEM;
 * on failure writes a message into err. */
int at__read_file(const char *path, char **out, size_t *len, char *err, size_t err_len);

/* Writes "fmt ..." into err (err_len bytes) when err is not NULL. */
void at__errf(char *err, size_t err_len, const char *fmt, ...) AT__PRINTF(3, 4);

/* Incremental FNV-1a 64 over the model's files, used for the model id. */
uint64_t at__fnv1a(uint64_t h, const void *data, size_t len);

/* ---- vader.c --------------------------------------------------------------------------- */

/* Immutable VADER data: lexicon, boosters, negations, special-case idioms, emoji names. */
typedef struct at__vader at__vader;
/* Per-thread VADER scratch (token arrays, the emoji-expanded text). */
typedef struct at__vscratch at__vscratch;

/* Loads the VADER files of dir/vader/ (vader_lexicon.txt, emoji_utf8_lexicon.txt, boosters.tsv,
 * negations.txt, special_cases.tsv). Feeds every file into *hash (model id). Returns 0, or
 * AT_EIO/AT_ESYNTAX/AT_ENOMEM with "file:line: reason" in err. */
int at__vader_new(const char *dir, uint64_t *hash, at__vader **out, char *err, size_t err_len);
void at__vader_free(at__vader *v);

int at__vscratch_new(at__vscratch **out);
void at__vscratch_free(at__vscratch *s);

/* Scores text exactly as the reference VADER does. When trace is not NULL, appends a readable
 * explanation (one line per token and rule, then the sum, emphasis and compound). */
int at__vader_score(const at__vader *v, at__vscratch *s, const char *text, size_t len,
                    at_sentiment *out, at__buf *trace);

/* Looks up a word (lower-cased by the callee) in the VADER lexicon. Returns true and sets *valence
 * when present. */
bool at__vader_valence(const at__vader *v, const char *word, size_t len, double *valence);

/* ---- markers.c ------------------------------------------------------------------------- */

typedef struct at__markers at__markers;
typedef struct at__mscratch at__mscratch;

int at__markers_new(const char *dir, const at__vader *vader, uint64_t *hash, at__markers **out,
                    char *err, size_t err_len);
void at__markers_free(at__markers *m);
size_t at__markers_n_patterns(const at__markers *m);
size_t at__markers_n_unfiltered(const at__markers *m);

int at__mscratch_new(at__mscratch **out);
void at__mscratch_free(at__mscratch *s);

/* Finds the markers of text for speaker, appending them to the scratch's marker array; computes
 * the category mask and the frustration score (needs the compound). When trace is not NULL,
 * appends each marker and each suppressed candidate with its reason. */
int at__markers_score(const at__markers *m, at__mscratch *s, const char *text, size_t len,
                      at_speaker speaker, double compound, at_result *out, at__buf *trace);

/* ---- redact.c --------------------------------------------------------------------------- */

typedef struct at__redactor at__redactor;
typedef struct at__rscratch at__rscratch;

/* Loads dir/redact.tsv (id TAB placeholder TAB check TAB requires TAB regex). */
int at__redactor_new(const char *dir, at__redactor **out, char *err, size_t err_len);
void at__redactor_free(at__redactor *r);
int at__rscratch_new(at__rscratch **out);
void at__rscratch_free(at__rscratch *s);
int at__redact(const at__redactor *r, at__rscratch *s, const char *text, size_t len,
               const char **out, size_t *out_len, unsigned *n_redactions);

#endif
