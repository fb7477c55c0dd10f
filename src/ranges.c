// SPDX-License-Identifier: MIT
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ranges.h"
#include "util.h"

int ranges_add(struct ranges *l, uint64_t start, uint64_t len)
{
	struct wire_range *last = l->n ? &l->v[l->n - 1] : NULL;

	if (last && last->start + last->len == start) {
		last->len += len;
		return 0;
	}
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		void *p = realloc(l->v, cap * sizeof(*l->v));

		if (!p)
			return -ENOMEM;
		l->v = p;
		l->cap = cap;
	}
	l->v[l->n++] = (struct wire_range){ start, len };
	return 0;
}

size_t ranges_take(struct ranges *l, struct wire_range *out, size_t cap)
{
	size_t n = MIN(cap, l->n);

	if (!n)
		return 0;
	memcpy(out, l->v, n * sizeof(*out));
	memmove(l->v, l->v + n, (l->n - n) * sizeof(*l->v));
	l->n -= n;
	return n;
}

void ranges_fini(struct ranges *l)
{
	free(l->v);
	memset(l, 0, sizeof(*l));
}
