// SPDX-License-Identifier: MIT
/*
 * wire.c: every message type survives encode -> decode unchanged, the byte
 * layout old and new library versions rely on stays put, and every class of
 * malformed message is refused with the errno wire.h documents and a
 * message naming the field. Each decode reads from a heap copy of exactly
 * the received length, so ASan and valgrind see any read past it.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "wire.h"

#define PAGE		4096ULL
#define HDR		16

/* Byte offsets of the version-3 layout, from wire.h. */
#define H_MAGIC		0
#define H_VT		4
#define H_LEN		8
#define H_RESV		12
#define HELLO_FEAT	16
#define HELLO_N		24
#define HELLO_FLAGS	28
#define HELLO_CADDR	32
#define HELLO_COOKIE	40
#define HELLO_REG	48
#define REG_LEN		64
#define R_NAME		0
#define R_ADDR		32
#define R_LEN		40
#define R_PSZ		48
#define R_FLAGS		52
#define R_IOCTLS	56
#define BODY		16	/* first body word of the other types */
#define TEXT		24	/* REJECT/ABORT text */
#define RANGES		24	/* RANGE_DONE and RELEASE ranges */
#define ACC_POP		24	/* ACCEPT: populated */
#define ACC_CADDR	32	/* ACCEPT: cookie address */
#define ACC_COOKIE	40	/* ACCEPT: cookie (NONE: why not pulled) */
#define ACC_PID		48
#define ACC_RESV	52
#define ACC_SRC		56	/* ACCEPT(PULL): source addresses */

/* Room for messages one region or one range past the limits. */
#define BUF_MAX		(WIRE_MSG_MAX + 2 * REG_LEN)

static size_t reg_off(unsigned int i, size_t field)
{
	return HELLO_REG + (size_t)i * REG_LEN + field;
}

static void put32(uint8_t *b, size_t off, uint32_t v)
{
	memcpy(b + off, &v, sizeof(v));
}

static void put64(uint8_t *b, size_t off, uint64_t v)
{
	memcpy(b + off, &v, sizeof(v));
}

static uint32_t get32(const uint8_t *b, size_t off)
{
	uint32_t v;

	memcpy(&v, b + off, sizeof(v));
	return v;
}

static uint64_t get64(const uint8_t *b, size_t off)
{
	uint64_t v;

	memcpy(&v, b + off, sizeof(v));
	return v;
}

/* ------------------------------------------------------------ messages */

static void hello(struct wire_msg *m, unsigned int n)
{
	unsigned int i;

	memset(m, 0, sizeof(*m));
	m->type = WIRE_HELLO;
	m->hello.features = 0x8000000000010a5bULL;
	m->hello.n_regions = n;
	m->hello.mm_cookie_addr = 0x00007ffc12345678ULL;
	m->hello.mm_cookie = 0xa5a5f00dcafe1234ULL;
	for (i = 0; i < n; i++) {
		struct wire_region *r = &m->hello.regions[i];

		snprintf(r->name, sizeof(r->name), "ram%u", i);
		r->addr = 0x100000000ULL + (uint64_t)i * (1ULL << 30);
		r->len = (i + 1) * PAGE;
		r->page_size = 4096;
		r->flags = i % 2 ? WIRE_REGION_THP : 0;
		r->ioctls = 0x10000000000000ULL | i;
	}
}

static void stats(struct uffdmove_stats *st, uint64_t salt)
{
	memset(st, 0, sizeof(*st));
	/* Distinct values using the high halves, so a swapped, dropped or
	 * truncated word shows. */
	st->bytes_total = 0x0101000000000001ULL ^ salt;
	st->bytes_populated = 0x0202000000000002ULL ^ salt;
	st->bytes_moved = 0x0303000000000003ULL ^ salt;
	st->bytes_copied = 0x0404000000000004ULL ^ salt;
	st->bytes_zeroed = 0x0505000000000005ULL ^ salt;
	st->bytes_skipped = 0x0606000000000006ULL ^ salt;
	st->bytes_discarded = 0x0707000000000007ULL ^ salt;
	st->faults = 0x0808000000000008ULL ^ salt;
	st->fault_ns_p50 = 0x0909000000000009ULL ^ salt;
	st->fault_ns_p99 = 0x0a0a00000000000aULL ^ salt;
	st->fault_ns_max = 0x0b0b00000000000bULL ^ salt;
	st->thp_moved = 0x0c0c00000000000cULL ^ salt;
	st->thp_copied = 0x0d0d00000000000dULL ^ salt;
	st->thp_collapsed = 0x0e0e00000000000eULL ^ salt;
	st->move_ebusy = 0x0f0f00000000000fULL ^ salt;
	st->pinned_skipped = 0x1010000000000010ULL ^ salt;
	st->eagain_retries = 0x1111000000000011ULL ^ salt;
	st->elapsed_ns = 0x1212000000000012ULL ^ salt;
	st->bytes_discard_raced = 0x1313000000000013ULL ^ salt;
	st->bytes_pulled = 0x1414000000000014ULL ^ salt;
	st->bytes_released = 0x1515000000000015ULL ^ salt;
	/* The reasons must be known ones (decoding refuses others). */
	st->primitive = UFFDMOVE_PRIM_PULL - (uint32_t)(salt & 1);
	st->move_unused_reason = UFFDMOVE_WHY_NOT_MOVABLE - (uint32_t)(salt & 1);
	st->pull_unused_reason = UFFDMOVE_PULL_WHY_SAME_MM -
				 (uint32_t)(salt & 1);
}

static void ranges(struct wire_msg *m, unsigned int n)
{
	unsigned int i;

	memset(m, 0, sizeof(*m));
	m->type = WIRE_RANGE_DONE;
	m->ranges.n = n;
	for (i = 0; i < n; i++) {
		m->ranges.ranges[i].start = 0x7f0000000000ULL + i * (2ULL << 20);
		m->ranges.ranges[i].len = (2ULL << 20) + i;
	}
}

static void reason(struct wire_msg *m, uint32_t type, uint32_t errnum,
		   const char *text)
{
	memset(m, 0, sizeof(*m));
	m->type = type;
	m->reason.errnum = errnum;
	snprintf(m->reason.text, sizeof(m->reason.text), "%s", text);
}

/* ACCEPT(PULL) for @n regions. */
static void pull_accept(struct wire_msg *m, uint32_t n)
{
	uint32_t i;

	memset(m, 0, sizeof(*m));
	m->type = WIRE_ACCEPT;
	m->accept.primitive = UFFDMOVE_PRIM_PULL;
	m->accept.n_src = n;
	m->accept.populated = 3ULL << 30;
	m->accept.cookie_addr = 0x00007ffd00001000ULL;
	m->accept.cookie = 0x5eed5eed5eed5eedULL;
	m->accept.pid = 4242;
	for (i = 0; i < n; i++)
		m->accept.src[i] = 0x7f0000000000ULL + ((uint64_t)i << 32);
}

static void simple(struct wire_msg *m, uint32_t type)
{
	memset(m, 0, sizeof(*m));
	m->type = type;
	if (type == WIRE_ACCEPT)
		m->accept.primitive = UFFDMOVE_PRIM_MOVE;
	if (type == WIRE_REJECT || type == WIRE_ABORT)
		reason(m, type, EPERM, "peer uid 1000 is not the expected uid 0");
	if (type == WIRE_PROGRESS || type == WIRE_DONE)
		stats(&m->stats, type);
	if (type == WIRE_HELLO)
		hello(m, 3);
	if (type == WIRE_RANGE_DONE || type == WIRE_RELEASE) {
		ranges(m, 5);
		m->type = type;
	}
}

