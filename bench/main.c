// SPDX-License-Identifier: MIT
/*
 * uffdmove-bench: libuffdmove side by side with the baselines a VMM author
 * would otherwise use. Prints one JSON document of raw per-repetition
 * records on stdout (progress on stderr); bench/summarize reduces it.
 *
 * Scenarios run in groups that share one populated guest; inside a group
 * every repetition runs each scenario once, in an order shuffled per
 * repetition (seeded: the same in every run), so baseline and subject see
 * the same machine state and no case always follows the same neighbour.
 *
 *   uffdmove-bench [--full] [--reps N] [--only GROUP] [--case LABEL] [--list]
 *
 * --only keeps the groups whose name contains GROUP; --case keeps the cases
 * whose label (scenario/layout/tTHREADS/touch, e.g. lib-pull/dense/t2/none)
 * contains LABEL. --list prints the groups and their case labels.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#define KiB	((size_t)1 << 10)
#define MiB	((size_t)1 << 20)
#define GiB	((size_t)1 << 30)

enum scenario {
	SC_MEMCPY, SC_STOPCOPY, SC_STOPCOPY_THP, SC_CLASSIC, SC_CLASSIC_BUSY,
	SC_COPYLOOP, SC_MOVELOOP, SC_MOVEFAULT, SC_MOVEFAULT_BUSY,
	SC_PUSH, SC_PULL, SC_MOVE,
};

static const char *const sc_name[] = {
	[SC_MEMCPY] = "b1-memcpy",
	[SC_STOPCOPY] = "b2-stopcopy",
	[SC_STOPCOPY_THP] = "b2-thp",
	[SC_CLASSIC] = "b3-classic",
	[SC_CLASSIC_BUSY] = "b3-busy",
	[SC_COPYLOOP] = "b4-copyloop",
	[SC_MOVELOOP] = "b5-moveloop",
	[SC_MOVEFAULT] = "b3-move",
	[SC_MOVEFAULT_BUSY] = "b3-move-busy",
	[SC_PUSH] = "lib-push",
	[SC_PULL] = "lib-pull",
	[SC_MOVE] = "lib-move",
};

static bool sc_lib(enum scenario sc)
{
	return sc == SC_PUSH || sc == SC_PULL || sc == SC_MOVE;
}

static const char *const touch_name[] = {
	[TOUCH_NONE] = "none",
	[TOUCH_RANDOM] = "random",
	[TOUCH_ALL_SEQ] = "all",
	[TOUCH_RANDOM_SLOW] = "random-slow",
};

struct bcase {
	enum scenario sc;
	int guest;		/* index in the group's guests */
	unsigned int threads;
	enum touch_mode touch;
};

struct guest_spec {
	const char *layout;	/* "dense" or "sparse" */
	size_t len, block, stride;
	bool thp;
};

#define CASES_MAX 24

struct group {
	char name[64];
	int nguests;
	struct guest_spec gs[2];
	int ncases;
	struct bcase cases[CASES_MAX];
};

#define GROUPS_MAX 32

static struct group groups[GROUPS_MAX];
static int ngroups;

static struct guest_spec dense(size_t len, bool thp)
{
	return (struct guest_spec){ "dense", len, len, len, thp };
}

/* 1 GiB populated in 2 MiB blocks spread evenly over @len. */
static struct guest_spec sparse(size_t len, size_t populated, bool thp)
{
	size_t nblocks = populated / B_HPAGE;

	return (struct guest_spec){ "sparse", len, B_HPAGE, len / nblocks,
				    thp };
}

