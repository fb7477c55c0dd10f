/* SPDX-License-Identifier: MIT */
/*
 * The plan: regions matched between source and target, cut into chunks at
 * the source's 2 MiB boundaries (a THP can only move or collapse whole),
 * with one small state per chunk and per-page bitmaps. Pure: no syscalls.
 */
#ifndef UFFDMOVE_PLAN_H
#define UFFDMOVE_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CHUNK_SZ	(2UL << 20)
#define CHUNK_PAGES	(CHUNK_SZ / 4096)

enum chunk_state {
	CHUNK_PENDING,		/* not yet handed over */
	CHUNK_CLAIMED,		/* a mover thread is on it */
	CHUNK_DONE,		/* every wanted page is in the target */
};

/* Classification, once per chunk: cls_state goes NEW -> BUSY -> READY. */
enum chunk_cls {
	CLS_NEW,		/* not classified yet */
	CLS_BUSY,		/* a thread classifies it; others wait */
	CLS_READY,		/* flags are valid */
};

#define CHUNK_THP	(1u << 0)
#define CHUNK_MOVABLE	(1u << 1)
#define CHUNK_PINNED	(1u << 2)	/* overlaps a declared pinned range */
#define CHUNK_TOUCHED	(1u << 3)	/* a fault put a page in: no PMD fits */
#define CHUNK_UNMAPPED	(1u << 4)	/* pull: the source maps nothing there */
#define CHUNK_RELEASED	(1u << 5)	/* freed in the source (atomic) */
#define CHUNK_WANTED	(1u << 6)	/* a fault marked a page of it wanted
					   before its class (atomic) */
#define CHUNK_SEEN_HUGE	(1u << 7)	/* its window's scan saw one huge
					   page map it all (atomic) */
#define CHUNK_HUGE_TRUSTED (1u << 8)	/* classified from that, and counted
					   as moved whole: checked before
					   DONE (atomic) */

struct chunk {
	uint8_t state;		/* enum chunk_state, atomic */
	uint8_t cls_state;	/* enum chunk_cls, atomic */
	uint16_t flags;		/* CHUNK_*, valid once CLS_READY */
	uint8_t moving;		/* atomic: MOVE ioctls running in it */
	uint8_t moves;		/* atomic: MOVE ioctls started, mod 256 */
	uint16_t region;
	uint16_t resume;	/* pages already handed over, from its start;
				   written by the thread that holds it */
	uint16_t counted;	/* populated pages counted at accept */
};

/*
 * One bit per page of a region. Its words are mapped, not allocated
 * (plan.c), and a page of them is never read before a bit in it is set
 * (@backed says where): on a kernel without the shared zero page, as this
 * VM's, a read gives a page memory too, and a sparse guest would pay a
 * page fault per 128 MiB of its size in each bitmap. A block of 512 bits
 * set whole at once (a chunk with data in every page) is one bit in @full
 * and needs no page at all.
 */
struct page_bits {
	uint64_t *words;
	uint64_t *backed;	/* per page of @words: a bit was set in it */
	uint64_t *full;		/* per BITS_BLOCK bits: all set */
	size_t len;		/* bytes mapped at @words */
};

struct plan_region {
	uint64_t src;		/* in the source */
	uint64_t dst;		/* in the target */
	uint64_t len;
	size_t first_chunk;
	size_t nchunks;
	struct page_bits populated;	/* has data in the source */
	struct page_bits discarded;	/* removed by the target */
	struct page_bits fault_moved;	/* moved alone by a fault */
	bool thp;		/* target wants THP here */
};

struct plan {
	struct plan_region *regions;	/* sorted by dst */
	size_t nregions;
	struct chunk *chunks;
	size_t nchunks;
	uint64_t bytes_total;
};

struct plan_input {
	uint64_t src, dst, len;
	bool thp;
};

/* -ENOMEM or 0. Regions must not overlap (checked by the caller). */
int plan_init(struct plan *p, const struct plan_input *in, size_t n);
void plan_fini(struct plan *p);

