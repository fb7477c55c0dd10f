// SPDX-License-Identifier: MIT
/*
 * The commit rule: uffdmove_source_run() returns 0 only when the target
 * committed and confirmed that it has everything; a session that ends
 * before the commit, however it ends, returns -ECANCELED with the source's
 * memory byte-identical; a target that never commits or never confirms
 * cannot keep the source waiting; a cancel and a commit that cross are
 * seen the same way on both sides.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "guest.h"
#include "harness.h"

#define ITERATIONS	20
#define PEER_TIMEOUT_MS	300

static const struct guest layout = {
	.n = 1, .seed = 31, .hole_pct = 10,
	.spec = { { "ram0", 32UL << 20, false, 0 } },
};

/* How the target ends the session before committing. */
enum ending {
	END_ABORT,	/* uffdmove_target_abort() */
	END_CLOSE,	/* closes its socket, stays alive */
	END_KILL,	/* dies */
	END_SILENT,	/* keeps the socket open and never commits */
	END_LATE,	/* its handshake timed out before our ACCEPT */
	END_KINDS,
};

static const char *const ending_name[] = {
	"abort", "close", "kill", "silent", "late-accept",
};

static void sleep_us(unsigned int us)
{
	struct timespec ts = { us / 1000000, (long)(us % 1000000) * 1000 };

	nanosleep(&ts, NULL);
}

static struct uffdmove_target *target_setup_pull(struct guest *d, int sock,
						 uint32_t handshake_ms,
						 uint32_t pull, int *ret)
{
	struct uffdmove_region r[1];
	struct uffdmove_target_opts o;
	struct uffdmove_target *t;

	*d = layout;
	guest_map(d);
	guest_regions(d, r);
	uffdmove_target_opts_init(&o);
	o.handshake_timeout_ms = handshake_ms;
	o.pull = pull;
	if (uffdmove_target_new(&t, r, 1, &o))
		_exit(50);
	*ret = uffdmove_target_handoff(t, sock);
	return t;
}

static struct uffdmove_target *target_setup(struct guest *d, int sock,
					    uint32_t handshake_ms, int *ret)
{
	return target_setup_pull(d, sock, handshake_ms, UFFDMOVE_PULL_AUTO,
				 ret);
}

/* The new VMM that gives up before its commit, then waits to be killed. */
static _Noreturn void quitter(int sock, enum ending how, unsigned int us)
{
	struct guest d;
	struct uffdmove_target *t;
	int ret;

	t = target_setup(&d, sock, how == END_LATE ? 1 : 0, &ret);
	if (how == END_LATE) {
		if (ret != -ETIMEDOUT)
			_exit(51);
		pause();
	}
	if (ret)
		_exit(52);
	sleep_us(us);
	switch (how) {
	case END_ABORT:
		uffdmove_target_abort(t);
		break;
	case END_CLOSE:
		close(sock);
		break;
	case END_KILL:
		raise(SIGKILL);
		break;
	default:
		break;
	}
	pause();
	_exit(0);
}

static struct uffdmove_source *source_setup(struct guest *g, int sock,
					    uint32_t mode)
{
	struct uffdmove_region r[1];
	struct uffdmove_source_opts o;
	struct uffdmove_source *s;

	guest_regions(g, r);
	uffdmove_source_opts_init(&o);
	o.mode = mode;
	o.peer_timeout_ms = PEER_TIMEOUT_MS;
	if (uffdmove_source_new(&s, r, 1, &o))
		t_die("source_new");
	if (sock >= 0 && uffdmove_source_accept(s, sock))
		t_die("accept: %s", uffdmove_source_error(s));
	return s;
}

static void reap(pid_t pid, int sock)
{
	kill(pid, SIGKILL);
	t_wait(pid);
	close(sock);
}

/* 20 random points before the commit, every way of leaving, both modes
 * that copy before it. */
static int end_before_commit(struct t_ctx *ctx, uint32_t mode)
{
	struct guest g = layout;
	unsigned int i, seed = 4242 + mode;
	char why[256];

	guest_map_source(&g);
	for (i = 0; i < ITERATIONS; i++) {
		enum ending how = (enum ending)(i % END_KINDS);
		unsigned int us = (unsigned int)(rand_r(&seed) % 80000);
		struct uffdmove_source *s;
		int sv[2], ret;
		pid_t pid = t_fork_peer(sv, 30);

		if (pid == 0)
			quitter(sv[1], how, us);
		if (how == END_LATE)
			sleep_us(100000);	/* its 1 ms deadline passes */
		s = source_setup(&g, -1, mode);
		/* Pulled, the handshake itself learns that the target gave
		 * up; pushed, the run does. Either way: -ECANCELED. */
		ret = uffdmove_source_accept(s, sv[0]);
		if (!ret)
			ret = uffdmove_source_run(s);
		printf("    %-11s at %5u us: %d %s\n", ending_name[how], us, ret,
		       uffdmove_source_error(s));
		T_CHECK(ret == -ECANCELED, "%s at %u us: run returned %d: %s",
			ending_name[how], us, ret, uffdmove_source_error(s));
		T_CHECK(strstr(uffdmove_source_error(s), "intact"),
			"message: %s", uffdmove_source_error(s));
		uffdmove_source_free(s);
		reap(pid, sv[0]);
		T_CHECK(guest_verify_source(&g, why, sizeof(why)) == 0,
			"%s at %u us: source memory changed: %s",
			ending_name[how], us, why);
	}
	guest_unmap(&g);
	return T_PASS;
}