static struct group *add_group(struct guest_spec g0, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static struct group *add_group(struct guest_spec g0, const char *fmt, ...)
{
	struct group *g = &groups[ngroups++];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(g->name, sizeof(g->name), fmt, ap);
	va_end(ap);
	g->gs[0] = g0;
	g->nguests = 1;
	return g;
}

static void add_case(struct group *g, enum scenario sc, int guest,
		     unsigned int threads, enum touch_mode touch)
{
	g->cases[g->ncases++] = (struct bcase){ sc, guest, threads, touch };
}

static const char *thp_name(bool thp)
{
	return thp ? "thp" : "4k";
}

static const char *size_name(size_t len)
{
	static char buf[4][16];
	static int i;
	char *b = buf[i++ % 4];

	if (len >= GiB && len % GiB == 0)
		snprintf(b, 16, "%zuG", len / GiB);
	else
		snprintf(b, 16, "%zuM", len / MiB);
	return b;
}

/* Which cases a group runs. */
#define C_MEMCPY	(1u << 0)
#define C_STOPCOPY	(1u << 1)	/* b2, 1 thread: b2-thp in THP groups */
#define C_STOPCOPY2	(1u << 2)	/* b2-thp, 2 threads (THP groups) */
#define C_COPYLOOP	(1u << 3)
#define C_PUSH1		(1u << 4)
#define C_PUSH2		(1u << 5)
#define C_PULL1		(1u << 6)
#define C_PULL2		(1u << 7)
#define C_MOVE1		(1u << 8)
#define C_MOVE2		(1u << 9)
#define C_CLASSIC	(1u << 10)
#define C_MOVELOOP	(1u << 11)	/* b5: the raw same-process MOVE */
#define C_LIB		(C_PUSH1 | C_PUSH2 | C_PULL1 | C_PULL2 | C_MOVE1 | \
			 C_MOVE2)
#define C_ALL		(C_MEMCPY | C_STOPCOPY | C_STOPCOPY2 | C_COPYLOOP | \
			 C_MOVELOOP | \
			 C_LIB)

/* The libuffdmove cases of @which (push, pull, MOVE; 1 and 2 threads),
 * in order. */
static void add_lib_cases(struct group *g, int guest, unsigned int which,
			  enum touch_mode touch)
{
	if (which & C_PUSH1)
		add_case(g, SC_PUSH, guest, 1, touch);
	if (which & C_PUSH2)
		add_case(g, SC_PUSH, guest, 2, touch);
	if (which & C_PULL1)
		add_case(g, SC_PULL, guest, 1, touch);
	if (which & C_PULL2)
		add_case(g, SC_PULL, guest, 2, touch);
	if (which & C_MOVE1)
		add_case(g, SC_MOVE, guest, 1, touch);
	if (which & C_MOVE2)
		add_case(g, SC_MOVE, guest, 2, touch);
}

/* b2 of @which for a guest: stop-and-copy into memory with the guest's
 * advice (4 KiB), or b2-THP (1 and 2 readers) for a THP guest. */
static void add_stopcopy_cases(struct group *g, int guest, bool thp,
			       unsigned int which)
{
	if (which & C_STOPCOPY)
		add_case(g, thp ? SC_STOPCOPY_THP : SC_STOPCOPY, guest, 1,
			 TOUCH_NONE);
	if ((which & C_STOPCOPY2) && thp)
		add_case(g, SC_STOPCOPY_THP, guest, 2, TOUCH_NONE);
}

/* No guest activity: every handoff method against the baselines, same
 * guest. C_CLASSIC adds b3 with a guest that touches every page. */
static void push_group(size_t len, bool thp, unsigned int which)
{
	struct group *g = add_group(dense(len, thp), "push-%s-%s",
				    thp_name(thp), size_name(len));

	if (which & C_MEMCPY)
		add_case(g, SC_MEMCPY, 0, 1, TOUCH_NONE);
	add_stopcopy_cases(g, 0, thp, which);
	if (which & C_COPYLOOP)
		add_case(g, SC_COPYLOOP, 0, 1, TOUCH_NONE);
	if (which & C_MOVELOOP)
		add_case(g, SC_MOVELOOP, 0, 1, TOUCH_NONE);
	add_lib_cases(g, 0, which, TOUCH_NONE);
	if (which & C_CLASSIC)
		add_case(g, SC_CLASSIC, 0, 1, TOUCH_ALL_SEQ);
}

/* Fault latency: a vCPU stand-in touches random missing pages while the
 * handoff runs; b3-classic gets the same guest, with nothing in the
 * background, and so does b3-move where lib-move runs. TOUCH_RANDOM: back
 * to back (a high fault rate); TOUCH_RANDOM_SLOW: one every
 * TOUCH_SLOW_GAP_US at most (a low one). */
static void latency_group(size_t len, bool thp, unsigned int which,
			  enum touch_mode touch)
{
	struct group *g = add_group(dense(len, thp), "%s-%s-%s",
				    touch == TOUCH_RANDOM_SLOW ?
				    "latency-slow" : "latency",
				    thp_name(thp), size_name(len));

