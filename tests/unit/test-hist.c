// SPDX-License-Identifier: MIT
/*
 * hist.c: bucket boundaries, the promised relative error, and quantiles of
 * known distributions. Written against hist_bucket()/hist_bucket_upper()
 * rather than bucket numbers, so a finer histogram passes unchanged.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "hist.h"

/* xorshift64*: deterministic, so a failure reproduces */
static uint64_t rnd(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dULL;
}

static void test_boundaries(void **state)
{
	unsigned int last = hist_bucket(UINT64_MAX), b;
	uint64_t up, prev = 0;

	assert_true(last < HIST_BUCKETS);
	assert_int_equal(hist_bucket(0), 0);
	assert_int_equal(hist_bucket_upper(last), UINT64_MAX);
	for (b = 0; b <= last; b++) {
		up = hist_bucket_upper(b);
		if (b > 0 && up <= prev) {
			print_error("bucket %u upper %llu <= bucket %u upper %llu\n",
				    b, (unsigned long long)up, b - 1,
				    (unsigned long long)prev);
			fail();
		}
		/* the upper bound is in its bucket, the next value in the
		 * next one: buckets are contiguous */
		assert_int_equal(hist_bucket(up), b);
		if (b < last)
			assert_int_equal(hist_bucket(up + 1), b + 1);
		prev = up;
	}
}

struct err_stats {
	uint64_t checked, bad, first_bad, worst_v, worst_up;
	double worst;
};

/* v lands in a bucket whose upper bound u satisfies v <= u < 1.2 v + 4 */
static void check_value(struct err_stats *e, uint64_t v)
{
	unsigned int b = hist_bucket(v);
	uint64_t up;
	double ratio;

	e->checked++;
	if (b >= HIST_BUCKETS) {
		print_error("value %llu: bucket %u out of range\n",
			    (unsigned long long)v, b);
		fail();
	}
	up = hist_bucket_upper(b);
	if (up < v) {
		print_error("value %llu: bucket %u upper bound %llu is below it\n",
			    (unsigned long long)v, b, (unsigned long long)up);
		fail();
	}
	if ((unsigned __int128)up * 5 < (unsigned __int128)v * 6 + 20)
		return;
	if (!e->bad++)
		e->first_bad = v;
	ratio = (double)(up - v) / (double)v;
	if (ratio > e->worst) {
		e->worst = ratio;
		e->worst_v = v;
		e->worst_up = up;
	}
}

static void test_relative_error(void **state)
{
	struct err_stats e = { 0 };
	uint64_t v, s = 0x9e3779b97f4a7c15ULL;
	unsigned int k, i;

	/* every value up to a million */
	for (v = 0; v <= 1000000; v++)
		check_value(&e, v);
	/* around every power of two, and the top */
	for (k = 0; k < 64; k++) {
		v = 1ULL << k;
		check_value(&e, v - 1);
		check_value(&e, v);
		check_value(&e, v + 1);
		check_value(&e, v + v / 4);
		check_value(&e, v + v / 4 - 1);
		check_value(&e, v + v / 2);
	}
	check_value(&e, UINT64_MAX);
	check_value(&e, UINT64_MAX - 1);
	check_value(&e, INT64_MAX);
	/* two million random values over all magnitudes */
	for (i = 0; i < 2000000; i++) {
		v = rnd(&s);
		check_value(&e, v >> (v & 63));
	}

	if (e.bad) {
		print_error("%llu of %llu values land in a bucket whose upper bound is >= 1.2 v + 4\n"
			    "(hist.h promises an error < 19%%): first %llu, worst %llu -> %llu (+%.1f%%)\n",
			    (unsigned long long)e.bad,
			    (unsigned long long)e.checked,
			    (unsigned long long)e.first_bad,
			    (unsigned long long)e.worst_v,
			    (unsigned long long)e.worst_up, e.worst * 100);
		fail();
	}
}

static void test_empty(void **state)
{
	struct hist h;

	memset(&h, 0, sizeof(h));
	assert_int_equal(hist_quantile(&h, 0), 0);
	assert_int_equal(hist_quantile(&h, 0.5), 0);
	assert_int_equal(hist_quantile(&h, 0.99), 0);
	assert_int_equal(hist_quantile(&h, 1), 0);
}

static void test_add(void **state)
{
	static struct hist h;
	uint64_t s = 1, v, sum = 0;
	unsigned int i, b;

	memset(&h, 0, sizeof(h));
	hist_add(&h, 5);
	hist_add(&h, 1000);
	hist_add(&h, 7);
	assert_int_equal(h.n, 3);
	assert_int_equal(h.max, 1000);
	assert_int_equal(h.count[hist_bucket(5)], 1);
	assert_int_equal(h.count[hist_bucket(1000)], 1);

	for (i = 0; i < 100000; i++) {
		v = rnd(&s) >> 20;
		hist_add(&h, v);
	}
	hist_add(&h, 0);
	for (b = 0; b < HIST_BUCKETS; b++)
		sum += h.count[b];
	assert_int_equal(h.n, 100004);
	assert_int_equal(sum, h.n);
	assert_true(h.count[0] >= 1);

	hist_add(&h, UINT64_MAX);
	assert_int_equal(h.max, UINT64_MAX);
	assert_int_equal(h.count[hist_bucket(UINT64_MAX)], 1);
}

/* |got - want| <= 20% of want */
#define assert_within_20(got, want) do { \
	uint64_t g_ = (got), w_ = (want); \
	if (g_ * 5 < w_ * 4 || g_ * 5 > w_ * 6) { \
		print_error("%s = %llu, expected %llu +- 20%%\n", #got, \
			    (unsigned long long)g_, \
			    (unsigned long long)w_); \
		fail(); \
	} \
} while (0)

