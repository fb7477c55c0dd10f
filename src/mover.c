// SPDX-License-Identifier: MIT
/*
 * The transfer core's bookkeeping: the plan and who holds which chunk, the
 * queue of urgent chunks, counters, the first fatal error, and the THP
 * ranges the target may collapse. The fill paths (mover_fill.c) do the
 * moving; drivers (run.c) call mover.h only. See doc/design.md, "The
 * transfer core".
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mover_core.h"
#include "stage.h"
#include "util.h"

#define EVENTS_WAIT_US	200
#define CHUNK_WAIT_US	1000	/* the tail: a given-back chunk's longest wait */


int mover_setup(struct mover *m, const struct mover_config *cfg,
		struct err_buf *err)
{
	int ret;

	memset(m, 0, sizeof(*m));
	m->uffd = cfg->uffd;
	m->uffd_borrowed = cfg->pull_pid != 0;
	m->pidfd = cfg->pull_pid ? cfg->pull_pidfd : -1;
	m->pm.fd = -1;
	m->edge_lock = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
	if (pthread_mutex_init(&m->lock, NULL))
		return err_set(err, ENOMEM, "pthread_mutex_init failed");
	if (pthread_cond_init(&m->events_cv, NULL)) {
		pthread_mutex_destroy(&m->lock);
		return err_set(err, ENOMEM, "pthread_cond_init failed");
	}
	if (pthread_cond_init(&m->chunk_cv, NULL)) {
		pthread_cond_destroy(&m->events_cv);
		pthread_mutex_destroy(&m->lock);
		return err_set(err, ENOMEM, "pthread_cond_init failed");
	}
	if (pthread_cond_init(&m->free_cv, NULL)) {
		pthread_cond_destroy(&m->chunk_cv);
		pthread_cond_destroy(&m->events_cv);
		pthread_mutex_destroy(&m->lock);
		return err_set(err, ENOMEM, "pthread_cond_init failed");
	}
	if (fills_init(&m->fills)) {
		pthread_cond_destroy(&m->free_cv);
		pthread_cond_destroy(&m->chunk_cv);
		pthread_cond_destroy(&m->events_cv);
		pthread_mutex_destroy(&m->lock);
		return err_set(err, ENOMEM, "fills: pthread_mutex_init failed");
	}
	m->ready = true;
	m->mode = cfg->mode;
	m->same_mm = cfg->same_mm;
	m->pinned = cfg->pinned;
	m->npinned = cfg->npinned;
	m->prim = PRIM_UNDECIDED;
	m->quiet_wait_us = QUIET_WAIT_US;
	if (cfg->mode == UFFDMOVE_MODE_COPY) {
		m->prim = PRIM_COPY;
		m->why_not_move = UFFDMOVE_WHY_MODE_COPY;
	} else if (!cfg->move_offered) {
		m->prim = PRIM_COPY;
		m->why_not_move = UFFDMOVE_WHY_NO_FEATURE;
	}
	m->pull = cfg->pull_pid != 0;
	m->pid = cfg->pull_pid;
	m->fault_policy = cfg->fault_policy;
	m->own_pm = cfg->own_pm;
	m->fault_rate = cfg->fault_rate;
	m->fault_rate_arg = cfg->fault_rate_arg;
	if (m->pull && stages_init(&m->stages))
		return err_set(err, ENOMEM, "staging: pthread_mutex_init failed");
	if (plan_init(&m->plan, cfg->regions, cfg->nregions))
		return err_set(err, ENOMEM, "out of memory for the plan");
	m->windows = calloc(m->plan.nchunks / SCAN_WINDOW_CHUNKS + 1, 1);
	if (!m->windows)
		return err_set(err, ENOMEM, "out of memory for the plan");
	/* No scan of all guest RAM here: it would add to the guest's
	 * downtime (about 15 ms per GiB of 4 KiB pages). Each chunk is
	 * counted as it is classified; DONE carries the sum. */
	ret = pm_open(&m->pm, m->pid);
	if (ret && m->pull)
		return err_set(err, -ret,
			       "reading the source's page map (/proc/%d/pagemap): %s",
			       (int)m->pid, strerror(-ret));
	if (ret)
		return err_set(err, -ret,
			       "reading /proc/self/pagemap for guest RAM: %s",
			       strerror(-ret));
	return 0;
}

