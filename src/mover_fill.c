// SPDX-License-Identifier: MIT
/*
 * The push fill path of the transfer core: hand a classified chunk's
 * pages to the target through the target's uffd, MOVE or COPY per chunk
 * (the one place that decides), honouring partial progress, EEXIST,
 * EAGAIN and the target's discards.
 * Used by the fault thread and the pushers alike; mover_fault.c serves
 * single faults with it.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "classify.h"
#include "mover_core.h"
#include "uffd.h"
#include "util.h"

/* EAGAIN backoff while the target's commit is unknown (see -ENOENT). */
#define BACKOFF_MIN_US	20
#define BACKOFF_MAX_US	2000
#define EAGAIN_SPIN_NS	(50 * 1000)
/*
 * One thread: what a fault may wait for. A COPY slice is at most 64 KiB
 * (15-30 us into fresh memory here on most days; touch p50 50 us, against
 * 63-71 us with 128 KiB and 780 us with whole chunks, bench
 * latency-4k-256M t1), and is halved while one takes longer than
 * SLICE_TARGET_NS: on a day this VM's host backed fresh memory at 0.15
 * GB/s, 64 KiB took ~450 us and a fault waited for it.
 */
#define SLICE_SZ	(64UL << 10)
#define SLICE_TARGET_NS	(30 * 1000)
/*
 * A MOVE of up to 33 pages flushes each page from every CPU's TLB (x86's
 * tlb_single_page_flush_ceiling), more pages flush it whole. In this VM
 * the first took ~90 us for 16 pages and the second ~20 us for 64: 4 KiB
 * guests moved by one thread ran at 0.7 GB/s in 64 KiB slices, 13 GB/s
 * in 256 KiB ones (bench/results/summary.md, "Moving in slices").
 */
#define MOVE_SLICE_SZ	(256UL << 10)

enum step { STEP_NEXT, STEP_RETURN_EAGAIN, STEP_FAIL };

/* The one thread's COPY slice now (see slice_adapt()). */
static size_t copy_slice(const struct mover *m)
{
	return m->copy_slice ?: SLICE_SZ;
}

/* What a page that vanished in the source reads as. Not read there: a
 * kernel without the shared zero page would allocate it again. */
static const char zeros[PAGE_SZ] __attribute__((aligned(PAGE_SZ)));

/* The wanted run at x->pos, published first (fills.h): one ioctl. */
static int fill_run(struct mover *m, struct xfer *x, size_t run_end,
		    size_t *len, size_t *done)
{
	struct plan_region *r = x->r;
	uint64_t dst = r->dst + x->pos * PAGE_SZ;
	uint64_t src = x->from + x->pos * PAGE_SZ;
	unsigned int fill;
	bool zero, move;
	int ret;

	fill = fills_begin(&m->fills, dst, r->dst + run_end * PAGE_SZ);
	/* Published, then the discard bits once more. */
	if (!plan_next_run(r, &x->pos, run_end, &run_end)) {
		fills_end(&m->fills, fill);
		*len = *done = 0;
		return 0;
	}
	zero = x->vanished == x->pos + 1;
	move = x->moving && !zero;
	dst = r->dst + x->pos * PAGE_SZ;
	src = zero ? (uintptr_t)zeros : x->from + x->pos * PAGE_SZ;
	*len = x->one || zero ? PAGE_SZ : (run_end - x->pos) * PAGE_SZ;
	if (x->slice)
		*len = MIN(*len, x->slice);
	/* No ALLOW_SRC_HOLES: it reports a hole as moved, and DONE would
	 * then miss a page that the count says is there. */
	if (move) {
		x->busy.seen = core_neighbour_moves(m, x->c);
		core_moving(m, x->c, true);
		ret = uffd_move(m->uffd, dst, src, *len, 0, done);
		core_moving(m, x->c, false);
	} else
		ret = uffd_copy(m->uffd, dst, (void *)(uintptr_t)src, *len, 0,
				done);
	fills_end(&m->fills, fill);
	*done = ALIGN_DOWN(*done, PAGE_SZ);
	count_add(move ? &m->cnt.moved : &m->cnt.copied, *done);
	/* MODE_MOVE copies data only where moving cannot be: say so. A
	 * refused MOVE said it already; else the class found it shared. */
	if (!move && !zero && *done && m->mode == UFFDMOVE_MODE_MOVE &&
	    mover_committed(m))
		core_record_move_failure(m, src, 0);
	x->pos += *done / PAGE_SZ;
	if (move && *done)
		core_decide(m, PRIM_MOVE, UFFDMOVE_WHY_USED);
	return ret;
}

