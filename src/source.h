/* SPDX-License-Identifier: MIT */
/*
 * The old VMM's handle, shared by source.c (options, regions, the
 * handshake) and run.c (serving faults and pushing until the target has
 * everything). See doc/design.md.
 */
#ifndef UFFDMOVE_SOURCE_H
#define UFFDMOVE_SOURCE_H

#include <stdbool.h>
#include <stdint.h>

#include "error.h"
#include "mover.h"
#include "session.h"
#include "uffdmove.h"

enum source_state { SRC_NEW, SRC_ACCEPTED, SRC_RUNNING, SRC_ENDED };

struct uffdmove_source {
	struct uffdmove_source_opts opts;
	struct session_region *regions;
	size_t nregions;
	struct pinned_range *pinned;
	size_t npinned;
	enum source_state state;
	int sock;
	int efd;		/* wakes the fault loop: pushers, cancel */
	bool cancel;		/* atomic: uffdmove_source_cancel() */
	uint64_t features;	/* what the target negotiated */
	bool mover_ready;
	struct mover m;
	uint64_t t_start, t_end;
	struct err_buf err;
};

#endif /* UFFDMOVE_SOURCE_H */
