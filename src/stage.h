/* SPDX-License-Identifier: MIT */
/*
 * Staging slots for the pull engine: the target's own memory per puller,
 * where process_vm_readv() lands the source's pages. A "huge" slot is
 * 2 MiB aligned and MADV_HUGEPAGE: the read faults one fresh THP there,
 * which one same-mm UFFDIO_MOVE puts in guest RAM as a PMD (one copy,
 * THP kept). Where no PMD fits (a sparse chunk, or one a fault already
 * put a page in), the "bounce" buffer is read into instead and stays
 * ours: UFFDIO_COPY fills guest RAM from it. Moving 4 KiB pages out of a
 * slot would cost a page fault and a zeroed page per 4 KiB to refill it,
 * which measured slower than the second copy.
 */
#ifndef UFFDMOVE_STAGE_H
#define UFFDMOVE_STAGE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

/* Pullers at most; they and the fault thread may each hold a slot. */
#define STAGE_PULLERS_MAX	16
#define STAGES_MAX		(STAGE_PULLERS_MAX + 1)

struct stage {
	void *huge, *bounce;	/* CHUNK_SZ each, mapped on first use */
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
/* Drop what is left in the huge slot (pages a MOVE did not take). */
void stage_clear(struct stage *st);

#endif /* UFFDMOVE_STAGE_H */
