// SPDX-License-Identifier: MIT
/*
 * Source pages that vanish during the handoff, as the design allows
 * (reclaimed MADV_FREE pages; doc/design.md, "DONE is checked"). The
 * source's region "free" is MADV_FREE'd after filling; the target touches
 * one page per chunk of it, and right after each touch the source reclaims
 * that chunk (MADV_PAGEOUT). A page that vanished may arrive as data or as
 * zeros: both are fine. The handoff must complete and the stats add up,
 * also when a fault sent its page before the chunk was classified
 * (core_page_has_data()), and the chunk then looks emptier than it was.
 * Pushed (COPY, AUTO) and pulled (page faults, AUTO).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "guest.h"
#include "harness.h"

#define CHUNK (2UL << 20)

static struct guest layout(void)
{
	struct guest g = {
		.n = 2,
		.spec = {
			{ "ram", 768UL << 20, false, 0 },
			{ "free", 64UL << 20, false, 0 },
		},
		.seed = 0x77,
		.hole_pct = 30,
	};
	return g;
}

static size_t nchunks(const struct guest *g)
{
	return g->spec[1].len / CHUNK;
}

/* A page of chunk @k of region 1 that is not a hole. */
static size_t data_page(const struct guest *g, size_t k)
{
	size_t p = k * (CHUNK / T_PAGE) + 100;

	while (guest_is_hole(g, 1, p))
		p++;
	return p;
}

static int target_main(int sock, int pipe_w, bool pull, uint32_t policy)
{
	struct guest g = layout();
	struct uffdmove_region regions[GUEST_REGIONS_MAX];
	struct uffdmove_target_opts o;
	struct uffdmove_target *t;
	struct uffdmove_stats st;
	char why[256];
	size_t k, p, bad = 0, zero = 0;
	int ret;

	guest_map(&g);
	guest_regions(&g, regions);
	uffdmove_target_opts_init(&o);
	o.pull = pull ? UFFDMOVE_PULL_ON : UFFDMOVE_PULL_OFF;
	o.fault_policy = policy;
	ret = uffdmove_target_new(&t, regions, g.n, &o);
	if (ret) {
		fprintf(stderr, "target_new: %s\n", strerror(-ret));
		return 1;
	}
	ret = uffdmove_target_handoff(t, sock);
	if (ret) {
		fprintf(stderr, "handoff: %s\n", uffdmove_target_error(t));
		return 1;
	}
	uffdmove_target_process(t);	/* commit */
	for (k = nchunks(&g); k-- > 0;) {
		volatile uint64_t *w = (volatile uint64_t *)(g.addr[1] +
				data_page(&g, k) * T_PAGE);
		uint32_t kk = (uint32_t)k;

		(void)*w;
		if (write(pipe_w, &kk, sizeof(kk)) != sizeof(kk))
			return 1;
		usleep(1500);	/* rare faults: page by page */
	}
	close(pipe_w);
	ret = uffdmove_target_wait(t, 60000);
	if (ret) {
		fprintf(stderr, "FAIL: wait: %s\n", uffdmove_target_error(t));
		return 1;
	}
	for (p = 0; p < g.spec[0].len / T_PAGE; p++)
		if (guest_verify_page(&g, 0, p, why, sizeof(why))) {
			fprintf(stderr, "FAIL: ram: %s\n", why);
			return 1;
		}
	for (p = 0; p < g.spec[1].len / T_PAGE; p++) {
		if (!guest_verify_page(&g, 1, p, why, sizeof(why)))
			continue;
		if (t_is_zero(g.addr[1] + p * T_PAGE, T_PAGE)) {
			zero++;
			continue;
		}
		if (!bad++)
			fprintf(stderr, "FAIL: free page %zu: %s\n", p, why);
	}
	uffdmove_target_stats(t, &st);
	printf("target: %zu vanished pages arrived as zeros, %zu bad; pull stats: populated %" PRIu64
	       " moved %" PRIu64 " copied %" PRIu64 " zeroed %" PRIu64
	       " skipped %" PRIu64 " faults %" PRIu64 "\n", zero, bad,
	       st.bytes_populated, st.bytes_moved, st.bytes_copied,
	       st.bytes_zeroed, st.bytes_skipped, st.faults);
	if (pull && (st.bytes_moved + st.bytes_copied != st.bytes_populated ||
		     st.bytes_moved + st.bytes_copied + st.bytes_zeroed +
		     st.bytes_skipped != guest_total_bytes(&g))) {
		fprintf(stderr, "FAIL: pull stats do not add up: moved+copied %" PRIu64
			" populated %" PRIu64 " sum %" PRIu64 " total %" PRIu64 "\n",
			st.bytes_moved + st.bytes_copied, st.bytes_populated,
			st.bytes_moved + st.bytes_copied + st.bytes_zeroed +
			st.bytes_skipped, guest_total_bytes(&g));
		bad++;
	}
	uffdmove_target_free(t);
	fflush(stdout);
	return bad ? 1 : 0;
}

