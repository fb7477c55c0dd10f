// SPDX-License-Identifier: MIT
/*
 * plan.c: regions sorted by target address, chunks cut at the source's
 * 2 MiB boundaries, lookups by target address, runs of wanted pages and
 * discards.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <cmocka.h>

#include "plan.h"
#include "util.h"

#define PAGE	4096ULL
#define MIB	(1ULL << 20)
#define GIB	(1ULL << 30)

/*
 * Three regions given out of target order. "odd" starts 3 pages past a
 * 2 MiB boundary in the source and is 8 MiB - 4 KiB long; its target
 * address is 2 MiB aligned, so chunk boundaries in the target are not.
 */
static const struct plan_input three[] = {
	{ .src = 0x7f0000000000ULL + 3 * PAGE,		/* odd */
	  .dst = 0x300000000ULL, .len = 8 * MIB - PAGE, .thp = false },
	{ .src = 0x7f1000000000ULL,			/* aligned */
	  .dst = 0x100000000ULL, .len = 4 * MIB, .thp = true },
	{ .src = 0x7f2000000000ULL + 5 * PAGE,		/* tiny */
	  .dst = 0x200000000ULL, .len = 2 * PAGE, .thp = false },
};

static int setup_three(void **state)
{
	static struct plan p;

	if (plan_init(&p, three, 3))
		return -1;
	*state = &p;
	return 0;
}

static int teardown(void **state)
{
	plan_fini(*state);
	return 0;
}

static void test_init_sorts(void **state)
{
	const struct plan *p = *state;
	size_t c;

	assert_int_equal(p->nregions, 3);
	/* sorted by dst; every field travelled with its region */
	assert_int_equal(p->regions[0].dst, three[1].dst);
	assert_int_equal(p->regions[0].src, three[1].src);
	assert_int_equal(p->regions[0].len, three[1].len);
	assert_true(p->regions[0].thp);
	assert_int_equal(p->regions[1].dst, three[2].dst);
	assert_int_equal(p->regions[1].src, three[2].src);
	assert_int_equal(p->regions[1].len, three[2].len);
	assert_false(p->regions[1].thp);
	assert_int_equal(p->regions[2].dst, three[0].dst);
	assert_int_equal(p->regions[2].src, three[0].src);
	assert_int_equal(p->regions[2].len, three[0].len);
	assert_false(p->regions[2].thp);

	assert_int_equal(p->bytes_total, 4 * MIB + 2 * PAGE + 8 * MIB - PAGE);

	/* aligned 4 MiB: 2 chunks; tiny: 1; odd: [+12K, +8M+8K) -> 5 */
	assert_int_equal(p->regions[0].nchunks, 2);
	assert_int_equal(p->regions[1].nchunks, 1);
	assert_int_equal(p->regions[2].nchunks, 5);
	assert_int_equal(p->nchunks, 8);
	assert_int_equal(p->regions[0].first_chunk, 0);
	assert_int_equal(p->regions[1].first_chunk, 2);
	assert_int_equal(p->regions[2].first_chunk, 3);

	for (c = 0; c < p->nchunks; c++) {
		assert_int_equal(p->chunks[c].region, c < 2 ? 0 : c < 3 ? 1 : 2);
		assert_int_equal(p->chunks[c].state, CHUNK_PENDING);
		assert_int_equal(p->chunks[c].cls_state, CLS_NEW);
		assert_ptr_equal(plan_region_of(p, c),
				 &p->regions[p->chunks[c].region]);
	}

	/* bitmaps start empty */
	for (c = 0; c < (8 * MIB - PAGE) / PAGE; c++) {
		assert_false(bit_test(&p->regions[2].populated, c));
		assert_false(bit_test(&p->regions[2].discarded, c));
	}
}

