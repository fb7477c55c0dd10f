// SPDX-License-Identifier: MIT
/*
 * classify.c: synthetic pagemap words and PAGEMAP_SCAN categories to page
 * flags, and page flags to a per-chunk decision. The bit numbers below are
 * spelled out from the kernel's documentation on purpose, so a wrong value
 * in compat.h fails here too.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "classify.h"

/* Documentation/admin-guide/mm/pagemap.rst */
#define PM_BIT_PRESENT	(1ULL << 63)
#define PM_BIT_SWAPPED	(1ULL << 62)
#define PM_BIT_FILE	(1ULL << 61)	/* file page or shared anon */
#define PM_BIT_WP	(1ULL << 57)	/* uffd write-protected */
#define PM_BIT_EXCL	(1ULL << 56)	/* exclusively mapped */
#define PM_BIT_SOFTDIRTY (1ULL << 55)
#define PM_PFN(x)	((uint64_t)(x) & ((1ULL << 55) - 1))

/* include/uapi/linux/fs.h, PAGEMAP_SCAN categories */
#define CAT_WPALLOWED	(1ULL << 0)
#define CAT_WRITTEN	(1ULL << 1)
#define CAT_FILE	(1ULL << 2)
#define CAT_PRESENT	(1ULL << 3)
#define CAT_SWAPPED	(1ULL << 4)
#define CAT_PFNZERO	(1ULL << 5)
#define CAT_HUGE	(1ULL << 6)
#define CAT_SOFT_DIRTY	(1ULL << 7)

#define NPAGES		512	/* a 2 MiB chunk */

static void test_pm_word(void **state)
{
	assert_int_equal(classify_pm_word(0), 0);
	assert_int_equal(classify_pm_word(PM_BIT_PRESENT | PM_PFN(0x1234)),
			 PG_PRESENT);
	assert_int_equal(classify_pm_word(PM_BIT_PRESENT | PM_BIT_EXCL |
					  PM_PFN(0x1234)),
			 PG_PRESENT | PG_EXCL);
	/* exclusivity means nothing without a page */
	assert_int_equal(classify_pm_word(PM_BIT_EXCL), 0);
	/* swapped: the PFN field holds the swap entry */
	assert_int_equal(classify_pm_word(PM_BIT_SWAPPED | PM_PFN(0x7fff)),
			 PG_SWAPPED);
	assert_int_equal(classify_pm_word(PM_BIT_SWAPPED | PM_BIT_EXCL),
			 PG_SWAPPED);
	/* present wins over swapped */
	assert_int_equal(classify_pm_word(PM_BIT_PRESENT | PM_BIT_SWAPPED |
					  PM_BIT_EXCL),
			 PG_PRESENT | PG_EXCL);
	/* file-backed or shared anonymous */
	assert_int_equal(classify_pm_word(PM_BIT_PRESENT | PM_BIT_FILE),
			 PG_PRESENT | PG_FILE);
	assert_int_equal(classify_pm_word(PM_BIT_PRESENT | PM_BIT_FILE |
					  PM_BIT_EXCL),
			 PG_PRESENT | PG_FILE | PG_EXCL);
	assert_int_equal(classify_pm_word(PM_BIT_FILE), PG_FILE);
	/* bits that do not matter here: soft-dirty, uffd-wp, PFN */
	assert_int_equal(classify_pm_word(PM_BIT_PRESENT | PM_BIT_EXCL |
					  PM_BIT_WP | PM_BIT_SOFTDIRTY |
					  PM_PFN(~0ULL)),
			 PG_PRESENT | PG_EXCL);
	assert_int_equal(classify_pm_word(PM_BIT_WP | PM_BIT_SOFTDIRTY |
					  PM_PFN(~0ULL)),
			 0);
}

