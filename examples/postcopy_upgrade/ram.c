// SPDX-License-Identifier: MIT
/*
 * Guest RAM as host memory: the mapping every VMM makes for it, the
 * library's handle on it, and how much of it is resident, and in huge
 * pages, as smaps counts it.
 */
#include "toy.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#define REGION_NAME	"guest-ram"

/* Guest RAM: private anonymous, 2 MiB aligned, THP as asked. */
uint8_t *map_guest_ram(uint64_t size, bool thp)
{
	size_t len = size + HPAGE;
	uint8_t *p, *a;

	p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	a = (uint8_t *)(((uintptr_t)p + HPAGE - 1) & ~(HPAGE - 1));
	if (a > p)
		munmap(p, (size_t)(a - p));
	if (a + size < p + len)
		munmap(a + size, (size_t)(p + len - (a + size)));
	if (madvise(a, size, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE) &&
	    thp) {
		munmap(a, size);
		errno = EOPNOTSUPP;
		return NULL;
	}
	/* Guest RAM must never be COW-shared with a child: the kernel then
	 * refuses to move it (EBUSY) until the guest writes each page again,
	 * and the guest pays for COW faults. The new VMM is exec'ed and
	 * does not need it. */
	madvise(a, size, MADV_DONTFORK);
	return a;
}

/*
 * The library's handle on guest RAM at @ram: the source's (@s) or, with
 * @t, the target's. One place names the region, so both ends match.
 */
int handoff_end_new(const struct options *o, uint8_t *ram,
		    struct uffdmove_source **s, struct uffdmove_target **t)
{
	struct uffdmove_region region = { REGION_NAME, ram, o->mem };
	struct uffdmove_source_opts sopts;
	struct uffdmove_target_opts topts;

	if (t) {
		uffdmove_target_opts_init(&topts);
		topts.on_source_death = o->on_death;
		topts.pull = o->pull;
		/* The new VMM pulls with at most 16 threads. */
		topts.threads = o->threads < 16 ? o->threads : 16;
		topts.fault_policy = o->fault_policy;
		return uffdmove_target_new(t, &region, 1, &topts);
	}
	uffdmove_source_opts_init(&sopts);
	sopts.mode = o->mode;
	sopts.pull = o->pull;
	if (o->threads)
		sopts.threads = o->threads;
	return uffdmove_source_new(s, &region, 1, &sopts);
}

/* Rss and AnonHugePages of the VMAs in [addr, addr+len), from smaps. */
int range_usage(const void *addr, uint64_t len, uint64_t *rss,
		uint64_t *huge)
{
	uintptr_t lo = (uintptr_t)addr, hi = lo + len;
	unsigned long long start, end, kb;
	bool in = false;
	char line[512];
	FILE *f = fopen("/proc/self/smaps", "re");

	*rss = *huge = 0;
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%llx-%llx ", &start, &end) == 2 &&
		    strchr(line, '-') < strchr(line, ' ')) {
			in = start < hi && end > lo;
			continue;
		}
		if (!in)
			continue;
		if (sscanf(line, "Rss: %llu kB", &kb) == 1)
			*rss += kb * 1024;
		else if (sscanf(line, "AnonHugePages: %llu kB", &kb) == 1)
			*huge += kb * 1024;
	}
	fclose(f);
	return 0;
}
