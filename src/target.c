// SPDX-License-Identifier: MIT
/*
 * The new VMM's side: register guest RAM with a uffd of our own, give the
 * uffd to the source, follow its progress, and never let a missing page read
 * as zero: the uffd stays open here for the whole session, and if the source
 * dies its missing pages stay blocked or are poisoned.
 */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include "classify.h"
#include "pagemap.h"
#include "peer.h"
#include "probe.h"
#include "session.h"
#include "uffd.h"
#include "target.h"
#include "util.h"
#include "wire.h"

#define DISCARD_TIMEOUT_MS	5000
#define QUERY_TIMEOUT_MS	1000

UFFDMOVE_EXPORT int uffdmove_target_opts_init(struct uffdmove_target_opts *o)
{
	if (!o)
		return -EINVAL;
	memset(o, 0, sizeof(*o));
	o->expected_uid = UFFDMOVE_UID_SELF;
	o->handshake_timeout_ms = HANDSHAKE_TIMEOUT_MS;
	o->on_source_death = UFFDMOVE_ON_SOURCE_DEATH_BLOCK;
	o->collapse_thp = 1;
	return 0;
}

static int open_uffd(struct uffdmove_target *t)
{
	uint64_t want, offered = 0;
	int ret;

	ret = uffd_open(O_CLOEXEC | O_NONBLOCK);
	if (ret == -EPERM || ret == -EACCES)
		return err_set(&t->err, EPERM,
			       "cannot create a userfaultfd that catches kernel-mode faults (KVM, syscalls): grant CAP_SYS_PTRACE or access to /dev/userfaultfd");
	if (ret == -ENOSYS || ret == -EOPNOTSUPP)
		return err_set(&t->err, EOPNOTSUPP,
			       "this kernel has no userfaultfd");
	if (ret < 0)
		return err_set(&t->err, -ret, "userfaultfd: %s",
			       strerror(-ret));
	t->uffd = ret;
	/* UFFDIO_API works once per fd: ask a scratch one what there is. */
	uffd_offered(&offered);
	want = SESSION_REQUIRED_FEATURES |
	       (offered & (UFFD_FEATURE_MOVE | UFFD_FEATURE_POISON));
	ret = uffd_api(t->uffd, want, &t->features, NULL);
	if (ret)
		return err_set(&t->err, ret == -EINVAL ? EOPNOTSUPP : -ret,
			       "UFFDIO_API with features 0x%llx: %s (kernel lacks REMOVE/UNMAP/REMAP events?)",
			       (unsigned long long)want, strerror(-ret));
	t->features = want;
	return 0;
}

/*
 * UFFDIO_UNREGISTER wakes the threads waiting in the range, but a thread
 * faulting under the per-VMA lock can queue itself just after that wake
 * (the kernel wakes before it write-locks the VMA) and then sleep on a pte
 * that nobody will fill. Once unregister has returned every such thread is
 * queued: wake the whole range once more.
 */
static void unregister_all(struct uffdmove_target *t, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		uffd_unregister(t->uffd, (void *)(uintptr_t)t->regions[i].addr,
				t->regions[i].len);
	for (i = 0; i < n; i++)
		uffd_wake(t->uffd, t->regions[i].addr, t->regions[i].len);
}

static void close_uffd(struct uffdmove_target *t)
{
	if (t->uffd >= 0)
		close(t->uffd);
	t->uffd = -1;
}

