// SPDX-License-Identifier: MIT
/*
 * uffdmove-probe-neighbour: what a missing fault costs while the other
 * CPUs are busy, and whether that depends on the fault needing a new page
 * table: the measurement behind bench/results/summary.md "A busy
 * neighbour CPU".
 *
 * One thread touches one page in each 2 MiB chunk of a registered
 * MADV_NOHUGEPAGE range, one chunk every 500 us; a blocking handler thread
 * of the same process COPYs one 4 KiB page per fault (the classic handler,
 * b3). Four cases, interleaved, ROUNDS times:
 *   - the other CPUs idle, or each running a spinning child process (user
 *     mode only: no memory traffic, no system call, another mm);
 *   - each touch in a chunk nobody touched (the fault allocates the page
 *     table), or in a chunk whose page table an earlier fault made.
 * A first pass of each case is not reported: the host backs the new page
 * tables' memory lazily, and that first touch costs more than the rest.
 * Prints one JSON object.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/userfaultfd.h>

#include "probe.h"

#define CHUNK		(2UL << 20)
#define RANGE		(512UL << 20)
#define NCHUNKS		(RANGE / CHUNK)
#define ROUNDS		3
#define GAP_NS		500000L
#define SPINNERS_MAX	64

static int uffd;




/* One child per other CPU, spinning in user mode until killed. */
static int spinners_start(pid_t *pids)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	int i, n = cpus > 1 ? (int)(cpus - 1) : 0;

	if (n > SPINNERS_MAX)
		n = SPINNERS_MAX;
	for (i = 0; i < n; i++) {
		pids[i] = fork();
		if (pids[i] < 0)
			probe_die("fork");
		if (!pids[i]) {
			volatile uint64_t x = 0;

			for (;;)
				x = x * 6364136223846793005ULL + 1;
		}
	}
	usleep(20000);	/* let them reach their CPUs */
	return n;
}

static void spinners_stop(const pid_t *pids, int n)
{
	int i;

	for (i = 0; i < n; i++)
		kill(pids[i], SIGKILL);
	for (i = 0; i < n; i++)
		waitpid(pids[i], NULL, 0);
}


struct figure {
	double p50_us, p90_us;
};

/* Touch page 3 of each chunk of a fresh registered range; with
 * @tables, page 0 of each was touched first (its fault made the table). */
static struct figure touch(bool busy, bool tables)
{
	static uint64_t lat[NCHUNKS];
	struct uffdio_register reg = { .mode = UFFDIO_REGISTER_MODE_MISSING };
	struct timespec gap = { 0, GAP_NS };
	pid_t pids[SPINNERS_MAX];
	int nspin = 0;
	void *map;
	char *p;
	size_t i;

	map = mmap(NULL, RANGE + CHUNK, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (map == MAP_FAILED)
		probe_die("mmap");
	p = (char *)(((uintptr_t)map + CHUNK - 1) & ~(CHUNK - 1));
	if (madvise(p, RANGE, MADV_NOHUGEPAGE))
		probe_die("madvise");
	reg.range.start = (uintptr_t)p;
	reg.range.len = RANGE;
	if (ioctl(uffd, UFFDIO_REGISTER, &reg))
		probe_die("UFFDIO_REGISTER");
	if (tables)
		for (i = 0; i < NCHUNKS; i++)
			(void)*(volatile char *)(p + i * CHUNK);
	if (busy)
		nspin = spinners_start(pids);
	for (i = 0; i < NCHUNKS; i++) {
		volatile char *at = p + i * CHUNK + 3 * 4096;
		uint64_t t0;

		nanosleep(&gap, NULL);
		t0 = probe_now_ns();
		(void)*at;
		lat[i] = probe_now_ns() - t0;
	}
	spinners_stop(pids, nspin);
	ioctl(uffd, UFFDIO_UNREGISTER, &reg.range);
	munmap(map, RANGE + CHUNK);
	qsort(lat, NCHUNKS, sizeof(lat[0]), probe_cmp_u64);
	return (struct figure){ lat[NCHUNKS / 2] / 1e3,
				lat[NCHUNKS * 9 / 10] / 1e3 };
}

int main(void)
{
	struct uffdio_api api = { .api = UFFD_API };
	const char *sep = "";
	pthread_t handler;
	int r, c;

	uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
	if (uffd < 0)
		probe_die("userfaultfd");
	if (ioctl(uffd, UFFDIO_API, &api))
		probe_die("UFFDIO_API");
	if (pthread_create(&handler, NULL, probe_classic_handler, &uffd))
		probe_die("pthread_create");
	for (c = 0; c < 4; c++)		/* warm-up, see above */
		touch(c & 1, c & 2);
	printf("{\"probe\": \"neighbour\", \"cpus\": %ld, \"faults_per_case\": %lu, \"rounds\": [",
	       sysconf(_SC_NPROCESSORS_ONLN), NCHUNKS);
	for (r = 0; r < ROUNDS; r++) {
		for (c = 0; c < 4; c++) {
			bool busy = c & 1, tables = c & 2;
			struct figure f = touch(busy, tables);

			printf("%s{\"round\": %d, \"neighbours\": \"%s\", \"page_table\": \"%s\", \"touch_p50_us\": %.1f, \"touch_p90_us\": %.1f}",
			       sep, r, busy ? "spinning" : "idle",
			       tables ? "present" : "made by the fault",
			       f.p50_us, f.p90_us);
			sep = ", ";
		}
	}
	printf("]}\n");
	return 0;
}