static void test_chunk_counts(void **state)
{
	static const struct {
		uint64_t src, len;
		size_t nchunks;
	} cases[] = {
		{ 0, PAGE, 1 },
		{ 0, 2 * MIB, 1 },
		{ 0, 2 * MIB + PAGE, 2 },
		{ 2 * MIB - PAGE, 2 * PAGE, 2 },	/* straddles */
		{ 2 * MIB - PAGE, PAGE, 1 },		/* last page */
		{ 2 * MIB, 2 * MIB, 1 },
		{ 3 * PAGE, 2 * MIB - 3 * PAGE, 1 },	/* ends on boundary */
		{ 3 * PAGE, 2 * MIB - 2 * PAGE, 2 },
		{ 3 * PAGE, 8 * MIB - PAGE, 5 },
		{ 1 * GIB, 1 * GIB, 512 },
		{ 1 * GIB + PAGE, 1 * GIB, 513 },
	};
	struct plan_input in = { .dst = 0x100000000ULL };
	struct plan p;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		in.src = 0x7f0000000000ULL + cases[i].src;
		in.len = cases[i].len;
		assert_int_equal(plan_init(&p, &in, 1), 0);
		if (p.nchunks != cases[i].nchunks) {
			print_error("src +0x%llx len 0x%llx: %zu chunks, expected %zu\n",
				    (unsigned long long)cases[i].src,
				    (unsigned long long)cases[i].len,
				    p.nchunks, cases[i].nchunks);
			fail();
		}
		assert_int_equal(p.regions[0].nchunks, cases[i].nchunks);
		assert_int_equal(p.bytes_total, cases[i].len);
		plan_fini(&p);
	}
}

static void test_find(void **state)
{
	const struct plan *p = *state;
	const struct plan_region *odd = &p->regions[2];
	uint64_t first_cut = 2 * MIB - 3 * PAGE;	/* odd's chunk 0 size */

	/* first and last byte of each region */
	assert_int_equal(plan_find(p, 0x100000000ULL), 0);
	assert_int_equal(plan_find(p, 0x100000000ULL + 2 * MIB - 1), 0);
	assert_int_equal(plan_find(p, 0x100000000ULL + 2 * MIB), 1);
	assert_int_equal(plan_find(p, 0x100000000ULL + 4 * MIB - 1), 1);
	assert_int_equal(plan_find(p, 0x200000000ULL), 2);
	assert_int_equal(plan_find(p, 0x200000000ULL + 2 * PAGE - 1), 2);
	assert_int_equal(plan_find(p, odd->dst), 3);
	assert_int_equal(plan_find(p, odd->dst + odd->len - 1), 7);

	/* chunks follow the source's boundaries, not the target's */
	assert_int_equal(plan_find(p, odd->dst + first_cut - 1), 3);
	assert_int_equal(plan_find(p, odd->dst + first_cut), 4);
	assert_int_equal(plan_find(p, odd->dst + 2 * MIB), 4);
	assert_int_equal(plan_find(p, odd->dst + first_cut + 2 * MIB), 5);
	assert_int_equal(plan_find(p, odd->dst + first_cut + 6 * MIB - 1), 6);
	assert_int_equal(plan_find(p, odd->dst + first_cut + 6 * MIB), 7);

	/* outside: before, between, just after, far away */
	assert_int_equal(plan_find(p, 0), -1);
	assert_int_equal(plan_find(p, 0x100000000ULL - 1), -1);
	assert_int_equal(plan_find(p, 0x100000000ULL + 4 * MIB), -1);
	assert_int_equal(plan_find(p, 0x180000000ULL), -1);
	assert_int_equal(plan_find(p, 0x200000000ULL - 1), -1);
	assert_int_equal(plan_find(p, 0x200000000ULL + 2 * PAGE), -1);
	assert_int_equal(plan_find(p, odd->dst - 1), -1);
	assert_int_equal(plan_find(p, odd->dst + odd->len), -1);
	assert_int_equal(plan_find(p, UINT64_MAX), -1);
}

