// SPDX-License-Identifier: MIT
/*
 * Peer death and target events: SIGKILL the source or the target at random
 * points of a handoff, discard or unmap guest RAM while it streams in, and
 * abort before the point of no return. Guest memory is never silently
 * zero-filled, nothing hangs, and a COPY source keeps every byte.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "guest.h"
#include "harness.h"

#define ITERATIONS 20

static const struct guest layout = {
	.n = 1, .seed = 77, .hole_pct = 10,
	.spec = { { "ram0", 96UL << 20, false, 0 } },
};

static void sleep_us(unsigned int us)
{
	struct timespec ts = { us / 1000000, (long)(us % 1000000) * 1000 };

	nanosleep(&ts, NULL);
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The old VMM: serve until killed. */
static _Noreturn void source_process(int sock, uint32_t mode)
{
	struct guest g = layout;
	struct uffdmove_region r[1];
	struct uffdmove_source_opts o;
	struct uffdmove_source *s;

	guest_map_source(&g);
	guest_regions(&g, r);
	uffdmove_source_opts_init(&o);
	o.mode = mode;
	if (uffdmove_source_new(&s, r, 1, &o) || uffdmove_source_accept(s, sock))
		_exit(40);
	_exit(uffdmove_source_run(s) ? 41 : 0);
}

/* A guest thread reading every page in order and checking it. A page that
 * reads as anything but its pattern (zero above all) is a failure; under
 * the poison policy a SIGBUS ends the walk. */
struct walker {
	struct guest *g;
	size_t next;		/* pages verified so far */
	size_t start;
	bool bad, sigbus, done;
	char why[256];
	pthread_t tid;
};

static __thread sigjmp_buf walker_jmp;
static __thread bool in_walker;

static void on_sigbus(int sig)
{
	if (in_walker)
		siglongjmp(walker_jmp, 1);
	signal(sig, SIG_DFL);
	raise(sig);
}

static void *walker_main(void *arg)
{
	struct walker *w = arg;
	size_t n = w->g->spec[0].len / T_PAGE, i;

	in_walker = true;
	if (sigsetjmp(walker_jmp, 1)) {
		__atomic_store_n(&w->sigbus, true, __ATOMIC_RELEASE);
		return NULL;
	}
	for (i = 0; i < n; i++) {
		size_t p = (w->start + i) % n;

		if (guest_verify_page(w->g, 0, p, w->why, sizeof(w->why))) {
			w->bad = true;
			return NULL;
		}
		__atomic_store_n(&w->next, i + 1, __ATOMIC_RELEASE);
	}
	__atomic_store_n(&w->done, true, __ATOMIC_RELEASE);
	return NULL;
}

static bool walk_ended(struct walker *w)
{
	return __atomic_load_n(&w->done, __ATOMIC_ACQUIRE) ||
	       __atomic_load_n(&w->sigbus, __ATOMIC_ACQUIRE) ||
	       __atomic_load_n(&w->bad, __ATOMIC_ACQUIRE);
}

/*
 * One iteration, in its own process (threads stuck on missing pages die
 * with it): be the target, kill the source after @kill_us, check the
 * policy. Exit 0 pass, 1 fail.
 */
