// SPDX-License-Identifier: MIT
/*
 * What the source holds, as the transfer core learns it: each chunk is
 * classified once from the page tables (THP, movable, pinned, which pages
 * have data), and ahead of the movers one PAGEMAP_SCAN per window of
 * chunks finds the empty ones and finishes them at once, so that a sparse
 * guest costs what it holds, not its size. doc/design.md, "The transfer
 * core".
 */
#include <sched.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "classify.h"
#include "mover_core.h"
#include "util.h"

static bool overlaps_pinned(const struct mover *m, uint64_t start,
			    uint64_t end)
{
	size_t i;

	for (i = 0; i < m->npinned; i++)
		if (start < m->pinned[i].end && m->pinned[i].start < end)
			return true;
	return false;
}

/*
 * Once per chunk (or window): true for the one thread that takes @state
 * from CLS_NEW to CLS_BUSY, and must make it CLS_READY; false for the
 * others, which find it ready on return (when they @wait).
 */
static bool once_claim(uint8_t *state, bool wait)
{
	uint8_t expect;

	for (;;) {
		expect = CLS_NEW;
		if (load_acquire(state) == CLS_READY)
			return false;
		if (__atomic_compare_exchange_n(state, &expect, CLS_BUSY,
						false, __ATOMIC_ACQ_REL,
						__ATOMIC_ACQUIRE))
			return true;
		if (!wait)
			return false;
		/* Busy: classified soon, or back to new after a fault's
		 * look at one page (core_page_has_data()). */
		sched_yield();
	}
}

/*
 * Whether the chunk can arrive as one THP. Push: it is one in the source
 * and may move as one PMD. Pull: every page has data, so the read into an
 * aligned staging slot makes a THP there whatever the source had.
 */
static bool chunk_thp(const struct mover *m, const struct plan_region *r,
		      uint64_t start, const struct chunk_class *cls, size_t n)
{
	if (!IS_ALIGNED(r->dst + (start - r->src), CHUNK_SZ))
		return false;
	if (m->pull)
		return r->thp && n == CHUNK_PAGES && cls->populated == n;
	return cls->thp;
}

/*
 * A page a chunk lacks is a hole, or not mapped in the source at all (the
 * old VMM unmapped it, or named a wrong address): its data is gone, never
 * to be taken for zeros. The page map tells, where PAGEMAP_SCAN reports
 * which pages VMAs cover. Without it, pulling, a read does (holes read as
 * zeros; on a kernel without the shared zero page it allocates memory in
 * the source); pushing, the chunk is taken for holes.
 */
static bool source_maps(struct mover *m, uint64_t start, uint64_t end)
{
	uint64_t mapped_end;
	char byte;

	if (m->pm.scan)
		return !pm_mapped_end(&m->pm, start, end, &mapped_end) &&
		       mapped_end == end;
	if (!m->pull)
		return true;
	return !core_pull_probe(m, start, &byte) &&
	       !core_pull_probe(m, end - PAGE_SZ, &byte);
}

/* Chunk @c of @n pages holds @populated of them: publish its class and
 * count it (it was counted as ch->counted pages before). */
static void publish(struct mover *m, struct chunk *ch, size_t n,
		    size_t populated, unsigned int flags)
{
	/* A fault may have marked it CHUNK_TOUCHED already. */
	__atomic_fetch_or(&ch->flags, flags, __ATOMIC_RELEASE);
	count_add(&m->cnt.populated,
		  populated * PAGE_SZ - ch->counted * PAGE_SZ);
	count_add(&m->cnt.skipped, (n - populated) * PAGE_SZ);
	if (flags & CHUNK_PINNED)
		count_add(&m->cnt.pinned_skipped, populated * PAGE_SZ);
	store_release(&ch->cls_state, CLS_READY);
}

/*
 * Read the @n pages at @start into @flags and decide them. A page a fault
 * found with data (core_page_has_data()) was sent, or is being sent: it
 * has data, even if it is gone since (moved alone, or a reclaimed
 * MADV_FREE page), so that the counts add up; and gone from the source,
 * it does not make the rest copy.
 */
/* Exclusivity matters only while MOVE is still a candidate. */
static bool may_still_move(const struct mover *m)
{
	return !m->pull && m->mode != UFFDMOVE_MODE_COPY &&
	       load_acquire(&m->prim) != PRIM_COPY;
}

