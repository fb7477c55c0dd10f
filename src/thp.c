// SPDX-License-Identifier: MIT
/*
 * Huge pages back after the handoff: a region the new VMM mapped for THP
 * gets its 2 MiB chunks collapsed once DONE unregistered it (collapsing
 * during the handoff takes the mmap lock for writing and stalls faults),
 * in a thread of its own: the VMM does not wait for it.
 * The chunks are those the source reported complete, as one bit per huge
 * page: bounded by guest RAM however many reports arrive.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "compat.h"
#include "target.h"
#include "util.h"

#define THP_COLLAPSE_NICE	10

/* Is [addr, addr + len) mapped throughout, each VMA with @flag (" hg",
 * " nh") in its VmFlags? */
static bool range_advised(uint64_t addr, uint64_t len, const char *flag)
{
	char line[512];
	bool in = false, all = true;
	unsigned long lo, hi;
	uint64_t covered = addr, end = addr + len;
	FILE *f = fopen("/proc/self/smaps", "re");

	if (!f)
		return false;
	while (all && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2) {
			in = lo < end && hi > addr;
			if (in) {
				all = lo <= covered;
				covered = hi;
			}
			continue;
		}
		if (in && !strncmp(line, "VmFlags:", 8))
			all = strstr(line, flag) != NULL;
	}
	fclose(f);
	return all && covered >= end;
}

/* Does the VMA at @addr want THP? From its VmFlags and the THP mode. */
bool thp_vma_wants(uint64_t addr, uint32_t thp_mode)
{
	if (range_advised(addr, PAGE_SZ, " nh"))
		return false;
	if (range_advised(addr, PAGE_SZ, " hg"))
		return thp_mode != UFFDMOVE_THP_NEVER;
	return thp_mode == UFFDMOVE_THP_ALWAYS;
}

/*
 * A fault in an empty 2 MiB range of a MADV_HUGEPAGE VMA makes the kernel
 * allocate and clear a huge page before it asks userfaultfd, and free it
 * then (writes always; reads too where no zero page is mapped): measured
 * here, 30-250 us of each first fault in a chunk. So guest RAM may be
 * MADV_NOHUGEPAGE during the handoff: a fault then costs one small page.
 * But its page table stays, and a later PMD UFFDIO_MOVE into that chunk
 * goes page by page; a pull checks each PMD it moved (core_chunk_done()),
 * and advises MADV_HUGEPAGE again while faults come fast and are served a
 * chunk at a time (thp_advice_set()). Only regions advised MADV_HUGEPAGE
 * throughout (that advice restores what was), when the handoff's answer
 * came: the VMM may have changed its advice since uffdmove_target_new().
 */
void thp_advice_pause(struct uffdmove_target *t)
{
	const struct session_region *r;
	size_t i;

	for (i = 0; i < t->nregions; i++) {
		r = &t->regions[i];
		t->thp_pausable[i] = t->thp[i] &&
				     range_advised(r->addr, r->len, " hg");
	}
	thp_advice_set(t, false);
}

/* Faults cost a huge page (@huge) or a small one. No /proc reading here:
 * the fault thread calls it when the fault rate changes. */
void thp_advice_set(struct uffdmove_target *t, bool huge)
{
	const struct session_region *r;
	size_t i;

	for (i = 0; i < t->nregions; i++) {
		if (!t->thp_pausable[i] || t->thp_paused[i] == !huge)
			continue;
		r = &t->regions[i];
		if (!madvise((void *)(uintptr_t)r->addr, r->len,
			     huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE))
			t->thp_paused[i] = !huge;
	}
}

/* Once guest RAM is the VMM's again (DONE, abort, free), and before the
 * collapse, which MADV_NOHUGEPAGE would refuse. Not over a range no longer
 * MADV_NOHUGEPAGE throughout (unmapped, mapped again, or advised
 * MADV_HUGEPAGE by the VMM meanwhile: see uffdmove(7)). */
void thp_advice_restore(struct uffdmove_target *t)
{
	const struct session_region *r;
	size_t i;

	/* Half made (out of memory): nothing was paused. */
	if (!t->thp_paused || !t->thp_pausable)
		return;
	for (i = 0; i < t->nregions; i++) {
		t->thp_pausable[i] = false;
		if (!t->thp_paused[i])
			continue;
		r = &t->regions[i];
		if (range_advised(r->addr, r->len, " nh"))
			madvise((void *)(uintptr_t)r->addr, r->len,
				MADV_HUGEPAGE);
		t->thp_paused[i] = false;
	}
}

void thp_free(struct uffdmove_target *t)
{
	size_t i;

	free(t->thp_paused);
	free(t->thp_pausable);
	for (i = 0; t->thp_done && i < t->nregions; i++)
		free(t->thp_done[i]);
	free(t->thp_done);
}

