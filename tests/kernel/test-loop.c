// SPDX-License-Identifier: MIT
/*
 * Both ends driven from event loops, as a VMM's main loop would: each
 * process runs one single-threaded epoll loop (the target's guest threads
 * are the only other threads of the caller's), every byte is checked, and
 * every *_process() call is timed: none may work over 5 ms (its thread's
 * CPU time; the longest on the clock is reported too). Also: a
 * cancel from another thread, which ends the loop's session with
 * -ECANCELED and leaves the old VMM's guest intact.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "guest.h"
#include "harness.h"

#define PROCESS_MAX_NS	(5 * 1000 * 1000ULL)

static int stats_pipe[2] = { -1, -1 };	/* the target's final stats */

static struct guest layout(void)
{
	struct guest g = {
		.n = 3,
		.spec = {
			{ "ram-thp", 128UL << 20, true, 0 },
			{ "ram", 64UL << 20, false, 0 },
			{ "rom", (6UL << 20) - 5 * T_PAGE, false, T_PAGE },
		},
		.seed = 0x100b,
		.hole_pct = 20,
	};
	return g;
}

/* How long each process() call took: the longest and how many. */
/*
 * How long each process() call took: on the clock, which counts the time
 * the caller was preempted (2 CPUs, the guest's and the library's
 * threads), and in the calling thread's CPU time, the call's own work,
 * which the 5 ms bound is about.
 */
struct timing {
	uint64_t max_ns, max_cpu_ns, calls, max_at;
	uint64_t cpu0;
};

static uint64_t cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uint64_t start(struct timing *tm)
{
	tm->cpu0 = cpu_ns();
	return t_now_ns();
}

static void timed(struct timing *tm, uint64_t t0)
{
	uint64_t d = t_now_ns() - t0, cpu = cpu_ns() - tm->cpu0;

	tm->calls++;
	if (d > tm->max_ns) {
		tm->max_ns = d;
		tm->max_at = tm->calls;
	}
	if (cpu > tm->max_cpu_ns)
		tm->max_cpu_ns = cpu;
}

/*
 * One epoll loop over @fd until @process returns non-zero; @arg is its
 * handle. Returns what it returned, or -ETIMEDOUT after @limit_ms.
 */
static int loop(int fd, int (*process)(void *), void *arg,
		struct timing *tm, int limit_ms)
{
	struct epoll_event ev = { .events = EPOLLIN };
	uint64_t end = t_now_ns() + (uint64_t)limit_ms * 1000000ULL, t0;
	int ep = epoll_create1(EPOLL_CLOEXEC), ret = 0;

	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev))
		return -errno;
	while (!ret && t_now_ns() < end) {
		/* A loop wakes for other reasons too: call on timeouts. */
		if (epoll_wait(ep, &ev, 1, 50) < 0 && errno != EINTR) {
			ret = -errno;
			break;
		}
		t0 = start(tm);
		ret = process(arg);
		timed(tm, t0);
	}
	close(ep);
	return ret ? ret : -ETIMEDOUT;
}

static int target_process(void *t)
{
	static bool daemon_like;

	/* A daemon has no stdin: the library's next fd (the end's eventfd)
	 * is 0, and must still be closed. Once the loop's epoll fd exists. */
	if (!daemon_like) {
		close(0);
		daemon_like = true;
	}
	return uffdmove_target_process(t);
}

static int source_process(void *s)
{
	return uffdmove_source_process(s);
}