	add_case(g, SC_CLASSIC, 0, 1, touch);
	/* As many copy threads as the library's default movers. */
	add_case(g, SC_CLASSIC_BUSY, 0, 2, touch);
	/* lib-move's floor: b3 by MOVE, alone and beside moving threads. */
	if (which & (C_MOVE1 | C_MOVE2)) {
		add_case(g, SC_MOVEFAULT, 0, 1, touch);
		add_case(g, SC_MOVEFAULT_BUSY, 0, 2, touch);
	}
	add_lib_cases(g, 0, which, touch);
}

/* Sparse 16 GiB / 1 GiB populated against dense 1 GiB, interleaved. */
static void sparse_group(bool thp, unsigned int which)
{
	struct group *g = add_group(sparse(16 * GiB, GiB, thp),
				    "sparse-%s-16G", thp_name(thp));
	int i;

	g->gs[1] = dense(GiB, thp);
	g->nguests = 2;
	for (i = 0; i < 2; i++) {
		add_lib_cases(g, i, which, TOUCH_NONE);
		add_stopcopy_cases(g, i, thp, which & C_STOPCOPY);
	}
}

/*
 * Every target figure and its baseline, at fewer sizes and settings; the
 * 4 GiB groups hold the pull, peak-memory and two-thread figures.
 */
static void plan_quick(void)
{
	push_group(256 * MiB, true, C_ALL & ~(C_PUSH1 | C_MOVE1));
	push_group(1 * GiB, true, C_ALL);
	push_group(4 * GiB, true, C_STOPCOPY | C_STOPCOPY2 | C_PUSH2 |
		   C_PULL1 | C_PULL2 | C_MOVE2 | C_MOVELOOP);
	push_group(256 * MiB, false, C_ALL & ~C_MOVE1);
	push_group(1 * GiB, false, C_ALL);
	push_group(4 * GiB, false, C_PUSH2 | C_PULL2);
	/* One thread too: issue 14 asks it for fault latency (COPY, MOVE). */
	latency_group(256 * MiB, false, C_PUSH1 | C_PUSH2 | C_PULL2 | C_MOVE1 |
		      C_MOVE2, TOUCH_RANDOM);
	latency_group(256 * MiB, true, C_PUSH1 | C_PUSH2 | C_PULL2 | C_MOVE1 |
		      C_MOVE2, TOUCH_RANDOM);
	latency_group(1 * GiB, true, C_PUSH2 | C_PULL2, TOUCH_RANDOM_SLOW);
	sparse_group(true, C_PUSH2 | C_PULL2 | C_MOVE2);
}

static void plan_full(void)
{
	push_group(256 * MiB, true, C_ALL);
	push_group(1 * GiB, true, C_ALL);
	push_group(4 * GiB, true, C_ALL);
	push_group(256 * MiB, false, C_ALL | C_CLASSIC);
	push_group(1 * GiB, false, C_ALL);
	push_group(4 * GiB, false, C_ALL);
	latency_group(256 * MiB, false, C_LIB, TOUCH_RANDOM);
	latency_group(256 * MiB, true, C_LIB, TOUCH_RANDOM);
	latency_group(1 * GiB, false, C_LIB, TOUCH_RANDOM);
	latency_group(1 * GiB, true, C_LIB, TOUCH_RANDOM);
	latency_group(4 * GiB, false, C_PUSH2 | C_PULL2 | C_MOVE2,
		      TOUCH_RANDOM);
	latency_group(4 * GiB, true, C_PUSH2 | C_PULL2 | C_MOVE2,
		      TOUCH_RANDOM);
	latency_group(1 * GiB, false, C_PUSH2 | C_PULL2 | C_MOVE2,
		      TOUCH_RANDOM_SLOW);
	latency_group(1 * GiB, true, C_PUSH2 | C_PULL2 | C_MOVE2,
		      TOUCH_RANDOM_SLOW);
	sparse_group(true, C_LIB | C_STOPCOPY);
	sparse_group(false, C_LIB | C_STOPCOPY);
}

/* ------------------------------------------------------------- JSON out */

static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

/* A member after the first: , "key": value */
static void json_u64(const char *key, uint64_t v)
{
	printf(", \"%s\": %llu", key, (unsigned long long)v);
}

