// SPDX-License-Identifier: MIT
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "classify.h"
#include "mover.h"
#include "uffd.h"
#include "util.h"

#define LOAD(x)		__atomic_load_n(&(x), __ATOMIC_ACQUIRE)
#define STORE(x, v)	__atomic_store_n(&(x), (v), __ATOMIC_RELEASE)
#define ADD(x, v)	__atomic_fetch_add(&(x), (v), __ATOMIC_RELAXED)

/* EAGAIN backoff for pushers: an event is pending that only the fault
 * thread reads; give it time instead of spinning on the ioctl. */
#define BACKOFF_MIN_US	20
#define BACKOFF_MAX_US	2000
#define EVENTS_WAIT_US	200
#define EAGAIN_SPIN_NS	(50 * 1000)

int mover_init(struct mover *m)
{
	int ret = pthread_mutex_init(&m->lock, NULL);

	if (ret)
		return -ret;
	ret = pthread_cond_init(&m->events_cv, NULL);
	if (!ret) {
		ret = -fills_init(&m->fills);
		if (ret)
			pthread_cond_destroy(&m->events_cv);
	}
	if (ret) {
		pthread_mutex_destroy(&m->lock);
		return -ret;
	}
	m->prim = PRIM_UNDECIDED;
	return 0;
}

void mover_fini(struct mover *m)
{
	fills_fini(&m->fills);
	pthread_cond_destroy(&m->events_cv);
	pthread_mutex_destroy(&m->lock);
	free(m->outbox);
	m->outbox = NULL;
}

int mover_fail(struct mover *m, int err, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&m->lock);
	if (!m->fatal) {
		m->fatal = err;
		va_start(ap, fmt);
		vsnprintf(m->err.msg, sizeof(m->err.msg), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&m->lock);
	STORE(m->stop, true);
	return err;
}

int mover_fatal(struct mover *m)
{
	int ret;

	pthread_mutex_lock(&m->lock);
	ret = m->fatal;
	pthread_mutex_unlock(&m->lock);
	return ret;
}

bool mover_finished(const struct mover *m)
{
	return LOAD(((struct mover *)m)->cnt.chunks_done) == m->plan.nchunks;
}

static bool overlaps_pinned(const struct mover *m, uint64_t start,
			    uint64_t end)
{
	size_t i;

	for (i = 0; i < m->npinned; i++)
		if (start < m->pinned[i].end && m->pinned[i].start < end)
			return true;
	return false;
}

