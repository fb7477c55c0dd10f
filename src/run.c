// SPDX-License-Identifier: MIT
/*
 * The old VMM's run: the calling thread serves the target's faults through
 * io_uring, opts.threads - 1 pushers hand over every remaining chunk, and
 * the session ends only on a commit and a confirmed DONE, or with an answer
 * both ends agree on (doc/design.md, "The commit").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "run.h"
#include "util.h"
#include "wake.h"

#define FAULT_SPIN_US		50
#define EVENTS_DENSE_US		(4 * FAULT_SPIN_US)
#define MSGS_MAX		(4 * RING_MSGS)
#define PUSH_TRIES		8	/* inline pushes in a row after EAGAIN */

static void *pusher_main(void *arg)
{
	struct run *run = arg;
	struct mover *m = &run->s->m;
	long c;

	/* Faults preempt pushing: on a busy host a fault thread queued
	 * behind CPU-bound pushers would wait whole scheduler slices. Raising
	 * one's own nice value needs no privilege. */
	setpriority(PRIO_PROCESS, (id_t)gettid(), MOVER_WORKER_NICE);
	while (!mover_stopping(m)) {
		/* Before the target commits, nothing may move: the source
		 * must be able to take its guest back. */
		if (run->needs_commit &&
		    !mover_committed(m)) {
			usleep(100);
			continue;
		}
		c = mover_next_chunk(m);
		/* None free, but the fault thread may still give one back
		 * (EAGAIN): only we would take it. */
		if (c < 0 && mover_await_chunk(m))
			continue;
		if (c < 0 || mover_push_chunk(m, (size_t)c, false))
			break;
	}
	wake_kick(run->s->efd);	/* the fault loop looks again */
	return NULL;
}

void stats_now(struct uffdmove_source *s, struct uffdmove_stats *st)
{
	mover_stats(&s->m, st);
	st->pull_unused_reason = s->pulling ? UFFDMOVE_PULL_WHY_USED :
				 s->pull_why;
	if (s->pulling) {
		st->primitive = UFFDMOVE_PRIM_PULL;
		st->move_unused_reason = UFFDMOVE_WHY_USED;
	}
	st->elapsed_ns = (s->t_end ? s->t_end : now_ns()) - s->t_start;
}

/*
 * Frees the chunks that are in the committed target (MODE_AUTO between
 * processes; see mover_free_pending()) while the pushers go on. At the
 * priority of the guest's threads: below them, it would fall behind a
 * busy guest and the host would hold more of it twice. It sleeps until a
 * chunk is queued rather than looking every millisecond: the VMM's CPUs
 * are its guest's.
 */
static void *releaser_main(void *arg)
{
	struct mover *m = &((struct run *)arg)->s->m;

	while (mover_await_free(m))
		mover_free_pending(m);
	return NULL;
}

static int start_pushers(struct run *run, size_t n)
{
	size_t i;
	int ret;

	run->pushers = calloc(n ? n : 1, sizeof(*run->pushers));
	if (!run->pushers)
		return -ENOMEM;
	run->npushers = n;
	for (i = 0; i < n; i++) {
		ret = pthread_create(&run->pushers[i], NULL, pusher_main, run);
		if (ret)
			return -ret;
		pthread_setname_np(run->pushers[i], "uffdmove-push");
		run->started++;
	}
	if (!mover_frees_pushed(&run->s->m))
		return 0;	/* nothing will be queued to free */
	ret = pthread_create(&run->releaser, NULL, releaser_main, run);
	if (ret)
		return -ret;
	pthread_setname_np(run->releaser, "uffdmove-free");
	run->releaser_started = true;
	return 0;
}

static void stop_pushers(struct run *run)
{
	size_t i;

	mover_stop(&run->s->m);
	for (i = 0; i < run->started; i++)
		pthread_join(run->pushers[i], NULL);
	if (run->releaser_started)
		pthread_join(run->releaser, NULL);
	while (mover_free_pending(&run->s->m))
		;
	free(run->pushers);
}

