// SPDX-License-Identifier: MIT
/*
 * Seed corpus for fuzz-wire: one valid message per type (and the size
 * extremes of HELLO and RANGE_DONE), written with wire_encode into the
 * directory given as the only argument. Each seed is decoded back before
 * it is written, so a seed the decoder refuses fails the build instead of
 * quietly weakening the fuzzer.
 *
 *	gen-corpus DIR
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

static const char *dir;
static unsigned int nseeds;

/* A message of @type, every other field zero. */
static void blank(struct wire_msg *m, uint32_t type)
{
	memset(m, 0, sizeof(*m));
	m->type = type;
}

static void hello(struct wire_msg *m, unsigned int n)
{
	unsigned int i;

	blank(m, WIRE_HELLO);
	m->hello.features = 0x1fb;
	m->hello.n_regions = n;
	m->hello.mm_cookie_addr = 0x7ffc0000a000ULL;
	m->hello.mm_cookie = 0x243f6a8885a308d3ULL;
	for (i = 0; i < n; i++) {
		struct wire_region *r = &m->hello.regions[i];

		snprintf(r->name, sizeof(r->name), "ram%u", i);
		r->addr = 0x7f0000000000ULL + (unsigned long long)i * (1ULL << 30);
		r->len = (i % 3 + 1) * (2ULL << 20);
		r->page_size = 4096;
		r->flags = i % 2 ? WIRE_REGION_THP : 0;
		r->ioctls = 0x1c;
	}
}

/* REJECT or ABORT. */
static void reason(struct wire_msg *m, uint32_t type, uint32_t errnum,
		   const char *text)
{
	blank(m, type);
	m->reason.errnum = errnum;
	snprintf(m->reason.text, sizeof(m->reason.text), "%s", text);
}

/* RANGE_DONE of @n adjacent 2 MiB chunks. */
static void ranges(struct wire_msg *m, unsigned int n)
{
	unsigned int i;

	blank(m, WIRE_RANGE_DONE);
	m->ranges.n = n;
	for (i = 0; i < n; i++) {
		m->ranges.ranges[i].start = 0x7f0000000000ULL +
					    i * (2ULL << 20);
		m->ranges.ranges[i].len = 2ULL << 20;
	}
}

static void emit(const struct wire_msg *m, const char *variant)
{
	static struct wire_msg back;
	unsigned char buf[WIRE_MSG_MAX];
	char path[4096], why[256];
	FILE *f;
	int len, ret;

	len = wire_encode(m, buf, sizeof(buf));
	if (len < 0) {
		fprintf(stderr, "gen-corpus: wire_encode(%s %s): %s\n",
			wire_type_name(m->type), variant, strerror(-len));
		exit(1);
	}
	ret = wire_decode(buf, (size_t)len, &back, why, sizeof(why));
	if (ret) {
		fprintf(stderr, "gen-corpus: seed %s %s does not decode: %s\n",
			wire_type_name(m->type), variant, why);
		exit(1);
	}
	snprintf(path, sizeof(path), "%s/%02u-%s-%s", dir, nseeds++,
		 wire_type_name(m->type), variant);
	f = fopen(path, "wb");
	if (!f || fwrite(buf, 1, (size_t)len, f) != (size_t)len ||
	    fclose(f)) {
		fprintf(stderr, "gen-corpus: %s: %s\n", path, strerror(errno));
		exit(1);
	}
}

int main(int argc, char **argv)
{
	static struct wire_msg m;

	if (argc != 2) {
		fprintf(stderr, "usage: gen-corpus DIR\n");
		return 2;
	}
	dir = argv[1];

	hello(&m, 1);
	emit(&m, "1");
	hello(&m, 3);
	snprintf(m.hello.regions[2].name, sizeof(m.hello.regions[2].name),
		 "%s", "guest ram ~31 bytes long name!!");
	emit(&m, "3");
	hello(&m, UFFDMOVE_REGIONS_MAX);
	emit(&m, "64");
	hello(&m, 2);
	m.hello.flags = WIRE_HELLO_PULL;
	emit(&m, "pull");

	blank(&m, WIRE_ACCEPT);
	m.accept.primitive = UFFDMOVE_PRIM_COPY;
	emit(&m, "copy");
	m.accept.primitive = UFFDMOVE_PRIM_MOVE;
	emit(&m, "move");
	m.accept.primitive = UFFDMOVE_PRIM_NONE;
	m.accept.cookie = UFFDMOVE_PULL_WHY_OFF_SOURCE;
	emit(&m, "decline");
	blank(&m, WIRE_ACCEPT);
	m.accept.primitive = UFFDMOVE_PRIM_PULL;
	m.accept.n_src = 2;
	m.accept.pid = 4242;
	m.accept.cookie_addr = 0x7ffd00001000ULL;
	m.accept.cookie = 0x5eed5eed5eed5eedULL;
	m.accept.src[0] = 0x7f0000000000ULL;
	m.accept.src[1] = 0x7f0100000000ULL;
	emit(&m, "pull");

	reason(&m, WIRE_REJECT, EPERM,
	       "peer uid 1000 is not the expected uid 0");
	emit(&m, "eperm");

	blank(&m, WIRE_GO);
	emit(&m, "empty");

	blank(&m, WIRE_PROGRESS);
	m.stats.bytes_total = 1ULL << 30;
	m.stats.bytes_populated = 3ULL << 28;
	m.stats.bytes_copied = 1ULL << 28;
	m.stats.faults = 1234;
	m.stats.fault_ns_p50 = 5120;
	m.stats.fault_ns_p99 = 81920;
	m.stats.primitive = UFFDMOVE_PRIM_COPY;
	emit(&m, "partial");

	ranges(&m, 0);
	emit(&m, "0");
	ranges(&m, 3);
	emit(&m, "3");
	ranges(&m, WIRE_RANGES_MAX);
	emit(&m, "64");
	ranges(&m, 5);
	m.type = WIRE_RELEASE;
	emit(&m, "5");

	blank(&m, WIRE_DONE);
	m.stats.bytes_total = 1ULL << 30;
	m.stats.bytes_populated = 3ULL << 28;
	m.stats.bytes_moved = 1ULL << 28;
	m.stats.bytes_copied = 1ULL << 28;
	m.stats.bytes_zeroed = 1ULL << 20;
	m.stats.bytes_skipped = 1ULL << 28;
	m.stats.bytes_discarded = 1ULL << 21;
	m.stats.faults = 4321;
	m.stats.fault_ns_p50 = 4095;
	m.stats.fault_ns_p99 = 65535;
	m.stats.fault_ns_max = 1048575;
	m.stats.thp_moved = 64;
	m.stats.thp_copied = 32;
	m.stats.thp_collapsed = 31;
	m.stats.move_ebusy = 2;
	m.stats.pinned_skipped = 8192;
	m.stats.eagain_retries = 7;
	m.stats.elapsed_ns = 1500000000;
	m.stats.primitive = UFFDMOVE_PRIM_MOVE;
	m.stats.move_unused_reason = 0;
	emit(&m, "all");

	blank(&m, WIRE_FIN);
	emit(&m, "empty");

	reason(&m, WIRE_ABORT, ECONNRESET,
	       "source: target process exited during the handoff");
	emit(&m, "econnreset");

	printf("gen-corpus: %u seeds in %s\n", nseeds, dir);
	return 0;
}