UFFDMOVE_EXPORT int uffdmove_target_new(struct uffdmove_target **out,
					const struct uffdmove_region *regions,
					size_t n,
					const struct uffdmove_target_opts *opts)
{
	struct uffdmove_target *t;
	uint32_t thp_mode;
	size_t i;
	int ret;

	err_forget();
	if (!out)
		return err_keep_new(EINVAL, "uffdmove_target_new: out is NULL");
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->uffd = t->sock = t->epfd = -1;
	if (opts)
		t->opts = *opts;
	else
		uffdmove_target_opts_init(&t->opts);
	ret = session_check_reserved(&t->err, t->opts.reserved,
				     sizeof(t->opts.reserved));
	if (!ret && t->opts.on_source_death > UFFDMOVE_ON_SOURCE_DEATH_POISON)
		ret = err_set(&t->err, EINVAL,
			      "options: unknown on_source_death %u",
			      t->opts.on_source_death);
	if (!ret && t->opts.collapse_thp > 1)
		ret = err_set(&t->err, EINVAL,
			      "options: collapse_thp %u, must be 0 or 1",
			      t->opts.collapse_thp);
	if (!ret && t->opts.reserved32)
		ret = err_set(&t->err, EINVAL,
			      "options: reserved32 is not zero; initialise options with uffdmove_target_opts_init()");
	if (!ret)
		ret = session_copy_regions(&t->err, regions, n, &t->regions);
	if (!ret)
		ret = session_check_mappings(&t->err, t->regions, n, true);
	if (ret)
		goto fail;
	t->nregions = n;
	if (!t->opts.handshake_timeout_ms)
		t->opts.handshake_timeout_ms = HANDSHAKE_TIMEOUT_MS;
	t->thp = calloc(n, sizeof(*t->thp));
	if (!t->thp) {
		ret = err_set(&t->err, ENOMEM, "out of memory");
		goto fail;
	}
	thp_mode = probe_thp_mode();
	for (i = 0; i < n; i++)
		t->thp[i] = thp_vma_wants(t->regions[i].addr, thp_mode);
	ret = thp_alloc(t);
	if (!ret && discards_init(&t->discards, n))
		ret = err_set(&t->err, ENOMEM, "out of memory");
	if (ret)
		goto fail;
	ret = open_uffd(t);
	if (ret)
		goto fail;
	for (i = 0; i < n; i++) {
		ret = uffd_register(t->uffd,
				    (void *)(uintptr_t)t->regions[i].addr,
				    t->regions[i].len,
				    UFFDIO_REGISTER_MODE_MISSING, &t->ioctls[i]);
		if (ret) {
			unregister_all(t, i);
			ret = err_set(&t->err, -ret,
				      "region '%s': UFFDIO_REGISTER: %s%s",
				      t->regions[i].name, strerror(-ret),
				      ret == -EBUSY ?
				      " (already registered with another userfaultfd: is another target using it?)" :
				      "");
			goto fail;
		}
	}
	t->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (t->epfd < 0) {
		ret = err_set(&t->err, errno, "epoll_create1: %s",
			      strerror(errno));
		unregister_all(t, n);
		goto fail;
	}
	*out = t;
	return 0;
fail:
	err_keep(&t->err, ret);
	close_uffd(t);
	discards_fini(&t->discards);
	thp_free(t);
	free(t->thp);
	free(t->regions);
	free(t);
	return ret;
}

/* The source refused or the handshake failed: give everything back. */
static int release(struct uffdmove_target *t, int ret)
{
	unregister_all(t, t->nregions);
	close_uffd(t);
	t->state = TGT_CLOSED;
	return ret;
}

