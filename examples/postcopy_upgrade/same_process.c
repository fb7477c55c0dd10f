// SPDX-License-Identifier: MIT
/*
 * --same-process: one VMM plays both parts. The source serves from a
 * thread and the guest moves to a second mapping in the same process,
 * where UFFDIO_MOVE really moves pages.
 */
#include "toy.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct source_thread {
	struct uffdmove_source *s;
	int sock, ret;
	char error[512];
};

struct same {
	const struct options *o;
	struct report r;
	struct vm *vm;
	uint8_t *old_ram, *new_ram;
	struct uffdmove_target *t;
	struct source_thread src;
	pthread_t stid;
	int sv[2];
	bool joined;		/* no source thread runs */
};

static void *source_thread_main(void *arg)
{
	struct source_thread *st = arg;

	st->ret = uffdmove_source_accept(st->s, st->sock);
	if (!st->ret)
		st->ret = uffdmove_source_run(st->s);
	if (st->ret)
		snprintf(st->error, sizeof(st->error), "%s",
			 uffdmove_source_error(st->s));
	return NULL;
}

static void sp_join(struct same *sp)
{
	pthread_join(sp->stid, NULL);
	sp->joined = true;
}

/* Both mappings, and the guest running on the old one. */
static int sp_boot(struct same *sp)
{
	const struct options *o = sp->o;
	const char *what;
	int ret;

	sp->vm = vm_alloc(o, &sp->old_ram);
	sp->new_ram = sp->old_ram ? map_guest_ram(o->mem, o->thp) : NULL;
	if (!sp->new_ram) {
		report_error(&sp->r, "mapping guest RAM: %s", strerror(errno));
		return -1;
	}
	if (catch_poison(o)) {
		report_error(&sp->r, "sigaction: %s", strerror(errno));
		return -1;
	}
	ret = vm_boot(sp->vm, o, sp->old_ram, "VMM", &sp->r.populated, &what);
	if (ret) {
		report_error(&sp->r, "%s: %s", what, strerror(-ret));
		return -1;
	}
	return 0;
}

/* The "new VMM": fresh guest RAM, registered while the guest runs; and
 * the source, on the old mapping. */
static int sp_setup(struct same *sp)
{
	const struct options *o = sp->o;
	int ret;

	ret = handoff_end_new(o, sp->new_ram, NULL, &sp->t);
	if (ret) {
		report_error(&sp->r, "uffdmove_target_new: %s",
			     strerror(-ret));
		return -1;
	}
	ret = handoff_end_new(o, sp->old_ram, &sp->src.s, NULL);
	if (!ret &&
	    socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp->sv))
		ret = -errno;
	if (ret) {
		report_error(&sp->r, "setting up the source: %s",
			     strerror(-ret));
		return -1;
	}
	range_usage(sp->old_ram, o->mem, &sp->r.rss_before,
		    &sp->r.huge_before);
	if (!o->json)
		say("VMM: pausing the guest and handing guest RAM over to a new mapping");
	return 0;
}

/* The downtime starts here: pause, serve from a thread, take over. */
static int sp_handoff(struct same *sp)
{
	int ret;

	sp->r.pause_ns = vm_pause(sp->vm);
	sp->src.sock = sp->sv[0];
	ret = pthread_create(&sp->stid, NULL, source_thread_main, &sp->src);
	if (ret) {
		report_error(&sp->r, "pthread_create: %s", strerror(ret));
		return -1;
	}
	sp->joined = false;
	if (uffdmove_target_handoff(sp->t, sp->sv[1])) {
		shutdown(sp->sv[1], SHUT_RDWR);	/* the source stops waiting */
		sp_join(sp);
		report_error(&sp->r, "the handoff was refused, the guest stays in the old mapping: %s",
			     uffdmove_target_error(sp->t));
		return -1;
	}
	if (commit(sp->t, &sp->r))
		return -1;
	sp->vm->ram = sp->new_ram;	/* the paused vCPUs resume on it */
	return 0;
}

int same_process(const struct options *o)
{
	struct same sp = { .o = o, .sv = { -1, -1 }, .joined = true };
	int status = 1;

	sp.r.o = o;
	sp.r.same_process = true;
	if (!sp_boot(&sp) && !sp_setup(&sp) && !sp_handoff(&sp)) {
		status = run_guest_until_done(sp.vm, sp.t, &sp.r, 0);
		if (status != 3)	/* else a thread is stuck: just exit */
			sp_join(&sp);
		if (sp.joined && sp.src.ret && !sp.r.error[0])
			report_error(&sp.r, "source: %s", sp.src.error);
		if (!o->json && sp.r.resume_ns)
			say("VMM: guest resumed on the new mapping %.3f ms after the pause; handoff %s",
			    (double)(sp.r.resume_ns - sp.r.pause_ns) / 1e6,
			    sp.r.done ? "complete" : "FAILED");
	}
	print_report(&sp.r);
	if (status == 3 || !sp.joined)
		abandon_guest();
	uffdmove_target_free(sp.t);
	uffdmove_source_free(sp.src.s);
	if (sp.sv[0] >= 0)
		close(sp.sv[0]);
	if (sp.sv[1] >= 0)
		close(sp.sv[1]);
	vm_release(sp.vm, sp.old_ram, sp.new_ram, o->mem);
	return sp.r.verified && !sp.src.ret ? 0 : 1;
}
