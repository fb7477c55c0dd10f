// SPDX-License-Identifier: MIT
/*
 * The old VMM: runs the guest, fork+execs its successor, pauses the
 * guest once the successor is ready, sends it the guest state and serves
 * the handoff (uffdmove_source_accept/run) until every page is over.
 */
#include "toy.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct old_vmm {
	const struct options *o;
	struct vm *vm;
	uint8_t *ram;
	uint64_t populated;
	struct uffdmove_source *s;
	int sv[2];
	pid_t child;
};

struct killer {
	struct uffdmove_source *s;
	uint64_t threshold;
	int percent;
	bool stop;
	pthread_t tid;
};

/* --kill-source-at: die like a crashed VMM once that share went over. */
static void *killer_main(void *arg)
{
	struct killer *k = arg;
	struct uffdmove_stats st;
	char a[32];

	while (!LOAD(k->stop)) {
		uint64_t got;

		uffdmove_source_stats(k->s, &st);
		got = st.bytes_moved + st.bytes_copied + st.bytes_pulled;

		if (got >= k->threshold) {
			say("old VMM (pid %d): --kill-source-at %d: %s handed over, killing myself with SIGKILL",
			    (int)getpid(), k->percent,
			    fmt_bytes(a, sizeof(a), got));
			raise(SIGKILL);
		}
		usleep(50);
	}
	return NULL;
}

static int killer_start(struct killer *k, const struct old_vmm *ov)
{
	k->s = ov->s;
	k->percent = ov->o->kill_at;
	k->threshold = ov->populated / 100 * (uint64_t)ov->o->kill_at;
	if (pthread_create(&k->tid, NULL, killer_main, k)) {
		say("old VMM: cannot start the --kill-source-at thread");
		return -1;
	}
	return 0;
}

/* Start the successor: fork + exec, the socket as an inherited fd. */
static pid_t spawn_new_vmm(const struct options *o, int argc, char **argv,
			   int sock)
{
	char fdarg[16];
	char **nargv;
	const char *path = o->new_binary ? o->new_binary : "/proc/self/exe";
	pid_t pid;
	int i;

	nargv = calloc((size_t)argc + 6, sizeof(*nargv));
	if (!nargv)
		return -1;
	snprintf(fdarg, sizeof(fdarg), "%d", sock);
	for (i = 0; i < argc; i++)
		nargv[i] = argv[i];
	nargv[i++] = (char *)"--role";
	nargv[i++] = (char *)"new";
	nargv[i++] = (char *)"--sock-fd";
	nargv[i++] = fdarg;
	nargv[i] = NULL;
	pid = fork();
	if (pid == 0) {
		/* Async-signal-safe only: we have threads. */
		if (fcntl(sock, F_SETFD, 0) == 0)
			execv(path, nargv);
		_exit(127);
	}
	free(nargv);
	return pid;
}

static int ov_boot(struct old_vmm *ov)
{
	const struct options *o = ov->o;
	const char *what;
	int ret;

	ov->vm = vm_alloc(o, &ov->ram);
	if (!ov->ram) {
		say("old VMM: mapping %" PRIu64 " bytes of guest RAM: %s",
		    o->mem, strerror(errno));
		return -1;
	}
	ret = vm_boot(ov->vm, o, ov->ram, "old VMM", &ov->populated, &what);
	if (ret) {
		say("old VMM: %s: %s", what, strerror(-ret));
		return -1;
	}
	return 0;
}

static int ov_spawn(struct old_vmm *ov, int argc, char **argv)
{
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ov->sv)) {
		say("old VMM: socketpair: %s", strerror(errno));
		return -1;
	}
	ov->child = spawn_new_vmm(ov->o, argc, argv, ov->sv[1]);
	if (ov->child < 0) {
		say("old VMM: starting the new VMM: %s", strerror(errno));
		return -1;
	}
	close(ov->sv[1]);
	ov->sv[1] = -1;
	return 0;
}

/* The guest still runs while the new VMM comes up. */
static int ov_prepare(struct old_vmm *ov)
{
	pid_t pid;
	int ret;

	ret = handoff_end_new(ov->o, ov->ram, &ov->s, NULL);
	if (ret) {
		say("old VMM: uffdmove_source_new: %s", strerror(-ret));
		return -1;
	}
	ret = recv_ready(ov->sv[0], ov->o->mem, &pid);
	if (ret) {
		say("old VMM: the new VMM (pid %d) did not get ready: %s; the guest would keep running here",
		    (int)ov->child, ret == -ECONNRESET ? "it exited" :
		    strerror(-ret));
		return -1;
	}
	if (!ov->o->json)
		say("old VMM: new VMM (pid %d) is ready; pausing the guest and handing over",
		    (int)pid);
	return 0;
}

/* The downtime starts here: pause, and send the guest state. */
static int ov_pause(struct old_vmm *ov)
{
	struct msg_state state;
	int ret;

	state_init(&state, ov->o);
	/* THP coverage as the guest left it, outside the downtime: guest
	 * writes stay within touched memory, so the pause changes nothing
	 * here. */
	range_usage(ov->ram, ov->o->mem, &state.rss_before,
		    &state.huge_before);
	state.pause_ns = vm_pause(ov->vm);
	/* The guest ran since boot and wrote into holes: what the handoff
	 * carries is what is resident now, not what boot populated. */
	if (state.rss_before > ov->populated)
		ov->populated = state.rss_before;
	state.populated = ov->populated;
	vm_counters(ov->vm, &state.reads, &state.writes, &state.io_ops);
	ret = send_state(ov->sv[0], &state, ov->vm->ver_fd);
	if (ret) {
		say("old VMM: sending the guest state: %s", strerror(-ret));
		return -1;
	}
	return 0;
}

int old_vmm(const struct options *o, int argc, char **argv)
{
	struct old_vmm ov = { .o = o, .sv = { -1, -1 }, .child = -1 };
	struct killer k = { 0 };
	int ret, status = 1;

	if (ov_boot(&ov) || ov_spawn(&ov, argc, argv))
		goto out;
	if (ov_prepare(&ov) || ov_pause(&ov))
		goto out_kill;
	if (uffdmove_source_accept(ov.s, ov.sv[0])) {
		say("old VMM: the handoff did not start: %s",
		    uffdmove_source_error(ov.s));
		say("old VMM: the guest is intact here (a real VMM would resume it)");
		goto out;
	}
	/* ---- the new VMM resumes the guest now ---- */
	if (o->kill_at >= 0 && killer_start(&k, &ov))
		goto out_kill;
	ret = uffdmove_source_run(ov.s);
	if (o->kill_at >= 0) {
		STORE(k.stop, true);
		pthread_join(k.tid, NULL);
	}
	if (ret) {
		say("old VMM: the handoff failed: %s",
		    uffdmove_source_error(ov.s));
		goto out;
	}
	/* Done: the guest lives in the new VMM. Release all and exit. */
	status = 0;
	goto out;
out_kill:
	kill(ov.child, SIGKILL);
out:
	uffdmove_source_free(ov.s);
	if (ov.sv[0] >= 0)
		close(ov.sv[0]);
	if (ov.sv[1] >= 0)
		close(ov.sv[1]);
	vm_release(ov.vm, ov.ram, NULL, o->mem);
	return status;
}