/* ------------------------------------------------------------- helpers */

static void assert_stats_equal(const struct uffdmove_stats *a,
			       const struct uffdmove_stats *b)
{
	assert_int_equal(a->bytes_total, b->bytes_total);
	assert_int_equal(a->bytes_populated, b->bytes_populated);
	assert_int_equal(a->bytes_moved, b->bytes_moved);
	assert_int_equal(a->bytes_copied, b->bytes_copied);
	assert_int_equal(a->bytes_zeroed, b->bytes_zeroed);
	assert_int_equal(a->bytes_skipped, b->bytes_skipped);
	assert_int_equal(a->bytes_discarded, b->bytes_discarded);
	assert_int_equal(a->faults, b->faults);
	assert_int_equal(a->fault_ns_p50, b->fault_ns_p50);
	assert_int_equal(a->fault_ns_p99, b->fault_ns_p99);
	assert_int_equal(a->fault_ns_max, b->fault_ns_max);
	assert_int_equal(a->thp_moved, b->thp_moved);
	assert_int_equal(a->thp_copied, b->thp_copied);
	assert_int_equal(a->thp_collapsed, b->thp_collapsed);
	assert_int_equal(a->move_ebusy, b->move_ebusy);
	assert_int_equal(a->pinned_skipped, b->pinned_skipped);
	assert_int_equal(a->eagain_retries, b->eagain_retries);
	assert_true(a->bytes_discard_raced == b->bytes_discard_raced);
	assert_int_equal(a->elapsed_ns, b->elapsed_ns);
	assert_int_equal(a->primitive, b->primitive);
	assert_int_equal(a->move_unused_reason, b->move_unused_reason);
	assert_true(a->bytes_pulled == b->bytes_pulled);
	assert_true(a->bytes_released == b->bytes_released);
	assert_int_equal(a->pull_unused_reason, b->pull_unused_reason);
}

static void assert_msg_equal(const struct wire_msg *a,
			     const struct wire_msg *b)
{
	uint32_t i;

	assert_int_equal(a->type, b->type);
	switch (a->type) {
	case WIRE_HELLO:
		assert_int_equal(a->hello.features, b->hello.features);
		assert_int_equal(a->hello.n_regions, b->hello.n_regions);
		assert_int_equal(a->hello.flags, b->hello.flags);
		assert_int_equal(a->hello.mm_cookie_addr,
				 b->hello.mm_cookie_addr);
		assert_int_equal(a->hello.mm_cookie, b->hello.mm_cookie);
		for (i = 0; i < a->hello.n_regions; i++) {
			const struct wire_region *x = &a->hello.regions[i];
			const struct wire_region *y = &b->hello.regions[i];

			assert_string_equal(x->name, y->name);
			assert_int_equal(x->addr, y->addr);
			assert_int_equal(x->len, y->len);
			assert_int_equal(x->page_size, y->page_size);
			assert_int_equal(x->flags, y->flags);
			assert_int_equal(x->ioctls, y->ioctls);
		}
		break;
	case WIRE_ACCEPT:
		assert_int_equal(a->accept.primitive, b->accept.primitive);
		assert_true(a->accept.populated == b->accept.populated);
		assert_int_equal(a->accept.n_src, b->accept.n_src);
		assert_true(a->accept.cookie_addr == b->accept.cookie_addr);
		assert_true(a->accept.cookie == b->accept.cookie);
		assert_int_equal(a->accept.pid, b->accept.pid);
		for (i = 0; i < a->accept.n_src; i++)
			assert_true(a->accept.src[i] == b->accept.src[i]);
		break;
	case WIRE_REJECT:
	case WIRE_ABORT:
		assert_int_equal(a->reason.errnum, b->reason.errnum);
		assert_string_equal(a->reason.text, b->reason.text);
		break;
	case WIRE_PROGRESS:
	case WIRE_DONE:
		assert_stats_equal(&a->stats, &b->stats);
		break;
	case WIRE_RANGE_DONE:
	case WIRE_RELEASE:
		assert_int_equal(a->ranges.n, b->ranges.n);
		for (i = 0; i < a->ranges.n; i++) {
			assert_int_equal(a->ranges.ranges[i].start,
					 b->ranges.ranges[i].start);
			assert_int_equal(a->ranges.ranges[i].len,
					 b->ranges.ranges[i].len);
		}
		break;
	default:
		break;
	}
}

/* Decode @len bytes from an exact-size heap copy. */
static int decode(const uint8_t *b, size_t len, struct wire_msg *m,
		  char *why, size_t why_len)
{
	uint8_t *copy = malloc(len ? len : 1);
	int ret;

	assert_non_null(copy);
	memcpy(copy, b, len);
	ret = wire_decode(copy, len, m, why, why_len);
	free(copy);
	return ret;
}

static size_t encode(const struct wire_msg *m, uint8_t *b)
{
	int len = wire_encode(m, b, WIRE_MSG_MAX);

	if (len < HDR) {
		print_error("wire_encode(%s) returned %d\n",
			    wire_type_name(m->type), len);
		fail();
	}
	return (size_t)len;
}

/* encode -> decode, check equality, return the encoded length. */
static size_t round_trip(const struct wire_msg *m, uint8_t *b)
{
	struct wire_msg out;
	char why[256] = "";
	size_t len = encode(m, b);
	int ret;

	memset(&out, 0xa5, sizeof(out));
	ret = decode(b, len, &out, why, sizeof(why));
	if (ret) {
		print_error("decode(encode(%s)) = %d: %s\n",
			    wire_type_name(m->type), ret, why);
		fail();
	}
	assert_msg_equal(m, &out);
	return len;
}

/*
 * The decoder refuses @b with -@err and says why, naming @what1 and (when
 * not NULL) @what2.
 */
#define expect_bad(b, len, err, what1, what2) \
	expect_bad_(b, len, err, what1, what2, __FILE__, __LINE__)

static void expect_bad_(const uint8_t *b, size_t len, int err,
			const char *what1, const char *what2,
			const char *file, int line)
{
	struct wire_msg m;
	char why[256] = "(why not set)";
	int ret = decode(b, len, &m, why, sizeof(why));

	if (ret != -err || !strstr(why, what1) ||
	    (what2 && !strstr(why, what2))) {
		print_error("%s:%d: wire_decode of %zu bytes returned %d (%s), expected %d (%s)\n"
			    "  why: \"%s\"\n  expected it to name \"%s\"%s%s%s\n",
			    file, line, len, ret, ret ? strerror(-ret) : "ok",
			    -err, strerror(err), why, what1,
			    what2 ? " and \"" : "", what2 ? what2 : "",
			    what2 ? "\"" : "");
		fail();
	}
}

/* @b cut or padded to @len bytes, its header agreeing: refused likewise. */
#define expect_bad_len(b, len, err, what1, what2)			\
	do {								\
		put32(b, H_LEN, (uint32_t)(len));			\
		expect_bad(b, len, err, what1, what2);			\
	} while (0)

/* The decoder accepts @b. */
#define expect_ok(b, len) expect_ok_(b, len, __FILE__, __LINE__)

