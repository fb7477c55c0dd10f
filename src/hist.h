/* SPDX-License-Identifier: MIT */
/*
 * Latency histogram: 8 sub-buckets per power of two (error <= 12.5%), enough for
 * p50/p99 of fault service times from 1 ns to minutes. One writer; readers
 * get a consistent-enough snapshot from relaxed loads.
 */
#ifndef UFFDMOVE_HIST_H
#define UFFDMOVE_HIST_H

#include <stdint.h>

#define HIST_SUB	8
#define HIST_BUCKETS	(64 * HIST_SUB)

struct hist {
	uint64_t count[HIST_BUCKETS];
	uint64_t n;
	uint64_t max;
};

void hist_add(struct hist *h, uint64_t v);
/* The value at quantile @q (0..1): the upper bound of its bucket, capped
 * at the maximum seen. 0 when empty. */
uint64_t hist_quantile(const struct hist *h, double q);

/* Exposed for tests: bucket index of @v and the bucket's upper bound. */
unsigned int hist_bucket(uint64_t v);
uint64_t hist_bucket_upper(unsigned int b);

#endif /* UFFDMOVE_HIST_H */
