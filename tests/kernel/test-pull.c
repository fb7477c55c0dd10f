// SPDX-License-Identifier: MIT
/*
 * Pull: the new VMM reads the old one's memory and moves it into place
 * itself. Real processes, every byte checked: faults racing the pullers
 * for the same chunks (both fault policies), discards racing pulls, pull
 * denied by the ptrace rules (push instead, and the stats say why), an
 * unprivileged same-uid pair, Yama, hostile peers on either side, and the
 * target dying with MODE_AUTO freeing as it goes.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/capability.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "guest.h"
#include "compat.h"
#include "harness.h"
#include "peer.h"
#include "wire.h"

#define NOBODY		65534
#define ROUNDS		4
#define EXIT_SETUP	50

static const struct guest layout = {
	.n = 2, .seed = 0x9011, .hole_pct = 25,
	.spec = {
		{ "ram0", 48UL << 20, true, 0 },
		{ "ram1", 16UL << 20, false, 3 * T_PAGE },
	},
};

/* Regions without huge pages: a default target pushes instead. */
static const struct guest layout_small = {
	.n = 2, .seed = 0x9012, .hole_pct = 25,
	.spec = {
		{ "ram0", 32UL << 20, false, 0 },
		{ "ram1", 16UL << 20, false, 3 * T_PAGE },
	},
};

/* What both children map; a case may change it before run_pair(). */
static const struct guest *shape = &layout;

/* How the forked new VMM behaves. */
struct target_plan {
	uint32_t fault_policy;
	unsigned int workers;		/* guest threads during the pull */
	unsigned int touchers;		/* threads racing for chunk heads */
	bool discard;			/* a thread discarding meanwhile */
	bool drop_ptrace;		/* without CAP_SYS_PTRACE */
	uid_t uid;			/* 0: stay root */
	uint32_t pull;			/* opts.pull */
	uint32_t expect_prim;		/* UFFDMOVE_PRIM_* in its stats */
	uint32_t expect_why;		/* UFFDMOVE_PULL_WHY_* */
	bool exact;			/* populated as the guest has it */
	bool abort;			/* abort before the commit */
	bool mixed_advice;		/* THP regions half MADV_NOHUGEPAGE */
	bool vmm_nohuge;		/* ... all of them, after target_new */
	bool discard_after_done;	/* page 3 of each THP chunk, at once */
};

