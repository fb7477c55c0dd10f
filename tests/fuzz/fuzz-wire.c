// SPDX-License-Identifier: MIT
/*
 * libFuzzer target for the wire decoder: the one place where bytes from
 * another process are parsed. Built by tests/fuzz/run with clang and
 * -fsanitize=fuzzer,address,undefined; not part of `meson test`.
 *
 * Any input must be refused with -EPROTO or -EINVAL and a reason, or
 * decoded. A decoded message must re-encode to the same bytes (the decoder
 * accepts only the canonical encoding; REJECT/ABORT text after its NUL is
 * the one exception) and decode again to the same fields. Anything else
 * calls abort(), which libFuzzer reports as a crash with the input saved.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define HDR_LEN		16
#define REASON_FIXED	(HDR_LEN + 8)	/* header, errnum, reserved */

static void check(bool ok, const char *what, const char *why)
{
	if (ok)
		return;
	fprintf(stderr, "fuzz-wire: %s%s%s\n", what, why ? ": " : "",
		why ? why : "");
	abort();
}

#define SAME(field) do { if (a->field != b->field) return #field; } while (0)

/* The first field that differs between @a and @b, or NULL. */
static const char *differs(const struct wire_msg *a, const struct wire_msg *b)
{
	uint32_t i;

	SAME(type);
	switch (a->type) {
	case WIRE_HELLO:
		SAME(hello.features);
		SAME(hello.n_regions);
		SAME(hello.mm_cookie_addr);
		SAME(hello.mm_cookie);
		for (i = 0; i < a->hello.n_regions; i++) {
			if (strcmp(a->hello.regions[i].name,
				   b->hello.regions[i].name))
				return "hello.regions[].name";
			SAME(hello.regions[i].addr);
			SAME(hello.regions[i].len);
			SAME(hello.regions[i].page_size);
			SAME(hello.regions[i].flags);
			SAME(hello.regions[i].ioctls);
		}
		break;
	case WIRE_ACCEPT:
		SAME(accept.primitive);
		break;
	case WIRE_REJECT:
	case WIRE_ABORT:
		SAME(reason.errnum);
		if (strcmp(a->reason.text, b->reason.text))
			return "reason.text";
		break;
	case WIRE_PROGRESS:
	case WIRE_DONE:
		SAME(stats.bytes_total);
		SAME(stats.bytes_populated);
		SAME(stats.bytes_moved);
		SAME(stats.bytes_copied);
		SAME(stats.bytes_zeroed);
		SAME(stats.bytes_skipped);
		SAME(stats.bytes_discarded);
		SAME(stats.faults);
		SAME(stats.fault_ns_p50);
		SAME(stats.fault_ns_p99);
		SAME(stats.fault_ns_max);
		SAME(stats.thp_moved);
		SAME(stats.thp_copied);
		SAME(stats.thp_collapsed);
		SAME(stats.move_ebusy);
		SAME(stats.pinned_skipped);
		SAME(stats.eagain_retries);
		SAME(stats.elapsed_ns);
		SAME(stats.primitive);
		SAME(stats.move_unused_reason);
		break;
	case WIRE_RANGE_DONE:
		SAME(ranges.n);
		for (i = 0; i < a->ranges.n; i++) {
			SAME(ranges.ranges[i].start);
			SAME(ranges.ranges[i].len);
		}
		break;
	default:
		break;
	}
	return NULL;
}

/* What a decoded message must look like, whatever the input was. */
static void check_decoded(const struct wire_msg *m, size_t size)
{
	uint32_t i;

	check(m->type >= WIRE_HELLO && m->type <= WIRE_TYPE_MAX,
	      "decoded an unknown type", NULL);
	check(strcmp(wire_type_name(m->type), "UNKNOWN") != 0,
	      "decoded type has no name", NULL);
	check(size <= WIRE_MSG_MAX, "decoded more than WIRE_MSG_MAX bytes",
	      NULL);
	switch (m->type) {
	case WIRE_HELLO:
		check(m->hello.n_regions >= 1 &&
		      m->hello.n_regions <= UFFDMOVE_REGIONS_MAX,
		      "HELLO region count out of range", NULL);
		for (i = 0; i < m->hello.n_regions; i++) {
			const struct wire_region *r = &m->hello.regions[i];

			check(strnlen(r->name, sizeof(r->name)) > 0 &&
			      strnlen(r->name, sizeof(r->name)) <
			      sizeof(r->name),
			      "HELLO region name empty or unterminated", NULL);
			check(r->len > 0 && r->addr + r->len > r->addr,
			      "HELLO region empty or wrapping", NULL);
		}
		break;
	case WIRE_REJECT:
	case WIRE_ABORT:
		check(strnlen(m->reason.text, sizeof(m->reason.text)) <
		      sizeof(m->reason.text), "reason text unterminated",
		      NULL);
		check(m->reason.errnum >= 1 && m->reason.errnum <= 4095,
		      "reason errno out of range", NULL);
		break;
	case WIRE_RANGE_DONE:
		check(m->ranges.n <= WIRE_RANGES_MAX,
		      "RANGE_DONE count out of range", NULL);
		break;
	default:
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct wire_msg m, again;
	static uint8_t buf[WIRE_MSG_MAX];
	const char *field;
	char why[256];
	int ret, ret2, len;

	why[0] = '\0';
	ret = wire_decode(data, size, &m, why, sizeof(why));
	/* the same verdict without a message buffer */
	ret2 = wire_decode(data, size, &again, NULL, 0);
	check(ret == ret2, "verdict depends on the why buffer", why);
	if (ret) {
		check(ret == -EPROTO || ret == -EINVAL,
		      "wire_decode returned an errno outside wire.h", why);
		check(why[0] != '\0', "refused without a reason", NULL);
		check(strnlen(why, sizeof(why)) < sizeof(why),
		      "reason not terminated", NULL);
		return 0;
	}
	check_decoded(&m, size);

	len = wire_encode(&m, buf, sizeof(buf));
	check(len >= 0, "a decoded message does not re-encode", NULL);
	check((size_t)len == size, "re-encoding changed the length",
	      wire_type_name(m.type));
	if (m.type == WIRE_REJECT || m.type == WIRE_ABORT) {
		/* the text may carry bytes after its NUL; the rest may not
		 * differ */
		check(!memcmp(buf, data, REASON_FIXED),
		      "re-encoding changed the bytes", wire_type_name(m.type));
	} else {
		check(!memcmp(buf, data, size),
		      "re-encoding changed the bytes (non-canonical input accepted)",
		      wire_type_name(m.type));
	}

	why[0] = '\0';
	ret = wire_decode(buf, (size_t)len, &again, why, sizeof(why));
	check(ret == 0, "decode(encode(m)) failed", why);
	field = differs(&m, &again);
	check(!field, "decode(encode(m)) != m in field", field);
	return 0;
}
