// SPDX-License-Identifier: MIT
#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "mem.h"
#include "plan.h"
#include "util.h"

/*
 * The bits of a region @len long. Mapped, not calloc()ed: for 16 GiB each
 * map is 512 KiB, and a calloc() that reuses freed memory clears it all at
 * accept, downtime that grows with guest RAM (up to 6 ms here, where first
 * touch is slow). Mapped, only the pages a bit is set in get memory.
 */
int bits_init(struct page_bits *b, uint64_t len)
{
	size_t words = MAX((len / PAGE_SZ + 63) / 64, 1);
	size_t pages = (words + BITS_PAGE_WORDS - 1) / BITS_PAGE_WORDS;

	b->len = pages * PAGE_SZ;
	b->words = mem_map(b->len);
	b->backed = calloc((pages + 63) / 64, sizeof(uint64_t));
	b->full = calloc((words / (BITS_BLOCK / 64) + 64) / 64,
			 sizeof(uint64_t));
	if (b->words && b->backed && b->full)
		return 0;
	bits_fini(b);
	return -ENOMEM;
}

void bits_fini(struct page_bits *b)
{
	if (b->words)
		munmap(b->words, b->len);
	free(b->backed);
	free(b->full);
	*b = (struct page_bits){ 0 };
}

static int by_dst(const void *a, const void *b)
{
	const struct plan_region *x = a, *y = b;

	return x->dst < y->dst ? -1 : x->dst > y->dst;
}

int plan_init(struct plan *p, const struct plan_input *in, size_t n)
{
	size_t i, c, total = 0;

	*p = (struct plan){ 0 };
	p->regions = calloc(n, sizeof(*p->regions));
	if (!p->regions)
		return -ENOMEM;
	p->nregions = n;
	for (i = 0; i < n; i++) {
		struct plan_region *r = &p->regions[i];

		r->src = in[i].src;
		r->dst = in[i].dst;
		r->len = in[i].len;
		r->thp = in[i].thp;
		if (bits_init(&r->populated, r->len) ||
		    bits_init(&r->discarded, r->len) ||
		    bits_init(&r->fault_moved, r->len))
			goto nomem;
		p->bytes_total += r->len;
	}
	qsort(p->regions, n, sizeof(*p->regions), by_dst);
	for (i = 0; i < n; i++) {
		struct plan_region *r = &p->regions[i];

		r->first_chunk = total;
		r->nchunks = (ALIGN_UP(r->src + r->len, CHUNK_SZ) -
			      ALIGN_DOWN(r->src, CHUNK_SZ)) / CHUNK_SZ;
		total += r->nchunks;
	}
	p->chunks = calloc(total, sizeof(*p->chunks));
	if (!p->chunks)
		goto nomem;
	p->nchunks = total;
	for (i = 0; i < n; i++)
		for (c = 0; c < p->regions[i].nchunks; c++)
			p->chunks[p->regions[i].first_chunk + c].region =
				(uint16_t)i;
	return 0;
nomem:
	plan_fini(p);
	return -ENOMEM;
}

void plan_fini(struct plan *p)
{
	size_t i;

	for (i = 0; p->regions && i < p->nregions; i++) {
		struct plan_region *r = &p->regions[i];

		bits_fini(&r->populated);
		bits_fini(&r->discarded);
		bits_fini(&r->fault_moved);
	}
	free(p->regions);
	free(p->chunks);
	*p = (struct plan){ 0 };
}

static const struct plan_region *region_at(const struct plan *p,
					   uint64_t dst)
{
	size_t lo = 0, hi = p->nregions;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct plan_region *r = &p->regions[mid];

		if (dst < r->dst)
			hi = mid;
		else if (dst - r->dst >= r->len)
			lo = mid + 1;
		else
			return r;
	}
	return NULL;
}

long plan_find(const struct plan *p, uint64_t dst)
{
	const struct plan_region *r = region_at(p, dst);
	uint64_t src;

	if (!r)
		return -1;
	src = r->src + (dst - r->dst);
	return (long)(r->first_chunk +
		      (ALIGN_DOWN(src, CHUNK_SZ) -
		       ALIGN_DOWN(r->src, CHUNK_SZ)) / CHUNK_SZ);
}

