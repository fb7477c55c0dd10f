// SPDX-License-Identifier: MIT
/*
 * Zero-copy MOVE and the pin-safety layer, through the public API with
 * source and target in one process (the only place upstream kernels allow
 * UFFDIO_MOVE). Every byte is checked; the stats say which path was taken.
 */
#include <errno.h>
#include <inttypes.h>
#include <liburing.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "guest.h"
#include "harness.h"

struct pair {
	struct guest src, dst;
	struct uffdmove_source_opts sopts;
	struct uffdmove_source *s;
	int sv[2];
	int accept_ret, run_ret;
	char src_err[256];
	struct uffdmove_stats st;	/* source's */
	struct uffdmove_stats tst;	/* target's */
	void (*before_accept)(struct pair *p);
	void *pin_addr;
	size_t pin_len;
	bool await_collapse;	/* let the target's collapse end first */
};

static void *source_thread(void *arg)
{
	struct pair *p = arg;
	struct uffdmove_region r[GUEST_REGIONS_MAX];

	guest_regions(&p->src, r);
	p->accept_ret = uffdmove_source_new(&p->s, r, p->src.n, &p->sopts);
	if (p->accept_ret)
		return NULL;
	if (p->before_accept)
		p->before_accept(p);
	p->accept_ret = uffdmove_source_accept(p->s, p->sv[0]);
	if (!p->accept_ret)
		p->run_ret = uffdmove_source_run(p->s);
	snprintf(p->src_err, sizeof(p->src_err), "%s",
		 uffdmove_source_error(p->s));
	uffdmove_source_stats(p->s, &p->st);
	return NULL;
}

/* Hand p->src over to p->dst inside this process; 0 if it completed. */
static int handoff(struct pair *p, bool workers)
{
	struct uffdmove_region r[GUEST_REGIONS_MAX];
	struct uffdmove_target *t;
	struct guest_workers w;
	pthread_t th;
	int ret;

	if (t_seqpacket_pair(p->sv))
		t_die("socketpair");
	if (pthread_create(&th, NULL, source_thread, p))
		t_die("pthread_create");
	guest_regions(&p->dst, r);
	ret = uffdmove_target_new(&t, r, p->dst.n, NULL);
	if (ret)
		t_die("target_new: %s", strerror(-ret));
	ret = uffdmove_target_handoff(t, p->sv[1]);
	if (!ret) {
		uffdmove_target_process(t);
		if (workers)
			guest_workers_start(&w, &p->dst, 2);
		ret = uffdmove_target_wait(t, 60000);
		if (ret && workers) {
			/* Guest threads stay blocked on missing pages after a
			 * failed handoff (the BLOCK policy): report, leave. */
			pthread_join(th, NULL);
			t_die("handoff failed: target: %s; source: %s",
			      uffdmove_target_error(t), p->src_err);
		}
		if (workers && guest_workers_stop(&w))
			t_die("%s", w.why);
	}
	if (ret)
		printf("target: %s\n", uffdmove_target_error(t));
	pthread_join(th, NULL);
	uffdmove_target_stats(t, &p->tst);
	while (!ret && p->await_collapse && p->tst.thp_collapsing) {
		usleep(10000);
		uffdmove_target_stats(t, &p->tst);
	}
	uffdmove_target_free(t);
	uffdmove_source_free(p->s);
	close(p->sv[0]);
	close(p->sv[1]);
	printf("  moved %" PRIu64 " copied %" PRIu64 " zeroed %" PRIu64
	       " populated %" PRIu64 " ebusy %" PRIu64 " pinned %" PRIu64
	       " thp moved %" PRIu64 " copied %" PRIu64 " collapsed %" PRIu64
	       " faults %" PRIu64 " elapsed %" PRIu64 " us\n",
	       p->st.bytes_moved, p->st.bytes_copied, p->st.bytes_zeroed,
	       p->st.bytes_populated, p->st.move_ebusy, p->st.pinned_skipped,
	       p->st.thp_moved, p->st.thp_copied, p->tst.thp_collapsed,
	       p->st.faults, p->st.elapsed_ns / 1000);
	return ret;
}

static void pair_init(struct pair *p, const struct guest *layout)
{
	memset(p, 0, sizeof(*p));
	p->src = *layout;
	p->dst = *layout;
	guest_map(&p->src);
	guest_fill(&p->src);
	guest_map(&p->dst);
	uffdmove_source_opts_init(&p->sopts);
}

static void pair_fini(struct pair *p)
{
	guest_unmap(&p->src);
	guest_unmap(&p->dst);
}

/* Every page with data moved or copied, once: the counts add up. */
static int check_each_page_handed(const struct pair *p)
{
	T_CHECK(p->st.bytes_moved + p->st.bytes_copied == p->st.bytes_populated,
		"moved %" PRIu64 " + copied %" PRIu64 " != populated %" PRIu64,
		p->st.bytes_moved, p->st.bytes_copied, p->st.bytes_populated);
	return T_PASS;
}

/* After MOVE the source's pages are gone: no page of it is present. */
static size_t present_pages(const struct guest *g)
{
	size_t r, i, n = 0;

	for (r = 0; r < g->n; r++)
		for (i = 0; i < g->spec[r].len; i += T_PAGE)
			n += !!(t_pagemap(g->addr[r] + i) & T_PM_PRESENT);
	return n;
}

