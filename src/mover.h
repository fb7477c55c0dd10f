/* SPDX-License-Identifier: MIT */
/*
 * The transfer core ("the mover"): hands chunks and single faulting pages
 * from the source's memory into the target's. It keeps the plan, who holds
 * which chunk, the urgent queue, counters and the first fatal error; the
 * drivers (run.c) only call what is declared below, never a field.
 * doc/design.md, "The transfer core".
 */
#ifndef UFFDMOVE_MOVER_H
#define UFFDMOVE_MOVER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "error.h"
#include "fills.h"
#include "hist.h"
#include "pagemap.h"
#include "plan.h"
#include "ranges.h"
#include "stage.h"
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
	uint64_t pulled;
	uint64_t released;
};

struct pinned_range {
	uint64_t start, end;
};

#define URGENT_MAX 256
/* Pushers and pullers: the fault thread (nice 0) preempts them. */
#define MOVER_WORKER_NICE 5
#define SCAN_WINDOW_CHUNKS 256		/* scanned ahead at once: 512 MiB */

struct mover {
	bool ready;			/* set up: mover_fini() has work */
	int uffd;
	bool uffd_borrowed;		/* pull: the target's, not ours */
	bool pull;			/* filled by reading the source */
	pid_t pid;			/* pull: the source */
	int pidfd;			/* pull: the source, for sure */
	uint32_t fault_policy;		/* pull: UFFDMOVE_FAULT_* */
	uint64_t rate_since;		/* FAULT_AUTO: this window's start */
	unsigned int rate_count;	/* faults in it */
	bool rate_high;			/* the last window was busy */
	uint64_t fault_end_ns;		/* pushing: the last fault served */
	size_t copy_slice;		/* one thread: bytes per COPY slice,
					   see mover_fill.c; 0: the most */
	void (*fault_rate)(void *arg, bool frequent);	/* see mover_config */
	void *fault_rate_arg;
	struct stages stages;		/* pull: see stage.h */
	uint32_t mode;			/* enum uffdmove_mode */
	bool same_mm;
	int prim;			/* enum prim_state, atomic */
	uint32_t why_not_move;		/* UFFDMOVE_WHY_* */
	bool committed;			/* atomic: GO received, MOVE allowed */
	bool stop;			/* atomic: threads leave */
	struct plan plan;
	uint8_t *windows;		/* per SCAN_WINDOW_CHUNKS: enum chunk_cls */
	struct pm pm;
	const struct pm *own_pm;	/* pull: the target's, see
					   core_chunk_done() */
	const struct pinned_range *pinned;
	size_t npinned;
	struct counters cnt;
	struct hist lat;
	struct fills fills;		/* see fills.h */
	int64_t quiet_wait_us;		/* atomic: see core_split_wait() */

	size_t cursor;			/* atomic: next chunk to push in order */
	pthread_mutex_t lock;		/* urgent queue, outbox, error */
	pthread_mutex_t edge_lock;	/* chunks that share a source 2 MiB
					   block: classified and moved one
					   at a time (mover_fill.c) */
	size_t urgent[URGENT_MAX];
	size_t urgent_head, urgent_tail;
	size_t swept;			/* atomic: chunks below are all done */
	pthread_cond_t chunk_cv;	/* with lock: a chunk may be free */
	unsigned int chunk_waiters;	/* under lock */
	struct ranges outbox;		/* for the peer: THP chunks to collapse
					   (push), ranges to free (pull) */
	uint64_t outbox_bytes;		/* what the outbox covers */
	struct ranges collapse;		/* pull: THP chunks to collapse here */
	struct ranges to_free;		/* push: chunks in the committed
					   target, for mover_free_pending() */
	pthread_cond_t free_cv;		/* with lock: to_free grew, or stop */

	uint64_t events_read;		/* atomic: bumped per read of events */
	pthread_cond_t events_cv;	/* with lock: signals events_read */
	unsigned int events_waiters;	/* under lock */
	uint64_t events_batch;		/* atomic: odd while a batch of events
					   is being read and handled */

