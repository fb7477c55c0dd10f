/* SPDX-License-Identifier: MIT */
/*
 * A toy guest for handoff tests: regions filled from (seed, page) with a
 * share of never-touched holes, vCPU-like threads that read-verify and
 * write pages during the handoff, and a full byte check at the end.
 */
#ifndef TEST_GUEST_H
#define TEST_GUEST_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "uffdmove.h"

#define GUEST_REGIONS_MAX 4

struct guest_region_spec {
	const char *name;
	size_t len;
	bool thp;
	size_t misalign;	/* bytes past a 2 MiB boundary */
};

struct guest {
	size_t n;
	struct guest_region_spec spec[GUEST_REGIONS_MAX];
	uint64_t seed;
	unsigned int hole_pct;	/* pages never touched in the source */
	unsigned int sparse_every;	/* if set, only every Nth 2 MiB of a
					   region has data: the rest is holes */
	unsigned int pace_us;		/* guest threads: pause per access */
	const uint8_t *discarding;	/* a page the test discards, which
					   guest threads leave alone */
	bool one_mapping;		/* regions back to back in one mapping
					   (huge pages if the first is), as a
					   VMM cuts RAM at a hole */
	void *map[GUEST_REGIONS_MAX];
	size_t maplen[GUEST_REGIONS_MAX];
	uint8_t *addr[GUEST_REGIONS_MAX];
	uint8_t *written[GUEST_REGIONS_MAX];	/* shared: per page */
};

/* Map fresh, untouched regions (the target's, or the source's before
 * guest_fill). */
void guest_map(struct guest *g);
void guest_unmap(struct guest *g);
/* Source side: write the pattern into every page that is not a hole. */
void guest_fill(struct guest *g);
/*
 * The old VMM's guest: mapped, filled, and kept out of forked children
 * (MADV_DONTFORK): a real new VMM is exec'ed, a forked target would
 * COW-share the source's pages.
 */
void guest_map_source(struct guest *g);
bool guest_is_hole(const struct guest *g, size_t r, size_t page);
uint64_t guest_populated_bytes(const struct guest *g);
uint64_t guest_total_bytes(const struct guest *g);
void guest_regions(const struct guest *g, struct uffdmove_region *out);
/*
 * Check every byte: pattern, zero for holes, the marker in word 0 where a
 * worker wrote. 0, or -1 with a description in @why.
 */
int guest_verify(const struct guest *g, char *why, size_t why_len);
/* Like guest_verify on the source after a COPY handoff: untouched. */
int guest_verify_source(const struct guest *g, char *why, size_t why_len);
/* Page @page of region @r as the source filled it: its pattern, or zero
 * for a hole. 0, or -1 with a description in @why. */
int guest_verify_page(const struct guest *g, size_t r, size_t page,
		      char *why, size_t why_len);

/* A same-process handoff of @src into @dst: the source runs in a thread. */
struct guest_pair {
	struct guest src, dst;
	uint32_t mode, threads;		/* the source's options */
	int sv[2];
	pthread_t tid;
	bool joined;
	/* The source's result, message and stats, once guest_pair_join()ed. */
	int run_ret;
	char err[256];
	struct uffdmove_stats st;
	struct uffdmove_target *t;
};

/*
 * Map and fill @p->src from @layout, map @p->dst, start the source and
 * hand over: @p->t is past uffdmove_target_handoff(), not yet committed.
 * Exits 1 if any of that fails.
 */
void guest_pair_start(struct guest_pair *p, const struct guest *layout,
		      uint32_t mode, uint32_t threads);
/* Wait for the source to return (once; later calls return at once). */
void guest_pair_join(struct guest_pair *p);
/* Join, free the target, close both ends, unmap both guests. */
void guest_pair_end(struct guest_pair *p);

struct guest_workers {
	struct guest *g;
	pthread_t tid[8];
	size_t n;
	bool stop;
	uint64_t reads, writes;
	int bad;		/* first bad read seen */
	char why[256];
};

/* Threads doing random reads (verified) and writes over guest RAM. */
void guest_workers_start(struct guest_workers *w, struct guest *g, size_t n);
/* Stop and join; 0 or -1 when a read saw wrong bytes (w->why). */
int guest_workers_stop(struct guest_workers *w);

#endif /* TEST_GUEST_H */
