// SPDX-License-Identifier: MIT
/*
 * libuffdmove, through its public API only.
 *
 * Cross-process: this process is the old VMM; a forked child is the new
 * one (the source's guest RAM is MADV_DONTFORK, so the child shares none
 * of it). Push: the target's opts.pull is OFF, so the source fills the
 * target's RAM through the target's uffd (UFFDIO_COPY: this kernel refuses
 * a cross-mm UFFDIO_MOVE). Pull: the defaults; the target reads the
 * source's memory with process_vm_readv into a staging slot and moves it
 * into place, and the source (MODE_AUTO) frees what arrived, so the
 * caller must write the guest again afterwards.
 * Same-process (MOVE): the source runs in a thread; the guest moves from
 * g->src into g->alt, which then becomes the source for the next run. The
 * target's RAM is a fresh mapping each time, as a new VMM's is: moved into
 * a range whose page tables this VM's hypervisor already shadows (the one
 * emptied by the last run), a PMD took 10-17 us here instead of 6-8.
 *
 * Times, all taken in the target:
 *   hello   = uffdmove_target_handoff() called: HELLO sent; the old VMM
 *             has stopped its guest and waits in uffdmove_source_accept()
 *   resumed = the first uffdmove_target_process() returned (GO sent): the
 *             guest may run
 *   all_in  = uffdmove_target_wait() returned 0: every byte is in (THP
 *             collapse goes on in the library's background thread)
 * downtime = resumed - hello; all-in time = all_in - hello; data-in time
 * = downtime + the target's stats.elapsed_ns (commit to DONE).
 * THP: AnonHugePages of the target range when wait() returned ("at
 * DONE"), and again after waiting (bounded) until the target's
 * thp_collapsed reached thp_copied ("at the end").
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench.h"

#define WAIT_MS			(600 * 1000)
#define COLLAPSE_WAIT_MAX_NS	(60ULL * 1000000000ULL)
#define COLLAPSE_STALL_NS	(5ULL * 1000000000ULL)	/* no progress */

struct lib_case {
	bool pull;		/* cross-process: pull (defaults), else push */
	unsigned int threads;
	enum touch_mode touch;
	uint64_t seed;
};

/*
 * After wait(): the library collapses the THP chunks that arrived as small
 * pages in a background thread. Wait until thp_collapsed reaches
 * thp_copied, at most COLLAPSE_WAIT_MAX_NS and while it makes progress
 * (a chunk the kernel will not collapse is never counted).
 */
static void wait_collapse(struct uffdmove_target *t, struct bench_result *r)
{
	uint64_t t0 = now_ns(), last = t0, seen = 0, now;

	for (;;) {
		if (uffdmove_target_stats(t, &r->tst))
			break;
		now = now_ns();
		/* Over: every chunk collapsed, or the rest given up on
		 * (thp_uncollapsed). */
		if (!r->tst.thp_collapsing ||
		    r->tst.thp_collapsed >= r->tst.thp_copied) {
			r->collapse_complete =
				r->tst.thp_collapsed >= r->tst.thp_copied;
			break;
		}
		if (r->tst.thp_collapsed != seen) {
			seen = r->tst.thp_collapsed;
			last = now;
		}
		if (now - t0 > COLLAPSE_WAIT_MAX_NS ||
		    now - last > COLLAPSE_STALL_NS)
			break;
		usleep(1000);
	}
	r->collapse_wait_ns = now_ns() - t0;
	r->tgt_collapsed = r->tst.thp_collapsed;
}

/* The new VMM's part: mmap, register, handoff, run the guest, wait. */
static int target_side(const struct guest *g, uint8_t *dst, bool map,
		       int sock, const struct lib_case *lc,
		       struct bench_result *r)
{
	struct uffdmove_region reg = { .name = "ram", .len = g->len };
	struct uffdmove_target *t = NULL;
	struct uffdmove_target_opts o;
	struct toucher *tc = NULL;
	uint64_t t0, t1, t2, t3;
	int ret;

	if (map)
		r->mem_tgt_start = rss_self();
	t0 = now_ns();
	if (map)
		dst = map_guest(g->len, g->thp, false);
	if (!dst)
		return result_fail(r, "mmap of %zu bytes failed", g->len);
	reg.addr = dst;
	uffdmove_target_opts_init(&o);
	if (!lc->pull)
		o.pull = UFFDMOVE_PULL_OFF;	/* push: UFFDIO_COPY */
	else
		o.threads = lc->threads;	/* 2 is the default */
	ret = uffdmove_target_new(&t, &reg, 1, &o);
	if (ret)
		return result_fail(r, "uffdmove_target_new: %s", strerror(-ret));
	if (lc->touch != TOUCH_NONE) {
		tc = toucher_start(dst, g, lc->touch, lc->seed, r->samples,
				   B_SAMPLES_MAX);
		if (!tc) {
			uffdmove_target_free(t);
			return result_fail(r, "toucher: %m");
		}
	}
	t1 = now_ns();
	r->prepare_ns = t1 - t0;