static void expect_ok_(const uint8_t *b, size_t len, const char *file,
		       int line)
{
	struct wire_msg m;
	char why[256] = "";
	int ret = decode(b, len, &m, why, sizeof(why));

	if (ret) {
		print_error("%s:%d: wire_decode of %zu bytes returned %d: %s\n",
			    file, line, len, ret, why);
		fail();
	}
}

/* Encode a HELLO of @n regions into @b and return its length. */
static size_t hello_bytes(uint8_t *b, unsigned int n)
{
	struct wire_msg m;

	hello(&m, n);
	return encode(&m, b);
}

/* Encode the simple() message of @type into @b and return its length. */
static size_t simple_bytes(uint8_t *b, uint32_t type)
{
	struct wire_msg m;

	simple(&m, type);
	return encode(&m, b);
}

/* ---------------------------------------------------------- round trips */

static void test_roundtrip_hello(void **state)
{
	static uint8_t b[BUF_MAX];
	struct wire_msg m;
	size_t len;

	/* One region with the longest name, the printable extremes and the
	 * highest page of the address space. */
	hello(&m, 1);
	strcpy(m.hello.regions[0].name, " guest-ram~0123456789abcdefghi~");
	assert_int_equal(strlen(m.hello.regions[0].name), UFFDMOVE_NAME_MAX);
	m.hello.regions[0].addr = 0xffffffffffffe000ULL;
	m.hello.regions[0].len = PAGE;
	m.hello.regions[0].flags = WIRE_REGION_THP;
	len = round_trip(&m, b);
	assert_int_equal(len, HDR + 32 + REG_LEN);

	hello(&m, UFFDMOVE_REGIONS_MAX);
	len = round_trip(&m, b);
	assert_int_equal(len, HDR + 32 + UFFDMOVE_REGIONS_MAX * REG_LEN);
	assert_int_equal(len, WIRE_MSG_MAX);

	/* Adjacent regions touch but do not overlap. */
	hello(&m, 2);
	m.hello.regions[1].addr = m.hello.regions[0].addr +
				  m.hello.regions[0].len;
	round_trip(&m, b);
}

static void test_roundtrip_accept(void **state)
{
	uint8_t b[BUF_MAX];
	struct wire_msg m;

	simple(&m, WIRE_ACCEPT);
	m.accept.primitive = UFFDMOVE_PRIM_COPY;
	m.accept.populated = 1ULL << 40;
	assert_int_equal(round_trip(&m, b), HDR + 40);
	m.accept.primitive = UFFDMOVE_PRIM_MOVE;
	assert_int_equal(round_trip(&m, b), HDR + 40);
	/* Declining a pull: NONE, and why in the cookie word. */
	simple(&m, WIRE_ACCEPT);
	m.accept.primitive = UFFDMOVE_PRIM_NONE;
	m.accept.cookie = UFFDMOVE_PULL_WHY_SAME_MM;
	assert_int_equal(round_trip(&m, b), HDR + 40);
	pull_accept(&m, 1);
	assert_int_equal(round_trip(&m, b), HDR + 40 + 8);
	pull_accept(&m, UFFDMOVE_REGIONS_MAX);
	assert_int_equal(round_trip(&m, b),
			 HDR + 40 + 8 * UFFDMOVE_REGIONS_MAX);
}

static void test_roundtrip_reject_abort(void **state)
{
	static const uint32_t types[] = { WIRE_REJECT, WIRE_ABORT };
	uint8_t b[BUF_MAX];
	struct wire_msg m, out;
	unsigned int t;

	for (t = 0; t < 2; t++) {
		reason(&m, types[t], EPERM, "peer uid 1000 is not uid 0");
		assert_int_equal(round_trip(&m, b), HDR + 8 + WIRE_TEXT_MAX);
		/* errno bounds: 1 and 4095 are valid */
		reason(&m, types[t], 1, "");
		round_trip(&m, b);
		reason(&m, types[t], 4095, "max");
		round_trip(&m, b);

		/* A text filling the field is cut to WIRE_TEXT_MAX - 1. */
		memset(&m, 0, sizeof(m));
		m.type = types[t];
		m.reason.errnum = EIO;
		memset(m.reason.text, 'y', sizeof(m.reason.text));
		encode(&m, b);
		assert_int_equal(decode(b, HDR + 8 + WIRE_TEXT_MAX, &out,
					NULL, 0), 0);
		assert_int_equal(strlen(out.reason.text), WIRE_TEXT_MAX - 1);
		assert_int_equal(out.reason.errnum, EIO);
	}
}

static void test_roundtrip_empty(void **state)
{
	uint8_t b[BUF_MAX];
	struct wire_msg m;

	simple(&m, WIRE_GO);
	assert_int_equal(round_trip(&m, b), HDR);
	simple(&m, WIRE_FIN);
	assert_int_equal(round_trip(&m, b), HDR);
	simple(&m, WIRE_QUERY);
	assert_int_equal(round_trip(&m, b), HDR);
}

static void test_roundtrip_stats(void **state)
{
	uint8_t b[BUF_MAX];
	struct wire_msg m;
	size_t len;

	/* DONE with every counter a distinct value */
	memset(&m, 0, sizeof(m));
	m.type = WIRE_DONE;
	stats(&m.stats, 0);
	len = round_trip(&m, b);
	assert_int_equal(len, HDR + WIRE_STATS_WORDS * 8);

	memset(&m, 0, sizeof(m));
	m.type = WIRE_PROGRESS;
	stats(&m.stats, 0x00ff00ff00ff00ffULL);
	assert_int_equal(round_trip(&m, b), HDR + WIRE_STATS_WORDS * 8);

	/* all ones survive too in the counters (no sign or width games) */
	memset(&m.stats, 0xff, offsetof(struct uffdmove_stats, reserved));
	m.stats.primitive = UFFDMOVE_PRIM_COPY;
	m.stats.move_unused_reason = UFFDMOVE_WHY_CROSS_MM;
	m.stats.pull_unused_reason = UFFDMOVE_PULL_WHY_DENIED;
	m.stats.thp_collapsing = 0;	/* the target's own: not sent */
	m.stats.thp_uncollapsed = 0;
	round_trip(&m, b);
	/* unknown reasons are refused, on either side of the wire */
	m.stats.pull_unused_reason = UFFDMOVE_PULL_WHY_NO_THP + 1;
	assert_int_equal(wire_encode(&m, b, sizeof(b)), -EINVAL);
	m.stats.pull_unused_reason = 0;
	m.stats.primitive = UFFDMOVE_PRIM_PULL + 1;
	assert_int_equal(wire_encode(&m, b, sizeof(b)), -EINVAL);
}

static void test_roundtrip_range_done(void **state)
{
	uint8_t b[BUF_MAX];
	struct wire_msg m;

	ranges(&m, 0);
	assert_int_equal(round_trip(&m, b), HDR + 8);
	ranges(&m, 1);
	assert_int_equal(round_trip(&m, b), HDR + 8 + 16);
	ranges(&m, WIRE_RANGES_MAX);
	assert_int_equal(round_trip(&m, b), HDR + 8 + WIRE_RANGES_MAX * 16);
	/* RELEASE has the same body */
	simple(&m, WIRE_RELEASE);
	assert_int_equal(round_trip(&m, b), HDR + 8 + 5 * 16);
}

/*
 * The layout is the protocol: an old source and a new target must agree on
 * it. Pin the header, HELLO region, RANGE_DONE and stats word offsets.
 */