static void test_pm_word_never_huge_or_zero(void **state)
{
	uint64_t bits;

	/* A pagemap word cannot tell a THP or the zero page. */
	for (bits = 0; bits < 1u << 9; bits++) {
		uint64_t w = bits << 55 | PM_PFN(bits * 0x9e3779b1ULL);
		uint8_t f = classify_pm_word(w);

		assert_int_equal(f & (PG_HUGE | PG_ZERO), 0);
		assert_int_equal(!!(f & PG_PRESENT), !!(w & PM_BIT_PRESENT));
		assert_int_equal(!!(f & PG_EXCL),
				 (w & PM_BIT_PRESENT) && (w & PM_BIT_EXCL));
		assert_int_equal(!!(f & PG_FILE), !!(w & PM_BIT_FILE));
	}
}

static void test_scan_categories(void **state)
{
	assert_int_equal(classify_scan_categories(0), 0);
	assert_int_equal(classify_scan_categories(CAT_PRESENT), PG_PRESENT);
	assert_int_equal(classify_scan_categories(CAT_SWAPPED), PG_SWAPPED);
	assert_int_equal(classify_scan_categories(CAT_PRESENT | CAT_SWAPPED),
			 PG_PRESENT);
	assert_int_equal(classify_scan_categories(CAT_PRESENT | CAT_HUGE),
			 PG_PRESENT | PG_HUGE);
	assert_int_equal(classify_scan_categories(CAT_PRESENT | CAT_PFNZERO),
			 PG_PRESENT | PG_ZERO);
	assert_int_equal(classify_scan_categories(CAT_PRESENT | CAT_PFNZERO |
						  CAT_HUGE),
			 PG_PRESENT | PG_ZERO | PG_HUGE);
	assert_int_equal(classify_scan_categories(CAT_PRESENT | CAT_FILE),
			 PG_PRESENT | PG_FILE);
	/* categories that do not matter here */
	assert_int_equal(classify_scan_categories(CAT_WPALLOWED | CAT_WRITTEN |
						  CAT_SOFT_DIRTY),
			 0);
	assert_int_equal(classify_scan_categories(CAT_PRESENT | CAT_WRITTEN |
						  CAT_SOFT_DIRTY |
						  CAT_WPALLOWED),
			 PG_PRESENT);
	/* PAGEMAP_SCAN has no exclusivity category: never PG_EXCL */
	assert_int_equal(classify_scan_categories(~0ULL) & PG_EXCL, 0);
	assert_int_equal(classify_scan_categories(~0ULL),
			 PG_PRESENT | PG_HUGE | PG_ZERO | PG_FILE);
}

static void fill(uint8_t *f, size_t n, uint8_t v)
{
	memset(f, v, n);
}

/* classify_chunk into a struct full of garbage, so every field is set. */
static struct chunk_class decide(const uint8_t *f, size_t n, bool pinned)
{
	struct chunk_class c;

	memset(&c, 0xa5, sizeof(c));
	classify_chunk(f, n, pinned, &c);
	return c;
}

static void test_chunk_movable(void **state)
{
	uint64_t w = PM_BIT_PRESENT | PM_BIT_EXCL | PM_PFN(42);
	uint8_t f[NPAGES];
	struct chunk_class c;
	size_t i;

	fill(f, NPAGES, PG_PRESENT | PG_EXCL);
	c = decide(f, NPAGES, false);
	assert_int_equal(c.populated, NPAGES);
	assert_true(c.movable);
	assert_false(c.thp);

	/* the same from pagemap words */
	for (i = 0; i < NPAGES; i++)
		f[i] = classify_pm_word(w + i);
	c = decide(f, NPAGES, false);
	assert_true(c.movable);
	assert_int_equal(c.populated, NPAGES);

	/* a small chunk at a region's edge */
	c = decide(f, 3, false);
	assert_true(c.movable);
	assert_int_equal(c.populated, 3);
	assert_false(c.thp);
}