/*
 * Two MOVEs in one large folio (one that straddles two chunks, after an
 * mremap() by less than 2 MiB) move pages that neither reports: the chunk
 * that owns them then finds them in the target. A page found there that
 * is gone from the source was moved by us, and is counted here, unless a
 * fault moved it alone and counted it then. (A fault's copy leaves the
 * source page.) Not when pulling: only one MOVE at a time takes from a
 * staging slot, and a page a fault copied in was never read into it.
 */
static void count_unreported_move(struct mover *m, const struct xfer *x)
{
	uint8_t flags;

	if (!bit_test(&x->r->fault_moved, x->pos) &&
	    !pm_flags(&m->pm, x->from + x->pos * PAGE_SZ, 1, false, &flags) &&
	    !pg_populated(flags))
		count_add(&m->cnt.moved, PAGE_SZ);
}

/*
 * No progress and an event pending in the target. The discarding thread
 * lifts the block only once it runs again after the event was read, and a
 * madvise loop blocks again microseconds later: retry in a short spin to
 * hit that window, then wait for reads (or let the reader read them).
 */
static enum step on_eagain(struct mover *m, struct xfer *x, uint64_t seen)
{
	count_add(&m->cnt.eagain, 1);
	if (!x->spin_until)
		x->spin_until = now_ns() + EAGAIN_SPIN_NS;
	if (now_ns() < x->spin_until)
		return STEP_NEXT;
	x->spin_until = 0;
	if (!x->may_wait)
		return STEP_RETURN_EAGAIN;
	core_wait_events_read(m, seen);
	return STEP_NEXT;
}

/* COPY found no VMA at x->pos: a discard, or not yet known. */
static enum step on_enoent(struct mover *m, struct xfer *x, size_t len)
{
	/* Before its commit (or before we read its GO) a target unregisters
	 * only to give the guest back, or an event tells why: no page there
	 * is a discard. Its messages and events decide; try again meanwhile. */
	if (!mover_committed(m)) {
		if (!x->may_wait)
			return STEP_RETURN_EAGAIN;
		usleep(x->delay);
		x->delay = MIN(x->delay * 2, BACKOFF_MAX_US);
		return STEP_NEXT;
	}
	x->whole = false;	/* a THP cannot arrive as one PMD now */
	/* A run across two of the target's mappings (an mprotect() split
	 * guest RAM) is refused whole: go page by page, and only a page
	 * refused alone is not mapped any more (its UNMAP event says so). */
	if (len > PAGE_SZ) {
		x->one = true;
		return STEP_NEXT;
	}
	count_add(&m->cnt.discarded,
		  plan_discard(&m->plan, x->r->dst + x->pos * PAGE_SZ,
			       PAGE_SZ));
	x->pos++;
	return STEP_NEXT;
}

/*
 * MOVE found no VMA at either end, or no page in the source where the
 * class saw one. A source that maps nothing there any more lost the data:
 * fail. A page gone from the source was taken by reclaim (the old VMM
 * freed it lazily, with MADV_FREE): it reads as zeros now, so zeros are
 * copied there, for it to be in guest RAM as counted, and the MOVE goes
 * on after it. Else the target's VMA is gone: what a COPY's ENOENT is.
 * Pulling, the source is our own staging slot, read whole and mapped.
 */
static enum step on_move_enoent(struct mover *m, struct xfer *x, size_t len)
{
	uint64_t src = x->from + x->pos * PAGE_SZ, mapped_end;
	uint8_t flags;
	int ret;

	if (m->pull)
		return on_enoent(m, x, len);
	ret = pm_mapped_end(&m->pm, src, src + PAGE_SZ, &mapped_end);
	if (ret || mapped_end != src + PAGE_SZ) {
		mover_fail(m, ret ?: -EFAULT,
			   "UFFDIO_MOVE of 0x%llx found nothing there, and %s",
			   (unsigned long long)src,
			   ret ? "the page map cannot tell why" :
				 "the source no longer maps it");
		return STEP_FAIL;
	}
	ret = pm_flags(&m->pm, src, 1, false, &flags);
	if (ret) {
		mover_fail(m, ret, "reading the page map at 0x%llx: %s",
			   (unsigned long long)src, strerror(-ret));
		return STEP_FAIL;
	}
	if (!pg_populated(flags)) {
		x->vanished = x->pos + 1;
		x->whole = false;	/* not one PMD any more */
		return STEP_NEXT;
	}
	return on_enoent(m, x, len);
}