/* The new VMM: handshake, then nothing but its loop and its guest. */
static int target_main(int sock, bool pull, int commit_delay_ms)
{
	struct guest g = layout();
	struct uffdmove_region regions[GUEST_REGIONS_MAX];
	struct uffdmove_target_opts o;
	struct uffdmove_target *t;
	struct guest_workers w;
	struct uffdmove_stats st;
	struct timing tm = { 0 };
	char why[256] = "";
	uint64_t t0;
	int ret;

	guest_map(&g);
	guest_regions(&g, regions);
	uffdmove_target_opts_init(&o);
	o.pull = pull ? UFFDMOVE_PULL_ON : UFFDMOVE_PULL_OFF;
	if (uffdmove_target_new(&t, regions, g.n, &o) ||
	    uffdmove_target_handoff(t, sock)) {
		fprintf(stderr, "target: %s%s\n", uffdmove_new_error(),
			t ? uffdmove_target_error(t) : "");
		return 1;
	}
	if (commit_delay_ms) {	/* the source is cancelled meanwhile */
		usleep((useconds_t)commit_delay_ms * 1000);
		ret = uffdmove_target_process(t);
		uffdmove_target_free(t);
		if (ret != -ECANCELED) {
			fprintf(stderr, "FAIL: a commit after the source's cancel: %d\n",
				ret);
			return 1;
		}
		return 0;
	}
	t0 = start(&tm);
	ret = uffdmove_target_process(t);	/* the commit */
	timed(&tm, t0);
	if (ret < 0) {
		fprintf(stderr, "FAIL: commit: %s\n", uffdmove_target_error(t));
		return 1;
	}
	guest_workers_start(&w, &g, 2);		/* the vCPUs run */
	ret = loop(uffdmove_target_fd(t), target_process, t, &tm, 60000);
	if (guest_workers_stop(&w) || ret != 1) {
		fprintf(stderr, "FAIL: target loop: %d %s %s\n", ret,
			uffdmove_target_error(t), w.why);
		return 1;
	}
	if (guest_verify(&g, why, sizeof(why))) {
		fprintf(stderr, "FAIL: after the handoff: %s\n", why);
		return 1;
	}
	/* Tell the test's source what our stats say. */
	uffdmove_target_stats(t, &st);
	if (write(stats_pipe[1], &st, sizeof(st)) != (ssize_t)sizeof(st))
		fprintf(stderr, "sending the target's stats: %m\n");
	printf("target: %" PRIu64 " process() calls, longest %.3f ms (call %" PRIu64
	       "), most CPU %.3f ms; %" PRIu64
	       " reads, %" PRIu64 " writes by the guest meanwhile\n",
	       tm.calls, (double)tm.max_ns / 1e6, tm.max_at,
	       (double)tm.max_cpu_ns / 1e6, w.reads, w.writes);
	fflush(stdout);
	uffdmove_target_free(t);
	if (fcntl(0, F_GETFD) != -1) {
		fprintf(stderr, "FAIL: fd 0 left open after free\n");
		return 1;
	}
	if (tm.max_cpu_ns > PROCESS_MAX_NS) {
		fprintf(stderr, "FAIL: a target process() call worked %.3f ms\n",
			(double)tm.max_cpu_ns / 1e6);
		return 1;
	}
	return 0;
}

struct progress_seen {
	pid_t loop_tid;
	uint64_t calls, other_thread;
};

static void on_progress(const struct uffdmove_stats *st, void *arg)
{
	struct progress_seen *p = arg;

	(void)st;
	p->calls++;
	if (gettid() != p->loop_tid)
		p->other_thread++;
}

static int both_loops(struct t_ctx *ctx, bool pull)
{
	struct guest g = layout();
	struct uffdmove_region regions[GUEST_REGIONS_MAX];
	struct progress_seen seen = { .loop_tid = gettid() };
	struct uffdmove_source_opts so;
	struct uffdmove_source *s;
	struct uffdmove_stats st, tst;
	struct timing tm = { 0 };
	int sv[2], ret, status;
	uint64_t t0;
	pid_t pid;

	(void)ctx;
	guest_map_source(&g);
	guest_regions(&g, regions);
	T_CHECK(pipe2(stats_pipe, O_CLOEXEC) == 0, "pipe");
	pid = t_fork_peer(sv, 120);
	if (pid == 0)
		_exit(target_main(sv[1], pull, 0));
	uffdmove_source_opts_init(&so);
	so.progress = on_progress;
	so.progress_arg = &seen;
	T_CHECK(uffdmove_source_new(&s, regions, g.n, &so) == 0, "source_new: %s",
		uffdmove_new_error());
	T_CHECK(uffdmove_source_fd(s) >= 0, "no fd");
	T_CHECK(uffdmove_source_process(s) == -EINVAL,
		"process() before accept was not refused");
	ret = uffdmove_source_accept(s, sv[0]);
	T_CHECK(ret == 0, "accept: %s", uffdmove_source_error(s));
	t0 = start(&tm);
	ret = uffdmove_source_process(s);	/* starts the run */
	timed(&tm, t0);
	T_CHECK(ret == 0, "first process(): %d %s", ret,
		uffdmove_source_error(s));
	T_CHECK(uffdmove_source_run(s) == -EINVAL &&
		strstr(uffdmove_source_error(s), "running already"),
		"run() on a looping handle: %s", uffdmove_source_error(s));
	usleep(20 * 1000);	/* the run's thread must not wipe it */
	T_CHECK(strstr(uffdmove_source_error(s), "running already"),
		"the refusal's message became '%s'", uffdmove_source_error(s));
	ret = loop(uffdmove_source_fd(s), source_process, s, &tm, 60000);
	T_CHECK(ret == 1, "source loop: %d %s", ret, uffdmove_source_error(s));
	T_CHECK(uffdmove_source_process(s) == 1, "the end is not sticky");
	status = t_wait(pid);
	T_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		"target failed (status 0x%x)", status);
	T_CHECK(read(stats_pipe[0], &tst, sizeof(tst)) == (ssize_t)sizeof(tst),
		"the target's stats: %m");
	T_CHECK(uffdmove_source_stats(s, &st) == 0 &&
		st.bytes_populated == guest_populated_bytes(&g),
		"populated %" PRIu64 " of %" PRIu64, st.bytes_populated,
		guest_populated_bytes(&g));
	T_CHECK(st.primitive == (pull ? UFFDMOVE_PRIM_PULL : UFFDMOVE_PRIM_COPY),
		"primitive %u", st.primitive);
	/* Pushed, the target's counters are the source's last report: every
	 * byte, and the faults but the wake-ups it served after DONE. */
	T_CHECK(pull || (tst.bytes_copied == st.bytes_copied &&
			 tst.faults <= st.faults),
		"the target ends with %" PRIu64 " faults, %" PRIu64
		" bytes copied; the source %" PRIu64 ", %" PRIu64, tst.faults,
		tst.bytes_copied, st.faults, st.bytes_copied);
	T_CHECK(seen.calls > 0 && seen.other_thread == 0,
		"progress: %" PRIu64 " calls, %" PRIu64 " off the loop's thread",
		seen.calls, seen.other_thread);
	printf("source: %" PRIu64 " process() calls, longest %.3f ms, most CPU %.3f ms; %" PRIu64
	       " progress calls on the loop's thread\n", tm.calls,
	       (double)tm.max_ns / 1e6, (double)tm.max_cpu_ns / 1e6,
	       seen.calls);
	T_CHECK(tm.max_cpu_ns <= PROCESS_MAX_NS,
		"a source process() call worked %.3f ms",
		(double)tm.max_cpu_ns / 1e6);
	uffdmove_source_free(s);
	close(sv[0]);
	close(stats_pipe[0]);
	close(stats_pipe[1]);
	guest_unmap(&g);
	return T_PASS;
}