static int target_side(unsigned int kill_us, uint32_t policy)
{
	struct guest g = layout;
	struct uffdmove_region r[1];
	struct uffdmove_target_opts o;
	struct uffdmove_target *t;
	struct walker w1 = { 0 }, w2 = { 0 };
	struct sigaction sa = { .sa_handler = on_sigbus };
	uint64_t t0, waited;
	size_t before;
	int sv[2], ret, status;
	pid_t src;

	/* The guest's page IDs are region 0 pages: t_verify uses seed,p. */
	src = t_fork_peer(sv, 60);
	if (src == 0)
		source_process(sv[1], UFFDMOVE_MODE_AUTO);
	sigaction(SIGBUS, &sa, NULL);
	guest_map(&g);
	guest_regions(&g, r);
	uffdmove_target_opts_init(&o);
	o.on_source_death = policy;
	T_CHECK(uffdmove_target_new(&t, r, 1, &o) == 0, "target_new");
	ret = uffdmove_target_handoff(t, sv[0]);
	T_CHECK(ret == 0, "handoff: %s", uffdmove_target_error(t));
	uffdmove_target_process(t);
	w1.g = &g;
	w1.start = 0;
	pthread_create(&w1.tid, NULL, walker_main, &w1);
	sleep_us(kill_us);
	kill(src, SIGKILL);
	t0 = mono_ms();
	ret = uffdmove_target_wait(t, 5000);
	waited = mono_ms() - t0;
	status = t_wait(src);
	if (ret == 0) {
		/* It finished before the kill: everything must be right. */
		pthread_join(w1.tid, NULL);
		T_CHECK(!w1.bad, "%s", w1.why);
		printf("    kill at %u us: completed first\n", kill_us);
		uffdmove_target_free(t);
		return T_PASS;
	}
	T_CHECK(ret == -ECONNRESET, "wait returned %d: %s", ret,
		uffdmove_target_error(t));
	T_CHECK(waited < 1000, "noticed the death after %" PRIu64 " ms", waited);
	T_CHECK(strstr(uffdmove_target_error(t), "missing pages"), "message: %s",
		uffdmove_target_error(t));
	/* A fresh thread touching pages the walker did not reach yet. */
	before = __atomic_load_n(&w1.next, __ATOMIC_ACQUIRE);
	w2.g = &g;
	w2.start = (g.spec[0].len / T_PAGE) * 3 / 4;
	pthread_create(&w2.tid, NULL, walker_main, &w2);
	sleep_us(300000);
	/* Poisoned, both walks end; on a loaded machine (ASan, a second
	 * test) not always within 300 ms, so a blocked walk is one that
	 * has not ended after 5 s. */
	for (t0 = mono_ms(); policy == UFFDMOVE_ON_SOURCE_DEATH_POISON &&
	     !(walk_ended(&w1) && walk_ended(&w2)) && mono_ms() - t0 < 5000;)
		sleep_us(10000);
	T_CHECK(!w1.bad && !w2.bad, "a guest thread read wrong bytes: %s%s",
		w1.why, w2.why);
	if (policy == UFFDMOVE_ON_SOURCE_DEATH_POISON) {
		T_CHECK(walk_ended(&w1), "walker neither done nor SIGBUS");
		T_CHECK(walk_ended(&w2), "late walker neither done nor SIGBUS (at page %zu of its walk)",
			__atomic_load_n(&w2.next, __ATOMIC_ACQUIRE));
	} else {
		/* Blocked, not running on zeros: no progress in 300 ms. */
		T_CHECK(w1.done || !w1.sigbus, "SIGBUS under BLOCK");
		T_CHECK(w1.done || __atomic_load_n(&w1.next, __ATOMIC_ACQUIRE) ==
			before, "walker moved on after the source died");
	}
	printf("    kill at %u us: %s after %" PRIu64 " ms, walker %s at page %zu\n",
	       kill_us, strerror(-ret), waited,
	       w1.done ? "done" : w1.sigbus ? "SIGBUS" : "blocked", w1.next);
	/* A balloon may still discard (the last page, which no walker
	 * checks any more); its success must not wipe why the session
	 * failed, which process() keeps returning. */
	T_CHECK(uffdmove_target_discard(t, g.addr[0] + g.spec[0].len - T_PAGE,
					T_PAGE) == 0,
		"discard after the death: %s", uffdmove_target_error(t));
	T_CHECK(uffdmove_target_process(t) == -ECONNRESET &&
		strstr(uffdmove_target_error(t), "missing pages"),
		"after a discard: %s", uffdmove_target_error(t));
	(void)status;
	/* Leave: blocked threads die with the process; never free the
	 * handle under BLOCK while they wait. */
	fflush(stdout);
	_exit(T_PASS);
}

static int iterate_source_kill(struct t_ctx *ctx, uint32_t policy)
{
	unsigned int i, seed = 12345u + policy;

	for (i = 0; i < ITERATIONS; i++) {
		unsigned int kill_us = (unsigned int)(rand_r(&seed) % 60000);
		pid_t pid = fork();
		int status;

		T_CHECK(pid >= 0, "fork");
		if (pid == 0) {
			t_child(60);
			_exit(target_side(kill_us, policy));
		}
		status = t_wait(pid);
		T_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
			"iteration %u (kill at %u us) failed, status 0x%x", i,
			kill_us, status);
	}
	return T_PASS;
}

static int source_killed_block(struct t_ctx *ctx __attribute__((unused)))
{
	return iterate_source_kill(ctx, UFFDMOVE_ON_SOURCE_DEATH_BLOCK);
}

static int source_killed_poison(struct t_ctx *ctx __attribute__((unused)))
{
	if (!ctx->caps->poison)
		return t_case_skip(ctx, "kernel has no UFFDIO_POISON");
	return iterate_source_kill(ctx, UFFDMOVE_ON_SOURCE_DEATH_POISON);
}

