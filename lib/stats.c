/*
 * stats.c: the statistics of the fleet reports (ANALYTICS.md section 3), shared by
 * `attune report` and the SQLite extension: Pearson r, Spearman rho with average ranks for ties,
 * the Fisher-z 95 % interval, type-7 quantiles and a least-squares slope.
 *
 * Sums of squares and products are taken about means computed in a first pass: metrics such as
 * resolution_ms or started_at are large numbers with small spread, where the one-pass formula
 * (sum of squares minus n times the squared mean) loses every significant digit. A variable that
 * is constant is recognised by comparing its values, not by a sum of squares that rounding may
 * leave a little above zero. No function allocates except at_spearman, and none prints.
 */
#include <math.h>
#include <stdlib.h>

#include "attune.h"

static double mean(const double *x, size_t n)
{
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += x[i];
    return sum / (double)n;
}

static int is_constant(const double *x, size_t n)
{
    for (size_t i = 1; i < n; i++)
        if (x[i] != x[0])
            return 0;
    return 1;
}

double at_pearson(const double *x, const double *y, size_t n)
{
    if (n < 2 || is_constant(x, n) || is_constant(y, n))
        return NAN;
    double mx = mean(x, n), my = mean(y, n);
    double sxx = 0, syy = 0, sxy = 0;
    for (size_t i = 0; i < n; i++) {
        double dx = x[i] - mx, dy = y[i] - my;
        sxx += dx * dx;
        syy += dy * dy;
        sxy += dx * dy;
    }
    /* The root of the product is exact more often (a perfect line gives exactly +-1), but the
     * product can overflow or underflow where the factors do not. */
    double d = sxx * syy;
    double r = sxy / (isfinite(d) && d > 0 ? sqrt(d) : sqrt(sxx) * sqrt(syy));
    /* Rounding can take a perfect correlation a hair past 1, outside atanh's domain. */
    return r > 1 ? 1 : r < -1 ? -1 : r;
}

/* Sorting indices by value: qsort has no context argument, so the values travel with them. */
typedef struct ranked {
    double value;
    size_t index;
} ranked;

static int cmp_ranked(const void *a, const void *b)
{
    double x = ((const ranked *)a)->value, y = ((const ranked *)b)->value;
    return (x > y) - (x < y);
}

/* Writes the rank (1-based) of each x[i] into rank[i]; tied values share the mean of the ranks
 * they span. tmp has room for n entries. */
static void average_ranks(const double *x, size_t n, ranked *tmp, double *rank)
{
    for (size_t i = 0; i < n; i++)
        tmp[i] = (ranked){x[i], i};
    qsort(tmp, n, sizeof *tmp, cmp_ranked);
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        while (j < n && tmp[j].value == tmp[i].value)
            j++;
        /* Positions i..j-1 (0-based) are ranks i+1..j, whose mean is (i + 1 + j) / 2. */
        double r = (double)(i + 1 + j) / 2.0;
        for (size_t k = i; k < j; k++)
            rank[tmp[k].index] = r;
        i = j;
    }
}

int at_spearman(const double *x, const double *y, size_t n, double *out)
{
    if (n < 2) {
        *out = NAN;
        return 0;
    }
    ranked *tmp = malloc(n * sizeof *tmp);
    double *rx = malloc(2 * n * sizeof *rx);
    if (!tmp || !rx) {
        free(tmp);
        free(rx);
        return AT_ENOMEM;
    }
    double *ry = rx + n;
    average_ranks(x, n, tmp, rx);
    average_ranks(y, n, tmp, ry);
    *out = at_pearson(rx, ry, n);
    free(rx);
    free(tmp);
    return 0;
}

void at_fisher_ci95(double r, size_t n, double *lo, double *hi)
{
    if (n < 4 || isnan(r) || r < -1 || r > 1) {
        *lo = *hi = NAN;
        return;
    }
    /* atanh(+-1) is +-infinity and tanh brings it back to +-1: a perfect correlation has the
     * degenerate interval [r, r]. */
    double z = atanh(r), half = 1.96 / sqrt((double)(n - 3));
    *lo = tanh(z - half);
    *hi = tanh(z + half);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double at_quantile(double *x, size_t n, double p)
{
    if (n == 0 || !(p >= 0 && p <= 1))
        return NAN;
    qsort(x, n, sizeof *x, cmp_double);
    /* Type 7 (R's default, NumPy's "linear"): h = (n - 1) p, interpolating between the
     * order statistics at floor(h) and floor(h) + 1 (0-based). */
    double h = (double)(n - 1) * p;
    size_t lo = (size_t)floor(h);
    if (lo >= n - 1)
        return x[n - 1];
    double frac = h - (double)lo;
    /* x[lo] + frac * (x[lo+1] - x[lo]) rather than a weighted sum: exact when the neighbours
     * are equal. */
    return x[lo] + frac * (x[lo + 1] - x[lo]);
}

double at_slope(const double *x, const double *y, size_t n)
{
    if (n < 2 || is_constant(x, n))
        return NAN;
    double mx = mean(x, n), my = mean(y, n);
    double sxx = 0, sxy = 0;
    for (size_t i = 0; i < n; i++) {
        double dx = x[i] - mx;
        sxx += dx * dx;
        sxy += dx * (y[i] - my);
    }
    return sxy / sxx;
}