int thp_alloc(struct uffdmove_target *t)
{
	size_t i, n;

	t->thp_done = calloc(t->nregions, sizeof(*t->thp_done));
	t->thp_paused = calloc(t->nregions, sizeof(*t->thp_paused));
	t->thp_pausable = calloc(t->nregions, sizeof(*t->thp_pausable));
	if (!t->thp_done || !t->thp_paused || !t->thp_pausable)
		return err_set(&t->err, ENOMEM, "out of memory");
	for (i = 0; i < t->nregions && t->opts.collapse_thp; i++) {
		if (!t->thp[i])
			continue;
		n = (t->regions[i].len / HPAGE_SZ + 64) / 64;
		t->thp_done[i] = calloc(n, sizeof(uint64_t));
		if (!t->thp_done[i])
			return err_set(&t->err, ENOMEM, "out of memory");
	}
	return 0;
}

/* The first huge page of region @i, and how many fit in it. */
static uint64_t thp_base(const struct uffdmove_target *t, size_t i,
			 size_t *n)
{
	const struct session_region *r = &t->regions[i];
	uint64_t base = ALIGN_UP(r->addr, HPAGE_SZ);

	*n = base < r->addr + r->len ?
	     (ALIGN_DOWN(r->addr + r->len, HPAGE_SZ) - base) / HPAGE_SZ : 0;
	return base;
}

/*
 * THP chunks the source reported complete, as one bit per huge page of a
 * region the source had THP in: bounded by guest RAM however many
 * RANGE_DONE messages arrive. Collapsing a sparse range would allocate
 * huge pages where the guest had holes: only those regions count.
 */
void thp_mark_done(struct uffdmove_target *t, uint64_t start,
			  uint64_t len)
{
	uint64_t end = start + len < start ? UINT64_MAX : start + len, a, base;
	size_t i, n;

	for (i = 0; i < t->nregions; i++) {
		if (!t->thp_done[i])
			continue;
		base = thp_base(t, i, &n);
		for (a = MAX(ALIGN_UP(start, HPAGE_SZ), base);
		     a < base + n * HPAGE_SZ && a + HPAGE_SZ <= end;
		     a += HPAGE_SZ)
			t->thp_done[i][(a - base) / HPAGE_SZ / 64] |=
				1ULL << ((a - base) / HPAGE_SZ % 64);
	}
}

/* MADV_COLLAPSE every marked huge page; what fails stays marked. How
 * many stay marked. */
static uint64_t collapse_marked(struct uffdmove_target *t)
{
	uint64_t base, *map, left = 0;
	size_t i, k, n;
	bool skip;

	for (i = 0; i < t->nregions; i++) {
		map = t->thp_done[i];
		base = thp_base(t, i, &n);
		for (k = 0; map && k < n && !load_acquire(&t->collapse_stop);
		     k++) {
			if (!(map[k / 64] >> (k % 64) & 1))
				continue;
			/* Collapsing would allocate what the guest freed,
			 * also after DONE (uffdmove_target_discard());
			 * the kernel refuses where the VMM said
			 * MADV_NOHUGEPAGE, and may find a page busy. */
			pthread_mutex_lock(&t->collapse_lock);
			skip = discards_any(&t->discards, t->regions, i,
					    base + k * HPAGE_SZ, HPAGE_SZ) ||
			       madvise((void *)(uintptr_t)(base + k * HPAGE_SZ),
				       HPAGE_SZ, MADV_COLLAPSE);
			pthread_mutex_unlock(&t->collapse_lock);
			if (skip) {
				left++;
				continue;
			}
			map[k / 64] &= ~(1ULL << (k % 64));
			count_add(&t->thp_collapsed, 1);
		}
	}
	return left;
}

/* Both tries over (not stopped half way): what is left stays small. */
static void collapse_all(struct uffdmove_target *t)
{
	uint64_t left;

	collapse_marked(t);
	left = collapse_marked(t);	/* one more try for what was busy */
	if (!load_acquire(&t->collapse_stop))
		store_release(&t->thp_uncollapsed, left);
	store_release(&t->collapse_running, false);
}


static void *collapser_main(void *arg)
{
	struct uffdmove_target *t = arg;

	/* Behind the guest's own threads: this is only a speed-up. */
	setpriority(PRIO_PROCESS, (id_t)gettid(), THP_COLLAPSE_NICE);
	collapse_all(t);
	return NULL;
}

/* Any huge page marked to collapse? Most handoffs within one process
 * move every THP chunk whole and need no thread (0.2 ms to make here). */
static bool collapse_wanted(const struct uffdmove_target *t)
{
	size_t i, w, n;

	for (i = 0; i < t->nregions; i++) {
		if (!t->thp_done[i])
			continue;
		thp_base(t, i, &n);
		for (w = 0; w < (n + 63) / 64; w++)
			if (t->thp_done[i][w])
				return true;
	}
	return false;
}

void thp_collapse_start(struct uffdmove_target *t)
{
	if (t->collapsing || !collapse_wanted(t))
		return;
	store_release(&t->collapse_running, true);
	t->collapsing = !pthread_create(&t->collapser, NULL, collapser_main,
					t);
	if (!t->collapsing)
		collapse_all(t);	/* no thread: do it here */
	else
		pthread_setname_np(t->collapser, "uffdmove-thp");
}

void thp_collapse_stop(struct uffdmove_target *t)
{
	if (!t->collapsing)
		return;
	store_release(&t->collapse_stop, true);
	pthread_join(t->collapser, NULL);
	t->collapsing = false;
	store_release(&t->collapse_running, false);
}
