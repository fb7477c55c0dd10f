// SPDX-License-Identifier: MIT
/* Fault service over the transfer core: see faults.h. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "faults.h"
#include "util.h"

void faults_init(struct faults *f, struct mover *m)
{
	memset(f, 0, sizeof(*f));
	f->m = m;
	f->uffd = mover_uffd(m);
}

void faults_fini(struct faults *f)
{
	free(f->waiting);
	f->waiting = NULL;
	f->nwaiting = f->waiting_cap = 0;
}

/* A target event other than a fault. */
static int handle_event(struct faults *f, const struct uffd_msg *msg,
			uint64_t since)
{
	struct mover *m = f->m;
	uint64_t start, end;

	switch (msg->event) {
	case UFFD_EVENT_REMOVE:
	case UFFD_EVENT_UNMAP:
		/*
		 * Balloon, MADV_DONTNEED or munmap: those pages are never
		 * filled again; later faults read zeros. The kernel lets the
		 * discard zap as soon as this event was read, so a fill that
		 * started before this marking may land behind the zap: it
		 * cannot be undone from here, only counted (fills.h). The
		 * target's uffdmove_target_discard() has no such window.
		 * UNMAP too: a mapping grown back over the hole in place
		 * (mremap()) keeps the registration, and takes the fill.
		 */
		start = msg->arg.remove.start;
		end = msg->arg.remove.end;
		mover_discarded(m, start, end, since);
		return 0;
	case UFFD_EVENT_REMAP:
		return mover_fail(m, -EPROTO,
				  "the target mremap()ed guest RAM 0x%llx+%llu to 0x%llx during the handoff, which libuffdmove does not follow; the session ends",
				  (unsigned long long)msg->arg.remap.from,
				  (unsigned long long)msg->arg.remap.len,
				  (unsigned long long)msg->arg.remap.to);
	default:
		return mover_fail(m, -EPROTO,
				  "unexpected userfaultfd event %u from the target",
				  msg->event);
	}
}

/*
 * Keep a fault for later: an event is pending (EAGAIN), or another thread
 * holds its chunk. Never dropped: its thread sleeps until someone wakes it.
 */
static int wait_fault(struct faults *f, uint64_t addr, uint64_t t_read)
{
	if (f->nwaiting == f->waiting_cap) {
		size_t cap = f->waiting_cap ? 2 * f->waiting_cap : 64;
		void *p = realloc(f->waiting, cap * sizeof(*f->waiting));

		if (!p)
			return mover_fail(f->m, -ENOMEM,
					  "out of memory for waiting faults");
		f->waiting = p;
		f->waiting_cap = cap;
	}
	f->waiting[f->nwaiting++] = (struct waiting){ addr, t_read };
	return 0;
}

static int serve_fault(struct faults *f, uint64_t addr, uint64_t t_read)
{
	struct mover *m = f->m;
	int ret = mover_fault(m, addr);

	if (ret == -EAGAIN) {
		mover_fault_deferred(m);
		return wait_fault(f, addr, t_read);
	}
	if (ret)
		return mover_fail(m, ret, "resolving a fault at 0x%llx: %s",
				  (unsigned long long)addr, strerror(-ret));
	mover_fault_served(m, t_read);
	if (!mover_committed(f->m))	/* the rule: no touch before the commit */
		f->early++;
	return 0;
}

/* Non-fault events first: a pending REMOVE makes every COPY fail with
 * EAGAIN until it is read, and must mark its range before any fault in
 * it is resolved. */
int faults_handle(struct faults *f, const struct uffd_msg *msgs, size_t n,
		  uint64_t t_read, uint64_t since)
{
	size_t i;
	int ret;

	if (n)
		mover_events_read(f->m);
	for (i = 0; i < n; i++) {
		if (msgs[i].event == UFFD_EVENT_PAGEFAULT)
			continue;
		ret = handle_event(f, &msgs[i], since);
		if (ret)
			return ret;
	}
	for (i = 0; i < n; i++) {
		if (msgs[i].event != UFFD_EVENT_PAGEFAULT)
			continue;
		ret = serve_fault(f, msgs[i].arg.pagefault.address, t_read);
		if (ret)
			return ret;
	}
	return 0;
}

/* Read every pending event now: that is what EAGAIN waits for. Returns
 * how many messages were read, or the session's end. */
int faults_drain(struct faults *f)
{
	struct uffd_msg batch[FAULTS_BATCH];
	ssize_t got;
	int ret, total = 0;

	for (;;) {
		uint64_t since = now_ns();

		mover_events_batch(f->m);
		got = read(f->uffd, batch, sizeof(batch));
		ret = got <= 0 ? 0 :
		      faults_handle(f, batch,
				    (size_t)got / sizeof(struct uffd_msg),
				    now_ns(), since);
		mover_events_batch(f->m);
		if (got <= 0)
			break;
		if (ret)
			return ret;
		total += (int)(got / (ssize_t)sizeof(struct uffd_msg));
		/* Less than a full batch: that was all. Another read would
		 * only say EAGAIN, a syscall on every rare fault's path. */
		if (got < (ssize_t)sizeof(batch))
			break;
	}
	return total;
}

/* Faults kept for later: read what is pending, then try them again. */
int faults_retry(struct faults *f)
{
	struct waiting *w = f->waiting;
	size_t i, n = f->nwaiting;
	int ret;

	if (!n)
		return 0;
	/* Those still blocked go to a fresh list. */
	f->waiting = NULL;
	f->nwaiting = f->waiting_cap = 0;
	ret = faults_drain(f);
	if (!ret)
		usleep(20);
	for (i = 0; i < n && ret >= 0; i++)
		ret = serve_fault(f, w[i].addr, w[i].t_read);
	free(w);
	return ret < 0 ? ret : 0;
}

