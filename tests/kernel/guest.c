// SPDX-License-Identifier: MIT
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "guest.h"
#include "harness.h"

#define WORDS (T_PAGE / 8)

static uint64_t page_id(size_t r, size_t page)
{
	return (uint64_t)r << 40 | page;
}

static uint64_t marker(const struct guest *g, size_t r, size_t page)
{
	return t_word(g->seed ^ 0x5a5a5a5a5a5a5a5aULL, page_id(r, page), 0) | 1;
}

bool guest_is_hole(const struct guest *g, size_t r, size_t page)
{
	if (g->sparse_every &&
	    page * T_PAGE / (2UL << 20) % g->sparse_every)
		return true;
	if (g->spec[r].thp)	/* a THP is populated whole */
		return false;
	return t_word(g->seed ^ 0x401e, page_id(r, page), 7) % 100 <
	       g->hole_pct;
}

void guest_map(struct guest *g)
{
	size_t r, total = 0;

	for (r = 0; g->one_mapping && r < g->n; r++)
		total += g->spec[r].len;
	for (r = 0; r < g->n; r++) {
		if (g->one_mapping) {
			g->maplen[r] = r ? 0 : total;
			g->map[r] = r ? NULL : t_map(total, g->spec[0].thp);
			g->addr[r] = r ? g->addr[r - 1] + g->spec[r - 1].len :
					 g->map[0];
		} else {
			g->maplen[r] = g->spec[r].len + g->spec[r].misalign;
			g->map[r] = t_map(g->maplen[r], g->spec[r].thp);
			g->addr[r] = (uint8_t *)g->map[r] +
				     g->spec[r].misalign;
		}
		g->written[r] = mmap(NULL, g->spec[r].len / T_PAGE,
				     PROT_READ | PROT_WRITE,
				     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		if (g->written[r] == MAP_FAILED)
			t_die("mmap written map: %m");
	}
}

void guest_unmap(struct guest *g)
{
	size_t r;

	for (r = 0; r < g->n; r++) {
		if (g->map[r])
			t_unmap(g->map[r], g->maplen[r]);
		munmap(g->written[r], g->spec[r].len / T_PAGE);
	}
}

void guest_fill(struct guest *g)
{
	size_t r, p;

	for (r = 0; r < g->n; r++)
		for (p = 0; p < g->spec[r].len / T_PAGE; p++)
			if (!guest_is_hole(g, r, p))
				t_fill_page(g->addr[r] + p * T_PAGE, g->seed,
					    page_id(r, p));
}

void guest_map_source(struct guest *g)
{
	size_t r;

	guest_map(g);
	guest_fill(g);
	for (r = 0; r < g->n; r++)
		madvise(g->map[r], g->maplen[r], MADV_DONTFORK);
}

uint64_t guest_total_bytes(const struct guest *g)
{
	uint64_t sum = 0;
	size_t r;

	for (r = 0; r < g->n; r++)
		sum += g->spec[r].len;
	return sum;
}

uint64_t guest_populated_bytes(const struct guest *g)
{
	uint64_t sum = 0;
	size_t r, p;

	for (r = 0; r < g->n; r++)
		for (p = 0; p < g->spec[r].len / T_PAGE; p++)
			sum += guest_is_hole(g, r, p) ? 0 : T_PAGE;
	return sum;
}

void guest_regions(const struct guest *g, struct uffdmove_region *out)
{
	size_t r;

	for (r = 0; r < g->n; r++)
		out[r] = (struct uffdmove_region){
			.name = g->spec[r].name,
			.addr = g->addr[r],
			.len = g->spec[r].len,
		};
}

/* Check one page; word 0 may hold the writer's marker when @may_marker. */
static int check_page(const struct guest *g, size_t r, size_t p,
		      bool must_marker, bool may_marker, char *why,
		      size_t why_len)
{
	const uint64_t *w = (const uint64_t *)(g->addr[r] + p * T_PAGE);
	bool hole = guest_is_hole(g, r, p);
	uint64_t mk = marker(g, r, p);
	size_t i;

	for (i = 0; i < WORDS; i++) {
		uint64_t want = hole ? 0 : t_word(g->seed, page_id(r, p), i);
		/* One load per word: another worker may write the marker
		 * into word 0 between two loads. */
		uint64_t got = __atomic_load_n(&w[i], __ATOMIC_RELAXED);

		if (i == 0 && must_marker)
			want = mk;
		else if (i == 0 && may_marker && got == mk)
			continue;
		if (got != want) {
			snprintf(why, why_len,
				 "region '%s' page %zu word %zu (%p): 0x%llx, expected 0x%llx%s",
				 g->spec[r].name, p, i, (void *)&w[i],
				 (unsigned long long)got,
				 (unsigned long long)want,
				 got == 0 ? " (ZERO: lost data)" : "");
			return -1;
		}
	}
	return 0;
}

/* Every page; with @markers, word 0 of a page a worker wrote is its marker. */
static int check_all(const struct guest *g, bool markers, char *why,
		     size_t why_len)
{
	size_t r, p;

	for (r = 0; r < g->n; r++)
		for (p = 0; p < g->spec[r].len / T_PAGE; p++)
			if (check_page(g, r, p,
				       markers &&
				       __atomic_load_n(&g->written[r][p],
						       __ATOMIC_ACQUIRE),
				       false, why, why_len))
				return -1;
	return 0;
}

int guest_verify(const struct guest *g, char *why, size_t why_len)
{
	return check_all(g, true, why, why_len);
}

int guest_verify_source(const struct guest *g, char *why, size_t why_len)
{
	return check_all(g, false, why, why_len);
}

int guest_verify_page(const struct guest *g, size_t r, size_t page,
		      char *why, size_t why_len)
{
	return check_page(g, r, page, false, false, why, why_len);
}

static void *pair_source(void *arg)
{
	struct guest_pair *p = arg;
	struct uffdmove_region r[GUEST_REGIONS_MAX];
	struct uffdmove_source_opts o;
	struct uffdmove_source *s = NULL;

	guest_regions(&p->src, r);
	uffdmove_source_opts_init(&o);
	o.mode = p->mode;
	o.threads = p->threads;
	p->run_ret = uffdmove_source_new(&s, r, p->src.n, &o);
	if (!p->run_ret)
		p->run_ret = uffdmove_source_accept(s, p->sv[0]);
	if (!p->run_ret)
		p->run_ret = uffdmove_source_run(s);
	snprintf(p->err, sizeof(p->err), "%s",
		 s ? uffdmove_source_error(s) : uffdmove_new_error());
	if (s)
		uffdmove_source_stats(s, &p->st);
	uffdmove_source_free(s);
	return NULL;
}

void guest_pair_start(struct guest_pair *p, const struct guest *layout,
		      uint32_t mode, uint32_t threads)
{
	struct uffdmove_region r[GUEST_REGIONS_MAX];

	memset(p, 0, sizeof(*p));
	p->src = *layout;
	p->dst = *layout;
	p->mode = mode;
	p->threads = threads;
	guest_map(&p->src);
	guest_fill(&p->src);
	guest_map(&p->dst);
	if (t_seqpacket_pair(p->sv) ||
	    pthread_create(&p->tid, NULL, pair_source, p))
		t_die("pair setup");
	guest_regions(&p->dst, r);
	if (uffdmove_target_new(&p->t, r, p->dst.n, NULL))
		t_die("target_new: %s", uffdmove_new_error());
	if (uffdmove_target_handoff(p->t, p->sv[1]))
		t_die("handoff: %s", uffdmove_target_error(p->t));
}

void guest_pair_join(struct guest_pair *p)
{
	if (!p->joined)
		pthread_join(p->tid, NULL);
	p->joined = true;
}

void guest_pair_end(struct guest_pair *p)
{
	guest_pair_join(p);
	uffdmove_target_free(p->t);
	close(p->sv[0]);
	close(p->sv[1]);
	guest_unmap(&p->src);
	guest_unmap(&p->dst);
}

static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

struct worker_arg {
	struct guest_workers *w;
	uint64_t rng;
};

static struct worker_arg worker_args[8];

static void *worker_main(void *arg)
{
	struct worker_arg *a = arg;
	struct guest_workers *w = a->w;
	struct guest *g = w->g;
	char why[256];

	while (!__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE)) {
		uint64_t x = xorshift(&a->rng);

		if (g->pace_us)
			usleep(g->pace_us);
		size_t r = (size_t)(x % g->n);
		size_t p = (size_t)((x >> 8) % (g->spec[r].len / T_PAGE));

		if (g->addr[r] + p * T_PAGE == g->discarding)
			continue;	/* reads as zeros once discarded */

		if (x & (1ULL << 60)) {
			uint64_t *w0 = (uint64_t *)(g->addr[r] + p * T_PAGE);

			__atomic_store_n(w0, marker(g, r, p), __ATOMIC_RELAXED);
			__atomic_store_n(&g->written[r][p], 1,
					 __ATOMIC_RELEASE);
			__atomic_fetch_add(&w->writes, 1, __ATOMIC_RELAXED);
		} else {
			if (check_page(g, r, p, false, true, why,
				       sizeof(why)) &&
			    !__atomic_exchange_n(&w->bad, 1,
						 __ATOMIC_ACQ_REL))
				snprintf(w->why, sizeof(w->why),
					 "during the handoff: %.200s", why);
			__atomic_fetch_add(&w->reads, 1, __ATOMIC_RELAXED);
		}
	}
	return NULL;
}

void guest_workers_start(struct guest_workers *w, struct guest *g, size_t n)
{
	size_t i;

	memset(w, 0, sizeof(*w));
	w->g = g;
	for (i = 0; i < n && i < 8; i++) {
		worker_args[i] = (struct worker_arg){ w, g->seed + i * 7919 + 1 };
		if (pthread_create(&w->tid[i], NULL, worker_main,
				   &worker_args[i]))
			t_die("pthread_create");
		w->n++;
	}
}

int guest_workers_stop(struct guest_workers *w)
{
	size_t i;

	__atomic_store_n(&w->stop, true, __ATOMIC_RELEASE);
	for (i = 0; i < w->n; i++)
		pthread_join(w->tid[i], NULL);
	return w->bad ? -1 : 0;
}