/* With one thread, the fault loop pushes between events. */
static int push_inline(struct run *run)
{
	struct mover *m = &run->s->m;
	int ret, tries;
	long c;

	if (run->needs_commit &&
	    !mover_committed(m))
		return 0;
	for (tries = 0; tries < PUSH_TRIES; tries++) {
		c = mover_next_chunk(m);
		if (c < 0)
			return 0;
		ret = mover_push_sliced(m, (size_t)c, ring_ready,
					&run->ring);
		if (ret != -EAGAIN)
			return ret;
		/* The chunk went back to the front of the queue. Read what
		 * blocks it and try again at once: a target that discards
		 * in a loop re-arms its next REMOVE within microseconds. */
		ret = faults_drain(&run->faults);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/*
 * Spin for the next fault only while faults come close together. After a
 * rare one the guest thread we just woke usually wakes on our CPU (the
 * other runs a pusher), and a spin held it off for the whole spin: at one
 * fault per ms the touch took ~90 us, ~50 of them waiting for us to sleep.
 */
static void note_events(struct run *run)
{
	uint64_t now = now_ns();

	run->events_dense = now - run->event_ns < EVENTS_DENSE_US * 1000ULL;
	run->event_ns = now;
}

static int fault_loop(struct run *run)
{
	struct uffdmove_source *s = run->s;
	struct mover *m = &s->m;
	struct uffd_msg msgs[MSGS_MAX];
	struct ring_events ev;
	bool inline_push = run->npushers == 0;
	int ret, timeout;

	while (!run->fin) {
		if (!run->done_sent && mover_finished(m)) {
			ret = try_send_done(run);
			if (ret)
				return mover_fail(m, ret, "sending DONE: %s",
						  strerror(-ret));
		}
		/* Pushing inline means polling, but only once pushing may
		 * start: before GO a spin would take the CPU the target
		 * needs to commit. */
		timeout = inline_push && !mover_finished(m) &&
			  (!run->needs_commit ||
			   mover_committed(m)) ? 0 :
			  run->faults.nwaiting ? 0 :
			  mover_finished(m) && !run->done_sent ? 1 :
			  (int)(PROGRESS_EVERY_NS / 1000000);
		ret = ring_wait(&run->ring, msgs, MSGS_MAX, &ev,
				inline_push || !run->events_dense ? 0 :
				FAULT_SPIN_US, timeout);
		if (ret)
			return mover_fail(m, ret, "io_uring: %s", strerror(-ret));
		if (ev.nmsgs)
			note_events(run);
		/* GO first: faults right after the commit may already move,
		 * and a THP then moves whole instead of page by page. */
		ret = 0;
		if (ev.sock || (ev.nmsgs && !mover_committed(m)))
			ret = handle_socket(run);
		if (!ret)
			ret = faults_handle(&run->faults, msgs, ev.nmsgs,
					    now_ns(), ev.read_since_ns);
		if (!ret)
			ret = faults_retry(&run->faults);
		if (!ret && inline_push)
			ret = push_inline(run);
		if (!ret)
			ret = check_deadlines(run);
		if (!ret && run->query)
			answer_query(run);
		if (ret || mover_fatal(m))
			return mover_fatal(m) ? mover_fatal(m) : ret;
		periodic(run, false);
	}
	return 0;
}

static int run_push(struct run *run)
{
	struct uffdmove_source *s = run->s;
	int ret;

	ret = ring_init(&run->ring, mover_uffd(&s->m), s->sock, s->efd);
	if (ret)
		return mover_fail(&s->m, ret,
				  "io_uring_queue_init: %s (is io_uring disabled?)",
				  strerror(-ret));
	ret = start_pushers(run, s->opts.threads > 1 ? s->opts.threads - 1 : 0);
	if (ret)
		ret = mover_fail(&s->m, ret, "starting mover threads: %s",
				 strerror(-ret));
	else
		ret = fault_loop(run);
	stop_pushers(run);
	ring_fini(&run->ring);
	return ret;
}

/* Every byte is in the target; only MODE_MOVE's promise or a raw
 * discard that raced a fill is left to report. */
static int end_complete(struct uffdmove_source *s)
{
	uint64_t raced, first, len;
	int ret = mover_move_failure(&s->m);

	if (ret)
		return err_set(&s->err, -ret, "%s", mover_error(&s->m));
	raced = mover_discard_raced(&s->m, &first, &len);
	if (raced)
		err_set(&s->err, 0,
			"warning: the target discarded its 0x%llx+%llu (%llu bytes in all) with a raw madvise() while it was being filled: those pages may hold stale data; discard with uffdmove_target_discard()",
			(unsigned long long)first, (unsigned long long)len,
			(unsigned long long)raced);
	return 0;
}

int source_run(struct uffdmove_source *s)
{
	struct run run = { .s = s };
	int ret;

	s->state = SRC_RUNNING;
	run.needs_commit = mover_primitive(&s->m) != UFFDMOVE_PRIM_COPY;
	run.next_cb_bytes = PROGRESS_CB_BYTES;
	faults_init(&run.faults, &s->m);
	if (s->pulling) {
		ret = source_serve_pull(&run);
		source_revoke_reader();
	} else {
		ret = run_push(&run);
	}
	faults_fini(&run.faults);
	if (!s->t_end)
		s->t_end = now_ns();
	if (ret)
		ret = end_failed(&run, ret);
	else
		ret = end_complete(s);
	s->state = SRC_ENDED;
	return ret;
}

UFFDMOVE_EXPORT int uffdmove_source_run(struct uffdmove_source *s)
{
	if (source_in_state(s, SRC_ACCEPTED,
			    "uffdmove_source_run() needs a successful uffdmove_source_accept() first"))
		return -EINVAL;
	err_clear(&s->err);
	return source_run(s);
}

UFFDMOVE_EXPORT int uffdmove_source_stats(const struct uffdmove_source *s,
					  struct uffdmove_stats *st)
{
	if (!s || !st)
		return -EINVAL;
	if (!s->mover_ready) {
		memset(st, 0, sizeof(*st));
		return 0;
	}
	stats_now((struct uffdmove_source *)s, st);
	return 0;
}

UFFDMOVE_EXPORT const char *uffdmove_source_error(const struct uffdmove_source *s)
{
	return s ? s->err.msg : "invalid handle (NULL)";
}
