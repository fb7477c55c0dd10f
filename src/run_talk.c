// SPDX-License-Identifier: MIT
/*
 * The source's run, talking to the target: progress and THP ranges out,
 * GO / FIN / QUERY / ABORT in, DONE once everything is there, deadlines,
 * and the end of a run that failed, which both ends must read the same
 * way (doc/design.md, "The commit").
 */
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "session.h"
#include "run.h"
#include "util.h"
#include "wake.h"

#define SOCKET_BATCH	64	/* messages read per look at the socket */
#include "wire.h"

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

void periodic(struct run *run, bool force)
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
	if (mover_committed(&s->m) && !s->pulling) {
		session_send(s->sock, &msg, -1, 0);	/* idempotent: drop if full */
		flush_ranges(run, 0);
	}
	handled = msg.stats.bytes_moved + msg.stats.bytes_copied +
		  msg.stats.bytes_pulled;
	if (s->opts.progress && (force || handled >= run->next_cb_bytes)) {
		if (source_loop_driven(s))	/* on the caller's thread */
			source_loop_progress(s, &msg.stats);
		else
			s->opts.progress(&msg.stats, s->opts.progress_arg);
		run->next_cb_bytes = handled + PROGRESS_CB_BYTES;
	}
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
	/* We shut it ourselves (see cancel): check_deadlines() ends the
	 * run, once the faults read with it were looked at. */
	if (load_acquire(&run->s->cancel))
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
	int ret = run->s->pulling ? source_pull_message(run, msg) : 1;

	if (ret <= 0)
		return ret;
	switch (msg->type) {
	case WIRE_GO:
		mover_commit(m);
		mover_release_done(m);	/* what went before it */
		return 0;
	case WIRE_FIN:
		if (!run->done_sent || !committed(run))
			return mover_fail(m, -EPROTO,
					  "the target sent FIN before %s",
					  run->done_sent ? "GO" : "DONE");
		run->fin = true;
		return 0;
	case WIRE_QUERY:	/* fresh counters, e.g. to check DONE */
		/* Before its commit we send nothing but ABORT. */
		run->query = committed(run);	/* answered once events are read */
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
int handle_socket(struct run *run)
{
	struct uffdmove_source *s = run->s;
	struct wire_msg msg;
	char why[160];
	bool gone = false;
	int ret, n;

	/* A bounded batch: a flood must not keep deadlines and a cancel
	 * from being looked at. */
	for (n = 0; n < SOCKET_BATCH; n++) {
		ret = session_recv(s->sock, &msg, 0, why, sizeof(why));
		if (ret == -ECONNRESET && !gone) {
			gone = true;	/* what it left may follow */
			continue;
		}
		if (ret == -ECONNRESET || (ret == -EAGAIN && gone))
			return target_gone(run);
		if (ret == -EAGAIN)
			return 0;
		if (ret == -EBADMSG)
			return mover_fail(&s->m, -EPROTO,
					  "bad message from the target: %s", why);
		if (ret)
			return mover_fail(&s->m, ret, "socket: %s",
					  strerror(-ret));
		run->heard_ns = now_ns();
		ret = handle_message(run, &msg);
		if (ret)
			return ret;
	}
	return 0;
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
	int ret, resets = 0;

	shutdown(s->sock, SHUT_RD);
	while (!committed(run)) {
		ret = session_recv(s->sock, &msg, 0, NULL, 0);
		if ((ret == -ECONNRESET && !resets++) || ret == -EMSGSIZE ||
		    ret == -EBADMSG)
			continue;	/* reset first, data may follow */
		if (ret)
			break;
		if (msg.type == WIRE_GO)
			mover_commit(&s->m);
	}
}

/*
 * Everything is there: send the rest of the THP ranges, then DONE. Never
 * waits: a target busy collapsing huge pages may not read for a while, and
 * faults must still be served meanwhile; the fault loop calls again.
 */
int try_send_done(struct run *run)
{
	struct wire_msg msg = { .type = WIRE_DONE };
	int ret;

	if (!committed(run))
		return 0;	/* see periodic() */
	if (!run->arrivals_checked) {
		mover_check_arrivals(&run->s->m);
		run->arrivals_checked = true;
	}
	ret = flush_ranges(run, 0);
	if (ret)
		return ret;
	if (!mover_outbox_empty(&run->s->m))
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

/*
 * Counters right now, after the events read with the question: a discard
 * the target saw take effect was read by us before, so it is counted.
 * After DONE the answer is DONE again, never mistaken for a PROGRESS sent
 * before the question.
 */
void answer_query(struct run *run)
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
/*
 * A target alive but stuck (stopped, or discarding in a loop that starves
 * every fill) makes no progress: pushed, nothing handed over; pulled, no
 * report of arrivals. The caller's deadline ends the run then.
 */
static int check_progress(struct run *run, uint64_t now)
{
	struct uffdmove_source *s = run->s;
	uint64_t mark = s->pulling ? run->heard_ns : mover_progress(&s->m);

	if (mark != run->progress_mark || !run->progress_ns) {
		run->progress_mark = mark;
		run->progress_ns = now;
		return 0;
	}
	if (now - run->progress_ns <= s->opts.progress_timeout_ms * 1000000ULL)
		return 0;
	return mover_fail(&s->m, -ETIMEDOUT,
			  "no progress for %u ms (opts.progress_timeout_ms): the target is alive but %s",
			  s->opts.progress_timeout_ms,
			  s->pulling ? "reported nothing" : "takes no pages");
}

int check_deadlines(struct run *run)
{
	struct uffdmove_source *s = run->s;
	uint64_t limit = s->opts.peer_timeout_ms * 1000000ULL, now = now_ns();

	if (load_acquire(&s->cancel))
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
	if (s->opts.progress_timeout_ms && committed(run) &&
	    !run->done_sent && check_progress(run, now))
		return mover_fatal(&s->m);
	/* Pulling, it reports arrivals every few ms until FIN. */
	if (s->pulling && committed(run) &&
	    now - MAX(run->heard_ns, s->t_start) > limit)
		return mover_fail(&s->m, -ETIMEDOUT,
				  "the target, pulling, did not confirm the end within %u ms of its last report",
				  s->opts.peer_timeout_ms);
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
		 mover_error(&s->m));
	session_send(s->sock, &abort_msg, -1, 100);
	shutdown(s->sock, SHUT_RDWR);
	return err_set(&s->err, ECONNRESET,
		       "%s; the target never committed, but it touched guest RAM %llu times before (its guest may have run): do not resume the old guest",
		       mover_error(&s->m), (unsigned long long)run->faults.early);
}

/*
 * The session failed with @ret. Whatever ended it, a target that never
 * committed never ran the guest: say so with -ECANCELED, the one answer
 * that lets the old VMM resume. Then tell the target why.
 */
int end_failed(struct run *run, int ret)
{
	struct uffdmove_source *s = run->s;
	struct wire_msg abort_msg = { .type = WIRE_ABORT };
	struct uffdmove_stats st;
	const char *cause = mover_error(&s->m);

	if (!committed(run))
		settle_commit(run);
	if (!committed(run) && run->faults.early && !run->target_aborted)
		return end_touched(run);
	if (!committed(run))
		ret = -ECANCELED;
	else if (ret == -ECANCELED)	/* its GO crossed our end */
		ret = load_acquire(&s->cancel) ?
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
		       "%s (handed over %llu bytes with data, of %llu found so far)",
		       cause,
		       (unsigned long long)(st.bytes_moved + st.bytes_copied +
					    st.bytes_pulled),
		       (unsigned long long)st.bytes_populated);
}

UFFDMOVE_EXPORT int uffdmove_source_cancel(struct uffdmove_source *s)
{
	if (!s)
		return -EINVAL;
	store_release(&s->cancel, true);
	/* Final at once, not when the run next looks: a GO the target sends
	 * from now on fails in its sendmsg(); one already queued is still
	 * read, and counts (see settle_commit()). */
	if (load_acquire(&s->accepted))
		shutdown(s->sock, SHUT_RD);
	wake_kick(s->efd);
	return 0;
}

