// SPDX-License-Identifier: MIT
/*
 * After the commit the new VMM's keeper thread watches the socket. Once the
 * source is gone (or gave up), the uffd is the target's alone: the keeper
 * reads its events so the VMM's own madvise/munmap never hang, and missing
 * pages stay blocked or are poisoned, never zero (doc/design.md, "Failure
 * rules").
 */
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "classify.h"
#include "pagemap.h"
#include "pull.h"
#include "session.h"
#include "wire.h"
#include "target.h"
#include "uffd.h"
#include "util.h"
#include "wake.h"

/*
 * Poison [a, end), stepping over pages that arrived meanwhile. A range
 * across two mappings (mprotect() split guest RAM) is refused whole with
 * ENOENT: go page by page there, and skip only a page refused alone.
 */
static void poison_run(struct uffdmove_target *t, uint64_t a, uint64_t end)
{
	bool one = false;
	size_t done;
	int ret;

	while (a < end) {
		ret = uffd_poison(t->uffd, a, one ? PAGE_SZ : end - a, &done);
		a += ALIGN_DOWN(done, PAGE_SZ);
		if (!ret) {
			one = false;
			continue;
		}
		if (ret == -EEXIST || (ret == -ENOENT && one))
			a += PAGE_SZ;
		else if (ret == -ENOENT)
			one = true;
		else if (ret == -EAGAIN)
			keeper_service_uffd(t);	/* read what blocks it */
		else
			return;
	}
}

/* Poison every page of the regions that has not arrived. */
int keeper_poison_missing(struct uffdmove_target *t)
{
	uint8_t flags[512];
	size_t i, k, n, p;
	uint64_t a, end;
	int ret = 0;

	if (!(t->features & UFFD_FEATURE_POISON))
		return -EOPNOTSUPP;
	for (i = 0; i < t->nregions; i++) {
		end = t->regions[i].addr + t->regions[i].len;
		for (a = t->regions[i].addr; a < end; a += n * PAGE_SZ) {
			n = MIN((end - a) / PAGE_SZ, ARRAY_SIZE(flags));
			ret = pm_flags(&t->pm, a, n, false, flags);
			if (ret)
				return ret;
			for (p = 0; p < n; p = k) {
				for (k = p; k < n && !pg_present(flags[k]); k++)
					;
				poison_run(t, a + p * PAGE_SZ, a + k * PAGE_SZ);
				while (k < n && pg_present(flags[k]))
					k++;
			}
		}
	}
	return ret;
}

/* Read and answer the uffd's events ourselves, now that nobody else does:
 * REMOVE/UNMAP waiters must not hang. Faults stay blocked, or get poison. */
void keeper_service_uffd(struct uffdmove_target *t)
{
	struct uffd_msg msgs[16];
	ssize_t n, i;
	size_t done;

	while ((n = read(t->uffd, msgs, sizeof(msgs))) > 0) {
		for (i = 0; i < n / (ssize_t)sizeof(msgs[0]); i++) {
			uint64_t a;

			if (msgs[i].event != UFFD_EVENT_PAGEFAULT ||
			    t->opts.on_source_death !=
			    UFFDMOVE_ON_SOURCE_DEATH_POISON)
				continue;
			a = ALIGN_DOWN(msgs[i].arg.pagefault.address, PAGE_SZ);
			if (uffd_poison(t->uffd, a, PAGE_SZ, &done) == -EEXIST)
				uffd_wake(t->uffd, a, PAGE_SZ);
		}
	}
}

/*
 * The keeper runs from commit to the end of the session. It never reads
 * the socket (that is uffdmove_target_process()'s job); it only watches it
 * for a hang-up. Once the source is gone it reads and answers the uffd's
 * events itself: the VMM's own thread may be the one blocked in munmap or
 * madvise, waiting for an event nobody else will ever read.
 */