static void read_class(struct mover *m, size_t c, uint64_t start, size_t n,
		       bool pinned, bool reader, uint8_t *flags,
		       struct chunk_class *cls)
{
	const struct plan_region *r = plan_region_of(&m->plan, c);
	bool excl = may_still_move(m);
	uint64_t bits[CHUNK_PAGES / 64];
	size_t i, first = (start - r->src) / PAGE_SZ;
	struct split_wait wait = { .seen = core_neighbour_moves(m, c) };
	bool last_look = false;

again:
	if (pm_flags(&m->pm, start, n, excl, flags)) {
		/* Unknown: copy everything, which is always correct. */
		memset(flags, PG_PRESENT, n);
	}
	bits_get(&r->populated, first, bits, n);
	for (i = 0; i < n; i++)
		if ((bits[i / 64] >> (i % 64) & 1) && !pg_populated(flags[i]))
			flags[i] = PG_PRESENT | PG_EXCL;
	classify_chunk(flags, n, pinned, cls);
	/*
	 * A MOVE that splits a large folio holds its pages under migration
	 * entries meanwhile, which read as swapped, and may show them mapped
	 * more than once: a folio that straddles two chunks (an mremap() by
	 * less than 2 MiB) shows them in this chunk while a MOVE runs in the
	 * other. Look again while core_split_wait() says, and once after,
	 * before copying.
	 */
	if (excl && !cls->movable && !last_look) {
		uint8_t f = flags[cls->first_unmovable];

		if ((f & PG_SWAPPED) || ((f & PG_PRESENT) && !(f & PG_EXCL))) {
			if (!core_split_wait(m, c, &wait, reader))
				last_look = true;
			goto again;
		}
	}
}

/*
 * A THP chunk to MOVE within one process that its window's scan, a few
 * milliseconds ago, saw mapped whole by one huge page: its class is that,
 * with no page-map read of its own (two syscalls per chunk, a quarter of a
 * THP chunk's time here). The kernel checks the rest as it moves: a page
 * since pinned or shared is refused (EBUSY), and a page since gone is
 * found missing (ENOENT); mover_fill.c copies the first and fills the
 * second with zeros, as when a chunk's own class goes stale. A chunk split
 * since moves page by page: mover_check_arrivals() finds it in the target
 * before DONE, which only one process can read. Not for a declared pinned
 * range, nor once the session copies (no exclusivity to take for granted).
 */
static bool seen_huge(const struct mover *m, const struct chunk *ch,
		      size_t n, bool pinned)
{
	return (load_acquire(&ch->flags) & CHUNK_SEEN_HUGE) && m->same_mm &&
	       n == CHUNK_PAGES && !pinned && may_still_move(m);
}

int core_classify(struct mover *m, size_t c, bool reader)
{
	struct chunk *ch = &m->plan.chunks[c];
	struct plan_region *r = plan_region_of(&m->plan, c);
	uint8_t flags[CHUNK_PAGES];
	uint64_t bits[CHUNK_PAGES / 64];
	struct chunk_class cls;
	uint64_t start, end;
	size_t i, n, first;
	bool pinned, trusted;

	plan_chunk_range(&m->plan, c, &start, &end);
	if (!once_claim(&ch->cls_state, true))
		goto out;
	n = (end - start) / PAGE_SZ;
	first = (start - r->src) / PAGE_SZ;
	pinned = overlaps_pinned(m, start, end);
	trusted = seen_huge(m, ch, n, pinned);
	if (trusted) {
		memset(flags, PG_PRESENT | PG_EXCL | PG_HUGE, n);
		classify_chunk(flags, n, pinned, &cls);
	} else {
		read_class(m, c, start, n, pinned, reader, flags, &cls);
	}
	memset(bits, 0, sizeof(bits));
	for (i = 0; i < n; i++)
		if (pg_populated(flags[i]))
			bits[i / 64] |= 1ULL << (i % 64);
	bits_or(&r->populated, first, bits, n);
	publish(m, ch, n, cls.populated,
		(chunk_thp(m, r, start, &cls, n) ? CHUNK_THP : 0) |
		(cls.movable ? CHUNK_MOVABLE : 0) |
		(pinned ? CHUNK_PINNED : 0) |
		(trusted ? CHUNK_HUGE_TRUSTED : 0) |
		((m->pm.scan ? cls.populated < n : !cls.populated) &&
		 !source_maps(m, start, end) ?
		 CHUNK_UNMAPPED : 0));
out:
	if (!(load_acquire(&ch->flags) & CHUNK_UNMAPPED))
		return 0;
	return mover_fail(m, -EFAULT,
			  "the source maps nothing at 0x%llx, which it said is guest RAM",
			  (unsigned long long)start);
}

