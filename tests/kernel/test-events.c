// SPDX-License-Identifier: MIT
/*
 * Target events while guest threads fault: discards (REMOVE events) make
 * every fill fail with EAGAIN until the holder of the uffd reads them.
 * No fault may be dropped or left waiting for the end of the handoff, and
 * no wait for a chunk may stop the uffd from being read.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "guest.h"
#include "harness.h"

#define ALIGN_PAGE(x)	((x) & ~(T_PAGE - 1))

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* Hand over and commit: the guest may run. */
static void pair_start(struct guest_pair *p, const struct guest *layout,
		       uint32_t mode, uint32_t threads)
{
	guest_pair_start(p, layout, mode, threads);
	if (uffdmove_target_process(p->t) < 0)
		t_die("commit: %s", uffdmove_target_error(p->t));
}

/*
 * Discards a page of guest RAM over and over: a steady REMOVE stream, one
 * every @pause_ns (0: back to back), like a balloon inflating.
 */
struct discarder {
	uint8_t *page;
	long pause_ns;
	bool stop;
	uint64_t n;
	pthread_t tid;
};

static void *discarder_main(void *arg)
{
	struct discarder *d = arg;
	struct timespec ts = { 0, d->pause_ns };

	while (!__atomic_load_n(&d->stop, __ATOMIC_ACQUIRE)) {
		madvise(d->page, T_PAGE, MADV_DONTNEED);
		d->n++;
		if (d->pause_ns)
			nanosleep(&ts, NULL);
	}
	return NULL;
}

static void discarder_start(struct discarder *d, uint8_t *page,
			    long pause_ns)
{
	memset(d, 0, sizeof(*d));
	d->page = page;
	d->pause_ns = pause_ns;
	if (pthread_create(&d->tid, NULL, discarder_main, d))
		t_die("pthread_create");
}

static uint64_t discarder_stop(struct discarder *d)
{
	__atomic_store_n(&d->stop, true, __ATOMIC_RELEASE);
	pthread_join(d->tid, NULL);
	return d->n;
}

/*
 * Item 5 of "never lose the guest": same-process MOVE with discards. A
 * fault on a chunk a pusher held waited for it while nobody read the
 * uffd, and the pusher waited for a REMOVE only the fault thread reads.
 */
static int move_with_discards(struct t_ctx *ctx)
{
	static const struct guest layout = {
		.n = 1, .seed = 505, .hole_pct = 10,
		.spec = { { "ram0", 64UL << 20, true, 0 } },
	};
	struct guest_workers w;
	struct discarder d;
	struct guest_pair p;
	uint64_t removes;
	int ret, bad;

	if (!ctx->caps->move)
		return t_case_skip(ctx, "kernel offers no UFFD_FEATURE_MOVE");
	pair_start(&p, &layout, UFFDMOVE_MODE_AUTO, 2);
	/* A steady stream of discards of one page, as a balloon makes. It
	 * reads as zeros once discarded: a guest thread that read it took
	 * that for lost data (a flaky failure under ASan, more reads). */
	p.dst.discarding = p.dst.addr[0] + layout.spec[0].len - T_PAGE;
	discarder_start(&d, (uint8_t *)p.dst.discarding, 50000);
	guest_workers_start(&w, &p.dst, 2);
	ret = uffdmove_target_wait(p.t, 20000);
	printf("  wait: %d %s\n", ret, uffdmove_target_error(p.t));
	removes = discarder_stop(&d);
	if (ret)	/* let it end, so that nothing outlives this case */
		uffdmove_target_wait(p.t, 20000);
	bad = guest_workers_stop(&w);
	guest_pair_join(&p);
	printf("  %" PRIu64 " discards, %" PRIu64 " reads\n", removes, w.reads);
	T_CHECK(ret == 0, "the handoff did not complete in 20 s: %s",
		uffdmove_target_error(p.t));
	T_CHECK(p.run_ret == 0, "source: %d %s", p.run_ret, p.err);
	T_CHECK(!bad, "a guest thread read wrong bytes: %s", w.why);
	T_CHECK(p.st.bytes_moved > 0, "nothing moved");
	guest_pair_end(&p);
	return T_PASS;
}

