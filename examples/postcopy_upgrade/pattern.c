// SPDX-License-Identifier: MIT
/*
 * What every guest page holds, and the checks against it: the guest
 * threads check as they go, and the new VMM checks every byte at the end.
 */
#include "toy.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/*
 * Page @p of guest RAM with version @v (never 0: version 0 is a page the
 * guest never wrote, which must read as zeros) holds words
 * base + i * K, base = mix(seed, p, v).
 */
#define WORDS		(PAGE / 8)
#define WORD_STEP	0xd1b54a32d192ed03ULL

uint64_t page_base(uint64_t seed, uint64_t p, uint32_t v)
{
	return mix(seed ^ mix(p << 20 ^ v));
}

void fill_page(void *page, uint64_t base)
{
	uint64_t *w = page;
	size_t i;

	for (i = 0; i < WORDS; i++)
		w[i] = base + i * WORD_STEP;
}

/* Index of the first wrong word of @page, or -1. */
long check_page(const void *page, uint64_t seed, uint64_t p, uint32_t v)
{
	const uint64_t *w = page;
	uint64_t base = v ? page_base(seed, p, v) : 0;
	uint64_t step = v ? WORD_STEP : 0;
	size_t i;

	for (i = 0; i < WORDS; i++)
		if (w[i] != base + i * step)
			return (long)i;
	return -1;
}

static bool page_is_zero(const void *page)
{
	const uint64_t *w = page;
	size_t i;

	for (i = 0; i < WORDS; i++)
		if (w[i])
			return false;
	return true;
}

void failure_set(struct failure *f, uintptr_t addr, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&f->lock);
	if (!f->set) {
		f->set = true;
		f->addr = addr;
		va_start(ap, fmt);
		vsnprintf(f->why, sizeof(f->why), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&f->lock);
}

/* Describe a wrong page for failure_set(). */
void report_bad_page(struct failure *f, const char *who,
		     const uint8_t *page, uint64_t p, long word,
		     uint64_t seed, uint32_t v)
{
	const uint64_t *w = (const uint64_t *)page;
	uint64_t want = v ? page_base(seed, p, v) + (uint64_t)word * WORD_STEP : 0;

	failure_set(f, (uintptr_t)&w[word],
		    "%s: guest page %" PRIu64 " (version %u) is wrong at %p: 0x%016" PRIx64 ", expected 0x%016" PRIx64 "%s",
		    who, p, v, (void *)&w[word], w[word], want,
		    v && page_is_zero(page) ?
		    " -- the page is all ZEROS: guest data was lost" : "");
}

/* Is a guest thread that was abandoned still on page @p? */
static bool page_busy(struct vm *vm, uint64_t p)
{
	unsigned int i;
	bool busy = false;

	for (i = 0; i < vm->started; i++)
		busy |= !LOAD(vm->agents[i].exited) &&
			LOAD(vm->agents[i].cur_page) == (int64_t)p;
	return busy;
}

/*
 * Check pages [@p, @p + @n); with a pagemap (@entries), skip those not in
 * memory and those a thread still works on. False on a wrong page, which
 * vm->fail then describes.
 */
static bool verify_chunk(struct vm *vm, const uint64_t *entries, uint64_t p,
			 uint64_t n, struct verify_result *res)
{
	uint8_t *page;
	uint64_t k;
	long bad;

	for (k = 0; k < n; k++) {
		if (entries && !(entries[k] >> 63)) {
			res->missing += PAGE;
			continue;
		}
		if (entries && page_busy(vm, p + k))
			continue;
		page = vm->ram + (p + k) * PAGE;
		bad = check_page(page, vm->seed, p + k, vm->ver[p + k]);
		if (bad >= 0) {
			report_bad_page(&vm->fail, "the final check", page,
					p + k, bad, vm->seed, vm->ver[p + k]);
			return false;
		}
		res->checked += PAGE;
	}
	return true;
}

/*
 * Check every byte of guest RAM against the version table; with
 * @only_present, only the pages that are in memory (the others never
 * arrived: touching them would block or raise SIGBUS), skipping the pages
 * abandoned threads were working on.
 */
int vm_verify(struct vm *vm, bool only_present, struct verify_result *res)
{
	uint64_t entries[512], p, n;
	int pm = -1, ret = 0;
	off_t off;

	memset(res, 0, sizeof(*res));
	if (only_present) {
		pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
		if (pm < 0)
			return -errno;
	}
	for (p = 0; p < vm->npages; p += n) {
		n = vm->npages - p < 512 ? vm->npages - p : 512;
		off = (off_t)((uintptr_t)(vm->ram + p * PAGE) / PAGE * 8);
		if (pm >= 0 &&
		    pread(pm, entries, n * 8, off) != (ssize_t)(n * 8)) {
			ret = -EIO;
			break;
		}
		if (!verify_chunk(vm, pm >= 0 ? entries : NULL, p, n, res))
			break;
	}
	if (pm >= 0)
		close(pm);
	res->ok = !ret && p >= vm->npages;
	return ret;
}
