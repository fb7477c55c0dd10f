/* SPDX-License-Identifier: MIT */
/* What the library asks of the probe internally: never a fork. */
#ifndef UFFDMOVE_PROBE_H
#define UFFDMOVE_PROBE_H

#include <stdbool.h>

#include "uffdmove.h"

/* uffdmove_probe() without the cross-process MOVE trial (reported false). */
void probe_local(struct uffdmove_caps *caps);
/* UFFDMOVE_THP_* from sysfs: cheap, nothing tried. */
uint32_t probe_thp_mode(void);
/* probe_cross.c: one real UFFDIO_MOVE into a child's mm (forks). */
bool probe_cross_move(void);
/* Whether the caller already ran the cross-process trial, and its answer. */
bool probe_cross_move_known(bool *works);

#endif /* UFFDMOVE_PROBE_H */