/* Chunk index holding source address @src of region @r. */
static inline size_t plan_chunk_of_src(const struct plan_region *r,
				       uint64_t src)
{
	return r->first_chunk + (size_t)((src & ~(CHUNK_SZ - 1)) -
					 (r->src & ~(CHUNK_SZ - 1))) / CHUNK_SZ;
}

/* Chunk index holding target address @dst, or -1 when outside the plan. */
long plan_find(const struct plan *p, uint64_t dst);
/* The source bytes [*start, *end) of chunk @c. */
void plan_chunk_range(const struct plan *p, size_t c, uint64_t *start,
		      uint64_t *end);

static inline struct plan_region *plan_region_of(const struct plan *p,
						 size_t c)
{
	return &p->regions[p->chunks[c].region];
}

/* Page bitmaps: index is the page number within the region. */
#define BITS_PAGE_WORDS	(4096 / sizeof(uint64_t))	/* a 4 KiB page of words */
#define BITS_BLOCK	512				/* a chunk's pages */

int bits_init(struct page_bits *b, uint64_t len);
void bits_fini(struct page_bits *b);

static inline bool bits_marked(const uint64_t *marks, size_t i)
{
	return __atomic_load_n(&marks[i / 64], __ATOMIC_ACQUIRE) >> (i % 64) & 1;
}

static inline void bits_mark(uint64_t *marks, size_t i)
{
	uint64_t mark = 1ULL << (i % 64);

	if (!(__atomic_load_n(&marks[i / 64], __ATOMIC_RELAXED) & mark))
		__atomic_fetch_or(&marks[i / 64], mark, __ATOMIC_RELEASE);
}

/* Word @w of @b (bits 64 w .. 64 w + 63): 0 where no bit was ever set. */
static inline uint64_t bits_word(const struct page_bits *b, size_t w)
{
	if (bits_marked(b->full, w / (BITS_BLOCK / 64)))
		return ~0ULL;
	if (!bits_marked(b->backed, w / BITS_PAGE_WORDS))
		return 0;
	return __atomic_load_n(&b->words[w], __ATOMIC_ACQUIRE);
}

/* OR @v into word @w. The page is marked backed first: whoever sees the
 * bit has seen that too. */
static inline void bits_or_word(struct page_bits *b, size_t w, uint64_t v)
{
	bits_mark(b->backed, w / BITS_PAGE_WORDS);
	__atomic_fetch_or(&b->words[w], v, __ATOMIC_RELEASE);
}

static inline bool bit_test(const struct page_bits *b, size_t i)
{
	return bits_word(b, i / 64) >> (i % 64) & 1;
}

static inline void bit_set(struct page_bits *b, size_t i)
{
	bits_or_word(b, i / 64, 1ULL << (i % 64));
}

/* Bits [first, first + n) of @b into @out, bit 0 of out[0] being
 * @first: a word at a time. */
void bits_get(const struct page_bits *b, size_t first, uint64_t *out,
	      size_t n);
/* OR @in (bit 0 of in[0] for @first) into bits [first, first + n) of
 * @b: one atomic per word touched, not per bit. */
void bits_or(struct page_bits *b, size_t first, const uint64_t *in,
	     size_t n);

/* Page @i has data the target still wants. */
static inline bool plan_page_wanted(const struct plan_region *r, size_t i)
{
	return bit_test(&r->populated, i) && !bit_test(&r->discarded, i);
}

/*
 * Next run of wanted pages within [*pos, end) (page indexes of region @r):
 * returns false when none; else [*pos, *run_end) is the run.
 */
bool plan_next_run(const struct plan_region *r, size_t *pos, size_t end,
		   size_t *run_end);

/* Was any page of [pos, end) (page indexes of @r) discarded? */
bool plan_any_discarded(const struct plan_region *r, size_t pos, size_t end);

/* Mark [dst, dst + len) discarded; returns the bytes newly discarded. */
uint64_t plan_discard(struct plan *p, uint64_t dst, uint64_t len);

#endif /* UFFDMOVE_PLAN_H */
