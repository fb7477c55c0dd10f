// SPDX-License-Identifier: MIT
#include <stdint.h>
#include <sys/mman.h>

#include "mem.h"
#include "util.h"

void *mem_map(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

void *mem_map_aligned(size_t len, size_t align)
{
	uintptr_t start, aligned;
	char *p = mem_map(len + align);

	if (!p)
		return NULL;
	start = (uintptr_t)p;
	aligned = ALIGN_UP(start, align);
	if (aligned > start)
		munmap(p, aligned - start);
	munmap((char *)aligned + len, start + align - aligned);
	return (void *)aligned;
}