/*
 * MOVE refused: pinned or shared after all (EBUSY), or cross-mm (EINVAL).
 * The rest of the chunk is copied. But a large folio that straddles two
 * chunks (an mremap() by less than 2 MiB) is refused too while a MOVE in
 * the neighbour chunk splits it: EBUSY is tried again while
 * core_split_wait() says, and once after.
 */
static enum step on_move_refused(struct mover *m, struct xfer *x, int ret)
{
	if (ret == -EBUSY) {
		if (core_split_wait(m, x->c, &x->busy, !x->may_wait))
			return STEP_NEXT;
		if (!x->busy_retried) {
			x->busy_retried = true;
			return STEP_NEXT;
		}
	}
	if (ret == -EINVAL && !m->same_mm)
		core_decide(m, PRIM_COPY, UFFDMOVE_WHY_CROSS_MM);
	if (ret == -EBUSY)
		count_add(&m->cnt.move_ebusy, 1);
	/* Within one process EINVAL is about this range (its mappings
	 * differ), and the copy that follows must not be called sharing. */
	if (m->mode == UFFDMOVE_MODE_MOVE && (ret == -EBUSY || m->same_mm))
		core_record_move_failure(m, x->from + x->pos * PAGE_SZ, ret);
	x->moving = false;
	if (x->slice)	/* copied from here: a COPY's slice */
		x->slice = copy_slice(m);
	return STEP_NEXT;
}

/* What the ioctl's answer means for the rest of the chunk. */
static enum step on_result(struct mover *m, struct xfer *x, int ret,
			   size_t len, size_t done, uint64_t seen)
{
	switch (ret) {
	case 0:
		x->delay = BACKOFF_MIN_US;
		x->spin_until = 0;
		x->busy.until = 0;
		x->busy_retried = false;
		x->one = false;
		x->vanished = 0;
		return STEP_NEXT;
	case -EEXIST:	/* a racing fault, or another MOVE, put it there */
		if (x->moving && !m->pull)
			count_unreported_move(m, x);
		uffd_wake(m->uffd, x->r->dst + x->pos * PAGE_SZ, PAGE_SZ);
		x->pos++;
		x->whole = false;
		x->vanished = 0;
		return STEP_NEXT;
	case -EAGAIN:
		/* With progress it only stopped early (the next page is
		 * there: EEXIST next time). */
		return done ? STEP_NEXT : on_eagain(m, x, seen);
	case -ENOENT:
		if (x->moving && x->vanished != x->pos + 1)
			return on_move_enoent(m, x, len);
		x->vanished = 0;
		return on_enoent(m, x, len);
	case -ESRCH:
		mover_fail(m, -ESRCH, "target process exited during the handoff");
		return STEP_FAIL;
	}
	if (x->moving && (ret == -EBUSY || ret == -EINVAL))
		return on_move_refused(m, x, ret);
	mover_fail(m, ret, "%s of 0x%llx+%zu into the target failed: %s",
		   x->moving ? "UFFDIO_MOVE" : "UFFDIO_COPY",
		   (unsigned long long)(x->r->dst + x->pos * PAGE_SZ), len,
		   strerror(-ret));
	return STEP_FAIL;
}

/*
 * A COPY slice took @took_ns for @done of @len bytes: the next is half as
 * long if that was slow, twice as long (up to SLICE_SZ) if a whole slice
 * was quick. Kept in the mover for the next chunk: only the one thread
 * that both pushes and reads events slices (run.c).
 */
static void slice_adapt(struct mover *m, struct xfer *x, size_t len,
			size_t done, uint64_t took_ns)
{
	if (x->moving || !done)
		return;
	if (took_ns > SLICE_TARGET_NS && x->slice > PAGE_SZ)
		x->slice = MAX(ALIGN_DOWN(MIN(len, x->slice) / 2, PAGE_SZ),
			       PAGE_SZ);
	else if (took_ns < SLICE_TARGET_NS / 2 && done == x->slice &&
		 x->slice < SLICE_SZ)
		x->slice = MIN(x->slice * 2, SLICE_SZ);
	m->copy_slice = x->slice;
}

