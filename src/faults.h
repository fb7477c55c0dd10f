/* SPDX-License-Identifier: MIT */
/*
 * Fault service over the transfer core, for whichever driver reads the
 * uffd: events first (a discard marks its range before any fault in it is
 * served), then faults; a fault that cannot be served yet waits in a list
 * with its read time and is tried again after the next read. None is ever
 * dropped: its thread sleeps until someone wakes it.
 */
#ifndef UFFDMOVE_FAULTS_H
#define UFFDMOVE_FAULTS_H

#include <stddef.h>
#include <stdint.h>

#include "compat.h"
#include "mover.h"

#define FAULTS_BATCH	64	/* uffd messages read at once: 4 ring loads */

/* A fault that could not be resolved yet, and when it was read. */
struct waiting {
	uint64_t addr;
	uint64_t t_read;
};

struct faults {
	struct mover *m;
	int uffd;
	struct waiting *waiting;
	size_t nwaiting, waiting_cap;
	uint64_t early;		/* served before the commit */
};

void faults_init(struct faults *f, struct mover *m);
void faults_fini(struct faults *f);
/* Messages read at @t_read, after @since (see mover_discarded()). 0 or
 * the session's end. */
int faults_handle(struct faults *f, const struct uffd_msg *msgs, size_t n,
		  uint64_t t_read, uint64_t since);
/* Read every pending event now: that is what EAGAIN waits for. Returns
 * how many messages were read, or the session's end. */
int faults_drain(struct faults *f);
/* Faults kept for later: read what is pending, then try them again. */
int faults_retry(struct faults *f);

#endif /* UFFDMOVE_FAULTS_H */
