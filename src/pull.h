/* SPDX-License-Identifier: MIT */
/*
 * The new VMM pulls (doc/design.md, "Pull"): the handshake's pull branch
 * (pull.c), and the driver that runs the transfer core in this process,
 * with pullers and a fault thread of our own (pull_run.c). The uffd never
 * leaves us.
 */
#ifndef UFFDMOVE_PULL_H
#define UFFDMOVE_PULL_H

#include <stdbool.h>
#include <sys/types.h>

#include "faults.h"
#include "mover.h"
#include "stage.h"
#include "uffdmove.h"

#define PULL_THREADS_MAX	STAGE_PULLERS_MAX

struct uffdmove_target;
struct wire_msg;

/* The pull's state, the target's t->pull: pull.c sets it up, pull_run.c
 * runs it. */
struct pull {
	struct mover m;
	struct faults faults;
	pthread_t fault_thread, pullers[PULL_THREADS_MAX];
	size_t npullers;
	bool fault_running;
	int efd;		/* wakes the fault thread: stop */
	int done_efd;		/* in the target's epoll set: look at us */
	bool stop;		/* atomic */
	bool done_told;		/* atomic: done_efd written at the end */
	uint64_t released_ns;	/* the fault thread last sent RELEASE */
	uint64_t frequent_ns;	/* faults last came fast: fault_rate() */
};

/* Whether to ask to pull (else t->pull_why says why not). */
bool pull_wanted(struct uffdmove_target *t);
/*
 * The source answered our HELLO(PULL) with @ans; @peer is the socket's
 * peer. Prove we can read the source and set the pull up (0, PULL sent),
 * or fall back to push: HELLO with our uffd, and its ACCEPT in @ans.
 * 0 or the handshake's error.
 */
int pull_answer(struct uffdmove_target *t, struct wire_msg *ans, pid_t peer);
/* From the commit: pullers and the fault thread run. 0 or -errno. */
int pull_start(struct uffdmove_target *t);
/* Threads stop and leave the uffd alone; safe to call again. */
void pull_stop(struct uffdmove_target *t);
/* Every chunk is in (1), not yet (0), or the pull's fatal -errno. */
int pull_state(struct uffdmove_target *t);
/* Discards our fault thread read but has not counted yet are counted
 * in t->st on return (mover_events_settle()). */
int pull_settle(struct uffdmove_target *t);
/* Bytes of holes our fault thread has filled with the zero page so far. */
uint64_t pull_zeroed(struct uffdmove_target *t);
/* What failed, when pull_state() is negative. */
const char *pull_error(struct uffdmove_target *t);
/* Counters now, as target stats. */
void pull_stats(struct uffdmove_target *t, struct uffdmove_stats *st);
/* THP chunks that arrived as small pages go to the collapse list; the
 * last ranges go to the source. */
void pull_finish(struct uffdmove_target *t);
/* Take our fd out of the target's epoll set: the end is being checked. */
void pull_unwatch(struct uffdmove_target *t);
void pull_free(struct uffdmove_target *t);

#endif /* UFFDMOVE_PULL_H */
