// SPDX-License-Identifier: MIT
/*
 * The new VMM's end of a handoff (doc/design.md, "The commit"): once DONE
 * came (or, pulling, every chunk is in), check that guest RAM holds what
 * the source announced, then unregister, confirm with FIN and let THP
 * collapse. Counting guest RAM takes milliseconds per GiB, so it runs in
 * a thread of the library's: uffdmove_target_process() stays short.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "pagemap.h"
#include "pull.h"
#include "session.h"
#include "target.h"
#include "util.h"
#include "wake.h"
#include "wire.h"

#define QUERY_TIMEOUT_MS	1000
/* Asked again after 1, 2, 4 ... 64 ms: 127 ms in all. With the VMM's
 * thread at SCHED_FIFO beside the source's reader (test-events
 * unmap-regrow-reported), an UNMAP reached the count up to 7 ms late. */
#define SETTLE_TRIES		8

/* Guest RAM counted at DONE. */
struct here {
	uint64_t bytes;		/* pages mapped */
	uint64_t zeroed_before;	/* pulling: holes zero-filled before */
};

uint64_t target_lazyfreed(void)
{
	unsigned long long pages = 0;
	char line[128];
	FILE *f = fopen("/proc/vmstat", "re");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "pglazyfreed %llu", &pages) == 1)
			break;
	fclose(f);
	return pages;
}

/* After DONE: ask the source for its counters now (it answers with DONE
 * again), and wait a little for them. */
static int query_stats(struct uffdmove_target *t, struct uffdmove_stats *st)
{
	struct wire_msg m = { .type = WIRE_QUERY };
	int ret;

	uint64_t end = now_ns() + QUERY_TIMEOUT_MS * 1000000ULL, now;

	if (session_send(t->sock, &m, -1, QUERY_TIMEOUT_MS))
		return -ECONNRESET;
	/* One deadline for the answer: a source that keeps talking must
	 * not hold the handle any longer. */
	while ((now = now_ns()) < end) {
		ret = session_recv(t->sock, &m,
				   (int)((end - now) / 1000000) + 1, NULL, 0);
		if (ret && ret != -EBADMSG)
			return ret;
		if (!ret && m.type == WIRE_DONE) {
			*st = m.stats;
			return 0;
		}
	}
	return -ETIMEDOUT;
}

/*
 * DONE says every page with data is here: see that it is, before
 * unregistering turns what is missing into zeros. The measure is what the
 * source found as it handed each chunk over (its final bytes_populated:
 * pages may vanish there after ACCEPT, as reclaimed MADV_FREE pages or KSM
 * zero pages do). Pages the guest discarded meanwhile are gone; pages it
 * wrote into holes count as data: this catches pages lost on the way, not
 * a source that lies.
 *
 * A page that is there may be the shared zero page although it had data:
 * splitting a THP maps its zero-filled subpages to it (Linux 6.12), and a
 * MOVE carries that over. So every mapped page counts, less the holes the
 * faults filled with the zero page (bytes_zeroed). A page discarded with
 * uffdmove_target_discard() is one of them (the zero page, or cleared in
 * place): counted again as discarded, as many pages lost went unnoticed
 * (test-input done-short-beside-discard).
 *
 * A page the old VMM freed lazily (MADV_FREE) stays so when it moves, and
 * reclaim may take it here after it arrived: the guest then reads zeros,
 * as MADV_FREE allows, and no event tells. So the measure gives way by as
 * much as the kernel reclaimed of lazily freed memory since the handoff
 * began (vmstat pglazyfreed, system-wide: an upper bound, 0 on a host
 * that does not use MADV_FREE), at most what moved (a pull or a COPY
 * makes pages of its own), and the VMM is warned when that was needed.
 */
static uint64_t done_short(const struct uffdmove_target *t,
			   const struct here *h)
{
	uint64_t have = h->bytes + t->st.bytes_discarded;
	uint64_t want = t->st.bytes_populated +
			(t->pull ? h->zeroed_before : t->st.bytes_zeroed);

	return want > have ? want - have : 0;
}

/* Lazily freed pages reclaimed since the handoff began, read after the
 * count: only when it came up short (0.1 ms here). */
