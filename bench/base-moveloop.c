// SPDX-License-Identifier: MIT
/*
 * Baseline 5: the raw same-process MOVE, no library. A fresh mapping with
 * the guest's advice is registered (MISSING, UFFD_FEATURE_MOVE) and one
 * thread moves the whole guest into it with UFFDIO_MOVE in 2 MiB calls,
 * in address order. This is what lib-move does per chunk without faults,
 * protocol, classification or threads: the kernel's own floor for it in
 * the same run (a THP moves as one PMD; its cost here is mostly the TLB
 * flush, which depends on what else the process runs). Like lib-move, the
 * guest then lives in the new mapping, and the old one is unmapped.
 *
 * Times: all-in = registered until the last MOVE returned; no downtime
 * (nothing is handed over).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "bench.h"
#include "compat.h"

#define MOVE_CALL	B_HPAGE

/* UFFDIO_MOVE of [at, at + len) of the guest, whole. */
static int move_range(int uffd, const struct guest *g, uint8_t *dst,
		      size_t at, size_t len, struct bench_result *r)
{
	size_t done = 0;

	while (done < len) {
		struct uffdio_move mv = {
			.dst = (uintptr_t)(dst + at + done),
			.src = (uintptr_t)(g->src + at + done),
			.len = len - done,
		};

		if (ioctl(uffd, UFFDIO_MOVE, &mv) == 0) {
			done += mv.len;
			continue;
		}
		if (errno != EAGAIN)
			return result_fail(r, "UFFDIO_MOVE at +0x%zx: %m",
					   at + done);
		if (mv.move > 0)	/* partial: go on after what moved */
			done += (size_t)mv.move;
	}
	return 0;
}

int bench_moveloop(struct guest *g, struct bench_result *r)
{
	struct memwatch *w;
	uint64_t t0, t1, t2;
	size_t b, off, len;
	uint8_t *dst;
	int uffd, ret = 0;

	result_note_source(r, g);
	t0 = now_ns();
	dst = map_guest(g->len, g->thp, true);
	if (!dst)
		return result_fail(r, "mmap of %zu bytes failed", g->len);
	uffd = uffd_missing(dst, g->len, UFFD_FEATURE_MOVE, r);
	if (uffd < 0) {
		unmap_guest(dst, g->len);
		return -1;
	}
	w = memwatch_start(getpid(), 0);	/* as lib-move has */
	t1 = now_ns();
	for (b = 0; !ret && b < g->nblocks; b++)
		for (off = 0; !ret && off < g->block; off += len) {
			len = g->block - off < MOVE_CALL ? g->block - off :
			      MOVE_CALL;
			ret = move_range(uffd, g, dst, b * g->stride + off,
					 len, r);
		}
	t2 = now_ns();
	memwatch_stop(w, r);
	close(uffd);
	if (ret) {
		unmap_guest(dst, g->len);
		return -1;	/* half moved: run_group() rebuilds it */
	}
	r->prepare_ns = t1 - t0;
	r->all_in_ns = t2 - t1;
	r->thp_dst_bytes = anon_huge_bytes(dst, g->len);
	r->thp_done_bytes = r->thp_dst_bytes;
	r->verify_bad = guest_verify(g, dst);
	unmap_guest(g->src, g->len);
	g->src = dst;
	return 0;
}
