// SPDX-License-Identifier: MIT
/*
 * Baseline 3: the classic userfaultfd handler of most examples. The new
 * process registers its guest RAM and passes the uffd to the old one, whose
 * single thread does a blocking read() of one uffd_msg and a UFFDIO_COPY of
 * one 4 KiB page per fault. Nothing is pushed in the background: memory
 * arrives only when the guest touches it.
 *
 * One page past the guest is registered too: the target touches it last,
 * which tells the handler to leave.
 *
 * b3-busy is the same handler with copy threads beside it, each copying
 * 2 MiB over and over while the guest runs: the CPU a pusher or a puller
 * takes, without its design. Against it, a library's fault latency shows
 * what is contention for two CPUs and what is the library's own.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "bench.h"

#define RANDOM_FAULTS	10000	/* samples in TOUCH_RANDOM mode */
#define SLOW_FAULTS	1000	/* ... in TOUCH_RANDOM_SLOW mode (>= 1 s) */

struct handler {
	int uffd;
	const struct guest *g;
	uint64_t dst;		/* target's guest RAM */
	struct bench_result *r;
};

static void *handler_main(void *arg)
{
	struct handler *h = arg;
	static uint8_t zero[B_PAGE];
	uint64_t sentinel = h->dst + h->g->len;

	for (;;) {
		struct uffdio_copy c = { .len = B_PAGE };
		uint64_t t0, addr = uffd_next_fault(h->uffd, &t0, h->r);

		if (addr == UINT64_MAX)
			return NULL;
		c.dst = addr;
		c.src = addr >= sentinel ? (uintptr_t)zero :
			(uintptr_t)(h->g->src + (addr - h->dst));
		if (ioctl(h->uffd, UFFDIO_COPY, &c) < 0 && errno != EEXIST) {
			result_fail(h->r, "UFFDIO_COPY at 0x%llx: %m",
				    (unsigned long long)addr);
			return NULL;
		}
		if (addr >= sentinel)
			return NULL;
		if (h->r->nhandler < B_SAMPLES_MAX)
			h->r->handler[h->r->nhandler++] =
				(uint32_t)(now_ns() - t0);
	}
}

static int target_main(const struct guest *g, int sock,
		       enum touch_mode mode, uint64_t seed,
		       struct bench_result *r)
{
	struct toucher *t;
	uint64_t t0, t1, t2, t3, addr;
	uint8_t *dst;
	char ack;
	int uffd;

	r->mem_tgt_start = rss_self();
	t0 = now_ns();
	dst = map_guest(g->len + B_HPAGE, g->thp, false);
	if (!dst)
		return result_fail(r, "mmap failed");
	/* One page more: the sentinel that tells the handler to leave. */
	uffd = uffd_missing(dst, g->len + B_PAGE, 0, r);
	if (uffd < 0)
		return -1;
	t = toucher_start(dst, g, mode, seed, r->samples,
			  mode == TOUCH_RANDOM ? RANDOM_FAULTS :
			  mode == TOUCH_RANDOM_SLOW ? SLOW_FAULTS : 0);
	if (!t)
		return result_fail(r, "toucher: %m");
	t1 = now_ns();
	addr = (uintptr_t)dst;
	if (send_fd(sock, uffd, &addr, sizeof(addr)) ||
	    read(sock, &ack, 1) != 1)
		return result_fail(r, "handing the uffd over: %m");
	t2 = now_ns();
	toucher_go(t);
	r->nsamples = toucher_stop(t, true, r);
	t3 = now_ns();
	(void)*(volatile uint8_t *)(dst + g->len);	/* handler: leave */
	r->prepare_ns = t1 - t0;
	r->downtime_ns = t2 - t1;
	if (mode == TOUCH_ALL_SEQ)
		r->all_in_ns = t3 - t1;
	if (mode == TOUCH_ALL_SEQ)
		r->verify_bad = guest_verify(g, dst);
	close(uffd);
	return 0;
}

struct classic {
	struct handler h;
	enum touch_mode mode;
	uint64_t seed;
	unsigned int busy;	/* copy threads beside the handler */
	bool stop;		/* atomic: the copy threads leave */
};

#define BUSY_MAX	4

/* As CPU-bound as a pusher: copy 2 MiB, again and again. */
static void *busy_main(void *arg)
{
	struct classic *c = arg;
	uint8_t *from = map_guest(B_HPAGE, false, false);
	uint8_t *to = map_guest(B_HPAGE, false, false);

	if (from && to) {
		memset(from, 0x5a, B_HPAGE);
		while (!__atomic_load_n(&c->stop, __ATOMIC_RELAXED)) {
			memcpy(to, from, B_HPAGE);
			__asm__ volatile("" : : "r"(to) : "memory");
		}
	}
	if (from)
		munmap(from, B_HPAGE);
	if (to)
		munmap(to, B_HPAGE);
	return NULL;
}

static int target_side(int sock, void *arg)
{
	struct classic *c = arg;

	return target_main(c->h.g, sock, c->mode, c->seed, c->h.r);
}

/* Take the uffd, then serve it from a thread until the guest is done. */
static int source_side(int sock, void *arg)
{
	struct classic *c = arg;
	struct handler *h = &c->h;
	pthread_t tid, busy[BUSY_MAX];
	unsigned int i, nbusy = 0;

	if (recv_fd(sock, &h->uffd, &h->dst, sizeof(h->dst)) !=
	    (int)sizeof(h->dst) || h->uffd < 0)
		return result_fail(h->r, "receiving the uffd failed");
	if (pthread_create(&tid, NULL, handler_main, h)) {
		close(h->uffd);
		return result_fail(h->r, "pthread_create failed");
	}
	pthread_setname_np(tid, "bench-b3");
	while (nbusy < c->busy && nbusy < BUSY_MAX &&
	       !pthread_create(&busy[nbusy], NULL, busy_main, c))
		nbusy++;
	if (write(sock, "g", 1) != 1)
		result_fail(h->r, "ack: %m");
	pthread_join(tid, NULL);
	__atomic_store_n(&c->stop, true, __ATOMIC_RELAXED);
	for (i = 0; i < nbusy; i++)
		pthread_join(busy[i], NULL);
	close(h->uffd);
	return h->r->ok ? 0 : -1;	/* the handler gave up */
}

int bench_classic(struct guest *g, struct bench_result *r,
		  enum touch_mode mode, uint64_t seed, unsigned int busy)
{
	struct classic c = { .h = { .g = g, .r = r }, .mode = mode,
			     .seed = seed, .busy = busy };

	return bench_pair(r, g, target_side, source_side, &c);
}