static void test_find_adjacent(void **state)
{
	/* two regions back to back in the target, apart in the source */
	static const struct plan_input in[] = {
		{ .src = 0x7f0000000000ULL, .dst = 0x100000000ULL + 4 * MIB,
		  .len = 2 * MIB },
		{ .src = 0x7f1000000000ULL + PAGE, .dst = 0x100000000ULL,
		  .len = 4 * MIB },
	};
	struct plan p;

	assert_int_equal(plan_init(&p, in, 2), 0);
	assert_int_equal(p.regions[0].nchunks, 3);
	assert_int_equal(p.regions[1].nchunks, 1);
	assert_int_equal(plan_find(&p, 0x100000000ULL), 0);
	assert_int_equal(plan_find(&p, 0x100000000ULL + 4 * MIB - 1), 2);
	assert_int_equal(plan_find(&p, 0x100000000ULL + 4 * MIB), 3);
	assert_int_equal(plan_find(&p, 0x100000000ULL + 6 * MIB - 1), 3);
	assert_int_equal(plan_find(&p, 0x100000000ULL + 6 * MIB), -1);
	plan_fini(&p);
}

/* Chunk ranges tile each region exactly, cut at 2 MiB source boundaries,
 * and plan_find agrees with them at both ends. */
static void test_chunk_range(void **state)
{
	const struct plan *p = *state;
	uint64_t start, end;
	size_t i, c;

	for (i = 0; i < p->nregions; i++) {
		const struct plan_region *r = &p->regions[i];
		uint64_t next = r->src, sum = 0;

		for (c = r->first_chunk; c < r->first_chunk + r->nchunks;
		     c++) {
			plan_chunk_range(p, c, &start, &end);
			assert_int_equal(start, next);
			assert_true(end > start);
			assert_true(end - start <= CHUNK_SZ);
			/* only the region's own ends may be unaligned */
			if (c != r->first_chunk)
				assert_int_equal(start % CHUNK_SZ, 0);
			if (c != r->first_chunk + r->nchunks - 1)
				assert_int_equal(end % CHUNK_SZ, 0);
			/* same chunk */
			assert_true(start / CHUNK_SZ == (end - 1) / CHUNK_SZ);
			assert_int_equal(plan_find(p, r->dst + (start - r->src)),
					 c);
			assert_int_equal(plan_find(p, r->dst + (end - r->src) - 1),
					 c);
			sum += end - start;
			next = end;
		}
		assert_int_equal(next, r->src + r->len);
		assert_int_equal(sum, r->len);
	}

	/* the ends of the odd and tiny regions, by number */
	plan_chunk_range(p, 3, &start, &end);
	assert_int_equal(start, 0x7f0000000000ULL + 3 * PAGE);
	assert_int_equal(end, 0x7f0000000000ULL + 2 * MIB);
	plan_chunk_range(p, 7, &start, &end);
	assert_int_equal(start, 0x7f0000000000ULL + 8 * MIB);
	assert_int_equal(end, 0x7f0000000000ULL + 8 * MIB + 2 * PAGE);
	plan_chunk_range(p, 2, &start, &end);
	assert_int_equal(start, 0x7f2000000000ULL + 5 * PAGE);
	assert_int_equal(end, 0x7f2000000000ULL + 7 * PAGE);
}

static void populate(struct plan_region *r, size_t from, size_t to)
{
	for (; from < to; from++)
		bit_set(&r->populated, from);
}