static int fail_child(const char *what, const struct uffdmove_target *t)
{
	fprintf(stderr, "  target: %s: %s\n", what,
		t ? uffdmove_target_error(t) : uffdmove_new_error());
	return 1;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------ racing threads */

/* Every thread touches the first page of each chunk, from a different
 * start: pullers and faults meet on the same chunks. */
struct toucher {
	struct guest *g;
	pthread_t tid;
	unsigned int start;
};

static void *toucher_main(void *arg)
{
	struct toucher *tc = arg;
	struct guest *g = tc->g;
	size_t r, c, n;
	volatile uint64_t sink = 0;

	for (r = 0; r < g->n; r++) {
		n = g->spec[r].len / T_HPAGE;
		for (c = 0; c < n; c++)
			sink += *(volatile uint64_t *)(g->addr[r] +
				((c + tc->start) % n) * T_HPAGE);
	}
	(void)sink;
	return NULL;
}

/* Discards while the pull runs: half through the library's fence (which
 * no fill can race), half raw (which the stats must account for). */
struct discarder {
	struct guest *g;
	struct uffdmove_target *t;
	pthread_t tid;
	int ret;
	uint64_t fenced, raw;		/* pages of ram1 */
};

#define DISCARD_PAGES 8

static void *discarder_main(void *arg)
{
	struct discarder *d = arg;
	uint8_t *base = d->g->addr[1];
	size_t pages = d->g->spec[1].len / T_PAGE, i;

	for (i = 0; i + DISCARD_PAGES <= pages; i += 4 * DISCARD_PAGES) {
		void *p = base + i * T_PAGE;

		if ((i / (4 * DISCARD_PAGES)) % 2) {
			if (madvise(p, DISCARD_PAGES * T_PAGE, MADV_DONTNEED))
				d->ret = -errno;
			d->raw++;
		} else {
			d->ret = uffdmove_target_discard(d->t, p,
							 DISCARD_PAGES * T_PAGE);
			d->fenced++;
		}
		if (d->ret)
			break;
	}
	return NULL;
}

/*
 * After discards: a fenced range reads zero; a raw one reads zero, or
 * the source's data if a fill raced it (counted in bytes_discard_raced);
 * every other page is checked by guest_verify() on a copy of the layout
 * that treats discarded pages as holes.
 */
static int verify_discards(const struct guest *g, const struct uffdmove_stats *st,
			   char *why, size_t len)
{
	size_t pages = g->spec[1].len / T_PAGE, i, k;
	uint64_t stale = 0;

	for (i = 0; i + DISCARD_PAGES <= pages; i += 4 * DISCARD_PAGES) {
		bool fenced = !((i / (4 * DISCARD_PAGES)) % 2);

		for (k = i; k < i + DISCARD_PAGES; k++) {
			const uint8_t *p = g->addr[1] + k * T_PAGE;

			if (t_is_zero(p, T_PAGE))
				continue;
			if (fenced) {
				snprintf(why, len, "fenced discard of ram1 page %zu reads data", k);
				return -1;
			}
			if (guest_verify_page(g, 1, k, why, len))
				return -1;	/* neither zero nor its data */
			stale++;
		}
	}
	if (stale && !st->bytes_discard_raced) {
		snprintf(why, len, "%" PRIu64 " raw-discarded pages kept stale data, but bytes_discard_raced is 0",
			 stale);
		return -1;
	}
	return 0;
}

/* Every page outside the discarded ranges, as the source filled it. */
static int verify_outside_discards(const struct guest *g, char *why,
				   size_t len)
{
	size_t r, pg, pages;

	for (r = 0; r < g->n; r++) {
		pages = g->spec[r].len / T_PAGE;
		for (pg = 0; pg < pages; pg++) {
			if (r == 1 && pg % (4 * DISCARD_PAGES) < DISCARD_PAGES &&
			    pg - pg % (4 * DISCARD_PAGES) + DISCARD_PAGES <= pages)
				continue;
			if (guest_verify_page(g, r, pg, why, len))
				return -1;
		}
	}
	return 0;
}

/* ------------------------------------------------------------ the target */

static void drop_privileges(const struct target_plan *tp)
{
	if (tp->drop_ptrace) {
		cap_t caps = cap_get_proc();
		cap_value_t v = CAP_SYS_PTRACE;

		if (!caps || cap_set_flag(caps, CAP_EFFECTIVE, 1, &v, CAP_CLEAR) ||
		    cap_set_flag(caps, CAP_PERMITTED, 1, &v, CAP_CLEAR) ||
		    cap_set_proc(caps))
			_exit(EXIT_SETUP);
		cap_free(caps);
	}
	if (tp->uid && setresuid(tp->uid, tp->uid, tp->uid))
		_exit(EXIT_SETUP);
}

static int check_target_stats(const struct target_plan *tp,
			      const struct uffdmove_stats *st)
{
	if (st->primitive != tp->expect_prim ||
	    st->pull_unused_reason != tp->expect_why) {
		fprintf(stderr, "  target: primitive %u (want %u), pull_unused_reason %u (want %u)\n",
			st->primitive, tp->expect_prim,
			st->pull_unused_reason, tp->expect_why);
		return 1;
	}
	/* Discards only take pages away: each page arrives once at most. */
	if (st->bytes_moved + st->bytes_copied > st->bytes_populated) {
		fprintf(stderr, "  target: moved %" PRIu64 " + copied %" PRIu64
			" > populated %" PRIu64 "\n", st->bytes_moved,
			st->bytes_copied, st->bytes_populated);
		return 1;
	}
	printf("  target: faults %" PRIu64 " p50 %" PRIu64 " us p99 %" PRIu64
	       " us, pulled %" PRIu64 ", moved %" PRIu64 ", copied %" PRIu64
	       ", thp_moved %" PRIu64 "\n", st->faults,
	       st->fault_ns_p50 / 1000, st->fault_ns_p99 / 1000,
	       st->bytes_pulled, st->bytes_moved, st->bytes_copied,
	       st->thp_moved);
	return 0;
}

/* Guest threads during the handoff, per the plan; joined by finish(). */
struct activity {
	struct guest_workers w;
	struct toucher tc[8];
	struct discarder d;
};

static void start_activity(struct activity *a, struct guest *g,
			   struct uffdmove_target *t,
			   const struct target_plan *tp)
{
	unsigned int i;

	memset(a, 0, sizeof(*a));
	if (tp->workers)
		guest_workers_start(&a->w, g, tp->workers);
	for (i = 0; i < tp->touchers; i++) {
		a->tc[i] = (struct toucher){ .g = g, .start = i * 7 };
		pthread_create(&a->tc[i].tid, NULL, toucher_main, &a->tc[i]);
	}
	if (tp->discard) {
		a->d = (struct discarder){ .g = g, .t = t };
		pthread_create(&a->d.tid, NULL, discarder_main, &a->d);
	}
}

static int finish_activity(struct activity *a, const struct target_plan *tp)
{
	unsigned int i;
	int bad = 0;

	for (i = 0; i < tp->touchers; i++)
		pthread_join(a->tc[i].tid, NULL);
	if (tp->discard)
		pthread_join(a->d.tid, NULL);
	if (tp->workers && guest_workers_stop(&a->w)) {
		fprintf(stderr, "  target: guest thread: %s\n", a->w.why);
		bad = 1;
	}
	if (tp->discard && a->d.ret) {
		fprintf(stderr, "  target: discard: %s\n", strerror(-a->d.ret));
		bad = 1;
	}
	return bad;
}

static int verify_target(struct guest *g, const struct target_plan *tp,
			 const struct uffdmove_stats *st)
{
	char why[256];

	if (tp->discard ? verify_discards(g, st, why, sizeof(why)) ||
			  verify_outside_discards(g, why, sizeof(why)) :
			  guest_verify(g, why, sizeof(why))) {
		fprintf(stderr, "  target: after the handoff: %s\n", why);
		return 1;
	}
	return 0;
}

/*
 * Guest RAM the VMM advised MADV_HUGEPAGE is MADV_NOHUGEPAGE from the
 * answer on (a fault there would allocate a huge page first), unless
 * faults pull whole chunks, and advised as before once the handoff is
 * over; a region advised only in part, and the others, keep their advice.
 */
static int check_advice(const struct guest *g, const struct target_plan *tp,
			const char *when, bool paused)
{
	size_t i;

	for (i = 0; i < g->n; i++) {
		bool hg = t_vma_flag(g->addr[i], "hg");
		bool nh = t_vma_flag(g->addr[i], "nh");
		bool thp = g->spec[i].thp;
		bool want_nh = !thp || tp->vmm_nohuge ||
			       (paused && !tp->mixed_advice &&
				tp->fault_policy != UFFDMOVE_FAULT_CHUNK);

		if (hg == !want_nh && nh == want_nh)
			continue;
		fprintf(stderr, "  target: region %s %s: VmFlags hg %d nh %d, want hg %d nh %d\n",
			g->spec[i].name, when, hg, nh, !want_nh, want_nh);
		return 1;
	}
	return 0;
}

/* Half of each THP region advised MADV_NOHUGEPAGE: not ours to change. */
static void mix_advice(const struct guest *g)
{
	size_t i, half;

	for (i = 0; i < g->n; i++) {
		half = g->spec[i].len / 2;
		if (g->spec[i].thp &&
		    madvise(g->addr[i] + half, half, MADV_NOHUGEPAGE))
			t_die("madvise: %m");
	}
}

/*
 * After DONE the library collapses THP chunks that arrived as small pages,
 * in the background. stats.thp_collapsing says when that is over, and
 * thp_uncollapsed what it gave up on: everything, where the VMM advised
 * MADV_NOHUGEPAGE (the kernel refuses MADV_COLLAPSE there).
 */
static int check_collapse(struct uffdmove_target *t,
			  const struct target_plan *tp)
{
	struct uffdmove_stats st;
	int ms;

	for (ms = 0; ms < 20000; ms += 10) {
		uffdmove_target_stats(t, &st);
		if (!st.thp_collapsing)
			break;
		usleep(10000);
	}
	fprintf(stderr, "  target: thp copied %" PRIu64 " collapsed %" PRIu64 " uncollapsed %" PRIu64 " collapsing %u\n",
		st.thp_copied, st.thp_collapsed, st.thp_uncollapsed,
		st.thp_collapsing);
	if (st.thp_collapsing) {
		fprintf(stderr, "  target: still collapsing after 20 s\n");
		return 1;
	}
	if (st.thp_collapsed + st.thp_uncollapsed > st.thp_copied) {
		fprintf(stderr, "  target: collapsed %" PRIu64 " + uncollapsed %" PRIu64 " > copied %" PRIu64 "\n",
			st.thp_collapsed, st.thp_uncollapsed, st.thp_copied);
		return 1;
	}
	if (tp->vmm_nohuge && (st.thp_collapsed ||
			       st.thp_uncollapsed != st.thp_copied)) {
		fprintf(stderr, "  target: the VMM advised MADV_NOHUGEPAGE: want every copied THP chunk uncollapsed\n");
		return 1;
	}
	return 0;
}

#define DISCARD_PAGE	3	/* of each 2 MiB chunk */

/*
 * Right after DONE, while the library collapses THP chunks that arrived
 * as small pages, a balloon discards one page of each through the API.
 * Collapsing must not fill those pages again: they stay missing (and read
 * zero); every other page holds the guest's data.
 */
static int discard_after_done(struct uffdmove_target *t, struct guest *g,
			      const struct target_plan *tp)
{
	size_t r, c, pg, n = 0, back = 0;
	char why[256];
	int bad = 0;

	for (r = 0; r < g->n; r++)
		for (c = 0; g->spec[r].thp && c < g->spec[r].len / T_HPAGE; c++)
			if (uffdmove_target_discard(t, g->addr[r] + c * T_HPAGE +
						       DISCARD_PAGE * T_PAGE,
						    T_PAGE))
				return fail_child("discard after DONE", t);
	bad |= check_collapse(t, tp);
	for (r = 0; r < g->n; r++) {
		for (pg = 0; pg < g->spec[r].len / T_PAGE; pg++) {
			uint8_t *a = g->addr[r] + pg * T_PAGE;

			if (!g->spec[r].thp || pg % 512 != DISCARD_PAGE) {
				if (guest_verify_page(g, r, pg, why, sizeof(why))) {
					fprintf(stderr, "  target: %s\n", why);
					return 1;
				}
				continue;
			}
			n++;
			if (t_pagemap(a) & T_PM_PRESENT)
				back++;
			else if (!t_is_zero(a, T_PAGE))
				bad = 1;
		}
	}
	fprintf(stderr, "  target: %zu pages discarded after DONE, %zu back after the collapse\n",
		n, back);
	return bad | (n == 0) | (back != 0);
}

static int target_main(int sock, const struct target_plan *tp)
{
	struct guest g = *shape;
	struct uffdmove_region regions[GUEST_REGIONS_MAX];
	struct uffdmove_target_opts o;
	struct uffdmove_target *t;
	struct uffdmove_stats st;
	struct activity a;
	size_t i;
	int ret, bad;

	guest_map(&g);
	if (tp->mixed_advice)
		mix_advice(&g);
	guest_regions(&g, regions);
	uffdmove_target_opts_init(&o);
	o.fault_policy = tp->fault_policy;
	o.pull = tp->pull;
	/* SO_PEERCRED names whoever made the socketpair: root, here. */
	o.expected_uid = 0;
	/* The uffd is made with privilege, as a VMM with access to
	 * /dev/userfaultfd makes it; the rest runs without. */
	if (uffdmove_target_new(&t, regions, g.n, &o))
		return fail_child("target_new", NULL);
	for (i = 0; tp->vmm_nohuge && i < g.n; i++)
		if (madvise(g.addr[i], g.spec[i].len, MADV_NOHUGEPAGE))
			return fail_child("madvise", t);
	drop_privileges(tp);
	if (uffdmove_target_handoff(t, sock))
		return fail_child("handoff", t);
	if (check_advice(&g, tp, "once handed off", true))
		return 1;
	if (tp->abort) {
		if (uffdmove_target_abort(t))
			return fail_child("abort", t);
		bad = check_advice(&g, tp, "after the abort", false);
		uffdmove_target_free(t);
		return bad;
	}
	if (uffdmove_target_process(t) < 0)
		return fail_child("commit", t);
	/* Pulling from the commit on: the fault thread, which lives until
	 * the end, says what it is (the pullers may be done already). */
	if (tp->expect_prim == UFFDMOVE_PRIM_PULL &&
	    !t_thread_named("uffdmove-fault")) {
		fprintf(stderr, "  target: no thread named uffdmove-fault after the commit\n");
		return 1;
	}
	start_activity(&a, &g, t, tp);
	ret = uffdmove_target_wait(t, 60000);
	bad = finish_activity(&a, tp);
	if (ret)
		return fail_child("wait", t);
	if (tp->discard_after_done) {
		bad |= discard_after_done(t, &g, tp);
		uffdmove_target_free(t);
		return bad;
	}
	uffdmove_target_stats(t, &st);
	bad |= check_target_stats(tp, &st) | verify_target(&g, tp, &st) |
	       check_advice(&g, tp, "after the handoff", false) |
	       check_collapse(t, tp);
	if (tp->exact && st.bytes_populated != guest_populated_bytes(&g)) {
		fprintf(stderr, "  target: populated %" PRIu64 ", the guest has %" PRIu64 "\n",
			st.bytes_populated, guest_populated_bytes(&g));
		bad = 1;
	}
	uffdmove_target_free(t);
	return bad;
}

/* ------------------------------------------------------------ the source */

struct source_plan {
	uint32_t mode;
	uid_t uid;			/* 0: stay root */
	bool undumpable;
	bool lock;			/* mlock() guest RAM, as mem-lock does */
	bool expect_cancel;		/* the target aborts */
	uint32_t expect_prim;
	uint32_t expect_why;		/* UFFDMOVE_PULL_WHY_* */
};

/* The old VMM in a child of its own (it may change its credentials). */
static int source_main(int sock, const struct source_plan *sp)
{
	struct guest g = *shape;
	struct uffdmove_region regions[GUEST_REGIONS_MAX];
	struct uffdmove_source_opts o;
	struct uffdmove_source *s;
	struct uffdmove_stats st;
	uint64_t left;
	char why[256];
	size_t i;
	int ret;

	if (sp->uid && (setresuid(sp->uid, sp->uid, sp->uid) ||
			prctl(PR_SET_DUMPABLE, 1)))	/* setuid cleared it */
		return EXIT_SETUP;
	if (sp->undumpable && prctl(PR_SET_DUMPABLE, 0))
		return EXIT_SETUP;
	guest_map_source(&g);
	guest_regions(&g, regions);
	for (i = 0; sp->lock && i < g.n; i++)
		if (mlock(g.addr[i], g.spec[i].len))
			return EXIT_SETUP;
	uffdmove_source_opts_init(&o);
	o.mode = sp->mode;
	o.expected_uid = 0;	/* the socketpair's maker, see target_main */
	if (uffdmove_source_new(&s, regions, g.n, &o))
		return EXIT_SETUP;
	ret = uffdmove_source_accept(s, sock);
	if (!ret)
		ret = uffdmove_source_run(s);
	uffdmove_source_stats(s, &st);
	if (sp->expect_cancel) {
		if (ret == -ECANCELED &&
		    !guest_verify_source(&g, why, sizeof(why)))
			return 0;
		fprintf(stderr, "  source: after an abort: %d %s\n", ret,
			uffdmove_source_error(s));
		return 1;
	}
	if (ret || st.primitive != sp->expect_prim ||
	    st.pull_unused_reason != sp->expect_why) {
		fprintf(stderr, "  source: %d %s, primitive %u (want %u), pull_unused_reason %u (want %u)\n",
			ret, uffdmove_source_error(s), st.primitive,
			sp->expect_prim, st.pull_unused_reason,
			sp->expect_why);
		return 1;
	}
	if (sp->mode == UFFDMOVE_MODE_COPY &&
	    guest_verify_source(&g, why, sizeof(why))) {
		fprintf(stderr, "  source: MODE_COPY, but: %s\n", why);
		return 1;
	}
	for (i = 0, left = 0; sp->lock && i < g.n; i++)
		left += t_resident_bytes(g.addr[i], g.spec[i].len);
	if (left) {
		fprintf(stderr, "  source: %" PRIu64 " bytes of locked guest RAM not freed (released %" PRIu64 ")\n",
			left, st.bytes_released);
		return 1;
	}
	uffdmove_source_free(s);
	return 0;
}

/* Both ends in children of ours; 0 when both passed. */
static int run_pair(const struct source_plan *sp, const struct target_plan *tp)
{
	int sv[2], st_src, st_tgt;
	pid_t src, tgt;

	if (t_seqpacket_pair(sv))
		t_die("socketpair");
	src = fork();
	if (src == 0) {
		t_child(90);
		close(sv[1]);
		_exit(source_main(sv[0], sp));
	}
	tgt = fork();
	if (tgt == 0) {
		t_child(90);
		close(sv[0]);
		_exit(target_main(sv[1], tp));
	}
	close(sv[0]);
	close(sv[1]);
	st_src = t_wait(src);
	st_tgt = t_wait(tgt);
	if (WIFEXITED(st_src) && WEXITSTATUS(st_src) == EXIT_SETUP)
		return EXIT_SETUP;
	if (WIFEXITED(st_tgt) && WEXITSTATUS(st_tgt) == EXIT_SETUP)
		return EXIT_SETUP;
	if (!WIFEXITED(st_src) || WEXITSTATUS(st_src) ||
	    !WIFEXITED(st_tgt) || WEXITSTATUS(st_tgt)) {
		fprintf(stderr, "  source status 0x%x, target status 0x%x\n",
			st_src, st_tgt);
		return 1;
	}
	return 0;
}

/* ----------------------------------------------------------------- cases */

static int faults_race(uint32_t policy, unsigned int rounds)
{
	const struct source_plan sp = {
		.mode = UFFDMOVE_MODE_AUTO, .expect_prim = UFFDMOVE_PRIM_PULL,
	};
	const struct target_plan tp = {
		.fault_policy = policy, .workers = 2, .touchers = 4,
		.expect_prim = UFFDMOVE_PRIM_PULL,
	};
	unsigned int i;

	for (i = 0; i < rounds; i++)
		T_CHECK(run_pair(&sp, &tp) == 0, "round %u", i);
	return T_PASS;
}

static int faults_race_chunk(struct t_ctx *ctx)
{
	return faults_race(UFFDMOVE_FAULT_CHUNK, ROUNDS);
}

static int faults_race_page(struct t_ctx *ctx)
{
	return faults_race(UFFDMOVE_FAULT_PAGE, ROUNDS);
}

/*
 * A sparse guest, most chunks empty across several of the windows the
 * target scans ahead in the source's page map, with guest threads
 * faulting in empty and full chunks: every byte, the counts exact.
 */
static int sparse_guest(struct t_ctx *ctx)
{
	static const struct guest sparse = {
		.n = 2, .seed = 0x9013, .hole_pct = 20, .sparse_every = 29,
		.spec = { { "ram0", 1024UL << 20, true, 0 },
			  { "ram1", 1152UL << 20, false, 3 * T_PAGE } },
	};
	const struct source_plan sp = {
		.mode = UFFDMOVE_MODE_AUTO, .expect_prim = UFFDMOVE_PRIM_PULL,
	};
	const struct target_plan tp = {
		.workers = 2, .touchers = 2, .exact = true,
		.expect_prim = UFFDMOVE_PRIM_PULL,
	};

	shape = &sparse;
	T_CHECK(run_pair(&sp, &tp) == 0, "the pair failed (see above)");
	shape = &layout;
	return T_PASS;
}

static int discards_race(struct t_ctx *ctx)
{
	const struct source_plan sp = {
		.mode = UFFDMOVE_MODE_COPY, .expect_prim = UFFDMOVE_PRIM_PULL,
	};
	const struct target_plan tp = {
		.workers = 0, .touchers = 2, .discard = true,
		.expect_prim = UFFDMOVE_PRIM_PULL,
	};
	unsigned int i;

	for (i = 0; i < ROUNDS; i++)
		T_CHECK(run_pair(&sp, &tp) == 0, "round %u", i);
	return T_PASS;
}

/*
 * A chunk the fault thread gives back after the pullers left. One region,
 * empty but for its last chunk, whose first page a guest thread touches
 * before the commit: the fault thread takes that chunk for it (FAULT_CHUNK)
 * while the puller finds the rest empty and runs out of chunks at once.
 * Then a raw discard of the touched page blocks the fault thread's MOVE
 * (EAGAIN): it gives the chunk back, and serves the fault with a zero
 * page, the page being discarded now. The chunk must still arrive.
 */
#define LATE_CHUNKS	16
#define LATE_ROUNDS	40
#define LATE_SEED	0x9014

struct late {
	uint8_t *head;			/* the touched page */
	volatile int go;		/* the commit is done */
	unsigned int delay_us;		/* then the discard, after this */
	int ret;
};

static void *late_toucher(void *arg)
{
	struct late *l = arg;

	(void)*(volatile uint64_t *)l->head;
	return NULL;
}

static void *late_discarder(void *arg)
{
	struct late *l = arg;
	struct timespec ts = { 0, (long)l->delay_us * 1000 };

	while (!__atomic_load_n(&l->go, __ATOMIC_ACQUIRE))
		;
	nanosleep(&ts, NULL);
	if (madvise(l->head, T_PAGE, MADV_DONTNEED))
		l->ret = -errno;
	return NULL;
}

static int late_target(int sock, unsigned int delay_us, bool settle)
{
	size_t len = LATE_CHUNKS * T_HPAGE;
	uint8_t *tgt = t_map(len, true), *last = tgt + len - T_HPAGE;
	struct uffdmove_region region = { "ram0", tgt, len };
	struct uffdmove_target_opts o;
	struct uffdmove_target *t;
	struct late l = { .head = last, .delay_us = delay_us };
	pthread_t toucher, discarder;
	size_t pg;
	int ret;

	uffdmove_target_opts_init(&o);
	o.fault_policy = UFFDMOVE_FAULT_CHUNK;
	o.threads = 1;
	o.expected_uid = 0;
	if (uffdmove_target_new(&t, &region, 1, &o))
		return fail_child("target_new", NULL);
	if (uffdmove_target_handoff(t, sock))
		return fail_child("handoff", t);
	/* Waiting for the fault thread, which starts at the commit. */
	pthread_create(&toucher, NULL, late_toucher, &l);
	pthread_create(&discarder, NULL, late_discarder, &l);
	usleep(2000);
	ret = uffdmove_target_process(t);
	__atomic_store_n(&l.go, 1, __ATOMIC_RELEASE);
	if (ret < 0)
		return fail_child("commit", t);
	/* The end is checked in our calls only: after the discard, which
	 * must not race the count of what arrived at DONE. And the page is
	 * touched again, which waits for the fault thread to have marked
	 * the discard (its event is handled before this fault). */
	if (settle) {
		pthread_join(toucher, NULL);
		pthread_join(discarder, NULL);
		(void)*(volatile uint64_t *)last;
	}
	ret = uffdmove_target_wait(t, 5000);
	if (!settle) {
		pthread_join(toucher, NULL);
		pthread_join(discarder, NULL);
	}
	if (ret)
		return fail_child("wait (a chunk given back never arrived, or DONE miscounted a discard)", t);
	if (l.ret) {
		fprintf(stderr, "  target: madvise: %s\n", strerror(-l.ret));
		return 1;
	}
	/* The discarded page reads zero, or its data if the fill won. */
	if (!t_is_zero(last, T_PAGE) &&
	    t_verify(last, T_PAGE, LATE_SEED, 0, NULL)) {
		fprintf(stderr, "  target: the discarded page holds neither zeros nor its data\n");
		return 1;
	}
	for (pg = 1; pg < T_HPAGE / T_PAGE; pg++)
		if (t_verify(last + pg * T_PAGE, T_PAGE, LATE_SEED, pg, NULL)) {
			fprintf(stderr, "  target: page %zu of the last chunk is wrong\n",
				pg);
			return 1;
		}
	if (!t_is_zero(tgt, len - T_HPAGE)) {
		fprintf(stderr, "  target: data where the source has none\n");
		return 1;
	}
	uffdmove_target_free(t);
	return 0;
}

/*
 * The old VMM's side of one forked pair: accept on @sock, run, reap the
 * new VMM @pid, close @sock. 0 when both ended well; else why in @why.
 */
static int source_serves(const struct uffdmove_region *region,
			 const struct uffdmove_source_opts *o, int sock,
			 pid_t pid, char *why, size_t len)
{
	struct uffdmove_source *s;
	int ret, status;

	ret = uffdmove_source_new(&s, region, 1, o);
	if (ret) {
		snprintf(why, len, "source_new: %s", uffdmove_new_error());
		close(sock);
		t_wait(pid);
		return ret;
	}
	ret = uffdmove_source_accept(s, sock);
	if (!ret)
		ret = uffdmove_source_run(s);
	status = t_wait(pid);
	snprintf(why, len, "source %d %s, target status 0x%x", ret,
		 uffdmove_source_error(s), status);
	uffdmove_source_free(s);
	close(sock);
	return ret == 0 && WIFEXITED(status) && !WEXITSTATUS(status) ? 0 : -1;
}

static int late_rounds(struct t_ctx *ctx, bool settle)
{
	size_t len = LATE_CHUNKS * T_HPAGE;
	uint8_t *src = t_map(len, true);
	struct uffdmove_region region = { "ram0", src, len };
	struct uffdmove_source_opts o;
	unsigned int i;

	t_fill(src + len - T_HPAGE, T_HPAGE, LATE_SEED, 0);
	uffdmove_source_opts_init(&o);
	o.mode = UFFDMOVE_MODE_COPY;	/* the same source every round */
	o.expected_uid = 0;
	for (i = 0; i < LATE_ROUNDS; i++) {
		char why[512];
		int sv[2];
		pid_t pid;

		pid = t_fork_peer(sv, 60);
		if (pid == 0)
			_exit(late_target(sv[1], i * 53 % 400, settle));
		T_CHECK(source_serves(&region, &o, sv[0], pid, why,
				      sizeof(why)) == 0,
			"round %u (discard %u us after the commit): %s", i,
			i * 53 % 400, why);
	}
	t_unmap(src, len);
	return T_PASS;
}

static int late_give_back(struct t_ctx *ctx)
{
	return late_rounds(ctx, true);
}

/*
 * The same, but the target's DONE check runs while the discard is under
 * way: the page it zapped must be counted as discarded, never as lost.
 */
static int late_discard_at_done(struct t_ctx *ctx)
{
	return late_rounds(ctx, false);
}

/*
 * A balloon that discards the same page again and again while the guest
 * reads it in between: each read is a fault on a discarded page, served
 * with the zero page, which the next discard zaps. Guest RAM holds that
 * page once at most, however often it was filled, and DONE must not
 * count it as often. Pulled, and pushed (the fault service is the same).
 */
#define REDISCARD_LEN	(128UL << 20)
#define REDISCARD_TIMES	32
#define REDISCARD_SEED	0x9015

static int rediscard_target(int sock, uint32_t pull)
{
	uint8_t *tgt = t_map(REDISCARD_LEN, true), *page = tgt + T_PAGE;
	struct uffdmove_region region = { "ram0", tgt, REDISCARD_LEN };
	struct uffdmove_target_opts o;
	struct uffdmove_target *t;
	struct uffdmove_stats st;
	size_t off;
	unsigned int i;

	uffdmove_target_opts_init(&o);
	o.pull = pull;
	o.threads = 1;
	o.expected_uid = 0;
	if (uffdmove_target_new(&t, &region, 1, &o))
		return fail_child("target_new", NULL);
	if (uffdmove_target_handoff(t, sock))
		return fail_child("handoff", t);
	if (uffdmove_target_process(t) < 0)
		return fail_child("commit", t);
	for (i = 0; i < REDISCARD_TIMES; i++) {
		if (madvise(page, T_PAGE, MADV_DONTNEED)) {
			perror("  target: madvise");
			return 1;
		}
		(void)*(volatile uint64_t *)page;
	}
	if (uffdmove_target_wait(t, 10000))
		return fail_child("wait (one page discarded and read again and again)", t);
	uffdmove_target_stats(t, &st);
	if (!st.bytes_discarded) {
		fprintf(stderr, "  target: the handoff ended before the discards; nothing was tested\n");
		return 1;
	}
	if (t_verify(tgt, T_PAGE, REDISCARD_SEED, 0, &off) ||
	    t_verify(page + T_PAGE, REDISCARD_LEN - 2 * T_PAGE,
		     REDISCARD_SEED, 2, &off)) {
		fprintf(stderr, "  target: guest RAM wrong at +%zu\n", off);
		return 1;
	}
	printf("  %s: %" PRIu64 " bytes discarded, %" PRIu64 " zeroed\n",
	       pull == UFFDMOVE_PULL_ON ? "pulled" : "pushed",
	       st.bytes_discarded, st.bytes_zeroed);
	uffdmove_target_free(t);
	return 0;
}

static int rediscard_pair(struct t_ctx *ctx, uint32_t pull)
{
	uint8_t *src = t_map(REDISCARD_LEN, true);
	struct uffdmove_region region = { "ram0", src, REDISCARD_LEN };
	struct uffdmove_source_opts o;
	char why[512];
	int sv[2];
	pid_t pid;

	t_fill(src, REDISCARD_LEN, REDISCARD_SEED, 0);
	uffdmove_source_opts_init(&o);
	o.pull = pull;
	o.expected_uid = 0;
	pid = t_fork_peer(sv, 60);
	if (pid == 0)
		_exit(rediscard_target(sv[1], pull));
	T_CHECK(source_serves(&region, &o, sv[0], pid, why, sizeof(why)) == 0,
		"%s", why);
	t_unmap(src, REDISCARD_LEN);
	return T_PASS;
}

static int rediscard_pulled(struct t_ctx *ctx)
{
	return rediscard_pair(ctx, UFFDMOVE_PULL_ON);
}

static int rediscard_pushed(struct t_ctx *ctx)
{
	return rediscard_pair(ctx, UFFDMOVE_PULL_OFF);
}

/* One pair; a child that could not set itself up skips the case. */
static int run_or_skip(struct t_ctx *ctx, const struct source_plan *sp,
		       const struct target_plan *tp, const char *setup)
{
	int ret = run_pair(sp, tp);

	if (ret == EXIT_SETUP)
		return t_case_skip(ctx, "%s", setup);
	T_CHECK(ret == 0, "the pair failed (see above)");
	return T_PASS;
}

/* A non-dumpable source and a target without CAP_SYS_PTRACE: the kernel
 * refuses the read, and the session pushes instead, saying why. */
static int denied_pushes(struct t_ctx *ctx)
{
	const struct source_plan sp = {
		.mode = UFFDMOVE_MODE_AUTO, .undumpable = true,
		.expect_prim = UFFDMOVE_PRIM_COPY,
		.expect_why = UFFDMOVE_PULL_WHY_DENIED,
	};
	const struct target_plan tp = {
		.workers = 2, .drop_ptrace = true,
		.expect_prim = UFFDMOVE_PRIM_COPY,
		.expect_why = UFFDMOVE_PULL_WHY_DENIED,
	};

	if (!ctx->caps->kernel_faults)
		return t_case_skip(ctx, "no kernel-mode faults");
	return run_or_skip(ctx, &sp, &tp, "cannot drop CAP_SYS_PTRACE here");
}

/*
 * No region takes huge pages: by default the target pushes (a 4 KiB pull
 * would copy twice), and both ends say why; asked to (PULL_ON) it pulls.
 * Every byte is checked either way.
 */
static int small_pages(struct t_ctx *ctx)
{
	const struct source_plan push_sp = {
		.mode = UFFDMOVE_MODE_AUTO, .expect_prim = UFFDMOVE_PRIM_COPY,
		.expect_why = UFFDMOVE_PULL_WHY_NO_THP,
	};
	const struct target_plan push_tp = {
		.workers = 2, .expect_prim = UFFDMOVE_PRIM_COPY,
		.expect_why = UFFDMOVE_PULL_WHY_NO_THP,
	};
	const struct source_plan pull_sp = {
		.mode = UFFDMOVE_MODE_AUTO, .expect_prim = UFFDMOVE_PRIM_PULL,
	};
	const struct target_plan pull_tp = {
		.workers = 2, .pull = UFFDMOVE_PULL_ON,
		.expect_prim = UFFDMOVE_PRIM_PULL,
	};

	if (!ctx->caps->kernel_faults)
		return t_case_skip(ctx, "no kernel-mode faults");
	shape = &layout_small;
	T_CHECK(run_pair(&push_sp, &push_tp) == 0, "default: push");
	T_CHECK(run_pair(&pull_sp, &pull_tp) == 0, "PULL_ON: pull");
	shape = &layout;
	return T_PASS;
}

/*
 * A VMM that locks guest RAM (mlock; QEMU's mem-lock=on): MADV_DONTNEED
 * refuses locked memory, and the handoff must not fail over a free.
 * Pulled and pushed, the run completes, every byte arrives, and the
 * source's guest RAM is freed all the same.
 */
static int locked_source(struct t_ctx *ctx)
{
	const struct source_plan pull_sp = {
		.mode = UFFDMOVE_MODE_AUTO, .lock = true,
		.expect_prim = UFFDMOVE_PRIM_PULL,
	};
	const struct target_plan pull_tp = {
		.workers = 2, .expect_prim = UFFDMOVE_PRIM_PULL,
	};
	const struct source_plan push_sp = {
		.mode = UFFDMOVE_MODE_AUTO, .lock = true,
		.expect_prim = UFFDMOVE_PRIM_COPY,
		.expect_why = UFFDMOVE_PULL_WHY_OFF_TARGET,
	};
	const struct target_plan push_tp = {
		.workers = 2, .pull = UFFDMOVE_PULL_OFF,
		.expect_prim = UFFDMOVE_PRIM_COPY,
		.expect_why = UFFDMOVE_PULL_WHY_OFF_TARGET,
	};
	int ret;

	if (!ctx->caps->kernel_faults)
		return t_case_skip(ctx, "no kernel-mode faults");
	ret = run_pair(&pull_sp, &pull_tp);
	if (ret == EXIT_SETUP)
		return t_case_skip(ctx, "mlock() of guest RAM refused here");
	T_CHECK(ret == 0, "pulled from a locked source");
	T_CHECK(run_pair(&push_sp, &push_tp) == 0, "pushed from a locked source");
	return T_PASS;
}

/* Both as nobody: same uid, dumpable, no capability: pull works. */
static int unprivileged_pair(struct t_ctx *ctx)
{
	const struct source_plan sp = {
		.mode = UFFDMOVE_MODE_AUTO, .uid = NOBODY,
		.expect_prim = UFFDMOVE_PRIM_PULL,
	};
	const struct target_plan tp = {
		.workers = 2, .uid = NOBODY,
		.expect_prim = UFFDMOVE_PRIM_PULL,
	};

	if (geteuid() != 0)
		return t_case_skip(ctx, "needs root to become uid %d", NOBODY);
	return run_or_skip(ctx, &sp, &tp, "cannot switch uid");
}

#define YAMA "/proc/sys/kernel/yama/ptrace_scope"

static int write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	int ret;

	if (!f)
		return -errno;
	ret = fputs(text, f) < 0 ? -EIO : 0;
	if (fclose(f) && !ret)
		ret = -errno;
	return ret;
}