static void test_layout(void **state)
{
	static uint8_t b[BUF_MAX];
	struct wire_msg m;
	size_t len;

	len = hello_bytes(b, 2);
	assert_int_equal(get32(b, H_MAGIC), 0x564d4655u);
	assert_memory_equal(b, "UFMV", 4);
	assert_int_equal(get32(b, H_VT), 3u | (uint32_t)WIRE_HELLO << 16);
	assert_int_equal(get32(b, H_LEN), len);
	assert_int_equal(get32(b, H_RESV), 0);
	assert_int_equal(get64(b, HELLO_FEAT), 0x8000000000010a5bULL);
	assert_int_equal(get32(b, HELLO_N), 2);
	assert_int_equal(get32(b, HELLO_FLAGS), 0);
	assert_int_equal(get64(b, HELLO_CADDR), 0x00007ffc12345678ULL);
	assert_int_equal(get64(b, HELLO_COOKIE), 0xa5a5f00dcafe1234ULL);
	assert_memory_equal(b + reg_off(1, R_NAME), "ram1\0\0\0\0", 8);
	assert_int_equal(get64(b, reg_off(1, R_ADDR)),
			 0x100000000ULL + (1ULL << 30));
	assert_int_equal(get64(b, reg_off(1, R_LEN)), 2 * PAGE);
	assert_int_equal(get32(b, reg_off(1, R_PSZ)), 4096);
	assert_int_equal(get32(b, reg_off(1, R_FLAGS)), WIRE_REGION_THP);
	assert_int_equal(get64(b, reg_off(1, R_IOCTLS)),
			 0x10000000000001ULL);

	ranges(&m, 2);
	encode(&m, b);
	assert_int_equal(get32(b, BODY), 2);
	assert_int_equal(get32(b, BODY + 4), 0);
	assert_int_equal(get64(b, RANGES + 16), 0x7f0000000000ULL + (2 << 20));
	assert_int_equal(get64(b, RANGES + 24), (2ULL << 20) + 1);

	memset(&m, 0, sizeof(m));
	m.type = WIRE_DONE;
	stats(&m.stats, 0);
	encode(&m, b);
	assert_int_equal(get64(b, BODY + 0 * 8), m.stats.bytes_total);
	assert_int_equal(get64(b, BODY + 7 * 8), m.stats.faults);
	assert_int_equal(get64(b, BODY + 17 * 8), m.stats.elapsed_ns);
	assert_int_equal(get64(b, BODY + 18 * 8), m.stats.bytes_discard_raced);
	assert_int_equal(get64(b, BODY + 19 * 8), m.stats.bytes_pulled);
	assert_int_equal(get64(b, BODY + 20 * 8), m.stats.bytes_released);
	assert_int_equal(get64(b, BODY + 21 * 8),
			 m.stats.primitive |
			 (uint64_t)m.stats.move_unused_reason << 32);
	assert_int_equal(get64(b, BODY + 22 * 8), m.stats.pull_unused_reason);
	for (len = 23; len < WIRE_STATS_WORDS; len++)
		assert_int_equal(get64(b, BODY + len * 8), 0);

	/* ACCEPT(PULL): populated, cookie, pid, source addresses. */
	pull_accept(&m, 2);
	encode(&m, b);
	assert_int_equal(get32(b, BODY), UFFDMOVE_PRIM_PULL);
	assert_int_equal(get32(b, BODY + 4), 2);
	assert_int_equal(get64(b, ACC_POP), 3ULL << 30);
	assert_int_equal(get64(b, ACC_CADDR), 0x00007ffd00001000ULL);
	assert_int_equal(get64(b, ACC_COOKIE), 0x5eed5eed5eed5eedULL);
	assert_int_equal(get32(b, ACC_PID), 4242);
	assert_int_equal(get32(b, ACC_RESV), 0);
	assert_int_equal(get64(b, ACC_SRC + 8), 0x7f0100000000ULL);

	reason(&m, WIRE_ABORT, ENOMEM, "out of memory");
	encode(&m, b);
	assert_int_equal(get32(b, BODY), ENOMEM);
	assert_int_equal(get32(b, BODY + 4), 0);
	assert_string_equal((const char *)b + TEXT, "out of memory");
}

static void test_type_names(void **state)
{
	static const char *const names[] = {
		NULL, "HELLO", "ACCEPT", "REJECT", "GO", "PROGRESS",
		"RANGE_DONE", "DONE", "FIN", "ABORT", "QUERY", "PULL",
		"RELEASE",
	};
	uint32_t t;

	assert_int_equal(WIRE_TYPE_MAX, WIRE_RELEASE);
	for (t = WIRE_HELLO; t <= WIRE_TYPE_MAX; t++)
		assert_string_equal(wire_type_name(t), names[t]);
	assert_string_equal(wire_type_name(0), "UNKNOWN");
	assert_string_equal(wire_type_name(WIRE_TYPE_MAX + 1), "UNKNOWN");
	assert_string_equal(wire_type_name(UINT32_MAX), "UNKNOWN");
}

/* ------------------------------------------------------------ framing */

static void test_bad_header(void **state)
{
	uint8_t b[BUF_MAX], x[BUF_MAX];
	size_t len;

	len = simple_bytes(b, WIRE_GO);

	/* short header */
	expect_bad(b, 0, EPROTO, "shorter", "header");
	expect_bad(b, 1, EPROTO, "shorter", "header");
	expect_bad(b, HDR - 1, EPROTO, "shorter", "header");

	/* bad magic: a byte-swapped peer, and anything else */
	memcpy(x, b, len);
	put32(x, H_MAGIC, __builtin_bswap32(WIRE_MAGIC));
	expect_bad(x, len, EPROTO, "magic", NULL);
	put32(x, H_MAGIC, 0);
	expect_bad(x, len, EPROTO, "magic", NULL);

	/* wrong version */
	memcpy(x, b, len);
	put32(x, H_VT, 0 | WIRE_GO << 16);
	expect_bad(x, len, EPROTO, "version", NULL);
	put32(x, H_VT, 1 | WIRE_GO << 16);	/* before ACCEPT grew */
	expect_bad(x, len, EPROTO, "version", NULL);
	put32(x, H_VT, 2 | WIRE_GO << 16);	/* before pull */
	expect_bad(x, len, EPROTO, "version", NULL);
	put32(x, H_VT, 4 | WIRE_GO << 16);
	expect_bad(x, len, EPROTO, "version", NULL);
	put32(x, H_VT, 0xffff | WIRE_GO << 16);
	expect_bad(x, len, EPROTO, "version", NULL);

	/* unknown type */
	put32(x, H_VT, WIRE_VERSION | 0 << 16);
	expect_bad(x, len, EPROTO, "type", NULL);
	put32(x, H_VT, WIRE_VERSION | (WIRE_TYPE_MAX + 1) << 16);
	expect_bad(x, len, EPROTO, "type", NULL);
	put32(x, H_VT, WIRE_VERSION | 0xffffu << 16);
	expect_bad(x, len, EPROTO, "type", NULL);

	/* header length != received length */
	memcpy(x, b, len);
	put32(x, H_LEN, (uint32_t)len + 1);
	expect_bad(x, len, EPROTO, "GO", "header says");
	put32(x, H_LEN, (uint32_t)len - 1);
	expect_bad(x, len, EPROTO, "GO", "header says");
	put32(x, H_LEN, 0);
	expect_bad(x, len, EPROTO, "GO", "header says");
	put32(x, H_LEN, UINT32_MAX);
	expect_bad(x, len, EPROTO, "GO", "header says");

	/* header reserved word */
	memcpy(x, b, len);
	put32(x, H_RESV, 1);
	expect_bad(x, len, EPROTO, "header reserved", NULL);
	put32(x, H_RESV, 0x80000000u);
	expect_bad(x, len, EPROTO, "header reserved", NULL);
}