static void test_next_run(void **state)
{
	struct plan *p = *state;
	struct plan_region *r = &p->regions[2];	/* 2047 pages */
	static const size_t want[][2] = {
		{ 0, 2 }, { 3, 4 }, { 5, 6 }, { 62, 67 }, { 127, 129 },
		{ 2040, 2047 },
	};
	size_t pos, end, i;

	populate(r, 0, 4);		/* 0..3 */
	populate(r, 5, 6);		/* 5 */
	populate(r, 62, 67);		/* across the first word boundary */
	populate(r, 100, 101);		/* discarded below */
	populate(r, 127, 129);		/* across the second */
	populate(r, 2040, 2047);	/* up to the last page */
	bit_set(&r->discarded, 2);
	bit_set(&r->discarded, 100);
	bit_set(&r->discarded, 300);	/* discarded, never populated */

	assert_true(plan_page_wanted(r, 0));
	assert_false(plan_page_wanted(r, 2));
	assert_false(plan_page_wanted(r, 4));
	assert_false(plan_page_wanted(r, 100));
	assert_false(plan_page_wanted(r, 300));

	pos = 0;
	for (i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		assert_true(plan_next_run(r, &pos, 2047, &end));
		assert_int_equal(pos, want[i][0]);
		assert_int_equal(end, want[i][1]);
		pos = end;
	}
	assert_false(plan_next_run(r, &pos, 2047, &end));

	/* the window bounds the run on both sides */
	pos = 63;
	assert_true(plan_next_run(r, &pos, 65, &end));
	assert_int_equal(pos, 63);
	assert_int_equal(end, 65);
	pos = 6;
	assert_true(plan_next_run(r, &pos, 64, &end));
	assert_int_equal(pos, 62);
	assert_int_equal(end, 64);
	pos = 6;
	assert_false(plan_next_run(r, &pos, 62, &end));
	pos = 67;
	assert_false(plan_next_run(r, &pos, 127, &end));
	pos = 10;
	assert_false(plan_next_run(r, &pos, 10, &end));	/* empty window */

	/* an empty region has no run at all */
	pos = 0;
	assert_false(plan_next_run(&p->regions[1], &pos, 2, &end));
	/* a full one is one run */
	populate(&p->regions[1], 0, 2);
	pos = 0;
	assert_true(plan_next_run(&p->regions[1], &pos, 2, &end));
	assert_int_equal(pos, 0);
	assert_int_equal(end, 2);
}

/* Runs and discards, a word at a time, against a page-by-page walk of
 * random bitmaps: dense, sparse, and every window in a stretch. */
static void test_runs_match_pages(void **state)
{
	struct plan *p = *state;
	struct plan_region *r = &p->regions[2];	/* 2047 pages */
	uint64_t seed = 0x5eed;
	size_t round, i, pos, prev, from, to, end, run_end, k;

	for (round = 0; round < 64; round++) {
		unsigned int density = (unsigned int)(round % 8) * 14;

		memset(r->populated.words, 0, 32 * sizeof(uint64_t));
		memset(r->discarded.words, 0, 32 * sizeof(uint64_t));
		for (i = 0; i < 2047; i++) {
			seed = seed * 6364136223846793005ULL + 1;
			if ((seed >> 33) % 100 < density)
				bit_set(&r->populated, i);
			if ((seed >> 40) % 100 < 10)
				bit_set(&r->discarded, i);
		}
		from = (size_t)(seed >> 20) % 2047;
		to = from + (size_t)(seed >> 45) % (2048 - from);
		/* the runs, against each page between and in them */
		pos = prev = from;
		while (plan_next_run(r, &pos, to, &run_end)) {
			for (k = prev; k < pos; k++)
				assert_false(plan_page_wanted(r, k));
			for (k = pos; k < run_end; k++)
				assert_true(plan_page_wanted(r, k));
			assert_true(run_end == to ||
				    !plan_page_wanted(r, run_end));
			prev = pos = run_end;
		}
		for (k = prev; k < to; k++)
			assert_false(plan_page_wanted(r, k));
		/* any discard in [from, to), for windows ending anywhere */
		for (end = from; end <= to; end += 13) {
			bool any = false;

			for (k = from; k < end; k++)
				any |= bit_test(&r->discarded, k);
			assert_int_equal(plan_any_discarded(r, from, end), any);
		}
	}
}

/*
 * bits_get() and bits_or() against bit_test() and bit_set(), at every
 * alignment, for ranges up to a chunk long that end anywhere in a map of
 * 2047 bits (the last word partly used): a word at a time must mean the
 * same bits, and never touch one outside the range.
 */