/* Classify chunk @c once; other threads wait for the one doing it. */
static int classify(struct mover *m, size_t c)
{
	struct chunk *ch = &m->plan.chunks[c];
	struct plan_region *r = plan_region_of(&m->plan, c);
	uint8_t flags[CHUNK_PAGES];
	struct chunk_class cls;
	uint64_t start, end;
	size_t i, n, first;
	uint8_t expect = CLS_NEW;
	int ret;

	if (LOAD(ch->cls_state) == CLS_READY)
		return 0;
	if (!__atomic_compare_exchange_n(&ch->cls_state, &expect, CLS_BUSY, false,
					 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
		while (LOAD(ch->cls_state) != CLS_READY)
			sched_yield();
		return 0;
	}

	plan_chunk_range(&m->plan, c, &start, &end);
	n = (end - start) / PAGE_SZ;
	/* Exclusivity matters only while MOVE is still a candidate. */
	ret = pm_flags(&m->pm, start, n,
		       m->mode != UFFDMOVE_MODE_COPY &&
		       LOAD(m->prim) != PRIM_COPY, flags);
	if (ret) {
		/* Unknown: copy everything, which is always correct. */
		memset(flags, PG_PRESENT, n);
	}
	classify_chunk(flags, n, overlaps_pinned(m, start, end), &cls);

	first = (start - r->src) / PAGE_SZ;
	for (i = 0; i < n; i++)
		if (pg_populated(flags[i]))
			bit_set(r->populated, first + i);
	ch->flags = (cls.thp && IS_ALIGNED(r->dst + (start - r->src),
					   CHUNK_SZ) ? CHUNK_THP : 0) |
		    (cls.movable ? CHUNK_MOVABLE : 0) |
		    (overlaps_pinned(m, start, end) ? CHUNK_PINNED : 0);
	ADD(m->cnt.populated, cls.populated * PAGE_SZ - ch->counted * PAGE_SZ);
	ADD(m->cnt.skipped, (n - cls.populated) * PAGE_SZ);
	if (ch->flags & CHUNK_PINNED)
		ADD(m->cnt.pinned_skipped, cls.populated * PAGE_SZ);
	STORE(ch->cls_state, CLS_READY);
	return 0;
}

struct count_ctx {
	struct mover *m;
	struct plan_region *r;
};

static void count_run(void *arg, uint64_t start, uint64_t end)
{
	struct count_ctx *ctx = arg;
	uint64_t a, next;

	ctx->m->cnt.populated += end - start;
	for (a = start; a < end; a = next) {
		next = MIN(ALIGN_DOWN(a, CHUNK_SZ) + CHUNK_SZ, end);
		ctx->m->plan.chunks[plan_chunk_of_src(ctx->r, a)].counted +=
			(uint16_t)((next - a) / PAGE_SZ);
	}
}

int mover_count_populated(struct mover *m)
{
	struct count_ctx ctx = { .m = m };
	size_t i;
	int ret;

	m->cnt.populated = 0;
	for (i = 0; i < m->plan.nregions; i++) {
		ctx.r = &m->plan.regions[i];
		ret = pm_scan_populated(&m->pm, ctx.r->src, ctx.r->len,
					count_run, &ctx);
		if (ret)
			return ret;
	}
	return 0;
}

static bool claim(struct mover *m, size_t c)
{
	uint8_t expect = CHUNK_PENDING;

	return __atomic_compare_exchange_n(&m->plan.chunks[c].state, &expect,
					   CHUNK_CLAIMED, false,
					   __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

long mover_next_chunk(struct mover *m)
{
	size_t c;

	for (;;) {
		pthread_mutex_lock(&m->lock);
		if (m->urgent_head == m->urgent_tail) {
			pthread_mutex_unlock(&m->lock);
			break;
		}
		c = m->urgent[m->urgent_head++ % URGENT_MAX];
		pthread_mutex_unlock(&m->lock);
		if (claim(m, c))
			return (long)c;
	}
	for (;;) {
		c = __atomic_fetch_add(&m->cursor, 1, __ATOMIC_RELAXED);
		if (c >= m->plan.nchunks)
			return -1;
		if (claim(m, c))
			return (long)c;
	}
}

static void make_urgent(struct mover *m, size_t c)
{
	pthread_mutex_lock(&m->lock);
	if (m->urgent_tail - m->urgent_head < URGENT_MAX)
		m->urgent[m->urgent_tail++ % URGENT_MAX] = c;
	pthread_mutex_unlock(&m->lock);
}

/* Whether this chunk goes by MOVE; decides nothing yet. */
static bool wants_move(const struct mover *m, const struct chunk *ch)
{
	struct mover *mm = (struct mover *)m;

	return m->mode != UFFDMOVE_MODE_COPY && LOAD(mm->committed) &&
	       LOAD(mm->prim) != PRIM_COPY && (ch->flags & CHUNK_MOVABLE);
}

static void decide(struct mover *m, int prim, uint32_t why)
{
	int expect = PRIM_UNDECIDED;

	if (__atomic_compare_exchange_n(&m->prim, &expect, prim, false,
					__ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE) &&
	    prim == PRIM_COPY)
		STORE(m->why_not_move, why);
}

void mover_events_read(struct mover *m)
{
	__atomic_fetch_add(&m->events_read, 1, __ATOMIC_RELEASE);
	if (!__atomic_load_n(&m->events_waiters, __ATOMIC_ACQUIRE))
		return;
	pthread_mutex_lock(&m->lock);
	pthread_cond_broadcast(&m->events_cv);
	pthread_mutex_unlock(&m->lock);
}

/*
 * EAGAIN: an event is pending that only the fault thread reads. Wait until
 * it has read events since @seen (then try again at once), or a short
 * while: a steady stream of discards must not slow pushing down.
 */
static void wait_events_read(struct mover *m, uint64_t seen)
{
	struct timespec until;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_nsec += EVENTS_WAIT_US * 1000;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&m->lock);
	m->events_waiters++;
	while (LOAD(m->events_read) == seen && !LOAD(m->stop))
		if (pthread_cond_timedwait(&m->events_cv, &m->lock, &until))
			break;
	m->events_waiters--;
	pthread_mutex_unlock(&m->lock);
}

static void backoff(unsigned int *us)
{
	usleep(*us);
	*us = MIN(*us * 2, BACKOFF_MAX_US);
}

/* MODE_MOVE promised zero-copy; the kernel refused a page (pinned or
 * shared). The chunk is still copied so the guest loses nothing. */
static void record_move_failure(struct mover *m, const struct plan_region *r,
				size_t pos)
{
	pthread_mutex_lock(&m->lock);
	if (!m->move_failure) {
		m->move_failure = -EBUSY;
		if (!m->fatal)
			snprintf(m->err.msg, sizeof(m->err.msg),
				 "MODE_MOVE: the kernel refused to move source page 0x%llx (pinned or shared, EBUSY); it was copied instead; declare it with uffdmove_source_declare_pinned() or use MODE_AUTO",
				 (unsigned long long)(r->src + pos * PAGE_SZ));
	}
	pthread_mutex_unlock(&m->lock);
}

/*
 * Hand over the wanted pages [pos, end) of region @r (page indexes) with
 * one ioctl per run. *@moving says MOVE; it is cleared when the kernel
 * refuses and the rest goes by COPY. *@whole is cleared when a page was
 * already there (a fault copied it): a THP then did not move as one.
 */
static int transfer(struct mover *m, struct plan_region *r, size_t *at,
		    size_t end, bool *moving, bool *whole, bool may_wait)
{
	size_t pos = *at;
	unsigned int delay = BACKOFF_MIN_US;
	uint64_t spin_until = 0;
	size_t run_end, done;
	bool one = false;	/* page by page, see -ENOENT */
	int ret;

	while (!LOAD(m->stop) && plan_next_run(r, &pos, end, &run_end)) {
		uint64_t off, seen = LOAD(m->events_read);
		unsigned int fill;
		size_t len;

		/* Published, then the discard bits once more (fills.h). */
		fill = fills_begin(&m->fills, r->dst + pos * PAGE_SZ,
				   r->dst + run_end * PAGE_SZ);
		if (!plan_next_run(r, &pos, run_end, &run_end)) {
			fills_end(&m->fills, fill);
			continue;
		}
		off = pos * PAGE_SZ;
		len = one ? PAGE_SZ : (run_end - pos) * PAGE_SZ;
		if (*moving)
			ret = uffd_move(m->uffd, r->dst + off, r->src + off,
					len, UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES,
					&done);
		else
			ret = uffd_copy(m->uffd, r->dst + off,
					(void *)(uintptr_t)(r->src + off), len,
					0, &done);
		fills_end(&m->fills, fill);
		done = ALIGN_DOWN(done, PAGE_SZ);
		ADD(*(*moving ? &m->cnt.moved : &m->cnt.copied), done);
		pos += done / PAGE_SZ;
		if (*moving && done)
			decide(m, PRIM_MOVE, UFFDMOVE_WHY_USED);

		switch (ret) {
		case 0:
			delay = BACKOFF_MIN_US;
			spin_until = 0;
			one = false;
			continue;
		case -EEXIST:	/* a racing fault put this page there */
			uffd_wake(m->uffd, r->dst + pos * PAGE_SZ, PAGE_SZ);
			pos++;
			*whole = false;
			continue;
		case -EAGAIN:
			/* With progress it only stopped early (the next page
			 * is there: EEXIST next time); without, an event is
			 * pending in the target. */
			if (done)
				continue;
			ADD(m->cnt.eagain, 1);
			/*
			 * The discarding thread lifts the block only once it
			 * runs again after the event was read, and a madvise
			 * loop blocks again microseconds later: retry in a
			 * short spin to hit that window, then wait for reads.
			 */
			if (!spin_until)
				spin_until = now_ns() + EAGAIN_SPIN_NS;
			if (now_ns() < spin_until)
				continue;
			spin_until = 0;
			if (!may_wait) {	/* the caller reads events */
				*at = pos;
				return -EAGAIN;
			}
			wait_events_read(m, seen);
			continue;
		case -ENOENT:	/* the target unmapped it: nothing to fill */
			if (*moving)
				break;
			/* Before its commit (or before we read its GO) a
			 * target unregisters only to give the guest back, or
			 * an event tells why: no page there is a discard. Its
			 * messages and events decide; try again meanwhile. */
			if (!LOAD(m->committed)) {
				if (!may_wait) {
					*at = pos;
					return -EAGAIN;
				}
				backoff(&delay);
				continue;
			}
			/* A run across two of the target's mappings (an
			 * mprotect() split guest RAM) is refused whole: go
			 * page by page, and only a page refused alone is not
			 * mapped any more (its UNMAP event says so too). */
			if (len > PAGE_SZ) {
				one = true;
				continue;
			}
			plan_discard(&m->plan, r->dst + pos * PAGE_SZ,
				     PAGE_SZ);
			pos++;
			continue;
		case -ESRCH:
			return mover_fail(m, -ESRCH,
					  "target process exited during the handoff");
		default:
			break;
		}
		if (*moving && (ret == -EBUSY || ret == -EINVAL)) {
			/* Pinned or shared after all, or cross-mm: copy. */
			if (ret == -EINVAL && !m->same_mm)
				decide(m, PRIM_COPY, UFFDMOVE_WHY_CROSS_MM);
			if (ret == -EBUSY) {
				ADD(m->cnt.move_ebusy, 1);
				if (m->mode == UFFDMOVE_MODE_MOVE)
					record_move_failure(m, r, pos);
			}
			*moving = false;
			continue;
		}
		return mover_fail(m, ret,
				  "%s of 0x%llx+%zu into the target failed: %s",
				  *moving ? "UFFDIO_MOVE" : "UFFDIO_COPY",
				  (unsigned long long)(r->dst + pos * PAGE_SZ),
				  len, strerror(-ret));
	}
	return mover_fatal(m);
}

void mover_outbox_add(struct mover *m, uint64_t start, uint64_t len)
{
	struct wire_range *last;

	pthread_mutex_lock(&m->lock);
	last = m->outbox_n ? &m->outbox[m->outbox_n - 1] : NULL;
	if (last && last->start + last->len == start) {
		last->len += len;
	} else {
		if (m->outbox_n == m->outbox_cap) {
			size_t cap = m->outbox_cap ? m->outbox_cap * 2 : 64;
			void *p = realloc(m->outbox, cap * sizeof(*m->outbox));

			if (!p) {	/* the target's final pass collapses it */
				pthread_mutex_unlock(&m->lock);
				return;
			}
			m->outbox = p;
			m->outbox_cap = cap;
		}
		m->outbox[m->outbox_n++] = (struct wire_range){ start, len };
	}
	pthread_mutex_unlock(&m->lock);
}

size_t mover_take_ranges(struct mover *m, struct wire_range *out, size_t cap)
{
	size_t n;

	pthread_mutex_lock(&m->lock);
	n = MIN(cap, m->outbox_n);
	if (!n) {
		pthread_mutex_unlock(&m->lock);
		return 0;
	}
	memcpy(out, m->outbox, n * sizeof(*out));
	memmove(m->outbox, m->outbox + n,
		(m->outbox_n - n) * sizeof(*m->outbox));
	m->outbox_n -= n;
	pthread_mutex_unlock(&m->lock);
	return n;
}

int mover_push_chunk(struct mover *m, size_t c, bool reader)
{
	struct chunk *ch = &m->plan.chunks[c];
	struct plan_region *r = plan_region_of(&m->plan, c);
	uint64_t start, end;
	bool moving, whole = !ch->resume;
	size_t first, pos;
	int ret;

	classify(m, c);
	plan_chunk_range(&m->plan, c, &start, &end);
	moving = wants_move(m, ch);
	first = (start - r->src) / PAGE_SZ;
	pos = first + ch->resume;
	ret = transfer(m, r, &pos, (end - r->src) / PAGE_SZ, &moving, &whole,
		       !reader);
	if (ret == -EAGAIN) {
		/* Give the chunk back, to go on where it stopped once the
		 * events are read: no page is handed over twice. */
		ch->resume = (uint16_t)(pos - first);
		STORE(ch->state, CHUNK_PENDING);
		make_urgent(m, c);
	}
	if (ret)
		return ret;
	if (ch->flags & CHUNK_THP) {
		/* A PMD moved whole stays huge; anything else arrived as
		 * 4 KiB pages and the target collapses it again. */
		bool pmd = moving && whole;

		ADD(*(pmd ? &m->cnt.thp_moved : &m->cnt.thp_copied), 1);
		/* Collapsing would allocate what the target discarded. */
		if (!pmd && r->thp &&
		    !plan_any_discarded(r, first, (end - r->src) / PAGE_SZ))
			mover_outbox_add(m, r->dst + (start - r->src), CHUNK_SZ);
	}
	STORE(ch->state, CHUNK_DONE);
	ADD(m->cnt.chunks_done, 1);
	return 0;
}

/* Resolve a page the source has no data for (hole or discarded). */
static int fault_zero(struct mover *m, struct plan_region *r, size_t pg)
{
	uint64_t dst = r->dst + pg * PAGE_SZ;
	size_t done;
	int ret = uffd_zeropage(m->uffd, dst, PAGE_SZ, &done);

	if (ret == -EEXIST)
		return uffd_wake(m->uffd, dst, PAGE_SZ);
	if (ret)
		return ret;
	ADD(m->cnt.zeroed, PAGE_SZ);
	if (!bit_test(r->discarded, pg))
		__atomic_fetch_sub(&m->cnt.skipped, PAGE_SZ, __ATOMIC_RELAXED);
	return 0;
}

int mover_fault(struct mover *m, uint64_t addr)
{
	uint64_t dst = ALIGN_DOWN(addr, PAGE_SZ);
	long c = plan_find(&m->plan, dst);
	struct plan_region *r;
	struct chunk *ch;
	size_t pg, done;
	int ret;

	if (c < 0)	/* not ours: let the thread retry */
		return uffd_wake(m->uffd, dst, PAGE_SZ);
	ch = &m->plan.chunks[c];
	r = plan_region_of(&m->plan, (size_t)c);
	pg = (dst - r->dst) / PAGE_SZ;
	classify(m, (size_t)c);

	if (!plan_page_wanted(r, pg))
		ret = fault_zero(m, r, pg);
	else if (LOAD(ch->state) == CHUNK_DONE)
		ret = uffd_wake(m->uffd, dst, PAGE_SZ);
	else if (wants_move(m, ch)) {
		/* Moving a whole chunk costs microseconds and keeps a THP
		 * whole. A chunk a pusher holds is finished soon, and its
		 * MOVE wakes this thread; the caller keeps the fault and
		 * goes on reading events, which the pusher may need. */
		if (!claim(m, (size_t)c))
			return -EAGAIN;
		ret = mover_push_chunk(m, (size_t)c, true);
		if (!ret)
			ret = uffd_wake(m->uffd, dst, PAGE_SZ);
	} else {
		/* Copy just this page so the thread runs at once; the rest
		 * of its chunk is pushed next. Published first (fills.h). */
		unsigned int fill = fills_begin(&m->fills, dst, dst + PAGE_SZ);

		ret = plan_page_wanted(r, pg) ?
		      uffd_copy(m->uffd, dst,
				(void *)(uintptr_t)(r->src + pg * PAGE_SZ),
				PAGE_SZ, 0, &done) : -ENODATA;
		fills_end(&m->fills, fill);
		if (ret == -ENODATA)	/* discarded just now */
			ret = fault_zero(m, r, pg);
		else if (ret == -EEXIST)
			ret = uffd_wake(m->uffd, dst, PAGE_SZ);
		else if (!ret)
			ADD(m->cnt.copied, PAGE_SZ);
		if (!ret && LOAD(ch->state) == CHUNK_PENDING)
			make_urgent(m, (size_t)c);
	}
	if (ret == -ENOENT)	/* unregistered or unmapped meanwhile: the */
		ret = 0;	/* thread retries without us */
	if (!ret)
		ADD(m->cnt.faults, 1);
	return ret;
}

void mover_stats(const struct mover *m, struct uffdmove_stats *st)
{
	struct mover *mm = (struct mover *)m;

	memset(st, 0, sizeof(*st));
	st->bytes_total = m->plan.bytes_total;
	st->bytes_populated = LOAD(mm->cnt.populated);
	st->bytes_moved = LOAD(mm->cnt.moved);
	st->bytes_copied = LOAD(mm->cnt.copied);
	st->bytes_zeroed = LOAD(mm->cnt.zeroed);
	st->bytes_skipped = LOAD(mm->cnt.skipped);
	st->bytes_discarded = LOAD(mm->cnt.discarded);
	pthread_mutex_lock(&mm->fills.lock);
	st->bytes_discard_raced = mm->fills.raced;
	pthread_mutex_unlock(&mm->fills.lock);
	st->faults = LOAD(mm->cnt.faults);
	st->fault_ns_p50 = hist_quantile(&m->lat, 0.50);
	st->fault_ns_p99 = hist_quantile(&m->lat, 0.99);
	st->fault_ns_max = LOAD(mm->lat.max);
	st->thp_moved = LOAD(mm->cnt.thp_moved);
	st->thp_copied = LOAD(mm->cnt.thp_copied);
	st->move_ebusy = LOAD(mm->cnt.move_ebusy);
	st->pinned_skipped = LOAD(mm->cnt.pinned_skipped);
	st->eagain_retries = LOAD(mm->cnt.eagain);
	switch (LOAD(mm->prim)) {
	case PRIM_MOVE:
		st->primitive = UFFDMOVE_PRIM_MOVE;
		break;
	case PRIM_COPY:
		st->primitive = UFFDMOVE_PRIM_COPY;
		st->move_unused_reason = LOAD(mm->why_not_move);
		break;
	default:	/* never tried: no page could have moved */
		st->primitive = UFFDMOVE_PRIM_COPY;
		st->move_unused_reason = UFFDMOVE_WHY_NOT_MOVABLE;
		break;
	}
}
