// SPDX-License-Identifier: MIT
/*
 * The new VMM (--role new): exec'ed by the old one with the socket as an
 * inherited fd. It maps and registers guest RAM while the guest still
 * runs in the old VMM, takes the guest state at the pause, and resumes
 * the guest as soon as the source accepted.
 */
#include "toy.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct new_vmm {
	const struct options *o;
	struct report r;
	struct vm *vm;
	uint8_t *ram;
	struct uffdmove_target *t;
	int sock, ver_fd;
};

/* Before the old VMM pauses anything: map and register, then say so. */
static int nv_prepare(struct new_vmm *nv)
{
	const struct options *o = nv->o;
	int ret;

	if (catch_poison(o)) {
		report_error(&nv->r, "sigaction: %s", strerror(errno));
		return -1;
	}
	nv->ram = map_guest_ram(o->mem, o->thp);
	if (!nv->ram) {
		report_error(&nv->r, "mapping %" PRIu64 " bytes of guest RAM: %s",
			     o->mem, strerror(errno));
		return -1;
	}
	ret = handoff_end_new(o, nv->ram, NULL, &nv->t);
	if (ret) {
		report_error(&nv->r, "uffdmove_target_new: %s",
			     strerror(-ret));
		return -1;
	}
	ret = send_ready(nv->sock, o->mem);
	if (ret) {
		report_error(&nv->r, "telling the old VMM we are ready: %s",
			     strerror(-ret));
		return -1;
	}
	return 0;
}

/* The guest as the old VMM paused it: its version table and numbers. */
static int nv_take_state(struct new_vmm *nv)
{
	struct msg_state state;
	int ret;

	ret = recv_state(nv->sock, nv->o, &state, &nv->ver_fd);
	if (ret) {
		report_error(&nv->r, "receiving the guest state from the old VMM: %s",
			     ret == -EINVAL ? "it runs another configuration" :
			     strerror(-ret));
		return -1;
	}
	ret = vm_init(nv->vm, nv->o, nv->ram, nv->ver_fd);
	if (ret) {
		report_error(&nv->r, "mapping the guest state: %s",
			     strerror(-ret));
		return -1;
	}
	nv->r.pause_ns = state.pause_ns;
	nv->r.populated = state.populated;
	nv->r.rss_before = state.rss_before;
	nv->r.huge_before = state.huge_before;
	return 0;
}

static int nv_take_over(struct new_vmm *nv)
{
	if (uffdmove_target_handoff(nv->t, nv->sock)) {
		report_error(&nv->r, "the handoff was refused, the old VMM keeps the guest: %s",
			     uffdmove_target_error(nv->t));
		return -1;
	}
	return commit(nv->t, &nv->r);
}

int new_vmm(const struct options *o)
{
	struct new_vmm nv = { .o = o, .sock = o->sock_fd, .ver_fd = -1 };
	int status = 1;

	nv.r.o = o;
	nv.vm = calloc(1, sizeof(*nv.vm));
	if (!nv.vm) {
		say("new VMM: out of memory");
		return 1;
	}
	fcntl(nv.sock, F_SETFD, FD_CLOEXEC);
	if (!nv_prepare(&nv) && !nv_take_state(&nv) && !nv_take_over(&nv)) {
		status = run_guest_until_done(nv.vm, nv.t, &nv.r, 2);
		if (!o->json && nv.r.resume_ns)
			say("new VMM (pid %d): guest resumed %.3f ms after the pause; handoff %s",
			    (int)getpid(),
			    (double)(nv.r.resume_ns - nv.r.pause_ns) / 1e6,
			    nv.r.done ? "complete" : "FAILED");
	}
	print_report(&nv.r);
	if (status == 3)
		abandon_guest();
	/* The target goes first: guest RAM stays mapped until then. */
	uffdmove_target_free(nv.t);
	if (nv.ver_fd >= 0 && nv.vm->ver_fd != nv.ver_fd)
		close(nv.ver_fd);
	vm_release(nv.vm, nv.ram, NULL, o->mem);
	close(nv.sock);
	return nv.r.verified ? 0 : 1;
}