static void test_chunk_cow_shared(void **state)
{
	uint8_t f[NPAGES];
	struct chunk_class c;

	/* present but not exclusive: COW-shared with a fork */
	fill(f, NPAGES, PG_PRESENT | PG_EXCL);
	f[300] = PG_PRESENT;
	c = decide(f, NPAGES, false);
	assert_false(c.movable);
	assert_int_equal(c.first_unmovable, 300);
	assert_int_equal(c.populated, NPAGES);

	/* the first one is reported */
	f[100] = PG_PRESENT;
	c = decide(f, NPAGES, false);
	assert_false(c.movable);
	assert_int_equal(c.first_unmovable, 100);

	/* at either end */
	fill(f, NPAGES, PG_PRESENT | PG_EXCL);
	f[0] = PG_PRESENT;
	c = decide(f, NPAGES, false);
	assert_false(c.movable);
	assert_int_equal(c.first_unmovable, 0);
	fill(f, NPAGES, PG_PRESENT | PG_EXCL);
	f[NPAGES - 1] = PG_PRESENT;
	c = decide(f, NPAGES, false);
	assert_false(c.movable);
	assert_int_equal(c.first_unmovable, NPAGES - 1);

	/* the same, from a pagemap word whose exclusive bit is clear */
	fill(f, NPAGES, PG_PRESENT | PG_EXCL);
	f[7] = classify_pm_word(PM_BIT_PRESENT | PM_PFN(99));
	c = decide(f, NPAGES, false);
	assert_false(c.movable);
	assert_int_equal(c.first_unmovable, 7);
}

static void test_chunk_swapped(void **state)
{
	uint8_t f[NPAGES];
	struct chunk_class c;

	fill(f, NPAGES, PG_PRESENT | PG_EXCL);
	f[9] = PG_SWAPPED;
	c = decide(f, NPAGES, false);
	assert_int_equal(c.populated, NPAGES);	/* swapped has data */
	assert_false(c.movable);
	assert_int_equal(c.first_unmovable, 9);

	/* only a present zero page gets the zero-page pass */
	fill(f, NPAGES, PG_PRESENT | PG_EXCL);
	f[12] = PG_SWAPPED | PG_ZERO;
	c = decide(f, NPAGES, false);
	assert_false(c.movable);
	assert_int_equal(c.first_unmovable, 12);

	/* all swapped: all populated, none movable */
	fill(f, NPAGES, PG_SWAPPED);
	c = decide(f, NPAGES, false);
	assert_int_equal(c.populated, NPAGES);
	assert_false(c.movable);
	assert_int_equal(c.first_unmovable, 0);
}

static void test_chunk_zero_page(void **state)
{
	uint8_t f[NPAGES];
	struct chunk_class c;

	/* the zero page holds no data: a hole, neither copied nor moved */
	fill(f, NPAGES, PG_PRESENT | PG_EXCL);
	f[10] = PG_ZERO | PG_PRESENT;
	f[11] = PG_ZERO | PG_PRESENT | PG_HUGE;
	c = decide(f, NPAGES, false);
	assert_true(c.movable);
	assert_int_equal(c.populated, NPAGES - 2);

	/* the huge zero page left by reads of untouched memory */
	fill(f, NPAGES, PG_ZERO | PG_PRESENT | PG_HUGE);
	c = decide(f, NPAGES, false);
	assert_true(c.movable);
	assert_int_equal(c.populated, 0);
	assert_false(c.thp);

	/* a shared page next to zero pages still blocks */
	fill(f, NPAGES, PG_ZERO | PG_PRESENT);
	f[20] = PG_PRESENT;
	c = decide(f, NPAGES, false);
	assert_false(c.movable);
	assert_int_equal(c.first_unmovable, 20);
}

static void test_chunk_file(void **state)
{
	uint8_t f[NPAGES];
	struct chunk_class c;

	/* file-backed or shared anon is not ours, even if exclusive */
	fill(f, NPAGES, PG_PRESENT | PG_EXCL);
	f[33] = PG_PRESENT | PG_EXCL | PG_FILE;
	c = decide(f, NPAGES, false);
	assert_false(c.movable);
	assert_int_equal(c.first_unmovable, 33);
}

