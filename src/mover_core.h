/* SPDX-License-Identifier: MIT */
/*
 * Inside the transfer core only (mover.c, mover_fill.c): the steps the
 * fill paths share with the core's bookkeeping. Drivers use mover.h.
 */
#ifndef UFFDMOVE_MOVER_CORE_H
#define UFFDMOVE_MOVER_CORE_H

#include "mover.h"

/* A wait for a folio shared with a neighbour chunk, see core_split_wait(). */
struct split_wait {
	uint64_t until;		/* 0: not begun */
	unsigned int nap_us;	/* the next nap */
	unsigned int quiet_us;	/* napped while no neighbour moved */
	uint16_t seen;		/* core_neighbour_moves() at the last look */
};

/* One chunk's hand-over in progress: where it is, and how it goes. */
struct xfer {
	size_t c;		/* the chunk */
	struct plan_region *r;
	uint64_t start, stop;	/* its source bytes */
	size_t first;		/* its first page index in r */
	size_t pos, end;	/* page indexes of r: next wanted, limit */
	uint64_t from;		/* where page 0 of r is read here */
	bool moving;		/* MOVE; cleared when the kernel refuses */
	bool whole;		/* no page was there before us (THP intact) */
	bool one;		/* page by page, see on_enoent() */
	size_t vanished;	/* 1 + the page to copy zeros to, see
				   on_move_enoent(); 0: none */
	bool may_wait;		/* false: the caller reads events */
	size_t slice;		/* bytes per ioctl at most; 0: no limit */
	bool (*pending)(void *arg);	/* with slice: events wait? */
	void *pending_arg;
	bool yielded;		/* given back for them */
	unsigned int delay;	/* backoff, see on_enoent() */
	uint64_t spin_until;	/* EAGAIN spin, see on_eagain() */
	struct split_wait busy;	/* EBUSY retries, see on_move_refused() */
	bool busy_retried;
};

/* Chunk @c's hand-over, from where it stopped; the fill path sets
 * x->from and x->moving. @reader: see mover_push_chunk(). 0, or the
 * fatal -errno of core_classify(). */
int core_xfer_begin(struct mover *m, size_t c, struct xfer *x, bool reader);
/* After the fill returned @ret: done, or given back to resume (-EAGAIN). */
int core_xfer_end(struct mover *m, const struct xfer *x, int ret);
/* Hand over the wanted pages [x->pos, x->end): 0, -EAGAIN (x->pos says
 * where to go on), or the fatal -errno. */
int core_transfer(struct mover *m, struct xfer *x);
/* The chunk is in: count it, and have THP chunks that arrived as small
 * pages collapsed. */
void core_chunk_done(struct mover *m, const struct xfer *x);
/* Pull: can one byte be read at the source's @src? 0 or -errno. */
int core_pull_probe(struct mover *m, uint64_t src, char *byte);
/* Pull: 0 while the source we authenticated is alive, else fails the
 * session with -ESRCH (a pid is reused; its pidfd is not). */
int core_source_alive(struct mover *m);
/* Pull: read the source's page at @src into @buf (PAGE_SZ), and make sure
 * it came from the source we authenticated. 0 or the fatal -errno. */
int core_pull_page(struct mover *m, uint64_t src, void *buf);
/* Pushed: chunk @c is in the target; free it once committed. */
void core_release_chunk(struct mover *m, size_t c);
/* A page the source has no data for (hole or discarded): zero page. */
int core_fault_zero(struct mover *m, struct plan_region *r, size_t pg);

/* Does chunk @c cover less than its source 2 MiB block (a region edge)? */
bool core_chunk_edge(const struct mover *m, size_t c);
/* Take chunk @c from PENDING to CLAIMED; false if another thread has it. */
bool core_claim(struct mover *m, size_t c);
/* Put chunk @c in front of the queue (a fault wants it, or it resumes). */
void core_make_urgent(struct mover *m, size_t c);
/* The session primitive, decided by the first result that tells. */
void core_decide(struct mover *m, int prim, uint32_t why);
/* Whether chunk @ch goes by MOVE now; decides nothing. */
bool core_wants_move(const struct mover *m, const struct chunk *ch);
/* Wait until events were read since @seen, or a short while. */
void core_wait_events_read(struct mover *m, uint64_t seen);
/* Before the movers take chunk @c in order: scan its window once, and
 * finish the chunks in it that hold nothing (mover_classify.c). */
void core_scan_ahead(struct mover *m, size_t c);
/* Classify chunk @c once; other threads wait for the one doing it.
 * @reader: the thread that reads events calls. 0, or (pulling) -EFAULT
 * when the source maps nothing there. */
