// SPDX-License-Identifier: MIT
/*
 * The old VMM while the new one pulls (doc/design.md, "Pull"): offer our
 * memory for reading, let the target prove it can read it, then wait for
 * its commit and free what it reports as arrived. Nothing here writes
 * guest RAM before the commit, so an abort stays lossless.
 */
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "compat.h"
#include "mover.h"
#include "run.h"
#include "session.h"
#include "source.h"
#include "util.h"
#include "wake.h"
#include "wire.h"

/* Why we will not be pulled, or UFFDMOVE_PULL_WHY_USED. */
static uint32_t pull_refused(const struct uffdmove_source *s,
			     const struct wire_msg *hello)
{
	if (s->opts.pull == UFFDMOVE_PULL_OFF ||
	    s->opts.mode == UFFDMOVE_MODE_MOVE)
		return UFFDMOVE_PULL_WHY_OFF_SOURCE;
	if (source_same_mm(hello))
		return UFFDMOVE_PULL_WHY_SAME_MM;
	return UFFDMOVE_PULL_WHY_USED;
}

/*
 * Under Yama ptrace_scope 1 only a declared ptracer may read us: the
 * authenticated target, for this session. Without Yama the call fails
 * with EINVAL and changes nothing.
 */
static void grant_reader(pid_t target)
{
	/* A socketpair's creator is whoever made it: maybe we ourselves. */
	if (target != getpid())
		prctl(PR_SET_PTRACER, (unsigned long)target, 0, 0, 0);
}

void source_revoke_reader(void)
{
	prctl(PR_SET_PTRACER, 0UL, 0, 0, 0);
}

/* ACCEPT(PULL): where our regions are, and the cookie to prove it. */
static int offer(struct uffdmove_source *s, const struct wire_msg *hello,
		 const struct plan_input *in)
{
	struct wire_msg ans = { .type = WIRE_ACCEPT };
	uint32_t i, j;

	/* The target's own random value, kept here: only the process that
	 * holds it proves to be us, whatever pid a liar names. */
	s->cookie = hello->hello.mm_cookie;
	ans.accept.primitive = UFFDMOVE_PRIM_PULL;
	ans.accept.n_src = hello->hello.n_regions;
	ans.accept.populated = mover_populated(&s->m);
	ans.accept.cookie_addr = (uintptr_t)&s->cookie;
	ans.accept.cookie = s->cookie;
	ans.accept.pid = (uint32_t)getpid();
	/* In the order of HELLO's regions: the target's view. */
	for (i = 0; i < hello->hello.n_regions; i++)
		for (j = 0; j < s->nregions; j++)
			if (in[j].dst == hello->hello.regions[i].addr)
				ans.accept.src[i] = in[j].src;
	return session_send(s->sock, &ans, -1,
			    (int)s->opts.handshake_timeout_ms);
}

/* ACCEPT(NONE): send your uffd instead, and why. */
static int decline(struct uffdmove_source *s, uint32_t why)
{
	struct wire_msg ans = { .type = WIRE_ACCEPT };

	ans.accept.primitive = UFFDMOVE_PRIM_NONE;
	ans.accept.cookie = why;
	return session_send(s->sock, &ans, -1,
			    (int)s->opts.handshake_timeout_ms);
}

int source_offer_pull(struct uffdmove_source *s, struct wire_msg *hello,
		      pid_t target, int *uffd)
{
	struct plan_input in[UFFDMOVE_REGIONS_MAX];
	uint32_t why = pull_refused(s, hello);
	bool answer;
	int ret;

	if (!why) {
		/* A core without a uffd, for bookkeeping: the target
		 * reads and counts our pages, we free them. */
		ret = source_match_regions(s, hello, in);
		if (!ret)
			ret = source_setup_mover(s, -1, false, in);
		if (ret)
			return ret;
		grant_reader(target);
		ret = offer(s, hello, in);
	} else {
		ret = decline(s, why);
	}
	if (ret) {
		source_revoke_reader();
		return err_set(&s->err, -ret, "sending ACCEPT: %s",
			       strerror(-ret));
	}
	/* PULL, or the target cannot read us: HELLO again, with its uffd. */
	ret = source_recv_hello(s, hello, uffd, &answer,
				why ? HELLO_AFTER_DECLINE : HELLO_AFTER_OFFER);
	if (ret || *uffd >= 0) {
		source_revoke_reader();
		source_teardown_mover(s);
		s->pull_why = why ?: wire_hello_why(hello) ?:
			      UFFDMOVE_PULL_WHY_DENIED;
		return ret;
	}
	s->pulling = true;
	return 0;
}

/* RELEASE: the target holds these ranges (our addresses) now. */
static int release(struct run *run, const struct wire_msg *msg)
{
	struct uffdmove_source *s = run->s;
	uint32_t i;
	int ret;

	if (!committed(run))
		return mover_fail(&s->m, -EPROTO,
				  "the target sent RELEASE before committing");
	for (i = 0; i < msg->ranges.n; i++) {
		const struct wire_range *r = &msg->ranges.ranges[i];

		if (!source_owns(s, r->start, r->len) ||
		    !IS_ALIGNED(r->start | r->len, PAGE_SZ))
			return mover_fail(&s->m, -EPROTO,
					  "RELEASE 0x%llx+%llu is not pages of guest RAM",
					  (unsigned long long)r->start,
					  (unsigned long long)r->len);
		ret = mover_release(&s->m, r->start, r->len, true);
		if (ret)
			return mover_fail(&s->m, ret,
					  "freeing 0x%llx+%llu: %s",
					  (unsigned long long)r->start,
					  (unsigned long long)r->len,
					  strerror(-ret));
	}
	return 0;
}

int source_pull_message(struct run *run, const struct wire_msg *msg)
{
	switch (msg->type) {
	case WIRE_RELEASE:
		return release(run, msg);
	case WIRE_FIN:
		if (!committed(run))
			return mover_fail(&run->s->m, -EPROTO,
					  "the target sent FIN before GO");
		run->fin = true;
		return 0;
	default:
		return 1;	/* not pull's: the common rules apply */
	}
}

/*
 * The run while the target pulls: nothing to serve, only its messages to
 * follow until FIN, with the same deadlines and cancel as a push.
 */
int source_serve_pull(struct run *run)
{
	struct uffdmove_source *s = run->s;
	int ret;

	/* Our own figure, for our stats: counted now, while the target
	 * commits, not during the handshake, which is the guest's downtime. */
	ret = mover_count_populated(&s->m);
	if (ret)
		return mover_fail(&s->m, ret, "reading /proc/self/pagemap: %s",
				  strerror(-ret));
	while (!run->fin) {
		/* A kick (cancel) is seen by check_deadlines(). */
		wake_wait(s->sock, s->efd, (int)(PROGRESS_EVERY_NS / 1000000));
		ret = handle_socket(run);
		if (!ret)
			ret = check_deadlines(run);
		if (!ret && run->query)
			answer_query(run);
		if (ret)
			return ret;
		periodic(run, false);
	}
	periodic(run, true);
	return 0;
}