/* Under Yama scope 1 only the source's declared ptracer may read it: the
 * source grants that to the authenticated target for the session. */
static int yama_scope_1(struct t_ctx *ctx)
{
	const struct source_plan sp = {
		.mode = UFFDMOVE_MODE_AUTO, .uid = NOBODY,
		.expect_prim = UFFDMOVE_PRIM_PULL,
	};
	const struct target_plan tp = {
		.workers = 1, .uid = NOBODY,
		.expect_prim = UFFDMOVE_PRIM_PULL,
	};
	char old[8] = "";
	FILE *f = fopen(YAMA, "r");
	int ret;

	if (!f) {
		/* The grant, prctl(PR_SET_PTRACER), fails harmlessly with
		 * EINVAL without Yama: every pull test here ran through it. */
		return t_case_skip(ctx, "this kernel has no Yama (%s); PR_SET_PTRACER was tried and ignored by every pull above",
				   YAMA);
	}
	if (!fgets(old, sizeof(old), f))
		old[0] = '\0';
	fclose(f);
	if (write_text(YAMA, "1\n"))
		return t_case_skip(ctx, "cannot set %s to 1", YAMA);
	ret = run_pair(&sp, &tp);
	write_text(YAMA, old);
	T_CHECK(ret == 0, "pull under Yama scope 1 failed (status %d)", ret);
	return T_PASS;
}

