/* SPDX-License-Identifier: MIT */
/* A growable list of address ranges, coalescing neighbours. No locking:
 * the owner holds its own lock around it. */
#ifndef UFFDMOVE_RANGES_H
#define UFFDMOVE_RANGES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wire.h"

struct ranges {
	struct wire_range *v;
	size_t n, cap;
};

/* Append [start, start + len), merged into the last range when they
 * touch. -ENOMEM leaves the list as it was. */
int ranges_add(struct ranges *l, uint64_t start, uint64_t len);
/* Move up to @cap ranges from the front into @out; returns how many. */
size_t ranges_take(struct ranges *l, struct wire_range *out, size_t cap);
void ranges_fini(struct ranges *l);

#endif /* UFFDMOVE_RANGES_H */