/* One guest thread per hole page: touches it once, notes when. */
struct toucher {
	uint8_t *page;
	pthread_barrier_t *go;
	uint64_t done_ns;
	pthread_t tid;
};

static void *toucher_main(void *arg)
{
	struct toucher *t = arg;

	pthread_barrier_wait(t->go);
	if (*(volatile uint8_t *)t->page != 0)
		t->done_ns = 1;		/* a hole must read zero */
	else
		t->done_ns = mono_ns();
	return NULL;
}

#define TOUCHERS 160

/*
 * Item 6: faults that met EAGAIN beyond the first 64 were dropped, and a
 * thread faulting on a hole then slept until DONE unregistered the range.
 * Here 160 threads fault on holes at once while a discard stream keeps
 * REMOVE events pending: each must be served before the handoff ends.
 */
static int hole_faults(bool discards, uint64_t *handoff_ns)
{
	static const struct guest layout = {
		.n = 1, .seed = 606, .hole_pct = 50,
		.spec = { { "ram0", 256UL << 20, false, 0 } },
	};
	static struct toucher tt[TOUCHERS];
	struct discarder d = { 0 };
	pthread_barrier_t go;
	struct guest_pair p;
	uint64_t t0, t_done, worst = 0, removes;
	size_t i, page, last;
	int ret;

	pair_start(&p, &layout, UFFDMOVE_MODE_COPY, 1);
	t0 = mono_ns();
	last = layout.spec[0].len / T_PAGE - 1;
	if (discards)
		discarder_start(&d, p.dst.addr[0] + last * T_PAGE, 50000);
	pthread_barrier_init(&go, NULL, TOUCHERS + 1);
	/* Holes far from the front of the push, one per thread. */
	for (i = 0, page = last - 1; i < TOUCHERS; page--) {
		if (!guest_is_hole(&p.dst, 0, page))
			continue;
		tt[i].page = p.dst.addr[0] + page * T_PAGE;
		tt[i].go = &go;
		if (pthread_create(&tt[i].tid, NULL, toucher_main, &tt[i]))
			t_die("pthread_create");
		i++;
	}
	pthread_barrier_wait(&go);
	ret = uffdmove_target_wait(p.t, 30000);
	t_done = mono_ns();
	printf("  wait: %d %s\n", ret, uffdmove_target_error(p.t));
	removes = discards ? discarder_stop(&d) : 0;
	for (i = 0; i < TOUCHERS; i++) {
		pthread_join(tt[i].tid, NULL);
		T_CHECK(tt[i].done_ns != 1, "hole page read non-zero");
		if (tt[i].done_ns - t0 > worst)
			worst = tt[i].done_ns - t0;
	}
	guest_pair_join(&p);
	printf("  handoff %.1f ms, slowest of %d faults %.1f ms, %" PRIu64
	       " discards, %" PRIu64 " faults, %" PRIu64 " EAGAIN\n",
	       (double)(t_done - t0) / 1e6, TOUCHERS, (double)worst / 1e6,
	       removes, p.st.faults, p.st.eagain_retries);
	T_CHECK(ret == 0, "wait: %s", uffdmove_target_error(p.t));
	T_CHECK(p.run_ret == 0, "source: %s", p.err);
	for (i = 0; i < TOUCHERS; i++)
		T_CHECK(tt[i].done_ns < t_done,
			"fault %zu was served only after the handoff ended", i);
	T_CHECK(p.st.faults >= TOUCHERS, "%" PRIu64 " faults served",
		p.st.faults);
	pthread_barrier_destroy(&go);
	guest_pair_end(&p);
	*handoff_ns = t_done - t0;
	return T_PASS;
}

