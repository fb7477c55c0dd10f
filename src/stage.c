// SPDX-License-Identifier: MIT
/* Staging slots for the pull engine: see stage.h. */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "compat.h"
#include "mem.h"
#include "plan.h"
#include "stage.h"

int stages_init(struct stages *s)
{
	memset(s, 0, sizeof(*s));
	if (pthread_mutex_init(&s->lock, NULL))
		return -ENOMEM;
	s->ready = true;
	return 0;
}

void stages_fini(struct stages *s)
{
	size_t i;

	if (!s->ready)
		return;
	for (i = 0; i < s->nslots; i++) {
		if (s->slot[i].huge)
			munmap(s->slot[i].huge, CHUNK_SZ);
		if (s->slot[i].bounce)
			munmap(s->slot[i].bounce, CHUNK_SZ);
	}
	pthread_mutex_destroy(&s->lock);
	memset(s, 0, sizeof(*s));
}

/* Both memories of a new slot; the bounce buffer is touched once here
 * and stays. THP advice is only advice: a kernel without it still
 * stages correctly, in small pages. */
static int map_slot(struct stage *st)
{
	st->huge = mem_map_aligned(CHUNK_SZ, CHUNK_SZ);
	st->bounce = mem_map_aligned(CHUNK_SZ, CHUNK_SZ);
	if (!st->huge || !st->bounce) {
		if (st->huge)
			munmap(st->huge, CHUNK_SZ);
		if (st->bounce)
			munmap(st->bounce, CHUNK_SZ);
		st->huge = st->bounce = NULL;
		return -ENOMEM;
	}
	madvise(st->huge, CHUNK_SZ, MADV_HUGEPAGE);
	madvise(st->bounce, CHUNK_SZ, MADV_HUGEPAGE);
	memset(st->bounce, 0, CHUNK_SZ);
	return 0;
}

struct stage *stage_get(struct stages *s)
{
	struct stage *st = NULL;
	size_t i;

	pthread_mutex_lock(&s->lock);
	for (i = 0; i < s->nslots && s->busy[i]; i++)
		;
	if (i == s->nslots && i < STAGES_MAX && !map_slot(&s->slot[i]))
		s->nslots++;
	if (i < s->nslots) {
		s->busy[i] = true;
		st = &s->slot[i];
	} else {
		errno = ENOMEM;
	}
	pthread_mutex_unlock(&s->lock);
	return st;
}

void stage_put(struct stages *s, struct stage *st)
{
	pthread_mutex_lock(&s->lock);
	s->busy[st - s->slot] = false;
	pthread_mutex_unlock(&s->lock);
}

void stage_clear(struct stage *st)
{
	madvise(st->huge, CHUNK_SZ, MADV_DONTNEED);
}
