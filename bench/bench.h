/* SPDX-License-Identifier: MIT */
/*
 * libuffdmove benchmarks: shared declarations.
 *
 * Every scenario hands one "guest" (a source mapping populated with one
 * pattern word per 4 KiB page) to a fresh destination and records, per
 * repetition, one struct bench_result. main.c interleaves the scenarios
 * and prints the raw records as JSON; bench/summarize turns them into the
 * summary, ratios and targets.
 */
#ifndef BENCH_H
#define BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "uffdmove.h"

#define B_PAGE		4096UL
#define B_HPAGE		(2UL << 20)
#define B_SAMPLES_MAX	(128 * 1024)	/* latency samples per run */

/* The guest RAM being handed over. */
struct guest {
	uint8_t *src;		/* current source mapping (populated) */
	uint8_t *alt;		/* second mapping: MOVE ping-pongs into it */
	size_t len;		/* mapping length */
	bool thp;		/* MADV_HUGEPAGE (else MADV_NOHUGEPAGE) */
	/* Populated blocks: [i * stride, i * stride + block) for i < nblocks.
	 * Dense: one block of len. */
	size_t block, stride, nblocks;
};

static inline uint64_t guest_populated(const struct guest *g)
{
	return (uint64_t)g->block * g->nblocks;
}

/* What a toucher does in the target (a vCPU stand-in). */
enum touch_mode {
	TOUCH_NONE,
	TOUCH_RANDOM,		/* random first touches of missing pages,
				 * back to back: a high fault rate */
	TOUCH_ALL_SEQ,		/* touch every page in order (baseline 3) */
	TOUCH_RANDOM_SLOW,	/* as TOUCH_RANDOM, but a missing page is
				 * touched at most every TOUCH_SLOW_GAP_US:
				 * a low fault rate, the handler idles
				 * between faults */
};

#define TOUCH_SLOW_GAP_US	1000	/* <= 1000 timed faults/s: below the
					 * ~1 per 500 us at which the pull
					 * fault policy AUTO turns to CHUNK */

static inline bool touch_random(enum touch_mode m)
{
	return m == TOUCH_RANDOM || m == TOUCH_RANDOM_SLOW;
}

/* One repetition of one scenario; shared between source and target
 * processes (MAP_SHARED). */
struct bench_result {
	int ok;
	char error[512];
	uint64_t populated;
	uint64_t prepare_ns;	/* target: mmap+register (not downtime) */
	uint64_t downtime_ns;	/* guest stopped for the memory part */
	uint64_t handoff_ns;	/* of which uffdmove_target_handoff() */
	uint64_t all_in_ns;	/* from the stop until every page is in */
	uint64_t data_in_ns;	/* ... until DONE (before the target's
				 * final THP collapse), libuffdmove only */
	uint64_t src_accept_ns;
	uint64_t src_run_ns;
	uint64_t thp_src_bytes;	/* AnonHugePages of the source range */
	uint64_t thp_done_bytes; /* ... of the target range when every byte
				 * was in (libuffdmove: wait() returned) */
	uint64_t thp_dst_bytes;	/* ... of the target range, at the end
				 * (libuffdmove: after the bounded wait for
				 * the background collapse) */
	uint64_t verify_bad;	/* pages whose pattern word is wrong */
	struct uffdmove_stats st;	/* source's stats (libuffdmove) */
	struct uffdmove_stats tst;	/* target's stats, at the end */
	uint64_t tgt_collapsed;
	uint64_t collapse_wait_ns;	/* wait() returned until thp_collapsed
					 * reached thp_copied (or gave up) */
	int collapse_complete;	/* it did reach thp_copied */
	/* Host memory: RSS (statm) of the source and the target, sampled
	 * every ~1 ms during the case (memwatch). */
	uint64_t mem_src_start;	/* source RSS before the case (with the
				 * guest and everything else it holds) */
	uint64_t mem_tgt_start;	/* target RSS at its start (what a fork
				 * shares with the source), 0: same process */
	uint64_t mem_peak_raw;	/* max of source RSS + target RSS */
	uint64_t mem_samples;
	/* Touch latency, measured in the target: only pages missing just
	 * before the touch. */
	uint64_t touch_checked;	/* pages looked at */
	uint64_t touch_faulted;	/* of those, missing: timed */
	uint64_t touch_ns;	/* the toucher's running time */
	uint32_t nsamples;
	uint32_t samples[B_SAMPLES_MAX];	/* ns */
	/* Baseline 3: handler-measured service time, read to COPY done. */
	uint32_t nhandler;
	uint32_t handler[B_SAMPLES_MAX];
};

/* common.c */
uint64_t now_ns(void);
void *map_guest(size_t len, bool thp, bool dontfork);
void unmap_guest(void *p, size_t len);
void guest_fill(struct guest *g);
/* Free the source's pages and write the guest again (after a pull in
 * MODE_AUTO freed what arrived). */