static int same_process_thp(struct t_ctx *ctx)
{
	struct guest L = { .n = 1, .seed = 7,
			   .spec = { { "ram", 512UL << 20, true, 0 } } };
	uint64_t huge_before, huge_after;
	struct pair p;
	char why[256];

	pair_init(&p, &L);
	huge_before = t_anon_huge_bytes_range(0, p.src.addr[0], L.spec[0].len);
	if (huge_before < L.spec[0].len / 2) {
		pair_fini(&p);
		return t_case_skip(ctx, "the source got only %" PRIu64
				   " MiB of THP (THP disabled?)",
				   huge_before >> 20);
	}
	T_CHECK(handoff(&p, false) == 0 && p.run_ret == 0, "handoff: %s",
		p.src_err);
	huge_after = t_anon_huge_bytes_range(0, p.dst.addr[0], L.spec[0].len);
	printf("  THP coverage: source had %" PRIu64 " MiB, target has %" PRIu64
	       " MiB (%.1f%%)\n", huge_before >> 20, huge_after >> 20,
	       100.0 * (double)huge_after / (double)huge_before);
	T_CHECK(p.st.primitive == UFFDMOVE_PRIM_MOVE, "primitive %u",
		p.st.primitive);
	T_CHECK(p.st.bytes_moved == p.st.bytes_populated &&
		p.st.bytes_populated == L.spec[0].len,
		"moved %" PRIu64 " != populated %" PRIu64, p.st.bytes_moved,
		p.st.bytes_populated);
	T_CHECK(p.st.bytes_copied == 0, "copied %" PRIu64, p.st.bytes_copied);
	T_CHECK(present_pages(&p.src) == 0, "source still has pages");
	T_CHECK(huge_after * 100 >= huge_before * 95,
		"target THP %" PRIu64 " < 95%% of %" PRIu64, huge_after,
		huge_before);
	T_CHECK(guest_verify(&p.dst, why, sizeof(why)) == 0, "%s", why);
	pair_fini(&p);
	return T_PASS;
}

static const struct guest small = {
	.n = 2, .seed = 99, .hole_pct = 30,
	.spec = { { "ram0", 48UL << 20, false, 0 },
		  { "ram1", 16UL << 20, true, 0 } },
};

static int same_process_4k_with_workers(struct t_ctx *ctx)
{
	struct pair p;
	char why[256];

	pair_init(&p, &small);
	T_CHECK(handoff(&p, true) == 0 && p.run_ret == 0, "%s", p.src_err);
	T_CHECK(p.st.bytes_moved + p.st.bytes_copied == p.st.bytes_populated,
		"moved+copied != populated");
	/* Faults before GO copy; after it everything moves. */
	T_CHECK(p.st.bytes_moved >= p.st.bytes_populated / 2,
		"only %" PRIu64 " bytes moved", p.st.bytes_moved);
	T_CHECK(guest_verify(&p.dst, why, sizeof(why)) == 0, "%s", why);
	pair_fini(&p);
	return T_PASS;
}

/*
 * One thread moves small pages in slices between its reads of the uffd
 * (256 KiB each: a shorter MOVE flushes the TLB page by page, 25x slower
 * here), while guest threads fault: every byte arrives, moved.
 */
static int same_process_4k_one_thread(struct t_ctx *ctx)
{
	static const struct guest dense = {
		.n = 1, .seed = 41,
		.spec = { { "ram", 64UL << 20, false, 0 } },
	};
	struct pair p;
	char why[256];

	pair_init(&p, &dense);
	p.sopts.threads = 1;
	T_CHECK(handoff(&p, true) == 0 && p.run_ret == 0, "%s", p.src_err);
	T_CHECK(p.st.bytes_moved + p.st.bytes_copied == p.st.bytes_populated,
		"moved+copied != populated");
	T_CHECK(p.st.bytes_moved >= p.st.bytes_populated / 2,
		"only %" PRIu64 " bytes moved", p.st.bytes_moved);
	T_CHECK(present_pages(&p.src) == 0, "source still has pages");
	T_CHECK(guest_verify(&p.dst, why, sizeof(why)) == 0, "%s", why);
	pair_fini(&p);
	return T_PASS;
}

/*
 * A sparse guest (most 2 MiB chunks never touched, over several of the
 * 512 MiB windows the source scans ahead) with guest threads faulting in
 * empty and full chunks alike: every byte arrives, holes read as zeros,
 * and the counters add up exactly.
 */
static int same_process_sparse(struct t_ctx *ctx)
{
	static const struct guest sparse = {
		.n = 2, .seed = 31, .hole_pct = 20, .sparse_every = 37,
		.spec = { { "ram0", 1280UL << 20, false, 0 },
			  { "ram1", 1024UL << 20, true, 0 } },
	};
	uint64_t populated, total;
	struct pair p;
	char why[256];

	pair_init(&p, &sparse);
	populated = guest_populated_bytes(&p.src);
	total = guest_total_bytes(&p.src);
	T_CHECK(handoff(&p, true) == 0 && p.run_ret == 0, "%s", p.src_err);
	T_CHECK(p.st.bytes_populated == populated,
		"populated %" PRIu64 ", the guest has %" PRIu64,
		p.st.bytes_populated, populated);
	T_CHECK(p.st.bytes_moved + p.st.bytes_copied == populated,
		"moved %" PRIu64 " + copied %" PRIu64 " != %" PRIu64,
		p.st.bytes_moved, p.st.bytes_copied, populated);
	T_CHECK(p.st.bytes_skipped + p.st.bytes_zeroed == total - populated,
		"skipped %" PRIu64 " + zeroed %" PRIu64 " != holes %" PRIu64,
		p.st.bytes_skipped, p.st.bytes_zeroed, total - populated);
	T_CHECK(present_pages(&p.src) == 0, "source still has pages");
	T_CHECK(guest_verify(&p.dst, why, sizeof(why)) == 0, "%s", why);
	pair_fini(&p);
	return T_PASS;
}