/* ----------------------------------------------------- hostile sources */

static int send_wire(int sock, const struct wire_msg *m)
{
	unsigned char buf[WIRE_MSG_MAX];
	int len = wire_encode(m, buf, sizeof(buf));

	return len < 0 ? len : peer_send(sock, buf, (size_t)len, -1, 2000);
}

static int recv_wire(int sock, struct wire_msg *m, int *fd)
{
	unsigned char buf[WIRE_MSG_MAX + 1];
	int fds[PEER_FDS_MAX], len;
	size_t nfds = 0;

	len = peer_recv(sock, buf, sizeof(buf), fds, &nfds, 5000);
	if (fd)
		*fd = nfds ? fds[0] : -1;
	else if (nfds && nfds <= PEER_FDS_MAX)
		peer_close_fds(fds, nfds);
	return len <= 0 ? -EPROTO : wire_decode(buf, (size_t)len, m, NULL, 0);
}

/* How a fake source lies, or what it does after an honest offer. */
enum fake {
	FAKE_WRONG_COOKIE,	/* not the target's cookie */
	FAKE_BYSTANDER,		/* names a process that is not itself */
	FAKE_TARGET_ITSELF,	/* names the target, and its own cookie */
	FAKE_UNMAPPED,		/* a region where it maps nothing */
	FAKE_DONE,		/* honest, then DONE as if it pushed */
	FAKE_UNMAP_LATE,	/* honest, then unmaps a region */
	FAKES,
};

