// SPDX-License-Identifier: MIT
/*
 * The new VMM pulls (doc/design.md, "Pull"): the handshake's pull branch.
 * Ask to pull where we may, prove that we can read the source (its
 * cookie, read through process_vm_readv and checked against its pidfd)
 * and set the transfer core up over its memory; else push instead.
 * pull_run.c runs it from the commit on.
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/kcmp.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "mover.h"
#include "peer.h"
#include "pull.h"
#include "session.h"
#include "target.h"
#include "util.h"
#include "wire.h"


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

#define ADVICE_HOLD_NS	(50 * 1000 * 1000ULL)

/*
 * FAULT_AUTO serves faults a chunk at a time (@frequent), whose PMD move
 * a fault's page table would prevent, or a page each (thp.c). Small pages
 * again only once faults stayed rare for a while: the rate flaps (chunks
 * served whole slow the guest down), and every change of advice takes
 * the mmap lock for writing.
 */
static void fault_rate(void *arg, bool frequent)
{
	struct uffdmove_target *t = arg;
	uint64_t now = now_ns();

	if (frequent)
		t->pull->frequent_ns = now;
	thp_advice_set(t, t->pull->frequent_ns &&
			  now - t->pull->frequent_ns < ADVICE_HOLD_NS);
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
		.own_pm = &t->pm,
		.fault_rate = fault_rate,
		.fault_rate_arg = t,
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