/* Truncating any valid message anywhere, or padding it, is an error. */
static void test_truncation(void **state)
{
	static uint8_t b[BUF_MAX], x[BUF_MAX];
	static struct wire_msg msgs[16], out;
	char why[256];
	unsigned int i, n = 0;
	size_t len, t;
	uint32_t type;

	for (type = WIRE_HELLO; type <= WIRE_TYPE_MAX; type++)
		simple(&msgs[n++], type);
	hello(&msgs[n++], 1);
	hello(&msgs[n++], UFFDMOVE_REGIONS_MAX);
	ranges(&msgs[n++], 0);
	ranges(&msgs[n++], WIRE_RANGES_MAX);

	for (i = 0; i < n; i++) {
		len = encode(&msgs[i], b);
		expect_ok(b, len);
		for (t = 0; t < len; t++) {
			/* as received: the header disagrees */
			why[0] = '\0';
			assert_int_equal(decode(b, t, &out, why, sizeof(why)),
					 -EPROTO);
			assert_true(why[0] != '\0');
			/* a consistent header over a short body */
			if (t < HDR)
				continue;
			memcpy(x, b, t);
			put32(x, H_LEN, (uint32_t)t);
			why[0] = '\0';
			if (decode(x, t, &out, why, sizeof(why)) != -EPROTO) {
				print_error("%s cut to %zu bytes: %s\n",
					    wire_type_name(msgs[i].type), t,
					    why);
				fail();
			}
			assert_true(why[0] != '\0');
		}
		/* one to 64 extra bytes, header agreeing */
		for (t = len + 1; t <= len + 64 && t <= sizeof(x); t++) {
			memset(x, 0, sizeof(x));
			memcpy(x, b, len);
			put32(x, H_LEN, (uint32_t)t);
			assert_int_equal(decode(x, t, &out, NULL, 0), -EPROTO);
		}
	}
}

static void test_why_buffer(void **state)
{
	uint8_t b[BUF_MAX];
	struct wire_msg m;
	char why[8];
	size_t len;

	len = simple_bytes(b, WIRE_GO);
	put32(b, H_MAGIC, 0);
	/* no buffer at all */
	assert_int_equal(decode(b, len, &m, NULL, 0), -EPROTO);
	assert_int_equal(decode(b, len, &m, NULL, 100), -EPROTO);
	/* a zero-length buffer is left alone */
	why[0] = 'Z';
	assert_int_equal(decode(b, len, &m, why, 0), -EPROTO);
	assert_int_equal(why[0], 'Z');
	/* a small one is truncated and terminated */
	memset(why, 'Z', sizeof(why));
	assert_int_equal(decode(b, len, &m, why, sizeof(why)), -EPROTO);
	assert_int_equal(strlen(why), sizeof(why) - 1);
	assert_memory_equal(why, "bad mag", 7);
}

/* --------------------------------------------------------------- HELLO */

static void test_hello_framing(void **state)
{
	static uint8_t b[BUF_MAX], x[BUF_MAX];
	size_t len;

	len = hello_bytes(b, 2);

	/* flags: PULL, or else why not (a known reason) */
	memcpy(x, b, len);
	put32(x, HELLO_FLAGS, WIRE_HELLO_PULL);
	expect_ok(x, len);
	put32(x, HELLO_FLAGS, UFFDMOVE_PULL_WHY_NO_THP << WIRE_HELLO_WHY_SHIFT);
	expect_ok(x, len);
	put32(x, HELLO_FLAGS, 2);
	expect_bad(x, len, EPROTO, "HELLO", "flags");
	put32(x, HELLO_FLAGS, 1u << 31);
	expect_bad(x, len, EPROTO, "HELLO", "flags");
	put32(x, HELLO_FLAGS,
	      (UFFDMOVE_PULL_WHY_NO_THP + 1) << WIRE_HELLO_WHY_SHIFT);
	expect_bad(x, len, EPROTO, "HELLO", "flags");
	put32(x, HELLO_FLAGS, WIRE_HELLO_PULL |
	      UFFDMOVE_PULL_WHY_DENIED << WIRE_HELLO_WHY_SHIFT);
	expect_bad(x, len, EPROTO, "HELLO", "flags");

	/* shorter than the fixed part */
	memcpy(x, b, len);
	expect_bad_len(x, HDR + 31, EPROTO, "HELLO", "short");
	expect_bad_len(x, HDR, EPROTO, "HELLO", "short");

	/* 0 regions, with and without a table */
	memcpy(x, b, len);
	put32(x, HELLO_N, 0);
	expect_bad(x, len, EPROTO, "HELLO", "region count");
	expect_bad_len(x, HDR + 32, EPROTO, "HELLO", "region count");

	/* 65 regions with a table of 65 valid ones */
	len = hello_bytes(b, UFFDMOVE_REGIONS_MAX);
	memcpy(x, b, len);
	memcpy(x + len, x + reg_off(UFFDMOVE_REGIONS_MAX - 1, 0), REG_LEN);
	strcpy((char *)x + len, "ram64");
	put64(x, len + R_ADDR, get64(x, reg_off(UFFDMOVE_REGIONS_MAX - 1,
						 R_ADDR)) + (1ULL << 30));
	put32(x, HELLO_N, UFFDMOVE_REGIONS_MAX + 1);
	expect_bad_len(x, len + REG_LEN, EPROTO, "HELLO", "region count");
	/* a count whose table would not fit any message */
	len = hello_bytes(b, 1);
	memcpy(x, b, len);
	put32(x, HELLO_N, UINT32_MAX);
	expect_bad(x, len, EPROTO, "HELLO", "region count");
	put32(x, HELLO_N, 0x04000001u);	/* * 64 wraps a u32 to 64 */
	expect_bad(x, len, EPROTO, "HELLO", "region count");

	/* table size mismatch */
	len = hello_bytes(b, 2);
	memcpy(x, b, len);
	put32(x, HELLO_N, 1);
	expect_bad(x, len, EPROTO, "HELLO", "region table");
	put32(x, HELLO_N, 3);
	expect_bad(x, len, EPROTO, "HELLO", "region table");
	memcpy(x, b, len);
	memset(x + len, 0, 32);
	expect_bad_len(x, len + 32, EPROTO, "HELLO", "region table");
	expect_bad_len(x, len - 1, EPROTO, "HELLO", "region table");
}