/*
 * Before chunk @c is classified: does page @pg of @r hold data (and, with
 * @to_move, may it move alone: a small page, exclusively ours)? Then it is
 * marked wanted, under the chunk's classification claim, so that the
 * class counts it whatever the page map says later. False when the class
 * is known, or being made, or the page is a hole (the class counts those).
 */
bool core_page_has_data(struct mover *m, struct plan_region *r, size_t c,
			size_t pg, bool to_move)
{
	struct chunk *ch = &m->plan.chunks[c];
	uint8_t flags;
	bool data;

	if (!once_claim(&ch->cls_state, false))
		return false;
	data = !pm_flags(&m->pm, r->src + pg * PAGE_SZ, 1, to_move, &flags) &&
	       pg_populated(flags) &&
	       (!to_move || (pg_movable(flags) && !(flags & PG_HUGE)));
	if (data) {
		bit_set(&r->populated, pg);
		__atomic_fetch_or(&ch->flags, CHUNK_WANTED, __ATOMIC_RELEASE);
	}
	store_release(&ch->cls_state, CLS_NEW);
	return data;
}

/*
 * May a fault move source page @src alone? MOVE is still on the table,
 * and the page is in no range the VMM declared pinned; the kernel refuses
 * what is pinned anyway (EBUSY), and the chunk's usual way takes over.
 */
bool core_page_may_move(const struct mover *m, uint64_t src)
{
	return !m->pull && m->mode != UFFDMOVE_MODE_COPY &&
	       mover_committed(m) && load_acquire(&m->prim) != PRIM_COPY &&
	       !overlaps_pinned(m, src, src + PAGE_SZ);
}

/* ------------------------------------------------------ scanning ahead */

struct window {
	struct mover *m;
	size_t first, n;			/* its chunks */
	const struct plan_region *r;		/* the one being scanned */
	uint16_t pages[SCAN_WINDOW_CHUNKS];	/* populated, per chunk */
	bool huge[SCAN_WINDOW_CHUNKS];		/* one huge page maps it */
};

static void count_pages(void *arg, uint64_t start, uint64_t end,
			uint8_t flags)
{
	struct window *w = arg;
	uint64_t a, next;
	size_t c;

	for (a = start; a < end; a = next) {
		next = MIN(ALIGN_DOWN(a, CHUNK_SZ) + CHUNK_SZ, end);
		c = plan_chunk_of_src(w->r, a);
		if (c < w->first || c >= w->first + w->n)
			continue;
		w->pages[c - w->first] += (uint16_t)((next - a) / PAGE_SZ);
		if (next - a == CHUNK_SZ && pg_anon_huge(flags))
			w->huge[c - w->first] = true;
	}
}

/* Populated pages of each chunk of @w: one scan per region in it. */
static int count_window(struct window *w)
{
	const struct plan *p = &w->m->plan;
	size_t c = w->first, last;
	uint64_t start, end, unused;
	int ret;

	while (c < w->first + w->n) {
		const struct plan_region *r = plan_region_of(p, c);

		w->r = r;
		last = MIN(r->first_chunk + r->nchunks, w->first + w->n) - 1;
		plan_chunk_range(p, c, &start, &unused);
		plan_chunk_range(p, last, &unused, &end);
		ret = pm_scan_populated(&w->m->pm, start, end - start,
					count_pages, w);
		if (ret)
			return ret;
		c = last + 1;
	}
	return 0;
}

/* Is chunk @i of @w one to look at, and to finish: empty? */
static bool window_empty(const struct window *w, size_t i)
{
	return !w->pages[i];
}

/*
 * Chunks of @w that a fault classifies, or classified, are not ours: they
 * may have arrived and been freed in the source since. Decided once, before
 * the look at what is mapped: a chunk a fault let go of in between must
 * not be finished unlooked at.
 */
static void window_leave_classified(const struct mover *m, struct window *w)
{
	size_t i;

	for (i = 0; i < w->n; i++)
		if (!w->pages[i] &&
		    load_acquire(&m->plan.chunks[w->first + i].cls_state) !=
		    CLS_NEW)
			w->pages[i] = UINT16_MAX;
}

/* With PAGEMAP_SCAN: one look per stretch of empty chunks. */
static bool window_maps_scan(struct mover *m, const struct window *w)
{
	uint64_t start, end, from = 0, mapped_end = 0, unused, lim;
	const struct plan_region *r;
	size_t i, last;

	for (i = 0; i < w->n; i++) {
		if (!window_empty(w, i))
			continue;
		plan_chunk_range(&m->plan, w->first + i, &start, &end);
		if (start >= from && end <= mapped_end)
			continue;	/* seen mapped by the last look */
		/* To the end of this stretch of empty chunks only: past it,
		 * the walk would visit every entry of the page tables of
		 * chunks with data, 512 each for small pages. */
		r = plan_region_of(&m->plan, w->first + i);
		last = i;
		while (last + 1 < w->n &&
		       w->first + last + 1 < r->first_chunk + r->nchunks &&
		       window_empty(w, last + 1))
			last++;
		plan_chunk_range(&m->plan, w->first + last, &unused, &lim);
		from = start;
		if (pm_mapped_end(&m->pm, start, lim, &mapped_end) ||
		    end > mapped_end)
			return false;
	}
	return true;
}

