// SPDX-License-Identifier: MIT
/*
 * The new VMM's pull from the commit on (doc/design.md, "Pull"): pullers
 * take chunks in order, a fault thread of ours reads the uffd and serves
 * faults first, and the ranges that arrived go to the source in RELEASE
 * messages so it frees them as we go.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <unistd.h>

#include "faults.h"
#include "mover.h"
#include "pull.h"
#include "session.h"
#include "target.h"
#include "util.h"
#include "wake.h"
#include "wire.h"

#define PULLERS_DEFAULT		2
#define RELEASE_EVERY_MS	5	/* what the source holds twice, at most */
#define RELEASE_BATCH		(8u << 20)	/* a RELEASE wakes the source */

/* What arrived goes to the source, to be freed there. @timeout_ms 0: what
 * does not fit the socket now waits for the next round. */
static void send_releases(struct uffdmove_target *t, int timeout_ms)
{
	struct wire_msg msg = { .type = WIRE_RELEASE };
	struct mover *m = &t->pull->m;
	uint32_t i;

	for (;;) {
		msg.ranges.n = (uint32_t)mover_take_ranges(
			m, msg.ranges.ranges, WIRE_RANGES_MAX);
		if (!msg.ranges.n)
			return;
		if (session_send(t->sock, &msg, -1, timeout_ms) == 0)
			continue;
		/* Full, or the source is gone: it frees all at exit. */
		for (i = 0; i < msg.ranges.n; i++)
			mover_outbox_add(m, msg.ranges.ranges[i].start,
					 msg.ranges.ranges[i].len);
		return;
	}
}

/*
 * After a fatal error the uffd is still read, so that the VMM's own
 * madvise() or munmap() never waits for an event nobody reads; faults
 * are left blocked, never zero, until the target is orphaned.
 */
static void hold(struct uffdmove_target *t)
{
	struct uffd_msg msgs[FAULTS_BATCH];

	while (read(t->uffd, msgs, sizeof(msgs)) > 0)
		;
}

static int fault_timeout(struct uffdmove_target *t)
{
	struct pull *p = t->pull;

	if (mover_fatal(&p->m))
		return -1;	/* holding: events only (see hold()) */
	if (p->faults.nwaiting)
		return 0;
	/* Pullers fill the outbox without waking us: look every few ms. */
	return mover_finished(&p->m) && mover_outbox_empty(&p->m) ? -1 :
	       RELEASE_EVERY_MS;
}

/*
 * Not right after serving faults if it can wait: a RELEASE wakes the
 * source, which then ran ~40 us on the CPU where the guest thread we had
 * just woken waited for it. Under steady faults, every 10 ms at least.
 */
static bool release_now(struct pull *p, int events)
{
	uint64_t now = now_ns();

	if (events && mover_outbox_bytes(&p->m) < RELEASE_BATCH &&
	    now - p->released_ns < 2 * RELEASE_EVERY_MS * 1000000ULL)
		return false;
	p->released_ns = now;
	return true;
}

static void *fault_main(void *arg)
{
	struct uffdmove_target *t = arg;
	struct pull *p = t->pull;
	int events, ret;

	while (!load_acquire(&p->stop)) {
		if (wake_wait(t->uffd, p->efd, fault_timeout(t)))
			continue;	/* re-check stop */
		if (mover_fatal(&p->m)) {
			hold(t);
			continue;
		}
		events = faults_drain(&p->faults);
		ret = events < 0 ? events : faults_retry(&p->faults);
		if (release_now(p, events))
			send_releases(t, 0);
		if ((ret < 0 || mover_finished(&p->m)) &&
		    !__atomic_exchange_n(&p->done_told, true,
					 __ATOMIC_ACQ_REL))
			wake_kick(p->done_efd);
	}
	return NULL;
}

static void *puller_main(void *arg)
{
	struct uffdmove_target *t = arg;
	struct pull *p = t->pull;
	long c;

	/* Our fault thread preempts pulling, as the source's does pushing
	 * (run.c says why); at the same nice a fault waited up to a
	 * scheduler slice behind two pullers on two CPUs. */
	setpriority(PRIO_PROCESS, (id_t)gettid(), MOVER_WORKER_NICE);
	while (!load_acquire(&p->stop)) {
		c = mover_next_chunk(&p->m);
		/* None free, but the fault thread may still give one back
		 * (EAGAIN): only we would take it. */
		if (c < 0 && mover_await_chunk(&p->m))
			continue;
		if (c < 0 || mover_pull_chunk(&p->m, (size_t)c, false))
			break;
		/* Soon: the source holds every byte twice until then, and
		 * a timer in a busy guest's process fires late. But not
		 * per chunk: each message wakes the source to free. */
		if (mover_outbox_bytes(&p->m) >= RELEASE_BATCH)
			send_releases(t, 0);
	}
	/* The last chunks may be in the fault thread's hands: it tells the
	 * target when they are in. This one tells it of a failure. */
	wake_kick(p->done_efd);
	return NULL;
}