UFFDMOVE_EXPORT int uffdmove_target_handoff(struct uffdmove_target *t,
					    int sock)
{
	struct wire_msg *m;
	struct epoll_event ev = { .events = EPOLLIN };
	char buf[WIRE_MSG_MAX + 1], why[160];
	int fds[PEER_FDS_MAX], len, ret;
	size_t i, nfds;
	pid_t pid;

	if (!t)
		return -EINVAL;
	err_clear(&t->err);
	if (t->state != TGT_NEW)
		return err_set(&t->err, EINVAL,
			       "uffdmove_target_handoff() may be called once, on a new target");
	if (peer_check_socket(sock))
		return err_set(&t->err, EINVAL,
			       "fd %d is not an AF_UNIX SOCK_SEQPACKET socket",
			       sock);
	t->sock = sock;
	ret = session_check_peer(&t->err, sock, t->opts.expected_uid,
				 t->opts.expected_pid, &pid);
	if (ret)
		return release(t, ret);

	m = calloc(1, sizeof(*m));
	if (!m)
		return release(t, err_set(&t->err, ENOMEM, "out of memory"));
	m->type = WIRE_HELLO;
	m->hello.features = t->features;
	m->hello.n_regions = (uint32_t)t->nregions;
	if (getrandom(&t->mm_cookie, sizeof(t->mm_cookie), 0) !=
	    sizeof(t->mm_cookie))
		t->mm_cookie = now_ns() ^ (uintptr_t)t;
	t->mm_cookie |= 1;
	m->hello.mm_cookie_addr = (uintptr_t)&t->mm_cookie;
	m->hello.mm_cookie = t->mm_cookie;
	for (i = 0; i < t->nregions; i++) {
		struct wire_region *r = &m->hello.regions[i];

		memcpy(r->name, t->regions[i].name, sizeof(r->name));
		r->addr = t->regions[i].addr;
		r->len = t->regions[i].len;
		r->page_size = PAGE_SZ;
		r->flags = t->thp[i] ? WIRE_REGION_THP : 0;
		r->ioctls = t->ioctls[i];
	}
	ret = session_send(sock, m, t->uffd,
			   (int)t->opts.handshake_timeout_ms);
	if (ret) {
		free(m);
		return release(t, err_set(&t->err, -ret, "sending HELLO: %s",
					  strerror(-ret)));
	}

	len = peer_recv(sock, buf, sizeof(buf), fds, &nfds,
			(int)t->opts.handshake_timeout_ms);
	if (nfds && nfds <= PEER_FDS_MAX)
		peer_close_fds(fds, nfds);
	if (len < 0) {
		free(m);
		return release(t, err_set(&t->err, len == -EMSGSIZE ? EPROTO : -len,
					  "waiting for the source's answer: %s",
					  len == -ETIMEDOUT ? "no answer within the handshake deadline" :
					  strerror(-len)));
	}
	ret = wire_decode(buf, (size_t)len, m, why, sizeof(why));
	if (ret) {
		free(m);
		return release(t, err_set(&t->err, -ret,
					  "bad answer from the source: %s", why));
	}
	if (m->type == WIRE_REJECT) {
		ret = err_set(&t->err, (int)m->reason.errnum,
			      "the source rejected the handoff: %s",
			      m->reason.text);
		free(m);
		return release(t, ret);
	}
	if (m->type != WIRE_ACCEPT) {
		ret = err_set(&t->err, EPROTO,
			      "expected ACCEPT or REJECT, got %s",
			      wire_type_name(m->type));
		free(m);
		return release(t, ret);
	}
	t->expected = m->accept.populated;
	free(m);
	ev.data.fd = sock;
	if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, sock, &ev) < 0)
		return release(t, err_set(&t->err, errno, "epoll_ctl: %s",
					  strerror(errno)));
	t->state = TGT_ACCEPTED;
	return 0;
}

UFFDMOVE_EXPORT int uffdmove_target_abort(struct uffdmove_target *t)
{
	struct wire_msg m = { .type = WIRE_ABORT };

	if (!t)
		return -EINVAL;
	if (t->state != TGT_ACCEPTED)
		return err_set(&t->err, EINVAL,
			       "abort is possible only between a successful handoff and the first process/wait");
	m.reason.errnum = ECANCELED;
	str_copy(m.reason.text, sizeof(m.reason.text),
		 "the target aborted before resuming its guest");
	session_send(t->sock, &m, -1, 1000);
	return release(t, 0);
}

/* After DONE: ask the source for its counters now (it answers with DONE
 * again), and wait a little for them. */
