// SPDX-License-Identifier: MIT
/*
 * A vCPU stand-in in the target: one thread touching guest pages while the
 * handoff runs. TOUCH_RANDOM visits the populated pages in a random order,
 * asks pagemap whether each is still missing and, if so, times its first
 * touch (a load): that is the guest-visible fault latency. Pages already
 * pushed are skipped untimed. TOUCH_RANDOM_SLOW does the same but leaves
 * TOUCH_SLOW_GAP_US between the starts of two timed touches (a low fault
 * rate: the handler goes idle between faults). TOUCH_ALL_SEQ touches every
 * populated page in address order, untimed: a guest that needs all of its
 * memory.
 */
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

struct toucher {
	pthread_t tid;
	sem_t go;
	uint8_t *base;
	const struct guest *g;
	enum touch_mode mode;
	uint32_t *perm;		/* populated page numbers, shuffled */
	size_t npages;
	int pmfd;
	bool stop;		/* atomic */
	uint32_t *samples, cap, n;
	uint64_t checked, faulted;
	uint64_t t_go, t_end;
};

static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* Byte offset of the i-th populated page. */
static size_t page_off(const struct guest *g, size_t i)
{
	size_t ppb = g->block / B_PAGE;

	return (i / ppb) * g->stride + (i % ppb) * B_PAGE;
}

static bool missing(const struct toucher *t, const uint8_t *p)
{
	uint64_t e = 0;

	if (pread(t->pmfd, &e, sizeof(e),
		  (off_t)((uintptr_t)p / B_PAGE * sizeof(e))) != sizeof(e))
		return false;
	return !(e >> 63);
}

/* Sleep until @until_ns (CLOCK_MONOTONIC). */
static void sleep_until(uint64_t until_ns)
{
	struct timespec ts = {
		.tv_sec = (time_t)(until_ns / 1000000000ULL),
		.tv_nsec = (long)(until_ns % 1000000000ULL),
	};

	clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
}

static void *toucher_main(void *arg)
{
	struct toucher *t = arg;
	uint64_t gap = t->mode == TOUCH_RANDOM_SLOW ?
		       TOUCH_SLOW_GAP_US * 1000ULL : 0, next = 0;
	size_t i;

	sem_wait(&t->go);
	t->t_go = now_ns();
	if (t->mode == TOUCH_ALL_SEQ) {
		for (i = 0; i < t->npages; i++)
			(void)*(volatile uint8_t *)(t->base +
						     page_off(t->g, i));
		t->t_end = now_ns();
		return NULL;
	}
	for (i = 0; i < t->npages && t->n < t->cap; i++) {
		uint8_t *p = t->base + page_off(t->g, t->perm[i]);
		uint64_t t0, t1;

		if (__atomic_load_n(&t->stop, __ATOMIC_ACQUIRE))
			break;
		t->checked++;
		if (!missing(t, p))
			continue;
		if (gap) {
			sleep_until(next);
			/* It may have arrived while we slept. */
			if (!missing(t, p))
				continue;
		}
		t0 = now_ns();
		(void)*(volatile uint8_t *)p;
		t1 = now_ns();
		next = t0 + gap;
		t->faulted++;
		t->samples[t->n++] = (uint32_t)(t1 - t0 > UINT32_MAX ?
						UINT32_MAX : t1 - t0);
	}
	t->t_end = now_ns();
	return NULL;
}

struct toucher *toucher_start(uint8_t *base, const struct guest *g,
			      enum touch_mode mode, uint64_t seed,
			      uint32_t *samples, uint32_t cap)
{
	struct toucher *t = calloc(1, sizeof(*t));
	uint64_t s = seed | 1;
	size_t i;

	if (!t)
		return NULL;
	t->base = base;
	t->g = g;
	t->mode = mode;
	t->samples = samples;
	t->cap = cap;
	t->npages = guest_populated(g) / B_PAGE;
	t->pmfd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (touch_random(mode)) {
		t->perm = malloc(t->npages * sizeof(*t->perm));
		if (!t->perm || t->pmfd < 0)
			goto fail;
		for (i = 0; i < t->npages; i++)
			t->perm[i] = (uint32_t)i;
		for (i = t->npages - 1; i > 0; i--) {
			size_t j = (size_t)(xorshift(&s) % (i + 1));
			uint32_t x = t->perm[i];

			t->perm[i] = t->perm[j];
			t->perm[j] = x;
		}
	}
	sem_init(&t->go, 0, 0);
	if (pthread_create(&t->tid, NULL, toucher_main, t))
		goto fail;
	pthread_setname_np(t->tid, "bench-toucher");	/* for perf */
	return t;
fail:
	if (t->pmfd >= 0)
		close(t->pmfd);
	free(t->perm);
	free(t);
	return NULL;
}

void toucher_go(struct toucher *t)
{
	sem_post(&t->go);
}

uint32_t toucher_stop(struct toucher *t, bool wait_end,
		      struct bench_result *r)
{
	uint32_t n;

	if (!wait_end) {
		__atomic_store_n(&t->stop, true, __ATOMIC_RELEASE);
		sem_post(&t->go);	/* in case it never got going */
	}
	pthread_join(t->tid, NULL);
	n = t->n;
	r->touch_checked = t->checked;
	r->touch_faulted = t->faulted;
	r->touch_ns = t->t_end > t->t_go ? t->t_end - t->t_go : 0;
	close(t->pmfd);
	sem_destroy(&t->go);
	free(t->perm);
	free(t);
	return n;
}

/* After a failed handoff the thread may sit in a fault nobody resolves:
 * tell it to stop and leave it (its memory stays allocated). */
void toucher_abandon(struct toucher *t)
{
	__atomic_store_n(&t->stop, true, __ATOMIC_RELEASE);
	sem_post(&t->go);
	pthread_detach(t->tid);
}