static void test_hello_names(void **state)
{
	static const uint8_t bad[] = { 0x01, 0x09, 0x0a, 0x1f, 0x7f, 0x80,
				       0xff };
	static uint8_t b[BUF_MAX], x[BUF_MAX];
	size_t len, i;
	unsigned int r;

	len = hello_bytes(b, 3);
	for (r = 0; r < 3; r++) {
		size_t name = reg_off(r, R_NAME);
		char where[32];

		snprintf(where, sizeof(where), "region %u", r);

		/* empty */
		memcpy(x, b, len);
		memset(x + name, 0, UFFDMOVE_NAME_MAX + 1);
		expect_bad(x, len, EPROTO, where, "name");

		/* not NUL-terminated inside its 32 bytes */
		memset(x + name, 'a', UFFDMOVE_NAME_MAX + 1);
		expect_bad(x, len, EPROTO, where, "name");

		/* non-printable, at the start, middle and end */
		for (i = 0; i < sizeof(bad); i++) {
			memcpy(x, b, len);
			x[name] = bad[i];
			expect_bad(x, len, EPROTO, where, "name");
			memcpy(x, b, len);
			x[name + 2] = bad[i];
			expect_bad(x, len, EPROTO, where, "name");
			memcpy(x, b, len);
			memset(x + name, 'n', UFFDMOVE_NAME_MAX);
			x[name + UFFDMOVE_NAME_MAX - 1] = bad[i];
			expect_bad(x, len, EPROTO, where, "name");
		}

		/* garbage after the NUL, right after and in the last byte */
		memcpy(x, b, len);
		x[name + 5] = 'x';
		expect_bad(x, len, EPROTO, where, "name");
		memcpy(x, b, len);
		x[name + UFFDMOVE_NAME_MAX] = 'x';
		expect_bad(x, len, EPROTO, where, "name");
		memcpy(x, b, len);
		x[name + UFFDMOVE_NAME_MAX] = 0x80;
		expect_bad(x, len, EPROTO, where, "name");

		/* 31 printable bytes and the NUL: fine */
		memcpy(x, b, len);
		memset(x + name, '~', UFFDMOVE_NAME_MAX);
		x[name] = 'A' + (char)r;
		expect_ok(x, len);
	}
}

static void test_hello_regions(void **state)
{
	static uint8_t b[BUF_MAX], x[BUF_MAX];
	size_t len;

	len = hello_bytes(b, 2);	/* ram0 4 KiB, ram1 8 KiB at +1 GiB */

	/* unknown region flags */
	memcpy(x, b, len);
	put32(x, reg_off(1, R_FLAGS), WIRE_REGION_THP | 2);
	expect_bad(x, len, EPROTO, "ram1", "flags");
	put32(x, reg_off(1, R_FLAGS), 0x80000000u);
	expect_bad(x, len, EPROTO, "ram1", "flags");

	/* page size other than 4096 */
	memcpy(x, b, len);
	put32(x, reg_off(0, R_PSZ), 0);
	expect_bad(x, len, EINVAL, "ram0", "page size");
	put32(x, reg_off(0, R_PSZ), 2048);
	expect_bad(x, len, EINVAL, "ram0", "page size");
	put32(x, reg_off(0, R_PSZ), 8192);
	expect_bad(x, len, EINVAL, "ram0", "page size");
	put32(x, reg_off(0, R_PSZ), 2u << 20);
	expect_bad(x, len, EINVAL, "ram0", "page size");
	put32(x, reg_off(0, R_PSZ), UINT32_MAX);
	expect_bad(x, len, EINVAL, "ram0", "page size");

	/* unaligned address */
	memcpy(x, b, len);
	put64(x, reg_off(1, R_ADDR), get64(b, reg_off(1, R_ADDR)) + 1);
	expect_bad(x, len, EINVAL, "ram1", "address");
	put64(x, reg_off(1, R_ADDR), get64(b, reg_off(1, R_ADDR)) + 2048);
	expect_bad(x, len, EINVAL, "ram1", "address");

	/* unaligned length */
	memcpy(x, b, len);
	put64(x, reg_off(1, R_LEN), PAGE + 1);
	expect_bad(x, len, EINVAL, "ram1", "length");
	put64(x, reg_off(1, R_LEN), PAGE - 1);
	expect_bad(x, len, EINVAL, "ram1", "length");

	/* zero length */
	put64(x, reg_off(1, R_LEN), 0);
	expect_bad(x, len, EINVAL, "ram1", "length");
	memcpy(x, b, len);
	put64(x, reg_off(0, R_LEN), 0);
	expect_bad(x, len, EINVAL, "ram0", "length");

	/* address + length overflows */
	memcpy(x, b, len);
	put64(x, reg_off(1, R_ADDR), 0xfffffffffffff000ULL);
	put64(x, reg_off(1, R_LEN), 2 * PAGE);
	expect_bad(x, len, EINVAL, "ram1", "overflow");
	put64(x, reg_off(1, R_ADDR), PAGE);
	put64(x, reg_off(1, R_LEN), 0xfffffffffffff000ULL);
	expect_bad(x, len, EINVAL, "ram1", "overflow");
	/* ... while the last page below the top is fine */
	put64(x, reg_off(1, R_ADDR), 0xffffffffffffe000ULL);
	put64(x, reg_off(1, R_LEN), PAGE);
	expect_ok(x, len);
}

static void test_hello_overlap_dup(void **state)
{
	static uint8_t b[BUF_MAX], x[BUF_MAX];
	uint64_t a0;
	size_t len;

	len = hello_bytes(b, 3);	/* ram0 4K, ram1 8K, ram2 12K */
	a0 = get64(b, reg_off(0, R_ADDR));

	/* ram2 identical to ram0 */
	memcpy(x, b, len);
	put64(x, reg_off(2, R_ADDR), a0);
	put64(x, reg_off(2, R_LEN), PAGE);
	expect_bad(x, len, EINVAL, "overlap", "ram2");
	/* ram2 ends one page into ram0 */
	put64(x, reg_off(2, R_ADDR), a0 - 2 * PAGE);
	put64(x, reg_off(2, R_LEN), 3 * PAGE);
	expect_bad(x, len, EINVAL, "overlap", "ram0");
	/* ram2 starts on ram0's only page */
	put64(x, reg_off(2, R_ADDR), a0);
	put64(x, reg_off(2, R_LEN), 100 * PAGE);
	expect_bad(x, len, EINVAL, "overlap", "ram2");
	/* ram2 contains ram0 and ram1 */
	put64(x, reg_off(2, R_ADDR), a0 - PAGE);
	put64(x, reg_off(2, R_LEN), 4ULL << 30);
	expect_bad(x, len, EINVAL, "overlap", "ram2");
	/* ram2 right before ram0 and right after ram1: no overlap */
	put64(x, reg_off(2, R_ADDR), a0 - 3 * PAGE);
	put64(x, reg_off(2, R_LEN), 3 * PAGE);
	expect_ok(x, len);
	put64(x, reg_off(2, R_ADDR), get64(b, reg_off(1, R_ADDR)) + 2 * PAGE);
	expect_ok(x, len);

	/* duplicate names, regions apart */
	memcpy(x, b, len);
	strcpy((char *)x + reg_off(2, R_NAME), "ram0");
	expect_bad(x, len, EINVAL, "ram0", "twice");
	memcpy(x, b, len);
	strcpy((char *)x + reg_off(2, R_NAME), "ram1");
	expect_bad(x, len, EINVAL, "ram1", "twice");
	/* a prefix is another name */
	memcpy(x, b, len);
	strcpy((char *)x + reg_off(2, R_NAME), "ram");
	expect_ok(x, len);
}

/* --------------------------------------------------------- other types */

