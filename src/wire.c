// SPDX-License-Identifier: MIT
/* Encoding, the layout tables and the type names (wire_decode.c decodes). */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "wire_codec.h"

/* uffdmove_stats counters in wire order; the packed u32 words follow. */
const size_t wire_stats_words[] = {
	offsetof(struct uffdmove_stats, bytes_total),
	offsetof(struct uffdmove_stats, bytes_populated),
	offsetof(struct uffdmove_stats, bytes_moved),
	offsetof(struct uffdmove_stats, bytes_copied),
	offsetof(struct uffdmove_stats, bytes_zeroed),
	offsetof(struct uffdmove_stats, bytes_skipped),
	offsetof(struct uffdmove_stats, bytes_discarded),
	offsetof(struct uffdmove_stats, faults),
	offsetof(struct uffdmove_stats, fault_ns_p50),
	offsetof(struct uffdmove_stats, fault_ns_p99),
	offsetof(struct uffdmove_stats, fault_ns_max),
	offsetof(struct uffdmove_stats, thp_moved),
	offsetof(struct uffdmove_stats, thp_copied),
	offsetof(struct uffdmove_stats, thp_collapsed),
	offsetof(struct uffdmove_stats, move_ebusy),
	offsetof(struct uffdmove_stats, pinned_skipped),
	offsetof(struct uffdmove_stats, eagain_retries),
	offsetof(struct uffdmove_stats, elapsed_ns),
	offsetof(struct uffdmove_stats, bytes_discard_raced),
	offsetof(struct uffdmove_stats, bytes_pulled),
	offsetof(struct uffdmove_stats, bytes_released),
};
const size_t wire_stats_nwords = ARRAY_SIZE(wire_stats_words);
_Static_assert(ARRAY_SIZE(wire_stats_words) + STATS_PACKED <= WIRE_STATS_WORDS,
	       "stats do not fit the wire");

/* A value at an address in the sender's memory, for the peer to read. */
static void put_cookie(struct cur *c, uint64_t addr, uint64_t value)
{
	put_u64(c, addr);
	put_u64(c, value);
}

size_t wire_body_len(const struct wire_msg *m)
{
	switch (m->type) {
	case WIRE_HELLO:
		return 32 + (size_t)m->hello.n_regions * REGION_LEN;
	case WIRE_ACCEPT:
		return 40 + (size_t)m->accept.n_src * 8;
	case WIRE_REJECT:
	case WIRE_ABORT:
		return 8 + WIRE_TEXT_MAX;
	case WIRE_PROGRESS:
	case WIRE_DONE:
		return STATS_LEN;
	case WIRE_RANGE_DONE:
	case WIRE_RELEASE:
		return 8 + (size_t)m->ranges.n * 16;
	default:
		return 0;
	}
}

static void put_stats(struct cur *c, const struct uffdmove_stats *st)
{
	const unsigned char *base = (const unsigned char *)st;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(wire_stats_words); i++) {
		uint64_t v;

		memcpy(&v, base + wire_stats_words[i], sizeof(v));
		put_u64(c, v);
	}
	put_u64(c, st->primitive | (uint64_t)st->move_unused_reason << 32);
	put_u64(c, st->pull_unused_reason);
	for (i += STATS_PACKED; i < WIRE_STATS_WORDS; i++)
		put_u64(c, 0);
}

int wire_encode(const struct wire_msg *m, void *buf, size_t cap)
{
	struct cur c = { buf, cap };
	size_t len;
	uint32_t i;

	if (m->type < WIRE_HELLO || m->type > WIRE_TYPE_MAX)
		return -EINVAL;
	if (m->type == WIRE_HELLO && m->hello.n_regions > UFFDMOVE_REGIONS_MAX)
		return -EINVAL;
	if ((m->type == WIRE_RANGE_DONE || m->type == WIRE_RELEASE) &&
	    m->ranges.n > WIRE_RANGES_MAX)
		return -EINVAL;
	if (m->type == WIRE_ACCEPT && m->accept.n_src > UFFDMOVE_REGIONS_MAX)
		return -EINVAL;
	len = HDR_LEN + wire_body_len(m);
	if (len > cap)
		return -EINVAL;

	put_u32(&c, WIRE_MAGIC);
	put_u32(&c, WIRE_VERSION | m->type << 16);
	put_u32(&c, (uint32_t)len);
	put_u32(&c, 0);

	switch (m->type) {
	case WIRE_HELLO:
		put_u64(&c, m->hello.features);
		put_u32(&c, m->hello.n_regions);
		put_u32(&c, m->hello.flags);
		put_cookie(&c, m->hello.mm_cookie_addr, m->hello.mm_cookie);
		for (i = 0; i < m->hello.n_regions; i++) {
			const struct wire_region *r = &m->hello.regions[i];
			char name[sizeof(r->name)] = { 0 };

			memcpy(name, r->name,
			       strnlen(r->name, sizeof(name) - 1));
			put(&c, name, sizeof(name));
			put_u64(&c, r->addr);
			put_u64(&c, r->len);
			put_u32(&c, r->page_size);
			put_u32(&c, r->flags);
			put_u64(&c, r->ioctls);
		}
		break;
	case WIRE_ACCEPT:
		put_u32(&c, m->accept.primitive);
		put_u32(&c, m->accept.n_src);
		put_u64(&c, m->accept.populated);
		put_cookie(&c, m->accept.cookie_addr, m->accept.cookie);
		put_u32(&c, m->accept.pid);
		put_u32(&c, 0);
		for (i = 0; i < m->accept.n_src; i++)
			put_u64(&c, m->accept.src[i]);
		break;
	case WIRE_REJECT:
	case WIRE_ABORT: {
		char text[WIRE_TEXT_MAX] = { 0 };

		memcpy(text, m->reason.text,
		       strnlen(m->reason.text, sizeof(text) - 1));
		put_u32(&c, m->reason.errnum);
		put_u32(&c, 0);
		put(&c, text, sizeof(text));
		break;
	}
	case WIRE_PROGRESS:
	case WIRE_DONE:
		put_stats(&c, &m->stats);
		break;
	case WIRE_RANGE_DONE:
	case WIRE_RELEASE:
		put_u32(&c, m->ranges.n);
		put_u32(&c, 0);
		for (i = 0; i < m->ranges.n; i++) {
			put_u64(&c, m->ranges.ranges[i].start);
			put_u64(&c, m->ranges.ranges[i].len);
		}
		break;
	default:
		break;
	}
	/* One set of rules: what would not decode is not sent either. */
	{
		struct wire_msg check;

		if (wire_decode(buf, len, &check, NULL, 0))
			return -EINVAL;
	}
	return (int)len;
}

const char *wire_type_name(uint32_t type)
{
#define NAME(type) [WIRE_##type] = #type
	static const char *const names[] = {
		NAME(HELLO), NAME(ACCEPT), NAME(REJECT), NAME(GO),
		NAME(PROGRESS), NAME(RANGE_DONE), NAME(DONE), NAME(FIN),
		NAME(ABORT), NAME(QUERY), NAME(PULL), NAME(RELEASE),
	};
#undef NAME

	if (type >= ARRAY_SIZE(names) || !names[type])
		return "UNKNOWN";
	return names[type];
}
