// SPDX-License-Identifier: MIT
/*
 * The target's side of the handoff, the same in an exec'ed new VMM and
 * with --same-process: register fresh guest RAM, commit, run the guest
 * while its RAM streams in, then stop it, check every byte and fill the
 * report.
 */
#include "toy.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Guest activity at the resume: the report counts what came after. */
struct counts {
	uint64_t reads, writes, io;
};

/* After the source accepted: the point of no return; resume at once. */
int commit(struct uffdmove_target *t, struct report *r)
{
	int ret;

	r->handoff_started = true;
	ret = uffdmove_target_process(t);
	if (ret < 0) {
		report_error(r, "committing: %s", uffdmove_target_error(t));
		return ret;
	}
	return 0;
}

/*
 * Threads are blocked in guest RAM; freeing the target would apply the
 * death policy under them. The guest is lost: stop it the way a VMM
 * does, by exiting.
 */
void abandon_guest(void)
{
	fflush(NULL);
	_exit(1);
}

/* The pause->resume span ends when the vCPUs may run again. */
static int resume_guest(struct vm *vm, struct report *r, uint64_t gen)
{
	r->resume_ns = now_ns();
	if (gen)
		return vm_start(vm, gen);
	vm_resume(vm, vm->ram);
	return 0;
}

/* Until the last page arrived (0) or the session failed; with progress. */
static int stream_in(struct uffdmove_target *t, struct report *r)
{
	struct progress pr;
	int ret;

	progress_init(&pr, r->populated);
	for (;;) {
		ret = uffdmove_target_wait(t, pr.tty ? 100 : 250);
		if (ret != -ETIMEDOUT)
			break;
		/* -ETIMEDOUT is also what a session that failed with
		 * ETIMEDOUT returns: process() tells them apart. */
		ret = uffdmove_target_process(t);
		if (ret) {
			ret = ret > 0 ? 0 : ret;
			break;
		}
		uffdmove_target_stats(t, &r->st);
		progress_update(&pr, &r->st);
	}
	progress_end(&pr);
	uffdmove_target_stats(t, &r->st);
	r->have_stats = true;
	return ret;
}

static void count_since(const struct vm *vm, const struct counts *c0,
			struct report *r)
{
	struct counts c;

	vm_counters(vm, &c.reads, &c.writes, &c.io);
	r->reads = c.reads - c0->reads;
	r->writes = c.writes - c0->writes;
	r->io_ops = c.io - c0->io;
}

/* What a guest thread found wrong fails the run. */
static int guest_failed(const struct vm *vm, struct report *r)
{
	r->bad_addr = vm->fail.addr;
	report_error(r, "%s", vm->fail.why);
	return 1;
}

#define COLLAPSE_WAIT_MS	5000

/* THP comes back in the library's own thread after DONE: give it a few
 * seconds (the VMM itself need not wait), to report what it achieved.
 * thp_collapsing drops to 0 when it is over; thp_uncollapsed then counts
 * the chunks it gave up on. */
static void wait_collapse(struct uffdmove_target *t, struct report *r)
{
	struct uffdmove_stats st;
	int ms;

	for (ms = 0; ms < COLLAPSE_WAIT_MS; ms += 10) {
		uffdmove_target_stats(t, &st);
		if (!st.thp_collapsing)
			break;
		usleep(10000);
	}
	uffdmove_target_stats(t, &r->st);
}

/* Every page arrived: stop the guest and check all of guest RAM. */
static int finish_complete(struct vm *vm, struct uffdmove_target *t,
			   struct report *r, const struct counts *c0)
{
	struct verify_result vr;
	unsigned int abandoned, npoison;
	uintptr_t poison;
	int io_errno, ret;

