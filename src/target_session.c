// SPDX-License-Identifier: MIT
/*
 * The new VMM's session with the source: the handshake that gives it our
 * uffd, the commit, following its messages until DONE is confirmed by
 * what guest RAM holds, and the ends short of DONE (doc/design.md).
 */
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <unistd.h>

#include "pagemap.h"
#include "peer.h"
#include "probe.h"
#include "pull.h"
#include "session.h"
#include "target.h"
#include "util.h"
#include "wire.h"


/* HELLO: our regions, features and the cookie that tells one mm. */
void target_build_hello(struct uffdmove_target *t, struct wire_msg *m,
			bool pull)
{
	size_t i;

	memset(m, 0, sizeof(*m));
	m->type = WIRE_HELLO;
	m->hello.flags = pull ? WIRE_HELLO_PULL :
			 t->pull_why << WIRE_HELLO_WHY_SHIFT;
	m->hello.features = t->features;
	m->hello.n_regions = (uint32_t)t->nregions;
	if (getrandom(&t->mm_cookie, sizeof(t->mm_cookie), 0) !=
	    sizeof(t->mm_cookie))
		t->mm_cookie = now_ns() ^ (uintptr_t)t;
	t->mm_cookie |= 1;
	m->hello.mm_cookie_addr = (uintptr_t)&t->mm_cookie;
	m->hello.mm_cookie = t->mm_cookie;
	for (i = 0; i < t->nregions; i++) {
		struct wire_region *r = &m->hello.regions[i];

		memcpy(r->name, t->regions[i].name, sizeof(r->name));
		r->addr = t->regions[i].addr;
		r->len = t->regions[i].len;
		r->page_size = PAGE_SZ;
		r->flags = t->thp[i] ? WIRE_REGION_THP : 0;
		r->ioctls = t->ioctls[i];
	}
}

/* The source's answer to HELLO: 0 for ACCEPT (in @m), else the error. */
int target_await_answer(struct uffdmove_target *t, struct wire_msg *m)
{
	char why[160];
	int ret;

	ret = session_recv(t->sock, m, (int)t->opts.handshake_timeout_ms,
			   why, sizeof(why));
	if (ret == -EBADMSG)
		return err_set(&t->err, EPROTO,
			       "bad answer from the source: %s", why);
	if (ret)
		return err_set(&t->err, ret == -EMSGSIZE ? EPROTO : -ret,
			       "waiting for the source's answer: %s",
			       ret == -ETIMEDOUT ?
			       "no answer within the handshake deadline" :
			       strerror(-ret));
	if (m->type == WIRE_REJECT)
		return err_set(&t->err, (int)m->reason.errnum,
			       "the source rejected the handoff: %s",
			       m->reason.text);
	if (m->type != WIRE_ACCEPT)
		return err_set(&t->err, EPROTO,
			       "expected ACCEPT or REJECT, got %s",
			       wire_type_name(m->type));
	return 0;
}

/* The handshake failed here: a source still waiting for our answer
 * learns it at once instead of at its deadline (best effort). */
static void give_up(struct uffdmove_target *t)
{
	struct wire_msg m = { .type = WIRE_ABORT };

	m.reason.errnum = ECANCELED;
	str_copy(m.reason.text, sizeof(m.reason.text), t->err.msg);
	session_send(t->sock, &m, -1, 0);
}

/*
 * Will the source MOVE pages into guest RAM? Then a THP chunk keeps its
 * PMD, and a fault's page table (thp_advice_pause()) would split it. The
 * kernel allows that only within one process, or where the probe found
 * cross-process MOVE working. A pull moves from our staging, but checks
 * each PMD it moved.
 */
static bool pushed_by_move(const struct uffdmove_target *t, pid_t source)
{
	bool works;

	if (t->pull)
		return false;
	if (source == getpid())
		return true;
	return probe_cross_move_known(&works) && works;
}

