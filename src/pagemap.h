/* SPDX-License-Identifier: MIT */
/*
 * Reading page tables (ours, or the source's for the pull engine): PAGEMAP_SCAN where the kernel has
 * it (one ioctl per range), else 8-byte /proc/self/pagemap entries.
 * Exclusivity (PM_MMAP_EXCLUSIVE) exists only in the 8-byte entries.
 */
#ifndef UFFDMOVE_PAGEMAP_H
#define UFFDMOVE_PAGEMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct pm {
	int fd;
	bool scan;	/* PAGEMAP_SCAN works */
};

/* The page tables of process @pid (0: this one). Another process's need
 * ptrace read access to it; pid reuse is the caller's to rule out. */
int pm_open(struct pm *pm, pid_t pid);
void pm_close(struct pm *pm);
/* 8-byte entries of @npages pages from @addr. */
int pm_read(const struct pm *pm, uint64_t addr, size_t npages,
	    uint64_t *entries);
/*
 * Page flags (classify.h PG_*) of @npages pages from @addr, one byte each:
 * from PAGEMAP_SCAN, plus the 8-byte entries when @need_excl (only they
 * carry exclusivity).
 */
int pm_flags(const struct pm *pm, uint64_t addr, size_t npages,
	     bool need_excl, uint8_t *flags);
/*
 * Bytes of [@addr, @addr + @len) that hold data (classify.h
 * pg_populated(): present but not the zero page, or swapped), in large
 * PAGEMAP_SCAN batches where the kernel has it.
 */
int pm_count_populated(const struct pm *pm, uint64_t addr, uint64_t len,
		       uint64_t *bytes);
/* Bytes of it mapped at all: data, the zero page, or swapped. */
int pm_count_present(const struct pm *pm, uint64_t addr, uint64_t len,
		     uint64_t *bytes);
/* The same, calling @fn for each populated run [start, end) found, with
 * the flags all its pages share (PG_HUGE only where PAGEMAP_SCAN is). */
int pm_scan_populated(const struct pm *pm, uint64_t addr, uint64_t len,
		      void (*fn)(void *arg, uint64_t start, uint64_t end,
				 uint8_t flags),
		      void *arg);
/* The same for runs of anonymous data that huge pages map, PAGEMAP_SCAN
 * only (-EOPNOTSUPP without it). */
int pm_scan_huge(const struct pm *pm, uint64_t addr, uint64_t len,
		 void (*fn)(void *arg, uint64_t start, uint64_t end,
			    uint8_t flags),
		 void *arg);
/*
 * Where the mapped stretch that begins at @start ends (at most @end;
 * @start itself if nothing is mapped there), without touching a page:
 * PAGEMAP_SCAN only (-EOPNOTSUPP without it). A read would map memory on
 * a kernel without the shared zero page.
 */
int pm_mapped_end(const struct pm *pm, uint64_t start, uint64_t end,
		  uint64_t *mapped_end);
/* Is [@addr, @addr + @len) mapped by huge pages throughout? True when the
 * kernel cannot tell (no PAGEMAP_SCAN). */
bool pm_huge(const struct pm *pm, uint64_t addr, uint64_t len);

#endif /* UFFDMOVE_PAGEMAP_H */