void mover_fini(struct mover *m)
{
	if (m->uffd >= 0 && !m->uffd_borrowed)
		close(m->uffd);
	if (m->pidfd >= 0)
		close(m->pidfd);
	m->uffd = m->pidfd = -1;
	if (!m->ready)
		return;
	pm_close(&m->pm);
	plan_fini(&m->plan);
	free(m->windows);
	fills_fini(&m->fills);
	pthread_cond_destroy(&m->free_cv);
	pthread_cond_destroy(&m->chunk_cv);
	pthread_cond_destroy(&m->events_cv);
	pthread_mutex_destroy(&m->lock);
	pthread_mutex_destroy(&m->edge_lock);
	ranges_fini(&m->outbox);
	ranges_fini(&m->collapse);
	ranges_fini(&m->to_free);
	stages_fini(&m->stages);
	memset(m, 0, sizeof(*m));
	m->uffd = m->pidfd = -1;
}

int mover_uffd(const struct mover *m)
{
	return m->uffd;
}

void mover_commit(struct mover *m)
{
	store_release(&m->committed, true);
}

bool mover_committed(const struct mover *m)
{
	return load_acquire(&m->committed);
}

/* pthread_cond_timedwait()'s deadline, @us from now. */
static void deadline_in(struct timespec *until, unsigned int us)
{
	clock_gettime(CLOCK_REALTIME, until);
	until->tv_nsec += (long)us * 1000;
	if (until->tv_nsec >= 1000000000L) {
		until->tv_sec++;
		until->tv_nsec -= 1000000000L;
	}
}

/* Pushers and pullers waiting in mover_await_chunk() look again. */
static void chunk_wake(struct mover *m)
{
	if (!load_acquire(&m->chunk_waiters))
		return;
	pthread_mutex_lock(&m->lock);
	pthread_cond_broadcast(&m->chunk_cv);
	pthread_mutex_unlock(&m->lock);
}

void mover_stop(struct mover *m)
{
	store_release(&m->stop, true);
	chunk_wake(m);
	pthread_mutex_lock(&m->lock);
	pthread_cond_broadcast(&m->free_cv);
	pthread_mutex_unlock(&m->lock);
}

bool mover_stopping(const struct mover *m)
{
	return load_acquire(&m->stop);
}

uint32_t mover_primitive(const struct mover *m)
{
	if (m->pull)
		return UFFDMOVE_PRIM_PULL;
	return load_acquire(&m->prim) == PRIM_COPY ? UFFDMOVE_PRIM_COPY :
	       UFFDMOVE_PRIM_MOVE;
}

uint64_t mover_populated(const struct mover *m)
{
	return load_acquire(&m->cnt.populated);
}

int mover_fail(struct mover *m, int err, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&m->lock);
	if (!m->fatal) {
		m->fatal = err;
		va_start(ap, fmt);
		err_vset(&m->err, -err, fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&m->lock);
	mover_stop(m);
	return err;
}

/* Errors are written under the lock, with their message. */
static int read_locked(struct mover *m, const int *field)
{
	int ret;

	pthread_mutex_lock(&m->lock);
	ret = *field;
	pthread_mutex_unlock(&m->lock);
	return ret;
}

int mover_fatal(struct mover *m)
{
	return read_locked(m, &m->fatal);
}

const char *mover_error(const struct mover *m)
{
	return m->err.msg;
}

int mover_move_failure(struct mover *m)
{
	return read_locked(m, &m->move_failure);
}

void core_record_move_failure(struct mover *m, uint64_t src, int refused)
{
	pthread_mutex_lock(&m->lock);
	if (!m->move_failure) {
		m->move_failure = -EBUSY;
		if (m->fatal)
			;	/* its own message stays */
		else if (!refused)
			err_set(&m->err, EBUSY,
				"MODE_MOVE: source page 0x%llx is shared (copy-on-write with another process, or KSM) and cannot move; it was copied instead; use MODE_AUTO",
				(unsigned long long)src);
		else if (refused == -EINVAL)
			err_set(&m->err, EBUSY,
				"MODE_MOVE: the kernel refused to move source page 0x%llx (EINVAL: the source and target mappings differ, e.g. in protection after an mprotect()); it was copied instead; use MODE_AUTO",
				(unsigned long long)src);
		else
			err_set(&m->err, EBUSY,
				"MODE_MOVE: the kernel refused to move source page 0x%llx (pinned or shared, EBUSY); it was copied instead; declare it with uffdmove_source_declare_pinned() or use MODE_AUTO",
				(unsigned long long)src);
	}
	pthread_mutex_unlock(&m->lock);
}