/*
 * Do the source's empty chunks of @w map memory at all (see
 * source_maps())? Without PAGEMAP_SCAN, pulling, one read of a byte at
 * both ends of each; pushing, they are taken for holes.
 */
static bool window_maps(struct mover *m, const struct window *w)
{
	static __thread struct iovec remote[2 * SCAN_WINDOW_CHUNKS];
	static __thread char bytes[2 * SCAN_WINDOW_CHUNKS];
	struct iovec local = { bytes, 0 };
	uint64_t start, end;
	size_t i, n = 0;

	if (m->pm.scan)
		return window_maps_scan(m, w);
	if (!m->pull)
		return true;
	for (i = 0; i < w->n; i++) {
		if (!window_empty(w, i))
			continue;
		plan_chunk_range(&m->plan, w->first + i, &start, &end);
		remote[n++] = (struct iovec){ (void *)(uintptr_t)start, 1 };
		remote[n++] = (struct iovec){
			(void *)(uintptr_t)(end - PAGE_SZ), 1 };
	}
	local.iov_len = n;
	return !n || process_vm_readv(m->pid, &local, 1, remote, n, 0) ==
		     (ssize_t)n;
}

struct finished {
	uint64_t skipped, counted;	/* bytes */
	size_t chunks;
};

/* Chunk @c holds nothing: classified and done, unless a fault got to it
 * first (then it goes the usual way). Counted by the caller, in @f. */
static void finish_empty(struct mover *m, size_t c, struct finished *f)
{
	struct chunk *ch = &m->plan.chunks[c];
	uint64_t start, end;

	if (!once_claim(&ch->cls_state, false))
		return;
	plan_chunk_range(&m->plan, c, &start, &end);
	/* Emptied since a fault sent a page of it: its class counts that.
	 * A flag, not the chunk's 512 bits: a sparse guest has thousands of
	 * empty chunks. */
	if (load_acquire(&ch->flags) & CHUNK_WANTED) {
		store_release(&ch->cls_state, CLS_NEW);
		return;
	}
	__atomic_fetch_or(&ch->flags,
			  overlaps_pinned(m, start, end) ? CHUNK_PINNED : 0,
			  __ATOMIC_RELEASE);
	f->skipped += end - start;
	f->counted += ch->counted * PAGE_SZ;
	store_release(&ch->cls_state, CLS_READY);
	if (!core_claim(m, c))
		return;
	store_release(&ch->state, CHUNK_DONE);
	f->chunks++;
}

static void scan_window(struct mover *m, size_t win)
{
	struct finished f = { 0 };
	struct window w;
	size_t i;

	memset(&w, 0, sizeof(w));
	w.m = m;
	w.first = win * SCAN_WINDOW_CHUNKS;
	w.n = MIN(SCAN_WINDOW_CHUNKS, m->plan.nchunks - w.first);
	/* Unknown, or a source that maps nothing somewhere: every chunk
	 * is classified alone, which finds and reports it. A source that
	 * died may have shown us an empty page map: believe it only if it
	 * is still the one we authenticated after the scan. */
	if (count_window(&w))
		return;
	window_leave_classified(m, &w);
	if (!window_maps(m, &w) || (m->pull && core_source_alive(m)))
		return;
	for (i = 0; i < w.n; i++) {
		if (window_empty(&w, i))
			finish_empty(m, w.first + i, &f);
		else if (w.huge[i])
			__atomic_fetch_or(&m->plan.chunks[w.first + i].flags,
					  CHUNK_SEEN_HUGE, __ATOMIC_RELEASE);
	}
	/* Once per window: these counters are shared by every mover. */
	count_sub(&m->cnt.populated, f.counted);
	count_add(&m->cnt.skipped, f.skipped);
	count_add(&m->cnt.chunks_done, f.chunks);
}

void core_scan_ahead(struct mover *m, size_t c)
{
	size_t win = c / SCAN_WINDOW_CHUNKS;

	if (!once_claim(&m->windows[win], true))
		return;
	scan_window(m, win);
	store_release(&m->windows[win], CLS_READY);
}