/* A round's handoff completed, and every byte of @want is counted once,
 * moved or copied. */
static int round_counted(struct pair *p, uint64_t want, int round)
{
	T_CHECK(p->run_ret == 0, "round %d: %s", round, p->src_err);
	T_CHECK(p->st.bytes_populated == want,
		"round %d: populated %" PRIu64, round, p->st.bytes_populated);
	T_CHECK(p->st.bytes_moved + p->st.bytes_copied ==
		p->st.bytes_populated,
		"round %d: moved %" PRIu64 " + copied %" PRIu64
		" != populated %" PRIu64, round, p->st.bytes_moved,
		p->st.bytes_copied, p->st.bytes_populated);
	return T_PASS;
}

/* Did half of the source's first @len bytes get THP? If not, it is freed. */
static bool source_got_thp(struct pair *p, size_t len)
{
	if (t_anon_huge_bytes_range(0, p->src.addr[0], len) >= len / 2)
		return true;
	pair_fini(p);
	return false;
}

/*
 * Source THPs mapped by page-table entries (an mprotect() of one page
 * splits each PMD; the folios stay large), with guest threads faulting
 * while the pushers move: a fault moves its page alone while faults are
 * rare (hence the pace), and two MOVEs in one such chunk made the kernel
 * report moved pages as not moved. The counts must add up, every round.
 */
static int split_thp_faults_add_up(struct t_ctx *ctx)
{
	static const struct guest split = {
		.n = 1, .seed = 53, .pace_us = 700,
		.spec = { { "ram", 128UL << 20, true, 0 } },
	};
	size_t len = split.spec[0].len, off;
	uint64_t huge;
	struct pair p;
	char why[256];
	int round;

	for (round = 0; round < 16; round++) {
		pair_init(&p, &split);
		if (!source_got_thp(&p, len))
			return t_case_skip(ctx, "the source got too little "
					   "THP (THP disabled?)");
		for (off = 0; off < len; off += 2UL << 20) {
			uint8_t *pg = p.src.addr[0] + off + 5 * T_PAGE;

			if (mprotect(pg, T_PAGE, PROT_READ) ||
			    mprotect(pg, T_PAGE, PROT_READ | PROT_WRITE))
				t_die("mprotect: %s", strerror(errno));
		}
		huge = t_anon_huge_bytes_range(0, p.src.addr[0], len);
		T_CHECK(huge == 0, "%" PRIu64 " MiB still mapped huge",
			huge >> 20);
		T_CHECK(handoff(&p, true) == 0, "round %d", round);
		if (round_counted(&p, len, round) != T_PASS)
			return T_FAIL;
		/* What the kernel refused to move (EBUSY: splitting a large
		 * folio can fail) was copied, and stays. */
		T_CHECK(present_pages(&p.src) == 0 || p.st.move_ebusy,
			"round %d: source still has pages", round);
		T_CHECK(guest_verify(&p.dst, why, sizeof(why)) == 0,
			"round %d: %s", round, why);
		pair_fini(&p);
	}
	return T_PASS;
}

/*
 * Two regions cut from one THP mapping at an offset that is not 2 MiB
 * aligned: the source block at the cut is one huge folio, split between
 * two chunks that different pushers may MOVE at once. Two MOVEs in one
 * large folio made the kernel report moved pages as not moved, and a
 * class made while the other chunk's MOVE split the folio copied the
 * chunk (MODE_MOVE: -EBUSY). Every round, in both modes, everything moves
 * and the counts add up.
 */
static int region_edge_shares_thp(struct t_ctx *ctx)
{
	static const struct guest cut = {
		.n = 2, .seed = 91, .one_mapping = true,
		.spec = { { "lo", (31UL << 20) + (512UL << 10) + 3 * T_PAGE,
			    true, 0 },
			  { "hi", (32UL << 20) + (512UL << 10) - 3 * T_PAGE,
			    true, 0 } },
	};
	struct pair p;
	char why[256];
	int round;

	for (round = 0; round < 12; round++) {
		pair_init(&p, &cut);
		p.sopts.threads = 3;
		p.sopts.mode = round % 2 ? UFFDMOVE_MODE_MOVE :
					   UFFDMOVE_MODE_AUTO;
		T_CHECK(handoff(&p, false) == 0, "round %d", round);
		if (round_counted(&p, 64UL << 20, round) != T_PASS)
			return T_FAIL;
		T_CHECK(p.st.bytes_copied == 0, "round %d: copied %" PRIu64,
			round, p.st.bytes_copied);
		T_CHECK(guest_verify(&p.dst, why, sizeof(why)) == 0,
			"round %d: %s", round, why);
		pair_fini(&p);
	}
	return T_PASS;
}

/* Move the source's one mapping by @shift (not a multiple of 2 MiB), as
 * a VMM's mremap() may: its huge folios then straddle 2 MiB blocks. */
static void shift_source(struct guest *g, size_t shift)
{
	size_t len = g->maplen[0], off = (size_t)(g->addr[0] -
						  (uint8_t *)g->map[0]);
	uint8_t *at = t_map(len + (4UL << 20), false);

	/* t_map() aligns to 2 MiB; free the reservation for MREMAP_FIXED. */
	t_unmap(at, len + (4UL << 20));
	at += shift;
	if (mremap(g->map[0], len, len, MREMAP_MAYMOVE | MREMAP_FIXED, at) ==
	    MAP_FAILED)
		t_die("mremap: %s", strerror(errno));
	madvise(at, len, MADV_NOHUGEPAGE);	/* no khugepaged meanwhile */
	g->map[0] = at;
	g->addr[0] = at + off;
}

