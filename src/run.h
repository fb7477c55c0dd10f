/* SPDX-License-Identifier: MIT */
/*
 * The source's run, shared by run.c (threads, the fault loop) and
 * run_talk.c (messages with the target, deadlines, how the run ends).
 */
#ifndef UFFDMOVE_RUN_H
#define UFFDMOVE_RUN_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "faults.h"
#include "mover.h"
#include "ring.h"
#include "source.h"

#define PROGRESS_EVERY_NS	(20 * 1000 * 1000ULL)
#define PROGRESS_CB_BYTES	(64ULL << 20)

struct run {
	struct uffdmove_source *s;
	struct ring ring;
	pthread_t *pushers;
	size_t npushers, started, exited;
	pthread_t releaser;	/* frees what arrived, see releaser_main() */
	bool releaser_started;
	bool needs_commit;
	bool done_sent, fin;
	bool arrivals_checked;	/* mover_check_arrivals(), before DONE */
	bool query;		/* the target asked for counters */
	bool target_aborted;	/* it said ABORT before committing */
	uint64_t done_sent_ns;
	uint64_t heard_ns;	/* the target's last message */
	uint64_t progress_mark;	/* mover_progress() when it last grew */
	uint64_t progress_ns;	/* and when */
	uint64_t next_progress_ns, next_cb_bytes;
	struct faults faults;	/* see faults.h */
	uint64_t event_ns;	/* when the last uffd events came */
	bool events_dense;	/* they came close together: spin */
};

static inline bool committed(const struct run *run)
{
	return mover_committed(&run->s->m);
}

/* run.c */
void stats_now(struct uffdmove_source *s, struct uffdmove_stats *st);

/* run_talk.c */
void periodic(struct run *run, bool force);
int handle_socket(struct run *run);
int try_send_done(struct run *run);
void answer_query(struct run *run);
int check_deadlines(struct run *run);
int end_failed(struct run *run, int ret);

#endif /* UFFDMOVE_RUN_H */