/* , "key": {every counter of @st} */
static void json_stats(const char *key, const struct uffdmove_stats *st)
{
	/* the object's first member takes no comma */
	printf(", \"%s\": {\"bytes_populated\": %llu", key,
	       (unsigned long long)st->bytes_populated);
	json_u64("bytes_moved", st->bytes_moved);
	json_u64("bytes_copied", st->bytes_copied);
	json_u64("bytes_zeroed", st->bytes_zeroed);
	json_u64("bytes_skipped", st->bytes_skipped);
	json_u64("bytes_pulled", st->bytes_pulled);
	json_u64("bytes_released", st->bytes_released);
	json_u64("faults", st->faults);
	json_u64("fault_ns_p50", st->fault_ns_p50);
	json_u64("fault_ns_p99", st->fault_ns_p99);
	json_u64("fault_ns_max", st->fault_ns_max);
	json_u64("thp_moved", st->thp_moved);
	json_u64("thp_copied", st->thp_copied);
	json_u64("thp_collapsed", st->thp_collapsed);
	json_u64("move_ebusy", st->move_ebusy);
	json_u64("eagain_retries", st->eagain_retries);
	json_u64("elapsed_ns", st->elapsed_ns);
	printf(", \"primitive\": %u, \"move_unused_reason\": %u, \"pull_unused_reason\": %u}",
	       st->primitive, st->move_unused_reason,
	       st->pull_unused_reason);
}

static void json_u32_array(const char *key, const uint32_t *v, uint32_t n)
{
	uint32_t i;

	printf(", \"%s\": [", key);
	for (i = 0; i < n; i++)
		printf(i ? ",%u" : "%u", v[i]);
	putchar(']');
}

static double loadavg1(void)
{
	double l = -1;
	FILE *f = fopen("/proc/loadavg", "re");

	if (f) {
		if (fscanf(f, "%lf", &l) != 1)
			l = -1;
		fclose(f);
	}
	return l;
}

static void read_line(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "re");

	buf[0] = '\0';
	if (f) {
		if (!fgets(buf, (int)len, f))
			buf[0] = '\0';
		fclose(f);
	}
	buf[strcspn(buf, "\n")] = '\0';
}

static void emit_meta(bool full, int reps)
{
	struct uffdmove_caps caps;
	struct utsname u;
	char thp[128], defrag[128];
	long pages = sysconf(_SC_PHYS_PAGES);

	uname(&u);
	read_line("/sys/kernel/mm/transparent_hugepage/enabled", thp,
		  sizeof(thp));
	read_line("/sys/kernel/mm/transparent_hugepage/defrag", defrag,
		  sizeof(defrag));
	uffdmove_probe(&caps);
	printf("{\n\"schema\": \"uffdmove-bench-raw/1\",\n\"meta\": {");
	printf("\"mode\": \"%s\", \"reps\": %d, \"touch_slow_gap_us\": %d, ",
	       full ? "full" : "quick", reps, TOUCH_SLOW_GAP_US);
	printf("\"library\": ");
	json_str(uffdmove_version());
	printf(", \"kernel\": ");
	json_str(u.release);
	printf(", \"cpus\": %ld, \"mem_bytes\": %llu, \"thp_enabled\": ",
	       sysconf(_SC_NPROCESSORS_ONLN),
	       (unsigned long long)pages * (unsigned long long)sysconf(_SC_PAGESIZE));
	json_str(thp);
	printf(", \"thp_defrag\": ");
	json_str(defrag);
	printf(", \"load1_start\": %.2f, \"time_start\": %lld",
	       loadavg1(), (long long)time(NULL));
	printf(", \"caps\": {\"move\": %s, \"cross_process_move\": %s, \"pagemap_scan\": %s, \"madv_collapse\": %s, \"thp_mode\": %u}",
	       caps.move ? "true" : "false",
	       caps.cross_process_move ? "true" : "false",
	       caps.pagemap_scan ? "true" : "false",
	       caps.madv_collapse ? "true" : "false", caps.thp_mode);
	printf("},\n\"records\": [\n");
}

static int nrecords;

