// SPDX-License-Identifier: MIT
/*
 * Baseline 4: the raw push, no library. The new process registers its
 * guest RAM (MISSING) with a userfaultfd and passes it to the old one,
 * whose single thread fills the whole guest with UFFDIO_COPY in 2 MiB
 * calls, in address order, then says so on the socket. This is what
 * libuffdmove's push (pull OFF) does per chunk without faults, protocol,
 * classification or threads: one run shows whether the library's push
 * leaves copy speed behind. UFFDIO_COPY installs 4 KiB pages, so a THP
 * guest arrives without huge pages (nothing collapses them here).
 *
 * Times, taken in the target: downtime = uffd sent until the source
 * acknowledged it; all-in = uffd sent until the source reported the
 * last copy done.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "bench.h"

#define COPY_CALL	B_HPAGE

static int target_main(const struct guest *g, int sock,
		       struct bench_result *r)
{
	uint64_t t0, t1, t2, t3, addr;
	uint8_t *dst;
	char ack;
	int uffd;

	r->mem_tgt_start = rss_self();
	t0 = now_ns();
	dst = map_guest(g->len, g->thp, false);
	if (!dst)
		return result_fail(r, "mmap failed");
	uffd = uffd_missing(dst, g->len, 0, r);
	if (uffd < 0)
		return -1;
	t1 = now_ns();
	addr = (uintptr_t)dst;
	if (send_fd(sock, uffd, &addr, sizeof(addr)) ||
	    read(sock, &ack, 1) != 1)
		return result_fail(r, "handing the uffd over: %m");
	t2 = now_ns();
	if (read(sock, &ack, 1) != 1 || ack != 'd')
		return result_fail(r, "the copy loop failed");
	t3 = now_ns();
	r->prepare_ns = t1 - t0;
	r->downtime_ns = t2 - t1;
	r->all_in_ns = t3 - t1;
	r->thp_dst_bytes = anon_huge_bytes(dst, g->len);
	r->thp_done_bytes = r->thp_dst_bytes;
	r->verify_bad = guest_verify(g, dst);
	close(uffd);
	return 0;
}

/* UFFDIO_COPY of [at, at + len) of the guest, whole. */
static int copy_range(int uffd, const struct guest *g, uint64_t dst,
		      size_t at, size_t len, struct bench_result *r)
{
	size_t done = 0;

	while (done < len) {
		struct uffdio_copy c = {
			.dst = dst + at + done,
			.src = (uintptr_t)(g->src + at + done),
			.len = len - done,
		};

		if (ioctl(uffd, UFFDIO_COPY, &c) == 0) {
			done += c.len;
			continue;
		}
		if (errno != EAGAIN)
			return result_fail(r, "UFFDIO_COPY at +0x%zx: %m",
					   at + done);
		if (c.copy > 0)	/* partial: go on after what was copied */
			done += (size_t)c.copy;
	}
	return 0;
}

static int source_main(const struct guest *g, int sock,
		       struct bench_result *r)
{
	uint64_t dst;
	size_t b, off, len;
	int uffd;

	if (recv_fd(sock, &uffd, &dst, sizeof(dst)) != (int)sizeof(dst) ||
	    uffd < 0)
		return result_fail(r, "receiving the uffd failed");
	if (write(sock, "g", 1) != 1) {
		close(uffd);
		return result_fail(r, "ack: %m");
	}
	for (b = 0; b < g->nblocks; b++)
		for (off = 0; off < g->block; off += len) {
			len = g->block - off < COPY_CALL ? g->block - off :
			      COPY_CALL;
			if (copy_range(uffd, g, dst, b * g->stride + off, len,
				       r)) {
				close(uffd);
				return -1;
			}
		}
	close(uffd);
	return write(sock, "d", 1) == 1 ? 0 : result_fail(r, "done: %m");
}

struct copyloop {
	const struct guest *g;
	struct bench_result *r;
};

static int target_side(int sock, void *arg)
{
	struct copyloop *c = arg;

	return target_main(c->g, sock, c->r);
}

static int source_side(int sock, void *arg)
{
	struct copyloop *c = arg;

	return source_main(c->g, sock, c->r);
}

int bench_copyloop(struct guest *g, struct bench_result *r)
{
	struct copyloop c = { g, r };

	return bench_pair(r, g, target_side, source_side, &c);
}
