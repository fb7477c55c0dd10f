// SPDX-License-Identifier: MIT
/*
 * Faults in the transfer core: a hole gets the zero page, a page already
 * handed over a wake-up, and a missing one its page or its whole chunk,
 * as the session's primitive and the pull fault policy say.
 */
#include <string.h>

#include "mover_core.h"
#include "uffd.h"
#include "util.h"

/*
 * Resolve a page the source has no data for (hole or discarded). Only a
 * hole's zero page counts as zeroed: DONE expects it in guest RAM. A
 * discarded page is counted once, as discarded, and may be filled and
 * zapped again any number of times (a balloon that keeps discarding it).
 */
int core_fault_zero(struct mover *m, struct plan_region *r, size_t pg)
{
	uint64_t dst = r->dst + pg * PAGE_SZ;
	size_t done;
	int ret = uffd_zeropage(m->uffd, dst, PAGE_SZ, &done);

	if (ret == -EEXIST)
		return uffd_wake(m->uffd, dst, PAGE_SZ);
	if (ret || bit_test(&r->discarded, pg))
		return ret;
	count_add(&m->cnt.zeroed, PAGE_SZ);
	count_sub(&m->cnt.skipped, PAGE_SZ);
	return 0;
}

#define RATE_WINDOW_NS	(10 * 1000 * 1000ULL)
#define RATE_HIGH	20	/* faults per window: one per 500 us */

/*
 * Were faults frequent in the last window? Then the guest waits on
 * memory more than it runs, and a whole chunk per fault brings it in
 * fastest (fewer faults, THP kept); while they are rare, a page each
 * serves them in microseconds. FAULT_AUTO asks. Only the fault thread
 * calls this.
 */
static bool faults_frequent(struct mover *m)
{
	uint64_t now = now_ns();

	if (now - m->rate_since > RATE_WINDOW_NS) {
		bool high = m->rate_count >= RATE_HIGH &&
			    now - m->rate_since < 2 * RATE_WINDOW_NS;

		if (m->fault_rate)
			m->fault_rate(m->fault_rate_arg, high);
		m->rate_high = high;
		m->rate_since = now;
		m->rate_count = 0;
	}
	m->rate_count++;
	return m->rate_high;
}

/*
 * Will one page serve this fault, whatever its chunk holds? Pushing, once
 * the session copies (no THP to keep whole by MOVE); pulling, as the
 * fault policy says. FAULT_AUTO counts the fault: call once per fault.
 */
static bool fault_by_page(struct mover *m)
{
	if (!m->pull)
		return m->mode == UFFDMOVE_MODE_COPY ||
		       load_acquire(&m->prim) == PRIM_COPY;
	switch (m->fault_policy) {
	case UFFDMOVE_FAULT_CHUNK:
		return false;
	case UFFDMOVE_FAULT_PAGE:
		return true;
	default:
		return !faults_frequent(m);
	}
}

#define FAULT_GAP_NS	(500 * 1000ULL)

/*
 * Pushing, may a fault in chunk @c move its page @src alone (its chunk
 * not classified yet)? Only when it came more than 500 us after the last
 * one was served: a guest that faults again as soon as it runs waits on
 * memory more than it runs, and a whole chunk per fault brings that in
 * faster. Page-sized faults then made a 256 MiB guest's handoff 2-7 times
 * longer here, the pusher starved by them; and a rate of faults per 10 ms
 * (the pull's rule) took such a guest for a quiet one, since each of its
 * faults waits for a whole chunk (doc/design.md). Not in a region-edge
 * chunk (mover_fill.c).
 */
static bool fault_moves_page(struct mover *m, size_t c, uint64_t src)
{
	return m->fault_end_ns && now_ns() - m->fault_end_ns > FAULT_GAP_NS &&
	       !core_chunk_edge(m, c) && core_page_may_move(m, src);
}

/* Not by page: serve the fault by its whole chunk. MOVE keeps a THP whole
 * (push), and a pulled chunk lands as one THP. */
static bool fault_takes_chunk(struct mover *m, const struct chunk *ch)
{
	return m->pull || core_wants_move(m, ch);
}

/*
 * Copy just the faulting page so its thread runs at once; the rest of its
 * chunk goes next. Published first (fills.h). Pull reads the page from
 * the source first.
 */
static int fault_page(struct mover *m, struct plan_region *r, size_t c,
		      size_t pg)
{
	static __thread char page[PAGE_SZ] __attribute__((aligned(PAGE_SZ)));
	uint64_t dst = r->dst + pg * PAGE_SZ, src = r->src + pg * PAGE_SZ;
	const void *from = (const void *)(uintptr_t)src;
	unsigned int fill;
	size_t done;
	int ret;

	if (m->pull) {
		ret = core_pull_page(m, src, page);
		if (ret)
			return ret;
		from = page;
	}
	/* Its chunk cannot arrive as one PMD any more: stage it in small
	 * pages (splitting a staged THP costs more than the copy). */
	__atomic_fetch_or(&m->plan.chunks[c].flags, CHUNK_TOUCHED,
			  __ATOMIC_RELEASE);
	fill = fills_begin(&m->fills, dst, dst + PAGE_SZ);
	ret = plan_page_wanted(r, pg) ?
	      uffd_copy(m->uffd, dst, from, PAGE_SZ, 0, &done) : -ENODATA;
	fills_end(&m->fills, fill);
	if (ret == -ENODATA)	/* discarded just now */
		ret = core_fault_zero(m, r, pg);
	else if (ret == -EEXIST)
		ret = uffd_wake(m->uffd, dst, PAGE_SZ);
	else if (!ret)
		count_add(&m->cnt.copied, PAGE_SZ);
	if (!ret && load_acquire(&m->plan.chunks[c].state) == CHUNK_PENDING)
		core_make_urgent(m, c);
	return ret;
}