	ret = uffdmove_target_handoff(t, sock);
	r->handoff_ns = now_ns() - t1;
	if (ret) {
		result_fail(r, "uffdmove_target_handoff: %s",
			    uffdmove_target_error(t));
		goto out;
	}
	ret = uffdmove_target_process(t);	/* commit: resume vCPUs */
	t2 = now_ns();
	if (ret < 0) {
		result_fail(r, "uffdmove_target_process: %s",
			    uffdmove_target_error(t));
		goto out;
	}
	if (tc)
		toucher_go(tc);
	ret = uffdmove_target_wait(t, WAIT_MS);
	t3 = now_ns();
	if (ret) {
		result_fail(r, "uffdmove_target_wait: %s",
			    uffdmove_target_error(t));
		goto out;
	}
	r->downtime_ns = t2 - t1;
	r->all_in_ns = t3 - t1;
	/* Every byte is in: the toucher has nothing left to time. */
	if (tc) {
		r->nsamples = toucher_stop(tc, false, r);
		tc = NULL;
	}
	r->thp_done_bytes = anon_huge_bytes(dst, g->len);
	if (!uffdmove_target_stats(t, &r->tst))
		/* The target's elapsed time runs from the commit to DONE;
		 * wait() then unregisters and starts the collapse. */
		r->data_in_ns = r->downtime_ns + r->tst.elapsed_ns;
	wait_collapse(t, r);
out:
	if (!r->ok) {
		/* Missing pages may never arrive now: leave the toucher, the
		 * target's uffd and the mapping alone (a forked target just
		 * exits; the same-process guest is rebuilt by the caller). */
		if (tc)
			toucher_abandon(tc);
		return -1;
	}
	r->thp_dst_bytes = anon_huge_bytes(dst, g->len);
	r->verify_bad = guest_verify(g, dst);
	uffdmove_target_free(t);
	if (map)
		unmap_guest(dst, g->len);
	return 0;
}

struct source_arg {
	const struct guest *g;
	unsigned int threads;
	int sock;
	struct bench_result *r;
	int ret;
};

/* The old VMM's part: accept the uffd, serve and push until done. */
static int source_side(struct source_arg *a)
{
	struct uffdmove_region reg = {
		.name = "ram", .addr = a->g->src, .len = a->g->len,
	};
	struct uffdmove_source_opts o;
	struct uffdmove_source *s;
	uint64_t t0, t1, t2;
	char name[16] = "";
	int ret;

	/* The fault loop runs here: named, for perf. */
	prctl(PR_GET_NAME, name);
	prctl(PR_SET_NAME, "bench-source");
	uffdmove_source_opts_init(&o);
	o.threads = a->threads;
	ret = uffdmove_source_new(&s, &reg, 1, &o);
	if (ret)
		return result_fail(a->r, "uffdmove_source_new: %s",
				   strerror(-ret));
	t0 = now_ns();
	ret = uffdmove_source_accept(s, a->sock);
	t1 = now_ns();
	if (!ret)
		ret = uffdmove_source_run(s);
	t2 = now_ns();
	if (ret)
		result_fail(a->r, "source: %s", uffdmove_source_error(s));
	uffdmove_source_stats(s, &a->r->st);
	a->r->src_accept_ns = t1 - t0;
	a->r->src_run_ns = t2 - t1;
	uffdmove_source_free(s);
	prctl(PR_SET_NAME, name);
	return ret ? -1 : 0;
}

struct cross {
	struct source_arg a;
	struct lib_case lc;
};

static int cross_target(int sock, void *arg)
{
	struct cross *x = arg;

	return target_side(x->a.g, NULL, true, sock, &x->lc, x->a.r);
}

static int cross_source(int sock, void *arg)
{
	struct cross *x = arg;

	x->a.sock = sock;
	return source_side(&x->a);
}

int bench_lib_cross(struct guest *g, struct bench_result *r, bool pull,
		    unsigned int threads, enum touch_mode touch, uint64_t seed)
{
	struct cross x = {
		.a = { .g = g, .threads = threads, .r = r },
		.lc = { pull, threads, touch, seed },
	};

	return bench_pair(r, g, cross_target, cross_source, &x);
}

static void *source_thread(void *arg)
{
	struct source_arg *a = arg;

	a->ret = source_side(a);
	return NULL;
}

int bench_lib_move(struct guest *g, struct bench_result *r,
		   unsigned int threads, enum touch_mode touch, uint64_t seed)
{
	struct source_arg a = { .g = g, .threads = threads, .r = r };
	struct lib_case lc = { false, threads, touch, seed };
	struct memwatch *w;
	pthread_t tid;
	uint8_t *tmp;
	int sv[2];

	result_note_source(r, g);
	if (!g->alt)
		g->alt = map_guest(g->len, g->thp, true);
	if (!g->alt)
		return result_fail(r, "mmap of %zu bytes failed", g->len);
	if (seqpacket_pair(sv))
		return result_fail(r, "socketpair: %m");
	a.sock = sv[0];
	w = memwatch_start(getpid(), 0);
	if (pthread_create(&tid, NULL, source_thread, &a)) {
		memwatch_stop(w, r);
		close(sv[0]);
		close(sv[1]);
		return result_fail(r, "pthread_create failed");
	}
	if (target_side(g, g->alt, false, sv[1], &lc, r))
		shutdown(sv[1], SHUT_RDWR);	/* the source must not wait */
	pthread_join(tid, NULL);
	memwatch_stop(w, r);
	close(sv[0]);
	close(sv[1]);
	if (!r->ok)
		return -1;
	/* The guest now lives in alt; the old source is all holes, and the
	 * next run moves into fresh memory. */
	tmp = g->src;
	g->src = g->alt;
	g->alt = NULL;
	unmap_guest(tmp, g->len);
	return 0;
}
