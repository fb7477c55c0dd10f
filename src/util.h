/* SPDX-License-Identifier: MIT */
#ifndef UFFDMOVE_UTIL_H
#define UFFDMOVE_UTIL_H

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#define UFFDMOVE_EXPORT __attribute__((visibility("default")))

#define ARRAY_SIZE(a)	(sizeof(a) / sizeof((a)[0]))
#define MIN(a, b)	((a) < (b) ? (a) : (b))
#define MAX(a, b)	((a) > (b) ? (a) : (b))

#define PAGE_SZ		4096UL
#define HPAGE_SZ	(2UL << 20)

#define ALIGN_DOWN(x, a)	((x) & ~((uint64_t)(a) - 1))
#define ALIGN_UP(x, a)		ALIGN_DOWN((x) + (a) - 1, (a))
#define IS_ALIGNED(x, a)	(((x) & ((uint64_t)(a) - 1)) == 0)

/* Flags and counters shared between threads: acquire/release for what
 * orders other memory, relaxed for counters read only for statistics. */
#define load_acquire(p)		__atomic_load_n((p), __ATOMIC_ACQUIRE)
#define store_release(p, v)	__atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define count_add(p, v)		__atomic_fetch_add((p), (v), __ATOMIC_RELAXED)
#define count_sub(p, v)		__atomic_fetch_sub((p), (v), __ATOMIC_RELAXED)

/* Convert a libc "-1 and errno" result into 0/-errno, once, at the wrapper. */
static inline int neg_errno(int ret)
{
	return ret < 0 ? -errno : ret;
}

/* Copy a C string into a fixed field, truncating, always terminated. */
static inline void str_copy(char *dst, size_t cap, const char *src)
{
	size_t n = strnlen(src, cap - 1);

	memcpy(dst, src, n);
	dst[n] = '\0';
}

static inline uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

#endif /* UFFDMOVE_UTIL_H */
