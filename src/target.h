/* SPDX-License-Identifier: MIT */
/*
 * The new VMM's handle, shared by the files that make up its side:
 * target.c (the handle, guest RAM registration, discards),
 * target_session.c (handshake, commit, DONE), pull.c (pulling), keeper.c (the keeper
 * thread and what happens after the source's death) and thp.c (huge pages
 * back after DONE). See doc/design.md.
 */
#ifndef UFFDMOVE_TARGET_H
#define UFFDMOVE_TARGET_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "discard.h"
#include "error.h"
#include "pagemap.h"
#include "session.h"
#include "uffdmove.h"

enum target_state {
	TGT_NEW,	/* registered, no handoff yet */
	TGT_ACCEPTED,	/* source accepted; not committed: abort possible */
	TGT_RUNNING,	/* committed: the guest runs */
	TGT_DONE,
	TGT_ORPHANED,	/* the source died or gave up mid-handoff */
	TGT_CLOSED,	/* rejected or aborted: nothing registered */
};

/* The end's check and clean-up, in a thread: see target_finish.c. */
struct target_finisher {
	pthread_t thread;
	int efd;		/* in the target's epoll set: it ended */
	bool started, ended;	/* atomic */
	bool here;		/* atomic: checked in the caller's call */
	bool joined;
};

struct uffdmove_target {
	struct uffdmove_target_opts opts;
	struct session_region *regions;
	bool *thp;
	size_t nregions;
	uint64_t ioctls[UFFDMOVE_REGIONS_MAX];
	uint64_t features;
	uint64_t mm_cookie;		/* see wire.h */
	enum target_state state;
	pthread_mutex_t lock;		/* process() against discard() */
	int uffd, sock, epfd;
	int failure;			/* -errno once orphaned */
	struct uffdmove_stats st;	/* as the source last reported */
	uint64_t thp_collapsed;		/* atomic: by the collapser */
	pthread_t collapser;		/* see thp_collapse_start() */
	bool collapsing;
	bool collapse_stop;		/* atomic */
	bool collapse_running;		/* atomic: the collapser has work */
	pthread_mutex_t collapse_lock;	/* a collapse against a discard */
	uint64_t thp_uncollapsed;	/* atomic: set when it ended */
	uint64_t **thp_done;		/* per THP region: see thp_mark_done */
	bool *thp_pausable, *thp_paused;	/* see thp_advice_pause() */
	uint64_t t_start, t_end;
	uint64_t lazyfreed_start;	/* see target_lazyfreed() */
	uint64_t lazily_short;		/* bytes DONE missed, see finish */
	pthread_t keeper;		/* see keeper_main() */
	int keeper_efd;			/* wakes it: stop, or source gone */
	bool keeper_running, keeper_stop;
	bool source_gone;		/* atomic: the socket hung up */
	bool done_seen;			/* DONE read (maybe before commit) */
	struct discards discards;	/* see uffdmove_target_discard() */
	struct pm pm;			/* ours, opened while we may: a VMM
					   that drops privileges (setuid) is
					   not dumpable, and its /proc/self
					   files are root's */
	struct pull *pull;		/* we pull: see pull.c */
	struct target_finisher finisher;
	int progress_tfd;		/* opts.progress_timeout_ms: ticks */
	uint64_t progress_mark, progress_ns;	/* what grew last, when */
	uint32_t pull_why;		/* UFFDMOVE_PULL_WHY_* */
	struct err_buf err;
};

/* target.c: the source refused, or the handshake failed or was aborted:
 * unregister guest RAM, close the uffd; returns @ret. */
int target_release(struct uffdmove_target *t, int ret);
void target_unregister_all(struct uffdmove_target *t, size_t n);
void target_close_uffd(struct uffdmove_target *t);

/* target_session.c: HELLO (asking to pull or not), and the answer to it
 * (ACCEPT in @m, else the error). */
struct wire_msg;
void target_build_hello(struct uffdmove_target *t, struct wire_msg *m,
			bool pull);
int target_await_answer(struct uffdmove_target *t, struct wire_msg *m);

/* thp.c: which regions want THP, and the chunks to collapse after DONE. */
bool thp_vma_wants(uint64_t addr, uint32_t thp_mode);
int thp_alloc(struct uffdmove_target *t);
void thp_free(struct uffdmove_target *t);
void thp_mark_done(struct uffdmove_target *t, uint64_t start, uint64_t len);
/* Guest RAM advised MADV_NOHUGEPAGE during the handoff, and back. */
void thp_advice_pause(struct uffdmove_target *t);
void thp_advice_set(struct uffdmove_target *t, bool huge);
void thp_advice_restore(struct uffdmove_target *t);
/* Collapse the marked chunks in a thread of its own (the VMM does not
 * wait); stop (and join) it: what is left stays 4 KiB pages. */
void thp_collapse_start(struct uffdmove_target *t);
void thp_collapse_stop(struct uffdmove_target *t);

/* target_finish.c: at DONE (under the lock) check guest RAM and end the
 * handoff, in a thread of its own unless @here: the caller may block for
 * FINISH_BLOCKS_MS, more than the check may take (8 queries to the source
 * of up to 2 s each, the pauses between them, and FIN). Its result once
 * it ended. */
#define FINISH_BLOCKS_MS	20000
int finish_start(struct uffdmove_target *t, bool here);
int finish_result(struct uffdmove_target *t);
/* It holds the handle: process() has nothing to do. */
bool finish_busy(struct uffdmove_target *t);
void finish_free(struct uffdmove_target *t);

/* target_progress.c: from the commit, watch opts.progress_timeout_ms;
 * 0, or the end (orphaned, -ETIME) when nothing arrived for that long. */
void target_watch_progress(struct uffdmove_target *t);
int target_check_progress(struct uffdmove_target *t);

/* keeper.c: from the commit on, a thread watches the socket; once the
 * source is gone it services the uffd under the death policy. */
void keeper_start(struct uffdmove_target *t);
void keeper_stop(struct uffdmove_target *t);
void keeper_kick(struct uffdmove_target *t);
void keeper_service_uffd(struct uffdmove_target *t);
int keeper_poison_missing(struct uffdmove_target *t);
/* The source is gone or gave up after the commit: take the uffd back;
 * returns the session's -errno (with the handle's message). */
int target_orphan(struct uffdmove_target *t, int err, const char *why);

/* Lazily freed (MADV_FREE) pages reclaimed so far, system-wide: /proc/vmstat
 * pglazyfreed, or 0 if it cannot be read. */
uint64_t target_lazyfreed(void);

#endif /* UFFDMOVE_TARGET_H */
