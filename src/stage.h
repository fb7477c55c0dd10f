/* SPDX-License-Identifier: MIT */
/*
 * Staging slots for the pull engine: 2 MiB of the target's own memory per
 * puller, where process_vm_readv() lands the source's pages before one
 * same-mm UFFDIO_MOVE puts them in guest RAM. A "huge" slot is 2 MiB
 * aligned and MADV_HUGEPAGE: the read faults one THP there, which then
 * moves as one PMD. A "small" slot never gets THP: a sparse chunk must
 * not allocate (and zero) 2 MiB for a few pages.
 */
#ifndef UFFDMOVE_STAGE_H
#define UFFDMOVE_STAGE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#define STAGES_MAX	16

struct stage {
	void *huge, *small;	/* CHUNK_SZ each, mapped on first use */
};

struct stages {
	pthread_mutex_t lock;
	bool ready;
	struct stage slot[STAGES_MAX];
	bool busy[STAGES_MAX];
	size_t nslots;		/* mapped so far */
};

int stages_init(struct stages *s);
void stages_fini(struct stages *s);
/* A free slot, mapping one if needed; NULL when all STAGES_MAX are busy
 * or mapping failed (errno set). */
struct stage *stage_get(struct stages *s);
/* Give @st back; its memory is empty again (the caller moved or dropped
 * what it read). */
void stage_put(struct stages *s, struct stage *st);
/* The memory of @st's slot for a chunk (@huge or not). */
void *stage_mem(struct stage *st, bool huge);
/* Drop what is left in @mem (pages a MOVE did not take). */
void stage_clear(void *mem);

#endif /* UFFDMOVE_STAGE_H */