static void *keeper_main(void *arg)
{
	struct uffdmove_target *t = arg;
	struct pollfd pfd[3] = {
		{ .fd = t->keeper_efd, .events = POLLIN },
		{ .fd = t->sock, .events = POLLRDHUP },
		{ .fd = t->uffd, .events = POLLIN },
	};

	while (!__atomic_load_n(&t->keeper_stop, __ATOMIC_ACQUIRE)) {
		bool gone = __atomic_load_n(&t->source_gone, __ATOMIC_ACQUIRE);

		if (poll(pfd, gone ? 3 : 2, -1) <= 0)
			continue;
		if (pfd[0].revents && wake_drain(t->keeper_efd))
			continue;	/* re-check stop and gone */
		if (pfd[1].revents & (POLLRDHUP | POLLHUP | POLLERR)) {
			__atomic_store_n(&t->source_gone, true,
					 __ATOMIC_RELEASE);
			pfd[1].events = 0;
		}
		if (gone)
			keeper_service_uffd(t);
	}
	return NULL;
}

void keeper_kick(struct uffdmove_target *t)
{

	if (t->keeper_running)
		wake_kick(t->keeper_efd);
}

void keeper_start(struct uffdmove_target *t)
{
	if (t->keeper_running)
		return;
	t->keeper_efd = wake_open();
	if (t->keeper_efd < 0)
		return;
	if (pthread_create(&t->keeper, NULL, keeper_main, t)) {
		close(t->keeper_efd);
		return;
	}
	pthread_setname_np(t->keeper, "uffdmove-keeper");
	t->keeper_running = true;
}

void keeper_stop(struct uffdmove_target *t)
{
	if (!t->keeper_running)
		return;
	__atomic_store_n(&t->keeper_stop, true, __ATOMIC_RELEASE);
	keeper_kick(t);
	pthread_join(t->keeper, NULL);
	close(t->keeper_efd);
	t->keeper_running = false;
}

/* Best effort: the session is over for us, whatever the source thinks. */
static void tell_source(struct uffdmove_target *t, int err, const char *why)
{
	struct wire_msg m = { .type = WIRE_ABORT };

	m.reason.errnum = (uint32_t)(err < 0 && err > -4096 ? -err : EPROTO);
	str_copy(m.reason.text, sizeof(m.reason.text), why);
	session_send(t->sock, &m, -1, 0);
}

/* The source is gone (or gave up) before DONE: take the uffd back. */
int target_orphan(struct uffdmove_target *t, int err, const char *why)
{
	uint64_t got = t->st.bytes_moved + t->st.bytes_copied;
	int ret;

	/* Our pull threads leave the uffd to the keeper, and a source that
	 * may still be there learns that we gave up (else it would wait for
	 * its deadline). */
	if (t->pull) {
		pull_stop(t);
		pull_stats(t, &t->st);
		got = t->st.bytes_moved + t->st.bytes_copied;
		tell_source(t, err, why);
	}
	/* uffdmove_target_wait() keeps -ETIMEDOUT for its own timeout. */
	if (err == -ETIMEDOUT)
		err = -ECONNRESET;
	t->state = TGT_ORPHANED;
	t->t_end = now_ns();
	if (t->opts.on_source_death == UFFDMOVE_ON_SOURCE_DEATH_POISON &&
	    (ret = keeper_poison_missing(t)))
		t->opts.on_source_death = UFFDMOVE_ON_SOURCE_DEATH_BLOCK;
	__atomic_store_n(&t->source_gone, true, __ATOMIC_RELEASE);
	keeper_service_uffd(t);
	keeper_start(t);
	keeper_kick(t);	/* it now watches the uffd too */
	t->failure = err_set(&t->err, -err,
			     "%s after about %llu bytes with data arrived; missing pages %s",
			     why, (unsigned long long)got,
			     t->opts.on_source_death ==
			     UFFDMOVE_ON_SOURCE_DEATH_POISON ?
			     "are poisoned (SIGBUS on touch)" :
			     "stay blocked until the VMM stops the guest");
	return t->failure;
}

