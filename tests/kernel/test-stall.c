// SPDX-License-Identifier: MIT
/*
 * A peer that is alive but makes no progress (here: SIGSTOPped after the
 * commit) ends the session at the caller's progress deadline, with a
 * specific error and nothing lost: the target's pages that arrived hold
 * the source's bytes and the rest stay missing (never zero); the
 * source's memory that was not reported as arrived is intact.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "guest.h"
#include "harness.h"

#define DEADLINE_MS	300

static struct guest layout(bool thp)
{
	struct guest g = {
		.n = 1,
		.spec = { { "ram", 1UL << 30, thp, 0 } },
		.seed = 0x57a11,
		.hole_pct = 10,
	};
	return g;
}

/* The old VMM in a child: run, whatever happens. */
static int source_main(int sock, bool pull)
{
	struct guest g = layout(pull);
	struct uffdmove_region r[GUEST_REGIONS_MAX];
	struct uffdmove_source *s;

	guest_map_source(&g);
	guest_regions(&g, r);
	if (uffdmove_source_new(&s, r, g.n, NULL) ||
	    uffdmove_source_accept(s, sock))
		return 1;
	uffdmove_source_run(s);
	return 0;
}

/* Every page of guest RAM that is there holds the source's bytes. */
static int present_pages_right(struct guest *g, uint64_t *present)
{
	size_t pg, npages = g->spec[0].len / T_PAGE;
	char why[256];

	*present = 0;
	for (pg = 0; pg < npages; pg++) {
		if (!(t_pagemap(g->addr[0] + pg * T_PAGE) >> 63))
			continue;
		(*present)++;
		if (guest_verify_page(g, 0, pg, why, sizeof(why))) {
			fprintf(stderr, "page %zu: %s\n", pg, why);
			return -1;
		}
	}
	return 0;
}

/* The source stops after the commit: the target's deadline ends it. */
static int target_deadline(struct t_ctx *ctx)
{
	struct guest g = layout(false);
	struct uffdmove_region r[GUEST_REGIONS_MAX];
	struct uffdmove_target_opts o;
	struct uffdmove_target *t;
	uint64_t t0, present;
	int sv[2], ret, status;
	pid_t pid;

	(void)ctx;
	pid = t_fork_peer(sv, 120);
	if (pid == 0)
		_exit(source_main(sv[1], false));
	guest_map(&g);
	guest_regions(&g, r);
	uffdmove_target_opts_init(&o);
	o.pull = UFFDMOVE_PULL_OFF;
	o.progress_timeout_ms = DEADLINE_MS;
	/* The forked source fills 1 GiB before it answers: slow under
	 * ASan on a busy machine. The deadline under test is the one
	 * after the commit. */
	o.handshake_timeout_ms = 60000;
	T_CHECK(uffdmove_target_new(&t, r, g.n, &o) == 0, "target_new: %s",
		uffdmove_new_error());
	T_CHECK(uffdmove_target_handoff(t, sv[0]) == 0, "handoff: %s",
		uffdmove_target_error(t));
	T_CHECK(uffdmove_target_process(t) == 0, "commit: %s",
		uffdmove_target_error(t));
	kill(pid, SIGSTOP);
	t0 = t_now_ms();
	ret = uffdmove_target_wait(t, 20000);
	printf("  wait: %d after %" PRIu64 " ms: %s\n", ret, t_now_ms() - t0,
	       uffdmove_target_error(t));
	T_CHECK(ret == -ETIME && strstr(uffdmove_target_error(t), "no progress"),
		"a stopped source: wait returned %d (%s)", ret,
		uffdmove_target_error(t));
	T_CHECK(t_now_ms() - t0 < 10 * DEADLINE_MS, "the deadline took %" PRIu64
		" ms", t_now_ms() - t0);
	T_CHECK(present_pages_right(&g, &present) == 0,
		"a page that arrived holds other bytes");
	T_CHECK(present * T_PAGE < guest_populated_bytes(&g),
		"all %" PRIu64 " pages arrived before the stop", present);
	kill(pid, SIGKILL);
	kill(pid, SIGCONT);
	status = t_wait(pid);
	(void)status;
	uffdmove_target_free(t);
	close(sv[0]);
	return T_PASS;
}

/* The new VMM in a child: commit, then stop itself. */
static int stopping_target_main(int sock)
{
	struct guest g = layout(true);
	struct uffdmove_region r[GUEST_REGIONS_MAX];
	struct uffdmove_target *t;

	guest_map(&g);
	guest_regions(&g, r);
	if (uffdmove_target_new(&t, r, g.n, NULL) ||
	    uffdmove_target_handoff(t, sock) || uffdmove_target_process(t))
		return 1;
	raise(SIGSTOP);
	return 0;
}

/* The pulling target stops after the commit: it reports nothing, and
 * the source's deadline ends the run; what was never reported stays. */
static int source_deadline(struct t_ctx *ctx)
{
	struct guest g = layout(true);
	struct uffdmove_region r[GUEST_REGIONS_MAX];
	struct uffdmove_source_opts o;
	struct uffdmove_source *s;
	struct uffdmove_stats st;
	uint64_t t0, left = 0;
	int sv[2], ret;
	pid_t pid;

	(void)ctx;
	guest_map_source(&g);
	guest_regions(&g, r);
	pid = t_fork_peer(sv, 120);
	if (pid == 0)
		_exit(stopping_target_main(sv[1]));
	uffdmove_source_opts_init(&o);
	o.progress_timeout_ms = DEADLINE_MS;
	T_CHECK(uffdmove_source_new(&s, r, g.n, &o) == 0, "source_new");
	T_CHECK(uffdmove_source_accept(s, sv[0]) == 0, "accept: %s",
		uffdmove_source_error(s));
	t0 = t_now_ms();
	ret = uffdmove_source_run(s);
	printf("  run: %d after %" PRIu64 " ms: %s\n", ret, t_now_ms() - t0,
	       uffdmove_source_error(s));
	uffdmove_source_stats(s, &st);
	T_CHECK(st.primitive == UFFDMOVE_PRIM_PULL, "primitive %u",
		st.primitive);
	T_CHECK(ret == -ETIMEDOUT &&
		strstr(uffdmove_source_error(s), "no progress"),
		"a stopped target: run returned %d (%s)", ret,
		uffdmove_source_error(s));
	T_CHECK(t_now_ms() - t0 < 10000, "the deadline took %" PRIu64 " ms",
		t_now_ms() - t0);
	/* Freed only what the target reported; the rest is all here. */
	T_CHECK(present_pages_right(&g, &left) == 0,
		"a page left in the source holds other bytes");
	left *= T_PAGE;
	T_CHECK(left + st.bytes_released >= guest_populated_bytes(&g),
		"%" PRIu64 " left + %" PRIu64 " released < %" PRIu64, left,
		st.bytes_released, guest_populated_bytes(&g));
	kill(pid, SIGKILL);
	t_wait(pid);
	uffdmove_source_free(s);
	close(sv[0]);
	guest_unmap(&g);
	return T_PASS;
}

int main(void)
{
	static const struct t_case cases[] = {
		{ "target-deadline-source-stopped", target_deadline },
		{ "source-deadline-target-stopped", source_deadline },
	};
	return t_main(cases, T_ARRAY_SIZE(cases), 120,
		      T_NEED_KERNEL_FAULTS, NULL);
}
