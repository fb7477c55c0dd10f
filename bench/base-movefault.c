// SPDX-License-Identifier: MIT
/*
 * Baseline 3 with UFFDIO_MOVE (b3-move): the classic handler of b3, in one
 * process, where a fault is served by moving its memory from the guest's
 * mapping into a fresh one that the guest then lives in: a THP guest's
 * fault moves its 2 MiB (one PMD), a 4 KiB guest's its page. Nothing moves
 * in the background. This is the floor of lib-move's fault latency in the
 * same run, with no library: a handler thread asleep in read(), one MOVE,
 * its TLB flush and the guest thread's wake-up.
 *
 * b3-move-busy adds threads beside it that move 2 MiB back and forth
 * within the same process, as lib-move's pushers do: each of their MOVEs
 * flushes the TLB of every CPU this process runs on, the faulting one
 * included, and the handler's MOVE flushes theirs.
 *
 * After the guest is done touching, what it did not touch is moved
 * untimed, so that the guest lives whole in the new mapping.
 */
#include <errno.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bench.h"
#include "compat.h"

#define RANDOM_FAULTS	10000	/* samples in TOUCH_RANDOM mode */
#define SLOW_FAULTS	1000	/* ... in TOUCH_RANDOM_SLOW mode (>= 1 s) */
#define BUSY_MAX	4

struct movefault {
	const struct guest *g;
	uint8_t *dst;		/* the guest's new mapping */
	int uffd;
	struct bench_result *r;
	bool stop;		/* atomic: the busy movers leave */
};

/* Move [at, at + len) of the guest into its new mapping. With @rest, what
 * the handler moved already is stepped over (gone from the old mapping, or,
 * for small pages, there in the new one). */
static int move_guest(struct movefault *f, size_t at, size_t len, bool rest)
{
	size_t done = 0;

	while (done < len) {
		struct uffdio_move mv = {
			.dst = (uintptr_t)(f->dst + at + done),
			.src = (uintptr_t)(f->g->src + at + done),
			.len = len - done,
			.mode = rest ? UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES : 0,
		};

		if (ioctl(f->uffd, UFFDIO_MOVE, &mv) == 0 || mv.move > 0)
			done += (size_t)mv.move;	/* all, or part */
		else if (errno == EEXIST && rest)
			done += B_PAGE;
		else if (errno != EAGAIN)
			return -errno;
	}
	return 0;
}

/* The handler gives up: let the guest's faults through (it reads zeros,
 * and the case fails), so that nobody waits for it. */
static void *handler_fail(struct movefault *f)
{
	struct uffdio_range all = {
		.start = (uintptr_t)f->dst, .len = f->g->len + B_PAGE,
	};

	ioctl(f->uffd, UFFDIO_UNREGISTER, &all);
	return NULL;
}

static void *handler_main(void *arg)
{
	struct movefault *f = arg;
	uint64_t dst = (uintptr_t)f->dst, sentinel = dst + f->g->len;
	size_t unit = f->g->thp ? B_HPAGE : B_PAGE;
	struct bench_result *r = f->r;
	int ret;

	for (;;) {
		uint64_t t0, addr = uffd_next_fault(f->uffd, &t0, r);
		size_t at, len;

		if (addr == UINT64_MAX)
			return handler_fail(f);
		if (addr >= sentinel) {
			struct uffdio_zeropage z = {
				.range = { .start = addr, .len = B_PAGE },
			};

			ioctl(f->uffd, UFFDIO_ZEROPAGE, &z);
			return NULL;
		}
		at = (addr - dst) & ~(unit - 1);
		len = f->g->len - at < unit ? f->g->len - at : unit;
		ret = move_guest(f, at, len, false);
		if (ret == -EEXIST) {	/* moved for a fault before */
			struct uffdio_range wake = { addr, B_PAGE };

			ret = ioctl(f->uffd, UFFDIO_WAKE, &wake) ? -errno : 0;
		}
		if (ret) {
			errno = -ret;
			result_fail(r, "UFFDIO_MOVE at +0x%zx: %m", at);
			return handler_fail(f);
		}
		if (r->nhandler < B_SAMPLES_MAX)
			r->handler[r->nhandler++] = (uint32_t)(now_ns() - t0);
	}
}

/* As busy as a pusher of lib-move: move 2 MiB with the guest's advice back
 * and forth between two ranges of this process, again and again. */
