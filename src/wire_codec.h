/* SPDX-License-Identifier: MIT */
/*
 * Inside the wire codec only (wire.c encodes, wire_decode.c decodes): the
 * byte cursor both read and write through, and the layout they share.
 */
#ifndef UFFDMOVE_WIRE_CODEC_H
#define UFFDMOVE_WIRE_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "error.h"
#include "util.h"
#include "wire.h"

#define HDR_LEN		16
#define REGION_LEN	64
#define STATS_LEN	(WIRE_STATS_WORDS * 8)
#define STATS_PACKED	2	/* primitive, reasons: two u32 per word */

/* uffdmove_stats counters in wire order (wire.c); the packed words follow. */
extern const size_t wire_stats_words[];
extern const size_t wire_stats_nwords;

/* The body length of @m as encoded (fixed part plus its tables). */
size_t wire_body_len(const struct wire_msg *m);

/* Cursor over a byte buffer; the codec reads and writes only through it. */
struct cur {
	unsigned char *p;
	size_t left;
};

static inline void put(struct cur *c, const void *v, size_t n)
{
	memcpy(c->p, v, n);
	c->p += n;
	c->left -= n;
}

static inline void put_u32(struct cur *c, uint32_t v)
{
	put(c, &v, sizeof(v));
}

static inline void put_u64(struct cur *c, uint64_t v)
{
	put(c, &v, sizeof(v));
}

static inline void get(struct cur *c, void *v, size_t n)
{
	memcpy(v, c->p, n);
	c->p += n;
	c->left -= n;
}

static inline uint32_t get_u32(struct cur *c)
{
	uint32_t v;

	get(c, &v, sizeof(v));
	return v;
}

static inline uint64_t get_u64(struct cur *c)
{
	uint64_t v;

	get(c, &v, sizeof(v));
	return v;
}

/* Why decoding failed, into the caller's buffer; returns -@err. */
#define fail(why, why_len, err, ...) err_format(why, why_len, err, __VA_ARGS__)

#endif /* UFFDMOVE_WIRE_CODEC_H */