UFFDMOVE_EXPORT int uffdmove_target_handoff(struct uffdmove_target *t,
					    int sock)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.fd = sock };
	struct wire_msg *m;
	bool pull;
	pid_t pid;
	int ret;

	if (!t)
		return -EINVAL;
	ret = session_open(&t->err, t->state == TGT_NEW,
			   "uffdmove_target_handoff() may be called once, on a new target",
			   sock, t->opts.expected_uid, t->opts.expected_pid,
			   &pid);
	if (ret == -ENOTSOCK)
		return -EINVAL;
	t->sock = sock;
	if (ret)
		return target_release(t, ret);
	t->lazyfreed_start = target_lazyfreed();
	m = calloc(1, sizeof(*m));
	if (!m)
		return target_release(t, err_set(&t->err, ENOMEM,
						 "out of memory"));
	pull = pull_wanted(t);
	target_build_hello(t, m, pull);
	ret = session_send(sock, m, pull ? -1 : t->uffd,
			   (int)t->opts.handshake_timeout_ms);
	if (ret)
		ret = err_set(&t->err, -ret, "sending HELLO: %s",
			      strerror(-ret));
	else
		ret = target_await_answer(t, m);
	if (pull && !ret)
		ret = pull_answer(t, m, pid);
	else if (!ret && (m->accept.primitive == UFFDMOVE_PRIM_NONE ||
			  m->accept.primitive == UFFDMOVE_PRIM_PULL))
		ret = err_set(&t->err, EPROTO,
			      "the source answered our uffd with primitive %u",
			      m->accept.primitive);
	/* Before the commit lets the guest fault (thp.c says why); not
	 * for faults that pull whole chunks, which keep THP by a PMD. */
	if (!ret && !pushed_by_move(t, pid) &&
	    !(t->pull && t->opts.fault_policy == UFFDMOVE_FAULT_CHUNK))
		thp_advice_pause(t);
	free(m);
	if (!ret && epoll_ctl(t->epfd, EPOLL_CTL_ADD, sock, &ev) < 0)
		ret = err_set(&t->err, errno, "epoll_ctl: %s",
			      strerror(errno));
	if (ret) {
		give_up(t);
		return target_release(t, ret);
	}
	t->state = TGT_ACCEPTED;
	return 0;
}

UFFDMOVE_EXPORT int uffdmove_target_abort(struct uffdmove_target *t)
{
	struct wire_msg m = { .type = WIRE_ABORT };

	int ret;

	if (!t)
		return -EINVAL;
	pthread_mutex_lock(&t->lock);
	if (t->state != TGT_ACCEPTED) {
		ret = err_set(&t->err, EINVAL,
			      "abort is possible only between a successful handoff and the first process/wait");
	} else {
		m.reason.errnum = ECANCELED;
		str_copy(m.reason.text, sizeof(m.reason.text),
			 "the target aborted before resuming its guest");
		session_send(t->sock, &m, -1, 1000);
		ret = target_release(t, 0);
	}
	pthread_mutex_unlock(&t->lock);
	return ret;
}

/*
 * The source gave up before we committed: the old VMM keeps the guest, so
 * give everything back as abort does, and never commit.
 */
static int cancelled(struct uffdmove_target *t, const char *why)
{
	t->failure = err_set(&t->err, ECANCELED,
		"the source ended the handoff before the commit (%s): do not resume the guest here",
		why);
	return target_release(t, -ECANCELED);
}

/*
 * Read what the source sent. Returns 0 when nothing is left, 1 at DONE
 * (taken only once committed: before, it waits in t->done_seen), or the
 * session's end.
 */
static int read_messages(struct uffdmove_target *t)
{
	struct wire_msg m;
	char why[160];
	size_t i;
	int ret;

	for (;;) {
		ret = session_recv(t->sock, &m, 0, why, sizeof(why));
		if (ret == -EAGAIN)
			return 0;
		if (ret == -EBADMSG && t->state == TGT_ACCEPTED)
			return cancelled(t, why);
		if (ret == -EBADMSG)
			return target_orphan(t, -EPROTO, why);
		if (ret && t->state == TGT_ACCEPTED)
			return cancelled(t, "it went away");
		if (ret)
			return target_orphan(t, ret == -EMSGSIZE ? -EPROTO : -ECONNRESET,
				      "the source went away");
		/* Pulling, we count and finish ourselves: a pushing source's
		 * messages are a protocol error here (a DONE would end the
		 * session with pages still missing). */
		if (t->pull && (m.type == WIRE_PROGRESS ||
				m.type == WIRE_RANGE_DONE ||
				m.type == WIRE_DONE))
			m.type = 0;
		switch (m.type) {
		case WIRE_PROGRESS:
			t->st = m.stats;
			break;
		case WIRE_RANGE_DONE:
			for (i = 0; i < m.ranges.n; i++)
				thp_mark_done(t, m.ranges.ranges[i].start,
					      m.ranges.ranges[i].len);
			break;
		case WIRE_DONE:
			t->st = m.stats;
			t->done_seen = true;
			if (t->state == TGT_RUNNING)
				return 1;
			break;
		case WIRE_ABORT:
			/* Before the commit ECANCELED gives the guest back;
			 * anything else (we touched guest RAM early) must not
			 * unregister it under threads that may be running. */
			if (t->state == TGT_ACCEPTED &&
			    m.reason.errnum == ECANCELED)
				return cancelled(t, m.reason.text);
			/* -ECANCELED says "never committed": not ours now. */
			ret = -(int)m.reason.errnum;
			return target_orphan(t, ret == -ECANCELED || ret >= 0 ?
				      -ECONNRESET : ret, m.reason.text);
		default:
			if (t->state == TGT_ACCEPTED)
				return cancelled(t, "an unexpected message");
			return target_orphan(t, -EPROTO,
				      "the source sent an unexpected message");
		}
	}
}

