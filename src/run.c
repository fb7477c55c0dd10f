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

#define FAULT_SPIN_US		50
#define MSGS_MAX		(4 * RING_MSGS)
#define PUSHER_NICE		5
#define PUSH_TRIES		8	/* inline pushes in a row after EAGAIN */

static void *pusher_main(void *arg)
{
	struct run *run = arg;
	struct mover *m = &run->s->m;
	uint64_t one = 1;
	long c;

	/* Faults preempt pushing: on a busy host a fault thread queued
	 * behind CPU-bound pushers would wait whole scheduler slices. Raising
	 * one's own nice value needs no privilege. */
	setpriority(PRIO_PROCESS, (id_t)gettid(), PUSHER_NICE);
	while (!mover_stopping(m)) {
		/* Before the target commits, nothing may move: the source
		 * must be able to take its guest back. */
		if (run->needs_commit &&
		    !mover_committed(m)) {
			usleep(100);
			continue;
		}
		c = mover_next_chunk(m);
		if (c < 0 || mover_push_chunk(m, (size_t)c, false))
			break;
	}
	if (write(run->s->efd, &one, sizeof(one)) < 0) {
		/* The fault loop also times out every PROGRESS period. */
	}
	return NULL;
}

void stats_now(struct uffdmove_source *s, struct uffdmove_stats *st)
{
	mover_stats(&s->m, st);
	st->elapsed_ns = (s->t_end ? s->t_end : now_ns()) - s->t_start;
}

/* A target event other than a fault. */
static int handle_event(struct run *run, const struct uffd_msg *msg,
			uint64_t since)
{
	struct mover *m = &run->s->m;
	uint64_t start, end;

	switch (msg->event) {
	case UFFD_EVENT_REMOVE:
	case UFFD_EVENT_UNMAP:
		/*
		 * Balloon, MADV_DONTNEED or munmap: those pages are never
		 * filled again; later faults read zeros. The kernel lets the
		 * discard zap as soon as this event was read, so a fill that
		 * started before this marking may land behind the zap: it
		 * cannot be undone from here, only counted (fills.h). The
		 * target's uffdmove_target_discard() has no such window.
		 */
		start = msg->arg.remove.start;
		end = msg->arg.remove.end;
		mover_discarded(m, start, end, since);
		return 0;
	case UFFD_EVENT_REMAP:
		return mover_fail(m, -EPROTO,
				  "the target mremap()ed guest RAM 0x%llx+%llu to 0x%llx during the handoff, which libuffdmove does not follow; the session ends",
				  (unsigned long long)msg->arg.remap.from,
				  (unsigned long long)msg->arg.remap.len,
				  (unsigned long long)msg->arg.remap.to);
	default:
		return mover_fail(m, -EPROTO,
				  "unexpected userfaultfd event %u from the target",
				  msg->event);
	}
}

/*
 * Keep a fault for later: an event is pending (EAGAIN), or another thread
 * holds its chunk. Never dropped: its thread sleeps until someone wakes it.
 */
static int wait_fault(struct run *run, uint64_t addr, uint64_t t_read)
{
	if (run->nwaiting == run->waiting_cap) {
		size_t cap = run->waiting_cap ? 2 * run->waiting_cap : 64;
		void *p = realloc(run->waiting, cap * sizeof(*run->waiting));

		if (!p)
			return mover_fail(&run->s->m, -ENOMEM,
					  "out of memory for waiting faults");
		run->waiting = p;
		run->waiting_cap = cap;
	}
	run->waiting[run->nwaiting++] = (struct waiting){ addr, t_read };
	return 0;
}

static int serve_fault(struct run *run, uint64_t addr, uint64_t t_read)
{
	struct mover *m = &run->s->m;
	int ret = mover_fault(m, addr);

	if (ret == -EAGAIN) {
		mover_fault_deferred(m);
		return wait_fault(run, addr, t_read);
	}
	if (ret)
		return mover_fail(m, ret, "resolving a fault at 0x%llx: %s",
				  (unsigned long long)addr, strerror(-ret));
	mover_fault_served(m, t_read);
	if (!committed(run))	/* the rule: no touch before the commit */
		run->early_faults++;
	return 0;
}

/* Non-fault events first: a pending REMOVE makes every COPY fail with
 * EAGAIN until it is read, and must mark its range before any fault in
 * it is resolved. */