static void test_uniform(void **state)
{
	static struct hist h;
	uint64_t v;

	memset(&h, 0, sizeof(h));
	for (v = 1000; v >= 1; v--)
		hist_add(&h, v);
	assert_int_equal(h.n, 1000);
	assert_int_equal(h.max, 1000);
	assert_within_20(hist_quantile(&h, 0.5), 500);
	assert_true(hist_quantile(&h, 0.5) >= 500);
	assert_within_20(hist_quantile(&h, 0.9), 900);
	assert_within_20(hist_quantile(&h, 0.99), 990);
	assert_true(hist_quantile(&h, 0.99) >= 990);
	/* the top is capped at the largest value seen, not 1023 */
	assert_int_equal(hist_quantile(&h, 1), 1000);
	assert_int_equal(hist_quantile(&h, 0.999), 1000);
	/* the bottom is the smallest value's bucket */
	assert_int_equal(hist_quantile(&h, 0), 1);
	/* out-of-range q is clamped */
	assert_int_equal(hist_quantile(&h, -1), 1);
	assert_int_equal(hist_quantile(&h, 2), 1000);

	/* a million nanoseconds, uniform */
	memset(&h, 0, sizeof(h));
	for (v = 1; v <= 1000000; v++)
		hist_add(&h, v);
	assert_within_20(hist_quantile(&h, 0.1), 100000);
	assert_within_20(hist_quantile(&h, 0.5), 500000);
	assert_within_20(hist_quantile(&h, 0.99), 990000);
	assert_int_equal(hist_quantile(&h, 1), 1000000);
}

static void test_bimodal(void **state)
{
	static struct hist h;
	unsigned int i;

	/* 900 fast faults of 10 us, 100 slow ones of 5 ms */
	memset(&h, 0, sizeof(h));
	for (i = 0; i < 1000; i++)
		hist_add(&h, i % 10 == 9 ? 5000000 : 10000);
	assert_within_20(hist_quantile(&h, 0.5), 10000);
	assert_within_20(hist_quantile(&h, 0.9), 10000);
	assert_within_20(hist_quantile(&h, 0.95), 5000000);
	assert_int_equal(hist_quantile(&h, 0.99), 5000000);	/* capped */
}

static void test_max_cap(void **state)
{
	static struct hist h;
	static const uint64_t one[] = { 0, 1, 3, 4, 1000, 123456789,
					UINT64_MAX - 1, UINT64_MAX };
	unsigned int i;

	/* one sample: every quantile is that sample exactly */
	for (i = 0; i < sizeof(one) / sizeof(one[0]); i++) {
		memset(&h, 0, sizeof(h));
		hist_add(&h, one[i]);
		assert_int_equal(hist_quantile(&h, 0), one[i]);
		assert_int_equal(hist_quantile(&h, 0.5), one[i]);
		assert_int_equal(hist_quantile(&h, 0.99), one[i]);
		assert_int_equal(hist_quantile(&h, 1), one[i]);
	}

	/* a constant: the same */
	memset(&h, 0, sizeof(h));
	for (i = 0; i < 10000; i++)
		hist_add(&h, 777);
	assert_int_equal(hist_quantile(&h, 0.5), 777);
	assert_int_equal(hist_quantile(&h, 0.99), 777);
}

/*
 * The value at quantile q of n samples is the ceil(q n)-th smallest (the
 * nearest-rank definition: at least q n samples are <= it). With samples
 * a bucket apart each, the histogram can answer exactly that bucket.
 */
static void test_nearest_rank(void **state)
{
	static const double qs[] = { 0.25, 0.5, 0.75 };	/* exact in binary */
	static struct hist h;
	uint64_t v[40];
	unsigned int n, i, k, rank, bad = 0;

	for (i = 0; i < 40; i++)
		v[i] = 16ULL << i;	/* one bucket each */
	for (n = 1; n <= 40; n++) {
		memset(&h, 0, sizeof(h));
		for (i = 0; i < n; i++)
			hist_add(&h, v[i]);
		for (k = 0; k < 3; k++) {
			uint64_t want, got;

			rank = (unsigned int)(qs[k] * n);
			if (rank < qs[k] * n)
				rank++;			/* ceil */
			if (rank == 0)
				rank = 1;
			want = hist_bucket_upper(hist_bucket(v[rank - 1]));
			if (want > v[n - 1])
				want = v[n - 1];
			got = hist_quantile(&h, qs[k]);
			if (got != want && bad++ < 5)
				print_error("n=%u q=%.2f: got %llu, the %u-th sample's bucket says %llu\n",
					    n, qs[k], (unsigned long long)got,
					    rank, (unsigned long long)want);
		}
	}
	if (bad) {
		print_error("%u quantiles below their nearest rank (e.g. the median of {10, 1000, 100000} must not be 10)\n",
			    bad);
		fail();
	}

	/* the example, by name */
	memset(&h, 0, sizeof(h));
	hist_add(&h, 10);
	hist_add(&h, 1000);
	hist_add(&h, 100000);
	assert_true(hist_quantile(&h, 0.5) >= 1000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_boundaries),
		cmocka_unit_test(test_relative_error),
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_add),
		cmocka_unit_test(test_uniform),
		cmocka_unit_test(test_bimodal),
		cmocka_unit_test(test_max_cap),
		cmocka_unit_test(test_nearest_rank),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
