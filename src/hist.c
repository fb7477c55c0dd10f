// SPDX-License-Identifier: MIT
#include "hist.h"

/* Values below HIST_SUB get their own buckets; above, the three bits after
 * the leading one pick the sub-bucket. */
unsigned int hist_bucket(uint64_t v)
{
	unsigned int msb, sub;

	if (v < HIST_SUB)
		return (unsigned int)v;
	msb = 63 - (unsigned int)__builtin_clzll(v);
	sub = (unsigned int)(v >> (msb - 3)) & (HIST_SUB - 1);
	return (msb - 2) * HIST_SUB + sub;
}

uint64_t hist_bucket_upper(unsigned int b)
{
	unsigned int msb, sub;

	if (b < HIST_SUB)
		return b;
	msb = b / HIST_SUB + 2;
	sub = b % HIST_SUB;
	if (msb >= 63 && sub == HIST_SUB - 1)
		return UINT64_MAX;
	return ((uint64_t)(HIST_SUB + sub + 1) << (msb - 3)) - 1;
}

void hist_add(struct hist *h, uint64_t v)
{
	__atomic_fetch_add(&h->count[hist_bucket(v)], 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&h->n, 1, __ATOMIC_RELAXED);
	if (v > __atomic_load_n(&h->max, __ATOMIC_RELAXED))
		__atomic_store_n(&h->max, v, __ATOMIC_RELAXED);
}

uint64_t hist_quantile(const struct hist *h, double q)
{
	uint64_t n = __atomic_load_n(&h->n, __ATOMIC_RELAXED);
	uint64_t max = __atomic_load_n(&h->max, __ATOMIC_RELAXED);
	uint64_t rank, seen = 0;
	unsigned int b;

	if (n == 0)
		return 0;
	if (q < 0)
		q = 0;
	if (q > 1)
		q = 1;
	rank = (uint64_t)(q * (double)n);
	if ((double)rank < q * (double)n)	/* nearest rank: round up */
		rank++;
	if (rank == 0)
		rank = 1;
	for (b = 0; b < HIST_BUCKETS; b++) {
		seen += __atomic_load_n(&h->count[b], __ATOMIC_RELAXED);
		if (seen >= rank) {
			uint64_t up = hist_bucket_upper(b);

			return up < max ? up : max;
		}
	}
	return max;
}