static int end_before_commit_copy(struct t_ctx *ctx)
{
	return end_before_commit(ctx, UFFDMOVE_MODE_COPY);
}

static int end_before_commit_auto(struct t_ctx *ctx)
{
	return end_before_commit(ctx, UFFDMOVE_MODE_AUTO);
}

/* Commits, then never reads again: DONE is never confirmed. */
static int no_confirmation(struct t_ctx *ctx)
{
	struct guest g = layout;
	struct uffdmove_source *s;
	int sv[2], ret;
	pid_t pid;

	guest_map_source(&g);
	pid = t_fork_peer(sv, 30);
	if (pid == 0) {
		struct guest d;
		struct uffdmove_target *t = target_setup(&d, sv[1], 0, &ret);

		if (ret || uffdmove_target_process(t) < 0)
			_exit(52);
		pause();
		_exit(0);
	}
	s = source_setup(&g, sv[0], UFFDMOVE_MODE_COPY);
	ret = uffdmove_source_run(s);
	printf("  run: %d %s\n", ret, uffdmove_source_error(s));
	T_CHECK(ret == -ETIMEDOUT, "run returned %d: %s", ret,
		uffdmove_source_error(s));
	T_CHECK(strstr(uffdmove_source_error(s), "confirm"), "message: %s",
		uffdmove_source_error(s));
	uffdmove_source_free(s);
	reap(pid, sv[0]);
	guest_unmap(&g);
	return T_PASS;
}

struct runner {
	struct uffdmove_source *s;
	pthread_t tid;
	int ret;
};

static void *run_thread(void *arg)
{
	struct runner *r = arg;

	r->ret = uffdmove_source_run(r->s);
	return NULL;
}

/*
 * A cancel at a random moment around the target's commit. Whatever the
 * order, both ends agree: the source says -ECANCELED exactly when the
 * target did not commit (its first process call says -ECANCELED too).
 */
static int cancel_crosses_commit(struct t_ctx *ctx)
{
	struct guest g = layout;
	unsigned int i, seed = 99, before = 0, after = 0;
	char why[256];

	guest_map_source(&g);
	for (i = 0; i < ITERATIONS; i++) {
		unsigned int us = (unsigned int)(rand_r(&seed) % 3000);
		unsigned int them = (unsigned int)(rand_r(&seed) % 3000);
		struct runner run = { 0 };
		int sv[2], pfd[2], child;
		pid_t pid;

		T_CHECK(pipe(pfd) == 0, "pipe");
		pid = t_fork_peer(sv, 30);
		if (pid == 0) {
			struct guest d;
			struct uffdmove_target *t;
			int ret;

			t = target_setup(&d, sv[1], 0, &ret);
			if (ret)
				_exit(52);
			sleep_us(them);
			ret = uffdmove_target_process(t);
			/* Then stay until killed, as a new VMM would:
			 * leaving now would be a death after the commit. */
			if (write(pfd[1], &ret, sizeof(ret)) < 0)
				_exit(54);
			uffdmove_target_wait(t, -1);
			pause();
			_exit(0);
		}
		close(pfd[1]);
		run.s = source_setup(&g, sv[0], UFFDMOVE_MODE_COPY);
		T_CHECK(pthread_create(&run.tid, NULL, run_thread, &run) == 0,
			"pthread_create");
		sleep_us(us);
		T_CHECK(uffdmove_source_cancel(run.s) == 0, "cancel");
		pthread_join(run.tid, NULL);
		T_CHECK(read(pfd[0], &child, sizeof(child)) == sizeof(child),
			"the target said nothing");
		close(pfd[0]);
		reap(pid, sv[0]);
		/* The target's -ECANCELED says it never committed; once it
		 * did, a cancel either broke the rest off or came after
		 * the end (32 MiB can be in within the 3 ms window). */
		T_CHECK(child == -ECANCELED ? run.ret == -ECANCELED :
			(run.ret == -ECONNABORTED || run.ret == 0),
			"cancel at %u us, commit at %u us: source %d (%s), target %d",
			us, them, run.ret, uffdmove_source_error(run.s), child);
		if (child == -ECANCELED)
			before++;
		else
			after++;
		uffdmove_source_free(run.s);
		T_CHECK(guest_verify_source(&g, why, sizeof(why)) == 0,
			"COPY source changed: %s", why);
	}
	printf("  %u cancels before the commit, %u after\n", before, after);
	guest_unmap(&g);
	return T_PASS;
}

