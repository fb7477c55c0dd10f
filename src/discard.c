// SPDX-License-Identifier: MIT
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "discard.h"
#include "uffd.h"
#include "util.h"

#define EAGAIN_PAUSE_US	20

int discards_init(struct discards *d, size_t nregions)
{
	memset(d, 0, sizeof(*d));
	d->pages = calloc(nregions, sizeof(*d->pages));
	if (!d->pages)
		return -ENOMEM;
	d->nregions = nregions;
	return 0;
}

void discards_fini(struct discards *d)
{
	size_t i;

	for (i = 0; d->pages && i < d->nregions; i++)
		free(d->pages[i]);
	free(d->pages);
	d->pages = NULL;
}

static const uint8_t zeros[PAGE_SZ] __attribute__((aligned(PAGE_SZ)));

/*
 * ZEROPAGE refuses a poisoned page (the source died under the POISON
 * policy) as if it were present, and reading it raises SIGBUS; COPY
 * replaces the marker. A page really present refuses both.
 */
static int unpoison(int uffd, uint64_t a)
{
	size_t done;
	int ret = uffd_copy(uffd, a, zeros, PAGE_SZ, 0, &done);

	return ret == -EEXIST ? 0 : ret;
}

/* Map the zero page wherever [a, end) is missing, or poisoned; present
 * pages stay. */
static int zero_missing(int uffd, uint64_t a, uint64_t end, int timeout_ms)
{
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000ULL;
	bool one = false;	/* across two mappings: page by page */
	size_t done;
	int ret;

	while (a < end) {
		ret = uffd_zeropage(uffd, a, one ? PAGE_SZ : end - a, &done);
		a += ALIGN_DOWN(done, PAGE_SZ);
		if (!ret) {
			one = false;
			continue;
		}
		if (ret == -ENOENT && !one) {
			one = true;
			continue;
		}
		if (ret == -EEXIST) {		/* there already: zeroed next */
			ret = unpoison(uffd, a);
			if (ret && ret != -EAGAIN)
				return ret;
			if (!ret)
				a += PAGE_SZ;
			continue;
		}
		if (ret != -EAGAIN)
			return ret;
		if (done)
			continue;
		/* An event is pending; its reader (the source, or the
		 * keeper once the source is gone) lifts it soon. */
		if (now_ns() > deadline)
			return -ETIMEDOUT;
		usleep(EAGAIN_PAUSE_US);
	}
	return 0;
}

static bool page_is_zero(const uint64_t *p)
{
	size_t i;

	for (i = 0; i < PAGE_SZ / sizeof(*p); i++)
		if (p[i])
			return false;
	return true;
}

static int pages_of(struct discards *d, const struct session_region *reg,
		    size_t r)
{
	if (!d->pages[r])
		d->pages[r] = calloc((reg->len / PAGE_SZ + 63) / 64,
				     sizeof(uint64_t));
	return d->pages[r] ? 0 : -ENOMEM;
}

int discards_note(struct discards *d, const struct session_region *regions,
		  size_t r, uint64_t addr, uint64_t len)
{
	size_t pg = (addr - regions[r].addr) / PAGE_SZ, end = pg + len / PAGE_SZ;

	if (pages_of(d, &regions[r], r))
		return -ENOMEM;
	for (; pg < end; pg++)
		d->pages[r][pg / 64] |= 1ULL << (pg % 64);
	return 0;
}

int discards_fence(struct discards *d, int uffd,
		   const struct session_region *regions, size_t r,
		   uint64_t addr, uint64_t len, int timeout_ms)
{
	const struct session_region *reg = &regions[r];
	size_t pg;
	uint64_t a;
	int ret;

	if (pages_of(d, reg, r))
		return -ENOMEM;
	ret = zero_missing(uffd, addr, addr + len, timeout_ms);
	if (ret)
		return ret;
	/* Every page is present now, so nothing can be filled in: what
	 * arrived before is cleared here. Reading a zero page is free. */
	for (a = addr; a < addr + len; a += PAGE_SZ) {
		uint64_t *p = (uint64_t *)(uintptr_t)a;

		if (!page_is_zero(p))
			memset(p, 0, PAGE_SZ);
		pg = (a - reg->addr) / PAGE_SZ;
		d->pages[r][pg / 64] |= 1ULL << (pg % 64);
	}
	d->bytes += len;
	return 0;
}

bool discards_any(const struct discards *d,
		  const struct session_region *regions, size_t r,
		  uint64_t addr, uint64_t len)
{
	size_t pg = (addr - regions[r].addr) / PAGE_SZ, end = pg + len / PAGE_SZ;

	for (; d->pages[r] && pg < end; pg++)
		if (d->pages[r][pg / 64] >> (pg % 64) & 1)
			return true;
	return false;
}