static int hogs_stop;	/* atomic */

/* A guest vCPU that computes: it keeps a CPU from the nice-5 pushers. */
static void *hog_main(void *arg)
{
	(void)arg;
	while (!__atomic_load_n(&hogs_stop, __ATOMIC_RELAXED))
		;
	return NULL;
}

/*
 * Source THPs that a mremap() left straddling the 2 MiB blocks the chunks
 * are cut at: pushers on two neighbour chunks MOVE in one large folio at
 * once. The kernel then reported moved pages as not moved, refused a
 * MOVE while it split the folio (EBUSY), and a class made meanwhile saw
 * migration entries: counts came up short, chunks were copied, and
 * MODE_MOVE ended with -EBUSY. Half the rounds with two busy threads in
 * the process, which make a split last milliseconds (a fixed wait of
 * 1 ms then fell short in 5-6 rounds of 10). Every round, everything
 * moves and counts.
 */
static int straddling_folios_move(struct t_ctx *ctx)
{
	pthread_t hogs[2];
	size_t h, nhogs;
	static const struct guest thp = {
		.n = 1, .seed = 117,
		.spec = { { "ram", 64UL << 20, true, 0 } },
	};
	size_t len = thp.spec[0].len;
	struct pair p;
	char why[256];
	int round, ret;

	for (round = 0; round < 16; round++) {
		pair_init(&p, &thp);
		if (!source_got_thp(&p, len))
			return t_case_skip(ctx, "the source got too little "
					   "THP (THP disabled?)");
		shift_source(&p.src, 1UL << 20);
		p.sopts.threads = 3;
		p.sopts.mode = round % 2 ? UFFDMOVE_MODE_MOVE :
					   UFFDMOVE_MODE_AUTO;
		nhogs = round % 4 >= 2 ? 2 : 0;
		hogs_stop = 0;
		for (h = 0; h < nhogs; h++)
			if (pthread_create(&hogs[h], NULL, hog_main, NULL))
				t_die("pthread_create");
		ret = handoff(&p, false);
		__atomic_store_n(&hogs_stop, 1, __ATOMIC_RELAXED);
		for (h = 0; h < nhogs; h++)
			pthread_join(hogs[h], NULL);
		T_CHECK(ret == 0, "round %d", round);
		if (round_counted(&p, len, round) != T_PASS)
			return T_FAIL;
		T_CHECK(p.st.bytes_copied == 0,
			"round %d (%zu busy threads): copied %" PRIu64, round,
			nhogs, p.st.bytes_copied);
		T_CHECK(present_pages(&p.src) == 0,
			"round %d: source still has pages", round);
		T_CHECK(guest_verify(&p.dst, why, sizeof(why)) == 0,
			"round %d: %s", round, why);
		pair_fini(&p);
	}
	return T_PASS;
}

/* io_uring fixed buffers pin pages: the kernel refuses to move them. */
static struct io_uring pin_ring;

/* The pinned range, in region 0 of the source. */
#define PIN_OFF		(4UL << 20)
#define PIN_LEN		(1UL << 20)

static void pin(struct pair *p)
{
	struct iovec iov = { p->pin_addr, p->pin_len };

	if (io_uring_queue_init(2, &pin_ring, 0) ||
	    io_uring_register_buffers(&pin_ring, &iov, 1))
		t_die("io_uring_register_buffers");
}

static void pin_and_declare(struct pair *p)
{
	pin(p);
	if (uffdmove_source_declare_pinned(p->s, p->pin_addr, p->pin_len))
		t_die("declare_pinned: %s", uffdmove_source_error(p->s));
}

static int pinned_case(struct t_ctx *ctx, bool declare, uint32_t mode)
{
	struct pair p;
	size_t pg;
	char why[256];
	int ret;

	pair_init(&p, &small);
	p.sopts.mode = mode;
	p.pin_addr = p.src.addr[0] + PIN_OFF;
	p.pin_len = PIN_LEN;
	p.before_accept = declare ? pin_and_declare : pin;
	ret = handoff(&p, false);
	if (mode == UFFDMOVE_MODE_MOVE && declare) {
		T_CHECK(ret != 0 && p.accept_ret == -EBUSY,
			"MODE_MOVE with a declared pin: accept %d", p.accept_ret);
		T_CHECK(strstr(p.src_err, "pinned"), "message: %s", p.src_err);
		printf("  refused: %s\n", p.src_err);
		T_CHECK(guest_verify_source(&p.src, why, sizeof(why)) == 0,
			"source changed: %s", why);
		goto out;
	}
	if (mode == UFFDMOVE_MODE_MOVE) {
		T_CHECK(ret == 0 && p.run_ret == -EBUSY,
			"MODE_MOVE with a hidden pin: run %d", p.run_ret);
		T_CHECK(strstr(p.src_err, "0x"), "message names no range: %s",
			p.src_err);
		printf("  run: %s\n", p.src_err);
	} else {
		T_CHECK(ret == 0 && p.run_ret == 0, "%s", p.src_err);
	}
	T_CHECK(guest_verify(&p.dst, why, sizeof(why)) == 0, "%s", why);
	/* The pinned pages were copied, never moved: still here, intact. */
	for (pg = PIN_OFF / T_PAGE; pg < (PIN_OFF + PIN_LEN) / T_PAGE; pg++)
		T_CHECK(guest_verify_page(&p.src, 0, pg, why, sizeof(why)) == 0,
			"pinned source page changed: %s", why);
	if (declare) {
		T_CHECK(p.st.move_ebusy == 0, "declared pin was tried: %" PRIu64,
			p.st.move_ebusy);
		T_CHECK(p.st.pinned_skipped >= p.pin_len, "pinned_skipped %" PRIu64,
			p.st.pinned_skipped);
	} else {
		T_CHECK(p.st.move_ebusy > 0, "no EBUSY counted");
	}
	T_CHECK(p.st.bytes_moved > 0, "nothing moved at all");
out:
	io_uring_queue_exit(&pin_ring);
	pair_fini(&p);
	return T_PASS;
}

