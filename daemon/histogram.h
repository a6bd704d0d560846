/*
 * histogram.h: latency histograms that any thread records into without a lock, exported by
 * metrics.c in the Prometheus text format.
 *
 * Every histogram has the same buckets, upper bounds from 100 microseconds to 10 seconds in
 * 1-2.5-5 steps, plus one for everything slower. Recording is two relaxed atomic additions: the
 * observation's bucket (counts are per bucket, not cumulative; the exporter accumulates) and the
 * sum. A reader running at the same time may see a sum that lags the buckets by the observations
 * in progress; no count ever goes down. Zeroed memory (calloc) is an empty histogram.
 */
#ifndef ATTUNED_HISTOGRAM_H
#define ATTUNED_HISTOGRAM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define HISTOGRAM_N_BOUNDS 16

typedef struct histogram {
    _Atomic uint64_t counts[HISTOGRAM_N_BOUNDS + 1]; /* per bucket; the last is above all */
    _Atomic uint64_t sum_us;                         /* of every observation, microseconds */
} histogram;

/* Upper bound of bucket i (0 <= i < HISTOGRAM_N_BOUNDS), microseconds. */
static inline uint64_t histogram_bound_us(size_t i)
{
    static const uint64_t bounds[HISTOGRAM_N_BOUNDS] = {
        100,    250,    500,     1000,    2500,    5000,    10000,   25000,
        50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000,
    };
    return bounds[i];
}

/* Records one observation of us microseconds. Safe from any thread. */
static inline void histogram_observe_us(histogram *h, uint64_t us)
{
    size_t i = 0;
    while (i < HISTOGRAM_N_BOUNDS && us > histogram_bound_us(i))
        i++;
    atomic_fetch_add_explicit(&h->counts[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, us, memory_order_relaxed);
}

#endif
