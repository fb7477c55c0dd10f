// SPDX-License-Identifier: MIT
/*
 * Baseline 2: stop-and-copy, what a VMM without postcopy does. The new
 * process reads the old one's guest RAM with process_vm_readv while the
 * guest is stopped, so its downtime is the whole copy. It is given the
 * populated ranges for free (a real VMM would have to scan pagemap first).
 */
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "bench.h"

#define IOV_BATCH	1024
#define PIECE		(64UL << 20)
#define CALL_MAX	(1UL << 30)

static int copy_all(pid_t src_pid, const struct guest *g, uint8_t *dst,
		    struct bench_result *r)
{
	struct iovec local[IOV_BATCH], remote[IOV_BATCH];
	size_t b, off, n = 0, bytes = 0, len;
	ssize_t got;

	for (b = 0; b < g->nblocks; b++) {
		for (off = 0; off < g->block; off += len) {
			size_t at = b * g->stride + off;

			len = g->block - off < PIECE ? g->block - off : PIECE;
			local[n] = (struct iovec){ dst + at, len };
			remote[n] = (struct iovec){ g->src + at, len };
			n++;
			bytes += len;
			if (n < IOV_BATCH && bytes < CALL_MAX)
				continue;
			got = process_vm_readv(src_pid, local, n, remote, n, 0);
			if (got != (ssize_t)bytes)
				return result_fail(r, "process_vm_readv: %zd of %zu: %m",
						   got, bytes);
			n = bytes = 0;
		}
	}
	if (n) {
		got = process_vm_readv(src_pid, local, n, remote, n, 0);
		if (got != (ssize_t)bytes)
			return result_fail(r, "process_vm_readv: %zd of %zu: %m",
					   got, bytes);
	}
	return 0;
}

static int target_main(const struct guest *g, pid_t src_pid,
		       struct bench_result *r)
{
	uint64_t t0, t1, t2;
	uint8_t *dst;

	t0 = now_ns();
	dst = map_guest(g->len, g->thp, false);
	if (!dst)
		return result_fail(r, "mmap of %zu bytes failed", g->len);
	t1 = now_ns();
	/* The source has stopped its guest: copy everything, then run. */
	if (copy_all(src_pid, g, dst, r))
		return -1;
	t2 = now_ns();
	r->prepare_ns = t1 - t0;
	r->downtime_ns = t2 - t1;
	r->all_in_ns = t2 - t1;
	r->thp_dst_bytes = anon_huge_bytes(dst, g->len);
	r->verify_bad = guest_verify(g, dst);
	return 0;
}

int bench_stopcopy(struct guest *g, struct bench_result *r)
{
	pid_t self = getpid(), pid;

	result_note_source(r, g);
	pid = fork();
	if (pid < 0)
		return result_fail(r, "fork: %m");
	if (pid == 0)
		_exit(target_main(g, self, r) ? 1 : 0);
	return wait_child(pid, r);
}
