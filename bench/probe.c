// SPDX-License-Identifier: MIT
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>
#include <linux/userfaultfd.h>

#include "probe.h"

uint64_t probe_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

void probe_die(const char *what)
{
	fprintf(stderr, "%s: %s: %s\n", program_invocation_short_name, what,
		strerror(errno));
	exit(1);
}

void *probe_classic_handler(void *uffd)
{
	static char page[4096] __attribute__((aligned(4096)));
	int fd = *(const int *)uffd;
	struct uffd_msg msg;

	memset(page, 0x5a, sizeof(page));
	for (;;) {
		struct uffdio_copy copy = { .src = (uintptr_t)page,
					    .len = sizeof(page) };

		if (read(fd, &msg, sizeof(msg)) != sizeof(msg))
			continue;
		copy.dst = msg.arg.pagefault.address & ~4095ULL;
		ioctl(fd, UFFDIO_COPY, &copy);
	}
	return NULL;
}

int probe_cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}
