// SPDX-License-Identifier: MIT
/*
 * Baseline 2: stop-and-copy, what a VMM without postcopy does. The new
 * process reads the old one's guest RAM with process_vm_readv while the
 * guest is stopped, so its downtime is the whole copy. It is given the
 * populated ranges for free (a real VMM would have to scan pagemap first).
 *
 * b2 reads into fresh memory with the guest's own THP advice (4 KiB
 * guests: MADV_NOHUGEPAGE). b2-THP reads into fresh, 2 MiB aligned
 * MADV_HUGEPAGE memory whatever the guest has: the kernel faults one huge
 * page per 2 MiB inside process_vm_readv, so this is the THP-keeping,
 * single-copy limit of a pull. With 2 threads each reads one contiguous
 * half of the populated memory (in calls of up to 1 GiB), to compare with
 * two pull threads.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "bench.h"

#define IOV_BATCH	1024
#define PIECE		(64UL << 20)
#define CALL_MAX	(1UL << 30)
#define READERS_MAX	2

struct reader {
	pthread_t tid;
	pid_t src_pid;
	const struct guest *g;
	uint8_t *dst;
	size_t first, last;	/* pieces [first, last) of the populated
				 * memory, PIECE each (a block's last piece
				 * may be shorter) */
	int err;		/* errno, 0 */
	ssize_t got;
	size_t want;
};

/* Pieces in one populated block. */
static size_t pieces_per_block(const struct guest *g)
{
	return (g->block + PIECE - 1) / PIECE;
}

static int flush(struct reader *rd, struct iovec *local,
		 struct iovec *remote, size_t n, size_t bytes)
{
	ssize_t got = process_vm_readv(rd->src_pid, local, n, remote, n, 0);

	if (got == (ssize_t)bytes)
		return 0;
	rd->err = got < 0 ? errno : EIO;
	rd->got = got;
	rd->want = bytes;
	return -1;
}

static void *reader_main(void *arg)
{
	struct reader *rd = arg;
	const struct guest *g = rd->g;
	struct iovec local[IOV_BATCH], remote[IOV_BATCH];
	size_t ppb = pieces_per_block(g), i, n = 0, bytes = 0;

	for (i = rd->first; i < rd->last; i++) {
		size_t off = (i % ppb) * PIECE;
		size_t at = (i / ppb) * g->stride + off;
		size_t len = g->block - off < PIECE ? g->block - off : PIECE;

		local[n] = (struct iovec){ rd->dst + at, len };
		remote[n] = (struct iovec){ g->src + at, len };
		n++;
		bytes += len;
		if (n < IOV_BATCH && bytes < CALL_MAX)
			continue;
		if (flush(rd, local, remote, n, bytes))
			return NULL;
		n = bytes = 0;
	}
	if (n)
		flush(rd, local, remote, n, bytes);
	return NULL;
}

static int copy_all(pid_t src_pid, const struct guest *g, uint8_t *dst,
		    unsigned int threads, struct bench_result *r)
{
	struct reader rd[READERS_MAX];
	size_t total = pieces_per_block(g) * g->nblocks;
	unsigned int i;
	int bad = -1;

	if (threads > READERS_MAX)
		threads = READERS_MAX;
	for (i = 0; i < threads; i++) {
		rd[i] = (struct reader){
			.src_pid = src_pid, .g = g, .dst = dst,
			.first = total * i / threads,
			.last = total * (i + 1) / threads,
		};
	}
	/* The first share in this thread, the others in their own. */
	for (i = 1; i < threads; i++)
		if (pthread_create(&rd[i].tid, NULL, reader_main, &rd[i]))
			return result_fail(r, "pthread_create failed");
	reader_main(&rd[0]);
	for (i = 1; i < threads; i++)
		pthread_join(rd[i].tid, NULL);
	for (i = 0; i < threads; i++)
		if (rd[i].err && bad < 0)
			bad = (int)i;
	if (bad >= 0) {
		errno = rd[bad].err;
		return result_fail(r, "process_vm_readv: %zd of %zu: %m",
				   rd[bad].got, rd[bad].want);
	}
	return 0;
}

static int target_main(const struct guest *g, pid_t src_pid, bool thp_dst,
		       unsigned int threads, struct bench_result *r)
{
	uint64_t t0, t1, t2;
	uint8_t *dst;

	r->mem_tgt_start = rss_self();
	t0 = now_ns();
	dst = map_guest(g->len, thp_dst || g->thp, false);
	if (!dst)
		return result_fail(r, "mmap of %zu bytes failed", g->len);
	t1 = now_ns();
	/* The source has stopped its guest: copy everything, then run. */
	if (copy_all(src_pid, g, dst, threads, r))
		return -1;
	t2 = now_ns();
	r->prepare_ns = t1 - t0;
	r->downtime_ns = t2 - t1;
	r->all_in_ns = t2 - t1;
	r->thp_dst_bytes = anon_huge_bytes(dst, g->len);
	r->thp_done_bytes = r->thp_dst_bytes;
	r->verify_bad = guest_verify(g, dst);
	return 0;
}

int bench_stopcopy(struct guest *g, struct bench_result *r, bool thp_dst,
		   unsigned int threads)
{
	pid_t self = getpid(), pid;
	struct memwatch *w;
	int ret;

	result_note_source(r, g);
	pid = fork();
	if (pid < 0)
		return result_fail(r, "fork: %m");
	if (pid == 0)
		_exit(target_main(g, self, thp_dst, threads ? threads : 1, r) ?
		      1 : 0);
	w = memwatch_start(self, pid);
	ret = wait_child(pid, r);
	memwatch_stop(w, r);
	return ret;
}
