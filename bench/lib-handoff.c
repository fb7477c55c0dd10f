// SPDX-License-Identifier: MIT
/*
 * libuffdmove, through its public API only.
 *
 * Cross-process (COPY on upstream kernels): this process is the old VMM;
 * a forked child is the new one (the source's guest RAM is MADV_DONTFORK,
 * so the child shares none of it).
 * Same-process (MOVE): the source runs in a thread; the guest moves from
 * g->src into g->alt, which then becomes the source for the next run.
 *
 * Times, all taken in the target:
 *   hello   = uffdmove_target_handoff() called: HELLO + uffd sent; the old
 *             VMM has stopped its guest and waits in uffdmove_source_accept()
 *   resumed = the first uffdmove_target_process() returned (GO sent): the
 *             guest may run
 *   all_in  = uffdmove_target_wait() returned 0
 * downtime = resumed - hello; all-in time = all_in - hello; data-in time
 * = downtime + the target's stats.elapsed_ns (commit to DONE received,
 * before the final unregister and MADV_COLLAPSE).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench.h"

#define WAIT_MS	(600 * 1000)

/* The new VMM's part: mmap, register, handoff, run the guest, wait. */
static int target_side(const struct guest *g, uint8_t *dst, bool map,
		       int sock, enum touch_mode touch, uint64_t seed,
		       struct bench_result *r)
{
	struct uffdmove_region reg = { .name = "ram", .len = g->len };
	struct uffdmove_target *t = NULL;
	struct toucher *tc = NULL;
	struct uffdmove_stats st;
	uint64_t t0, t1, t2, t3;
	int ret;

	t0 = now_ns();
	if (map)
		dst = map_guest(g->len, g->thp, false);
	if (!dst)
		return result_fail(r, "mmap of %zu bytes failed", g->len);
	reg.addr = dst;
	ret = uffdmove_target_new(&t, &reg, 1, NULL);
	if (ret)
		return result_fail(r, "uffdmove_target_new: %s", strerror(-ret));
	if (touch != TOUCH_NONE) {
		tc = toucher_start(dst, g, touch, seed, r->samples,
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
	if (!uffdmove_target_stats(t, &st)) {
		r->tgt_collapsed = st.thp_collapsed;
		/* The target's elapsed time runs from the commit to DONE;
		 * wait() then unregisters and collapses THP. */
		r->data_in_ns = r->downtime_ns + st.elapsed_ns;
	}
out:
	if (!r->ok) {
		/* Missing pages may never arrive now: leave the toucher, the
		 * target's uffd and the mapping alone (a forked target just
		 * exits; the same-process guest is rebuilt by the caller). */
		if (tc)
			toucher_abandon(tc);
		return -1;
	}
	if (tc)
		r->nsamples = toucher_stop(tc, false, &r->touch_checked,
					   &r->touch_faulted);
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
	int ret;

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
	return ret ? -1 : 0;
}

int bench_lib_copy(struct guest *g, struct bench_result *r,
		   unsigned int threads, enum touch_mode touch, uint64_t seed)
{
	struct source_arg a = { .g = g, .threads = threads, .r = r };
	int sv[2];
	pid_t pid;

	result_note_source(r, g);
	pid = fork_target(sv, r);
	if (pid < 0)
		return -1;
	if (pid == 0)
		_exit(target_side(g, NULL, true, sv[1], touch, seed, r) ?
		      1 : 0);
	a.sock = sv[0];
	if (source_side(&a))
		kill(pid, SIGKILL);	/* its guest would hang */
	close(sv[0]);
	return wait_child(pid, r);
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
	if (pthread_create(&tid, NULL, source_thread, &a))
		return result_fail(r, "pthread_create failed");
	if (target_side(g, g->alt, false, sv[1], touch, seed, r))
		shutdown(sv[1], SHUT_RDWR);	/* the source must not wait */
	pthread_join(tid, NULL);
	close(sv[0]);
	close(sv[1]);
	if (!r->ok)
		return -1;
	/* The guest now lives in alt; the old source is all holes. */
	tmp = g->src;
	g->src = g->alt;
	g->alt = tmp;
	return 0;
}
