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
#include <sys/socket.h>
#include <unistd.h>

#include "mover.h"
#include "peer.h"
#include "ring.h"
#include "source.h"
#include "util.h"
#include "wire.h"

#define PROGRESS_EVERY_NS	(20 * 1000 * 1000ULL)
#define PROGRESS_CB_BYTES	(64ULL << 20)
#define FAULT_SPIN_US		50
#define MSGS_MAX		(4 * RING_MSGS)
#define PUSHER_NICE		5
#define PUSH_TRIES		8	/* inline pushes in a row after EAGAIN */

/* A fault that could not be resolved yet, and when it was read. */
struct waiting {
	uint64_t addr;
	uint64_t t_read;
};

struct run {
	struct uffdmove_source *s;
	struct ring ring;
	pthread_t *pushers;
	size_t npushers, started, exited;
	bool needs_commit;
	bool done_sent, fin;
	bool query;		/* the target asked for counters */
	bool target_aborted;	/* it said ABORT before committing */
	uint64_t early_faults;	/* served before its commit */
	uint64_t done_sent_ns;
	uint64_t next_progress_ns, next_cb_bytes;
	struct waiting *waiting;	/* faults to try again, see wait_fault */
	size_t nwaiting, waiting_cap;
};

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
	while (!__atomic_load_n(&m->stop, __ATOMIC_ACQUIRE)) {
		/* Before the target commits, nothing may move: the source
		 * must be able to take its guest back. */
		if (run->needs_commit &&
		    !__atomic_load_n(&m->committed, __ATOMIC_ACQUIRE)) {
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

static void stats_now(struct uffdmove_source *s, struct uffdmove_stats *st)
{
	mover_stats(&s->m, st);
	st->elapsed_ns = (s->t_end ? s->t_end : now_ns()) - s->t_start;
}

/* Completed THP chunks, so the target can collapse them at once. When
 * @timeout_ms is 0 what does not fit the socket waits for next time. */
static int flush_ranges(struct run *run, int timeout_ms)
{
	struct wire_msg msg = { .type = WIRE_RANGE_DONE };
	int ret;

	for (;;) {
		msg.ranges.n = (uint32_t)mover_take_ranges(
			&run->s->m, msg.ranges.ranges, WIRE_RANGES_MAX);
		if (!msg.ranges.n)
			return 0;
		ret = session_send(run->s->sock, &msg, -1, timeout_ms);
		if (ret == -EAGAIN) {
			/* Put them back in front: order is irrelevant. */
			uint32_t i;

			for (i = 0; i < msg.ranges.n; i++)
				mover_outbox_add(&run->s->m,
						 msg.ranges.ranges[i].start,
						 msg.ranges.ranges[i].len);
			return 0;
		}
		if (ret)
			return ret;
	}
}

static void periodic(struct run *run, bool force)
{
	struct uffdmove_source *s = run->s;
	struct wire_msg msg = { .type = WIRE_PROGRESS };
	uint64_t now = now_ns(), handled;

	if (!force && now < run->next_progress_ns)
		return;
	run->next_progress_ns = now + PROGRESS_EVERY_NS;
	stats_now(s, &msg.stats);
	/* A target reads only once it committed: before, messages would
	 * fill the socket and leave no room for an ABORT. */
	if (__atomic_load_n(&s->m.committed, __ATOMIC_ACQUIRE)) {
		session_send(s->sock, &msg, -1, 0);	/* idempotent: drop if full */
		flush_ranges(run, 0);
	}
	handled = msg.stats.bytes_moved + msg.stats.bytes_copied;
	if (s->opts.progress && (force || handled >= run->next_cb_bytes)) {
		s->opts.progress(&msg.stats, s->opts.progress_arg);
		run->next_cb_bytes = handled + PROGRESS_CB_BYTES;
	}
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
		__atomic_fetch_add(&m->cnt.discarded,
				   plan_discard(&m->plan, start, end - start),
				   __ATOMIC_RELAXED);
		fills_check_discard(&m->fills, start, end, since);
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

static bool committed(struct run *run)
{
	return __atomic_load_n(&run->s->m.committed, __ATOMIC_ACQUIRE);
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
		__atomic_fetch_add(&m->cnt.eagain, 1, __ATOMIC_RELAXED);
		return wait_fault(run, addr, t_read);
	}
	if (ret)
		return mover_fail(m, ret, "resolving a fault at 0x%llx: %s",
				  (unsigned long long)addr, strerror(-ret));
	hist_add(&m->lat, now_ns() - t_read);
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

		got = read(run->s->m.uffd, batch, sizeof(batch));
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

/*
 * The target left: judged only after every message it left behind was
 * read, because a reset is reported before the data still queued. The
 * handoff is complete only if it committed and confirmed DONE with FIN.
 */
static int target_gone(struct run *run)
{
	struct mover *m = &run->s->m;

	if (run->fin)
		return 0;
	if (!committed(run))
		return mover_fail(m, -ECANCELED, "the target went away");
	return mover_fail(m, -ECONNRESET, "%s",
			  run->done_sent ?
			  "the target hung up after DONE without confirming it" :
			  "the target hung up before the handoff completed");
}

/* One message from the target: GO (committed), FIN or ABORT. */
static int handle_message(struct run *run, const struct wire_msg *msg)
{
	struct mover *m = &run->s->m;

	switch (msg->type) {
	case WIRE_GO:
		__atomic_store_n(&m->committed, true, __ATOMIC_RELEASE);
		return 0;
	case WIRE_FIN:
		if (!run->done_sent || !committed(run))
			return mover_fail(m, -EPROTO,
					  "the target sent FIN before %s",
					  run->done_sent ? "GO" : "DONE");
		run->fin = true;
		return 0;
	case WIRE_QUERY:	/* fresh counters, e.g. to check DONE */
		run->query = true;	/* answered once events are read */
		return 0;
	case WIRE_ABORT:
		if (committed(run))
			return mover_fail(m, -ECONNRESET,
					  "the target aborted after committing: %s",
					  msg->reason.text);
		run->target_aborted = true;
		return mover_fail(m, -ECANCELED, "the target aborted");
	default:
		return mover_fail(m, -EPROTO, "unexpected %s from the target",
				  wire_type_name(msg->type));
	}
}

/* Read everything the target sent; 0 or the session's end. */
static int handle_socket(struct run *run)
{
	struct uffdmove_source *s = run->s;
	struct wire_msg msg;
	char buf[WIRE_MSG_MAX + 1], why[160];
	int fds[PEER_FDS_MAX], len, ret;
	bool gone = false;
	size_t nfds;

	for (;;) {
		len = peer_recv(s->sock, buf, sizeof(buf), fds, &nfds, 0);
		if (nfds && nfds <= PEER_FDS_MAX)
			peer_close_fds(fds, nfds);
		if (len == -ECONNRESET && !gone) {
			gone = true;	/* what it left may follow */
			continue;
		}
		if (len == -ECONNRESET || (len == -EAGAIN && gone))
			return target_gone(run);
		if (len == -EAGAIN)
			return 0;
		if (len < 0)
			return mover_fail(&s->m, len, "socket: %s",
					  strerror(-len));
		ret = wire_decode(buf, (size_t)len, &msg, why, sizeof(why));
		if (ret)
			return mover_fail(&s->m, ret,
					  "bad message from the target: %s", why);
		ret = handle_message(run, &msg);
		if (ret)
			return ret;
	}
}

/*
 * Ending before a commit must be final on both sides. Shutting our
 * receiving side makes any later GO fail in the target's sendmsg(), so a
 * GO is either already queued here (read it now) or never sent.
 */
static void settle_commit(struct run *run)
{
	struct uffdmove_source *s = run->s;
	struct wire_msg msg;
	char buf[WIRE_MSG_MAX + 1];
	int fds[PEER_FDS_MAX], len, resets = 0;
	size_t nfds;

	shutdown(s->sock, SHUT_RD);
	while (!committed(run)) {
		len = peer_recv(s->sock, buf, sizeof(buf), fds, &nfds, 0);
		if (nfds && nfds <= PEER_FDS_MAX)
			peer_close_fds(fds, nfds);
		if ((len == -ECONNRESET && !resets++) || len == -EMSGSIZE)
			continue;	/* reset first, data may follow */
		if (len <= 0)
			break;
		if (!wire_decode(buf, (size_t)len, &msg, NULL, 0) &&
		    msg.type == WIRE_GO)
			__atomic_store_n(&s->m.committed, true,
					 __ATOMIC_RELEASE);
	}
}

/*
 * Everything is there: send the rest of the THP ranges, then DONE. Never
 * waits: a target busy collapsing huge pages may not read for a while, and
 * faults must still be served meanwhile; the fault loop calls again.
 */
static int try_send_done(struct run *run)
{
	struct wire_msg msg = { .type = WIRE_DONE };
	int ret;

	if (!__atomic_load_n(&run->s->m.committed, __ATOMIC_ACQUIRE))
		return 0;	/* see periodic() */
	ret = flush_ranges(run, 0);
	if (ret)
		return ret;
	pthread_mutex_lock(&run->s->m.lock);
	ret = run->s->m.outbox_n ? -EAGAIN : 0;
	pthread_mutex_unlock(&run->s->m.lock);
	if (ret)
		return 0;
	if (!run->s->t_end)
		run->s->t_end = now_ns();
	stats_now(run->s, &msg.stats);
	ret = session_send(run->s->sock, &msg, -1, 0);
	if (ret == -EAGAIN)
		return 0;
	if (ret)
		return ret;
	run->done_sent = true;
	run->done_sent_ns = now_ns();
	periodic(run, true);
	return 0;
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

	__atomic_store_n(&run->s->m.stop, true, __ATOMIC_RELEASE);
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
	    !__atomic_load_n(&m->committed, __ATOMIC_ACQUIRE))
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

/*
 * Counters right now, after the events read with the question: a discard
 * the target saw take effect was read by us before, so it is counted.
 * After DONE the answer is DONE again, never mistaken for a PROGRESS sent
 * before the question.
 */
static void answer_query(struct run *run)
{
	struct wire_msg answer = {
		.type = run->done_sent ? WIRE_DONE : WIRE_PROGRESS
	};

	stats_now(run->s, &answer.stats);
	session_send(run->s->sock, &answer, -1, 100);
	run->query = false;
}

/* A target that never commits, or never confirms DONE, must not keep the
 * old VMM waiting forever; nor may a caller's cancel. */
static int check_deadlines(struct run *run)
{
	struct uffdmove_source *s = run->s;
	uint64_t limit = s->opts.peer_timeout_ms * 1000000ULL, now = now_ns();

	if (__atomic_load_n(&s->cancel, __ATOMIC_ACQUIRE))
		return mover_fail(&s->m, committed(run) ? -ECONNABORTED :
				  -ECANCELED, "cancelled by the caller%s",
				  committed(run) ?
				  " after the target committed: its missing pages are lost" :
				  "");
	if (!committed(run) && now - s->t_start > limit)
		return mover_fail(&s->m, -ECANCELED,
				  "the target did not commit within %u ms, and now cannot",
				  s->opts.peer_timeout_ms);
	if (run->done_sent && now - run->done_sent_ns > limit)
		return mover_fail(&s->m, -ETIMEDOUT,
				  "the target did not confirm DONE within %u ms",
				  s->opts.peer_timeout_ms);
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
			   __atomic_load_n(&m->committed, __ATOMIC_ACQUIRE)) ? 0 :
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
		if (ev.sock || (ev.nmsgs && !__atomic_load_n(&m->committed,
							     __ATOMIC_ACQUIRE)))
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

/*
 * The target touched guest RAM before it committed: its guest may have
 * run, although the commit never came. Resuming the old guest too would
 * run it twice: say so with an error that is not -ECANCELED.
 */
static int end_touched(struct run *run)
{
	struct uffdmove_source *s = run->s;
	struct wire_msg abort_msg = { .type = WIRE_ABORT };

	abort_msg.reason.errnum = ECONNRESET;
	str_copy(abort_msg.reason.text, sizeof(abort_msg.reason.text),
		 s->m.err.msg);
	session_send(s->sock, &abort_msg, -1, 100);
	shutdown(s->sock, SHUT_RDWR);
	return err_set(&s->err, ECONNRESET,
		       "%s; the target never committed, but it touched guest RAM %llu times before (its guest may have run): do not resume the old guest",
		       s->m.err.msg, (unsigned long long)run->early_faults);
}

/*
 * The session failed with @ret. Whatever ended it, a target that never
 * committed never ran the guest: say so with -ECANCELED, the one answer
 * that lets the old VMM resume. Then tell the target why.
 */
static int end_failed(struct run *run, int ret)
{
	struct uffdmove_source *s = run->s;
	struct wire_msg abort_msg = { .type = WIRE_ABORT };
	struct uffdmove_stats st;
	const char *cause = s->m.err.msg;

	if (!committed(run))
		settle_commit(run);
	if (!committed(run) && run->early_faults && !run->target_aborted)
		return end_touched(run);
	if (!committed(run))
		ret = -ECANCELED;
	else if (ret == -ECANCELED)	/* its GO crossed our end */
		ret = __atomic_load_n(&s->cancel, __ATOMIC_ACQUIRE) ?
		      -ECONNABORTED : -ETIMEDOUT;
	stats_now(s, &st);
	abort_msg.reason.errnum = (uint32_t)-ret;
	str_copy(abort_msg.reason.text, sizeof(abort_msg.reason.text), cause);
	if (ret != -ECONNRESET && ret != -ESRCH)
		session_send(s->sock, &abort_msg, -1, 100);
	/* The session is over: a target blocked in munmap or madvise on an
	 * event we will not read learns it from the hang-up. */
	shutdown(s->sock, SHUT_RDWR);
	if (ret == -ECANCELED)
		return err_set(&s->err, ECANCELED,
			       "%s; the target never committed, so every byte of the guest is intact here",
			       cause);
	return err_set(&s->err, -ret,
		       "%s (handed over %llu of %llu populated bytes)", cause,
		       (unsigned long long)(st.bytes_moved + st.bytes_copied),
		       (unsigned long long)st.bytes_populated);
}

UFFDMOVE_EXPORT int uffdmove_source_cancel(struct uffdmove_source *s)
{
	uint64_t one = 1;

	if (!s)
		return -EINVAL;
	__atomic_store_n(&s->cancel, true, __ATOMIC_RELEASE);
	if (write(s->efd, &one, sizeof(one)) < 0) {
		/* full: the loop is being woken already */
	}
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
	run.needs_commit = s->m.prim != PRIM_COPY;
	run.next_cb_bytes = PROGRESS_CB_BYTES;
	ret = ring_init(&run.ring, s->m.uffd, s->sock, s->efd);
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
	else if (s->m.move_failure)
		ret = err_set(&s->err, -s->m.move_failure, "%s",
			      s->m.err.msg);
	else if (s->m.fills.raced)
		err_set(&s->err, 0,
			"warning: the target discarded its 0x%llx+%llu (%llu bytes in all) with a raw madvise() while it was being filled: those pages may hold stale data; discard with uffdmove_target_discard()",
			(unsigned long long)s->m.fills.first_start,
			(unsigned long long)s->m.fills.first_len,
			(unsigned long long)s->m.fills.raced);
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