static const char *const fake_name[FAKES] = {
	"wrong cookie", "bystander's pid", "the target itself",
	"an unmapped region", "DONE while pulled", "unmapped after PULL",
};

/* After the offer: what the target answers, and what the fake does then.
 * 0 when the target did what it must. */
static int fake_after_offer(int sock, enum fake how, struct wire_msg *m,
			    struct guest *g)
{
	bool pulls = recv_wire(sock, m, NULL) == 0 && m->type == WIRE_PULL;

	if (how < FAKE_DONE)	/* it must not pull from a liar */
		return pulls ? 1 : 0;
	if (!pulls)
		return 2;
	/* After the target checked our mappings, before it pulls. */
	if (how == FAKE_UNMAP_LATE)
		munmap(g->map[1], g->maplen[1]);
	if (recv_wire(sock, m, NULL) || m->type != WIRE_GO)
		return 2;
	if (how == FAKE_DONE) {
		memset(m, 0, sizeof(*m));
		m->type = WIRE_DONE;	/* "all is there", with no stats */
		if (send_wire(sock, m))
			return EXIT_SETUP;
	}
	pause();
	return 0;
}

static int fake_offer(int sock, enum fake how, pid_t pid)
{
	static uint64_t cookie;
	struct wire_msg *m = calloc(1, sizeof(*m));
	struct guest g = layout;
	uint64_t addr;
	size_t i;

	if (!m || recv_wire(sock, m, NULL) || m->type != WIRE_HELLO)
		return EXIT_SETUP;
	cookie = m->hello.mm_cookie ^ (how == FAKE_WRONG_COOKIE);
	/* Naming the target, point at its own cookie: HELLO disclosed it. */
	addr = how == FAKE_TARGET_ITSELF ? m->hello.mm_cookie_addr :
	       (uintptr_t)&cookie;
	guest_map_source(&g);
	memset(m, 0, sizeof(*m));
	m->type = WIRE_ACCEPT;
	m->accept.primitive = UFFDMOVE_PRIM_PULL;
	m->accept.n_src = (uint32_t)g.n;
	m->accept.pid = (uint32_t)pid;
	m->accept.cookie_addr = addr;
	m->accept.cookie = cookie;
	for (i = 0; i < g.n; i++)
		m->accept.src[i] = (uintptr_t)g.addr[i];
	if (how == FAKE_UNMAPPED)
		munmap(g.map[1], g.maplen[1]);
	if (send_wire(sock, m))
		return EXIT_SETUP;
	return fake_after_offer(sock, how, m, &g);
}