static void test_bits_match_pages(void **state)
{
	uint64_t want[32], got[8], in[8], v;
	struct page_bits map;
	uint64_t seed = 0xb175;
	size_t round, first, n, k;

	(void)state;
	for (round = 0; round < 4096; round++) {
		assert_int_equal(bits_init(&map, 2047 * PAGE), 0);
		for (k = 0; k < 32; k++) {
			seed = seed * 6364136223846793005ULL + 1;
			v = round % 3 ? seed : 0;
			if (k == 31)
				v &= (1ULL << (2047 % 64)) - 1;
			if (v)
				bits_or_word(&map, k, v);
		}
		first = (size_t)(seed >> 17) % 2047;
		n = 1 + (size_t)(seed >> 40) % MIN(512, 2047 - first);
		bits_get(&map, first, got, n);
		/* The words it wrote, bits past n zero in the last. */
		for (k = 0; k < (n + 63) / 64 * 64; k++)
			assert_int_equal(got[k / 64] >> (k % 64) & 1,
					 k < n && bit_test(&map, first + k));
		for (k = 0; k < 8; k++) {
			seed = seed * 6364136223846793005ULL + 1;
			in[k] = seed;	/* bits past n too: they must not land */
		}
		for (k = 0; k < 32; k++)
			want[k] = bits_word(&map, k);
		for (k = 0; k < n; k++)
			if (in[k / 64] >> (k % 64) & 1)
				want[(first + k) / 64] |= 1ULL << ((first + k) % 64);
		bits_or(&map, first, in, n);
		for (k = 0; k < 32; k++)
			assert_int_equal(bits_word(&map, k), want[k]);
		bits_fini(&map);
	}
}

/*
 * Reading the bits of a large, sparse region gives its map no memory:
 * only the page of words a bit was set in is resident. (This VM's kernel
 * has no shared zero page: a read there would allocate, ~20 us each.) A
 * whole chunk's block set at once needs no page either.
 */
static void test_bits_read_leaves_map_unbacked(void **state)
{
	const uint64_t len = 16ULL << 30;	/* 128 pages of words */
	const size_t per_page = BITS_PAGE_WORDS * 64, set = 5 * per_page + 3;
	const size_t whole = 9 * per_page + 7 * BITS_BLOCK;
	uint64_t out[BITS_BLOCK / 64], ones[BITS_BLOCK / 64];
	unsigned char vec[128];
	struct page_bits b;
	size_t i, k;

	(void)state;
	memset(ones, 0xff, sizeof(ones));
	assert_int_equal(bits_init(&b, len), 0);
	assert_int_equal(b.len, sizeof(vec) * PAGE);
	bit_set(&b, set);
	bits_or(&b, whole, ones, BITS_BLOCK);
	for (i = 0; i < len / PAGE; i += BITS_BLOCK) {
		bits_get(&b, i, out, BITS_BLOCK);
		for (k = 0; k < BITS_BLOCK / 64; k++)
			assert_int_equal(out[k],
					 i == whole ? ~0ULL :
					 i / BITS_BLOCK == set / BITS_BLOCK &&
					 k == set % BITS_BLOCK / 64 ?
					 1ULL << (set % 64) : 0);
		assert_int_equal(bit_test(&b, i + 3), i + 3 == set || i == whole);
	}
	/* Across the whole block's edges, a word at a time. */
	bits_get(&b, whole - 5, out, BITS_BLOCK);
	assert_int_equal(out[0], ~0ULL << 5);
	assert_int_equal(out[7], ~0ULL);
	assert_int_equal(mincore(b.words, b.len, vec), 0);
	for (i = 0; i < sizeof(vec); i++)
		assert_int_equal(vec[i] & 1, i == set / per_page);
	bits_fini(&b);
}

static bool discarded(const struct plan_region *r, size_t pg)
{
	return bit_test(&r->discarded, pg);
}