/* The new VMM dies: the source stops, and in COPY mode keeps every byte. */
static int target_killed(struct t_ctx *ctx __attribute__((unused)))
{
	unsigned int i, seed = 777;
	struct guest g = layout;
	struct uffdmove_region r[1];
	char why[256];

	guest_map_source(&g);
	guest_regions(&g, r);
	for (i = 0; i < ITERATIONS; i++) {
		unsigned int kill_us = (unsigned int)(rand_r(&seed) % 60000);
		struct uffdmove_source_opts so;
		struct uffdmove_source *s;
		struct uffdmove_stats st;
		int sv[2], fds, ret;
		pid_t pid;

		pid = t_fork_peer(sv, 60);
		if (pid == 0) {
			struct guest d = layout;
			struct uffdmove_region rd[1];
			struct uffdmove_target *t;
			struct guest_workers w;

			guest_map(&d);
			guest_regions(&d, rd);
			if (uffdmove_target_new(&t, rd, 1, NULL) ||
			    uffdmove_target_handoff(t, sv[1]))
				_exit(50);
			uffdmove_target_process(t);
			guest_workers_start(&w, &d, 2);
			uffdmove_target_wait(t, -1);
			pause();
			_exit(0);
		}
		fds = t_count_fds();	/* with our end of the pair */
		/* MODE_COPY's promise, pulled or pushed: we stay intact. */
		uffdmove_source_opts_init(&so);
		so.mode = UFFDMOVE_MODE_COPY;
		T_CHECK(uffdmove_source_new(&s, r, 1, &so) == 0, "source_new");
		T_CHECK(uffdmove_source_accept(s, sv[0]) == 0, "accept: %s",
			uffdmove_source_error(s));
		if (fork() == 0) {	/* the killer */
			t_child(60);
			sleep_us(kill_us);
			kill(pid, SIGKILL);
			_exit(0);
		}
		ret = uffdmove_source_run(s);
		uffdmove_source_stats(s, &st);
		if (ret)
			printf("    kill at %u us: %s (%s) after %" PRIu64
			       " of %" PRIu64 " bytes\n", kill_us,
			       strerror(-ret), uffdmove_source_error(s),
			       st.bytes_copied, st.bytes_populated);
		T_CHECK(ret == 0 || ret == -ECONNRESET || ret == -ESRCH ||
			ret == -ECANCELED,
			"run returned %d: %s", ret, uffdmove_source_error(s));
		uffdmove_source_free(s);
		close(sv[0]);
		kill(pid, SIGKILL);
		t_wait(pid);
		while (waitpid(-1, NULL, 0) > 0)
			;
		T_CHECK(t_count_fds() == fds - 1, "fd leak: %d -> %d", fds - 1,
			t_count_fds());
		T_CHECK(guest_verify_source(&g, why, sizeof(why)) == 0,
			"iteration %u: COPY source changed: %s", i, why);
	}
	guest_unmap(&g);
	return T_PASS;
}

/* The event cases' pair: COPY with one pusher, slow enough that events
 * land mid-handoff; handed over, not committed. */
static struct uffdmove_target *pair_start(struct guest_pair *p)
{
	guest_pair_start(p, &layout, UFFDMOVE_MODE_COPY, 1);
	return p->t;
}

/* Abort before the point of no return: the source keeps its guest. */
static int abort_before_commit(struct t_ctx *ctx __attribute__((unused)))
{
	struct guest_pair p;
	char why[256];
	struct uffdmove_target *t = pair_start(&p);

	T_CHECK(uffdmove_target_abort(t) == 0, "abort: %s",
		uffdmove_target_error(t));
	guest_pair_join(&p);
	printf("  source: %d %s\n", p.run_ret, p.err);
	T_CHECK(p.run_ret == -ECANCELED, "source run returned %d", p.run_ret);
	T_CHECK(strstr(p.err, "intact"), "message: %s", p.err);
	T_CHECK(guest_verify_source(&p.src, why, sizeof(why)) == 0, "%s", why);
	T_CHECK(uffdmove_target_process(t) == -EINVAL, "process after abort");
	T_CHECK(uffdmove_target_abort(t) == -EINVAL, "second abort");
	/* Unregistered: touching the target does not block. */
	T_CHECK(((volatile uint8_t *)p.dst.addr[0])[p.dst.spec[0].len - 1] ||
		true, "touch");
	guest_pair_end(&p);
	return T_PASS;
}

/* Balloon: the target discards a range mid-handoff. It must read zeros
 * afterwards, never the source's stale data. */