static int faults_never_dropped(struct t_ctx *ctx)
{
	uint64_t quiet[2], busy;

	/* The same handoff without discards before and after, for scale
	 * (first touches of fresh memory vary a lot here). */
	if (hole_faults(false, &quiet[0]) || hole_faults(true, &busy) ||
	    hole_faults(false, &quiet[1]))
		return T_FAIL;
	quiet[0] = (quiet[0] + quiet[1]) / 2;
	printf("  with a discard stream: %.1fx the quiet handoff\n",
	       (double)busy / (double)quiet[0]);
	T_CHECK(busy < 10 * quiet[0], "discards made the handoff %.1fx slower",
		(double)busy / (double)quiet[0]);
	return T_PASS;
}

/*
 * Item 2: discards just ahead of the push. A raw MADV_DONTNEED proceeds
 * as soon as the source reads its REMOVE event, so a fill already past
 * its check could land behind the zap: stale data in a page the guest
 * freed. uffdmove_target_discard() must leave every such page zero; a raw
 * madvise must at least be reported (bytes_discard_raced).
 */
#define DISCARD_AHEAD	(4UL << 20)	/* past the push frontier */
#define DISCARD_PAGES	8		/* per round */
#define REGROW_PAGES	8		/* unmapped and grown back at once */

enum discard_kind {
	DISCARD_FENCED,		/* uffdmove_target_discard() */
	DISCARD_RAW,		/* madvise(MADV_DONTNEED) */
	DISCARD_REGROW,		/* munmap(), then the mapping in front
				   grown back over the hole (mremap()) */
};

/* The first 2 MiB chunk whose first wanted page has not arrived. */
static size_t push_frontier(const struct guest_pair *p, size_t from)
{
	size_t n = p->dst.spec[0].len / T_HPAGE, c;

	for (c = from; c < n; c++)
		if (!(t_pagemap(p->dst.addr[0] + c * T_HPAGE) & T_PM_PRESENT))
			return c;
	return n;
}

/*
 * The race of a fill with an UNMAP is narrow: widen it as a busy host
 * would. The VMM's thread (this one) runs SCHED_FIFO on CPU 0, where the
 * source reads the uffd, and the pushers on CPU 1. Best effort: without
 * the privilege, or on one CPU, it just runs as it is.
 */
static void crowd_the_reader(bool on)
{
	struct sched_param sp = { .sched_priority = on ? 1 : 0 };
	cpu_set_t cpu0, cpu1;
	char path[64], comm[32];
	struct dirent *d;
	DIR *dir;
	FILE *f;

	CPU_ZERO(&cpu0);
	CPU_SET(0, &cpu0);
	CPU_ZERO(&cpu1);
	CPU_SET(1, &cpu1);
	dir = on ? opendir("/proc/self/task") : NULL;
	while (dir && (d = readdir(dir))) {
		pid_t tid = atoi(d->d_name);

		snprintf(path, sizeof(path), "/proc/self/task/%d/comm", tid);
		f = tid > 0 ? fopen(path, "re") : NULL;
		if (!f)
			continue;
		if (fgets(comm, sizeof(comm), f))
			sched_setaffinity(tid, sizeof(cpu_set_t),
					  strncmp(comm, "uffdmove-push", 13) ?
					  &cpu0 : &cpu1);
		fclose(f);
	}
	if (dir)
		closedir(dir);
	sched_setscheduler(0, on ? SCHED_FIFO : SCHED_OTHER, &sp);
}

/* Unmap @len at @off of guest RAM @a and grow the mapping in front back
 * over it: the grown part keeps the uffd's registration. */