static int pinned_undeclared(struct t_ctx *ctx)
{
	return pinned_case(ctx, false, UFFDMOVE_MODE_AUTO);
}

static int pinned_declared(struct t_ctx *ctx)
{
	return pinned_case(ctx, true, UFFDMOVE_MODE_AUTO);
}

static int mode_move_declared_pin(struct t_ctx *ctx)
{
	return pinned_case(ctx, true, UFFDMOVE_MODE_MOVE);
}

static int mode_move_hidden_pin(struct t_ctx *ctx)
{
	return pinned_case(ctx, false, UFFDMOVE_MODE_MOVE);
}

/*
 * Pages COW-shared with a forked child are copied, never moved: the
 * child's view stays. MODE_AUTO says why MOVE went unused; MODE_MOVE,
 * which promised moves, ends with -EBUSY and names a shared page.
 */
static int cow_shared_in(struct t_ctx *ctx, uint32_t mode)
{
	bool strict = mode == UFFDMOVE_MODE_MOVE;
	struct pair p;
	char why[256];
	int go[2], status;
	pid_t child;

	pair_init(&p, &small);
	p.sopts.mode = mode;
	T_CHECK(pipe(go) == 0, "pipe");
	child = fork();
	T_CHECK(child >= 0, "fork");
	if (child == 0) {
		char c;

		t_child(60);
		close(go[1]);
		if (read(go[0], &c, 1) != 1)
			_exit(2);
		_exit(guest_verify_source(&p.src, why, sizeof(why)) ? 1 : 0);
	}
	close(go[0]);
	T_CHECK(handoff(&p, false) == 0 &&
		p.run_ret == (strict ? -EBUSY : 0),
		"run %d: %s", p.run_ret, p.src_err);
	T_CHECK(!strict || strstr(p.src_err, "shared"), "%s", p.src_err);
	T_CHECK(write(go[1], "x", 1) == 1, "write");
	status = t_wait(child);
	T_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		"the child's view of its COW copy changed (status 0x%x)",
		status);
	T_CHECK(p.st.bytes_moved == 0 && p.st.bytes_copied ==
		p.st.bytes_populated, "shared pages moved: %" PRIu64,
		p.st.bytes_moved);
	T_CHECK(strict || p.st.move_unused_reason == UFFDMOVE_WHY_NOT_MOVABLE,
		"reason %u", p.st.move_unused_reason);
	T_CHECK(guest_verify(&p.dst, why, sizeof(why)) == 0, "%s", why);
	close(go[1]);
	pair_fini(&p);
	return T_PASS;
}

static int cow_shared(struct t_ctx *ctx)
{
	return cow_shared_in(ctx, UFFDMOVE_MODE_AUTO);
}

static int mode_move_cow_shared(struct t_ctx *ctx)
{
	return cow_shared_in(ctx, UFFDMOVE_MODE_MOVE);
}

/*
 * One source page read-only (an mprotect(), as a VMM may do to guest RAM):
 * the kernel refuses to MOVE between mappings of unlike protection
 * (EINVAL), and that page's chunk is copied. MODE_AUTO completes;
 * MODE_MOVE ends with -EBUSY and says why, not that a page was shared
 * (it did, found by an attacker helper).
 */
static int readonly_page_in(struct t_ctx *ctx, uint32_t mode)
{
	static const struct guest L = {
		.n = 1, .seed = 0x70,
		.spec = { { "ram", 16UL << 20, true, 0 } },
	};
	bool strict = mode == UFFDMOVE_MODE_MOVE;
	uint8_t *page;
	struct pair p;
	char why[256];

	pair_init(&p, &L);
	p.sopts.mode = mode;
	page = p.src.addr[0] + 3 * T_HPAGE + 5 * T_PAGE;
	T_CHECK(mprotect(page, T_PAGE, PROT_READ) == 0, "mprotect");
	T_CHECK(handoff(&p, false) == 0 &&
		p.run_ret == (strict ? -EBUSY : 0),
		"run %d: %s", p.run_ret, p.src_err);
	T_CHECK(!strict || (strstr(p.src_err, "EINVAL") &&
			    !strstr(p.src_err, "shared")), "%s", p.src_err);
	T_CHECK(p.st.bytes_copied > 0 && check_each_page_handed(&p) == T_PASS,
		"copied %" PRIu64, p.st.bytes_copied);
	T_CHECK(guest_verify(&p.dst, why, sizeof(why)) == 0, "%s", why);
	mprotect(page, T_PAGE, PROT_READ | PROT_WRITE);
	pair_fini(&p);
	return T_PASS;
}

static int readonly_page_copies(struct t_ctx *ctx)
{
	return readonly_page_in(ctx, UFFDMOVE_MODE_AUTO);
}

static int mode_move_readonly_page_einval(struct t_ctx *ctx)
{
	return readonly_page_in(ctx, UFFDMOVE_MODE_MOVE);
}