static int loops_pull(struct t_ctx *ctx)
{
	return both_loops(ctx, true);
}

static int loops_push(struct t_ctx *ctx)
{
	return both_loops(ctx, false);
}

struct canceller {
	struct uffdmove_source *s;
	pthread_t tid;
};

static void *cancel_main(void *arg)
{
	struct canceller *c = arg;

	usleep(100 * 1000);
	uffdmove_source_cancel(c->s);
	return NULL;
}

/* Another thread cancels while the loop waits for a commit that comes
 * too late: -ECANCELED, the guest all here, the target refused. */
/*
 * The old VMM with a running loop, against a target that commits only
 * after @commit_delay_ms (and then expects -ECANCELED). NULL on failure.
 */
static struct uffdmove_source *started_source(struct guest *g, int sv[2],
					      pid_t *pid, bool pull,
					      int commit_delay_ms)
{
	struct uffdmove_region regions[GUEST_REGIONS_MAX];
	struct uffdmove_source *s;

	guest_map_source(g);
	guest_regions(g, regions);
	*pid = t_fork_peer(sv, 120);
	if (*pid == 0)
		_exit(target_main(sv[1], pull, commit_delay_ms));
	if (uffdmove_source_new(&s, regions, g->n, NULL))
		return NULL;
	if (uffdmove_source_accept(s, sv[0]) ||
	    uffdmove_source_process(s)) {
		fprintf(stderr, "source: %s\n", uffdmove_source_error(s));
		uffdmove_source_free(s);
		return NULL;
	}
	return s;
}

static int cancel_from_thread(struct t_ctx *ctx, bool pull)
{
	struct guest g = layout();
	struct uffdmove_source *s;
	struct canceller c;
	struct timing tm = { 0 };
	char why[256] = "";
	int sv[2], ret, status;
	pid_t pid;

	(void)ctx;
	s = started_source(&g, sv, &pid, pull, 1000);
	T_CHECK(s, "the source did not start");
	c.s = s;
	T_CHECK(pthread_create(&c.tid, NULL, cancel_main, &c) == 0, "thread");
	ret = loop(uffdmove_source_fd(s), source_process, s, &tm, 30000);
	pthread_join(c.tid, NULL);
	T_CHECK(ret == -ECANCELED, "cancelled loop returned %d (%s)", ret,
		uffdmove_source_error(s));
	T_CHECK(strlen(uffdmove_source_error(s)) > 0, "no message");
	T_CHECK(guest_verify_source(&g, why, sizeof(why)) == 0,
		"the old VMM's guest after the cancel: %s", why);
	status = t_wait(pid);
	T_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		"target (status 0x%x)", status);
	uffdmove_source_free(s);
	close(sv[0]);
	guest_unmap(&g);
	return T_PASS;
}

static int cancel_pull(struct t_ctx *ctx)
{
	return cancel_from_thread(ctx, true);
}

static int cancel_push(struct t_ctx *ctx)
{
	return cancel_from_thread(ctx, false);
}

