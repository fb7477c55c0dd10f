// SPDX-License-Identifier: MIT
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "classify.h"
#include "compat.h"
#include "pagemap.h"
#include "util.h"

#define SCAN_VEC	64

static int scan(const struct pm *pm, uint64_t start, uint64_t end,
		struct page_region *vec, size_t cap, uint64_t *walk_end)
{
	struct pm_scan_arg arg = {
		.size = sizeof(arg),
		.start = start,
		.end = end,
		.vec = (uintptr_t)vec,
		.vec_len = cap,
		.category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
		.return_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED |
			       PAGE_IS_HUGE | PAGE_IS_PFNZERO | PAGE_IS_FILE,
	};
	int ret = ioctl(pm->fd, PAGEMAP_SCAN, &arg);

	if (ret < 0)
		return -errno;
	*walk_end = arg.walk_end;
	return ret;
}

int pm_mapped_end(const struct pm *pm, uint64_t start, uint64_t end,
		  uint64_t *mapped_end)
{
	struct page_region vec[SCAN_VEC];
	struct pm_scan_arg arg = {
		.size = sizeof(arg),
		.vec = (uintptr_t)vec,
		.vec_len = SCAN_VEC,
		/* No category asked for: every page a VMA covers, merged
		 * into runs (anonymous ones all alike); gaps end a run. */
		.return_mask = PAGE_IS_FILE,
	};
	int n, i;

	if (!pm->scan)
		return -EOPNOTSUPP;
	*mapped_end = start;
	while (*mapped_end < end) {
		arg.start = *mapped_end;
		arg.end = end;
		n = ioctl(pm->fd, PAGEMAP_SCAN, &arg);
		if (n < 0)
			return -errno;
		for (i = 0; i < n && vec[i].start == *mapped_end; i++)
			*mapped_end = vec[i].end;
		if (i < n || !n)
			break;
	}
	return 0;
}

bool pm_huge(const struct pm *pm, uint64_t addr, uint64_t len)
{
	struct page_region vec[1];
	struct pm_scan_arg arg = {
		.size = sizeof(arg),
		.start = addr,
		.end = addr + len,
		.vec = (uintptr_t)vec,
		.vec_len = 1,
		.category_mask = PAGE_IS_HUGE,
		.return_mask = PAGE_IS_HUGE,
	};

	if (!pm->scan)
		return true;
	return ioctl(pm->fd, PAGEMAP_SCAN, &arg) == 1 &&
	       vec[0].start == addr && vec[0].end == addr + len;
}

int pm_open(struct pm *pm, pid_t pid)
{
	struct page_region vec[1];
	uint64_t walk_end;
	long self = sysconf(_SC_PAGESIZE);
	char path[32];

	if (pid)
		snprintf(path, sizeof(path), "/proc/%d/pagemap", (int)pid);
	else
		snprintf(path, sizeof(path), "/proc/self/pagemap");
	pm->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (pm->fd < 0)
		return -errno;
	/* Any address will do to learn whether the ioctl exists (an
	 * unmapped one is an empty answer). */
	pm->scan = scan(pm, ALIGN_DOWN((uintptr_t)&self, PAGE_SZ),
			ALIGN_DOWN((uintptr_t)&self, PAGE_SZ) + PAGE_SZ,
			vec, 1, &walk_end) >= 0;
	return 0;
}

void pm_close(struct pm *pm)
{
	if (pm->fd >= 0)
		close(pm->fd);
	pm->fd = -1;
}

int pm_read(const struct pm *pm, uint64_t addr, size_t npages,
	    uint64_t *entries)
{
	size_t want = npages * sizeof(uint64_t), got = 0;
	off_t off = (off_t)(addr / PAGE_SZ * sizeof(uint64_t));
	ssize_t n;

	while (got < want) {
		n = pread(pm->fd, (char *)entries + got, want - got,
			  off + (off_t)got);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		got += (size_t)n;
	}
	return 0;
}

/* Flags of @npages at @addr; *@all is their flags when one run holds them
 * all, else 0. */
static int flags_from_scan(const struct pm *pm, uint64_t addr, size_t npages,
			   uint8_t *flags, uint8_t *all)
{
	struct page_region vec[SCAN_VEC];
	uint64_t pos = addr, end = addr + npages * PAGE_SZ, walk_end, p;
	int n, i;

	*all = 0;
	while (pos < end) {
		n = scan(pm, pos, end, vec, SCAN_VEC, &walk_end);
		if (n < 0)
			return n;
		if (n == 1 && vec[0].start == addr && vec[0].end == end) {
			*all = classify_scan_categories(vec[0].categories);
			memset(flags, *all, npages);
			return 0;
		}
		if (pos == addr)
			memset(flags, 0, npages);
		for (i = 0; i < n; i++) {
			uint8_t f = classify_scan_categories(vec[i].categories);

			for (p = vec[i].start; p < vec[i].end; p += PAGE_SZ)
				flags[(p - addr) / PAGE_SZ] = f;
		}
		if (walk_end <= pos)
			break;
		pos = walk_end;
	}
	return 0;
}

