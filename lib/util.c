/*
 * util.c: small containers shared by the library: a growable NUL-terminated byte buffer, an
 * open-addressing string map (load factor kept under 1/2) and whole-file reading.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

void at__buf_fini(at__buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

int at__buf_reserve(at__buf *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p)
        return AT_ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int at__buf_append(at__buf *b, const char *s, size_t len)
{
    if (at__buf_reserve(b, len))
        return AT_ENOMEM;
    memcpy(b->data + b->len, s, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

int at__buf_printf(at__buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return AT_EINVAL;
    if (at__buf_reserve(b, (size_t)n))
        return AT_ENOMEM;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

uint64_t at__fnv1a(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* Little-endian loads of 4 and 8 bytes, wherever they are. */
static inline uint64_t load8(const unsigned char *p)
{
    uint64_t x;
    memcpy(&x, p, 8);
    return x;
}

static inline uint64_t load4(const unsigned char *p)
{
    uint32_t x;
    memcpy(&x, p, 4);
    return x;
}

static inline uint64_t mix(uint64_t a, uint64_t b)
{
    uint64_t h = (a ^ 0x9e3779b97f4a7c15ULL) * (b ^ 0xbf58476d1ce4e5b9ULL);
    return h ^ (h >> 32) ^ a;
}

const uint64_t at__first_bytes[9] = {
    0, 0xff, 0xffff, 0xffffff, 0xffffffff, 0xffffffffff, 0xffffffffffff, 0xffffffffffffff,
    UINT64_MAX};

uint64_t at__hash(const char *s, size_t len)
{
    /* Eight bytes a step, and short keys (most are words) in a few loads without a loop: a
     * loop per byte costs a mispredicted exit per key. Reads only the key's bytes. */
    const unsigned char *p = (const unsigned char *)s;
    uint64_t a, b, h = 0xcbf29ce484222325ULL ^ len;
    if (len >= 8) {
        size_t i = 0;
        for (; i + 8 < len; i += 8)
            h = mix(h ^ load8(p + i), 0x94d049bb133111ebULL);
        a = load8(p + len - 8); /* the last eight bytes, overlapping the loop's */
        b = 0;
    } else if (len >= 4) {
        a = load4(p);
        b = load4(p + len - 4);
    } else if (len > 0) {
        a = (uint64_t)p[0] << 16 | (uint64_t)p[len >> 1] << 8 | p[len - 1];
        b = 0;
    } else {
        a = b = 0;
    }
    h = mix(h ^ a, b ^ 0x94d049bb133111ebULL);
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h;
}

void at__strmap_init(at__strmap *m)
{
    m->slots = NULL;
    m->n_slots = 0;
    m->n_used = 0;
}

void at__strmap_fini(at__strmap *m)
{
    for (size_t i = 0; i < m->n_slots; i++)
        free(m->slots[i].key);
    free(m->slots);
    at__strmap_init(m);
}

static at__strmap_entry *find_slot_h(at__strmap_entry *slots, size_t n_slots, const char *key,
                                     size_t len, uint64_t h)
{
    size_t i = (size_t)h & (n_slots - 1);
    for (;;) {
        at__strmap_entry *e = &slots[i];
        if (!e->key || (e->key_len == len && memcmp(e->key, key, len) == 0))
            return e;
        i = (i + 1) & (n_slots - 1);
    }
}

static at__strmap_entry *find_slot(at__strmap_entry *slots, size_t n_slots, const char *key,
                                   size_t len)
{
    return find_slot_h(slots, n_slots, key, len, at__hash(key, len));
}

static int grow(at__strmap *m)
{
    size_t n = m->n_slots ? m->n_slots * 2 : 16;
    at__strmap_entry *slots = calloc(n, sizeof *slots);
    if (!slots)
        return AT_ENOMEM;
    for (size_t i = 0; i < m->n_slots; i++) {
        at__strmap_entry *old = &m->slots[i];
        if (old->key)
            *find_slot(slots, n, old->key, old->key_len) = *old;
    }
    free(m->slots);
    m->slots = slots;
    m->n_slots = n;
    return 0;
}

int at__strmap_put(at__strmap *m, const char *key, size_t len, double value, int tag)
{
    if ((m->n_used + 1) * 2 > m->n_slots && grow(m))
        return AT_ENOMEM;
    at__strmap_entry *e = find_slot(m->slots, m->n_slots, key, len);
    if (!e->key) {
        e->key = malloc(len + 1);
        if (!e->key)
            return AT_ENOMEM;
        memcpy(e->key, key, len);
        e->key[len] = '\0';
        e->key_len = len;
        m->n_used++;
    }
    e->value = value;
    e->tag = tag;
    return 0;
}

const at__strmap_entry *at__strmap_get(const at__strmap *m, const char *key, size_t len)
{
    return at__strmap_get_h(m, key, len, at__hash(key, len));
}

const at__strmap_entry *at__strmap_get_h(const at__strmap *m, const char *key, size_t len,
                                         uint64_t h)
{
    if (!m->n_slots)
        return NULL;
    const at__strmap_entry *e = find_slot_h(m->slots, m->n_slots, key, len, h);
    return e->key ? e : NULL;
}

void at__errf(char *err, size_t err_len, const char *fmt, ...)
{
    if (!err || !err_len)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
}

int at__read_file(const char *path, char **out, size_t *len, char *err, size_t err_len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        at__errf(err, err_len, "%s: cannot open: %s", path, strerror(errno));
        return AT_EIO;
    }
    at__buf b = {0};
    char chunk[65536];
    size_t n;
    int rc = 0;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (at__buf_append(&b, chunk, n)) {
            rc = AT_ENOMEM;
            goto fail;
        }
    }
    if (ferror(f)) {
        at__errf(err, err_len, "%s: read error: %s", path, strerror(errno));
        rc = AT_EIO;
        goto fail;
    }
    if (!b.data && at__buf_append(&b, "", 0)) {
        rc = AT_ENOMEM;
        goto fail;
    }
    fclose(f);
    *out = b.data;
    *len = b.len;
    return 0;
fail:
    at__buf_fini(&b);
    fclose(f);
    return rc;
}
