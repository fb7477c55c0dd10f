// SPDX-License-Identifier: MIT
/*
 * Baseline 1: memcpy into freshly mapped memory, with the same THP advice
 * as the guest. The single-copy limit: any handoff that copies must at
 * least fault in (and, here, zero) fresh pages and copy every byte once.
 */
#include <string.h>
#include <unistd.h>

#include "bench.h"

int bench_memcpy(struct guest *g, struct bench_result *r)
{
	struct memwatch *w;
	uint8_t *dst;
	uint64_t t0, t1;
	size_t b;

	result_note_source(r, g);
	w = memwatch_start(getpid(), 0);
	dst = map_guest(g->len, g->thp, false);
	if (!dst) {
		memwatch_stop(w, r);
		return result_fail(r, "mmap of %zu bytes failed", g->len);
	}
	t0 = now_ns();
	for (b = 0; b < g->nblocks; b++)
		memcpy(dst + b * g->stride, g->src + b * g->stride, g->block);
	t1 = now_ns();
	memwatch_stop(w, r);
	r->all_in_ns = t1 - t0;
	r->downtime_ns = t1 - t0;	/* as a stop-and-copy would be */
	r->thp_dst_bytes = anon_huge_bytes(dst, g->len);
	r->thp_done_bytes = r->thp_dst_bytes;
	r->verify_bad = guest_verify(g, dst);
	unmap_guest(dst, g->len);
	return 0;
}
