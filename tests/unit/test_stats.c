/*
 * test_stats.c: the report statistics (lib/stats.c) against results worked out by hand or
 * published elsewhere: a textbook Pearson example, Wikipedia's Spearman example, R's
 * quantile(type = 7), and the Fisher interval for r = 0.5, n = 28.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "attune.h"

#define LEN(a) (sizeof(a) / sizeof((a)[0]))

static void assert_near(double got, double want, double tol)
{
    if (isnan(want)) {
        if (!isnan(got))
            fail_msg("got %.17g, want NAN", got);
        return;
    }
    if (!(fabs(got - want) <= tol))
        fail_msg("got %.17g, want %.17g (tolerance %g)", got, want, tol);
}

static void test_pearson(void **state)
{
    (void)state;
    /* Deviations of x: -2..2 (sxx = 10); of y = (2,4,5,4,5) about 4: -2,0,1,0,1 (syy = 6);
     * sxy = 4 + 0 + 0 + 0 + 2 = 6, so r = 6 / sqrt(60). */
    const double x[] = {1, 2, 3, 4, 5}, y[] = {2, 4, 5, 4, 5};
    assert_near(at_pearson(x, y, 5), 6 / sqrt(60), 1e-15);
    assert_near(at_pearson(y, x, 5), 6 / sqrt(60), 1e-15);

    const double a[] = {1, 2, 3}, b[] = {6, 4, 2};
    assert_near(at_pearson(a, b, 3), -1, 0);
    assert_near(at_pearson(a, a, 3), 1, 0);

    /* Too few pairs and constant variables have no correlation. */
    const double c[] = {0.1, 0.1, 0.1};
    assert_near(at_pearson(a, c, 3), NAN, 0);
    assert_near(at_pearson(c, a, 3), NAN, 0);
    assert_near(at_pearson(x, y, 1), NAN, 0);
    assert_near(at_pearson(x, y, 0), NAN, 0);
}

/* Millisecond timestamps: a huge offset with a small spread, where a one-pass sum of squares
 * cancels to nothing. */
static void test_pearson_large_offset(void **state)
{
    (void)state;
    double x[5], y[5];
    const double base_y[] = {2, 4, 5, 4, 5};
    for (int i = 0; i < 5; i++) {
        x[i] = 1.7e12 + (i + 1);
        y[i] = 1e9 + base_y[i];
    }
    assert_near(at_pearson(x, y, 5), 6 / sqrt(60), 1e-12);
    assert_near(at_slope(x, y, 5), 0.6, 1e-9);
}

static void test_spearman(void **state)
{
    (void)state;
    double rho;
    /* Wikipedia, "Spearman's rank correlation coefficient": IQ against hours of TV per week,
     * no ties, sum of squared rank differences 194: rho = 1 - 6*194/(10*99) = -29/165. */
    const double iq[] = {106, 100, 86, 101, 99, 103, 97, 113, 112, 110};
    const double tv[] = {7, 27, 2, 50, 28, 29, 20, 12, 6, 17};
    assert_int_equal(at_spearman(iq, tv, 10, &rho), 0);
    assert_near(rho, -29.0 / 165.0, 1e-15);

    /* Ties take their average rank: x ranks 1, 2.5, 2.5, 4; y ranks 1, 3, 2, 4. Deviations
     * about 2.5: (-1.5, 0, 0, 1.5) and (-1.5, 0.5, -0.5, 1.5), so rho = 4.5 / sqrt(4.5 * 5). */
    const double x[] = {1, 2, 2, 3}, y[] = {10, 30, 20, 40};
    assert_int_equal(at_spearman(x, y, 4, &rho), 0);
    assert_near(rho, 4.5 / sqrt(22.5), 1e-15);

    /* Any strictly increasing relation has rho = 1, however far from linear. */
    const double u[] = {-2, -1, 0, 1, 2, 3}, v[] = {-8, -1, 0, 1, 8, 1e6};
    assert_int_equal(at_spearman(u, v, 6, &rho), 0);
    assert_near(rho, 1, 1e-15);
    assert_true(at_pearson(u, v, 6) < 0.9);

    /* A variable whose values are all tied has constant ranks: no correlation. */
    const double same[] = {3, 3, 3, 3};
    assert_int_equal(at_spearman(x, same, 4, &rho), 0);
    assert_near(rho, NAN, 0);
    assert_int_equal(at_spearman(x, y, 1, &rho), 0);
    assert_near(rho, NAN, 0);
}