/* One ioctl per run of wanted pages; see mover_core.h. */
int core_transfer(struct mover *m, struct xfer *x)
{
	size_t run_end, len, done;
	uint64_t t0 = 0;
	int ret;

	x->delay = BACKOFF_MIN_US;
	while (!mover_stopping(m) &&
	       plan_next_run(x->r, &x->pos, x->end, &run_end)) {
		uint64_t seen = load_acquire(&m->events_read);

		if (x->slice)
			t0 = now_ns();
		ret = fill_run(m, x, run_end, &len, &done);
		if (!len)
			continue;
		if (x->slice)
			slice_adapt(m, x, len, done, now_ns() - t0);
		switch (on_result(m, x, ret, len, done, seen)) {
		case STEP_NEXT:
			if (x->slice && x->pos < x->end &&
			    x->pending(x->pending_arg)) {
				x->yielded = true;
				return -EAGAIN;
			}
			continue;
		case STEP_RETURN_EAGAIN:
			return -EAGAIN;
		case STEP_FAIL:
			return mover_fatal(m);
		}
	}
	/* Stopped half way, the chunk is not in: never report it so. */
	if (mover_stopping(m))
		return mover_fatal(m) ?: -ECANCELED;
	return 0;
}

/* A THP chunk came as small pages: the target collapses it again, unless
 * that would allocate what it discarded. */
static void thp_arrived_small(struct mover *m, struct plan_region *r,
			      size_t first, size_t end)
{
	count_add(&m->cnt.thp_copied, 1);
	if (r->thp && !plan_any_discarded(r, first, end))
		core_thp_small(m, r->dst + first * PAGE_SZ);
}

/*
 * The chunk is in: count it, and tell the target which THP chunks arrived
 * as 4 KiB pages so that it collapses them again.
 */
void core_chunk_done(struct mover *m, const struct xfer *x)
{
	struct chunk *ch = &m->plan.chunks[x->c];
	bool pmd = false;

	if (ch->flags & CHUNK_THP) {
		/* A PMD moved whole stays huge, unless a fault put a page
		 * table there first (guest RAM may be MADV_NOHUGEPAGE while
		 * pulling: thp.c): the kernel then moved it page by page. */
		pmd = x->moving && x->whole &&
		      (!m->own_pm || pm_huge(m->own_pm, x->r->dst +
					     x->first * PAGE_SZ, CHUNK_SZ));
		if (pmd)
			count_add(&m->cnt.thp_moved, 1);
		else
			thp_arrived_small(m, x->r, x->first, x->end);
	}
	/* Only a chunk counted as moved whole on the scan's word is left
	 * for mover_check_arrivals(). */
	if (!pmd && (ch->flags & CHUNK_HUGE_TRUSTED))
		__atomic_fetch_and(&ch->flags, (uint16_t)~CHUNK_HUGE_TRUSTED,
				   __ATOMIC_RELAXED);
	store_release(&ch->state, CHUNK_DONE);
	count_add(&m->cnt.chunks_done, 1);
}

struct arrivals {
	struct mover *m;
	const struct plan_region *r;
};

/* A run of the target that huge pages map: its chunks came whole. */
static void arrived_huge(void *arg, uint64_t start, uint64_t end,
			 uint8_t flags)
{
	struct arrivals *s = arg;
	const struct plan_region *r = s->r;
	uint64_t a;
	size_t c;

	(void)flags;
	for (a = ALIGN_UP(start, CHUNK_SZ); a + CHUNK_SZ <= end;
	     a += CHUNK_SZ) {
		c = plan_chunk_of_src(r, a - r->dst + r->src);
		__atomic_fetch_and(&s->m->plan.chunks[c].flags,
				   (uint16_t)~CHUNK_HUGE_TRUSTED,
				   __ATOMIC_RELAXED);
	}
}

static bool region_trusts(const struct mover *m, const struct plan_region *r)
{
	size_t c;

	for (c = r->first_chunk; c < r->first_chunk + r->nchunks; c++)
		if (load_acquire(&m->plan.chunks[c].flags) & CHUNK_HUGE_TRUSTED)
			return true;
	return false;
}

/*
 * Every chunk is in. Those classified from the scan ahead and counted as
 * moved whole (CHUNK_HUGE_TRUSTED) may have been split in the source
 * since: the kernel then moved them page by page. One scan of the target
 * per region finds them, where a look per chunk cost what skipping its
 * class had saved (doc/design.md, "A THP chunk seen whole"); they are
 * counted again and queued for collapse. One the target discarded since
 * stays counted as moved: it is not here to be collapsed.
 */