static uint64_t may_vanish(const struct uffdmove_target *t)
{
	return (target_lazyfreed() - t->lazyfreed_start) * PAGE_SZ;
}

/* Holding only with the slack for lazily freed pages is said, at the end
 * (finish()). */
static bool done_holds(struct uffdmove_target *t, const struct here *h)
{
	uint64_t missing = done_short(t, h);

	/* Only pages that moved can arrive lazily freed. */
	if (missing &&
	    (t->pull || missing > MIN(may_vanish(t), t->st.bytes_moved)))
		return false;
	t->lazily_short = missing;
	return true;
}

/* What guest RAM holds: read without the handle's lock (the regions and
 * the pagemap fd stay as they are until the handle is freed). Pulling,
 * our fault thread may still fill holes with the zero page meanwhile: only
 * those filled before the count are in it. */
static int count_here(struct uffdmove_target *t, struct here *h)
{
	uint64_t bytes;
	size_t i;
	int ret = 0;

	h->zeroed_before = t->pull ? pull_zeroed(t) : 0;
	h->bytes = 0;
	for (i = 0; !ret && i < t->nregions; i++) {
		ret = pm_count_present(&t->pm, t->regions[i].addr,
				       t->regions[i].len, &bytes);
		h->bytes += bytes;
	}
	return ret;
}

/*
 * The count misses discards read (and so zapped) but not yet marked by
 * whoever reads the uffd: the source when pushing (a count asked for now
 * has them), our fault thread when pulling. And an munmap() zaps before
 * its UNMAP event is even queued: so ask again a little later, counting
 * again first, before taking a shortfall for pages lost.
 *
 * Called under the handle's lock, which it lets go while it waits for
 * the source or between counts (up to 127 ms, and a second per query):
 * a balloon thread's uffdmove_target_discard() and a stats call must not
 * wait that long. finish_busy() keeps process() away meanwhile.
 */
static int check_done(struct uffdmove_target *t, int counted,
		      struct here *here)
{
	struct uffdmove_stats st;
	int i, ret;

	for (i = 0; !counted; i++) {
		if (done_holds(t, here))
			return 1;
		/* A source that does not answer has nothing more to say. */
		if (t->pull) {
			ret = pull_settle(t);
		} else {
			pthread_mutex_unlock(&t->lock);
			ret = query_stats(t, &st);
			pthread_mutex_lock(&t->lock);
			if (!ret)
				t->st = st;
		}
		if (ret)
			break;
		if (done_holds(t, here))
			return 1;
		if (i == SETTLE_TRIES - 1)
			break;
		pthread_mutex_unlock(&t->lock);
		usleep(1000U << i);
		counted = count_here(t, here);
		pthread_mutex_lock(&t->lock);
	}
	if (counted)
		return target_orphan(t, counted,
				     "reading /proc/self/pagemap at DONE");
	return target_orphan(t, -EPROTO,
		      "the source said DONE, but guest RAM holds fewer bytes than it announced");
}

/* DONE: every page with data is here. Unregistering turns the holes into
 * ordinary zero-fill memory and lets the remaining THP ranges collapse. */
static int finish(struct uffdmove_target *t)
{
	struct wire_msg fin = { .type = WIRE_FIN };

	t->t_end = now_ns();
	keeper_stop(t);
	target_unregister_all(t, t->nregions);
	pull_stop(t);	/* it read the uffd until now: discards never hang */
	/* THP to collapse, and the last RELEASE once the pull's threads are
	 * joined: one whose send found the socket full put its ranges back
	 * after an earlier last RELEASE, and the source kept them. */
	if (t->pull)
		pull_finish(t);
	/* The last word on the counts, with every thread joined: the one
	 * taken at DONE could miss a page the fault thread had just filled
	 * but not counted yet (pull_free() ends the live counts). */
	if (t->pull)
		pull_stats(t, &t->st);
	session_send(t->sock, &fin, -1, 1000);	/* the source may leave now */
	target_close_uffd(t);
	pull_free(t);
	t->state = TGT_DONE;
	if (t->st.bytes_discard_raced)
		err_set(&t->err, 0,
			"warning: %llu bytes discarded with a raw madvise() during the handoff may have been refilled with stale data; discard with uffdmove_target_discard()",
			(unsigned long long)t->st.bytes_discard_raced);
	else if (t->lazily_short)
		err_set(&t->err, 0,
			"warning: guest RAM held %llu bytes less than the source announced, no more than reclaim took of lazily freed (MADV_FREE) memory during the handoff: pages the old VMM had freed so read as zeros",
			(unsigned long long)t->lazily_short);
	/*
	 * THP comes back only now. MADV_COLLAPSE takes the mmap lock for
	 * writing; done during the handoff it queued every fault's COPY
	 * behind it and behind the pushers' 2 MiB copies: fault latency p99
	 * went from ~0.1 ms to ~10 ms here. The chunks are known from the
	 * source's RANGE_DONE reports (or, pulling, our own). The VMM does
	 * not wait for it: stats show thp_collapsed grow.
	 */
	thp_advice_restore(t);
	thp_collapse_start(t);
	return 1;
}

