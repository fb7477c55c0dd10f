/* SPDX-License-Identifier: MIT */
/*
 * Page classification for the pin-safety layer: pure functions from pagemap
 * words or PAGEMAP_SCAN categories to per-page flags, and from those to a
 * decision per chunk.
 */
#ifndef UFFDMOVE_CLASSIFY_H
#define UFFDMOVE_CLASSIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PG_PRESENT	(1u << 0)
#define PG_SWAPPED	(1u << 1)
#define PG_EXCL		(1u << 2)	/* PM_MMAP_EXCLUSIVE */
#define PG_HUGE		(1u << 3)	/* mapped by a THP */
#define PG_ZERO		(1u << 4)	/* the shared zero page */
#define PG_FILE		(1u << 5)	/* file or shared anon: not ours */

/* Flags from one 8-byte pagemap entry. */
uint8_t classify_pm_word(uint64_t word);
/* Flags from PAGEMAP_SCAN categories (no exclusivity in there). */
uint8_t classify_scan_categories(uint64_t categories);

/* Mapped or swapped: something is there (the target's view of itself). */
static inline bool pg_present(uint8_t f)
{
	return f & (PG_PRESENT | PG_SWAPPED);
}

/* Has data to hand over. The zero page (also the huge zero page left by
 * reads of untouched memory) holds none: a hole, served by ZEROPAGE. */
static inline bool pg_populated(uint8_t f)
{
	return (f & PG_SWAPPED) || ((f & PG_PRESENT) && !(f & PG_ZERO));
}

/* May be moved: present, exclusively mapped (not COW-shared) and
 * anonymous; a swapped page would have to be read in first. */
/* Anonymous data one PMD-mapped huge page maps (PG_HUGE only comes from
 * PAGEMAP_SCAN). */
static inline bool pg_anon_huge(uint8_t f)
{
	return (f & (PG_PRESENT | PG_HUGE)) == (PG_PRESENT | PG_HUGE) &&
	       !(f & (PG_ZERO | PG_FILE));
}

static inline bool pg_movable(uint8_t f)
{
	return (f & PG_PRESENT) && (f & PG_EXCL) && !(f & PG_FILE);
}

struct chunk_class {
	size_t populated;	/* pages with data (present or swapped) */
	bool thp;		/* a full 2 MiB chunk of huge, populated pages */
	bool movable;		/* every populated page may be moved */
	size_t first_unmovable;	/* index, when !movable */
};

/*
 * Decide a chunk of @n pages. A page may be moved only when present,
 * exclusively mapped, anonymous and not swapped: a COW-shared page
 * (exclusive bit clear) belongs to another process too, and a swapped page
 * would have to be read in first. @pinned chunks are never movable.
 */
void classify_chunk(const uint8_t *flags, size_t n, bool pinned,
		    struct chunk_class *out);

#endif /* UFFDMOVE_CLASSIFY_H */