void mover_check_arrivals(struct mover *m)
{
	uint64_t start, stop;
	size_t i, c, first, end;

	for (i = 0; i < m->plan.nregions; i++) {
		struct plan_region *r = &m->plan.regions[i];
		struct arrivals s = { .m = m, .r = r };

		if (!region_trusts(m, r) ||
		    pm_scan_huge(&m->pm, r->dst, r->len, arrived_huge, &s))
			continue;
		for (c = r->first_chunk; c < r->first_chunk + r->nchunks; c++) {
			struct chunk *ch = &m->plan.chunks[c];

			if (!(load_acquire(&ch->flags) & CHUNK_HUGE_TRUSTED))
				continue;
			__atomic_fetch_and(&ch->flags,
					   (uint16_t)~CHUNK_HUGE_TRUSTED,
					   __ATOMIC_RELAXED);
			plan_chunk_range(&m->plan, c, &start, &stop);
			first = (start - r->src) / PAGE_SZ;
			end = (stop - r->src) / PAGE_SZ;
			if (plan_any_discarded(r, first, end))
				continue;
			count_sub(&m->cnt.thp_moved, 1);
			thp_arrived_small(m, r, first, end);
		}
	}
}

int core_xfer_begin(struct mover *m, size_t c, struct xfer *x, bool reader)
{
	struct chunk *ch = &m->plan.chunks[c];
	int ret;

	memset(x, 0, sizeof(*x));
	ret = core_classify(m, c, reader);
	x->c = c;
	x->r = plan_region_of(&m->plan, c);
	plan_chunk_range(&m->plan, c, &x->start, &x->stop);
	x->first = (x->start - x->r->src) / PAGE_SZ;
	x->pos = x->first + ch->resume;
	x->end = (x->stop - x->r->src) / PAGE_SZ;
	x->whole = !ch->resume;
	x->may_wait = !reader;
	return ret;
}

int core_xfer_end(struct mover *m, const struct xfer *x, int ret)
{
	struct chunk *ch = &m->plan.chunks[x->c];

	if (ret == -EAGAIN) {
		/* Give the chunk back, to go on where it stopped once the
		 * events are read: no page is handed over twice. */
		ch->resume = (uint16_t)(x->pos - x->first);
		store_release(&ch->state, CHUNK_PENDING);
		core_make_urgent(m, x->c);
	}
	if (!ret)
		core_chunk_done(m, x);
	return ret;
}

bool core_chunk_edge(const struct mover *m, size_t c)
{
	uint64_t start, stop;

	plan_chunk_range(&m->plan, c, &start, &stop);
	return stop - start < CHUNK_SZ;
}

/*
 * Where two regions cut one source 2 MiB block in two chunks, their
 * classes and MOVEs go one at a time: two MOVEs in one large folio made
 * the kernel report pages it had moved as not moved, and a class made
 * while the other chunk's MOVE split the folio saw migration entries and
 * copied the chunk. A thread that reads events never waits here (the
 * holder may be waiting for its reads): false, try again later.
 */
static bool edge_begin(struct mover *m, bool edge, bool reader)
{
	if (!edge)
		return true;
	if (reader)
		return !pthread_mutex_trylock(&m->edge_lock);
	pthread_mutex_lock(&m->edge_lock);
	return true;
}

static int push(struct mover *m, size_t c, bool reader,
		bool (*pending)(void *arg), void *arg)
{
	bool edge = core_chunk_edge(m, c);
	struct xfer x;
	int ret;

	if (!edge_begin(m, edge, reader)) {
		store_release(&m->plan.chunks[c].state, CHUNK_PENDING);
		core_make_urgent(m, c);
		return -EAGAIN;
	}
	if (core_xfer_begin(m, c, &x, reader)) {
		if (edge)
			pthread_mutex_unlock(&m->edge_lock);
		return mover_fatal(m);
	}
	x.from = x.r->src;
	x.moving = core_wants_move(m, &m->plan.chunks[c]);
	/* A THP that moves as one PMD is one quick ioctl: never cut. */
	if (pending && !(x.moving && x.whole &&
			 (m->plan.chunks[c].flags & CHUNK_THP))) {
		x.slice = x.moving ? MOVE_SLICE_SZ : copy_slice(m);
		x.pending = pending;
		x.pending_arg = arg;
	}
	ret = core_transfer(m, &x);
	if (edge)
		pthread_mutex_unlock(&m->edge_lock);
	ret = core_xfer_end(m, &x, ret);
	if (ret == -EAGAIN && x.yielded)
		return 0;
	if (!ret)
		core_release_chunk(m, c);
	return ret;
}

int mover_push_chunk(struct mover *m, size_t c, bool reader)
{
	return push(m, c, reader, NULL, NULL);
}

int mover_push_sliced(struct mover *m, size_t c, bool (*pending)(void *arg),
		      void *arg)
{
	return push(m, c, true, pending, arg);
}
