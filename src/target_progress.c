// SPDX-License-Identifier: MIT
/*
 * The new VMM's progress deadline (opts.progress_timeout_ms): a source
 * that is alive but hands nothing over would leave the guest blocked on
 * its missing pages for ever. After the commit a timer brings the
 * caller's loop back now and then; when guest RAM gained nothing for the
 * deadline, the session ends as if the source had died
 * (doc/design.md, "Failure rules").
 */
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "pull.h"
#include "session.h"
#include "target.h"
#include "util.h"
#include "wire.h"

/*
 * opts.progress_timeout_ms: a timer in the epoll set brings the caller
 * back now and then, so a source that went quiet is noticed although
 * nothing else happens.
 */
void target_watch_progress(struct uffdmove_target *t)
{
	uint32_t ms = t->opts.progress_timeout_ms, tick = MAX(ms / 4, 10);
	struct itimerspec its = {
		.it_interval = { tick / 1000, (long)(tick % 1000) * 1000000 },
	};
	struct epoll_event ev = { .events = EPOLLIN };

	if (!ms)
		return;
	its.it_value = its.it_interval;
	t->progress_ns = now_ns();
	t->progress_tfd = timerfd_create(CLOCK_MONOTONIC,
					 TFD_NONBLOCK | TFD_CLOEXEC);
	ev.data.fd = t->progress_tfd;
	if (t->progress_tfd >= 0 &&
	    (timerfd_settime(t->progress_tfd, 0, &its, NULL) ||
	     epoll_ctl(t->epfd, EPOLL_CTL_ADD, t->progress_tfd, &ev))) {
		close(t->progress_tfd);	/* without it, calls still check */
		t->progress_tfd = -1;
	}
}

/* Pages, faults: whatever grows while the handoff moves on. */
static uint64_t progress_mark(struct uffdmove_target *t)
{
	struct uffdmove_stats st = t->st;

	if (t->pull)
		pull_stats(t, &st);
	return st.bytes_moved + st.bytes_copied + st.bytes_zeroed + st.faults;
}

/* Nothing arrived for the caller's deadline: the source, alive or not,
 * counts as gone (it is told, and its socket shut). */
int target_check_progress(struct uffdmove_target *t)
{
	struct wire_msg m = { .type = WIRE_ABORT };
	uint64_t mark, now = now_ns(), ticks;
	char why[WIRE_TEXT_MAX];

	if (!t->opts.progress_timeout_ms)
		return 0;
	if (t->progress_tfd >= 0 &&
	    read(t->progress_tfd, &ticks, sizeof(ticks)) < 0)
		ticks = 0;	/* nothing yet: still look */
	mark = progress_mark(t);
	if (mark != t->progress_mark) {
		t->progress_mark = mark;
		t->progress_ns = now;
		return 0;
	}
	if (now - t->progress_ns <=
	    t->opts.progress_timeout_ms * 1000000ULL)
		return 0;
	snprintf(why, sizeof(why),
		 "no progress for %u ms (opts.progress_timeout_ms): the source is treated as gone",
		 t->opts.progress_timeout_ms);
	m.reason.errnum = ETIME;
	str_copy(m.reason.text, sizeof(m.reason.text), why);
	if (!t->pull)
		session_send(t->sock, &m, -1, 0);
	shutdown(t->sock, SHUT_RDWR);
	return target_orphan(t, -ETIME, why);
}