static int query_stats(struct uffdmove_target *t)
{
	struct wire_msg m = { .type = WIRE_QUERY };
	char buf[WIRE_MSG_MAX + 1];
	int fds[PEER_FDS_MAX], len;
	size_t nfds;

	if (session_send(t->sock, &m, -1, QUERY_TIMEOUT_MS))
		return -ECONNRESET;
	for (;;) {
		len = peer_recv(t->sock, buf, sizeof(buf), fds, &nfds,
				QUERY_TIMEOUT_MS);
		if (nfds && nfds <= PEER_FDS_MAX)
			peer_close_fds(fds, nfds);
		if (len < 0)
			return len;
		if (!wire_decode(buf, (size_t)len, &m, NULL, 0) &&
		    m.type == WIRE_DONE) {
			t->st = m.stats;
			return 0;
		}
	}
}

/*
 * DONE says every page with data is here: see that it is, before
 * unregistering turns what is missing into zeros. The measure is what the
 * source found as it handed each chunk over (its final bytes_populated:
 * pages may vanish there after ACCEPT, as reclaimed MADV_FREE pages or KSM
 * zero pages do). Pages the guest discarded meanwhile are gone; pages it
 * wrote into holes count as data: this catches pages lost on the way, not
 * a source that lies.
 */
static int check_done(struct uffdmove_target *t)
{
	uint64_t here = 0, bytes;
	struct pm pm;
	size_t i;
	int ret;

	ret = pm_open(&pm);
	for (i = 0; !ret && i < t->nregions; i++) {
		ret = pm_count_populated(&pm, t->regions[i].addr,
					 t->regions[i].len, &bytes);
		here += bytes;
	}
	pm_close(&pm);
	if (ret)
		return target_orphan(t, ret, "reading /proc/self/pagemap at DONE");
	if (here + t->st.bytes_discarded + t->discards.bytes >=
	    t->st.bytes_populated)
		return 1;
	/* DONE's count misses discards the source read after sending it.
	 * Any discard that emptied a page before our count was read by the
	 * source before it zapped: a count asked for now has it. */
	if (query_stats(t) == 0 &&
	    here + t->st.bytes_discarded + t->discards.bytes >=
	    t->st.bytes_populated)
		return 1;
	return target_orphan(t, -EPROTO,
		      "the source said DONE, but guest RAM holds fewer bytes than it announced");
}

/* DONE: every page with data is here. Unregistering turns the holes into
 * ordinary zero-fill memory and lets the remaining THP ranges collapse. */
static int finish(struct uffdmove_target *t)
{
	struct wire_msg fin = { .type = WIRE_FIN };

	t->t_end = now_ns();
	keeper_stop(t);
	unregister_all(t, t->nregions);
	session_send(t->sock, &fin, -1, 1000);	/* the source may leave now */
	close_uffd(t);
	t->state = TGT_DONE;
	if (t->st.bytes_discard_raced)
		err_set(&t->err, 0,
			"warning: %llu bytes discarded with a raw madvise() during the handoff may have been refilled with stale data; discard with uffdmove_target_discard()",
			(unsigned long long)t->st.bytes_discard_raced);
	/*
	 * THP comes back only now. MADV_COLLAPSE takes the mmap lock for
	 * writing; done during the handoff it queued every fault's COPY
	 * behind it and behind the pushers' 2 MiB copies: fault latency p99
	 * went from ~0.1 ms to ~10 ms here. The chunks are known from the
	 * source's RANGE_DONE reports.
	 */
	thp_collapse(t);
	thp_collapse(t);	/* one more try for what was busy */
	return 1;
}

/*
 * The source gave up before we committed: the old VMM keeps the guest, so
 * give everything back as abort does, and never commit.
 */
static int cancelled(struct uffdmove_target *t, const char *why)
{
	err_set(&t->err, ECANCELED,
		"the source ended the handoff before the commit (%s): do not resume the guest here",
		why);
	return release(t, -ECANCELED);
}

/*
 * Read what the source sent. Returns 0 when nothing is left, 1 at DONE
 * (taken only once committed: before, it waits in t->done_seen), or the
 * session's end.
 */
