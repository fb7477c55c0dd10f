// SPDX-License-Identifier: MIT
/*
 * What the transfer core counts and hands on: counters and the public
 * stats made of them, fault latency, and the range lists for the peer
 * (THP chunks to collapse, or what the source may free) and for us.
 */
#include <stddef.h>
#include <string.h>

#include "mover_core.h"
#include "util.h"

void mover_discarded(struct mover *m, uint64_t start, uint64_t end,
		     uint64_t since_ns)
{
	count_add(&m->cnt.discarded,
		  plan_discard(&m->plan, start, end - start));
	fills_check_discard(&m->fills, start, end, since_ns);
}

void mover_fault_served(struct mover *m, uint64_t t_read)
{
	hist_add(&m->lat, now_ns() - t_read);
}

void mover_fault_deferred(struct mover *m)
{
	count_add(&m->cnt.eagain, 1);
}

void mover_outbox_add(struct mover *m, uint64_t start, uint64_t len)
{
	pthread_mutex_lock(&m->lock);
	/* On -ENOMEM the range is lost to the peer: for THP the target's
	 * final pass collapses it, for RELEASE the source frees it at exit. */
	if (!ranges_add(&m->outbox, start, len))
		m->outbox_bytes += len;
	pthread_mutex_unlock(&m->lock);
}

static size_t take_locked(struct mover *m, struct ranges *l,
			  struct wire_range *out, size_t cap)
{
	size_t n;

	pthread_mutex_lock(&m->lock);
	n = ranges_take(l, out, cap);
	pthread_mutex_unlock(&m->lock);
	return n;
}

size_t mover_take_ranges(struct mover *m, struct wire_range *out, size_t cap)
{
	size_t i, n;

	pthread_mutex_lock(&m->lock);
	n = ranges_take(&m->outbox, out, cap);
	for (i = 0; i < n; i++)
		m->outbox_bytes -= out[i].len;
	pthread_mutex_unlock(&m->lock);
	return n;
}

uint64_t mover_progress(struct mover *m)
{
	return __atomic_load_n(&m->cnt.moved, __ATOMIC_RELAXED) +
	       __atomic_load_n(&m->cnt.copied, __ATOMIC_RELAXED) +
	       __atomic_load_n(&m->cnt.zeroed, __ATOMIC_RELAXED) +
	       __atomic_load_n(&m->cnt.faults, __ATOMIC_RELAXED);
}

uint64_t mover_outbox_bytes(struct mover *m)
{
	uint64_t bytes;

	pthread_mutex_lock(&m->lock);
	bytes = m->outbox_bytes;
	pthread_mutex_unlock(&m->lock);
	return bytes;
}

bool mover_outbox_empty(struct mover *m)
{
	return !mover_outbox_bytes(m);
}

/* A THP chunk arrived as small pages: the target collapses it again. */
void core_thp_small(struct mover *m, uint64_t dst)
{
	if (!m->pull) {
		mover_outbox_add(m, dst, CHUNK_SZ);
		return;
	}
	pthread_mutex_lock(&m->lock);
	ranges_add(&m->collapse, dst, CHUNK_SZ);
	pthread_mutex_unlock(&m->lock);
}

size_t mover_take_collapse(struct mover *m, struct wire_range *out,
			   size_t cap)
{
	return take_locked(m, &m->collapse, out, cap);
}

static uint32_t primitive_used(const struct mover *m, uint32_t *why)
{
	switch (load_acquire(&m->prim)) {
	case PRIM_MOVE:
		*why = UFFDMOVE_WHY_USED;
		return UFFDMOVE_PRIM_MOVE;
	case PRIM_COPY:
		*why = load_acquire(&m->why_not_move);
		return UFFDMOVE_PRIM_COPY;
	default:	/* never tried: no page could have moved */
		*why = UFFDMOVE_WHY_NOT_MOVABLE;
		return UFFDMOVE_PRIM_COPY;
	}
}

/* Which counter is which public stat. */
#define COUNTED(counter, stat) \
	{ offsetof(struct counters, counter), \
	  offsetof(struct uffdmove_stats, stat) }

static const struct {
	size_t counter, stat;
} counted[] = {
	COUNTED(populated, bytes_populated),
	COUNTED(moved, bytes_moved),
	COUNTED(copied, bytes_copied),
	COUNTED(zeroed, bytes_zeroed),
	COUNTED(skipped, bytes_skipped),
	COUNTED(discarded, bytes_discarded),
	COUNTED(faults, faults),
	COUNTED(thp_moved, thp_moved),
	COUNTED(thp_copied, thp_copied),
	COUNTED(move_ebusy, move_ebusy),
	COUNTED(pinned_skipped, pinned_skipped),
	COUNTED(eagain, eagain_retries),
	COUNTED(pulled, bytes_pulled),
	COUNTED(released, bytes_released),
};

void mover_stats(const struct mover *m, struct uffdmove_stats *st)
{
	uint64_t first, len, v;
	size_t i;

	memset(st, 0, sizeof(*st));
	for (i = 0; i < ARRAY_SIZE(counted); i++) {
		v = load_acquire((const uint64_t *)((const char *)&m->cnt +
						    counted[i].counter));
		memcpy((char *)st + counted[i].stat, &v, sizeof(v));
	}
	st->bytes_total = m->plan.bytes_total;
	st->bytes_discard_raced =
		mover_discard_raced((struct mover *)m, &first, &len);
	st->fault_ns_p50 = hist_quantile(&m->lat, 0.50);
	st->fault_ns_p99 = hist_quantile(&m->lat, 0.99);
	st->fault_ns_max = load_acquire(&m->lat.max);
	st->primitive = primitive_used(m, &st->move_unused_reason);
	if (m->pull)
		st->primitive = UFFDMOVE_PRIM_PULL;
}