static bool unmap_regrow(uint8_t *a, size_t off, size_t len)
{
	if (munmap(a + off, len))
		t_die("munmap: %s", strerror(errno));
	if (mremap(a, off, off + len, 0) != MAP_FAILED)
		return true;
	/* The front is more than one mapping: refill it unregistered. */
	if (mmap(a + off, len, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED)
		t_die("mmap: %s", strerror(errno));
	return false;
}

static int discard_ahead(enum discard_kind kind, uint64_t *stale,
			 uint64_t *raced)
{
	bool fenced = kind == DISCARD_FENCED;
	size_t regrown = 0, n;
	static const struct guest layout = {
		.n = 1, .seed = 707, .hole_pct = 0,
		.spec = { { "ram0", 128UL << 20, false, 0 } },
	};
	size_t npages = layout.spec[0].len / T_PAGE, i, c = 0, off;
	struct timespec pause = { 0, 20000 };
	unsigned int seed = fenced ? 1 : 2;
	uint8_t *gone, *a;
	struct guest_pair p;
	int ret = 0;

	gone = calloc(npages, 1);
	pair_start(&p, &layout, UFFDMOVE_MODE_COPY, 2);
	a = p.dst.addr[0];
	if (kind == DISCARD_REGROW) {
		while (!(t_pagemap(a) & T_PM_PRESENT))	/* pushers named */
			usleep(10);
		crowd_the_reader(true);
	}
	while ((ret = uffdmove_target_process(p.t)) == 0) {
		c = push_frontier(&p, c);
		for (i = 0; i < DISCARD_PAGES; i++) {
			off = ALIGN_PAGE(c * T_HPAGE +
					 (size_t)rand_r(&seed) % DISCARD_AHEAD);
			if (off >= layout.spec[0].len)
				break;
			if (kind == DISCARD_REGROW) {
				if (!off || off + REGROW_PAGES * T_PAGE >
					    layout.spec[0].len)
					break;
				for (n = 0; n < REGROW_PAGES; n++)
					if (gone[off / T_PAGE + n])
						break;
				if (n < REGROW_PAGES)
					continue;
				regrown += unmap_regrow(a, off,
							REGROW_PAGES * T_PAGE);
				memset(gone + off / T_PAGE, 1, REGROW_PAGES);
				break;	/* one piece per round */
			}
			if (fenced)
				T_CHECK(uffdmove_target_discard(p.t, a + off,
								T_PAGE) == 0,
					"discard: %s",
					uffdmove_target_error(p.t));
			else
				madvise(a + off, T_PAGE, MADV_DONTNEED);
			gone[off / T_PAGE] = 1;
		}
		nanosleep(&pause, NULL);	/* a steady stream, not a storm */
	}
	if (kind == DISCARD_REGROW)
		crowd_the_reader(false);
	T_CHECK(ret == 1, "handoff: %d %s", ret, uffdmove_target_error(p.t));
	guest_pair_join(&p);
	T_CHECK(p.run_ret == 0, "source: %s", p.err);
	*stale = 0;
	for (i = 0; i < npages; i++) {
		if (gone[i]) {
			*stale += !t_is_zero(a + i * T_PAGE, T_PAGE);
			continue;
		}
		T_CHECK(t_verify(a + i * T_PAGE, T_PAGE, p.dst.seed, i,
				 &off) == 0, "page %zu wrong at +%zu", i, off);
	}
	*raced = p.st.bytes_discard_raced;
	for (i = 0, off = 0; i < npages; i++)
		off += gone[i];
	printf("  %s: %zu pages discarded ahead of the push, %" PRIu64
	       " stale, %" PRIu64 " bytes reported raced\n",
	       fenced ? "uffdmove_target_discard" :
	       kind == DISCARD_RAW ? "raw madvise" : "munmap + regrow", off,
	       *stale, *raced);
	if (kind == DISCARD_REGROW)
		T_CHECK(regrown, "no piece grew back over its hole");
	free(gone);
	guest_pair_end(&p);
	return T_PASS;
}

static int discard_fenced(struct t_ctx *ctx)
{
	uint64_t stale, raced;
	int round;

	for (round = 0; round < 4; round++) {
		if (discard_ahead(DISCARD_FENCED, &stale, &raced))
			return T_FAIL;
		T_CHECK(!stale, "%" PRIu64 " discarded pages hold stale data",
			stale);
	}
	return T_PASS;
}

/* Every stale page a discard of @kind let through is counted. */
static int stale_reported(enum discard_kind kind, int rounds)
{
	uint64_t stale, raced;
	int round;

	for (round = 0; round < rounds; round++) {
		if (discard_ahead(kind, &stale, &raced))
			return T_FAIL;
		T_CHECK(stale * T_PAGE <= raced,
			"%" PRIu64 " stale pages, only %" PRIu64
			" bytes reported raced", stale, raced);
	}
	return T_PASS;
}

static int discard_raw_reported(struct t_ctx *ctx)
{
	(void)ctx;
	return stale_reported(DISCARD_RAW, 4);
}

/*
 * An munmap() of guest RAM is a discard too, and the mapping in front may
 * grow back over the hole in place (mremap()), registered still: a fill
 * past its check lands there with the old data. It must be reported as
 * a raw discard is.
 */
static int unmap_regrow_reported(struct t_ctx *ctx)
{
	(void)ctx;
	return stale_reported(DISCARD_REGROW, 3);
}

/*
 * A VMA split in guest RAM (MADV_DONTFORK, mprotect, mlock on part of it)
 * raises no event, and a fill across the split is refused with ENOENT as
 * if the range were unmapped: it must not be taken for a discard.
 */
static int split_mappings(struct t_ctx *ctx)
{
	static const struct guest layout = {
		.n = 1, .seed = 808, .hole_pct = 10,
		.spec = { { "ram0", 32UL << 20, false, 0 } },
	};
	struct guest_pair p;
	char why[256];
	size_t c;
	int ret;

	pair_start(&p, &layout, UFFDMOVE_MODE_COPY, 2);
	for (c = 0; c < layout.spec[0].len / T_HPAGE; c++)
		madvise(p.dst.addr[0] + c * T_HPAGE + 77 * T_PAGE, T_PAGE,
			MADV_DONTFORK);
	ret = uffdmove_target_wait(p.t, 20000);
	guest_pair_join(&p);
	T_CHECK(ret == 0, "wait: %s", uffdmove_target_error(p.t));
	T_CHECK(p.run_ret == 0, "source: %s", p.err);
	T_CHECK(guest_verify(&p.dst, why, sizeof(why)) == 0, "%s", why);
	printf("  %zu splits, every byte arrived\n", c);
	guest_pair_end(&p);
	return T_PASS;
}

/* The guest uses discarded pages again before the handoff ends (balloon
 * deflate): what it writes stays. */
static int discard_then_reuse(struct t_ctx *ctx)
{
	static const struct guest layout = {
		.n = 1, .seed = 909, .hole_pct = 0,
		.spec = { { "ram0", 64UL << 20, false, 0 } },
	};
	const size_t off = 48UL << 20, len = 1UL << 20;
	struct guest_pair p;
	uint8_t *a;
	size_t i;
	int ret;

	pair_start(&p, &layout, UFFDMOVE_MODE_COPY, 1);
	a = p.dst.addr[0] + off;
	T_CHECK(uffdmove_target_discard(p.t, a, len) == 0, "discard: %s",
		uffdmove_target_error(p.t));
	memset(a, 0xab, len);
	ret = uffdmove_target_wait(p.t, 20000);
	guest_pair_join(&p);
	T_CHECK(ret == 0, "wait: %s", uffdmove_target_error(p.t));
	for (i = 0; i < len; i++)
		T_CHECK(a[i] == 0xab, "byte %zu written after the discard is %#x",
			i, a[i]);
	guest_pair_end(&p);
	return T_PASS;
}

int main(void)
{
	static const struct t_case cases[] = {
		{ "move-with-discards", move_with_discards },
		{ "faults-never-dropped", faults_never_dropped },
		{ "discard-fenced", discard_fenced },
		{ "discard-raw-reported", discard_raw_reported },
		{ "unmap-regrow-reported", unmap_regrow_reported },
		{ "split-mappings", split_mappings },
		{ "discard-then-reuse", discard_then_reuse },
	};
	return t_main(cases, T_ARRAY_SIZE(cases), 100,
		      T_NEED_KERNEL_FAULTS, NULL);
}
