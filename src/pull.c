// SPDX-License-Identifier: MIT
/*
 * The new VMM pulls (doc/design.md, "Pull"). After the handshake proved we
 * can read the source (its cookie, read through process_vm_readv and
 * checked against its pidfd), the transfer core runs here: pullers take
 * chunks in order, a fault thread of ours reads the uffd and serves
 * faults first, and the ranges that arrived go to the source in RELEASE
 * messages so it frees them as we go.
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/kcmp.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "faults.h"
#include "mover.h"
#include "peer.h"
#include "pull.h"
#include "session.h"
#include "target.h"
#include "util.h"
#include "wake.h"
#include "wire.h"

#define PULLERS_MAX		PULL_THREADS_MAX
#define PULLERS_DEFAULT		2
#define RELEASE_EVERY_MS	5	/* what the source holds twice, at most */
#define RELEASE_BATCH		(8u << 20)	/* a RELEASE wakes the source */

struct pull {
	struct mover m;
	struct faults faults;
	pthread_t fault_thread, pullers[PULLERS_MAX];
	size_t npullers;
	bool fault_running;
	int efd;		/* wakes the fault thread: stop */
	int done_efd;		/* in the target's epoll set: look at us */
	bool stop;		/* atomic */
	bool done_told;		/* atomic: done_efd written at the end */
};

bool pull_wanted(struct uffdmove_target *t)
{
	size_t i;

	if (t->opts.pull == UFFDMOVE_PULL_OFF) {
		t->pull_why = UFFDMOVE_PULL_WHY_OFF_TARGET;
		return false;
	}
	for (i = 0; i < t->nregions; i++)
		if (!(t->ioctls[i] & (1ULL << _UFFDIO_MOVE)))
			break;
	if (!(t->features & UFFD_FEATURE_MOVE) || i < t->nregions) {
		t->pull_why = UFFDMOVE_PULL_WHY_NO_MOVE;
		return false;
	}
	/* 4 KiB pages come through a bounce buffer: a second copy. */
	for (i = 0; i < t->nregions && !t->thp[i]; i++)
		;
	if (t->opts.pull == UFFDMOVE_PULL_AUTO && i == t->nregions) {
		t->pull_why = UFFDMOVE_PULL_WHY_NO_THP;
		return false;
	}
	return true;
}

/*
 * Read the cookie the source put in its memory: proof that we may read it
 * (ptrace rules) and that pid is the process on the socket. PULL_WHY_DENIED
 * when the kernel says no, 0 when it is proven, or the handshake's error.
 */
static int prove_access(struct uffdmove_target *t, const struct wire_msg *ans,
			pid_t pid, int pidfd)
{
	struct pollfd pfd = { .fd = pidfd, .events = POLLIN };
	uint64_t v = 0;
	struct iovec local = { &v, sizeof(v) };
	struct iovec remote = {
		(void *)(uintptr_t)ans->accept.cookie_addr, sizeof(v)
	};

	if (pid == getpid() ||
	    syscall(SYS_kcmp, getpid(), pid, KCMP_VM, 0, 0) == 0)
		return err_set(&t->err, EPROTO,
			       "the source names our own address space (pid %d) as its own",
			       (int)pid);
	if (process_vm_readv(pid, &local, 1, &remote, 1, 0) != sizeof(v)) {
		if (errno == EPERM || errno == EACCES)
			return UFFDMOVE_PULL_WHY_DENIED;
		if (errno == ESRCH)
			return err_set(&t->err, ECONNRESET,
				       "the source (pid %d) went away during the handshake",
				       (int)pid);
		return err_set(&t->err, EPROTO,
			       "reading the source's cookie: %s",
			       strerror(errno));
	}
	/* Our HELLO's random cookie, which only the source has seen. */
	if (v != t->mm_cookie || ans->accept.cookie != t->mm_cookie ||
	    poll(&pfd, 1, 0) != 0)
		return err_set(&t->err, EPROTO,
			       "the source's cookie does not match: pid %d is not the process on the socket",
			       (int)pid);
	return 0;
}

/*
 * Where the source says its regions are: aligned, and mapped there as
 * private anonymous memory, in /proc/<pid>/maps. An address it does not
 * map would read as holes, and guest RAM as zeros.
 */
static int check_source_regions(struct uffdmove_target *t,
				const struct wire_msg *ans, pid_t pid,
				struct plan_input *in)
{
	struct session_region src[UFFDMOVE_REGIONS_MAX];
	struct err_buf err;
	size_t i;

	for (i = 0; i < t->nregions; i++) {
		in[i] = (struct plan_input){
			.src = ans->accept.src[i], .dst = t->regions[i].addr,
			.len = t->regions[i].len, .thp = t->thp[i],
		};
		if (!IS_ALIGNED(in[i].src, PAGE_SZ) ||
		    in[i].src + in[i].len < in[i].src)
			return err_set(&t->err, EPROTO,
				       "ACCEPT: source address 0x%llx of region '%s' is unusable",
				       (unsigned long long)in[i].src,
				       t->regions[i].name);
		src[i] = t->regions[i];
		src[i].addr = in[i].src;
	}
	if (session_check_mappings_of(&err, pid, src, t->nregions, false))
		return err_set(&t->err, EPROTO, "the source's %s", err.msg);
	return 0;
}