int core_classify(struct mover *m, size_t c, bool reader);
/* Before chunk @c is classified: does page @pg of @r hold data (and, with
 * @to_move, may it move alone)? If so it is marked wanted, and the class
 * will count it. */
bool core_page_has_data(struct mover *m, struct plan_region *r, size_t c,
			size_t pg, bool to_move);
/*
 * A MOVE in chunk @c, around its ioctl: while it runs, a large folio it
 * shares with a neighbour chunk (one that straddles their border) may be
 * being split, its pages under migration entries and refused to other
 * MOVEs (mover_fill.c, mover_classify.c).
 */
static inline void core_moving(struct mover *m, size_t c, bool on)
{
	struct chunk *ch = &m->plan.chunks[c];

	/* Counted: a fault's MOVE of one page may run beside a pusher's. */
	if (on) {
		__atomic_fetch_add(&ch->moves, 1, __ATOMIC_SEQ_CST);
		__atomic_fetch_add(&ch->moving, 1, __ATOMIC_SEQ_CST);
	} else {
		__atomic_fetch_sub(&ch->moving, 1, __ATOMIC_SEQ_CST);
	}
}

/* The longest a chunk waits for a split, as long as one may last (a
 * preempted splitter took 7 ms here); see core_split_wait(). */
#define SPLIT_WAIT_NS	(50 * 1000 * 1000ULL)
/* Its naps: from a moment to about a split's usual length. */
#define SPLIT_NAP_MIN_US	25
#define SPLIT_NAP_MAX_US	1000
/* What a chunk, and all chunks together, may wait while no neighbour
 * moves: a fault on the chunk waits as long (a chunk with one pinned page
 * made faults wait 50 ms in an attack, when 50 ms was the limit). */
#define QUIET_CHUNK_US	2000
#define QUIET_WAIT_US	(100 * 1000)

/* Does a MOVE run in a neighbour of chunk @c? */
static inline bool core_neighbour_moving(const struct mover *m, size_t c)
{
	return (c > 0 && __atomic_load_n(&m->plan.chunks[c - 1].moving,
					 __ATOMIC_SEQ_CST)) ||
	       (c + 1 < m->plan.nchunks &&
		__atomic_load_n(&m->plan.chunks[c + 1].moving,
				__ATOMIC_SEQ_CST));
}

/* The MOVEs started in the neighbours of chunk @c so far (mod 256 each). */
static inline uint16_t core_neighbour_moves(const struct mover *m, size_t c)
{
	uint16_t prev = c > 0 ?
		__atomic_load_n(&m->plan.chunks[c - 1].moves,
				__ATOMIC_SEQ_CST) : 0;
	uint16_t next = c + 1 < m->plan.nchunks ?
		__atomic_load_n(&m->plan.chunks[c + 1].moves,
				__ATOMIC_SEQ_CST) : 0;

	return (uint16_t)(prev | next << 8);
}

/*
 * May a neighbour of chunk @c still be splitting a folio they share: a
 * MOVE runs there, or one started since *@seen (which is brought up to
 * date)? A neighbour moves a chunk in several ioctls, and the moment
 * between two of them is no sign that it is done.
 */
static inline bool core_neighbour_busy(const struct mover *m, size_t c,
				       uint16_t *seen)
{
	uint16_t moves = core_neighbour_moves(m, c);
	bool busy = core_neighbour_moving(m, c) || moves != *seen;

	*seen = moves;
	return busy;
}

/*
 * Chunk @c's MOVE was refused (EBUSY), or its class saw a page under
 * migration or mapped twice: nap, and say whether to look again. Waits
 * while a neighbour moves, as long as a split may last; and, rationed per
 * session and unless @reader (the thread that reads events), while none
 * does. false: give up.
 */
bool core_split_wait(struct mover *m, size_t c, struct split_wait *w,
		     bool reader);

/* May a fault move source page @src alone, its chunk not classified? */
bool core_page_may_move(const struct mover *m, uint64_t src);
/* A THP chunk arrived as small pages: collapse it (push: the target). */
void core_thp_small(struct mover *m, uint64_t dst);
/* MODE_MOVE: source page @src was copied, the kernel having refused to
 * move it (@refused: -EBUSY, -EINVAL), or (@refused 0) the page map
 * showing it shared. */
void core_record_move_failure(struct mover *m, uint64_t src, int refused);

#endif /* UFFDMOVE_MOVER_CORE_H */