static void test_discard(void **state)
{
	struct plan *p = *state;
	struct plan_region *a = &p->regions[0];	/* 1024 pages at 4G */
	struct plan_region *t = &p->regions[1];	/* 2 pages at 8G */
	struct plan_region *o = &p->regions[2];	/* 2047 pages at 12G */
	size_t i;

	/* inside one region; again: nothing new */
	assert_int_equal(plan_discard(p, a->dst + 4 * PAGE, 4 * PAGE),
			 4 * PAGE);
	assert_int_equal(plan_discard(p, a->dst + 4 * PAGE, 4 * PAGE), 0);
	for (i = 0; i < 12; i++)
		assert_int_equal(discarded(a, i), i >= 4 && i < 8);

	/* overlapping what is already gone counts only the new pages */
	assert_int_equal(plan_discard(p, a->dst + 6 * PAGE, 4 * PAGE),
			 2 * PAGE);
	assert_true(discarded(a, 9));
	assert_false(discarded(a, 10));

	/* over the region's start edge: only the inside counts */
	assert_int_equal(plan_discard(p, a->dst - 8 * PAGE, 10 * PAGE),
			 2 * PAGE);
	assert_true(discarded(a, 0));
	assert_true(discarded(a, 1));
	assert_false(discarded(a, 2));

	/* over the end edge */
	assert_int_equal(plan_discard(p, a->dst + a->len - PAGE, 1 * MIB),
			 PAGE);
	assert_true(discarded(a, 1023));
	assert_false(discarded(a, 1022));

	/* entirely outside, and empty */
	assert_int_equal(plan_discard(p, a->dst + a->len, 1 * GIB), 0);
	assert_int_equal(plan_discard(p, 0, PAGE), 0);
	assert_int_equal(plan_discard(p, a->dst + 100 * PAGE, 0), 0);
	assert_false(discarded(a, 100));

	/* one call across two regions and the gaps around them */
	assert_int_equal(plan_discard(p, t->dst - 1 * GIB, 6 * GIB),
			 (2 + 2047) * PAGE);
	assert_true(discarded(t, 0));
	assert_true(discarded(t, 1));
	for (i = 0; i < 2047; i++)
		assert_true(discarded(o, i));
	assert_int_equal(plan_discard(p, t->dst - 1 * GIB, 6 * GIB), 0);

	/* the whole plan: what is left of the first region (9 pages gone) */
	assert_int_equal(plan_discard(p, 0, UINT64_MAX - PAGE),
			 (1024 - 9) * PAGE);
	assert_int_equal(plan_discard(p, 0, UINT64_MAX - PAGE), 0);

	/* discarded pages are never wanted again */
	populate(a, 0, 1024);
	i = 0;
	assert_false(plan_next_run(a, &i, 1024, &(size_t){ 0 }));
}

static void test_fini(void **state)
{
	struct plan p;

	assert_int_equal(plan_init(&p, three, 3), 0);
	plan_fini(&p);
	assert_null(p.regions);
	assert_null(p.chunks);
	assert_int_equal(p.nregions, 0);
	assert_int_equal(p.nchunks, 0);
	plan_fini(&p);		/* twice is harmless */
	assert_int_equal(plan_find(&p, three[0].dst), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_init_sorts, setup_three,
						teardown),
		cmocka_unit_test(test_chunk_counts),
		cmocka_unit_test_setup_teardown(test_find, setup_three,
						teardown),
		cmocka_unit_test(test_find_adjacent),
		cmocka_unit_test_setup_teardown(test_chunk_range, setup_three,
						teardown),
		cmocka_unit_test_setup_teardown(test_next_run, setup_three,
						teardown),
		cmocka_unit_test_setup_teardown(test_runs_match_pages,
						setup_three, teardown),
		cmocka_unit_test_setup_teardown(test_discard, setup_three,
						teardown),
		cmocka_unit_test(test_bits_match_pages),
		cmocka_unit_test(test_bits_read_leaves_map_unbacked),
		cmocka_unit_test(test_fini),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