/*
 * Huge folios that straddle two chunks (doc/design.md): while a MOVE in
 * one chunk splits such a folio, a MOVE in the other is refused (EBUSY)
 * and its class sees migration entries, or pages mapped twice. A split
 * lasts as long as its thread waits for a CPU: 7 ms here beside busy
 * threads. Refusals came too with no MOVE beside (twice in a row, on an
 * intact folio) and passed within microseconds, so quiet neighbours are
 * waited for as well, briefly (faults on the chunk wait for it), from a
 * budget per session that pages truly pinned or shared spend once. Naps
 * double, jittered: two chunks that refuse each other must not try again
 * in step. The thread that reads events takes only short naps, and only
 * beside a MOVE: faults wait for it.
 */
bool core_split_wait(struct mover *m, size_t c, struct split_wait *w,
		     bool reader)
{
	uint64_t now = now_ns();
	bool busy = core_neighbour_busy(m, c, &w->seen);
	unsigned int nap;

	if (!w->until) {
		w->until = now + SPLIT_WAIT_NS;
		w->nap_us = SPLIT_NAP_MIN_US;
		w->quiet_us = 0;
	}
	if (now >= w->until)
		return false;
	nap = w->nap_us + (unsigned int)(now / 1000 % w->nap_us);
	if (!busy) {
		if (reader || w->quiet_us >= QUIET_CHUNK_US ||
		    __atomic_sub_fetch(&m->quiet_wait_us, nap,
				       __ATOMIC_RELAXED) < 0)
			return false;
		w->quiet_us += nap;
	}
	usleep(nap);
	if (!reader)	/* a fault waits for the reader's naps */
		w->nap_us = MIN(2 * w->nap_us, SPLIT_NAP_MAX_US);
	return true;
}

uint64_t mover_discard_raced(struct mover *m, uint64_t *start, uint64_t *len)
{
	uint64_t raced;

	pthread_mutex_lock(&m->fills.lock);
	raced = m->fills.raced;
	*start = m->fills.first_start;
	*len = m->fills.first_len;
	pthread_mutex_unlock(&m->fills.lock);
	return raced;
}

bool mover_finished(const struct mover *m)
{
	return load_acquire(&m->cnt.chunks_done) == m->plan.nchunks;
}

struct count_ctx {
	struct mover *m;
	struct plan_region *r;
};