static void emit_record(const struct group *grp, const struct bcase *c,
			const struct guest *g, int rep, int order,
			const struct bench_result *r)
{
	printf("%s{\"group\": ", nrecords++ ? ",\n" : "");
	json_str(grp->name);
	printf(", \"scenario\": \"%s\", \"layout\": \"%s\", \"size\": %zu, \"populated\": %llu, \"thp\": %s, \"threads\": %u, \"touch\": \"%s\", \"rep\": %d, \"order\": %d, \"ok\": %s, \"error\": ",
	       sc_name[c->sc], grp->gs[c->guest].layout, g->len,
	       (unsigned long long)guest_populated(g),
	       g->thp ? "true" : "false", c->threads, touch_name[c->touch],
	       rep, order, r->ok ? "true" : "false");
	json_str(r->error);
	printf(", \"load1\": %.2f", loadavg1());
	json_u64("prepare_ns", r->prepare_ns);
	json_u64("downtime_ns", r->downtime_ns);
	json_u64("handoff_ns", r->handoff_ns);
	json_u64("all_in_ns", r->all_in_ns);
	json_u64("data_in_ns", r->data_in_ns);
	json_u64("src_accept_ns", r->src_accept_ns);
	json_u64("src_run_ns", r->src_run_ns);
	json_u64("thp_src_bytes", r->thp_src_bytes);
	json_u64("thp_done_bytes", r->thp_done_bytes);
	json_u64("thp_dst_bytes", r->thp_dst_bytes);
	json_u64("verify_bad", r->verify_bad);
	json_u64("tgt_collapsed", r->tgt_collapsed);
	json_u64("collapse_wait_ns", r->collapse_wait_ns);
	printf(", \"collapse_complete\": %s",
	       r->collapse_complete ? "true" : "false");
	json_u64("mem_src_start", r->mem_src_start);
	json_u64("mem_tgt_start", r->mem_tgt_start);
	json_u64("mem_peak_raw", r->mem_peak_raw);
	json_u64("mem_samples", r->mem_samples);
	json_u64("touch_checked", r->touch_checked);
	json_u64("touch_faulted", r->touch_faulted);
	json_u64("touch_ns", r->touch_ns);
	if (sc_lib(c->sc)) {
		json_stats("stats", &r->st);	/* the source's */
		json_stats("tstats", &r->tst);	/* the target's */
	}
	json_u32_array("samples", r->samples, r->nsamples);
	json_u32_array("handler", r->handler, r->nhandler);
	putchar('}');
	fflush(stdout);
}

/* ------------------------------------------------------------- running */

static int guest_setup(struct guest *g, const struct guest_spec *s)
{
	uint64_t t0 = now_ns();

	memset(g, 0, sizeof(*g));
	g->len = s->len;
	g->thp = s->thp;
	g->block = s->block;
	g->stride = s->stride;
	g->nblocks = s->len / s->stride;
	g->src = map_guest(g->len, g->thp, true);
	if (!g->src)
		return -1;
	guest_fill(g);
	say("  guest %s %s %s: populated %s in %.2f s, AnonHugePages %llu MiB",
	    s->layout, size_name(g->len), thp_name(g->thp),
	    size_name(guest_populated(g)), (double)(now_ns() - t0) / 1e9,
	    (unsigned long long)(anon_huge_bytes(g->src, g->len) >> 20));
	return 0;
}

static void guest_teardown(struct guest *g)
{
	unmap_guest(g->src, g->len);
	unmap_guest(g->alt, g->len);
	g->src = g->alt = NULL;
}

/*
 * The host backs this VM's memory lazily and takes freed memory back, so a
 * first touch of memory nobody used lately runs at 0.2-1 GB/s and one used
 * a moment ago at 1-10 GB/s. Every case maps fresh memory; touching as
 * much once before the first repetition keeps that repetition from paying
 * alone for what later ones get from their predecessor.
 */
static size_t warm_max = SIZE_MAX;	/* quick mode: 1 GiB */

static void warm_up(const struct guest *g, int n)
{
	size_t len = 0, off;
	uint64_t t0 = now_ns();
	uint8_t *p;
	int i;

	for (i = 0; i < n; i++)
		if (guest_populated(&g[i]) > len)
			len = guest_populated(&g[i]);
	if (len > warm_max)
		len = warm_max;
	p = map_guest(len, g[0].thp, true);
	if (!p)
		return;
	for (off = 0; off < len; off += B_PAGE)
		p[off] = 1;
	unmap_guest(p, len);
	say("  warm-up: touched %s of fresh memory in %.2f s", size_name(len),
	    (double)(now_ns() - t0) / 1e9);
}

