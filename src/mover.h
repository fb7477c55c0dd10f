/* SPDX-License-Identifier: MIT */
/*
 * The mover: hands chunks and single faulting pages from the source's memory
 * into the target's through the target's uffd, choosing MOVE or COPY per
 * chunk (the one place that decides), honouring partial progress, EEXIST,
 * EAGAIN and the target's discards. Shared by the fault thread and pushers.
 */
#ifndef UFFDMOVE_MOVER_H
#define UFFDMOVE_MOVER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "error.h"
#include "fills.h"
#include "hist.h"
#include "pagemap.h"
#include "plan.h"
#include "uffdmove.h"
#include "wire.h"

/* Session primitive, decided from facts once (doc/design.md). */
enum prim_state {
	PRIM_UNDECIDED,		/* MOVE is a candidate; the first try decides */
	PRIM_COPY,
	PRIM_MOVE,
};

struct counters {		/* all updated with relaxed atomics */
	uint64_t populated, moved, copied, zeroed, skipped, discarded;
	uint64_t faults, thp_moved, thp_copied, move_ebusy, pinned_skipped;
	uint64_t eagain;
	uint64_t chunks_done;
};

struct pinned_range {
	uint64_t start, end;
};

#define URGENT_MAX 256

struct mover {
	int uffd;
	uint32_t mode;			/* enum uffdmove_mode */
	bool same_mm;
	int prim;			/* enum prim_state, atomic */
	uint32_t why_not_move;		/* UFFDMOVE_WHY_* */
	bool committed;			/* atomic: GO received, MOVE allowed */
	bool stop;			/* atomic: threads leave */
	struct plan plan;
	struct pm pm;
	struct pinned_range *pinned;
	size_t npinned;
	struct counters cnt;
	struct hist lat;
	struct fills fills;		/* see fills.h */

	size_t cursor;			/* atomic: next chunk to push in order */
	pthread_mutex_t lock;		/* urgent queue, outbox, error */
	size_t urgent[URGENT_MAX];
	size_t urgent_head, urgent_tail;
	struct wire_range *outbox;	/* completed THP chunks, coalesced */
	size_t outbox_n, outbox_cap;

	uint64_t events_read;		/* atomic: bumped per read of events */
	pthread_cond_t events_cv;	/* with lock: signals events_read */
	unsigned int events_waiters;	/* under lock */

	int fatal;			/* first fatal -errno, under lock */
	int move_failure;		/* MODE_MOVE: -EBUSY seen, under lock */
	struct err_buf err;		/* message for fatal / move_failure */
};

int mover_init(struct mover *m);
void mover_fini(struct mover *m);

/* Pushers: claim the next chunk (urgent first), or -1 when none is left. */
long mover_next_chunk(struct mover *m);
/*
 * Hand over a chunk this thread claimed. 0, or a fatal -errno. The thread
 * that reads the uffd's events passes @reader: on EAGAIN (an event pending)
 * it gets -EAGAIN back, with the chunk queued again, instead of waiting for
 * events only it can read.
 */
int mover_push_chunk(struct mover *m, size_t c, bool reader);
/*
 * Resolve one fault at target address @addr and wake its thread. Returns 0,
 * -EAGAIN (an event is pending in the target, or another thread holds the
 * chunk: keep reading events, then retry; never wait here), or a fatal
 * -errno.
 */
int mover_fault(struct mover *m, uint64_t addr);
/* The uffd's events were read: pushers that met EAGAIN may try again. */
void mover_events_read(struct mover *m);
/*
 * Count the populated bytes of every region, per chunk, while the guest is
 * paused: the stats start from it, and classifying a chunk corrects it by
 * what the chunk really holds then (pages can vanish meanwhile: reclaimed
 * MADV_FREE pages, KSM merging into the zero page).
 */
int mover_count_populated(struct mover *m);
/* All chunks are done. */
bool mover_finished(const struct mover *m);
/* Record the first fatal error with its message; returns @err. */
int mover_fail(struct mover *m, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int mover_fatal(struct mover *m);
/* Queue a completed THP range for the target (coalesced). */
void mover_outbox_add(struct mover *m, uint64_t start, uint64_t len);
/* Take up to @cap completed THP ranges from the outbox; returns count. */
size_t mover_take_ranges(struct mover *m, struct wire_range *out, size_t cap);
/* Snapshot of the counters as public stats (without elapsed time). */
void mover_stats(const struct mover *m, struct uffdmove_stats *st);

#endif /* UFFDMOVE_MOVER_H */
