/* SPDX-License-Identifier: MIT */
/*
 * Inside the transfer core only (mover.c, mover_fill.c): the steps the
 * fill paths share with the core's bookkeeping. Drivers use mover.h.
 */
#ifndef UFFDMOVE_MOVER_CORE_H
#define UFFDMOVE_MOVER_CORE_H

#include "mover.h"

/* Take chunk @c from PENDING to CLAIMED; false if another thread has it. */
bool core_claim(struct mover *m, size_t c);
/* Put chunk @c in front of the queue (a fault wants it, or it resumes). */
void core_make_urgent(struct mover *m, size_t c);
/* The session primitive, decided by the first result that tells. */
void core_decide(struct mover *m, int prim, uint32_t why);
/* Whether chunk @ch goes by MOVE now; decides nothing. */
bool core_wants_move(const struct mover *m, const struct chunk *ch);
/* Wait until events were read since @seen, or a short while. */
void core_wait_events_read(struct mover *m, uint64_t seen);
/* MODE_MOVE: the kernel refused to move source page @src. */
void core_record_move_failure(struct mover *m, uint64_t src);

#endif /* UFFDMOVE_MOVER_CORE_H */