int pm_flags(const struct pm *pm, uint64_t addr, size_t npages,
	     bool need_excl, uint8_t *flags)
{
	uint64_t words[512], first = 0;
	bool one_block = ALIGN_DOWN(addr, HPAGE_SZ) ==
			 ALIGN_DOWN(addr + npages * PAGE_SZ - 1, HPAGE_SZ);
	size_t i, k, done;
	uint8_t all;
	int ret;

	if (pm->scan) {
		/*
		 * One huge entry that maps them all says for all: a THP chunk
		 * reads 8 bytes, not 4 KiB (bench push-thp-1G). Read before
		 * the scan that says so: a split and a zap in between leave
		 * the scan seeing no huge page, and the 4 KiB read follows.
		 */
		if (need_excl && one_block) {
			ret = pm_read(pm, addr, 1, &first);
			if (ret)
				return ret;
		}
		ret = flags_from_scan(pm, addr, npages, flags, &all);
		if (ret || !need_excl)
			return ret;
		if ((all & PG_HUGE) && one_block &&
		    (classify_pm_word(first) & PG_PRESENT)) {
			memset(flags, classify_pm_word(first) |
			       (all & (PG_HUGE | PG_ZERO)), npages);
			return 0;
		}
	}
	for (done = 0; done < npages; done += k) {
		k = MIN(npages - done, ARRAY_SIZE(words));
		ret = pm_read(pm, addr + done * PAGE_SZ, k, words);
		if (ret)
			return ret;
		for (i = 0; i < k; i++) {
			uint8_t huge = pm->scan ?
				       flags[done + i] & (PG_HUGE | PG_ZERO) : 0;

			flags[done + i] = classify_pm_word(words[i]) | huge;
		}
	}
	return 0;
}

#define COUNT_VEC	256

typedef bool (*pg_keep)(uint8_t flags);
typedef void (*run_fn)(void *arg, uint64_t start, uint64_t end,
		       uint8_t flags);

/* Runs of [addr, addr + len) that @keep: one PAGEMAP_SCAN pass. */
static int scan_runs(const struct pm *pm, uint64_t addr, uint64_t len,
		     pg_keep keep, run_fn fn, void *arg)
{
	struct page_region vec[COUNT_VEC];
	uint64_t pos = addr, end = addr + len, walk_end;
	int n, i;

	while (pos < end) {
		n = scan(pm, pos, end, vec, COUNT_VEC, &walk_end);
		if (n < 0)
			return n;
		for (i = 0; i < n; i++) {
			uint8_t f = classify_scan_categories(vec[i].categories);

			if (keep(f))
				fn(arg, vec[i].start, vec[i].end, f);
		}
		if (walk_end <= pos)
			break;
		pos = walk_end;
	}
	return 0;
}

static int walk_runs(const struct pm *pm, uint64_t addr, uint64_t len,
		     pg_keep keep, run_fn fn, void *arg)
{
	uint8_t flags[512];
	size_t i, k;
	uint64_t a;
	int ret;

	if (pm->scan)
		return scan_runs(pm, addr, len, keep, fn, arg);
	for (a = addr; a < addr + len; a += k * PAGE_SZ) {
		k = MIN((addr + len - a) / PAGE_SZ, ARRAY_SIZE(flags));
		ret = pm_flags(pm, a, k, false, flags);
		if (ret)
			return ret;
		for (i = 0; i < k; i++)
			if (keep(flags[i]))
				fn(arg, a + i * PAGE_SZ, a + (i + 1) * PAGE_SZ,
				   flags[i]);
	}
	return 0;
}

int pm_scan_populated(const struct pm *pm, uint64_t addr, uint64_t len,
		      run_fn fn, void *arg)
{
	return walk_runs(pm, addr, len, pg_populated, fn, arg);
}

int pm_scan_huge(const struct pm *pm, uint64_t addr, uint64_t len,
		 run_fn fn, void *arg)
{
	if (!pm->scan)
		return -EOPNOTSUPP;
	return scan_runs(pm, addr, len, pg_anon_huge, fn, arg);
}

static void add_bytes(void *arg, uint64_t start, uint64_t end,
		      uint8_t flags)
{
	(void)flags;
	*(uint64_t *)arg += end - start;
}

int pm_count_populated(const struct pm *pm, uint64_t addr, uint64_t len,
		       uint64_t *bytes)
{
	*bytes = 0;
	return walk_runs(pm, addr, len, pg_populated, add_bytes, bytes);
}

int pm_count_present(const struct pm *pm, uint64_t addr, uint64_t len,
		     uint64_t *bytes)
{
	*bytes = 0;
	return walk_runs(pm, addr, len, pg_present, add_bytes, bytes);
}