/* The target, against a fake source: what each lie must come to. */
static int against_fake(struct t_ctx *ctx, enum fake how)
{
	struct guest d = layout;
	struct uffdmove_region r[GUEST_REGIONS_MAX];
	struct uffdmove_target *t;
	int sv[2], ret, status;
	pid_t bystander, pid, named;
	char why[256];
	size_t k;

	bystander = fork();	/* a process of ours that holds no cookie */
	if (bystander == 0) {
		t_child(30);
		pause();
		_exit(0);
	}
	pid = t_fork_peer(sv, 30);
	if (pid == 0) {
		named = how == FAKE_BYSTANDER ? bystander :
			how == FAKE_TARGET_ITSELF ? getppid() : getpid();
		_exit(fake_offer(sv[1], how, named));
	}
	guest_map(&d);
	guest_regions(&d, r);
	T_CHECK(uffdmove_target_new(&t, r, d.n, NULL) == 0, "target_new");
	ret = uffdmove_target_handoff(t, sv[0]);
	printf("  %s: handoff %d %s\n", fake_name[how], ret,
	       uffdmove_target_error(t));
	if (how < FAKE_DONE) {
		T_CHECK(ret == -EPROTO, "handoff returned %d: %s", ret,
			uffdmove_target_error(t));
		status = t_wait(pid);
		T_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
			"the fake saw the target go on (status 0x%x)", status);
		/* Nothing read, nothing registered: untouched RAM. */
		for (k = 0; k < d.n; k++)
			T_CHECK(t_resident_bytes(d.addr[k], d.spec[k].len) == 0,
				"region %zu got pages from a liar", k);
	} else {
		T_CHECK(ret == 0, "handoff: %s", uffdmove_target_error(t));
		ret = uffdmove_target_wait(t, 10000);
		printf("  %s: wait %d %s\n", fake_name[how], ret,
		       uffdmove_target_error(t));
		/* Never "complete" with pages missing (no thread touches
		 * guest RAM here, so freeing the orphan is safe). A late
		 * unmap may lose the race to the pullers: then every byte
		 * must have arrived before it. */
		if (how == FAKE_UNMAP_LATE && ret == 0)
			T_CHECK(guest_verify(&d, why, sizeof(why)) == 0,
				"complete, but %s", why);
		else
			T_CHECK(ret < 0 && ret != -ETIMEDOUT,
				"wait returned %d", ret);
		kill(pid, SIGKILL);
		t_wait(pid);
	}
	kill(bystander, SIGKILL);
	t_wait(bystander);
	uffdmove_target_free(t);
	close(sv[0]);
	guest_unmap(&d);
	return T_PASS;
}

static int wrong_cookie(struct t_ctx *ctx)
{
	return against_fake(ctx, FAKE_WRONG_COOKIE);
}

static int someone_elses_pid(struct t_ctx *ctx)
{
	return against_fake(ctx, FAKE_BYSTANDER);
}

static int names_the_target(struct t_ctx *ctx)
{
	return against_fake(ctx, FAKE_TARGET_ITSELF);
}

/*
 * The MADV_NOHUGEPAGE of a handoff is undone however it ends: here by an
 * abort before the commit, pulled and pushed (the checks of target_main()
 * also run after every complete handoff). A region advised MADV_HUGEPAGE
 * only in part keeps its advice, and so does one the VMM advised
 * MADV_NOHUGEPAGE after uffdmove_target_new().
 */
static int advice_given_back(struct t_ctx *ctx)
{
	const struct source_plan sp_cancel = {
		.mode = UFFDMOVE_MODE_AUTO, .expect_cancel = true,
	};
	const struct source_plan sp_pull = {
		.mode = UFFDMOVE_MODE_AUTO, .expect_prim = UFFDMOVE_PRIM_PULL,
	};
	struct target_plan tp = { .abort = true };

	if (!ctx->caps->kernel_faults)
		return t_case_skip(ctx, "no kernel-mode faults");
	T_CHECK(run_pair(&sp_cancel, &tp) == 0, "pulling, aborted");
	tp.pull = UFFDMOVE_PULL_OFF;
	T_CHECK(run_pair(&sp_cancel, &tp) == 0, "pushed, aborted");
	tp = (struct target_plan){ .mixed_advice = true, .workers = 2,
				   .expect_prim = UFFDMOVE_PRIM_PULL };
	T_CHECK(run_pair(&sp_pull, &tp) == 0, "advised in part");
	tp.mixed_advice = false;
	tp.vmm_nohuge = true;
	T_CHECK(run_pair(&sp_pull, &tp) == 0,
		"advised MADV_NOHUGEPAGE after target_new");
	return T_PASS;
}

static int discard_after_done_case(struct t_ctx *ctx)
{
	const struct source_plan sp = {
		.mode = UFFDMOVE_MODE_AUTO, .expect_prim = UFFDMOVE_PRIM_COPY,
		.expect_why = UFFDMOVE_PULL_WHY_OFF_TARGET,
	};
	const struct target_plan tp = { .pull = UFFDMOVE_PULL_OFF,
					.discard_after_done = true };
	int i;

	if (!ctx->caps->kernel_faults)
		return t_case_skip(ctx, "no kernel-mode faults");
	for (i = 0; i < 3; i++)
		T_CHECK(run_pair(&sp, &tp) == 0, "round %d", i);
	return T_PASS;
}

static int unmapped_region(struct t_ctx *ctx)
{
	return against_fake(ctx, FAKE_UNMAPPED);
}

static int done_while_pulled(struct t_ctx *ctx)
{
	return against_fake(ctx, FAKE_DONE);
}

static int unmapped_late(struct t_ctx *ctx)
{
	return against_fake(ctx, FAKE_UNMAP_LATE);
}

/* ----------------------------------------------------- hostile targets */

/* After a hostile target: guest RAM as the source filled it; the handle,
 * the peer and the guest gone. */
static int end_hostile(struct guest *g, struct uffdmove_source *s, pid_t pid,
		       int sock)
{
	char why[256];
	int bad = guest_verify_source(g, why, sizeof(why));

	uffdmove_source_free(s);
	kill(pid, SIGKILL);
	t_wait(pid);
	close(sock);
	guest_unmap(g);
	T_CHECK(!bad, "guest RAM changed: %s", why);
	return T_PASS;
}

/*
 * A target that asks to pull, then sends RELEASE where it must not:
 * before its commit, or outside every region after it. The source frees
 * nothing it was not told to, and says why.
 */
/* HELLO asking to pull, for guest RAM @d: what a pulling target sends. */
static void pull_hello(struct wire_msg *m, const struct guest *d)
{
	size_t i;

	memset(m, 0, sizeof(*m));
	m->type = WIRE_HELLO;
	m->hello.flags = WIRE_HELLO_PULL;
	m->hello.features = UFFD_FEATURE_EVENT_REMOVE |
			    UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMAP |
			    UFFD_FEATURE_MOVE;
	m->hello.n_regions = (uint32_t)d->n;
	for (i = 0; i < d->n; i++) {
		struct wire_region *r = &m->hello.regions[i];

		snprintf(r->name, sizeof(r->name), "%s", d->spec[i].name);
		r->addr = (uintptr_t)d->addr[i];
		r->len = d->spec[i].len;
		r->page_size = T_PAGE;
		r->ioctls = ~0ULL;
	}
}

static int releasing_target(int sock, const struct guest *src, bool commit)
{
	struct wire_msg *m = calloc(1, sizeof(*m));
	struct guest d = layout;

	guest_map(&d);
	pull_hello(m, &d);
	if (send_wire(sock, m) || recv_wire(sock, m, NULL) ||
	    m->accept.primitive != UFFDMOVE_PRIM_PULL)
		return EXIT_SETUP;
	memset(m, 0, sizeof(*m));
	m->type = WIRE_PULL;
	if (send_wire(sock, m))
		return EXIT_SETUP;
	if (commit) {
		m->type = WIRE_GO;
		if (send_wire(sock, m))
			return EXIT_SETUP;
	}
	memset(m, 0, sizeof(*m));
	m->type = WIRE_RELEASE;
	m->ranges.n = 1;
	/* Before the commit: the source's own guest RAM. After it: memory
	 * of the source outside every region (its stack, here). */
	m->ranges.ranges[0].start = commit ? (uintptr_t)&m & ~(T_PAGE - 1) :
				    (uintptr_t)src->addr[0];
	m->ranges.ranges[0].len = commit ? T_PAGE : src->spec[0].len;
	if (send_wire(sock, m))
		return EXIT_SETUP;
	pause();
	return 0;
}