static void test_chunk_pinned(void **state)
{
	uint8_t f[NPAGES];
	struct chunk_class c;

	fill(f, NPAGES, PG_PRESENT | PG_EXCL | PG_HUGE);
	c = decide(f, NPAGES, true);
	assert_false(c.movable);
	assert_int_equal(c.populated, NPAGES);
	assert_true(c.thp);		/* pinned changes nothing else */

	/* even with nothing in it */
	fill(f, NPAGES, 0);
	c = decide(f, NPAGES, true);
	assert_false(c.movable);
	assert_int_equal(c.populated, 0);
}

static void test_chunk_holes(void **state)
{
	uint8_t f[NPAGES];
	struct chunk_class c;
	size_t i;

	/* holes: neither populated nor a reason to refuse */
	fill(f, NPAGES, 0);
	c = decide(f, NPAGES, false);
	assert_int_equal(c.populated, 0);
	assert_true(c.movable);
	assert_false(c.thp);

	/* every third page present and exclusive */
	for (i = 0; i < NPAGES; i++)
		f[i] = i % 3 ? 0 : PG_PRESENT | PG_EXCL;
	c = decide(f, NPAGES, false);
	assert_int_equal(c.populated, (NPAGES + 2) / 3);
	assert_true(c.movable);

	/* stray flags on a hole do not make it data or block the chunk */
	f[1] = PG_EXCL;
	f[2] = PG_FILE;
	f[4] = PG_ZERO;		/* zero without present: a hole */
	c = decide(f, NPAGES, false);
	assert_int_equal(c.populated, (NPAGES + 2) / 3);
	assert_true(c.movable);

	/* an empty chunk */
	c = decide(f, 0, false);
	assert_int_equal(c.populated, 0);
	assert_true(c.movable);
	assert_false(c.thp);
}

static void test_chunk_thp(void **state)
{
	uint8_t f[NPAGES + 1];
	struct chunk_class c;

	fill(f, NPAGES + 1, PG_PRESENT | PG_EXCL | PG_HUGE);
	c = decide(f, NPAGES, false);
	assert_true(c.thp);
	assert_true(c.movable);

	/* one small page breaks it, wherever it is */
	f[0] = PG_PRESENT | PG_EXCL;
	assert_false(decide(f, NPAGES, false).thp);
	f[0] = PG_PRESENT | PG_EXCL | PG_HUGE;
	f[NPAGES - 1] = PG_PRESENT | PG_EXCL;
	assert_false(decide(f, NPAGES, false).thp);
	f[NPAGES - 1] = PG_PRESENT | PG_EXCL | PG_HUGE;

	/* only a full 2 MiB chunk can be a THP */
	assert_false(decide(f, NPAGES - 1, false).thp);
	assert_false(decide(f, NPAGES + 1, false).thp);
	assert_false(decide(f, 1, false).thp);

	/* a THP shared with a fork: huge, not movable */
	fill(f, NPAGES, PG_PRESENT | PG_HUGE);
	c = decide(f, NPAGES, false);
	assert_true(c.thp);
	assert_false(c.movable);
	assert_int_equal(c.first_unmovable, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pm_word),
		cmocka_unit_test(test_pm_word_never_huge_or_zero),
		cmocka_unit_test(test_scan_categories),
		cmocka_unit_test(test_chunk_movable),
		cmocka_unit_test(test_chunk_cow_shared),
		cmocka_unit_test(test_chunk_swapped),
		cmocka_unit_test(test_chunk_zero_page),
		cmocka_unit_test(test_chunk_file),
		cmocka_unit_test(test_chunk_pinned),
		cmocka_unit_test(test_chunk_holes),
		cmocka_unit_test(test_chunk_thp),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