static void *finisher_main(void *arg)
{
	struct uffdmove_target *t = arg;
	struct here here;
	int counted, ret;

	counted = count_here(t, &here);
	pthread_mutex_lock(&t->lock);
	ret = check_done(t, counted, &here);
	if (ret == 1)
		ret = finish(t);
	pthread_mutex_unlock(&t->lock);
	store_release(&t->finisher.ended, true);
	wake_kick(t->finisher.efd);
	return NULL;
}

/* Without a thread of its own, the end is checked in the caller's call. */
static int finish_inline(struct uffdmove_target *t)
{
	struct here here;
	int counted, ret;

	store_release(&t->finisher.here, true);
	counted = count_here(t, &here);
	ret = check_done(t, counted, &here);
	if (ret == 1)
		ret = finish(t);
	store_release(&t->finisher.here, false);
	return ret;
}

/*
 * Under the handle's lock: 0 (the end is being checked), or the end. A
 * caller that may block checks it itself: making a thread took 0.5 ms
 * here, a twentieth of a 1 GiB same-process MOVE.
 */
int finish_start(struct uffdmove_target *t, bool here)
{
	struct target_finisher *f = &t->finisher;
	struct epoll_event ev = { .events = EPOLLIN };

	if (here)
		return finish_inline(t);
	/* Only the end wakes the caller now: the socket, the pull's fd and
	 * the progress timer stay readable while the check runs and would
	 * make it spin. */
	epoll_ctl(t->epfd, EPOLL_CTL_DEL, t->sock, NULL);
	if (t->progress_tfd >= 0)
		epoll_ctl(t->epfd, EPOLL_CTL_DEL, t->progress_tfd, NULL);
	pull_unwatch(t);
	f->efd = wake_open();
	ev.data.fd = f->efd;
	if (f->efd < 0 || epoll_ctl(t->epfd, EPOLL_CTL_ADD, f->efd, &ev) < 0)
		return finish_inline(t);
	store_release(&f->started, true);
	if (pthread_create(&f->thread, NULL, finisher_main, t)) {
		store_release(&f->started, false);
		return finish_inline(t);
	}
	pthread_setname_np(f->thread, "uffdmove-finish");
	return 0;
}

bool finish_busy(struct uffdmove_target *t)
{
	return load_acquire(&t->finisher.here) ||
	       (load_acquire(&t->finisher.started) &&
		!load_acquire(&t->finisher.ended));
}

static void finish_join(struct uffdmove_target *t)
{
	struct target_finisher *f = &t->finisher;

	if (f->started && !f->joined) {
		pthread_join(f->thread, NULL);
		f->joined = true;
	}
}

/* Under the handle's lock: 0 while it runs, else how the handoff ended. */
int finish_result(struct uffdmove_target *t)
{
	if (!load_acquire(&t->finisher.ended))
		return 0;
	finish_join(t);
	return t->state == TGT_DONE ? 1 : t->failure;
}

void finish_free(struct uffdmove_target *t)
{
	struct target_finisher *f = &t->finisher;

	finish_join(t);
	if (f->efd >= 0) {
		epoll_ctl(t->epfd, EPOLL_CTL_DEL, f->efd, NULL);
		close(f->efd);
	}
	f->efd = -1;
}