	r->done = true;
	r->done_ns = now_ns();
	abandoned = vm_stop(vm, 10000);
	count_since(vm, c0, r);
	if (abandoned) {
		report_error(r, "%u guest thread%s still blocked in guest RAM 10 s after the handoff completed",
			     abandoned, abandoned == 1 ? " is" : "s are");
		return 3;
	}
	range_usage(vm->ram, vm->size, &r->rss_done, &r->huge_done);
	if (r->o->thp)
		wait_collapse(t, r);
	range_usage(vm->ram, vm->size, &r->rss_after, &r->huge_after);
	poison = vm_poison_hit(vm, &npoison);
	io_errno = vm->agents[vm->nagents - 1].io_errno;
	if (npoison && !vm->fail.set)
		failure_set(&vm->fail, poison,
			    "a guest thread could not access guest RAM at %p: %s",
			    (void *)poison,
			    io_errno ? strerror(io_errno) : "SIGBUS");
	if (vm->fail.set)
		return guest_failed(vm, r);
	ret = vm_verify(vm, false, &vr);
	if (ret) {
		report_error(r, "cannot check guest RAM: %s", strerror(-ret));
		return 1;
	}
	if (!vr.ok)
		return guest_failed(vm, r);
	r->verified = true;
	r->verified_bytes = vr.checked;
	return 0;
}

/*
 * The handoff failed after the guest resumed (the source died, say):
 * guest RAM is incomplete and the guest cannot go on. Stop what still
 * runs; threads blocked on missing pages are abandoned (the process exits
 * without them) and poisoned ones have stopped. Check what arrived.
 */
static int finish_failed(struct vm *vm, struct uffdmove_target *t,
			 struct report *r, int err, const struct counts *c0)
{
	struct verify_result vr;
	unsigned int abandoned, npoison;
	uintptr_t poison;

	report_error(r, "the handoff failed after the guest resumed: %s (%s)",
		     uffdmove_target_error(t), strerror(-err));
	abandoned = vm_stop(vm, STOP_TIMEOUT_MS);
	count_since(vm, c0, r);
	poison = vm_poison_hit(vm, &npoison);
	if (abandoned)
		say("new VMM: %u guest thread%s blocked on guest pages that will never arrive; stopping the guest without %s",
		    abandoned, abandoned == 1 ? " is" : "s are",
		    abandoned == 1 ? "it" : "them");
	if (npoison)
		say("new VMM: %u guest thread%s hit poisoned guest RAM (SIGBUS/EFAULT), first at %p, and stopped",
		    npoison, npoison == 1 ? "" : "s", (void *)poison);
	if (vm->fail.set) {
		r->bad_addr = vm->fail.addr;
		report_append(r, "; and a guest thread read wrong bytes: %s",
			      vm->fail.why);
	} else if (!vm_verify(vm, true, &vr)) {
		r->checked_bytes = vr.checked;
		r->missing_bytes = vr.missing;
		if (!vr.ok) {
			r->bad_addr = vm->fail.addr;
			report_append(r, "; and a page that arrived is wrong: %s",
				      vm->fail.why);
		}
	}
	return abandoned ? 3 : 1;	/* 3: do not free the target */
}

/*
 * The target's life after the commit: the guest runs (new threads of
 * generation @gen, or the paused ones if 0) while RAM streams in; then
 * stop, check and report. Returns the exit status, or 3 when guest
 * threads are stuck in guest RAM (see abandon_guest()).
 */
int run_guest_until_done(struct vm *vm, struct uffdmove_target *t,
			 struct report *r, uint64_t gen)
{
	struct memwatch mw;
	struct counts c0;
	int ret = 0;

	vm_counters(vm, &c0.reads, &c0.writes, &c0.io);
	/* The old VMM is our parent, unless we are both in one process. */
	memwatch_start(&mw, r->same_process ? 0 : getppid());
	if (!r->o->paused)
		ret = resume_guest(vm, r, gen);
	if (ret) {
		report_error(r, "starting the guest threads: %s",
			     strerror(-ret));
		return 1;	/* cannot stop safely; exit */
	}
	ret = stream_in(t, r);
	r->peak_host = memwatch_stop(&mw);
	if (r->o->paused && resume_guest(vm, r, gen)) {
		report_error(r, "starting the guest threads");
		return 1;
	}
	if (ret == 0)
		return finish_complete(vm, t, r, &c0);
	return finish_failed(vm, t, r, ret, &c0);
}