	int fatal;			/* first fatal -errno, under lock */
	int move_failure;		/* MODE_MOVE: -EBUSY seen, under lock */
	struct err_buf err;		/* message for fatal / move_failure */
};

/* What a driver hands the core when a session starts. */
struct mover_config {
	int uffd;			/* the mover owns it from now on,
					   unless it pulls */
	pid_t pull_pid;			/* pull from this source; 0: push */
	int pull_pidfd;			/* its pidfd: the mover owns it */
	uint32_t fault_policy;		/* pull: UFFDMOVE_FAULT_* */
	uint32_t mode;			/* enum uffdmove_mode */
	bool same_mm;			/* the target is this process */
	bool move_offered;		/* the uffd negotiated UFFD_FEATURE_MOVE */
	const struct pm *own_pm;	/* pull: our page map, the caller's */
	/* FAULT_AUTO, at the end of each window with faults: they came
	 * fast (served a chunk at a time) or rarely (a page each); called
	 * on the fault thread. */
	void (*fault_rate)(void *arg, bool frequent);
	void *fault_rate_arg;
	const struct pinned_range *pinned;	/* the caller keeps them */
	size_t npinned;
	const struct plan_input *regions;
	size_t nregions;
};

/*
 * Set the core up for a session: plan, pagemap, and, pushing, populated
 * bytes counted while the guest is paused (pulling, chunks are counted as
 * they are classified). 0, or -errno with @err saying why. Either way the
 * core owns cfg->uffd (unless it pulls) and cfg->pull_pidfd, and
 * mover_fini() undoes it all.
 */
int mover_setup(struct mover *m, const struct mover_config *cfg,
		struct err_buf *err);
void mover_fini(struct mover *m);

int mover_uffd(const struct mover *m);
/* The target committed: MOVE is allowed (doc/design.md, "The commit"). */
void mover_commit(struct mover *m);
bool mover_committed(const struct mover *m);
/* Threads leave: the session is ending. */
void mover_stop(struct mover *m);
bool mover_stopping(const struct mover *m);
/*
 * Count the populated bytes of every region, per chunk (mover_setup()
 * does, pushing, while the guest is paused): the stats start from it, and
 * classifying a chunk corrects it by what the chunk really holds then
 * (pages can vanish meanwhile: reclaimed MADV_FREE pages, KSM merging
 * into the zero page).
 */
int mover_count_populated(struct mover *m);
/* The primitive ACCEPT announces, and the populated bytes so far. */
uint32_t mover_primitive(const struct mover *m);
uint64_t mover_populated(const struct mover *m);

/* Pushers and pullers: claim the next chunk (urgent first, then in
 * order, then any given back behind the cursor), or -1 when none is free
 * now. */
long mover_next_chunk(struct mover *m);
/*
 * Pushers and pullers, after mover_next_chunk() found none: false when
 * every chunk is done or the session stops (leave). Else a chunk is still
 * held by another thread, which may give it back (the fault thread does,
 * on EAGAIN) and then only a pusher or puller takes it: wait until one is
 * queued, or a short while, and return true (look again).
 */
bool mover_await_chunk(struct mover *m);
/*
 * Pull a chunk this thread claimed: read it from the source into a
 * staging slot, check the source is still the process we authenticated,
 * and move it into place. Results as mover_push_chunk().
 */
int mover_pull_chunk(struct mover *m, size_t c, bool reader);
/*
 * Hand over a chunk this thread claimed. 0, or a fatal -errno. The thread
 * that reads the uffd's events passes @reader: on EAGAIN (an event pending)
 * it gets -EAGAIN back, with the chunk queued again, instead of waiting for
 * events only it can read.
 */
int mover_push_chunk(struct mover *m, size_t c, bool reader);
/*
 * As mover_push_chunk() with @reader, for the one thread that both pushes
 * and reads the uffd: a chunk that does not move as one PMD goes in
 * slices, and between two of them @pending(@arg) says whether events wait.
 * If so the chunk is given back, to go on where it stopped first thing,
 * and 0 returned so that the caller reads them: a fault never waits for a
 * whole chunk.
 */
