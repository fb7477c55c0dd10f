/* SPDX-License-Identifier: MIT */
/*
 * The old VMM's handle, shared by source.c (options, regions, the
 * handshake) and run.c (serving faults and pushing until the target has
 * everything). See doc/design.md.
 */
#ifndef UFFDMOVE_SOURCE_H
#define UFFDMOVE_SOURCE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "error.h"
#include "mover.h"
#include "session.h"
#include "uffdmove.h"

enum source_state { SRC_NEW, SRC_ACCEPTED, SRC_RUNNING, SRC_ENDED };

/* The run driven from the caller's event loop (source_loop.c). */
struct source_loop {
	int efd;		/* readable: progress to hand on, or the end */
	pthread_t thread;	/* runs what uffdmove_source_run() would */
	bool started, joined;	/* atomic */
	bool ended;		/* atomic: result is set */
	int result;
	pthread_mutex_t lock;	/* progress, progress_new */
	struct uffdmove_stats progress;
	bool progress_new;
};

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
	bool accepted;		/* atomic: sock is the session's, to shut */
	uint64_t features;	/* what the target negotiated */
	bool mover_ready;
	bool pulling;		/* the target reads us (source_pull.c) */
	uint32_t pull_why;	/* UFFDMOVE_PULL_WHY_* */
	uint64_t cookie;	/* pull: the target's HELLO cookie, kept here
				   for it to read back (proof of access) */
	struct mover m;
	uint64_t t_start, t_end;
	struct source_loop loop;
	struct err_buf err;
};

/* -EINVAL (with @misuse as the message) unless @s is in state @want. */
int source_in_state(struct uffdmove_source *s, enum source_state want,
		    const char *misuse);

/* run.c: what uffdmove_source_run() does once the state was checked. */
int source_run(struct uffdmove_source *s);

/* source_loop.c */
int source_loop_init(struct uffdmove_source *s);
void source_loop_fini(struct uffdmove_source *s);
/* Driven from an event loop? Then progress goes to the caller's thread. */
bool source_loop_driven(const struct uffdmove_source *s);
void source_loop_progress(struct uffdmove_source *s,
			  const struct uffdmove_stats *st);

/* source.c and source_hello.c: the handshake's steps that pull shares
 * with push. */
struct wire_msg;
struct plan_input;
enum hello_round {
	HELLO_FIRST,		/* HELLO, asking to pull or with its uffd */
	HELLO_AFTER_OFFER,	/* PULL, or HELLO with its uffd */
	HELLO_AFTER_DECLINE,	/* HELLO with its uffd */
};
int source_recv_hello(struct uffdmove_source *s, struct wire_msg *hello,
		      int *uffd, bool *answer, enum hello_round round);
int source_match_regions(struct uffdmove_source *s, const struct wire_msg *h,
			 struct plan_input *in);
bool source_same_mm(const struct wire_msg *h);
void source_teardown_mover(struct uffdmove_source *s);
int source_setup_mover(struct uffdmove_source *s, int uffd, bool same_mm,
		       const struct plan_input *in);
/* source_hello.c: check HELLO and what came with it, set the core up on
 * it; the core owns @uffd from here, whatever happens. */
int source_take_hello(struct uffdmove_source *s, const struct wire_msg *hello,
		      int uffd);
bool source_owns(const struct uffdmove_source *s, uint64_t start,
		 uint64_t len);

/* source_pull.c */
struct run;
/*
 * HELLO asked to pull: offer it (or decline), then take the target's
 * answer. 0 with s->pulling set, or 0 with *@uffd from the target's second
 * HELLO (in @hello) to push instead, or the error.
 */
int source_offer_pull(struct uffdmove_source *s, struct wire_msg *hello,
		      pid_t target, int *uffd);
void source_revoke_reader(void);
/* A message only pull knows: 0 handled, 1 not pull's, or the end. */
int source_pull_message(struct run *run, const struct wire_msg *msg);
int source_serve_pull(struct run *run);

#endif /* UFFDMOVE_SOURCE_H */
