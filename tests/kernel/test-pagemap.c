// SPDX-License-Identifier: MIT
/*
 * src/pagemap.c against the running kernel: the flags pm_flags() gives a
 * range must be those of its 8-byte entries, page by page, whichever way
 * it reads them (a whole-THP range reads one entry for all 512).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "classify.h"
#include "harness.h"
#include "pagemap.h"

#define LEN	(8UL << 20)
#define HUGE	(2UL << 20)
#define PAGES	(HUGE / T_PAGE)

/* pm_flags() over each 2 MiB of @p, against its entries read one by one
 * after it (nothing else runs that could change them in between). */
static int flags_match_entries(const struct pm *pm, const uint8_t *p,
			       uint8_t want_set, uint8_t want_clear)
{
	static uint64_t words[PAGES];
	uint8_t flags[PAGES], scan_bits;
	size_t off, i;

	for (off = 0; off < LEN; off += HUGE) {
		uint64_t a = (uintptr_t)p + off;

		T_CHECK(pm_flags(pm, a, PAGES, true, flags) == 0, "pm_flags");
		T_CHECK(pm_read(pm, a, PAGES, words) == 0, "pm_read");
		for (i = 0; i < PAGES; i++) {
			scan_bits = pm->scan ? flags[i] & (PG_HUGE | PG_ZERO) : 0;
			T_CHECK(flags[i] == (classify_pm_word(words[i]) |
					     scan_bits),
				"page %zu of +%zu MiB: flags 0x%x, entry says 0x%x",
				i, off >> 20, flags[i],
				classify_pm_word(words[i]) | scan_bits);
			T_CHECK((flags[i] & want_set) == want_set &&
				!(flags[i] & want_clear),
				"page %zu of +%zu MiB: flags 0x%x, want 0x%x set, 0x%x clear",
				i, off >> 20, flags[i], want_set, want_clear);
		}
	}
	return T_PASS;
}

static int thp_source(struct t_ctx *ctx, struct pm *pm, uint8_t **p)
{
	T_CHECK(pm_open(pm, 0) == 0, "pm_open");
	*p = t_map(LEN, true);
	memset(*p, 0x5a, LEN);
	if (t_anon_huge_bytes_range(0, *p, LEN) < LEN) {
		t_unmap(*p, LEN);
		pm_close(pm);
		return t_case_skip(ctx, "no THP for all of 8 MiB (THP disabled?)");
	}
	return T_PASS;
}

/* Whole THPs of ours: present, huge, exclusive. */
static int thp_exclusive(struct t_ctx *ctx)
{
	struct pm pm;
	uint8_t *p;
	int ret = thp_source(ctx, &pm, &p);

	if (ret != T_PASS)
		return ret;
	ret = flags_match_entries(&pm, p, PG_PRESENT | PG_EXCL |
				  (pm.scan ? PG_HUGE : 0), PG_ZERO);
	t_unmap(p, LEN);
	pm_close(&pm);
	return ret;
}

/* Shared with a forked child (copy-on-write): never exclusive, which is
 * what keeps such a THP from being moved; exclusive again once it exits. */
static int thp_shared_with_child(struct t_ctx *ctx)
{
	struct pm pm;
	int go[2], status;
	uint8_t *p;
	pid_t child;
	char c = 0;
	int ret = thp_source(ctx, &pm, &p);

	if (ret != T_PASS)
		return ret;
	if (pipe(go))
		t_die("pipe: %s", strerror(errno));
	child = fork();
	if (child < 0)
		t_die("fork: %s", strerror(errno));
	if (!child) {
		close(go[1]);
		_exit(read(go[0], &c, 1) < 0);
	}
	close(go[0]);
	ret = flags_match_entries(&pm, p, PG_PRESENT, PG_EXCL);
	if (write(go[1], &c, 1) != 1)
		t_die("write: %s", strerror(errno));
	close(go[1]);
	waitpid(child, &status, 0);
	if (ret == T_PASS)
		ret = flags_match_entries(&pm, p, PG_PRESENT | PG_EXCL, 0);
	t_unmap(p, LEN);
	pm_close(&pm);
	return ret;
}

/* Page-table entries over large folios (an mprotect() of one page splits
 * each PMD): read entry by entry, still exclusive. */
static int thp_split(struct t_ctx *ctx)
{
	struct pm pm;
	size_t off;
	uint8_t *p;
	int ret = thp_source(ctx, &pm, &p);

	if (ret != T_PASS)
		return ret;
	for (off = 0; off < LEN; off += HUGE)
		if (mprotect(p + off + 7 * T_PAGE, T_PAGE, PROT_READ) ||
		    mprotect(p + off + 7 * T_PAGE, T_PAGE,
			     PROT_READ | PROT_WRITE))
			t_die("mprotect: %s", strerror(errno));
	ret = flags_match_entries(&pm, p, PG_PRESENT | PG_EXCL, PG_HUGE);
	t_unmap(p, LEN);
	pm_close(&pm);
	return ret;
}

struct zapper {
	uint8_t *page;
	unsigned int spin;
	int go, done;		/* atomic */
};

static void *zap_main(void *arg)
{
	struct zapper *z = arg;
	volatile unsigned int i;

	while (!__atomic_load_n(&z->go, __ATOMIC_ACQUIRE))
		;
	for (i = 0; i < z->spin; i++)
		;
	if (madvise(z->page, T_PAGE, MADV_DONTNEED))
		t_die("madvise: %s", strerror(errno));
	__atomic_store_n(&z->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/*
 * Page 0 of a THP zapped (the PMD split) while the flags are read: pages
 * 1-511 hold data throughout, and every read must say so. A read that
 * took the huge page's word after the zap gave all 512 page 0's flags
 * (1299 of 3000 rounds, an attacker helper's program).
 */
static int thp_zapped_while_read(struct t_ctx *ctx)
{
	uint8_t flags[PAGES], *p;
	struct zapper z;
	struct pm pm;
	pthread_t tid;
	int round, rounds = 0, i;

	T_CHECK(pm_open(&pm, 0) == 0, "pm_open");
	p = t_map(HUGE, true);
	for (round = 0; round < 1000; round++) {
		madvise(p, HUGE, MADV_DONTNEED);
		memset(p, 0x5a, HUGE);
		if (!pm_huge(&pm, (uintptr_t)p, HUGE))
			continue;
		rounds++;
		z = (struct zapper){ .page = p, .spin = (unsigned)rand() % 3000 };
		if (pthread_create(&tid, NULL, zap_main, &z))
			t_die("pthread_create");
		__atomic_store_n(&z.go, 1, __ATOMIC_RELEASE);
		do {
			T_CHECK(pm_flags(&pm, (uintptr_t)p, PAGES, true,
					 flags) == 0, "pm_flags");
			for (i = 1; i < (int)PAGES; i++)
				T_CHECK(pg_populated(flags[i]),
					"round %d: page %d read as empty (0x%x)",
					round, i, flags[i]);
		} while (!__atomic_load_n(&z.done, __ATOMIC_ACQUIRE));
		pthread_join(tid, NULL);
	}
	t_unmap(p, HUGE);
	pm_close(&pm);
	if (rounds < 100)
		return t_case_skip(ctx, "only %d of 1000 rounds got a THP", rounds);
	return T_PASS;
}

static const struct t_case cases[] = {
	{ "thp-exclusive", thp_exclusive },
	{ "thp-shared-with-child", thp_shared_with_child },
	{ "thp-split", thp_split },
	{ "thp-zapped-while-read", thp_zapped_while_read },
};

int main(void)
{
	return t_main(cases, T_ARRAY_SIZE(cases), 60, 0, NULL);
}