static void test_fisher(void **state)
{
    (void)state;
    double lo, hi;
    /* r = 0.5, n = 28: atanh(0.5) = 0.549306..., 1.96 / sqrt(25) = 0.392, so the interval is
     * tanh(0.157306...) .. tanh(0.941306...). */
    at_fisher_ci95(0.5, 28, &lo, &hi);
    assert_near(lo, 0.15602133478739186, 1e-12);
    assert_near(hi, 0.7358217825567178, 1e-12);
    /* Symmetric in the sign of r. */
    at_fisher_ci95(-0.5, 28, &lo, &hi);
    assert_near(lo, -0.7358217825567178, 1e-12);
    assert_near(hi, -0.15602133478739186, 1e-12);
    /* n = 4 is the smallest n with an interval: 1.96 / sqrt(1). */
    at_fisher_ci95(0, 4, &lo, &hi);
    assert_near(lo, tanh(-1.96), 1e-15);
    assert_near(hi, tanh(1.96), 1e-15);
    at_fisher_ci95(1, 10, &lo, &hi);
    assert_near(lo, 1, 0);
    assert_near(hi, 1, 0);

    at_fisher_ci95(0.5, 3, &lo, &hi);
    assert_near(lo, NAN, 0);
    assert_near(hi, NAN, 0);
    at_fisher_ci95(NAN, 100, &lo, &hi);
    assert_near(lo, NAN, 0);
    assert_near(hi, NAN, 0);
}

static void test_quantile(void **state)
{
    (void)state;
    /* R: quantile(c(10, 1, 7, 3), c(0, .25, .5, .75, .9, 1), type = 7)
     *    -> 1, 2.5, 5, 7.75, 9.1, 10 (sorted 1 3 7 10, h = 3p). */
    const double p[] = {0, 0.25, 0.5, 0.75, 0.9, 1};
    const double want[] = {1, 2.5, 5, 7.75, 9.1, 10};
    for (size_t i = 0; i < LEN(p); i++) {
        double x[] = {10, 1, 7, 3};
        assert_near(at_quantile(x, 4, p[i]), want[i], 1e-12);
    }
    /* R: quantile(1:10, .9) = 9.1; median(c(5, 1, 3)) = 3; median(1:4) = 2.5. */
    double ten[] = {10, 9, 8, 7, 6, 5, 4, 3, 2, 1};
    assert_near(at_quantile(ten, 10, 0.9), 9.1, 1e-12);
    double three[] = {5, 1, 3};
    assert_near(at_quantile(three, 3, 0.5), 3, 0);
    double four[] = {4, 3, 2, 1};
    assert_near(at_quantile(four, 4, 0.5), 2.5, 0);
    /* Sorted in place, as documented. */
    assert_near(four[0], 1, 0);
    assert_near(four[3], 4, 0);
    /* Ties: quantile(c(2, 2, 2, 9), .5) = 2. */
    double tied[] = {2, 9, 2, 2};
    assert_near(at_quantile(tied, 4, 0.5), 2, 0);

    double one[] = {42};
    assert_near(at_quantile(one, 1, 0.9), 42, 0);
    assert_near(at_quantile(one, 1, 0), 42, 0);
    assert_near(at_quantile(one, 0, 0.5), NAN, 0);
    assert_near(at_quantile(one, 1, 1.5), NAN, 0);
    assert_near(at_quantile(one, 1, -0.1), NAN, 0);
    assert_near(at_quantile(one, 1, NAN), NAN, 0);
}

static void test_slope(void **state)
{
    (void)state;
    /* sxy / sxx = 6 / 10 for the Pearson example. */
    const double x[] = {1, 2, 3, 4, 5}, y[] = {2, 4, 5, 4, 5};
    assert_near(at_slope(x, y, 5), 0.6, 1e-15);
    /* An exact line: y = 3 - 0.5 x. */
    const double line[] = {2.5, 2, 1.5, 1, 0.5};
    assert_near(at_slope(x, line, 5), -0.5, 1e-15);
    /* A constant y has slope 0; a constant x or a single point has none. */
    const double flat[] = {0.7, 0.7, 0.7, 0.7, 0.7};
    assert_near(at_slope(x, flat, 5), 0, 1e-15);
    assert_near(at_slope(flat, y, 5), NAN, 0);
    assert_near(at_slope(x, y, 1), NAN, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pearson),
        cmocka_unit_test(test_pearson_large_offset),
        cmocka_unit_test(test_spearman),
        cmocka_unit_test(test_fisher),
        cmocka_unit_test(test_quantile),
        cmocka_unit_test(test_slope),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
