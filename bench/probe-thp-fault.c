// SPDX-License-Identifier: MIT
/*
 * uffdmove-probe-thp-fault: what a missing fault costs in an empty 2 MiB
 * range of a MADV_HUGEPAGE mapping against a MADV_NOHUGEPAGE one, and
 * whether a PMD UFFDIO_MOVE into a MADV_NOHUGEPAGE range stays huge: the
 * measurements behind doc/design.md "No huge page before a fault".
 *
 * One thread touches the fourth page of each 2 MiB chunk of a registered
 * range (reads, then writes into a fresh range), one chunk every 500 us;
 * a blocking handler thread COPYs one 4 KiB page per fault. The two
 * advices alternate, same process, ROUNDS times. Prints one JSON object.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <linux/userfaultfd.h>

#include "probe.h"

#include "compat.h"

#define CHUNK		(2UL << 20)
#define RANGE		(256UL << 20)
#define NCHUNKS		(RANGE / CHUNK)
#define ROUNDS		3
#define GAP_NS		500000L

static int uffd;




/* A 2 MiB aligned range of @len with @advice, registered for MISSING. */
static char *map_registered(size_t len, int advice, void **map)
{
	struct uffdio_register reg = { .mode = UFFDIO_REGISTER_MODE_MISSING };
	char *p;

	*map = mmap(NULL, len + CHUNK, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (*map == MAP_FAILED)
		probe_die("mmap");
	p = (char *)(((uintptr_t)*map + CHUNK - 1) & ~(CHUNK - 1));
	if (madvise(p, len, advice))
		probe_die("madvise");
	reg.range.start = (uintptr_t)p;
	reg.range.len = len;
	if (ioctl(uffd, UFFDIO_REGISTER, &reg))
		probe_die("UFFDIO_REGISTER");
	return p;
}

static void unmap_registered(char *p, size_t len, void *map)
{
	struct uffdio_range range = { (uintptr_t)p, len };

	ioctl(uffd, UFFDIO_UNREGISTER, &range);
	munmap(map, len + CHUNK);
}


/* Median touch time (ns) of one fault per chunk of a fresh range. */
static uint64_t touch_p50(int advice, bool write)
{
	static uint64_t lat[NCHUNKS];
	struct timespec gap = { 0, GAP_NS };
	void *map;
	char *p = map_registered(RANGE, advice, &map);
	size_t i;

	for (i = 0; i < NCHUNKS; i++) {
		volatile char *at = p + i * CHUNK + 3 * 4096;
		uint64_t t0;

		nanosleep(&gap, NULL);
		t0 = probe_now_ns();
		if (write)
			*at = 1;
		else
			(void)*at;
		lat[i] = probe_now_ns() - t0;
	}
	unmap_registered(p, RANGE, map);
	qsort(lat, NCHUNKS, sizeof(lat[0]), probe_cmp_u64);
	return lat[NCHUNKS / 2];
}

/* AnonHugePages (kB) of the VMA holding @addr. */
static long anon_huge_kb(const void *addr)
{
	unsigned long lo, hi;
	char line[256];
	bool in = false;
	long kb = -1;
	FILE *f = fopen("/proc/self/smaps", "re");

	if (!f)
		probe_die("/proc/self/smaps");
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 &&
		    strchr(line, '-') < strchr(line, ' ')) {
			in = (uintptr_t)addr >= lo && (uintptr_t)addr < hi;
			continue;
		}
		if (in && sscanf(line, "AnonHugePages: %ld kB", &kb) == 1)
			break;
	}
	fclose(f);
	return kb;
}

/* Move one fresh THP into a MADV_NOHUGEPAGE registered range. */
static long moved_pmd_huge_kb(void)
{
	void *smap, *dmap;
	char *src = map_registered(CHUNK, MADV_HUGEPAGE, &smap);
	char *dst = map_registered(CHUNK, MADV_NOHUGEPAGE, &dmap);
	struct uffdio_move mv = { .dst = (uintptr_t)dst,
				  .src = (uintptr_t)src, .len = CHUNK };
	struct uffdio_range range = { (uintptr_t)src, CHUNK };
	long kb;

	/* The source needs no uffd: its data is written by us. */
	ioctl(uffd, UFFDIO_UNREGISTER, &range);
	memset(src, 0x77, CHUNK);
	if (ioctl(uffd, UFFDIO_MOVE, &mv))
		probe_die("UFFDIO_MOVE");
	kb = anon_huge_kb(dst);
	unmap_registered(dst, CHUNK, dmap);
	munmap(smap, 2 * CHUNK);
	return kb;
}

int main(void)
{
	struct uffdio_api api = { .api = UFFD_API,
				  .features = UFFD_FEATURE_MOVE };
	const char *sep = "";
	pthread_t handler;
	int r, w;

	uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
	if (uffd < 0)
		probe_die("userfaultfd");
	if (ioctl(uffd, UFFDIO_API, &api))
		probe_die("UFFDIO_API (UFFD_FEATURE_MOVE)");
	if (pthread_create(&handler, NULL, probe_classic_handler, &uffd))
		probe_die("pthread_create");
	printf("{\"probe\": \"thp-fault\", \"chunks_per_round\": %lu, \"rounds\": [",
	       NCHUNKS);
	for (r = 0; r < ROUNDS; r++) {
		for (w = 0; w < 2; w++) {
			uint64_t huge = touch_p50(MADV_HUGEPAGE, w);
			uint64_t small = touch_p50(MADV_NOHUGEPAGE, w);

			printf("%s{\"access\": \"%s\", \"touch_p50_us_hugepage\": %.1f, \"touch_p50_us_nohugepage\": %.1f}",
			       sep, w ? "write" : "read", huge / 1e3,
			       small / 1e3);
			sep = ", ";
		}
	}
	printf("], \"pmd_move_into_nohugepage_anon_huge_kb\": %ld}\n",
	       moved_pmd_huge_kb());
	return 0;
}