static int mode_copy(struct t_ctx *ctx)
{
	struct pair p;
	char why[256];

	pair_init(&p, &small);
	p.sopts.mode = UFFDMOVE_MODE_COPY;
	T_CHECK(handoff(&p, true) == 0 && p.run_ret == 0, "%s", p.src_err);
	T_CHECK(p.st.bytes_moved == 0 && p.st.primitive == UFFDMOVE_PRIM_COPY &&
		p.st.move_unused_reason == UFFDMOVE_WHY_MODE_COPY,
		"moved %" PRIu64 " reason %u", p.st.bytes_moved,
		p.st.move_unused_reason);
	T_CHECK(guest_verify_source(&p.src, why, sizeof(why)) == 0,
		"source changed in MODE_COPY: %s", why);
	T_CHECK(guest_verify(&p.dst, why, sizeof(why)) == 0, "%s", why);
	pair_fini(&p);
	return T_PASS;
}

/*
 * The old VMM freed part of guest RAM lazily (MADV_FREE, as a balloon or
 * free page reporting may) and reclaim takes those pages while they move:
 * before the MOVE (a hole in the source), or after it (a lazily freed page
 * keeps that state in the target). Either way the guest reads the data or
 * zeros, which is what MADV_FREE allows, and the handoff completes.
 * MADV_PAGEOUT stands for reclaim: with no swap it drops only those pages.
 * Reclaim that began in the source may still take a page after it moved
 * (its folio was isolated first), so both cases allow for vanished pages.
 */
struct reclaimer {
	const struct pair *p;
	bool target_too;	/* else only the source's pages vanish */
	pthread_t tid;
	bool stop;
	unsigned long rounds;
};

/* One window of 256 KiB at a time, anywhere: reclaim meets chunks before,
 * during and after their MOVE. */
static void *reclaim_main(void *arg)
{
	const size_t window = 256UL << 10;
	struct reclaimer *rc = arg;
	const struct guest *g;
	unsigned int seed = 1;
	size_t r, off;

	while (!__atomic_load_n(&rc->stop, __ATOMIC_ACQUIRE)) {
		g = rc->target_too && rand_r(&seed) % 2 ? &rc->p->dst :
							   &rc->p->src;
		r = (size_t)rand_r(&seed) % g->n;
		off = (size_t)rand_r(&seed) % (g->spec[r].len / window) *
		      window;
		madvise(g->addr[r] + off, window, MADV_PAGEOUT);
		rc->rounds++;
	}
	return NULL;
}

#define FREED_EVERY	(512UL << 10)	/* the second half of each is freed */

static bool lazily_freed(size_t offset)
{
	return offset % FREED_EVERY >= FREED_EVERY / 2;
}

/* Every page as filled, or, where freed lazily, all zeros. */
static int verify_freed(const struct guest *g, char *why, size_t why_len)
{
	static const uint8_t zeros[T_PAGE];
	size_t r, pg;

	for (r = 0; r < g->n; r++)
		for (pg = 0; pg < g->spec[r].len / T_PAGE; pg++) {
			if (lazily_freed(pg * T_PAGE) &&
			    !memcmp(g->addr[r] + pg * T_PAGE, zeros, T_PAGE))
				continue;
			if (guest_verify_page(g, r, pg, why, why_len))
				return -1;
		}
	return 0;
}

static int freed_case(struct t_ctx *ctx, bool target_too)
{
	static const struct guest L = {
		.n = 2, .seed = 5,
		.spec = { { "ram0", 64UL << 20, false, 0 },
			  { "ram1", 64UL << 20, true, 0 } },
	};
	struct reclaimer rc = { 0 };
	struct pair p;
	char why[256];
	size_t r, off;
	int ret;

	pair_init(&p, &L);
	for (r = 0; r < p.src.n; r++)
		for (off = 0; off < L.spec[r].len; off += FREED_EVERY)
			if (madvise(p.src.addr[r] + off + FREED_EVERY / 2,
				    FREED_EVERY / 2, MADV_FREE))
				t_die("MADV_FREE: %s", strerror(errno));
	rc.p = &p;
	rc.target_too = target_too;
	if (pthread_create(&rc.tid, NULL, reclaim_main, &rc))
		t_die("pthread_create");
	ret = handoff(&p, false);
	__atomic_store_n(&rc.stop, true, __ATOMIC_RELEASE);
	pthread_join(rc.tid, NULL);
	printf("  %lu windows reclaimed\n", rc.rounds);
	T_CHECK(ret == 0 && p.run_ret == 0, "handoff: %s", p.src_err);
	T_CHECK(check_each_page_handed(&p) == T_PASS, "counts");
	T_CHECK(verify_freed(&p.dst, why, sizeof(why)) == 0, "%s", why);
	pair_fini(&p);
	return T_PASS;
}

static int freed_vanish_in_source(struct t_ctx *ctx)
{
	return freed_case(ctx, false);
}

static int freed_vanish_both(struct t_ctx *ctx)
{
	return freed_case(ctx, true);
}

/*
 * The old VMM changes whole THP chunks of its guest RAM once the handoff
 * moves: after the scan ahead saw them mapped by a huge page, and mostly
 * before their own turn. A class taken from that scan instead of the
 * chunk's own look at the page map went wrong so (bench/results/
 * summary.md, "Same-process MOVE against its floor").
 */
#define DISCARD_FROM	192	/* chunks of 256: the last quarter */

struct discarder {
	const struct pair *p;
	bool split;		/* else discard */
	pthread_t tid;
	size_t chunks;
};

