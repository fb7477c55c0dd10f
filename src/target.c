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
#include "pull.h"
#include "session.h"
#include "uffd.h"
#include "target.h"
#include "util.h"
#include "wire.h"

#define DISCARD_TIMEOUT_MS	5000

/* Each option in range, and the reserved words zero. */
static int check_opts(const struct uffdmove_target_opts *o, struct err_buf *err)
{
	const struct session_opt opts[] = {
		{ "on_source_death", o->on_source_death,
		  UFFDMOVE_ON_SOURCE_DEATH_POISON },
		{ "collapse_thp", o->collapse_thp, 1 },
		{ "pull", o->pull, UFFDMOVE_PULL_ON },
		{ "threads", o->threads, PULL_THREADS_MAX },
		{ "fault_policy", o->fault_policy, UFFDMOVE_FAULT_CHUNK },
	};

	return session_check_opts(err, opts, ARRAY_SIZE(opts), o->reserved,
				  sizeof(o->reserved)) ?:
	       session_check_reserved(err, &o->reserved32,
				      sizeof(o->reserved32));
}

static struct uffdmove_target_opts target_defaults(void)
{
	return (struct uffdmove_target_opts){
		.expected_uid = UFFDMOVE_UID_SELF,
		.handshake_timeout_ms = HANDSHAKE_TIMEOUT_MS,
		.on_source_death = UFFDMOVE_ON_SOURCE_DEATH_BLOCK,
		.collapse_thp = 1,
		.pull = UFFDMOVE_PULL_AUTO,
		.fault_policy = UFFDMOVE_FAULT_AUTO,
	};
}

UFFDMOVE_EXPORT int uffdmove_target_opts_init(struct uffdmove_target_opts *o)
{
	if (!o)
		return -EINVAL;
	*o = target_defaults();
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
void target_unregister_all(struct uffdmove_target *t, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		uffd_unregister(t->uffd, (void *)(uintptr_t)t->regions[i].addr,
				t->regions[i].len);
	for (i = 0; i < n; i++)
		uffd_wake(t->uffd, t->regions[i].addr, t->regions[i].len);
}

void target_close_uffd(struct uffdmove_target *t)
{
	if (t->uffd >= 0)
		close(t->uffd);
	t->uffd = -1;
}

/* Guest RAM, every region, with our uffd: all or none. */
static int register_regions(struct uffdmove_target *t)
{
	size_t i;
	int ret;

	for (i = 0; i < t->nregions; i++) {
		ret = uffd_register(t->uffd,
				    (void *)(uintptr_t)t->regions[i].addr,
				    t->regions[i].len,
				    UFFDIO_REGISTER_MODE_MISSING, &t->ioctls[i]);
		if (ret) {
			target_unregister_all(t, i);
			return err_set(&t->err, -ret,
				       "region '%s': UFFDIO_REGISTER: %s%s",
				       t->regions[i].name, strerror(-ret),
				       ret == -EBUSY ?
				       " (already registered with another userfaultfd: is another target using it?)" :
				       "");
		}
	}
	return 0;
}

/*
 * Guest RAM must be empty once registered: a page present in it (written,
 * read as the zero page, or a whole THP a single write faulted in) would
 * hide the source's data there for good, since fills never overwrite,
 * and the DONE check would count it as arrived. Registered first, so no
 * later touch can slip in: it would wait for the handoff.
 */
static int check_untouched(struct uffdmove_target *t)
{
	uint64_t bytes;
	size_t i;
	int ret;

	for (i = 0; i < t->nregions; i++) {
		ret = pm_count_present(&t->pm, t->regions[i].addr,
				       t->regions[i].len, &bytes);
		if (ret)
			return err_set(&t->err, -ret,
				       "region '%s': reading /proc/self/pagemap: %s",
				       t->regions[i].name, strerror(-ret));
		if (bytes)
			return err_set(&t->err, EEXIST,
				       "region '%s': %llu bytes of it are already in memory: the new VMM touched guest RAM before uffdmove_target_new(), and those pages would hide the guest's data; map it fresh and touch nothing before the handoff",
				       t->regions[i].name,
				       (unsigned long long)bytes);
	}
	return 0;
}

/* What every handle holds, from a half-made one to one that ended. */
static void destroy(struct uffdmove_target *t)
{
	target_close_uffd(t);
	thp_advice_restore(t);
	pm_close(&t->pm);
	if (t->epfd >= 0)
		close(t->epfd);
	if (t->progress_tfd >= 0)
		close(t->progress_tfd);
	discards_fini(&t->discards);
	thp_free(t);
	free(t->thp);
	free(t->regions);
	pthread_mutex_destroy(&t->lock);
	pthread_mutex_destroy(&t->collapse_lock);
	free(t);
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

	t = session_new_handle(out, sizeof(*t), "uffdmove_target_new", &ret);
	if (!t)
		return ret;
	t->uffd = t->sock = t->epfd = t->pm.fd = t->progress_tfd = -1;
	t->finisher.efd = -1;
	pthread_mutex_init(&t->lock, NULL);
	pthread_mutex_init(&t->collapse_lock, NULL);
	t->opts = opts ? *opts : target_defaults();
	ret = check_opts(&t->opts, &t->err);
	if (!ret)
		ret = session_take_regions(&t->err, regions, n, true,
					   &t->regions);
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
	ret = pm_open(&t->pm, 0);
	if (ret) {
		ret = err_set(&t->err, -ret, "/proc/self/pagemap: %s",
			      strerror(-ret));
		goto fail;
	}
	ret = open_uffd(t);
	if (ret)
		goto fail;
	ret = register_regions(t);
	if (!ret && (ret = check_untouched(t)))
		target_unregister_all(t, n);
	if (ret)
		goto fail;
	t->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (t->epfd < 0) {
		ret = err_set(&t->err, errno, "epoll_create1: %s",
			      strerror(errno));
		target_unregister_all(t, n);
		goto fail;
	}
	*out = t;
	return 0;
fail:
	err_keep(&t->err, ret);
	destroy(t);
	return ret;
}

/* The source refused or the handshake failed: give everything back. */
int target_release(struct uffdmove_target *t, int ret)
{
	pull_free(t);
	target_unregister_all(t, t->nregions);
	target_close_uffd(t);
	thp_advice_restore(t);
	t->state = TGT_CLOSED;
	return ret;
}

/* Only a failure sets the message: a discard must not wipe the reason
 * a session failed, which process() keeps returning. */
static int discard_locked(struct uffdmove_target *t, void *addr, size_t len)
{
	uint64_t a = (uintptr_t)addr, end = a + len;
	size_t i;
	int ret;

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
		/* Noted first, so that the collapse after DONE (thp.c) does
		 * not fill the range again; never in the middle of one. */
		pthread_mutex_lock(&t->collapse_lock);
		ret = discards_note(&t->discards, t->regions, i, a, len);
		if (madvise(addr, len, MADV_DONTNEED) && !ret)
			ret = -errno;
		pthread_mutex_unlock(&t->collapse_lock);
		return ret ? err_set(&t->err, -ret, "discard %p+%zu: %s", addr,
				     len, strerror(-ret)) : 0;
	default:
		return err_set(&t->err, EINVAL,
			       "discard: guest RAM is not the target's before the commit");
	}
}