static void *busy_main(void *arg)
{
	struct movefault *f = arg;
	uint8_t *a = map_guest(B_HPAGE, f->g->thp, true);
	uint8_t *b = map_guest(B_HPAGE, f->g->thp, true);
	struct uffdio_register reg = {
		.range = { .start = (uintptr_t)a, .len = B_HPAGE },
		.mode = UFFDIO_REGISTER_MODE_MISSING,
	};
	int uffd = -1;

	if (!a || !b) {
		result_fail(f->r, "mmap (busy mover) failed");
		goto out;
	}
	memset(a, 0x5a, B_HPAGE);
	uffd = uffd_missing(b, B_HPAGE, UFFD_FEATURE_MOVE, f->r);
	if (uffd < 0)
		goto out;
	if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0) {
		result_fail(f->r, "UFFDIO_REGISTER (busy mover): %m");
		goto out;
	}
	while (!__atomic_load_n(&f->stop, __ATOMIC_RELAXED)) {
		struct uffdio_move there = {
			.dst = (uintptr_t)b, .src = (uintptr_t)a,
			.len = B_HPAGE,
		}, back = {
			.dst = (uintptr_t)a, .src = (uintptr_t)b,
			.len = B_HPAGE,
		};

		if (ioctl(uffd, UFFDIO_MOVE, &there) < 0 ||
		    ioctl(uffd, UFFDIO_MOVE, &back) < 0) {
			result_fail(f->r, "UFFDIO_MOVE (busy mover): %m");
			break;
		}
	}
out:
	if (uffd >= 0)
		close(uffd);
	unmap_guest(a, B_HPAGE);
	unmap_guest(b, B_HPAGE);
	return NULL;
}

int bench_movefault(struct guest *g, struct bench_result *r,
		    enum touch_mode mode, uint64_t seed, unsigned int busy)
{
	struct movefault f = { .g = g, .uffd = -1, .r = r };
	pthread_t handler, movers[BUSY_MAX];
	unsigned int i, nbusy = 0;
	struct memwatch *w;
	struct toucher *t;
	int ret;

	result_note_source(r, g);
	/* One page more, registered: the sentinel the handler leaves at. */
	f.dst = map_guest(g->len + B_HPAGE, g->thp, true);
	if (!f.dst)
		return result_fail(r, "mmap of %zu bytes failed", g->len);
	f.uffd = uffd_missing(f.dst, g->len + B_PAGE, UFFD_FEATURE_MOVE, r);
	if (f.uffd < 0)
		goto fail;
	t = toucher_start(f.dst, g, mode, seed, r->samples,
			  mode == TOUCH_RANDOM ? RANDOM_FAULTS : SLOW_FAULTS);
	if (!t) {
		result_fail(r, "toucher: %m");
		goto fail;
	}
	if (pthread_create(&handler, NULL, handler_main, &f)) {
		toucher_abandon(t);
		result_fail(r, "pthread_create failed");
		goto fail;
	}
	while (nbusy < busy && nbusy < BUSY_MAX &&
	       !pthread_create(&movers[nbusy], NULL, busy_main, &f))
		nbusy++;
	w = memwatch_start(getpid(), 0);	/* as every case has */
	toucher_go(t);
	r->nsamples = toucher_stop(t, true, r);
	memwatch_stop(w, r);
	(void)*(volatile uint8_t *)(f.dst + g->len);	/* handler: leave */
	pthread_join(handler, NULL);
	__atomic_store_n(&f.stop, true, __ATOMIC_RELAXED);
	for (i = 0; i < nbusy; i++)
		pthread_join(movers[i], NULL);
	/* The rest of the guest, untimed. */
	ret = move_guest(&f, 0, g->len, true);
	close(f.uffd);
	if (ret) {
		errno = -ret;
		result_fail(r, "moving the rest: %m");
	}
	if (!r->ok) {
		unmap_guest(f.dst, g->len + B_HPAGE);
		return -1;	/* half moved: run_group() rebuilds it */
	}
	r->verify_bad = guest_verify(g, f.dst);
	unmap_guest(g->src, g->len);
	munmap(f.dst + g->len, B_HPAGE);	/* the sentinel */
	g->src = f.dst;
	return 0;
fail:
	if (f.uffd >= 0)
		close(f.uffd);
	unmap_guest(f.dst, g->len + B_HPAGE);
	return -1;
}