struct helper {
	struct guest *g;
	int fd;
	size_t done;
};

static void *helper_main(void *arg)
{
	struct helper *h = arg;
	uint32_t k;

	while (read(h->fd, &k, sizeof(k)) == sizeof(k)) {
		if (madvise(h->g->addr[1] + (size_t)k * CHUNK, CHUNK,
			    MADV_PAGEOUT) == 0)
			h->done++;
	}
	return NULL;
}

static int vanish(struct t_ctx *ctx, bool pull, bool autom)
{
	const char *mode = pull ? (autom ? "pull, AUTO" : "pull, FAULT_PAGE") :
			   (autom ? "push, AUTO" : "push, COPY");
	struct guest g = layout();
	struct uffdmove_region regions[GUEST_REGIONS_MAX];
	struct uffdmove_source_opts so;
	struct uffdmove_source *s;
	struct uffdmove_stats st;
	struct helper h;
	pthread_t tid;
	int sv[2], pp[2], ret, status;
	pid_t pid;

	guest_map_source(&g);
	T_CHECK(madvise(g.addr[1], g.spec[1].len, MADV_FREE) == 0, "MADV_FREE");
	guest_regions(&g, regions);
	T_CHECK(pipe(pp) == 0, "pipe");
	pid = t_fork_peer(sv, 120);
	if (pid == 0) {
		close(pp[0]);
		_exit(target_main(sv[1], pp[1], pull,
				  pull && !autom ? UFFDMOVE_FAULT_PAGE :
				  UFFDMOVE_FAULT_AUTO));
	}
	close(pp[1]);
	h = (struct helper){ &g, pp[0], 0 };
	pthread_create(&tid, NULL, helper_main, &h);
	uffdmove_source_opts_init(&so);
	so.pull = pull ? UFFDMOVE_PULL_AUTO : UFFDMOVE_PULL_OFF;
	so.mode = pull || autom ? UFFDMOVE_MODE_AUTO : UFFDMOVE_MODE_COPY;
	T_CHECK(uffdmove_source_new(&s, regions, g.n, &so) == 0, "source_new");
	ret = uffdmove_source_accept(s, sv[0]);
	T_CHECK(ret == 0, "accept: %s", uffdmove_source_error(s));
	ret = uffdmove_source_run(s);
	T_CHECK(ret == 0, "run: %s", uffdmove_source_error(s));
	T_CHECK(uffdmove_source_stats(s, &st) == 0, "stats");
	pthread_join(tid, NULL);
	printf("source (%s): reclaimed %zu chunks; populated %" PRIu64
	       " copied %" PRIu64 " moved %" PRIu64 " zeroed %" PRIu64
	       " skipped %" PRIu64 " faults %" PRIu64 " prim %u\n", mode,
	       h.done, st.bytes_populated, st.bytes_copied, st.bytes_moved,
	       st.bytes_zeroed, st.bytes_skipped, st.faults, st.primitive);
	status = t_wait(pid);
	T_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		"target failed (status 0x%x)", status);
	if (!pull) {
		T_CHECK(st.bytes_copied + st.bytes_moved == st.bytes_populated,
			"copied+moved %" PRIu64 " != populated %" PRIu64 " (diff %" PRId64 " pages)",
			st.bytes_copied + st.bytes_moved, st.bytes_populated,
			(int64_t)(st.bytes_copied + st.bytes_moved -
				  st.bytes_populated) / 4096);
		T_CHECK(st.bytes_copied + st.bytes_moved + st.bytes_zeroed +
			st.bytes_skipped == guest_total_bytes(&g),
			"stats do not add up to the regions");
	}
	uffdmove_source_free(s);
	close(sv[0]);
	close(pp[0]);
	guest_unmap(&g);
	return T_PASS;
}

static int push_copy(struct t_ctx *ctx)
{
	return vanish(ctx, false, false);
}

static int push_auto(struct t_ctx *ctx)
{
	return vanish(ctx, false, true);
}

static int pull_page(struct t_ctx *ctx)
{
	return vanish(ctx, true, false);
}

static int pull_auto(struct t_ctx *ctx)
{
	return vanish(ctx, true, true);
}

int main(void)
{
	static const struct t_case cases[] = {
		{ "push-copy", push_copy },
		{ "push-auto", push_auto },
		{ "pull-page", pull_page },
		{ "pull-auto", pull_auto },
	};
	return t_main(cases, T_ARRAY_SIZE(cases), 240,
		      T_NEED_KERNEL_FAULTS, NULL);
}