UFFDMOVE_EXPORT int uffdmove_target_discard(struct uffdmove_target *t,
					    void *addr, size_t len)
{
	int ret;

	if (!t)
		return -EINVAL;
	/* A balloon thread may discard while the VMM's loop processes:
	 * never against a state change (DONE unregisters guest RAM). */
	pthread_mutex_lock(&t->lock);
	ret = discard_locked(t, addr, len);
	pthread_mutex_unlock(&t->lock);
	return ret;
}

UFFDMOVE_EXPORT int uffdmove_target_fd(const struct uffdmove_target *t)
{
	return t ? t->epfd : -EINVAL;
}

UFFDMOVE_EXPORT int uffdmove_target_stats(const struct uffdmove_target *t,
					  struct uffdmove_stats *st)
{
	struct uffdmove_target *w = (struct uffdmove_target *)t;

	if (!t || !st)
		return -EINVAL;
	pthread_mutex_lock(&w->lock);
	*st = t->st;
	if (t->pull)	/* from the handshake on, ours are the counters */
		pull_stats(w, st);
	st->pull_unused_reason = t->pull ? UFFDMOVE_PULL_WHY_USED :
				 t->pull_why;
	/* Whether it runs first: "over" then comes with its final counts
	 * (the collapser stores them before it says it has ended). */
	st->thp_collapsing = load_acquire(&t->collapse_running);
	st->thp_collapsed = load_acquire(&t->thp_collapsed);
	st->thp_uncollapsed = load_acquire(&t->thp_uncollapsed);
	st->bytes_discarded += t->discards.bytes;
	if (t->t_start)
		st->elapsed_ns = (t->t_end ? t->t_end : now_ns()) - t->t_start;
	pthread_mutex_unlock(&w->lock);
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
	finish_free(t);
	keeper_stop(t);
	pull_stop(t);
	thp_collapse_stop(t);
	if (t->state == TGT_ORPHANED && t->uffd >= 0 && keeper_poison_missing(t)) {
		/* Closing the last uffd would let blocked threads read
		 * zeros where guest data was: keep it open on purpose. */
		t->uffd = -1;
	}
	pull_free(t);
	destroy(t);
}
