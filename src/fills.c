// SPDX-License-Identifier: MIT
#include <errno.h>
#include <string.h>

#include "fills.h"
#include "util.h"

int fills_init(struct fills *f)
{
	memset(f, 0, sizeof(*f));
	return -pthread_mutex_init(&f->lock, NULL);
}

void fills_fini(struct fills *f)
{
	pthread_mutex_destroy(&f->lock);
}

unsigned int fills_begin(struct fills *f, uint64_t start, uint64_t end)
{
	unsigned int slot;

	pthread_mutex_lock(&f->lock);
	for (slot = 0; slot < FILLS_LIVE - 1 && f->live[slot].end; slot++)
		;
	f->live[slot] = (struct fill){ start, end, 0 };
	pthread_mutex_unlock(&f->lock);
	/* The mutex orders this before the filler's last look at the
	 * discard bits, as the reader's marking is before its look here. */
	return slot;
}

void fills_end(struct fills *f, unsigned int slot)
{
	pthread_mutex_lock(&f->lock);
	f->log[f->next++ % FILLS_LOG] = (struct fill){
		f->live[slot].start, f->live[slot].end, now_ns()
	};
	f->live[slot].end = 0;
	pthread_mutex_unlock(&f->lock);
}

static uint64_t overlap(struct fills *f, const struct fill *x,
			uint64_t start, uint64_t end)
{
	uint64_t lo = MAX(start, x->start), hi = MIN(end, x->end);

	if (lo >= hi)
		return 0;
	if (!f->raced && !f->first_len) {
		f->first_start = lo;
		f->first_len = hi - lo;
	}
	return hi - lo;
}

uint64_t fills_check_discard(struct fills *f, uint64_t start, uint64_t end,
			     uint64_t since_ns)
{
	uint64_t raced = 0;
	unsigned int i;

	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	pthread_mutex_lock(&f->lock);
	for (i = 0; i < FILLS_LIVE; i++)
		if (f->live[i].end)
			raced += overlap(f, &f->live[i], start, end);
	for (i = 0; i < FILLS_LOG; i++)
		if (f->log[i].ended_ns >= since_ns)
			raced += overlap(f, &f->log[i], start, end);
	/* Even the oldest fill logged ended after the read: older ones that
	 * did too were overwritten (a reader late by ~FILLS_LOG fills). What
	 * cannot be ruled out counts as raced. */
	if (f->next >= FILLS_LOG &&
	    f->log[f->next % FILLS_LOG].ended_ns >= since_ns) {
		const struct fill all = { start, end, 0 };

		raced = overlap(f, &all, start, end);
	}
	f->raced += raced;
	pthread_mutex_unlock(&f->lock);
	return raced;
}