static int start_threads(struct uffdmove_target *t)
{
	struct pull *p = t->pull;
	size_t i, n = t->opts.threads ? t->opts.threads : PULLERS_DEFAULT;
	int ret;

	ret = pthread_create(&p->fault_thread, NULL, fault_main, t);
	if (ret)
		return -ret;
	pthread_setname_np(p->fault_thread, "uffdmove-fault");
	p->fault_running = true;
	for (i = 0; i < MIN(n, PULL_THREADS_MAX); i++) {
		ret = pthread_create(&p->pullers[i], NULL, puller_main, t);
		if (ret)
			return -ret;
		pthread_setname_np(p->pullers[i], "uffdmove-pull");
		p->npullers++;
	}
	return 0;
}

int pull_start(struct uffdmove_target *t)
{
	struct pull *p = t->pull;
	struct epoll_event ev = { .events = EPOLLIN };

	p->efd = wake_open();
	p->done_efd = wake_open();
	if (p->efd < 0 || p->done_efd < 0)
		return p->efd < 0 ? p->efd : p->done_efd;
	ev.data.fd = p->done_efd;
	if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, p->done_efd, &ev) < 0)
		return -errno;
	faults_init(&p->faults, &p->m);
	mover_commit(&p->m);
	return start_threads(t);
}

void pull_stop(struct uffdmove_target *t)
{
	struct pull *p = t->pull;
	size_t i;

	if (!p)
		return;
	store_release(&p->stop, true);
	mover_stop(&p->m);
	for (i = 0; i < p->npullers; i++)
		pthread_join(p->pullers[i], NULL);
	p->npullers = 0;
	if (p->fault_running) {
		wake_kick(p->efd);
		pthread_join(p->fault_thread, NULL);
		p->fault_running = false;
	}
}

int pull_state(struct uffdmove_target *t)
{
	struct pull *p = t->pull;
	int ret;

	wake_drain(p->done_efd);	/* nothing new or not: look */
	ret = mover_fatal(&p->m);
	if (ret)
		return ret;
	return mover_finished(&p->m) ? 1 : 0;
}

int pull_settle(struct uffdmove_target *t)
{
	mover_events_settle(&t->pull->m);
	pull_stats(t, &t->st);
	return 0;
}

uint64_t pull_zeroed(struct uffdmove_target *t)
{
	return load_acquire(&t->pull->m.cnt.zeroed);
}

const char *pull_error(struct uffdmove_target *t)
{
	return mover_error(&t->pull->m);
}

void pull_stats(struct uffdmove_target *t, struct uffdmove_stats *st)
{
	mover_stats(&t->pull->m, st);
	st->move_unused_reason = UFFDMOVE_WHY_USED;	/* MOVE, within us */
	st->pull_unused_reason = UFFDMOVE_PULL_WHY_USED;
}

void pull_finish(struct uffdmove_target *t)
{
	struct wire_range r[WIRE_RANGES_MAX];
	size_t i, n;

	while ((n = mover_take_collapse(&t->pull->m, r, ARRAY_SIZE(r))))
		for (i = 0; i < n; i++)
			thp_mark_done(t, r[i].start, r[i].len);
	send_releases(t, 1000);
}

void pull_unwatch(struct uffdmove_target *t)
{
	if (t->pull && t->pull->done_efd >= 0)
		epoll_ctl(t->epfd, EPOLL_CTL_DEL, t->pull->done_efd, NULL);
}

void pull_free(struct uffdmove_target *t)
{
	struct pull *p = t->pull;

	if (!p)
		return;
	pull_stop(t);
	faults_fini(&p->faults);
	mover_fini(&p->m);
	if (p->efd >= 0)
		close(p->efd);
	if (p->done_efd >= 0) {
		epoll_ctl(t->epfd, EPOLL_CTL_DEL, p->done_efd, NULL);
		close(p->done_efd);
	}
	free(p);
	t->pull = NULL;
}
