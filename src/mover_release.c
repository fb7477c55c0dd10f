// SPDX-License-Identifier: MIT
/*
 * Freeing as we go: once the target has committed, what is in it need not
 * stay in the source. Pushed, a chunk is freed as soon as our own COPY of
 * it returned; pulled, when the target reports it (RELEASE). Either way
 * each chunk is counted and freed once, declared pinned ranges stay (a
 * device may still write there), and MODE_COPY keeps everything: that is
 * its promise.
 */
#include <sys/mman.h>

#include "mover_core.h"
#include "util.h"

/* The plan region holding source address @a, or NULL. */
static struct plan_region *region_of_src(struct mover *m, uint64_t a)
{
	size_t i;

	for (i = 0; i < m->plan.nregions; i++)
		if (a >= m->plan.regions[i].src &&
		    a < m->plan.regions[i].src + m->plan.regions[i].len)
			return &m->plan.regions[i];
	return NULL;
}

static uint64_t populated(struct mover *m, uint64_t a, uint64_t end)
{
	uint64_t bytes = 0;

	if (pm_count_populated(&m->pm, a, end - a, &bytes))
		bytes = end - a;	/* unknown: an upper bound */
	return bytes;
}

/*
 * Drop [a, end). Guest RAM the VMM locked (mlock(2); QEMU's mem-lock)
 * refuses MADV_DONTNEED, MADV_DONTNEED_LOCKED (Linux 5.18) takes it too.
 * Freeing only saves memory: what cannot be freed stays, and the session
 * goes on.
 */
static bool drop(uint64_t a, uint64_t end)
{
	void *p = (void *)(uintptr_t)a;

	return !madvise(p, end - a, MADV_DONTNEED_LOCKED) ||
	       !madvise(p, end - a, MADV_DONTNEED);
}

/* Free [a, end) but the declared pinned ranges in it; count what went. */
static void free_unpinned(struct mover *m, uint64_t a, uint64_t end)
{
	uint64_t bytes;
	const struct pinned_range *p = m->pinned;
	uint64_t cut;
	size_t i;

	while (a < end) {
		for (i = 0; i < m->npinned && a < end; i++) {
			if (p[i].start <= a && a < p[i].end) {
				a = MIN(p[i].end, end);	/* step over it */
				i = (size_t)-1;		/* and look again */
			}
		}
		if (a >= end)
			break;
		cut = end;
		for (i = 0; i < m->npinned; i++)
			if (p[i].start > a && p[i].start < cut)
				cut = p[i].start;
		bytes = populated(m, a, cut);
		if (drop(a, cut))
			count_add(&m->cnt.released, bytes);
		a = cut;
	}
}

int mover_release(struct mover *m, uint64_t start, uint64_t len,
		  bool reported)
{
	uint64_t a = start, end = start + len, cs, ce, stop;
	struct plan_region *r;
	struct chunk *ch;

	for (; a < end; a = stop) {
		r = region_of_src(m, a);
		if (!r)
			return -EINVAL;
		ch = &m->plan.chunks[plan_chunk_of_src(r, a)];
		plan_chunk_range(&m->plan, (size_t)(ch - m->plan.chunks),
				 &cs, &ce);
		stop = MIN(ce, end);
		/* A chunk reported whole is marked: again, it adds nothing. */
		if (a == cs && stop == ce &&
		    (__atomic_fetch_or(&ch->flags, CHUNK_RELEASED,
				       __ATOMIC_ACQ_REL) & CHUNK_RELEASED))
			continue;
		if (reported)
			count_add(&m->cnt.pulled, populated(m, a, stop));
		if (m->mode != UFFDMOVE_MODE_COPY)
			free_unpinned(m, a, stop);
	}
	return 0;
}

bool mover_frees_pushed(const struct mover *m)
{
	return m->mode == UFFDMOVE_MODE_AUTO && !m->same_mm;
}

/*
 * Pushed: chunk @c was copied into the target. Freed only after the
 * commit: before it the old VMM must be able to take its guest back. The
 * store of DONE before our look at the commit, and mover_commit()'s store
 * before its look at the chunks, make sure one of the two frees it.
 * Within one process MOVE frees what it can, and what it could not move
 * (pinned or shared) stays.
 */
void core_release_chunk(struct mover *m, size_t c)
{
	uint64_t cs, ce;
	int ret;

	if (!mover_frees_pushed(m))
		return;
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (!mover_committed(m))
		return;
	plan_chunk_range(&m->plan, c, &cs, &ce);
	/* Zapping 512 small pages costs a fifth of copying them: queued
	 * for another thread, so that pushing goes on meanwhile. */
	pthread_mutex_lock(&m->lock);
	ret = ranges_add(&m->to_free, cs, ce - cs);
	if (!ret)
		pthread_cond_signal(&m->free_cv);
	pthread_mutex_unlock(&m->lock);
	if (ret)
		mover_release(m, cs, ce - cs, false);
}

bool mover_await_free(struct mover *m)
{
	pthread_mutex_lock(&m->lock);
	while (!m->to_free.n && !mover_stopping(m))
		pthread_cond_wait(&m->free_cv, &m->lock);
	pthread_mutex_unlock(&m->lock);
	return !mover_stopping(m);
}

#define FREE_BATCH	64

bool mover_free_pending(struct mover *m)
{
	struct wire_range r[FREE_BATCH];
	size_t i, n;

	pthread_mutex_lock(&m->lock);
	n = ranges_take(&m->to_free, r, FREE_BATCH);
	pthread_mutex_unlock(&m->lock);
	for (i = 0; i < n; i++)
		mover_release(m, r[i].start, r[i].len, false);
	return n > 0;
}

void mover_release_done(struct mover *m)
{
	size_t c;

	if (!mover_frees_pushed(m) || m->pull)
		return;
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	for (c = 0; c < m->plan.nchunks; c++)
		if (load_acquire(&m->plan.chunks[c].state) == CHUNK_DONE)
			core_release_chunk(m, c);
}
