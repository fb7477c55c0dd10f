// SPDX-License-Identifier: MIT
/*
 * Decoding: every byte from another process is checked here, field by
 * field, and a refusal names the field (wire.h lists the errors).
 */
#include <errno.h>
#include <stdio.h>

#include "wire_codec.h"

/* A name is 1..31 bytes, NUL-terminated inside its field, zero-padded. */
static bool name_valid(const char *name, size_t field)
{
	size_t n = strnlen(name, field), i;

	if (n == 0 || n == field)
		return false;
	for (i = 0; i < n; i++)
		if ((unsigned char)name[i] < 0x20 || (unsigned char)name[i] > 0x7e)
			return false;
	for (; i < field; i++)
		if (name[i])
			return false;
	return true;
}

static int decode_hello(struct cur *c, struct wire_msg *m, char *why,
			size_t why_len)
{
	uint32_t n, i, j;

	m->hello.features = get_u64(c);
	n = get_u32(c);
	m->hello.flags = get_u32(c);
	if ((m->hello.flags & ~(WIRE_HELLO_PULL | WIRE_HELLO_WHY_MASK)) ||
	    wire_hello_why(m) > UFFDMOVE_PULL_WHY_NO_THP ||
	    ((m->hello.flags & WIRE_HELLO_PULL) && wire_hello_why(m)))
		return fail(why, why_len, EPROTO, "HELLO: unknown flags 0x%x",
			    m->hello.flags);
	m->hello.mm_cookie_addr = get_u64(c);
	m->hello.mm_cookie = get_u64(c);
	if (n == 0 || n > UFFDMOVE_REGIONS_MAX)
		return fail(why, why_len, EPROTO,
			    "HELLO: region count %u is outside 1..%u", n,
			    UFFDMOVE_REGIONS_MAX);
	if (c->left != (size_t)n * REGION_LEN)
		return fail(why, why_len, EPROTO,
			    "HELLO: %zu bytes of region table for %u regions",
			    c->left, n);
	m->hello.n_regions = n;

	for (i = 0; i < n; i++) {
		struct wire_region *r = &m->hello.regions[i];

		get(c, r->name, sizeof(r->name));
		r->addr = get_u64(c);
		r->len = get_u64(c);
		r->page_size = get_u32(c);
		r->flags = get_u32(c);
		r->ioctls = get_u64(c);
		if (!name_valid(r->name, sizeof(r->name))) {
			r->name[sizeof(r->name) - 1] = '\0';
			return fail(why, why_len, EPROTO,
				    "HELLO: region %u: name is not 1..%u printable bytes, NUL padded",
				    i, UFFDMOVE_NAME_MAX);
		}
		if (r->flags & ~WIRE_REGION_THP)
			return fail(why, why_len, EPROTO,
				    "HELLO: region '%s': unknown flags 0x%x",
				    r->name, r->flags);
		if (r->page_size != PAGE_SZ)
			return fail(why, why_len, EINVAL,
				    "HELLO: region '%s': page size %u, only %lu is supported",
				    r->name, r->page_size, PAGE_SZ);
		if (r->len == 0 || !IS_ALIGNED(r->addr | r->len, r->page_size))
			return fail(why, why_len, EINVAL,
				    "HELLO: region '%s': address 0x%llx length %llu not page aligned or empty",
				    r->name, (unsigned long long)r->addr,
				    (unsigned long long)r->len);
		if (r->addr + r->len < r->addr)
			return fail(why, why_len, EINVAL,
				    "HELLO: region '%s': address + length overflows",
				    r->name);
		for (j = 0; j < i; j++) {
			const struct wire_region *o = &m->hello.regions[j];

			if (!strcmp(o->name, r->name))
				return fail(why, why_len, EINVAL,
					    "HELLO: region name '%s' appears twice",
					    r->name);
			if (r->addr < o->addr + o->len &&
			    o->addr < r->addr + r->len)
				return fail(why, why_len, EINVAL,
					    "HELLO: regions '%s' and '%s' overlap",
					    o->name, r->name);
		}
	}
	return 0;
}