static void count_run(void *arg, uint64_t start, uint64_t end,
		      uint8_t flags)
{
	struct count_ctx *ctx = arg;
	uint64_t a, next;

	(void)flags;
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

bool core_claim(struct mover *m, size_t c)
{
	uint8_t expect = CHUNK_PENDING;

	return __atomic_compare_exchange_n(&m->plan.chunks[c].state, &expect,
					   CHUNK_CLAIMED, false,
					   __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

/*
 * Chunk @c, just passed by the cursor, is done already (empty, or a
 * fault's): move the cursor past the done chunks after it in one step,
 * not one shared increment each, unless another mover moved it meanwhile.
 */
static void skip_done(struct mover *m, size_t c)
{
	size_t next = c + 1, expect = c + 1;

	while (next < m->plan.nchunks &&
	       next / SCAN_WINDOW_CHUNKS == c / SCAN_WINDOW_CHUNKS &&
	       load_acquire(&m->plan.chunks[next].state) == CHUNK_DONE)
		next++;
	if (next > expect)
		__atomic_compare_exchange_n(&m->cursor, &expect, next, false,
					    __ATOMIC_ACQ_REL,
					    __ATOMIC_RELAXED);
}

/*
 * Past the cursor, a chunk is pending only if it was given back (its
 * queue entry may have been dropped, or taken while another thread held
 * it): claim the first one. Chunks below m->swept are all done.
 */
static long claim_behind(struct mover *m)
{
	size_t c = load_acquire(&m->swept), first = SIZE_MAX;

	for (; c < m->plan.nchunks; c++) {
		uint8_t state = load_acquire(&m->plan.chunks[c].state);

		if (state == CHUNK_DONE)
			continue;
		if (first == SIZE_MAX)
			first = c;
		if (state == CHUNK_PENDING && core_claim(m, c))
			break;
	}
	/* Done is final: every chunk below @first stays done. A racing
	 * thread may store a lower mark; that only costs a longer scan. */
	if (first == SIZE_MAX)
		first = m->plan.nchunks;
	if (first > load_acquire(&m->swept))
		store_release(&m->swept, first);
	return c < m->plan.nchunks ? (long)c : -1;
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
		if (core_claim(m, c))
			return (long)c;
	}
	for (;;) {
		c = count_add(&m->cursor, 1);
		if (c >= m->plan.nchunks)
			return claim_behind(m);
		core_scan_ahead(m, c);
		if (core_claim(m, c))
			return (long)c;
		skip_done(m, c);
	}
}

bool mover_await_chunk(struct mover *m)
{
	struct timespec until;

	if (mover_finished(m) || mover_stopping(m))
		return false;
	deadline_in(&until, CHUNK_WAIT_US);
	pthread_mutex_lock(&m->lock);
	m->chunk_waiters++;
	while (m->urgent_head == m->urgent_tail && !mover_finished(m) &&
	       !mover_stopping(m))
		if (pthread_cond_timedwait(&m->chunk_cv, &m->lock, &until))
			break;
	m->chunk_waiters--;
	pthread_mutex_unlock(&m->lock);
	return !mover_stopping(m);
}

void core_make_urgent(struct mover *m, size_t c)
{
	pthread_mutex_lock(&m->lock);
	if (m->urgent_tail - m->urgent_head < URGENT_MAX)
		m->urgent[m->urgent_tail++ % URGENT_MAX] = c;
	if (m->chunk_waiters)
		pthread_cond_broadcast(&m->chunk_cv);
	pthread_mutex_unlock(&m->lock);
}

bool core_wants_move(const struct mover *m, const struct chunk *ch)
{
	return m->mode != UFFDMOVE_MODE_COPY && mover_committed(m) &&
	       load_acquire(&m->prim) != PRIM_COPY &&
	       (ch->flags & CHUNK_MOVABLE);
}

void core_decide(struct mover *m, int prim, uint32_t why)
{
	int expect = PRIM_UNDECIDED;

	if (__atomic_compare_exchange_n(&m->prim, &expect, prim, false,
					__ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE) &&
	    prim == PRIM_COPY)
		store_release(&m->why_not_move, why);
}

void mover_events_read(struct mover *m)
{
	__atomic_fetch_add(&m->events_read, 1, __ATOMIC_RELEASE);
	if (!load_acquire(&m->events_waiters))
		return;
	pthread_mutex_lock(&m->lock);
	pthread_cond_broadcast(&m->events_cv);
	pthread_mutex_unlock(&m->lock);
}

void mover_events_batch(struct mover *m)
{
	__atomic_fetch_add(&m->events_batch, 1, __ATOMIC_ACQ_REL);
}

#define SETTLE_POLL_US	50
#define SETTLE_MAX_US	(100 * 1000)

/* A rare path (a DONE count that came up short): polling is enough. */
void mover_events_settle(struct mover *m)
{
	uint64_t batch = load_acquire(&m->events_batch);
	unsigned int waited;

	for (waited = 0; (batch & 1) && waited < SETTLE_MAX_US &&
	     load_acquire(&m->events_batch) == batch;
	     waited += SETTLE_POLL_US)
		usleep(SETTLE_POLL_US);
}

/*
 * EAGAIN: an event is pending that only the fault thread reads. Wait until
 * it has read events since @seen (then try again at once), or a short
 * while: a steady stream of discards must not slow pushing down.
 */
void core_wait_events_read(struct mover *m, uint64_t seen)
{
	struct timespec until;

	deadline_in(&until, EVENTS_WAIT_US);
	pthread_mutex_lock(&m->lock);
	m->events_waiters++;
	while (load_acquire(&m->events_read) == seen && !mover_stopping(m))
		if (pthread_cond_timedwait(&m->events_cv, &m->lock, &until))
			break;
	m->events_waiters--;
	pthread_mutex_unlock(&m->lock);
}
