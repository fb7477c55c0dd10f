// SPDX-License-Identifier: MIT
/*
 * The pull fill path of the transfer core, run in the new VMM: read a
 * chunk's pages from the source with process_vm_readv() into a staging
 * slot of our own, then UFFDIO_MOVE them into guest RAM within this mm.
 * One copy, and a dense chunk read into a 2 MiB aligned THP slot moves as
 * one PMD. The source's memory is only read: what it frees is its own
 * decision (doc/design.md, "Pull").
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>

#include "mover_core.h"
#include "stage.h"
#include "util.h"

#define RUNS_MAX	(CHUNK_PAGES / 2)	/* alternating pages and holes */
#define READ_SLICE	(256u << 10)	/* bytes per read, see stage_chunk() */

/*
 * The source may have died while we read, and a pid is reused: data read
 * counts only if the process behind the pidfd is still alive after the
 * read. Its exit makes the pidfd readable.
 */
int core_source_alive(struct mover *m)
{
	struct pollfd pfd = { .fd = m->pidfd, .events = POLLIN };

	if (poll(&pfd, 1, 0) == 0)
		return 0;
	return mover_fail(m, -ESRCH,
			  "the source (pid %d) exited during the handoff",
			  (int)m->pid);
}

static int read_failed(struct mover *m, int err, uint64_t src, size_t len)
{
	if (err == ESRCH)
		return mover_fail(m, -ESRCH,
				  "the source (pid %d) exited during the handoff",
				  (int)m->pid);
	if (err == EPERM)
		return mover_fail(m, -EPERM,
				  "the source (pid %d) no longer lets us read its memory (did it become non-dumpable, or change its ptracer?)",
				  (int)m->pid);
	return mover_fail(m, -(err ? err : EFAULT),
			  "reading the source's 0x%llx+%zu: %s",
			  (unsigned long long)src, len,
			  err ? strerror(err) : "short read (unmapped there?)");
}

/* Read the source's @n ranges into ours, all or nothing; the bytes read. */
static int read_source(struct mover *m, const struct iovec *local,
		       const struct iovec *remote, size_t n, size_t bytes)
{
	ssize_t got = process_vm_readv(m->pid, local, n, remote, n, 0);

	if (got != (ssize_t)bytes)
		return read_failed(m, got < 0 ? errno : 0,
				   (uintptr_t)remote[0].iov_base, bytes);
	count_add(&m->cnt.pulled, bytes);
	return core_source_alive(m);
}

int core_pull_probe(struct mover *m, uint64_t src, char *byte)
{
	struct iovec local = { byte, 1 };
	struct iovec remote = { (void *)(uintptr_t)src, 1 };

	return process_vm_readv(m->pid, &local, 1, &remote, 1, 0) == 1 ?
	       0 : -errno;
}

int core_pull_page(struct mover *m, uint64_t src, void *buf)
{
	struct iovec local = { buf, PAGE_SZ };
	struct iovec remote = { (void *)(uintptr_t)src, PAGE_SZ };

	return read_source(m, &local, &remote, 1, PAGE_SZ);
}

/*
 * Read the wanted pages [x->pos, x->end) into @mem, which stands for the
 * chunk's first page, in reads of at most READ_SLICE. The kernel copies
 * what one process_vm_readv() pinned with no rescheduling point, and on a
 * PREEMPT_NONE kernel a 2 MiB read (0.2-0.5 ms here) kept a woken guest
 * thread, or our fault thread, off its CPU until it ended.
 */
static int stage_chunk(struct mover *m, const struct xfer *x, char *mem)
{
	static __thread struct iovec local[RUNS_MAX], remote[RUNS_MAX];
	size_t pos = x->pos, run_end, n = 0, bytes = 0, len;
	int ret;

	while (plan_next_run(x->r, &pos, x->end, &run_end)) {
		len = MIN((run_end - pos) * PAGE_SZ, READ_SLICE - bytes);
		local[n] = (struct iovec){ mem + (pos - x->first) * PAGE_SZ,
					   len };
		remote[n] = (struct iovec){
			(void *)(uintptr_t)(x->r->src + pos * PAGE_SZ), len
		};
		bytes += len;
		pos += len / PAGE_SZ;
		if (++n < RUNS_MAX && bytes < READ_SLICE)
			continue;
		ret = read_source(m, local, remote, n, bytes);
		if (ret)
			return ret;
		n = bytes = 0;
	}
	return n ? read_source(m, local, remote, n, bytes) : 0;
}

int mover_pull_chunk(struct mover *m, size_t c, bool reader)
{
	struct stage *st = stage_get(&m->stages);
	struct xfer x;
	uint8_t flags;
	char *mem;
	int ret;

	if (!st)
		return mover_fail(m, -ENOMEM, "no staging memory for pulling");
	if (core_xfer_begin(m, c, &x, reader)) {
		stage_put(&m->stages, st);
		return mover_fatal(m);
	}
	flags = load_acquire(&m->plan.chunks[c].flags);
	/* A fresh THP moves as one PMD; anything else is copied from the
	 * bounce buffer (stage.h says why). */
	x.moving = (flags & CHUNK_THP) && !(flags & CHUNK_TOUCHED) && x.whole;
	mem = x.moving ? st->huge : st->bounce;
	x.from = (uintptr_t)mem - x.first * PAGE_SZ;
	ret = stage_chunk(m, &x, mem);
	if (!ret)
		ret = core_transfer(m, &x);
	/* Pages a MOVE did not take (a fault or a discard got there first,
	 * or we stopped early) must not linger in the slot. On -EAGAIN the
	 * rest is read again: the source's memory has not changed. */
	if (x.moving)
		stage_clear(st);
	stage_put(&m->stages, st);
	ret = core_xfer_end(m, &x, ret);
	if (!ret)	/* the source may free it now (MODE_COPY keeps all) */
		mover_outbox_add(m, x.start, x.stop - x.start);
	return ret;
}