static int hostile_release(struct t_ctx *ctx, bool commit)
{
	struct guest g = layout;
	struct uffdmove_region r[GUEST_REGIONS_MAX];
	struct uffdmove_source *s;
	int sv[2], ret;
	pid_t pid;

	guest_map_source(&g);
	guest_regions(&g, r);
	pid = t_fork_peer(sv, 30);
	if (pid == 0)
		_exit(releasing_target(sv[1], &g, commit));
	T_CHECK(uffdmove_source_new(&s, r, g.n, NULL) == 0, "source_new");
	T_CHECK(uffdmove_source_accept(s, sv[0]) == 0, "accept: %s",
		uffdmove_source_error(s));
	ret = uffdmove_source_run(s);
	printf("  run: %d %s\n", ret, uffdmove_source_error(s));
	T_CHECK(ret == (commit ? -EPROTO : -ECANCELED) &&
		strstr(uffdmove_source_error(s), "RELEASE"),
		"run returned %d: %s", ret, uffdmove_source_error(s));
	return end_hostile(&g, s, pid, sv[0]);
}

static int release_before_commit(struct t_ctx *ctx)
{
	return hostile_release(ctx, false);
}

static int release_outside_regions(struct t_ctx *ctx)
{
	return hostile_release(ctx, true);
}

/*
 * Two regions that touch in the source: a pulling target coalesces what
 * arrived into one range across both (src/ranges.c), and the source must
 * take it. The target here reports it in one RELEASE, then FIN.
 */
#define TOUCHING_LEN	(4UL << 20)