void plan_chunk_range(const struct plan *p, size_t c, uint64_t *start,
		      uint64_t *end)
{
	const struct plan_region *r = plan_region_of(p, c);
	uint64_t base = ALIGN_DOWN(r->src, CHUNK_SZ) +
			(c - r->first_chunk) * CHUNK_SZ;

	*start = MAX(base, r->src);
	*end = MIN(base + CHUNK_SZ, r->src + r->len);
}

/* Pages of word @w that are wanted (@want) or not. */
static uint64_t wanted_bits(const struct plan_region *r, size_t w, bool want)
{
	uint64_t bits = bits_word(&r->populated, w) &
			~bits_word(&r->discarded, w);

	return want ? bits : ~bits;
}

/* The first page in [i, end) that is wanted (@want) or not, else @end;
 * a word at a time. */
static size_t find_wanted(const struct plan_region *r, size_t i, size_t end,
			  bool want)
{
	uint64_t bits;

	while (i < end) {
		bits = wanted_bits(r, i / 64, want) & (~0ULL << (i % 64));
		if (bits)
			return MIN(ALIGN_DOWN(i, 64) +
				   (size_t)__builtin_ctzll(bits), end);
		i = ALIGN_DOWN(i, 64) + 64;
	}
	return end;
}

bool plan_next_run(const struct plan_region *r, size_t *pos, size_t end,
		   size_t *run_end)
{
	size_t i = find_wanted(r, *pos, end, true);

	if (i >= end)
		return false;
	*pos = i;
	*run_end = find_wanted(r, i, end, false);
	return true;
}

bool plan_any_discarded(const struct plan_region *r, size_t pos, size_t end)
{
	uint64_t bits;

	while (pos < end) {
		bits = bits_word(&r->discarded, pos / 64) &
		       (~0ULL << (pos % 64));
		if (end - ALIGN_DOWN(pos, 64) < 64)
			bits &= (1ULL << (end % 64)) - 1;
		if (bits)
			return true;
		pos = ALIGN_DOWN(pos, 64) + 64;
	}
	return false;
}

uint64_t plan_discard(struct plan *p, uint64_t dst, uint64_t len)
{
	uint64_t end = dst + len, lost = 0, a;
	size_t i;

	for (i = 0; i < p->nregions; i++) {
		struct plan_region *r = &p->regions[i];
		uint64_t lo = MAX(dst, r->dst), hi = MIN(end, r->dst + r->len);

		for (a = ALIGN_UP(lo, PAGE_SZ); a < hi; a += PAGE_SZ) {
			size_t pg = (a - r->dst) / PAGE_SZ;

			if (bit_test(&r->discarded, pg))
				continue;
			bit_set(&r->discarded, pg);
			lost += PAGE_SZ;
		}
	}
	return lost;
}

static uint64_t low_bits(uint64_t v, size_t cnt)
{
	return cnt >= 64 ? v : v & ((1ULL << cnt) - 1);
}

void bits_get(const struct page_bits *b, size_t first, uint64_t *out,
	      size_t n)
{
	size_t w, p, sh, cnt;
	uint64_t v;

	for (w = 0; w * 64 < n; w++) {
		p = first + w * 64;
		sh = p % 64;
		cnt = MIN(64, n - w * 64);
		v = bits_word(b, p / 64) >> sh;
		/* The next word only if the range reaches into it. */
		if (sh && sh + cnt > 64)
			v |= bits_word(b, p / 64 + 1) << (64 - sh);
		out[w] = low_bits(v, cnt);
	}
}

void bits_or(struct page_bits *b, size_t first, const uint64_t *in,
	     size_t n)
{
	size_t w, p, sh;
	uint64_t v;

	if (first % BITS_BLOCK == 0 && n == BITS_BLOCK) {
		for (w = 0; w < BITS_BLOCK / 64 && in[w] == ~0ULL; w++)
			;
		if (w == BITS_BLOCK / 64) {
			bits_mark(b->full, first / BITS_BLOCK);
			return;
		}
	}
	for (w = 0; w * 64 < n; w++) {
		p = first + w * 64;
		sh = p % 64;
		v = low_bits(in[w], MIN(64, n - w * 64));
		if (!v)
			continue;
		bits_or_word(b, p / 64, v << sh);
		if (sh && v >> (64 - sh))
			bits_or_word(b, p / 64 + 1, v >> (64 - sh));
	}
}