static int read_messages(struct uffdmove_target *t)
{
	char buf[WIRE_MSG_MAX + 1], why[160];
	int fds[PEER_FDS_MAX], len, ret;
	struct wire_msg m;
	size_t i, nfds;

	for (;;) {
		len = peer_recv(t->sock, buf, sizeof(buf), fds, &nfds, 0);
		if (nfds && nfds <= PEER_FDS_MAX)
			peer_close_fds(fds, nfds);
		if (len == -EAGAIN)
			return 0;
		if (len < 0 && t->state == TGT_ACCEPTED)
			return cancelled(t, "it went away");
		if (len < 0)
			return target_orphan(t, len == -EMSGSIZE ? -EPROTO : -ECONNRESET,
				      "the source went away");
		ret = wire_decode(buf, (size_t)len, &m, why, sizeof(why));
		if (ret && t->state == TGT_ACCEPTED)
			return cancelled(t, why);
		if (ret)
			return target_orphan(t, -EPROTO, why);
		switch (m.type) {
		case WIRE_PROGRESS:
			t->st = m.stats;
			break;
		case WIRE_RANGE_DONE:
			for (i = 0; i < m.ranges.n; i++)
				thp_mark_done(t, m.ranges.ranges[i].start,
					      m.ranges.ranges[i].len);
			break;
		case WIRE_DONE:
			t->st = m.stats;
			t->done_seen = true;
			if (t->state == TGT_RUNNING)
				return 1;
			break;
		case WIRE_ABORT:
			/* Before the commit ECANCELED gives the guest back;
			 * anything else (we touched guest RAM early) must not
			 * unregister it under threads that may be running. */
			if (t->state == TGT_ACCEPTED &&
			    m.reason.errnum == ECANCELED)
				return cancelled(t, m.reason.text);
			/* -ECANCELED says "never committed": not ours now. */
			ret = -(int)m.reason.errnum;
			return target_orphan(t, ret == -ECANCELED || ret >= 0 ?
				      -ECONNRESET : ret, m.reason.text);
		default:
			if (t->state == TGT_ACCEPTED)
				return cancelled(t, "an unexpected message");
			return target_orphan(t, -EPROTO, "unexpected message");
		}
	}
}

/*
 * The point of no return. What the source sent so far is read first: if it
 * gave up, we must not commit. If it gives up meanwhile it shuts its
 * receiving side, our GO fails, and its ABORT is waiting to be read.
 */
static int commit(struct uffdmove_target *t)
{
	struct wire_msg go = { .type = WIRE_GO };
	int ret;

	ret = read_messages(t);
	if (ret < 0)
		return ret;
	ret = session_send(t->sock, &go, -1, 1000);
	if (ret) {
		/* Its ABORT follows the shutdown that failed our GO. */
		struct pollfd pfd = { .fd = t->sock, .events = POLLIN };

		poll(&pfd, 1, 1000);
		ret = read_messages(t);
		if (ret < 0)
			return ret;
		return target_orphan(t, -ECONNRESET,
			      "the source went away before the commit");
	}
	t->state = TGT_RUNNING;
	t->t_start = now_ns();
	keeper_start(t);
	return 0;
}

UFFDMOVE_EXPORT int uffdmove_target_process(struct uffdmove_target *t)
{
	int ret;

	if (!t)
		return -EINVAL;
	switch (t->state) {
	case TGT_ACCEPTED:
		ret = commit(t);
		if (ret)
			return ret;
		break;
	case TGT_RUNNING:
		break;
	case TGT_DONE:
		return 1;
	case TGT_ORPHANED:
		return t->failure;
	default:
		return err_set(&t->err, EINVAL,
			       "no handoff in progress (call uffdmove_target_handoff() first)");
	}
	ret = t->done_seen ? 1 : read_messages(t);
	if (ret == 1)
		ret = check_done(t);
	return ret == 1 ? finish(t) : ret;
}