/* The counters as sent; the three reasons must be ones we know, so that
 * what decodes encodes back the same. */
static int get_stats(struct cur *c, struct uffdmove_stats *st, char *why,
		     size_t why_len, const char *name)
{
	unsigned char *base = (unsigned char *)st;
	uint64_t last, pull;
	size_t i;

	memset(st, 0, sizeof(*st));
	for (i = 0; i < wire_stats_nwords; i++) {
		uint64_t v = get_u64(c);

		memcpy(base + wire_stats_words[i], &v, sizeof(v));
	}
	last = get_u64(c);
	pull = get_u64(c);
	st->primitive = (uint32_t)last;
	st->move_unused_reason = (uint32_t)(last >> 32);
	st->pull_unused_reason = (uint32_t)pull;
	if (st->primitive > UFFDMOVE_PRIM_PULL ||
	    st->move_unused_reason > UFFDMOVE_WHY_NOT_MOVABLE ||
	    pull > UFFDMOVE_PULL_WHY_NO_THP)
		return fail(why, why_len, EPROTO,
			    "%s: primitive %u, reasons %u and %llu: unknown",
			    name, st->primitive, st->move_unused_reason,
			    (unsigned long long)pull);
	return 0;
}

static int decode_ranges(struct cur *c, struct wire_msg *m, char *why,
			 size_t why_len)
{
	const char *name = wire_type_name(m->type);
	uint32_t i;

	if (c->left < 8)
		return fail(why, why_len, EPROTO, "%s: %zu bytes is too short",
			    name, c->left);
	m->ranges.n = get_u32(c);
	if (get_u32(c))
		return fail(why, why_len, EPROTO,
			    "%s: reserved word is not zero", name);
	if (m->ranges.n > WIRE_RANGES_MAX ||
	    c->left != (size_t)m->ranges.n * 16)
		return fail(why, why_len, EPROTO, "%s: %u ranges in %zu bytes",
			    name, m->ranges.n, c->left);
	for (i = 0; i < m->ranges.n; i++) {
		m->ranges.ranges[i].start = get_u64(c);
		m->ranges.ranges[i].len = get_u64(c);
		if (m->ranges.ranges[i].start + m->ranges.ranges[i].len <
		    m->ranges.ranges[i].start)
			return fail(why, why_len, EPROTO,
				    "%s: range %u wraps around", name, i);
	}
	return 0;
}

static int decode_accept(struct cur *c, struct wire_msg *m, char *why,
			 size_t why_len)
{
	uint32_t i, prim;

	if (c->left < 40)
		return fail(why, why_len, EPROTO,
			    "ACCEPT: body of %zu bytes is too short", c->left);
	prim = m->accept.primitive = get_u32(c);
	m->accept.n_src = get_u32(c);
	m->accept.populated = get_u64(c);
	m->accept.cookie_addr = get_u64(c);
	m->accept.cookie = get_u64(c);
	m->accept.pid = get_u32(c);
	if (get_u32(c))
		return fail(why, why_len, EPROTO,
			    "ACCEPT: reserved word is not zero");
	if ((prim == UFFDMOVE_PRIM_PULL) != (m->accept.pid != 0) ||
	    m->accept.pid > INT32_MAX)
		return fail(why, why_len, EPROTO,
			    "ACCEPT: pid %u for primitive %u", m->accept.pid,
			    prim);
	if (prim > UFFDMOVE_PRIM_PULL)
		return fail(why, why_len, EPROTO,
			    "ACCEPT: unknown primitive %u", prim);
	if ((prim == UFFDMOVE_PRIM_PULL) != (m->accept.n_src != 0) ||
	    m->accept.n_src > UFFDMOVE_REGIONS_MAX ||
	    c->left != (size_t)m->accept.n_src * 8)
		return fail(why, why_len, EPROTO,
			    "ACCEPT: body of %zu more bytes for %u source addresses with primitive %u",
			    c->left, m->accept.n_src, prim);
	/* NONE declines a pull; its cookie word says why (PULL_WHY_*). */
	if (prim == UFFDMOVE_PRIM_NONE &&
	    (!m->accept.cookie || m->accept.cookie > UFFDMOVE_PULL_WHY_SAME_MM))
		return fail(why, why_len, EPROTO,
			    "ACCEPT: declines a pull without a known reason (cookie %llu)",
			    (unsigned long long)m->accept.cookie);
	if (prim != UFFDMOVE_PRIM_PULL &&
	    (m->accept.cookie_addr ||
	     (prim != UFFDMOVE_PRIM_NONE && m->accept.cookie)))
		return fail(why, why_len, EPROTO,
			    "ACCEPT: a cookie without PULL");
	for (i = 0; i < m->accept.n_src; i++)
		m->accept.src[i] = get_u64(c);
	return 0;
}