static int spanning_target(int sock)
{
	struct wire_msg *m = calloc(1, sizeof(*m));
	char *mine = mmap(NULL, 2 * TOUCHING_LEN, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint64_t start;
	size_t i;

	if (!m || mine == MAP_FAILED)
		return EXIT_SETUP;
	m->type = WIRE_HELLO;
	m->hello.flags = WIRE_HELLO_PULL;
	m->hello.features = UFFD_FEATURE_MOVE;
	m->hello.n_regions = 2;
	for (i = 0; i < 2; i++)
		m->hello.regions[i] = (struct wire_region){
			.name = { i ? 'b' : 'a' },
			.addr = (uintptr_t)mine + i * TOUCHING_LEN,
			.len = TOUCHING_LEN, .page_size = T_PAGE,
			.ioctls = ~0ULL,
		};
	if (send_wire(sock, m) || recv_wire(sock, m, NULL) ||
	    m->accept.primitive != UFFDMOVE_PRIM_PULL)
		return EXIT_SETUP;
	start = m->accept.src[0];
	memset(m, 0, sizeof(*m));
	m->type = WIRE_PULL;
	if (send_wire(sock, m))
		return EXIT_SETUP;
	m->type = WIRE_GO;
	if (send_wire(sock, m))
		return EXIT_SETUP;
	m->type = WIRE_RELEASE;
	m->ranges.n = 1;
	m->ranges.ranges[0] = (struct wire_range){ start, 2 * TOUCHING_LEN };
	if (send_wire(sock, m))
		return EXIT_SETUP;
	memset(m, 0, sizeof(*m));
	m->type = WIRE_FIN;
	if (send_wire(sock, m))
		return EXIT_SETUP;
	pause();
	return 0;
}

static int release_spans_regions(struct t_ctx *ctx)
{
	struct uffdmove_region r[2];
	struct uffdmove_source *s;
	struct uffdmove_stats st;
	int sv[2], ret;
	uint64_t left;
	char *ram;
	pid_t pid;

	ram = mmap(NULL, 2 * TOUCHING_LEN, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	T_CHECK(ram != MAP_FAILED, "mmap");
	memset(ram, 0x5a, 2 * TOUCHING_LEN);
	r[0] = (struct uffdmove_region){ "a", ram, TOUCHING_LEN };
	r[1] = (struct uffdmove_region){ "b", ram + TOUCHING_LEN,
					 TOUCHING_LEN };
	pid = t_fork_peer(sv, 30);
	if (pid == 0)
		_exit(spanning_target(sv[1]));
	T_CHECK(uffdmove_source_new(&s, r, 2, NULL) == 0, "source_new");
	T_CHECK(uffdmove_source_accept(s, sv[0]) == 0, "accept: %s",
		uffdmove_source_error(s));
	ret = uffdmove_source_run(s);
	uffdmove_source_stats(s, &st);
	left = t_resident_bytes(ram, 2 * TOUCHING_LEN);
	printf("  run: %d %s; released %" PRIu64 ", resident %" PRIu64 "\n",
	       ret, uffdmove_source_error(s), st.bytes_released, left);
	uffdmove_source_free(s);
	kill(pid, SIGKILL);
	t_wait(pid);
	close(sv[0]);
	munmap(ram, 2 * TOUCHING_LEN);
	T_CHECK(ret == 0, "a RELEASE across two touching regions failed the run");
	T_CHECK(st.bytes_released == 2 * TOUCHING_LEN && left == 0,
		"released %" PRIu64 ", %" PRIu64 " bytes left", st.bytes_released,
		left);
	return T_PASS;
}

/* After GO, RELEASE of all of region 0, again and again. */
static int flooding_target(int sock)
{
	struct wire_msg *m = calloc(1, sizeof(*m));
	struct guest d = layout;
	uint64_t start;

	guest_map(&d);
	pull_hello(m, &d);
	if (send_wire(sock, m) || recv_wire(sock, m, NULL) ||
	    m->accept.primitive != UFFDMOVE_PRIM_PULL)
		return EXIT_SETUP;
	start = m->accept.src[0];
	memset(m, 0, sizeof(*m));
	m->type = WIRE_PULL;
	if (send_wire(sock, m))
		return EXIT_SETUP;
	m->type = WIRE_GO;
	if (send_wire(sock, m))
		return EXIT_SETUP;
	m->type = WIRE_RELEASE;
	m->ranges.n = 1;
	m->ranges.ranges[0] = (struct wire_range){ start, d.spec[0].len };
	while (send_wire(sock, m) == 0)
		;
	return 0;
}

static void *cancel_soon(void *arg)
{
	struct timespec ts = { 0, 100 * 1000 * 1000 };

	nanosleep(&ts, NULL);
	uffdmove_source_cancel(arg);
	return NULL;
}

/*
 * A target that reports the same range arrived without end: a cancel is
 * still seen at once, and the range counts once.
 */
static int release_flood(struct t_ctx *ctx)
{
	struct guest g = layout;
	struct uffdmove_region r[GUEST_REGIONS_MAX];
	struct uffdmove_source_opts o;
	struct uffdmove_source *s;
	struct uffdmove_stats st;
	pthread_t tid;
	uint64_t t0, ms;
	int sv[2], ret;
	pid_t pid;

	guest_map_source(&g);
	guest_regions(&g, r);
	pid = t_fork_peer(sv, 30);
	if (pid == 0)
		_exit(flooding_target(sv[1]));
	uffdmove_source_opts_init(&o);
	o.mode = UFFDMOVE_MODE_COPY;
	T_CHECK(uffdmove_source_new(&s, r, g.n, &o) == 0, "source_new");
	T_CHECK(uffdmove_source_accept(s, sv[0]) == 0, "accept: %s",
		uffdmove_source_error(s));
	t0 = now_ms();
	pthread_create(&tid, NULL, cancel_soon, s);
	ret = uffdmove_source_run(s);
	ms = now_ms() - t0;
	pthread_join(tid, NULL);
	uffdmove_source_stats(s, &st);
	printf("  run: %d after %" PRIu64 " ms: %s; pulled %" PRIu64 " of %"
	       PRIu64 "\n", ret, ms, uffdmove_source_error(s),
	       st.bytes_pulled, st.bytes_populated);
	T_CHECK(ret == -ECONNABORTED && ms < 2000,
		"run returned %d after %" PRIu64 " ms", ret, ms);
	T_CHECK(st.bytes_pulled <= st.bytes_populated,
		"one range reported again and again counted %" PRIu64
		" of %" PRIu64 " bytes", st.bytes_pulled, st.bytes_populated);
	return end_hostile(&g, s, pid, sv[0]);
}

/*
 * A source that declined to be pulled (its opts.pull is OFF) must not be
 * talked into it: a second HELLO asking again is refused, and a target
 * that gives up instead gets the handshake ended as cancelled.
 */
static int asking_again(int sock, bool give_up)
{
	struct wire_msg *m = calloc(1, sizeof(*m));
	struct guest d = layout;

	guest_map(&d);
	pull_hello(m, &d);
	if (send_wire(sock, m) || recv_wire(sock, m, NULL) ||
	    m->type != WIRE_ACCEPT ||
	    m->accept.primitive != UFFDMOVE_PRIM_NONE ||
	    m->accept.cookie != UFFDMOVE_PULL_WHY_OFF_SOURCE)
		return 2;	/* it should have declined, saying why */
	if (give_up) {
		memset(m, 0, sizeof(*m));
		m->type = WIRE_ABORT;
		m->reason.errnum = ECANCELED;
		snprintf(m->reason.text, sizeof(m->reason.text), "bored");
	} else {
		pull_hello(m, &d);	/* no uffd: asks to pull again */
	}
	if (send_wire(sock, m))
		return EXIT_SETUP;
	pause();
	return 0;
}

static int declined(struct t_ctx *ctx, bool give_up)
{
	struct guest g = layout;
	struct uffdmove_region r[GUEST_REGIONS_MAX];
	struct uffdmove_source_opts o;
	struct uffdmove_source *s;
	int sv[2], ret;
	pid_t pid;

	guest_map_source(&g);
	guest_regions(&g, r);
	pid = t_fork_peer(sv, 30);
	if (pid == 0)
		_exit(asking_again(sv[1], give_up));
	uffdmove_source_opts_init(&o);
	o.pull = UFFDMOVE_PULL_OFF;
	T_CHECK(uffdmove_source_new(&s, r, g.n, &o) == 0, "source_new");
	ret = uffdmove_source_accept(s, sv[0]);
	printf("  accept: %d %s\n", ret, uffdmove_source_error(s));
	T_CHECK(give_up ? ret == -ECANCELED : ret == -EPROTO &&
		strstr(uffdmove_source_error(s), "second HELLO"),
		"accept returned %d: %s", ret, uffdmove_source_error(s));
	T_CHECK(uffdmove_source_run(s) == -EINVAL, "run after a failed accept");
	return end_hostile(&g, s, pid, sv[0]);
}

static int declined_asks_again(struct t_ctx *ctx)
{
	return declined(ctx, false);
}

static int declined_then_gives_up(struct t_ctx *ctx)
{
	return declined(ctx, true);
}

/*
 * Declared pinned ranges stay in the source after a pull in MODE_AUTO: a
 * device may still write there. Everything else was freed.
 */
static int pinned_stay(struct t_ctx *ctx)
{
	const struct target_plan tp = { .expect_prim = UFFDMOVE_PRIM_PULL };
	struct guest g = layout;
	struct uffdmove_region r[GUEST_REGIONS_MAX];
	struct uffdmove_source *s;
	struct uffdmove_stats st;
	uint8_t *pin = NULL;
	size_t pin_len = 3 * T_HPAGE + 5 * T_PAGE, k, pg;
	uint64_t left = 0, data_left = 0;
	size_t off, chunks_len;
	char why[256];
	int sv[2], ret, status;
	pid_t pid;

	guest_map_source(&g);
	guest_regions(&g, r);
	pin = g.addr[0] + T_HPAGE + 7 * T_PAGE;	/* across chunk edges */
	/* The chunks it spans (guest RAM starts at a chunk boundary). */
	off = (size_t)(pin - g.addr[0]);
	chunks_len = (off + pin_len + T_HPAGE - 1) / T_HPAGE * T_HPAGE -
		     off / T_HPAGE * T_HPAGE;
	pid = t_fork_peer(sv, 60);
	if (pid == 0)
		_exit(target_main(sv[1], &tp));
	T_CHECK(uffdmove_source_new(&s, r, g.n, NULL) == 0, "source_new");
	T_CHECK(uffdmove_source_declare_pinned(s, pin, pin_len) == 0,
		"declare_pinned: %s", uffdmove_source_error(s));
	T_CHECK(uffdmove_source_accept(s, sv[0]) == 0, "accept: %s",
		uffdmove_source_error(s));
	ret = uffdmove_source_run(s);
	uffdmove_source_stats(s, &st);
	T_CHECK(ret == 0, "run: %s", uffdmove_source_error(s));
	status = t_wait(pid);
	T_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		"target status 0x%x", status);
	T_CHECK(st.primitive == UFFDMOVE_PRIM_PULL, "primitive %u",
		st.primitive);
	/* The pinned pages are there, as they were; nothing else is. */
	for (pg = 0; pg < pin_len / T_PAGE; pg++) {
		k = (size_t)(pin - g.addr[0]) / T_PAGE + pg;
		T_CHECK(guest_verify_page(&g, 0, k, why, sizeof(why)) == 0,
			"pinned page %zu: %s", k, why);
	}
	/* khugepaged may collapse a chunk that the free left partly mapped
	 * back into one huge page (max_ptes_none 511 fills the rest with
	 * zeros): resident, but no data. So memory may stay up to the pinned
	 * ranges' chunks, and data only in the pinned pages. */
	for (k = 0; k < g.n; k++) {
		left += t_resident_bytes(g.addr[k], g.spec[k].len);
		for (pg = 0; pg < g.spec[k].len / T_PAGE; pg++) {
			uint8_t *a = g.addr[k] + pg * T_PAGE;

			if ((a < pin || a >= pin + pin_len) &&
			    !t_is_zero(a, T_PAGE))
				data_left += T_PAGE;
		}
	}
	T_CHECK(data_left == 0, "%" PRIu64 " bytes of data left unpinned",
		data_left);
	T_CHECK(left <= chunks_len, "%" PRIu64 " bytes left, pinned %zu in %zu",
		left, pin_len, chunks_len);
	T_CHECK(st.bytes_released + left >= st.bytes_populated,
		"released %" PRIu64 " + left %" PRIu64 " < populated %" PRIu64,
		st.bytes_released, left, st.bytes_populated);
	uffdmove_source_free(s);
	close(sv[0]);
	guest_unmap(&g);
	return T_PASS;
}

/* ------------------------------------------------- the target dies */

/* MODE_AUTO frees as the target reports: a target killed mid-pull ends
 * the source's run promptly, with an error, and leaks nothing. */
static int target_killed_auto(struct t_ctx *ctx)
{
	const struct target_plan tp = { .workers = 2,
					.expect_prim = UFFDMOVE_PRIM_PULL };
	struct guest g = layout;
	struct uffdmove_region r[GUEST_REGIONS_MAX];
	unsigned int i, seed = 77;

	guest_map_source(&g);
	guest_regions(&g, r);
	for (i = 0; i < 2 * ROUNDS; i++) {
		/* What the last round's target took, we freed: fill again. */
		guest_fill(&g);
		struct uffdmove_source *s;
		struct timespec ts = { 0, (long)(rand_r(&seed) % 40) * 1000000 };
		int sv[2], fds, ret;
		pid_t pid;

		fds = t_count_fds();
		pid = t_fork_peer(sv, 60);
		if (pid == 0)
			_exit(target_main(sv[1], &tp));
		T_CHECK(uffdmove_source_new(&s, r, g.n, NULL) == 0,
			"source_new");
		T_CHECK(uffdmove_source_accept(s, sv[0]) == 0, "accept: %s",
			uffdmove_source_error(s));
		if (fork() == 0) {
			t_child(30);
			nanosleep(&ts, NULL);
			kill(pid, SIGKILL);
			_exit(0);
		}
		ret = uffdmove_source_run(s);
		printf("  kill at %ld ms: %d %s\n", ts.tv_nsec / 1000000, ret,
		       uffdmove_source_error(s));
		T_CHECK(ret == 0 || ret == -ECONNRESET || ret == -ECANCELED,
			"run returned %d: %s", ret, uffdmove_source_error(s));
		uffdmove_source_free(s);
		close(sv[0]);
		kill(pid, SIGKILL);
		t_wait(pid);
		while (waitpid(-1, NULL, 0) > 0)
			;
		T_CHECK(t_count_fds() == fds, "fd leak: %d -> %d", fds,
			t_count_fds());
	}
	guest_unmap(&g);
	return T_PASS;
}

int main(void)
{
	static const struct t_case cases[] = {
		{ "faults-race-pulls-chunk", faults_race_chunk },
		{ "faults-race-pulls-page", faults_race_page },
		{ "sparse-guest-pulls", sparse_guest },
		{ "discards-race-pulls", discards_race },
		{ "discard-gives-back-late", late_give_back },
		{ "rediscard-pulled", rediscard_pulled },
		{ "rediscard-pushed", rediscard_pushed },
		{ "discard-at-done-pulls", late_discard_at_done },
		{ "denied-falls-back-to-push", denied_pushes },
		{ "unprivileged-same-uid", unprivileged_pair },
		{ "small-pages-push-by-default", small_pages },
		{ "locked-source", locked_source },
		{ "yama-scope-1", yama_scope_1 },
		{ "wrong-cookie", wrong_cookie },
		{ "someone-elses-pid", someone_elses_pid },
		{ "source-names-the-target", names_the_target },
		{ "source-region-unmapped", unmapped_region },
		{ "done-while-pulled", done_while_pulled },
		{ "source-unmaps-late", unmapped_late },
		{ "release-before-commit", release_before_commit },
		{ "release-outside-regions", release_outside_regions },
		{ "release-flood", release_flood },
		{ "release-spans-touching-regions", release_spans_regions },
		{ "declined-asks-again", declined_asks_again },
		{ "declined-then-gives-up", declined_then_gives_up },
		{ "pinned-ranges-stay", pinned_stay },
		{ "thp-advice-given-back", advice_given_back },
		{ "discard-after-done-stays", discard_after_done_case },
		{ "target-killed-auto", target_killed_auto },
	};

	return t_main(cases, T_ARRAY_SIZE(cases), 280, T_NEED_MOVE, NULL);
}
