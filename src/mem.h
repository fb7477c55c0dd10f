/* SPDX-License-Identifier: MIT */
/* Private anonymous mappings the library makes for itself. */
#ifndef UFFDMOVE_MEM_H
#define UFFDMOVE_MEM_H

#include <stddef.h>

/* @len bytes of private anonymous memory, or NULL with errno set. */
void *mem_map(size_t len);
/* The same, starting on an @align boundary (a power of two): a 2 MiB
 * aligned range is where a THP can form. */
void *mem_map_aligned(size_t len, size_t align);

#endif /* UFFDMOVE_MEM_H */