int wire_decode(const void *buf, size_t len, struct wire_msg *m,
		char *why, size_t why_len)
{
	struct cur c = { (unsigned char *)buf, len };
	uint32_t magic, vt, mlen, type, i;
	size_t expect;

	if (len < HDR_LEN)
		return fail(why, why_len, EPROTO,
			    "message of %zu bytes is shorter than the %d-byte header",
			    len, HDR_LEN);
	magic = get_u32(&c);
	vt = get_u32(&c);
	mlen = get_u32(&c);
	if (magic != WIRE_MAGIC)
		return fail(why, why_len, EPROTO,
			    "bad magic 0x%08x (expected 0x%08x): not a libuffdmove peer",
			    magic, WIRE_MAGIC);
	if ((vt & 0xffff) != WIRE_VERSION)
		return fail(why, why_len, EPROTO,
			    "protocol version %u, this library speaks %u",
			    vt & 0xffff, WIRE_VERSION);
	if (get_u32(&c))
		return fail(why, why_len, EPROTO,
			    "header reserved word is not zero");
	type = vt >> 16;
	if (type < WIRE_HELLO || type > WIRE_TYPE_MAX)
		return fail(why, why_len, EPROTO, "unknown message type %u",
			    type);
	if (mlen != len)
		return fail(why, why_len, EPROTO,
			    "%s: header says %u bytes, received %zu",
			    wire_type_name(type), mlen, len);

	memset(m, 0, sizeof(*m));
	m->type = type;
	if (type == WIRE_HELLO) {
		if (c.left < 32)
			return fail(why, why_len, EPROTO,
				    "HELLO: %zu bytes is too short", len);
		return decode_hello(&c, m, why, why_len);
	}
	if (type == WIRE_RANGE_DONE || type == WIRE_RELEASE)
		return decode_ranges(&c, m, why, why_len);
	if (type == WIRE_ACCEPT)
		return decode_accept(&c, m, why, why_len);

	expect = wire_body_len(m);
	if (c.left != expect)
		return fail(why, why_len, EPROTO,
			    "%s: body of %zu bytes, expected %zu",
			    wire_type_name(type), c.left, expect);
	switch (type) {
	case WIRE_REJECT:
	case WIRE_ABORT:
		m->reason.errnum = get_u32(&c);
		if (get_u32(&c))
			return fail(why, why_len, EPROTO,
				    "%s: reserved word is not zero",
				    wire_type_name(type));
		get(&c, m->reason.text, sizeof(m->reason.text));
		m->reason.text[sizeof(m->reason.text) - 1] = '\0';
		if (m->reason.errnum == 0 || m->reason.errnum > 4095)
			return fail(why, why_len, EPROTO,
				    "%s: errno %u is out of range",
				    wire_type_name(type), m->reason.errnum);
		break;
	case WIRE_PROGRESS:
	case WIRE_DONE:
		if (get_stats(&c, &m->stats, why, why_len,
			      wire_type_name(type)))
			return -EPROTO;
		for (i = wire_stats_nwords + STATS_PACKED;
		     i < WIRE_STATS_WORDS; i++)
			if (get_u64(&c))
				return fail(why, why_len, EPROTO,
					    "%s: reserved stats word %u is not zero",
					    wire_type_name(type), i);
		break;
	default:
		break;
	}
	return 0;
}