/* The new VMM commits when told (a byte on @go), and must be refused. */
static int late_target_main(int sock, int go, bool pull)
{
	struct guest g = layout();
	struct uffdmove_region regions[GUEST_REGIONS_MAX];
	struct uffdmove_target_opts o;
	struct uffdmove_target *t;
	char c;
	int ret;

	guest_map(&g);
	guest_regions(&g, regions);
	uffdmove_target_opts_init(&o);
	o.pull = pull ? UFFDMOVE_PULL_ON : UFFDMOVE_PULL_OFF;
	if (uffdmove_target_new(&t, regions, g.n, &o) ||
	    uffdmove_target_handoff(t, sock) || read(go, &c, 1) != 1)
		return 1;
	ret = uffdmove_target_process(t);
	if (ret != -ECANCELED || uffdmove_target_process(t) != -ECANCELED) {
		fprintf(stderr, "FAIL: a commit after the cancel returned %d\n",
			ret);
		return 1;
	}
	uffdmove_target_free(t);
	return 0;
}

/*
 * A cancel is final when the call returns: a commit the target attempts
 * afterwards fails there, even before the loop started the run (it used
 * to be seen only at the run's first look, and a GO sent meanwhile
 * counted: the old VMM was told its guest was lost).
 */
static int cancel_then_commit(struct t_ctx *ctx, bool pull)
{
	struct guest g = layout();
	struct uffdmove_region regions[GUEST_REGIONS_MAX];
	struct uffdmove_source *s;
	struct timing tm = { 0 };
	char why[256] = "";
	int sv[2], go[2], ret, status;
	pid_t pid;

	(void)ctx;
	guest_map_source(&g);
	guest_regions(&g, regions);
	T_CHECK(pipe2(go, O_CLOEXEC) == 0, "pipe");
	pid = t_fork_peer(sv, 120);
	if (pid == 0)
		_exit(late_target_main(sv[1], go[0], pull));
	T_CHECK(uffdmove_source_new(&s, regions, g.n, NULL) == 0, "source_new");
	T_CHECK(uffdmove_source_accept(s, sv[0]) == 0, "accept: %s",
		uffdmove_source_error(s));
	uffdmove_source_cancel(s);
	T_CHECK(write(go[1], "g", 1) == 1, "go");
	usleep(100 * 1000);	/* its GO, if it could send one, is queued */
	T_CHECK(uffdmove_source_process(s) == 0, "start");
	ret = loop(uffdmove_source_fd(s), source_process, s, &tm, 30000);
	T_CHECK(ret == -ECANCELED && strstr(uffdmove_source_error(s), "cancel"),
		"run after the cancel: %d (%s)", ret, uffdmove_source_error(s));
	T_CHECK(guest_verify_source(&g, why, sizeof(why)) == 0,
		"the old VMM's guest: %s", why);
	status = t_wait(pid);
	T_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		"target (status 0x%x)", status);
	uffdmove_source_free(s);
	close(sv[0]);
	close(go[0]);
	close(go[1]);
	guest_unmap(&g);
	return T_PASS;
}

static int cancel_then_commit_pull(struct t_ctx *ctx)
{
	return cancel_then_commit(ctx, true);
}

static int cancel_then_commit_push(struct t_ctx *ctx)
{
	return cancel_then_commit(ctx, false);
}

/* Freeing a handle whose run still goes cancels it and joins its
 * threads: no leak, no thread left touching freed memory. */
static int free_while_running(struct t_ctx *ctx)
{
	struct guest g = layout();
	struct uffdmove_source *s;
	char why[256] = "";
	int sv[2], status;
	pid_t pid;

	(void)ctx;
	s = started_source(&g, sv, &pid, true, 500);
	T_CHECK(s, "the source did not start");
	usleep(50 * 1000);
	uffdmove_source_free(s);
	T_CHECK(guest_verify_source(&g, why, sizeof(why)) == 0,
		"the old VMM's guest after free: %s", why);
	status = t_wait(pid);
	T_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		"target (status 0x%x)", status);
	close(sv[0]);
	guest_unmap(&g);
	return T_PASS;
}

int main(void)
{
	static const struct t_case cases[] = {
		{ "epoll-loops-pull", loops_pull },
		{ "epoll-loops-push", loops_push },
		{ "cancel-from-thread-pull", cancel_pull },
		{ "cancel-from-thread-push", cancel_push },
		{ "cancel-then-commit-pull", cancel_then_commit_pull },
		{ "cancel-then-commit-push", cancel_then_commit_push },
		{ "free-while-running", free_while_running },
	};
	return t_main(cases, T_ARRAY_SIZE(cases), 240,
		      T_NEED_KERNEL_FAULTS, NULL);
}