/* Every second chunk from DISCARD_FROM on: discarded, or its PMD split
 * (an mprotect() of one page, and back). */
static void *discard_main(void *arg)
{
	struct discarder *d = arg;
	uint8_t *dst = d->p->dst.addr[0], *src = d->p->src.addr[0], *at;
	size_t c;

	/* Moving has begun once the first chunk is in the target. */
	while (!(t_pagemap(dst) & T_PM_PRESENT))
		sched_yield();
	for (c = DISCARD_FROM; c < d->p->src.spec[0].len / T_HPAGE; c += 2) {
		at = src + c * T_HPAGE;
		if (d->split ?
		    !mprotect(at, T_PAGE, PROT_READ) &&
		    !mprotect(at, T_PAGE, PROT_READ | PROT_WRITE) :
		    !madvise(at, T_HPAGE, MADV_DONTNEED))
			d->chunks++;
	}
	return NULL;
}

static int run_with_discarder(struct pair *p, struct discarder *d)
{
	int ret;

	d->p = p;
	if (pthread_create(&d->tid, NULL, discard_main, d))
		t_die("pthread_create");
	ret = handoff(p, false);
	pthread_join(d->tid, NULL);
	printf("  %zu chunks %s; moved %" PRIu64 " copied %" PRIu64
	       " populated %" PRIu64 "\n", d->chunks,
	       d->split ? "split" : "discarded", p->st.bytes_moved,
	       p->st.bytes_copied, p->st.bytes_populated);
	T_CHECK(ret == 0 && p->run_ret == 0, "handoff: %s", p->src_err);
	T_CHECK(check_each_page_handed(p) == T_PASS, "counts");
	return T_PASS;
}

/* Every page as filled, or, in a discarded chunk, all zeros. */
static int verify_discarded(const struct guest *g, char *why, size_t len)
{
	static const uint8_t zeros[T_PAGE];
	size_t pg, c;

	for (pg = 0; pg < g->spec[0].len / T_PAGE; pg++) {
		c = pg * T_PAGE / T_HPAGE;
		if (c >= DISCARD_FROM && (c - DISCARD_FROM) % 2 == 0 &&
		    !memcmp(g->addr[0] + pg * T_PAGE, zeros, T_PAGE))
			continue;
		if (guest_verify_page(g, 0, pg, why, len))
			return -1;
	}
	return 0;
}

static const struct guest changed_layout = {
	.n = 1, .seed = 0x51,
	.spec = { { "ram", 512UL << 20, true, 0 } },
};

/* Each discarded chunk reads as zeros or, if it moved first, holds its
 * data; never a failed handoff, counts that do not add up, or a page with
 * other data. */
static int source_discards_while_moving(struct t_ctx *ctx)
{
	struct discarder d = { .split = false };
	struct pair p;
	char why[256];

	pair_init(&p, &changed_layout);
	T_CHECK(run_with_discarder(&p, &d) == T_PASS, "handoff");
	T_CHECK(verify_discarded(&p.dst, why, sizeof(why)) == 0, "%s", why);
	pair_fini(&p);
	return T_PASS;
}

/* A chunk split since the scan ahead moves page by page: it is not
 * counted as moved whole (with a class from that scan and no look at the
 * target, it was in 48 of 80 rounds of an attacker's program), the target
 * is asked to collapse it, and its data arrives. */
static int source_splits_while_moving(struct t_ctx *ctx)
{
	struct discarder d = { .split = true };
	uint64_t huge;
	struct pair p;
	char why[256];

	pair_init(&p, &changed_layout);
	p.await_collapse = true;
	T_CHECK(run_with_discarder(&p, &d) == T_PASS, "handoff");
	huge = t_anon_huge_bytes_range(0, p.dst.addr[0], p.dst.spec[0].len);
	printf("  target collapsed %" PRIu64 ", gave up on %" PRIu64
	       ", %" PRIu64 " MiB huge\n", p.tst.thp_collapsed,
	       p.tst.thp_uncollapsed, huge >> 20);
	T_CHECK(p.st.thp_moved * T_HPAGE <= huge,
		"%" PRIu64 " chunks counted as moved whole, %" PRIu64
		" MiB of huge pages arrived", p.st.thp_moved, huge >> 20);
	T_CHECK(p.st.thp_moved + p.st.thp_copied ==
		p.dst.spec[0].len / T_HPAGE,
		"%" PRIu64 " THP chunks moved whole, %" PRIu64 " not",
		p.st.thp_moved, p.st.thp_copied);
	T_CHECK(p.tst.thp_collapsed + p.tst.thp_uncollapsed == p.st.thp_copied,
		"%" PRIu64 " chunks came small, %" PRIu64 " collapsed, %" PRIu64
		" given up", p.st.thp_copied, p.tst.thp_collapsed,
		p.tst.thp_uncollapsed);
	T_CHECK(guest_verify(&p.dst, why, sizeof(why)) == 0, "%s", why);
	pair_fini(&p);
	return T_PASS;
}

/*
 * The new VMM unmaps the first 64 KiB of chunk after chunk while they move
 * (a raw discard, told by UNMAP events). MOVE then fails with ENOENT for
 * the target's missing VMA, not for a page gone in the source: no page
 * still mapped may end up with zeros, and the handoff completes.
 */