static int run_case(const struct bcase *c, struct guest *g,
		    struct bench_result *r, uint64_t seed)
{
	switch (c->sc) {
	case SC_MEMCPY:
		return bench_memcpy(g, r);
	case SC_STOPCOPY:
		return bench_stopcopy(g, r, false, c->threads);
	case SC_STOPCOPY_THP:
		return bench_stopcopy(g, r, true, c->threads);
	case SC_CLASSIC:
		return bench_classic(g, r, c->touch, seed, 0);
	case SC_CLASSIC_BUSY:
		return bench_classic(g, r, c->touch, seed, c->threads);
	case SC_COPYLOOP:
		return bench_copyloop(g, r);
	case SC_MOVELOOP:
		return bench_moveloop(g, r);
	case SC_MOVEFAULT:
		return bench_movefault(g, r, c->touch, seed, 0);
	case SC_MOVEFAULT_BUSY:
		return bench_movefault(g, r, c->touch, seed, c->threads);
	case SC_PUSH:
		return bench_lib_cross(g, r, false, c->threads, c->touch,
				       seed);
	case SC_PULL:
		return bench_lib_cross(g, r, true, c->threads, c->touch,
				       seed);
	case SC_MOVE:
		return bench_lib_move(g, r, c->threads, c->touch, seed);
	}
	return -1;
}

static const char *case_filter;

static const char *case_label(const struct group *grp, const struct bcase *c)
{
	static char buf[96];

	snprintf(buf, sizeof(buf), "%s/%s/t%u/%s", sc_name[c->sc],
		 grp->gs[c->guest].layout, c->threads, touch_name[c->touch]);
	return buf;
}

static int flaky;	/* runs that failed once and passed on a retry */

static void report(const struct group *grp, const struct bcase *c,
		   const struct guest *g, int rep, int k,
		   const struct bench_result *r)
{
	double secs = (double)r->all_in_ns / 1e9;

	say("  rep %d %-11s %s t%u touch=%-6s %s downtime %8.3f ms  all-in %8.3f s  %6.2f GB/s  mem %.2fx%s%s",
	    rep, sc_name[c->sc], grp->gs[c->guest].layout, c->threads,
	    touch_name[c->touch], size_name(g->len),
	    (double)r->downtime_ns / 1e6, secs,
	    secs > 0 ? (double)r->populated / 1e9 / secs : 0,
	    r->populated ? (double)(r->mem_peak_raw + r->populated -
				    r->mem_src_start - r->mem_tgt_start) /
			   (double)r->populated : 0,
	    r->ok ? "" : "  FAILED: ", r->ok ? "" : r->error);
	emit_record(grp, c, g, rep, k, r);
}

/*
 * This VM hands freed memory back to the host (virtio-balloon free page
 * reporting, 8 MiB blocks, a few seconds after the free), and touching it
 * again is slow. With a fixed rotation a case would always follow the same
 * neighbour, and whether that one just freed as much memory as this case
 * needs (a forked target exiting) or not (MOVE, a pull's refilled source)
 * would decide its speed. So every case starts the same way: just before
 * it, as much memory as its target will hold is touched and freed (not
 * timed), and is there to be taken again.
 */
static void prewarm(const struct guest *g)
{
	size_t len = guest_populated(g), off;
	uint8_t *p = map_guest(len, true, true);

	if (!p)
		return;
	for (off = 0; off < len; off += B_PAGE)
		p[off] = 1;
	unmap_guest(p, len);
}

static void attempt(const struct group *grp, const struct bcase *c,
		    struct guest *g, int rep, int k, struct bench_result *r)
{
	prewarm(g);
	result_reset(r);
	run_case(c, g, r, 0x5eed + (uint64_t)rep * 7919);
	if (r->ok && r->verify_bad)
		result_fail(r, "%llu pages arrived with wrong contents",
			    (unsigned long long)r->verify_bad);
	report(grp, c, g, rep, k, r);
}

/* A pull in MODE_AUTO freed the source's pages as they arrived: write the
 * guest again (not timed) so that the next case has one. */
static void refill_if_released(struct guest *g, const struct bench_result *r)
{
	uint64_t t0;

	if (!r->st.bytes_released)
		return;
	t0 = now_ns();
	guest_refill(g);
	say("    (source freed %s: guest written again in %.2f s)",
	    size_name(r->st.bytes_released),
	    (double)(now_ns() - t0) / 1e9);
}

/*
 * The order of the cases in repetition @rep: as declared in the first,
 * then a shuffle seeded by the repetition (the same in every run), so that
 * no case always follows the same neighbour (a rotation would keep them).
 */
