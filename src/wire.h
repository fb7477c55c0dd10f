/* SPDX-License-Identifier: MIT */
/*
 * The wire protocol between target and source: fixed-size little records in
 * host byte order (both ends run on one machine). Encoding and decoding are
 * pure functions over bytes: no fds, no sockets, so they can be fuzzed.
 *
 *	header	magic u32, version u16, type u16, length u32, reserved u32
 *	HELLO	features u64, n_regions u32, flags u32,
 *		mm_cookie_addr u64, mm_cookie u64, regions[n]
 *		(flags PULL: the target asks to pull; no uffd comes with it;
 *		else bits 8-15 say why not, UFFDMOVE_PULL_WHY_*)
 *	ACCEPT	primitive u32, n_src u32, populated u64 (bytes with data
 *		counted so far: 0, as chunks are counted when classified;
 *		DONE's figure is what the target must hold),
 *		cookie_addr u64, cookie u64, pid u32, reserved u32,
 *		src[n_src] u64
 *		(PULL: where we keep HELLO's cookie, for the target to read
 *		back, proving that pid is us and that it may read us; our
 *		pid (SO_PEERCRED names a socketpair's creator, not us); and
 *		each HELLO region's address here, in HELLO's order)
 *	REJECT	errnum u32, reserved u32, text[WIRE_TEXT_MAX]
 *	GO	(empty)			target committed: the guest runs
 *	PROGRESS, DONE	stats		source's counters
 *	RANGE_DONE n u32, reserved u32, ranges[n]	THP chunks complete
 *	FIN	(empty)			target unregistered after DONE
 *	ABORT	errnum u32, reserved u32, text[WIRE_TEXT_MAX]
 *	QUERY	(empty)			target: counters now, please (after
 *					DONE the answer is DONE again)
 *	PULL	(empty)			target read the cookie: it pulls
 *	RELEASE	n u32, reserved u32, ranges[n]	source ranges now in the
 *					target (pull): free them
 * Pull (doc/design.md, "Pull"): HELLO(PULL) -> ACCEPT(PULL) -> PULL; or
 * the target cannot read us and sends HELLO again with its uffd (push).
 */
#ifndef UFFDMOVE_WIRE_H
#define UFFDMOVE_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "uffdmove.h"

#define WIRE_MAGIC	0x564d4655u	/* "UFMV" */
#define WIRE_VERSION	3
#define WIRE_TEXT_MAX	192
#define WIRE_RANGES_MAX	64
#define WIRE_STATS_WORDS 24

enum wire_type {
	WIRE_HELLO = 1,
	WIRE_ACCEPT,
	WIRE_REJECT,
	WIRE_GO,
	WIRE_PROGRESS,
	WIRE_RANGE_DONE,
	WIRE_DONE,
	WIRE_FIN,
	WIRE_ABORT,
	WIRE_QUERY,
	WIRE_PULL,
	WIRE_RELEASE,
	WIRE_TYPE_MAX = WIRE_RELEASE,
};

#define WIRE_REGION_THP	(1u << 0)
#define WIRE_HELLO_PULL	(1u << 0)
/* Without PULL: why the target does not pull (UFFDMOVE_PULL_WHY_*). */
#define WIRE_HELLO_WHY_SHIFT	8
#define WIRE_HELLO_WHY_MASK	(0xffu << WIRE_HELLO_WHY_SHIFT)

struct wire_region {
	char name[UFFDMOVE_NAME_MAX + 1];
	uint64_t addr;
	uint64_t len;
	uint32_t page_size;
	uint32_t flags;		/* WIRE_REGION_* */
	uint64_t ioctls;	/* what UFFDIO_REGISTER returned */
};

struct wire_range {
	uint64_t start;
	uint64_t len;
};

struct wire_msg {
	uint32_t type;
	union {
		struct {
			uint64_t features;
			uint32_t n_regions;
			uint32_t flags;		/* WIRE_HELLO_* */
			/* A random value at an address of the target's: the
			 * source finds it in its own memory only when both
			 * are one process (SO_PEERCRED cannot tell: a
			 * socketpair made before fork reports the parent). */
			uint64_t mm_cookie_addr;
			uint64_t mm_cookie;
			struct wire_region regions[UFFDMOVE_REGIONS_MAX];
		} hello;
		struct {
			uint32_t primitive;
			uint32_t n_src;		/* PULL: one per region */
			uint64_t populated;
			uint64_t cookie_addr, cookie;	/* PULL */
			uint32_t pid;			/* PULL */
			uint64_t src[UFFDMOVE_REGIONS_MAX];
		} accept;
		struct {		/* REJECT and ABORT */
			uint32_t errnum;
			char text[WIRE_TEXT_MAX];
		} reason;
		struct uffdmove_stats stats;	/* PROGRESS and DONE */
		struct {		/* RANGE_DONE and RELEASE */
			uint32_t n;
			struct wire_range ranges[WIRE_RANGES_MAX];
		} ranges;
	};
};

/* The largest encoded message (a full HELLO). */
#define WIRE_MSG_MAX	(16 + 32 + UFFDMOVE_REGIONS_MAX * 64)

/* A HELLO without PULL: why the target does not pull, 0 if it did not say. */
static inline uint32_t wire_hello_why(const struct wire_msg *m)
{
	return (m->hello.flags & WIRE_HELLO_WHY_MASK) >> WIRE_HELLO_WHY_SHIFT;
}

/*
 * Encode @m into @buf (at least WIRE_MSG_MAX bytes).
 * Returns the length, or -EINVAL for a message that would not decode.
 */
int wire_encode(const struct wire_msg *m, void *buf, size_t cap);

/*
 * Decode and validate one message. Returns 0, or:
 *  -EPROTO  malformed: magic, version, type, length, count, reserved word,
 *	     name encoding, range count;
 *  -EINVAL  well-formed HELLO whose regions are unusable: empty, unaligned
 *	     to their page size, address + length overflowing, overlapping,
 *	     duplicate names.
 * @why gets a message naming the field; may be NULL.
 */
int wire_decode(const void *buf, size_t len, struct wire_msg *m,
		char *why, size_t why_len);

const char *wire_type_name(uint32_t type);

#endif /* UFFDMOVE_WIRE_H */