/*
 * MOVE just the faulting page of a chunk of small pages: one page-table
 * entry, where the chunk's 512 took 60-90 us here before the thread ran.
 * The chunk is claimed meanwhile, so that no other MOVE runs in it: two
 * MOVEs in one chunk whose source THPs were mapped by page-table entries
 * made the kernel report moved pages as not moved. Then the pushers take
 * the rest, first in line. Not copied while a pusher holds the chunk: a
 * copy that read the page after the pusher's MOVE took it would put a
 * fresh page in the source, and dropping that would drop a page the
 * kernel had refused to move (pinned). Whatever the kernel will not do
 * for the page alone, the chunk's way does.
 */
static int fault_move_page(struct mover *m, struct plan_region *r, size_t c,
			   size_t pg)
{
	struct chunk *ch = &m->plan.chunks[c];
	uint64_t dst = r->dst + pg * PAGE_SZ, src = r->src + pg * PAGE_SZ;
	unsigned int fill;
	size_t done;
	int ret;

	/* A chunk another thread holds is finished soon, and its fill
	 * wakes this thread (see mover_fault()). */
	if (!core_claim(m, c))
		return load_acquire(&ch->state) == CHUNK_DONE ?
		       uffd_wake(m->uffd, dst, PAGE_SZ) : -EAGAIN;
	fill = fills_begin(&m->fills, dst, dst + PAGE_SZ);
	if (plan_page_wanted(r, pg)) {
		core_moving(m, c, true);
		ret = uffd_move(m->uffd, dst, src, PAGE_SZ, 0, &done);
		core_moving(m, c, false);
	} else {
		ret = -ENODATA;
	}
	fills_end(&m->fills, fill);
	if (!ret) {
		bit_set(&r->fault_moved, pg);	/* counted: see mover_fill.c */
		count_add(&m->cnt.moved, PAGE_SZ);
		core_decide(m, PRIM_MOVE, UFFDMOVE_WHY_USED);
	} else if (ret == -EEXIST) {
		ret = uffd_wake(m->uffd, dst, PAGE_SZ);
	} else if (ret == -ENODATA) {	/* discarded just now */
		ret = core_fault_zero(m, r, pg);
	} else {
		/* Refused (pinned or shared: EBUSY; another process: EINVAL),
		 * gone (ENOENT), an event pending (EAGAIN): the chunk's way
		 * knows each, and gives it back on EAGAIN. */
		ret = mover_push_chunk(m, c, true);
		return ret ?: uffd_wake(m->uffd, dst, PAGE_SZ);
	}
	/* The rest of the chunk goes next, by the pushers. */
	store_release(&ch->state, CHUNK_PENDING);
	core_make_urgent(m, c);
	return ret;
}

int mover_fault(struct mover *m, uint64_t addr)
{
	uint64_t dst = ALIGN_DOWN(addr, PAGE_SZ);
	long c = plan_find(&m->plan, dst);
	struct plan_region *r;
	struct chunk *ch;
	bool by_page, alone, data = false;
	size_t pg;
	int ret;

	if (c < 0)	/* not ours: let the thread retry */
		return uffd_wake(m->uffd, dst, PAGE_SZ);
	ch = &m->plan.chunks[c];
	r = plan_region_of(&m->plan, (size_t)c);
	pg = (dst - r->dst) / PAGE_SZ;
	/* One page with data needs only its own page-map entry: the
	 * chunk's class is a walk of 512 (~40 us for small pages here), paid
	 * later by whoever moves the rest. So does a small page that may
	 * move alone; a THP moves whole, as one PMD. */
	by_page = fault_by_page(m);
	alone = !by_page && fault_moves_page(m, (size_t)c,
					     r->src + pg * PAGE_SZ);
	if (by_page || alone)
		data = core_page_has_data(m, r, (size_t)c, pg, alone);
	if (!data) {
		ret = core_classify(m, (size_t)c, true);
		if (ret)
			return ret;	/* never a zero page for an unreadable source */
		alone = alone && core_wants_move(m, ch) &&
			!(load_acquire(&ch->flags) & CHUNK_THP);
	}

	if (!plan_page_wanted(r, pg)) {
		ret = core_fault_zero(m, r, pg);
	} else if (load_acquire(&ch->state) == CHUNK_DONE) {
		ret = uffd_wake(m->uffd, dst, PAGE_SZ);
	} else if (alone) {
		ret = fault_move_page(m, r, (size_t)c, pg);
	} else if (!by_page && fault_takes_chunk(m, ch)) {
		/* A chunk another thread holds is finished soon, and its
		 * fill wakes this thread; the caller keeps the fault and
		 * goes on reading events, which that thread may need. */
		if (!core_claim(m, (size_t)c))
			return -EAGAIN;
		ret = m->pull ? mover_pull_chunk(m, (size_t)c, true) :
				mover_push_chunk(m, (size_t)c, true);
		if (!ret)
			ret = uffd_wake(m->uffd, dst, PAGE_SZ);
	} else {
		ret = fault_page(m, r, (size_t)c, pg);
	}
	if (ret == -ENOENT)	/* unregistered or unmapped meanwhile: the */
		ret = 0;	/* thread retries without us */
	if (!m->pull)
		m->fault_end_ns = now_ns();
	if (!ret)
		count_add(&m->cnt.faults, 1);
	return ret;
}