static void test_accept(void **state)
{
	uint8_t b[BUF_MAX], x[BUF_MAX];
	struct wire_msg m;
	size_t len;

	len = simple_bytes(b, WIRE_ACCEPT);

	memcpy(x, b, len);
	put32(x, BODY, UFFDMOVE_PRIM_PULL + 1);
	expect_bad(x, len, EPROTO, "ACCEPT", "primitive");
	put32(x, BODY, UINT32_MAX);
	expect_bad(x, len, EPROTO, "ACCEPT", "primitive");

	/* NONE declines a pull, its cookie word a PULL_WHY_* */
	memcpy(x, b, len);
	put32(x, BODY, UFFDMOVE_PRIM_NONE);
	put64(x, ACC_COOKIE, UFFDMOVE_PULL_WHY_SAME_MM);
	expect_ok(x, len);
	put64(x, ACC_COOKIE, UFFDMOVE_PULL_WHY_NO_THP + 1);
	expect_bad(x, len, EPROTO, "ACCEPT", "cookie");
	put64(x, ACC_COOKIE, 0);
	put64(x, ACC_CADDR, 0x1000);
	expect_bad(x, len, EPROTO, "ACCEPT", "cookie");

	/* push answers carry no cookie and no pid */
	memcpy(x, b, len);
	put64(x, ACC_COOKIE, 1);
	expect_bad(x, len, EPROTO, "ACCEPT", "cookie");
	memcpy(x, b, len);
	put32(x, ACC_PID, 1);
	expect_bad(x, len, EPROTO, "ACCEPT", "pid");
	memcpy(x, b, len);
	put32(x, ACC_RESV, 1);
	expect_bad(x, len, EPROTO, "ACCEPT", "reserved");

	/* body length */
	memcpy(x, b, len);
	expect_bad_len(x, len - 1, EPROTO, "ACCEPT", "body");
	expect_bad_len(x, HDR + 4, EPROTO, "ACCEPT", "body");
	x[len] = 0;
	expect_bad_len(x, len + 1, EPROTO, "ACCEPT", "body");
	/* source addresses belong to PULL only */
	memcpy(x, b, len);
	put32(x, BODY + 4, 1);
	memset(x + len, 0, 8);
	expect_bad_len(x, len + 8, EPROTO, "ACCEPT", "source addresses");

	/* ACCEPT(PULL) */
	pull_accept(&m, 2);
	len = encode(&m, b);
	memcpy(x, b, len);
	put32(x, ACC_PID, 0);
	expect_bad(x, len, EPROTO, "ACCEPT", "pid");
	put32(x, ACC_PID, (uint32_t)INT32_MAX + 1);
	expect_bad(x, len, EPROTO, "ACCEPT", "pid");
	memcpy(x, b, len);
	put32(x, BODY + 4, 3);		/* more addresses than sent */
	expect_bad(x, len, EPROTO, "ACCEPT", "source addresses");
	put32(x, BODY + 4, 0);		/* PULL without addresses */
	expect_bad_len(x, ACC_SRC, EPROTO, "ACCEPT", "source addresses");
	put32(x, BODY + 4, UFFDMOVE_REGIONS_MAX + 1);
	expect_bad_len(x, len, EPROTO, "ACCEPT", "source addresses");
}

static void test_reject_abort(void **state)
{
	static const uint32_t types[] = { WIRE_REJECT, WIRE_ABORT };
	uint8_t b[BUF_MAX], x[BUF_MAX];
	struct wire_msg m;
	unsigned int t;
	size_t len;

	for (t = 0; t < 2; t++) {
		const char *name = wire_type_name(types[t]);

		len = simple_bytes(b, types[t]);

		memcpy(x, b, len);
		put32(x, BODY, 0);
		expect_bad(x, len, EPROTO, name, "errno");
		put32(x, BODY, 4096);
		expect_bad(x, len, EPROTO, name, "errno");
		put32(x, BODY, (uint32_t)-EPERM);	/* sent negated */
		expect_bad(x, len, EPROTO, name, "errno");
		put32(x, BODY, 4095);
		expect_ok(x, len);

		memcpy(x, b, len);
		put32(x, BODY + 4, 1);
		expect_bad(x, len, EPROTO, name, "reserved");

		/* body length */
		memcpy(x, b, len);
		expect_bad_len(x, len - 1, EPROTO, name, "body");
		x[len] = 0;
		expect_bad_len(x, len + 1, EPROTO, name, "body");
		expect_bad_len(x, HDR + 8, EPROTO, name, "body");

		/* the text need not be terminated: the decoder does it */
		memcpy(x, b, len);
		memset(x + TEXT, 'q', WIRE_TEXT_MAX);
		expect_ok(x, len);
		assert_int_equal(decode(x, len, &m, NULL, 0), 0);
		assert_int_equal(strlen(m.reason.text), WIRE_TEXT_MAX - 1);
	}
}

static void test_stats_msgs(void **state)
{
	static const uint32_t types[] = { WIRE_PROGRESS, WIRE_DONE };
	uint8_t b[BUF_MAX], x[BUF_MAX];
	unsigned int t, w;
	size_t len;

	for (t = 0; t < 2; t++) {
		const char *name = wire_type_name(types[t]);

		len = simple_bytes(b, types[t]);

		/* the reasons: known values only, high halves zero */
		memcpy(x, b, len);
		put64(x, BODY + 22 * 8, 1ULL << 32);
		expect_bad(x, len, EPROTO, name, "reasons");
		put64(x, BODY + 22 * 8, UFFDMOVE_PULL_WHY_NO_THP + 1);
		expect_bad(x, len, EPROTO, name, "reasons");
		memcpy(x, b, len);
		put64(x, BODY + 21 * 8, UFFDMOVE_PRIM_PULL + 1);
		expect_bad(x, len, EPROTO, name, "primitive");

		/* each reserved stats word, low and high bit */
		for (w = 23; w < WIRE_STATS_WORDS; w++) {
			char word[32];

			snprintf(word, sizeof(word), "reserved stats word %u",
				 w);
			memcpy(x, b, len);
			put64(x, BODY + w * 8, 1);
			expect_bad(x, len, EPROTO, name, word);
			put64(x, BODY + w * 8, 1ULL << 63);
			expect_bad(x, len, EPROTO, name, word);
		}

		/* body length: a word short, a word long, empty */
		memcpy(x, b, len);
		expect_bad_len(x, len - 8, EPROTO, name, "body");
		memset(x + len, 0, 8);
		expect_bad_len(x, len + 8, EPROTO, name, "body");
		expect_bad_len(x, HDR, EPROTO, name, "body");
	}
}

static void test_range_done(void **state)
{
	static uint8_t b[BUF_MAX], x[BUF_MAX];
	struct wire_msg m;
	size_t len;

	ranges(&m, WIRE_RANGES_MAX);
	len = encode(&m, b);

	/* 65 ranges with the bytes for 65 */
	memcpy(x, b, len);
	memset(x + len, 0, 16);
	put32(x, BODY, WIRE_RANGES_MAX + 1);
	expect_bad_len(x, len + 16, EPROTO, "RANGE_DONE", "ranges");
	put32(x, BODY, UINT32_MAX);
	expect_bad(x, len + 16, EPROTO, "RANGE_DONE", "ranges");
	put32(x, BODY, 0x10000001u);	/* * 16 wraps a u32 to 16 */
	expect_bad_len(x, HDR + 8 + 16, EPROTO, "RANGE_DONE", "ranges");

	/* count and size disagree */
	memcpy(x, b, len);
	put32(x, BODY, WIRE_RANGES_MAX - 1);
	expect_bad(x, len, EPROTO, "RANGE_DONE", "ranges");
	put32(x, BODY, 1);
	expect_bad_len(x, HDR + 8, EPROTO, "RANGE_DONE", "ranges");
	expect_bad_len(x, HDR + 8 + 8, EPROTO, "RANGE_DONE", "ranges");

	/* reserved word */
	memcpy(x, b, len);
	put32(x, BODY + 4, 1);
	expect_bad(x, len, EPROTO, "RANGE_DONE", "reserved");

	/* shorter than the count */
	memcpy(x, b, len);
	expect_bad_len(x, HDR + 4, EPROTO, "RANGE_DONE", "short");
	expect_bad_len(x, HDR, EPROTO, "RANGE_DONE", "short");
}