/* The core over the source's memory; takes @pidfd. */
static int setup(struct uffdmove_target *t, const struct wire_msg *ans,
		 pid_t pid, int pidfd)
{
	struct plan_input in[UFFDMOVE_REGIONS_MAX];
	struct mover_config cfg = {
		.uffd = t->uffd,
		.mode = UFFDMOVE_MODE_AUTO,
		.move_offered = true,
		.pull_pid = pid,
		.pull_pidfd = pidfd,
		.fault_policy = t->opts.fault_policy,
		.regions = in,
		.nregions = t->nregions,
	};
	struct pull *p;
	int ret;

	ret = check_source_regions(t, ans, pid, in);
	if (ret) {
		close(pidfd);
		return ret;
	}
	p = calloc(1, sizeof(*p));
	if (!p) {
		close(pidfd);
		return err_set(&t->err, ENOMEM, "out of memory");
	}
	p->efd = p->done_efd = -1;
	ret = mover_setup(&p->m, &cfg, &t->err);
	if (ret) {
		mover_fini(&p->m);
		free(p);
		/* Its page map is as private as its memory. */
		return ret == -EACCES || ret == -EPERM ?
		       UFFDMOVE_PULL_WHY_DENIED : ret;
	}
	t->pull = p;
	return 0;
}

/* The source cannot be pulled: HELLO again, with the uffd this time. */
static int push_instead(struct uffdmove_target *t, struct wire_msg *ans)
{
	int ret;

	target_build_hello(t, ans, false);
	ret = session_send(t->sock, ans, t->uffd,
			   (int)t->opts.handshake_timeout_ms);
	if (ret)
		return err_set(&t->err, -ret, "sending HELLO: %s",
			       strerror(-ret));
	ret = target_await_answer(t, ans);
	if (!ret && (ans->accept.primitive == UFFDMOVE_PRIM_NONE ||
		     ans->accept.primitive == UFFDMOVE_PRIM_PULL))
		ret = err_set(&t->err, EPROTO,
			      "the source answered our uffd with primitive %u",
			      ans->accept.primitive);
	return ret;
}

int pull_answer(struct uffdmove_target *t, struct wire_msg *ans, pid_t peer)
{
	struct wire_msg go_pull = { .type = WIRE_PULL };
	pid_t pid = (pid_t)ans->accept.pid;
	int why, pidfd = -1;

	switch (ans->accept.primitive) {
	case UFFDMOVE_PRIM_PULL:
		if (ans->accept.n_src != t->nregions)
			return err_set(&t->err, EPROTO,
				       "ACCEPT: %u source addresses for %zu regions",
				       ans->accept.n_src, t->nregions);
		if (t->opts.expected_pid && pid != t->opts.expected_pid)
			return err_set(&t->err, EPERM,
				       "the source says it is pid %d, not the expected pid %d",
				       (int)pid, (int)t->opts.expected_pid);
		pidfd = peer_pidfd(t->sock, pid == peer, pid);
		if (pidfd == -ESRCH)	/* never send our uffd to its heir */
			return err_set(&t->err, ECONNRESET,
				       "the source (pid %d) went away during the handshake",
				       (int)pid);
		if (pidfd < 0) {
			why = UFFDMOVE_PULL_WHY_DENIED;
			break;
		}
		why = prove_access(t, ans, pid, pidfd);
		if (why == 0)
			why = setup(t, ans, pid, pidfd);	/* takes it */
		else
			close(pidfd);
		if (why == 0) {
			why = session_send(t->sock, &go_pull, -1,
					   (int)t->opts.handshake_timeout_ms);
			return why ? err_set(&t->err, -why,
					     "sending PULL: %s",
					     strerror(-why)) : 0;
		}
		break;
	case UFFDMOVE_PRIM_NONE:
		why = (int)ans->accept.cookie;
		break;
	default:
		return err_set(&t->err, EPROTO,
			       "ACCEPT with primitive %u, but we sent no uffd",
			       ans->accept.primitive);
	}
	if (why < 0)
		return why;
	t->pull_why = (uint32_t)why;
	return push_instead(t, ans);
}

/* ------------------------------------------------------------ running */

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

static void *fault_main(void *arg)
{
	struct uffdmove_target *t = arg;
	struct pull *p = t->pull;
	int ret;

	while (!load_acquire(&p->stop)) {
		if (wake_wait(t->uffd, p->efd, fault_timeout(t)))
			continue;	/* re-check stop */
		if (mover_fatal(&p->m)) {
			hold(t);
			continue;
		}
		ret = faults_drain(&p->faults);
		if (ret >= 0)
			ret = faults_retry(&p->faults);
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

	while (!load_acquire(&p->stop)) {
		c = mover_next_chunk(&p->m);
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
	p->fault_running = true;
	for (i = 0; i < MIN(n, PULLERS_MAX); i++) {
		ret = pthread_create(&p->pullers[i], NULL, puller_main, t);
		if (ret)
			return -ret;
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