static int remove_mid_handoff(struct t_ctx *ctx __attribute__((unused)))
{
	const size_t off = 32UL << 20, len = 16UL << 20;
	struct guest_pair p;
	char why[256];
	struct uffdmove_target *t = pair_start(&p);
	uint8_t *a;
	size_t i;

	uffdmove_target_process(t);
	a = p.dst.addr[0];
	a[off + len / 2] = 1;	/* maybe fault one in first */
	T_CHECK(madvise(a + off, len, MADV_DONTNEED) == 0, "madvise");
	T_CHECK(uffdmove_target_wait(t, 30000) == 0, "wait: %s",
		uffdmove_target_error(t));
	guest_pair_join(&p);
	T_CHECK(p.run_ret == 0, "source: %s", p.err);
	T_CHECK(t_is_zero(a + off, len), "discarded range was refilled");
	printf("  discarded %" PRIu64 " bytes, copied %" PRIu64 "\n",
	       p.st.bytes_discarded, p.st.bytes_copied);
	T_CHECK(p.st.bytes_discarded >= len, "discarded %" PRIu64,
		p.st.bytes_discarded);
	/* Everything outside the range is intact. */
	for (i = 0; i < p.dst.spec[0].len / T_PAGE; i++) {
		if (i * T_PAGE >= off && i * T_PAGE < off + len)
			continue;
		T_CHECK(guest_verify_page(&p.dst, 0, i, why, sizeof(why)) == 0,
			"%s", why);
	}
	guest_pair_end(&p);
	return T_PASS;
}

/* munmap of part of guest RAM: no hang, the rest arrives. */
static int unmap_mid_handoff(struct t_ctx *ctx __attribute__((unused)))
{
	const size_t keep = 64UL << 20;
	struct guest_pair p;
	char why[256];
	struct uffdmove_target *t = pair_start(&p);
	size_t o;

	uffdmove_target_process(t);
	T_CHECK(munmap(p.dst.addr[0] + keep, p.dst.spec[0].len - keep) == 0,
		"munmap");
	T_CHECK(uffdmove_target_wait(t, 30000) == 0, "wait: %s",
		uffdmove_target_error(t));
	guest_pair_join(&p);
	T_CHECK(p.run_ret == 0, "source: %s", p.err);
	for (o = 0; o < keep / T_PAGE; o++)
		T_CHECK(guest_verify_page(&p.dst, 0, o, why, sizeof(why)) == 0,
			"%s", why);
	/* let pair_end unmap the whole range again (munmap of a hole is ok) */
	guest_pair_end(&p);
	return T_PASS;
}

/* mremap of guest RAM is not followed: a clear error, no hang. */
static int mremap_mid_handoff(struct t_ctx *ctx __attribute__((unused)))
{
	struct guest_pair p;
	struct uffdmove_target *t = pair_start(&p);
	void *to, *moved;
	int ret;

	uffdmove_target_process(t);
	to = mmap(NULL, p.dst.maplen[0], PROT_NONE,
		  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	T_CHECK(to != MAP_FAILED, "mmap");
	moved = mremap(p.dst.map[0], p.dst.maplen[0], p.dst.maplen[0],
		       MREMAP_MAYMOVE | MREMAP_FIXED, to);
	T_CHECK(moved == to, "mremap");
	ret = uffdmove_target_wait(t, 10000);
	guest_pair_join(&p);
	printf("  target: %d %s\n  source: %d %s\n", ret,
	       uffdmove_target_error(t), p.run_ret, p.err);
	T_CHECK(ret == -EPROTO && strstr(uffdmove_target_error(t), "mremap"),
		"target: %d %s", ret, uffdmove_target_error(t));
	T_CHECK(p.run_ret == -EPROTO, "source returned %d", p.run_ret);
	p.dst.map[0] = moved;
	/* Missing pages of the moved mapping are poisoned on free: unmap
	 * them rather than touch. */
	guest_pair_end(&p);
	return T_PASS;
}

int main(void)
{
	static const struct t_case cases[] = {
		{ "source-killed-block", source_killed_block },
		{ "source-killed-poison", source_killed_poison },
		{ "target-killed-copy-intact", target_killed },
		{ "abort-before-commit", abort_before_commit },
		{ "remove-mid-handoff", remove_mid_handoff },
		{ "unmap-mid-handoff", unmap_mid_handoff },
		{ "mremap-mid-handoff", mremap_mid_handoff },
	};
	return t_main(cases, T_ARRAY_SIZE(cases), 280,
		      T_NEED_KERNEL_FAULTS, NULL);
}