static void test_empty_bodies(void **state)
{
	static const uint32_t types[] = { WIRE_GO, WIRE_FIN };
	uint8_t b[BUF_MAX], x[BUF_MAX];
	unsigned int t;
	size_t len;

	for (t = 0; t < 2; t++) {
		const char *name = wire_type_name(types[t]);

		len = simple_bytes(b, types[t]);
		memcpy(x, b, len);
		memset(x + len, 0, 8);
		expect_bad_len(x, HDR + 1, EPROTO, name, "body");
		expect_bad_len(x, HDR + 8, EPROTO, name, "body");
	}
}

/* ------------------------------------------------------------- encoder */

/* Returns 1 (and says so) when wire_encode does not refuse @m. */
#define expect_encode_einval(m, cap) \
	expect_encode_einval_(m, cap, __FILE__, __LINE__)

static int expect_encode_einval_(const struct wire_msg *m, size_t cap,
				 const char *file, int line)
{
	static uint8_t b[BUF_MAX];
	int ret = wire_encode(m, b, cap);

	if (ret != -EINVAL) {
		print_error("%s:%d: wire_encode(%s) returned %d, expected -EINVAL\n",
			    file, line, wire_type_name(m->type), ret);
		return 1;
	}
	return 0;
}

/* Refusals about the frame: type, counts, buffer size. */
static void test_encode_refuses_frame(void **state)
{
	static uint8_t b[BUF_MAX];
	struct wire_msg m;
	int bad = 0, len;

	simple(&m, WIRE_GO);
	m.type = 0;
	bad += expect_encode_einval(&m, WIRE_MSG_MAX);
	m.type = WIRE_TYPE_MAX + 1;
	bad += expect_encode_einval(&m, WIRE_MSG_MAX);
	m.type = UINT32_MAX;
	bad += expect_encode_einval(&m, WIRE_MSG_MAX);

	hello(&m, UFFDMOVE_REGIONS_MAX);
	m.hello.n_regions = UFFDMOVE_REGIONS_MAX + 1;
	bad += expect_encode_einval(&m, sizeof(b));
	m.hello.n_regions = UINT32_MAX;
	bad += expect_encode_einval(&m, sizeof(b));

	ranges(&m, WIRE_RANGES_MAX);
	m.ranges.n = WIRE_RANGES_MAX + 1;
	bad += expect_encode_einval(&m, sizeof(b));

	/* the buffer: one byte short is refused, exact fits */
	hello(&m, 2);
	bad += expect_encode_einval(&m, HDR + 32 + 2 * REG_LEN - 1);
	bad += expect_encode_einval(&m, 0);
	simple(&m, WIRE_GO);
	bad += expect_encode_einval(&m, HDR - 1);
	assert_int_equal(bad, 0);

	len = wire_encode(&m, b, HDR);
	assert_int_equal(len, HDR);
	hello(&m, 2);
	len = wire_encode(&m, b, HDR + 32 + 2 * REG_LEN);
	assert_int_equal(len, HDR + 32 + 2 * REG_LEN);
}

/*
 * wire.h: "Returns the length, or -EINVAL for a message that would not
 * decode." Every message below would be refused by wire_decode, so the
 * encoder must refuse it rather than put it on the wire.
 */
static void test_encode_refuses_undecodable(void **state)
{
	struct wire_msg m;
	int bad = 0;

	hello(&m, 0);
	bad += expect_encode_einval(&m, WIRE_MSG_MAX);
	hello(&m, 2);
	m.hello.regions[1].name[0] = '\0';
	bad += expect_encode_einval(&m, WIRE_MSG_MAX);
	hello(&m, 2);
	m.hello.regions[1].name[1] = '\n';
	bad += expect_encode_einval(&m, WIRE_MSG_MAX);
	hello(&m, 2);
	m.hello.regions[1].flags = 4;
	bad += expect_encode_einval(&m, WIRE_MSG_MAX);
	hello(&m, 2);
	m.hello.regions[1].page_size = 2u << 20;
	bad += expect_encode_einval(&m, WIRE_MSG_MAX);
	hello(&m, 2);
	m.hello.regions[1].len = 0;
	bad += expect_encode_einval(&m, WIRE_MSG_MAX);
	hello(&m, 2);
	m.hello.regions[1].addr += 512;
	bad += expect_encode_einval(&m, WIRE_MSG_MAX);
	hello(&m, 2);
	m.hello.regions[1].addr = 0xfffffffffffff000ULL;
	m.hello.regions[1].len = 2 * PAGE;
	bad += expect_encode_einval(&m, WIRE_MSG_MAX);
	hello(&m, 2);
	m.hello.regions[1].addr = m.hello.regions[0].addr;
	bad += expect_encode_einval(&m, WIRE_MSG_MAX);
	hello(&m, 2);
	strcpy(m.hello.regions[1].name, m.hello.regions[0].name);
	bad += expect_encode_einval(&m, WIRE_MSG_MAX);

	simple(&m, WIRE_ACCEPT);
	m.accept.cookie = 1;		/* a cookie without PULL */
	bad += expect_encode_einval(&m, WIRE_MSG_MAX);
	m.accept.primitive = 7;
	bad += expect_encode_einval(&m, WIRE_MSG_MAX);
	pull_accept(&m, 1);
	m.accept.pid = 0;
	bad += expect_encode_einval(&m, WIRE_MSG_MAX);
	pull_accept(&m, 1);
	m.accept.n_src = UFFDMOVE_REGIONS_MAX + 1;
	bad += expect_encode_einval(&m, WIRE_MSG_MAX);

	reason(&m, WIRE_REJECT, 0, "no errno");
	bad += expect_encode_einval(&m, WIRE_MSG_MAX);
	reason(&m, WIRE_ABORT, 4096, "errno too large");
	bad += expect_encode_einval(&m, WIRE_MSG_MAX);

	if (bad) {
		print_error("wire_encode accepted %d message(s) that wire_decode refuses\n",
			    bad);
		fail();
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip_hello),
		cmocka_unit_test(test_roundtrip_accept),
		cmocka_unit_test(test_roundtrip_reject_abort),
		cmocka_unit_test(test_roundtrip_empty),
		cmocka_unit_test(test_roundtrip_stats),
		cmocka_unit_test(test_roundtrip_range_done),
		cmocka_unit_test(test_layout),
		cmocka_unit_test(test_type_names),
		cmocka_unit_test(test_bad_header),
		cmocka_unit_test(test_truncation),
		cmocka_unit_test(test_why_buffer),
		cmocka_unit_test(test_hello_framing),
		cmocka_unit_test(test_hello_names),
		cmocka_unit_test(test_hello_regions),
		cmocka_unit_test(test_hello_overlap_dup),
		cmocka_unit_test(test_accept),
		cmocka_unit_test(test_reject_abort),
		cmocka_unit_test(test_stats_msgs),
		cmocka_unit_test(test_range_done),
		cmocka_unit_test(test_empty_bodies),
		cmocka_unit_test(test_encode_refuses_frame),
		cmocka_unit_test(test_encode_refuses_undecodable),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