static void *touch_all(void *arg)
{
	struct guest *d = arg;
	size_t p;
	uint64_t sum = 0;

	for (p = 0; p < d->spec[0].len / T_PAGE; p++)
		sum += *(volatile uint64_t *)(d->addr[0] + p * T_PAGE);
	return (void *)(uintptr_t)sum;
}

/*
 * A new VMM that breaks the rule and runs its guest before committing:
 * when the session then ends, its guest may have run, so the old VMM is
 * told not to resume (not -ECANCELED), and the new one does not
 * unregister guest RAM under its running threads.
 */
static int touch_before_commit(struct t_ctx *ctx)
{
	struct guest g = layout;
	struct uffdmove_source *s;
	int sv[2], ret, status;
	pid_t pid;

	guest_map_source(&g);
	pid = t_fork_peer(sv, 30);
	if (pid == 0) {
		struct guest d;
		/* Pushed: the source serves faults, so it sees the touch.
		 * Pulling, a touch before the commit only waits for it. */
		struct uffdmove_target *t =
			target_setup_pull(&d, sv[1], 0, UFFDMOVE_PULL_OFF,
					  &ret);
		pthread_t tid;

		if (ret || pthread_create(&tid, NULL, touch_all, &d))
			_exit(52);
		sleep_us(20000);
		ret = uffdmove_target_process(t);
		_exit(ret == -ECONNRESET ? 0 : 53);
	}
	s = source_setup(&g, sv[0], UFFDMOVE_MODE_COPY);
	sleep_us(10000);
	T_CHECK(uffdmove_source_cancel(s) == 0, "cancel");
	ret = uffdmove_source_run(s);
	printf("  run: %d %s\n", ret, uffdmove_source_error(s));
	T_CHECK(ret == -ECONNRESET, "run returned %d: %s", ret,
		uffdmove_source_error(s));
	T_CHECK(strstr(uffdmove_source_error(s), "do not resume"),
		"message: %s", uffdmove_source_error(s));
	status = t_wait(pid);
	T_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		"the target did not keep its guest RAM registered (status 0x%x)",
		status);
	uffdmove_source_free(s);
	close(sv[0]);
	guest_unmap(&g);
	return T_PASS;
}

/* A cancel before run: it returns at once, the target cannot commit. */
static int cancel_before_run(struct t_ctx *ctx)
{
	struct guest g = layout;
	struct uffdmove_source *s;
	int sv[2], ret, status;
	pid_t pid;

	guest_map_source(&g);
	pid = t_fork_peer(sv, 30);
	if (pid == 0) {
		struct guest d;
		struct uffdmove_target *t = target_setup(&d, sv[1], 0, &ret);

		if (ret)
			_exit(52);
		sleep_us(100000);
		ret = uffdmove_target_process(t);
		_exit(ret == -ECANCELED &&
		      strstr(uffdmove_target_error(t), "do not resume") ? 0 : 53);
	}
	s = source_setup(&g, sv[0], UFFDMOVE_MODE_AUTO);
	T_CHECK(uffdmove_source_cancel(s) == 0, "cancel");
	ret = uffdmove_source_run(s);
	T_CHECK(ret == -ECANCELED, "run returned %d: %s", ret,
		uffdmove_source_error(s));
	T_CHECK(strstr(uffdmove_source_error(s), "cancelled"), "message: %s",
		uffdmove_source_error(s));
	status = t_wait(pid);
	T_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		"the target did not refuse to commit (status 0x%x)", status);
	T_CHECK(uffdmove_source_cancel(NULL) == -EINVAL, "cancel(NULL)");
	uffdmove_source_free(s);
	close(sv[0]);
	guest_unmap(&g);
	return T_PASS;
}

int main(void)
{
	static const struct t_case cases[] = {
		{ "end-before-commit-copy", end_before_commit_copy },
		{ "end-before-commit-auto", end_before_commit_auto },
		{ "no-confirmation-deadline", no_confirmation },
		{ "cancel-crosses-commit", cancel_crosses_commit },
		{ "cancel-before-run", cancel_before_run },
		{ "touch-before-commit", touch_before_commit },
	};
	return t_main(cases, T_ARRAY_SIZE(cases), 110,
		      T_NEED_KERNEL_FAULTS, NULL);
}
