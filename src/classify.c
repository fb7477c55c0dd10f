// SPDX-License-Identifier: MIT
#include "classify.h"
#include "compat.h"
#include "util.h"

uint8_t classify_pm_word(uint64_t word)
{
	uint8_t f = 0;

	if (word & PM_PRESENT)
		f |= PG_PRESENT;
	else if (word & PM_SWAPPED)
		f |= PG_SWAPPED;	/* also poison markers: treated as data */
	if ((word & PM_PRESENT) && (word & PM_MMAP_EXCLUSIVE))
		f |= PG_EXCL;
	if (word & PM_FILE_SHARED)
		f |= PG_FILE;
	return f;
}

uint8_t classify_scan_categories(uint64_t cat)
{
	uint8_t f = 0;

	if (cat & PAGE_IS_PRESENT)
		f |= PG_PRESENT;
	else if (cat & PAGE_IS_SWAPPED)
		f |= PG_SWAPPED;
	if (cat & PAGE_IS_HUGE)
		f |= PG_HUGE;
	if (cat & PAGE_IS_PFNZERO)
		f |= PG_ZERO;
	if (cat & PAGE_IS_FILE)
		f |= PG_FILE;
	return f;
}

void classify_chunk(const uint8_t *flags, size_t n, bool pinned,
		    struct chunk_class *out)
{
	size_t i, huge = 0;

	out->populated = 0;
	out->movable = !pinned;
	out->first_unmovable = 0;
	for (i = 0; i < n; i++) {
		uint8_t f = flags[i];

		if (f & PG_HUGE)
			huge++;
		if (!pg_populated(f))
			continue;
		out->populated++;
		if (out->movable && !pg_movable(f)) {
			out->movable = false;
			out->first_unmovable = i;
		}
	}
	out->thp = n == HPAGE_SZ / PAGE_SZ && huge == n && out->populated == n;
}