UFFDMOVE_EXPORT int uffdmove_target_discard(struct uffdmove_target *t,
					    void *addr, size_t len)
{
	uint64_t a = (uintptr_t)addr, end = a + len;
	size_t i;
	int ret;

	if (!t)
		return -EINVAL;
	err_clear(&t->err);
	if (!len || !IS_ALIGNED(a | len, PAGE_SZ) || end < a)
		return err_set(&t->err, EINVAL,
			       "discard %p+%zu: must be non-empty, page aligned and not wrap",
			       addr, len);
	for (i = 0; i < t->nregions; i++)
		if (a >= t->regions[i].addr &&
		    end <= t->regions[i].addr + t->regions[i].len)
			break;
	if (i == t->nregions)
		return err_set(&t->err, EINVAL,
			       "discard %p+%zu: not inside one region", addr,
			       len);
	switch (t->state) {
	case TGT_RUNNING:
	case TGT_ORPHANED:
		ret = discards_fence(&t->discards, t->uffd, t->regions, i, a,
				     len, DISCARD_TIMEOUT_MS);
		if (ret)
			return err_set(&t->err, -ret,
				       "discard of region '%s' 0x%llx+%zu: %s",
				       t->regions[i].name,
				       (unsigned long long)a, len,
				       strerror(-ret));
		return 0;
	case TGT_DONE:
		return madvise(addr, len, MADV_DONTNEED) ?
		       err_set(&t->err, errno, "madvise: %s",
			       strerror(errno)) : 0;
	default:
		return err_set(&t->err, EINVAL,
			       "discard: guest RAM is not the target's before the commit");
	}
}

UFFDMOVE_EXPORT int uffdmove_target_fd(const struct uffdmove_target *t)
{
	return t ? t->epfd : -EINVAL;
}

UFFDMOVE_EXPORT int uffdmove_target_wait(struct uffdmove_target *t,
					 int timeout_ms)
{
	struct epoll_event ev;
	uint64_t deadline = timeout_ms < 0 ? 0 :
			    now_ns() + (uint64_t)timeout_ms * 1000000ULL;
	int ret, left = timeout_ms;

	for (;;) {
		ret = uffdmove_target_process(t);
		if (ret)
			return ret > 0 ? 0 : ret;
		if (timeout_ms >= 0) {
			uint64_t now = now_ns();

			if (now >= deadline)
				return err_set(&t->err, ETIMEDOUT,
					       "handoff not complete after %d ms",
					       timeout_ms);
			left = (int)((deadline - now) / 1000000) + 1;
		}
		if (epoll_wait(t->epfd, &ev, 1, left) < 0 && errno != EINTR)
			return err_set(&t->err, errno, "epoll_wait: %s",
				       strerror(errno));
	}
}

UFFDMOVE_EXPORT int uffdmove_target_stats(const struct uffdmove_target *t,
					  struct uffdmove_stats *st)
{
	if (!t || !st)
		return -EINVAL;
	*st = t->st;
	st->thp_collapsed = t->thp_collapsed;
	st->bytes_discarded += t->discards.bytes;
	if (t->t_start)
		st->elapsed_ns = (t->t_end ? t->t_end : now_ns()) - t->t_start;
	return 0;
}

UFFDMOVE_EXPORT const char *uffdmove_target_error(const struct uffdmove_target *t)
{
	return t ? t->err.msg : "invalid handle (NULL)";
}

UFFDMOVE_EXPORT void uffdmove_target_free(struct uffdmove_target *t)
{
	if (!t)
		return;
	keeper_stop(t);
	if (t->state == TGT_ORPHANED && t->uffd >= 0 && keeper_poison_missing(t)) {
		/* Closing the last uffd would let blocked threads read
		 * zeros where guest data was: keep it open on purpose. */
		t->uffd = -1;
	}
	close_uffd(t);
	if (t->epfd >= 0)
		close(t->epfd);
	discards_fini(&t->discards);
	thp_free(t);
	free(t->thp);
	free(t->regions);
	free(t);
}