int mover_push_sliced(struct mover *m, size_t c, bool (*pending)(void *arg),
		      void *arg);
/*
 * Resolve one fault at target address @addr and wake its thread. Returns 0,
 * -EAGAIN (an event is pending in the target, or another thread holds the
 * chunk: keep reading events, then retry; never wait here), or a fatal
 * -errno.
 */
int mover_fault(struct mover *m, uint64_t addr);
/*
 * In the source, after the commit: [start, start + len) (source addresses,
 * inside the plan) is in the target. Counts what had data there (as pulled
 * when the target @reported it) and, but in MODE_COPY, frees it except the
 * declared pinned ranges; each whole chunk once. 0, or -EINVAL outside
 * the plan; memory that cannot be freed stays (and is not counted).
 */
int mover_release(struct mover *m, uint64_t start, uint64_t len,
		  bool reported);
/* Pushed, at the commit: free the chunks handed over before it. */
void mover_release_done(struct mover *m);
/* A fault read at @t_read was served / had to wait (latency, counters). */
void mover_fault_served(struct mover *m, uint64_t t_read);
void mover_fault_deferred(struct mover *m);
/* The uffd's events were read: pushers that met EAGAIN may try again. */
void mover_events_read(struct mover *m);
/*
 * The fault thread calls mover_events_batch() before it reads a batch of
 * events and again once it has handled them. A discard zaps as soon as
 * its event is read, before it is marked here: mover_events_settle()
 * waits until a batch read before now is handled, its discards counted.
 */
void mover_events_batch(struct mover *m);
void mover_events_settle(struct mover *m);
/*
 * The target discarded [start, end) (a REMOVE or UNMAP event read after
 * @since_ns): never filled again; a fill that raced it is counted.
 */
void mover_discarded(struct mover *m, uint64_t start, uint64_t end,
		     uint64_t since_ns);
/* All chunks are done. */
bool mover_finished(const struct mover *m);
/* Once all are: THP chunks counted as moved whole on the scan ahead's
 * word that came as small pages are counted so and queued for collapse. */
void mover_check_arrivals(struct mover *m);
/* Record the first fatal error with its message; returns @err. */
int mover_fail(struct mover *m, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int mover_fatal(struct mover *m);
/* The message of the fatal error, or of the MODE_MOVE refusal. */
const char *mover_error(const struct mover *m);
/* MODE_MOVE: -EBUSY once the kernel refused to move a page, else 0. */
int mover_move_failure(struct mover *m);
/* Raw discards a fill may have raced: bytes, and the first one seen. */
uint64_t mover_discard_raced(struct mover *m, uint64_t *start, uint64_t *len);
/* Queue a completed THP range for the target (coalesced). */
void mover_outbox_add(struct mover *m, uint64_t start, uint64_t len);
/* Take up to @cap completed THP ranges from the outbox; returns count. */
size_t mover_take_ranges(struct mover *m, struct wire_range *out, size_t cap);
bool mover_outbox_empty(struct mover *m);
/* Grows with every page and fault handed over: progress, for deadlines. */
uint64_t mover_progress(struct mover *m);
/* How many bytes the outbox covers. */
uint64_t mover_outbox_bytes(struct mover *m);
/* Pull: THP chunks that arrived as small pages, to collapse here. */
size_t mover_take_collapse(struct mover *m, struct wire_range *out,
			   size_t cap);
/*
 * Push: free (MADV_DONTNEED) some of the chunks that are in the committed
 * target, off the pushers' path; true if there were any. A driver thread
 * calls it until the end, and once more after the pushers stopped.
 */
bool mover_free_pending(struct mover *m);
/* Does this session free the source as it goes (MODE_AUTO, pushing to
 * another process)? Else no chunk is ever queued for freeing. */
bool mover_frees_pushed(const struct mover *m);
/* Sleep until chunks are queued for freeing; false once the run stops. */
bool mover_await_free(struct mover *m);
/* Snapshot of the counters as public stats (without elapsed time). */
void mover_stats(const struct mover *m, struct uffdmove_stats *st);

#endif /* UFFDMOVE_MOVER_H */