void guest_refill(struct guest *g);
uint64_t guest_verify(const struct guest *g, const uint8_t *dst);
uint64_t pattern_word(uint64_t page);
uint64_t anon_huge_bytes(const void *addr, size_t len);
struct bench_result *result_map(void);
void result_reset(struct bench_result *r);
int result_fail(struct bench_result *r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* What every scenario records first: the source's populated and THP bytes
 * and this process's RSS. */
void result_note_source(struct bench_result *r, const struct guest *g);
/* Resident bytes of this process (/proc/self/statm). */
uint64_t rss_self(void);
/*
 * A thread that samples the RSS of @a and @b (0: none) every ~1 ms and
 * keeps the peak of their sum; stop fills r->mem_peak_raw and
 * r->mem_samples.
 */
struct memwatch;
struct memwatch *memwatch_start(pid_t a, pid_t b);
void memwatch_stop(struct memwatch *w, struct bench_result *r);
void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int seqpacket_pair(int sv[2]);
int send_fd(int sock, int fd, const void *buf, size_t len);
int recv_fd(int sock, int *fd, void *buf, size_t len);
/*
 * A seqpacket pair and a forked new VMM: 0 in the child, which keeps sv[1];
 * the child's pid in the parent, which keeps sv[0]; -1 (and @r failed) if
 * either fails.
 */
pid_t fork_target(int sv[2], struct bench_result *r);
/* A userfaultfd with @features and [addr, addr + len) registered for
 * MISSING faults (the baselines' raw uffd); -1 and @r failed if the kernel
 * refuses. */
int uffd_missing(uint8_t *addr, size_t len, uint64_t features,
		 struct bench_result *r);
/* The page of the next fault a blocking @uffd reports (other events are
 * skipped), with @t_read when it was read; UINT64_MAX and @r failed if the
 * read fails. */
uint64_t uffd_next_fault(int uffd, uint64_t *t_read, struct bench_result *r);
int wait_child(pid_t pid, struct bench_result *r);
/*
 * A two-process case: @target runs in a forked new VMM with its end of a
 * seqpacket pair (nonzero: it failed), @source here with the other, while
 * the memory of both is watched. A failed source kills the target.
 */
int bench_pair(struct bench_result *r, const struct guest *g,
	       int (*target)(int sock, void *arg),
	       int (*source)(int sock, void *arg), void *arg);

/* toucher.c: a thread that touches pages of [base, base + len) and times
 * each first touch of a missing page. */
struct toucher;
struct toucher *toucher_start(uint8_t *base, const struct guest *g,
			      enum touch_mode mode, uint64_t seed,
			      uint32_t *samples, uint32_t cap);
void toucher_go(struct toucher *t);
/* Stop now, or (@wait_end) wait until it has touched every page or taken
 * its samples; fills the counters (r->touch_*); returns the number of
 * samples. */
uint32_t toucher_stop(struct toucher *t, bool wait_end,
		      struct bench_result *r);
void toucher_abandon(struct toucher *t);

/* Baselines: base-memcpy.c, base-stopcopy.c, base-classic.c,
 * base-copyloop.c, base-moveloop.c, base-movefault.c */
int bench_memcpy(struct guest *g, struct bench_result *r);
/* b2 (@thp_dst false: into memory with the guest's THP advice) and b2-THP
 * (@thp_dst: into 2 MiB aligned MADV_HUGEPAGE memory), with @threads
 * readers that each read their share of the populated memory. */
int bench_stopcopy(struct guest *g, struct bench_result *r, bool thp_dst,
		   unsigned int threads);
int bench_classic(struct guest *g, struct bench_result *r,
		  enum touch_mode mode, uint64_t seed, unsigned int busy);
int bench_copyloop(struct guest *g, struct bench_result *r);
/* b3-move (@busy 0) and b3-move-busy: b3 in one process, each fault served
 * by UFFDIO_MOVE of its page (THP: its 2 MiB) into fresh memory, which the
 * guest lives in afterwards, as after lib-move. */
int bench_movefault(struct guest *g, struct bench_result *r,
		    enum touch_mode mode, uint64_t seed, unsigned int busy);
/* b5: the guest moved into fresh memory, same process; it lives there
 * afterwards, as after lib-move. */
int bench_moveloop(struct guest *g, struct bench_result *r);

/* libuffdmove: lib-handoff.c. Cross-process: @pull false sets the target's
 * opts.pull OFF (push, UFFDIO_COPY through the target's uffd); true keeps
 * the defaults (the target pulls with @threads pullers). */
int bench_lib_cross(struct guest *g, struct bench_result *r, bool pull,
		    unsigned int threads, enum touch_mode touch, uint64_t seed);
int bench_lib_move(struct guest *g, struct bench_result *r,
		   unsigned int threads, enum touch_mode touch, uint64_t seed);

#endif /* BENCH_H */