static int target_unmaps_while_moving(struct t_ctx *ctx)
{
	static const struct guest L = {
		.n = 1, .seed = 0x78,
		.spec = { { "ram", 256UL << 20, true, 0 } },
	};
	const size_t cut = 16, chunks = L.spec[0].len / T_HPAGE;
	static bool was_cut[(256UL << 20) / T_HPAGE];
	struct guest_pair p;
	size_t c, pg, cuts = 0;
	char why[256];
	int ret;

	/* munmap() of what is gone already is fine for guest_pair_end(). */
	memset(was_cut, 0, sizeof(was_cut));
	guest_pair_start(&p, &L, UFFDMOVE_MODE_AUTO, 2);
	T_CHECK(uffdmove_target_process(p.t) >= 0, "commit: %s",
		uffdmove_target_error(p.t));
	for (;;) {
		/* The first chunk whose last page has not arrived yet. */
		for (c = 0; c < chunks; c++)
			if (!was_cut[c] &&
			    !(t_pagemap(p.dst.addr[0] + (c + 1) * T_HPAGE -
					T_PAGE) & T_PM_PRESENT))
				break;
		if (c == chunks)
			break;
		was_cut[c] = true;
		cuts++;
		if (munmap(p.dst.addr[0] + c * T_HPAGE, cut * T_PAGE))
			t_die("munmap: %s", strerror(errno));
		usleep(100);
	}
	ret = uffdmove_target_wait(p.t, 60000);
	guest_pair_join(&p);
	printf("  %zu chunks cut; moved %" PRIu64 " copied %" PRIu64
	       " discarded %" PRIu64 "\n", cuts, p.st.bytes_moved,
	       p.st.bytes_copied, p.st.bytes_discarded);
	T_CHECK(ret == 0 && p.run_ret == 0, "target: %s; source: %s",
		uffdmove_target_error(p.t), p.err);
	for (pg = 0; pg < L.spec[0].len / T_PAGE; pg++) {
		if (was_cut[pg / 512] && pg % 512 < cut)
			continue;
		T_CHECK(guest_verify_page(&p.dst, 0, pg, why, sizeof(why)) == 0,
			"page %zu (chunk %zu +%zu): %s", pg, pg / 512,
			pg % 512, why);
	}
	guest_pair_end(&p);
	return T_PASS;
}

/*
 * The old VMM unmaps 1 MiB in the middle of its guest RAM after the
 * commit: that data is gone. The handoff must fail and say so, not take
 * the missing pages for holes; what arrived is the source's data.
 */
static int source_unmaps_its_ram(struct t_ctx *ctx)
{
	static const struct guest L = {
		.n = 1, .seed = 0x91, .hole_pct = 10,
		.spec = { { "ram", 256UL << 20, false, 0 } },
	};
	const size_t cut_at = (L.spec[0].len / 2) + (512UL << 10);
	struct guest_pair p;
	size_t pg;
	char why[256];
	int ret;

	guest_pair_start(&p, &L, UFFDMOVE_MODE_AUTO, 2);
	T_CHECK(uffdmove_target_process(p.t) >= 0, "commit: %s",
		uffdmove_target_error(p.t));
	if (munmap(p.src.addr[0] + cut_at, 1UL << 20))
		t_die("munmap: %s", strerror(errno));
	ret = uffdmove_target_wait(p.t, 60000);
	guest_pair_join(&p);
	printf("  target: %d %s\n", ret, uffdmove_target_error(p.t));
	T_CHECK(ret == -EFAULT && p.run_ret == -EFAULT,
		"target %d, source %d (%s)", ret, p.run_ret, p.err);
	T_CHECK(strstr(uffdmove_target_error(p.t), "maps nothing"),
		"%s", uffdmove_target_error(p.t));
	/* Missing pages stay blocked: read only those that arrived. */
	for (pg = 0; pg < L.spec[0].len / T_PAGE; pg++)
		if (t_pagemap(p.dst.addr[0] + pg * T_PAGE) & T_PM_PRESENT)
			T_CHECK(guest_verify_page(&p.dst, 0, pg, why,
						  sizeof(why)) == 0,
				"page %zu: %s", pg, why);
	guest_pair_end(&p);
	return T_PASS;
}

int main(void)
{
	static const struct t_case cases[] = {
		{ "same-process-thp-512M-moves", same_process_thp },
		{ "same-process-4k-holes-workers", same_process_4k_with_workers },
		{ "same-process-4k-one-thread", same_process_4k_one_thread },
		{ "same-process-sparse-workers", same_process_sparse },
		{ "split-thp-faults-add-up", split_thp_faults_add_up },
		{ "region-edge-shares-thp", region_edge_shares_thp },
		{ "straddling-folios-move", straddling_folios_move },
		{ "pinned-undeclared-ebusy-copies", pinned_undeclared },
		{ "pinned-declared-never-tried", pinned_declared },
		{ "mode-move-declared-pin-refused", mode_move_declared_pin },
		{ "mode-move-hidden-pin-ebusy", mode_move_hidden_pin },
		{ "cow-shared-copies", cow_shared },
		{ "mode-move-cow-shared-ebusy", mode_move_cow_shared },
		{ "readonly-page-copies", readonly_page_copies },
		{ "mode-move-readonly-page-einval", mode_move_readonly_page_einval },
		{ "mode-copy-keeps-source", mode_copy },
		{ "freed-pages-vanish-in-source", freed_vanish_in_source },
		{ "freed-pages-vanish-both", freed_vanish_both },
		{ "target-unmaps-while-moving", target_unmaps_while_moving },
		{ "source-unmaps-its-ram", source_unmaps_its_ram },
		{ "source-discards-while-moving", source_discards_while_moving },
		{ "source-splits-while-moving", source_splits_while_moving },
	};
	return t_main(cases, T_ARRAY_SIZE(cases), 240,
		      T_NEED_MOVE | T_NEED_KERNEL_FAULTS, NULL);
}