/*
 * The point of no return. What the source sent so far is read first: if it
 * gave up, we must not commit. If it gives up meanwhile it shuts its
 * receiving side, our GO fails, and its ABORT is waiting to be read.
 */
static int commit(struct uffdmove_target *t)
{
	struct wire_msg go = { .type = WIRE_GO };
	int ret;

	ret = read_messages(t);
	if (ret < 0)
		return ret;
	ret = session_send(t->sock, &go, -1, 1000);
	if (ret) {
		/* Its ABORT follows the shutdown that failed our GO. */
		struct pollfd pfd = { .fd = t->sock, .events = POLLIN };

		poll(&pfd, 1, 1000);
		ret = read_messages(t);
		if (ret < 0)
			return ret;
		return target_orphan(t, -ECONNRESET,
			      "the source went away before the commit");
	}
	t->state = TGT_RUNNING;
	t->t_start = now_ns();
	target_watch_progress(t);
	if (!t->pull) {
		keeper_start(t);
		return 0;
	}
	/* Pulling, our own fault thread reads the uffd from now on. */
	ret = pull_start(t);
	return ret ? target_orphan(t, ret, "starting the pull threads") : 0;
}

/* Pulling: every chunk in (1, with the final counters), not yet (0), or
 * the pull failed: the source died, or we may no longer read it. */
static int pull_progress(struct uffdmove_target *t)
{
	int ret = pull_state(t);

	/* A source that died reads as a hang-up, as it does when pushing. */
	if (ret == -ESRCH)
		ret = -ECONNRESET;
	if (ret < 0)
		return target_orphan(t, ret, pull_error(t));
	if (ret == 1)
		pull_stats(t, &t->st);
	return ret;
}

static int process_locked(struct uffdmove_target *t, bool may_block)
{
	int ret;

	switch (t->state) {
	case TGT_ACCEPTED:
		ret = commit(t);
		if (ret)
			return ret;
		break;
	case TGT_RUNNING:
		break;
	case TGT_DONE:
		return 1;
	case TGT_ORPHANED:
		return t->failure;
	case TGT_CLOSED:	/* the source cancelled: say so again */
		if (t->failure)
			return t->failure;
		/* fall through */
	default:
		return err_set(&t->err, EINVAL,
			       "no handoff in progress (call uffdmove_target_handoff() first)");
	}
	if (load_acquire(&t->finisher.here))
		return 0;	/* another call checks the end; it lets go */
	if (t->finisher.started)
		return finish_result(t);
	/* Pulled in full, we need nothing more from the source: a source
	 * that gave up waiting for us meanwhile changes nothing. */
	ret = t->done_seen ? 1 : t->pull ? pull_progress(t) : 0;
	if (ret == 0)
		ret = read_messages(t);
	if (ret == 0)
		ret = target_check_progress(t);
	/* Checking guest RAM takes milliseconds per GiB: only in a call
	 * that may block. */
	return ret == 1 ? finish_start(t, may_block) : ret;
}

static int process(struct uffdmove_target *t, bool may_block)
{
	int ret;

	if (!t)
		return -EINVAL;
	if (finish_busy(t))	/* it holds the handle for a while */
		return 0;
	pthread_mutex_lock(&t->lock);
	ret = process_locked(t, may_block);
	pthread_mutex_unlock(&t->lock);
	return ret;
}

UFFDMOVE_EXPORT int uffdmove_target_process(struct uffdmove_target *t)
{
	return process(t, false);
}

/* Under the lock: the end's thread may have failed meanwhile, and its
 * message must not be overwritten by ours. */
static int timed_out(struct uffdmove_target *t, int timeout_ms)
{
	int ret;

	pthread_mutex_lock(&t->lock);
	ret = process_locked(t, false);
	if (ret == 0)
		ret = err_set(&t->err, ETIMEDOUT,
			      "handoff not complete after %d ms", timeout_ms);
	pthread_mutex_unlock(&t->lock);
	return ret > 0 ? 0 : ret;
}

UFFDMOVE_EXPORT int uffdmove_target_wait(struct uffdmove_target *t,
					 int timeout_ms)
{
	struct epoll_event ev;
	uint64_t deadline = timeout_ms < 0 ? 0 :
			    now_ns() + (uint64_t)timeout_ms * 1000000ULL;
	int ret, left = timeout_ms;

	for (;;) {
		/* The end's check, with time enough for it, is done here. */
		ret = process(t, left < 0 || left >= FINISH_BLOCKS_MS);
		if (ret)
			return ret > 0 ? 0 : ret;
		if (timeout_ms >= 0) {
			uint64_t now = now_ns();

			if (now >= deadline)
				return timed_out(t, timeout_ms);
			left = (int)((deadline - now) / 1000000) + 1;
		}
		if (epoll_wait(t->epfd, &ev, 1, left) < 0 && errno != EINTR)
			return err_set(&t->err, errno, "epoll_wait: %s",
				       strerror(errno));
	}
}

