/* SPDX-License-Identifier: MIT */
/*
 * Fills in flight, to catch a raw discard that raced one (doc/design.md,
 * "Discards during a handoff"). The target's MADV_DONTNEED proceeds as soon as its REMOVE
 * event is read, so a fill that started before the range was marked can
 * land behind the zap with stale data. The library cannot prevent that
 * for a raw madvise(); it can tell.
 *
 * A filler publishes its range before it checks the discard bits one last
 * time; the reader marks the bits before it looks here. Either the filler
 * sees the mark and skips the page, or the reader sees the fill: a fill in
 * flight, or one that ended after the event could have been read.
 */
#ifndef UFFDMOVE_FILLS_H
#define UFFDMOVE_FILLS_H

#include <pthread.h>
#include <stdint.h>

#define FILLS_LOG	1024	/* fills that ended, most recent */
#define FILLS_LIVE	72	/* in flight at once: one per mover thread */

struct fill {
	uint64_t start, end;	/* target addresses */
	uint64_t ended_ns;	/* in the log: when it ended */
};

struct fills {
	pthread_mutex_t lock;
	struct fill live[FILLS_LIVE];	/* end == 0: free */
	struct fill log[FILLS_LOG];
	uint64_t next;			/* fills logged so far */
	uint64_t raced;			/* bytes */
	uint64_t first_start, first_len;	/* the first race seen */
};

int fills_init(struct fills *f);
void fills_fini(struct fills *f);
/* A fill of [start, end) begins: returns its slot for fills_end(). */
unsigned int fills_begin(struct fills *f, uint64_t start, uint64_t end);
void fills_end(struct fills *f, unsigned int slot);
/*
 * A discard of [start, end) was marked; its event was read after
 * @since_ns. Returns the bytes of it that a fill may have refilled (and
 * counts them).
 */
uint64_t fills_check_discard(struct fills *f, uint64_t start, uint64_t end,
			     uint64_t since_ns);

#endif /* UFFDMOVE_FILLS_H */
