// SPDX-License-Identifier: MIT
/*
 * The old VMM's run driven from its own event loop (doc/design.md, "Event
 * loops"). The first uffdmove_source_process() starts, in a thread of the
 * library's, what uffdmove_source_run() would do on the caller's; from then
 * on the loop polls uffdmove_source_fd() and each call hands on what the
 * run left for it: progress for the callback, and at the end the result.
 * No call here waits on the target or on guest memory.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "source.h"
#include "util.h"
#include "wake.h"

int source_loop_init(struct uffdmove_source *s)
{
	struct source_loop *l = &s->loop;

	l->efd = wake_open();
	if (l->efd < 0)
		return err_set(&s->err, -l->efd, "eventfd: %s",
			       strerror(-l->efd));
	if (pthread_mutex_init(&l->lock, NULL)) {
		close(l->efd);
		return err_set(&s->err, ENOMEM, "out of memory");
	}
	return 0;
}

/* Once, even if two threads call process() against the rules (not
 * under l->lock: the run's last progress report takes it). */
static void join(struct source_loop *l)
{
	if (load_acquire(&l->started) &&
	    !__atomic_exchange_n(&l->joined, true, __ATOMIC_ACQ_REL))
		pthread_join(l->thread, NULL);
}

void source_loop_fini(struct uffdmove_source *s)
{
	struct source_loop *l = &s->loop;

	if (l->started && !load_acquire(&l->joined)) {
		uffdmove_source_cancel(s);
		join(l);
	}
	pthread_mutex_destroy(&l->lock);
	close(l->efd);
}

bool source_loop_driven(const struct uffdmove_source *s)
{
	return s->loop.started;
}

/* The run's thread: keep the latest counters for the caller's thread. */
void source_loop_progress(struct uffdmove_source *s,
			  const struct uffdmove_stats *st)
{
	struct source_loop *l = &s->loop;

	pthread_mutex_lock(&l->lock);
	l->progress = *st;
	l->progress_new = true;
	pthread_mutex_unlock(&l->lock);
	wake_kick(l->efd);
}

static void *loop_main(void *arg)
{
	struct uffdmove_source *s = arg;

	s->loop.result = source_run(s);
	store_release(&s->loop.ended, true);
	wake_kick(s->loop.efd);
	return NULL;
}

static int start(struct uffdmove_source *s)
{
	int ret;

	if (source_in_state(s, SRC_ACCEPTED,
			    "uffdmove_source_process() needs a successful uffdmove_source_accept() first"))
		return -EINVAL;
	/* Running from here: neither _run() nor another start. */
	s->state = SRC_RUNNING;
	err_clear(&s->err);
	store_release(&s->loop.started, true);
	ret = pthread_create(&s->loop.thread, NULL, loop_main, s);
	if (ret) {
		store_release(&s->loop.started, false);
		s->state = SRC_ACCEPTED;
		return err_set(&s->err, ret, "starting the run's thread: %s",
			       strerror(ret));
	}
	pthread_setname_np(s->loop.thread, "uffdmove-loop");
	return 0;
}

/* Call the progress callback here, on the caller's thread. */
static void hand_on_progress(struct uffdmove_source *s)
{
	struct source_loop *l = &s->loop;
	struct uffdmove_stats st;
	bool fresh;

	pthread_mutex_lock(&l->lock);
	fresh = l->progress_new;
	st = l->progress;
	l->progress_new = false;
	pthread_mutex_unlock(&l->lock);
	if (fresh)
		s->opts.progress(&st, s->opts.progress_arg);
}

UFFDMOVE_EXPORT int uffdmove_source_fd(const struct uffdmove_source *s)
{
	return s ? s->loop.efd : -EINVAL;
}

UFFDMOVE_EXPORT int uffdmove_source_process(struct uffdmove_source *s)
{
	struct source_loop *l;
	int ret;

	if (!s)
		return -EINVAL;
	l = &s->loop;
	if (!load_acquire(&l->started)) {
		pthread_mutex_lock(&l->lock);
		ret = l->started ? 0 : start(s);
		pthread_mutex_unlock(&l->lock);
		return ret;
	}
	wake_drain(l->efd);
	if (s->opts.progress)
		hand_on_progress(s);
	if (!load_acquire(&l->ended))
		return 0;
	join(l);
	wake_kick(l->efd);	/* ended: stays readable */
	return l->result ? l->result : 1;
}