static int handle_msgs(struct run *run, const struct uffd_msg *msgs, size_t n,
		       uint64_t t_read, uint64_t since)
{
	size_t i;
	int ret;

	if (n)
		mover_events_read(&run->s->m);
	for (i = 0; i < n; i++) {
		if (msgs[i].event == UFFD_EVENT_PAGEFAULT)
			continue;
		ret = handle_event(run, &msgs[i], since);
		if (ret)
			return ret;
	}
	for (i = 0; i < n; i++) {
		if (msgs[i].event != UFFD_EVENT_PAGEFAULT)
			continue;
		ret = serve_fault(run, msgs[i].arg.pagefault.address, t_read);
		if (ret)
			return ret;
	}
	return 0;
}

/* Read every pending event now: that is what EAGAIN waits for. Returns
 * how many messages were read, or the session's end. */
static int drain_uffd(struct run *run)
{
	struct uffd_msg batch[MSGS_MAX];
	ssize_t got;
	int ret, total = 0;

	for (;;) {
		uint64_t since = now_ns();

		got = read(mover_uffd(&run->s->m), batch, sizeof(batch));
		if (got <= 0)
			break;
		ret = handle_msgs(run, batch,
				  (size_t)got / sizeof(struct uffd_msg),
				  now_ns(), since);
		if (ret)
			return ret;
		total += (int)(got / (ssize_t)sizeof(struct uffd_msg));
	}
	return total;
}

/* Faults kept for later: read what is pending, then try them again. */
static int retry_faults(struct run *run)
{
	struct waiting *w = run->waiting;
	size_t i, n = run->nwaiting;
	int ret;

	if (!n)
		return 0;
	/* Those still blocked go to a fresh list. */
	run->waiting = NULL;
	run->nwaiting = run->waiting_cap = 0;
	ret = drain_uffd(run);
	if (!ret)
		usleep(20);
	for (i = 0; i < n && ret >= 0; i++)
		ret = serve_fault(run, w[i].addr, w[i].t_read);
	free(w);
	return ret < 0 ? ret : 0;
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
		run->started++;
	}
	return 0;
}

static void stop_pushers(struct run *run)
{
	size_t i;

	mover_stop(&run->s->m);
	for (i = 0; i < run->started; i++)
		pthread_join(run->pushers[i], NULL);
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
		ret = mover_push_chunk(m, (size_t)c, true);
		if (ret != -EAGAIN)
			return ret;
		/* The chunk went back to the front of the queue. Read what
		 * blocks it and try again at once: a target that discards
		 * in a loop re-arms its next REMOVE within microseconds. */
		ret = drain_uffd(run);
		if (ret < 0)
			return ret;
	}
	return 0;
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
			  run->nwaiting ? 0 :
			  mover_finished(m) && !run->done_sent ? 1 :
			  (int)(PROGRESS_EVERY_NS / 1000000);
		ret = ring_wait(&run->ring, msgs, MSGS_MAX, &ev,
				inline_push ? 0 : FAULT_SPIN_US, timeout);
		if (ret)
			return mover_fail(m, ret, "io_uring: %s", strerror(-ret));
		/* GO first: faults right after the commit may already move,
		 * and a THP then moves whole instead of page by page. */
		ret = 0;
		if (ev.sock || (ev.nmsgs && !mover_committed(m)))
			ret = handle_socket(run);
		if (!ret)
			ret = handle_msgs(run, msgs, ev.nmsgs, now_ns(),
					  ev.read_since_ns);
		if (!ret)
			ret = retry_faults(run);
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

UFFDMOVE_EXPORT int uffdmove_source_run(struct uffdmove_source *s)
{
	struct run run = { .s = s };
	int ret;

	if (!s)
		return -EINVAL;
	if (s->state != SRC_ACCEPTED)
		return err_set(&s->err, EINVAL,
			       "uffdmove_source_run() needs a successful uffdmove_source_accept() first");
	s->state = SRC_RUNNING;
	err_clear(&s->err);
	run.needs_commit = mover_primitive(&s->m) != UFFDMOVE_PRIM_COPY;
	run.next_cb_bytes = PROGRESS_CB_BYTES;
	ret = ring_init(&run.ring, mover_uffd(&s->m), s->sock, s->efd);
	if (ret) {
		ret = mover_fail(&s->m, ret,
				 "io_uring_queue_init: %s (is io_uring disabled?)",
				 strerror(-ret));
		goto out;
	}
	ret = start_pushers(&run, s->opts.threads > 1 ? s->opts.threads - 1 : 0);
	if (ret) {
		ret = mover_fail(&s->m, ret, "starting mover threads: %s",
				 strerror(-ret));
	} else {
		ret = fault_loop(&run);
	}
	stop_pushers(&run);
	free(run.waiting);
out:
	ring_fini(&run.ring);
	if (!s->t_end)
		s->t_end = now_ns();
	if (ret)
		ret = end_failed(&run, ret);
	else
		ret = end_complete(s);
	s->state = SRC_ENDED;
	return ret;
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
