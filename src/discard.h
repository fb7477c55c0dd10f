/* SPDX-License-Identifier: MIT */
/*
 * Discards during a handoff, fenced against fills (doc/design.md,
 * "Discards during a handoff"). MADV_DONTNEED on a missing page cannot be ordered against a
 * fill already in flight: the kernel completes the REMOVE event when it is
 * read and zaps afterwards, so a fill can land behind the zap. Instead the
 * range is made present first, as zero pages where it was missing (a fill
 * then finds the page there and never lands) and zeroed where data already
 * arrived. The memory of those is not given back: the guest may use the
 * pages again before the handoff ends, and a later release could not tell
 * its data from the zeros.
 */
#ifndef UFFDMOVE_DISCARD_H
#define UFFDMOVE_DISCARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "session.h"

struct discards {
	uint64_t **pages;	/* per region: one bit per page, lazily */
	size_t nregions;
	uint64_t bytes;		/* discarded through the fence */
};

int discards_init(struct discards *d, size_t nregions);
void discards_fini(struct discards *d);

/*
 * Zero [@addr, @addr + @len) of region @r (page aligned, inside it) so
 * that no fill can ever land there, through @uffd, and remember it.
 * 0 or -errno; -EAGAIN is retried while the holder reads the event that
 * causes it, up to @timeout_ms.
 */
int discards_fence(struct discards *d, int uffd,
		   const struct session_region *regions, size_t r,
		   uint64_t addr, uint64_t len, int timeout_ms);

/* Remember [@addr, @addr + @len) of region @r as discarded, with no fence
 * (after DONE: nothing fills guest RAM any more). 0 or -ENOMEM. */
int discards_note(struct discards *d, const struct session_region *regions,
		  size_t r, uint64_t addr, uint64_t len);

/* Was any page of [@addr, @addr + @len) in region @r discarded? */
bool discards_any(const struct discards *d,
		  const struct session_region *regions, size_t r,
		  uint64_t addr, uint64_t len);

#endif /* UFFDMOVE_DISCARD_H */