static void case_order(int *order, int n, int rep)
{
	uint64_t s = 0x9e3779b97f4a7c15ULL * (uint64_t)(rep + 1);
	int i, j, x;

	for (i = 0; i < n; i++)
		order[i] = i;
	for (i = n - 1; rep && i > 0; i--) {
		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		j = (int)(s % (uint64_t)(i + 1));
		x = order[i];
		order[i] = order[j];
		order[j] = x;
	}
}

/* Runs that failed twice, or -1 if a guest could not be mapped. */
static int run_group(const struct group *grp, int reps,
		     struct bench_result *r)
{
	struct guest g[2] = { 0 };
	int rep, k, i, failures = 0;

	say("group %s (%d cases x %d reps)", grp->name, grp->ncases, reps);
	for (i = 0; i < grp->nguests; i++)
		if (guest_setup(&g[i], &grp->gs[i]))
			goto nomem;
	warm_up(g, grp->nguests);
	for (rep = 0; rep < reps; rep++) {
		int order[CASES_MAX];

		case_order(order, grp->ncases, rep);
		for (k = 0; k < grp->ncases; k++) {
			const struct bcase *c = &grp->cases[order[k]];
			struct guest *gu = &g[c->guest];

			if (case_filter &&
			    !strstr(case_label(grp, c), case_filter))
				continue;
			attempt(grp, c, gu, rep, k, r);
			if (r->ok) {
				refill_if_released(gu, r);
				continue;
			}
			/* Keep the failed record, rebuild the guest (it may
			 * be half moved) and try once more. */
			guest_teardown(gu);
			if (guest_setup(gu, &grp->gs[c->guest]))
				goto nomem;
			attempt(grp, c, gu, rep, k, r);
			if (r->ok) {
				refill_if_released(gu, r);
				flaky++;
				continue;
			}
			failures++;
			guest_teardown(gu);
			if (guest_setup(gu, &grp->gs[c->guest]))
				goto nomem;
		}
	}
	for (i = 0; i < grp->nguests; i++)
		guest_teardown(&g[i]);
	return failures;
nomem:
	say("  cannot map a guest: %s", strerror(errno));
	for (i = 0; i < grp->nguests; i++)
		guest_teardown(&g[i]);
	return -1;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "full", no_argument, NULL, 'f' },
		{ "reps", required_argument, NULL, 'r' },
		{ "only", required_argument, NULL, 'o' },
		{ "case", required_argument, NULL, 'c' },
		{ "list", no_argument, NULL, 'l' },
		{ NULL, 0, NULL, 0 },
	};
	const char *only = NULL;
	bool full = false, list = false;
	struct bench_result *r;
	int reps = 5, failures = 0, i, c, ret;
	uint64_t t0 = now_ns();

	while ((c = getopt_long(argc, argv, "fr:o:c:l", opts, NULL)) != -1) {
		switch (c) {
		case 'f':
			full = true;
			break;
		case 'r':
			reps = atoi(optarg);
			break;
		case 'o':
			only = optarg;
			break;
		case 'c':
			case_filter = optarg;
			break;
		case 'l':
			list = true;
			break;
		default:
			fprintf(stderr, "usage: %s [--full] [--reps N] [--only GROUP] [--case LABEL] [--list]\n",
				argv[0]);
			return 2;
		}
	}
	if (reps < 1)
		reps = 1;
	if (full) {
		plan_full();
	} else {
		plan_quick();
		warm_max = GiB;
	}
	if (list) {
		for (i = 0; i < ngroups; i++)
			for (c = 0; c < groups[i].ncases; c++)
				printf("%s %s\n", groups[i].name,
				       case_label(&groups[i],
						  &groups[i].cases[c]));
		return 0;
	}
	r = result_map();
	if (!r) {
		say("mmap: %s", strerror(errno));
		return 1;
	}
	emit_meta(full, reps);
	for (i = 0; i < ngroups; i++) {
		if (only && !strstr(groups[i].name, only))
			continue;
		ret = run_group(&groups[i], reps, r);
		failures += ret < 0 ? 1 : ret;
	}
	printf("\n],\n\"end\": {\"load1_end\": %.2f, \"elapsed_s\": %.1f, \"failures\": %d, \"passed_on_retry\": %d}\n}\n",
	       loadavg1(), (double)(now_ns() - t0) / 1e9, failures, flaky);
	say("done in %.1f s, %d runs failed twice, %d passed on a retry",
	    (double)(now_ns() - t0) / 1e9, failures, flaky);
	return failures ? 1 : 0;
}
