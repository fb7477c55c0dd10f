/* SPDX-License-Identifier: MIT */
/*
 * libuffdmove - hand anonymous guest RAM from an old VMM process to a new one,
 * postcopy style, with userfaultfd.
 *
 * Conventions (see uffdmove(7)):
 *  - every call that can fail returns 0 (or a documented non-negative value)
 *    on success and a negative errno on failure, never -1 plus errno;
 *  - handles are opaque, created by *_new and released by *_free (NULL is a
 *    no-op);
 *  - each handle keeps a human-readable message for its last failure, valid
 *    until the next call on that handle;
 *  - one thread per handle at a time; distinct handles are independent;
 *  - the library never prints, never exits and installs no signal handlers.
 */
#ifndef UFFDMOVE_H
#define UFFDMOVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ version */

#define UFFDMOVE_VERSION_MAJOR 0
#define UFFDMOVE_VERSION_MINOR 4
#define UFFDMOVE_VERSION_MICRO 0

/**
 * uffdmove_version - the version of the library loaded at run time.
 *
 * Compare with UFFDMOVE_VERSION_* to detect a header/library mismatch.
 * Thread safe.
 *
 * @return a static string such as "0.1.0"; never NULL.
 */
const char *uffdmove_version(void);

/**
 * uffdmove_new_error - why the last uffdmove_source_new() or
 * uffdmove_target_new() on this thread failed.
 *
 * Those calls return no handle on failure, so their message is kept here
 * instead: it names the region and the reason, as a handle's message
 * does. Each *_new call clears it first.
 *
 * Thread safe: each thread has its own.
 *
 * uffdmove_target_socket() and uffdmove_source_socket() leave theirs here
 * too.
 *
 * @return the message, "" if the last *_new call succeeded; valid until
 *	   the next *_new call on this thread. Never NULL.
 */
const char *uffdmove_new_error(void);

/**
 * uffdmove_target_socket - the new VMM: make the handoff's socket over a
 * channel the two VMMs already share.
 *
 * The library talks over an AF_UNIX SOCK_SEQPACKET socket. Where the VMMs
 * already have an AF_UNIX channel of their own (a stream socket, say),
 * the new VMM calls this: it makes a SOCK_SEQPACKET pair, sends one end
 * over @channel (a 4-byte tag with the fd, SCM_RIGHTS) and returns the
 * other, for uffdmove_target_handoff(). The old VMM takes its end with
 * uffdmove_source_socket() at the same point of their own protocol. The
 * new VMM creating the pair makes SO_PEERCRED on the old VMM's end name
 * the new VMM, which the source authenticates.
 *
 * Blocking while @channel is full. Thread safe.
 *
 * @return the socket (close-on-exec, the caller's to close), or a
 *	   negative errno with the message in uffdmove_new_error().
 */
int uffdmove_target_socket(int channel);

/**
 * uffdmove_source_socket - the old VMM: take the handoff's socket that
 * uffdmove_target_socket() sent over @channel.
 *
 * Reads exactly the 4-byte tag and its fd, nothing more: call it when the
 * next thing on @channel is that message.
 *
 * @param timeout_ms how long to wait for it; -1: no limit.
 * @return the socket (close-on-exec, the caller's to close), for
 *	   uffdmove_source_accept(); -ETIMEDOUT; -ECONNRESET the channel
 *	   closed; -EPROTO something else came (bytes of the VMMs' own, or
 *	   no SOCK_SEQPACKET socket); the message is in uffdmove_new_error().
 */
int uffdmove_source_socket(int channel, int timeout_ms);

/* -------------------------------------------------------------------- probe */

/* THP modes, as in /sys/kernel/mm/transparent_hugepage/enabled. */
#define UFFDMOVE_THP_UNKNOWN	0
#define UFFDMOVE_THP_NEVER	1
#define UFFDMOVE_THP_MADVISE	2
#define UFFDMOVE_THP_ALWAYS	3

/* Why kernel-mode faults can (or cannot) be caught. */
#define UFFDMOVE_KFAULT_NO		0
#define UFFDMOVE_KFAULT_DEV		1 /* /dev/userfaultfd is usable */
#define UFFDMOVE_KFAULT_CAP		2 /* CAP_SYS_PTRACE */
#define UFFDMOVE_KFAULT_SYSCTL		3 /* vm.unprivileged_userfaultfd=1 */

struct uffdmove_caps {
	uint64_t uffd_features;	/* what UFFDIO_API offers; 0: no userfaultfd */
	uint64_t uffd_ioctls;	/* ioctls UFFDIO_API reports */
	bool userfaultfd;	/* a userfaultfd can be created at all */
	bool move;		/* UFFDIO_MOVE exists (UFFD_FEATURE_MOVE) */
	bool cross_process_move; /* a real cross-process MOVE succeeded */
	bool poison;		/* UFFDIO_POISON exists */
	bool kernel_faults;	/* faults from syscalls/KVM can be caught */
	uint32_t kernel_faults_via; /* UFFDMOVE_KFAULT_* */
	bool dev_userfaultfd;	/* /dev/userfaultfd opens */
	int32_t unprivileged_userfaultfd; /* the sysctl, -1 if unreadable */
	bool pagemap_scan;	/* PAGEMAP_SCAN ioctl on /proc/self/pagemap */
	bool pagemap_pfn;	/* pagemap shows PFNs (CAP_SYS_ADMIN) */
	bool io_uring;		/* an io_uring can be set up */
	int32_t io_uring_disabled; /* kernel.io_uring_disabled, -1 if absent */
	uint32_t thp_mode;	/* UFFDMOVE_THP_* */
	bool madv_collapse;	/* MADV_COLLAPSE is accepted */
	bool cap_sys_ptrace;	/* effective capabilities of this process */
	bool cap_sys_admin;
	bool cap_sys_nice;
	int32_t yama_ptrace_scope; /* kernel.yama.ptrace_scope, -1 without Yama */
	bool pidfd;		/* pidfd_open() works: the source's identity */
	bool pull;		/* a new VMM of this user may pull from an old
				   one (see uffdmove(7), "Pull"); a source
				   that is not dumpable still refuses it */
	uint64_t reserved[7];
};

/**
 * uffdmove_probe - what this kernel and this process allow.
 *
 * Tries each feature for real: creates userfaultfds, moves a page, and forks
 * a short-lived child once to learn whether a MOVE through a uffd created by
 * another process works. The result is computed once per process and cached;
 * later calls copy the cache.
 *
 * The fork COW-shares every private page of the caller for a moment, and
 * the kernel then refuses to MOVE such a page until it is written again:
 * call it before populating guest RAM (or mark guest RAM MADV_DONTFORK).
 * The library never calls it itself; MODE_MOVE between processes relies on
 * its cached answer.
 *
 * Blocking: the first call takes a few milliseconds. Thread safe.
 *
 * @param caps [out] filled on success; reserved words are zeroed.
 * @return 0, or -EINVAL if @caps is NULL.
 */
int uffdmove_probe(struct uffdmove_caps *caps);

/* ------------------------------------------------------------------ regions */

#define UFFDMOVE_NAME_MAX 31	/* bytes, without the terminating NUL */
#define UFFDMOVE_REGIONS_MAX 64

struct uffdmove_region {
	const char *name;	/* matched between source and target; 1..31 bytes */
	void *addr;		/* start, in the calling process; page aligned */
	size_t len;		/* bytes; page multiple */
};

/* -------------------------------------------------------------------- stats */

/* Primitive used for cross-process (or same-process) pages. */
#define UFFDMOVE_PRIM_NONE	0
#define UFFDMOVE_PRIM_COPY	1
#define UFFDMOVE_PRIM_MOVE	2
#define UFFDMOVE_PRIM_PULL	3 /* the target read the pages and moved them
				     into place itself: one copy, THP kept */

/* Why MOVE was not used for a session (stats.move_unused_reason). */
#define UFFDMOVE_WHY_USED		0 /* MOVE was used */
#define UFFDMOVE_WHY_MODE_COPY		1 /* opts.mode is COPY */
#define UFFDMOVE_WHY_NO_FEATURE		2 /* target did not negotiate MOVE */
#define UFFDMOVE_WHY_CROSS_MM		3 /* kernel refuses cross-process MOVE */
#define UFFDMOVE_WHY_NOT_MOVABLE	4 /* no page was exclusive and unpinned */

/* Why the target did not pull (stats.pull_unused_reason). */
#define UFFDMOVE_PULL_WHY_USED		0 /* it pulled */
#define UFFDMOVE_PULL_WHY_OFF_TARGET	1 /* target opts.pull is OFF */
#define UFFDMOVE_PULL_WHY_OFF_SOURCE	2 /* source opts.pull is OFF, or
					     its mode is MOVE */
#define UFFDMOVE_PULL_WHY_DENIED	3 /* the target may not read the
					     source's memory (ptrace rules:
					     uid, Yama, LSM, non-dumpable) */
#define UFFDMOVE_PULL_WHY_NO_MOVE	4 /* no UFFD_FEATURE_MOVE here */
#define UFFDMOVE_PULL_WHY_SAME_MM	5 /* one process: MOVE needs no copy */
#define UFFDMOVE_PULL_WHY_NO_THP	6 /* AUTO, and no target region takes
					     huge pages: a push copies once,
					     a 4 KiB pull twice */

struct uffdmove_stats {
	uint64_t bytes_total;	  /* sum of region lengths */
	uint64_t bytes_populated; /* source pages with data (counted as the
				     movers classify each chunk) */
	uint64_t bytes_moved;	  /* handed over by UFFDIO_MOVE */
	uint64_t bytes_copied;	  /* handed over by UFFDIO_COPY */
	uint64_t bytes_zeroed;	  /* holes resolved by UFFDIO_ZEROPAGE */
	uint64_t bytes_skipped;	  /* source holes left for the target */
	uint64_t bytes_discarded; /* discarded by the target during the
				     handoff (raw madvise, as the source saw
				     it; target's stats: plus its own
				     uffdmove_target_discard()) */
	uint64_t faults;	  /* faults served */
	uint64_t fault_ns_p50;	  /* fault service latency, read to wake */
	uint64_t fault_ns_p99;
	uint64_t fault_ns_max;
	uint64_t thp_moved;	  /* 2 MiB chunks moved as one PMD */
	uint64_t thp_copied;	  /* 2 MiB THP chunks copied whole */
	uint64_t thp_collapsed;	  /* chunks the target collapsed again
				     (target's stats only) */
	uint64_t move_ebusy;	  /* MOVE refusals that fell back to COPY */
	uint64_t pinned_skipped;  /* bytes never tried: declared pinned */
	uint64_t eagain_retries;  /* retries after EAGAIN */
	uint64_t elapsed_ns;	  /* source: accept to DONE; target: commit
				     (first process/wait) to DONE */
	uint32_t primitive;	  /* UFFDMOVE_PRIM_* for cross-process pages */
	uint32_t move_unused_reason; /* UFFDMOVE_WHY_* */
	uint64_t bytes_discard_raced; /* raw discards (madvise) that a fill
				     in flight may have refilled with stale
				     data; see uffdmove(7), "Discards" */
	uint64_t bytes_pulled;	  /* pull: read from the source by the
				     target (also counted in bytes_moved or
				     bytes_copied as they went into place) */
	uint64_t bytes_released;  /* freed by the source once they were
				     in the committed target (MODE_AUTO,
				     between processes) */
	uint32_t pull_unused_reason; /* UFFDMOVE_PULL_WHY_* */
	uint32_t thp_collapsing;  /* 1 while the target's background thread
				     collapses chunks after DONE; 0 before,
				     and once it has ended (target only) */
	uint64_t thp_uncollapsed; /* chunks that collapse gave up on: the
				     VMM advised MADV_NOHUGEPAGE there, the
				     guest discarded part of it, or the
				     kernel refused twice (target only) */
	uint64_t reserved[3];
};

/* ------------------------------------------------------------------- target */

struct uffdmove_target;

/* What happens to guest threads touching missing pages if the source dies. */
#define UFFDMOVE_ON_SOURCE_DEATH_BLOCK	0 /* stay blocked until the VMM acts */
#define UFFDMOVE_ON_SOURCE_DEATH_POISON	1 /* missing pages raise SIGBUS */

struct uffdmove_target_opts {
	uint32_t expected_uid;	/* source's uid; UFFDMOVE_UID_SELF: ours */
	int32_t expected_pid;	/* source's pid; 0: any */
	uint32_t handshake_timeout_ms; /* 0: default (5000) */
	uint32_t on_source_death; /* UFFDMOVE_ON_SOURCE_DEATH_* */
	uint32_t collapse_thp;	/* 1 (default): MADV_COLLAPSE what was THP */
	uint32_t pull;		/* UFFDMOVE_PULL_AUTO (default), _OFF, _ON */
	uint32_t threads;	/* pull: threads that pull; 0: default (2) */
	uint32_t fault_policy;	/* pull: UFFDMOVE_FAULT_* */
	/* After the commit, end the handoff (-ETIMEDOUT, like the source's
	 * death) when guest RAM gains nothing for this long; 0: never. */
	uint32_t progress_timeout_ms;
	uint32_t reserved32;
	uint64_t reserved[4];
};

#define UFFDMOVE_UID_SELF UINT32_MAX

/*
 * Pull (both sides' opts.pull): with AUTO the new VMM reads the old one's
 * memory itself where the kernel lets it (process_vm_readv: same uid and
 * no Yama restriction, or CAP_SYS_PTRACE), moves it into place, and keeps
 * its uffd to itself; the old VMM frees what arrived. OFF always pushes.
 * Pull gives the target read access to the whole source process for the
 * session: see uffdmove(7), "Pull". The target's AUTO pulls only when one
 * of its regions takes huge pages; ON pulls whenever it may (in the
 * source, ON is AUTO).
 */
#define UFFDMOVE_PULL_AUTO	0
#define UFFDMOVE_PULL_OFF	1
#define UFFDMOVE_PULL_ON	2

/* How the pulling target serves a fault on a page not yet there. */
#define UFFDMOVE_FAULT_AUTO	0 /* default: PAGE while faults are rare,
				     CHUNK while they come faster than about
				     one per 500 us (the guest then waits on
				     memory anyway: bring it in bulk); guest
				     RAM MADV_HUGEPAGE again meanwhile */
#define UFFDMOVE_FAULT_PAGE	1 /* read and copy just the 4 KiB page (tens
				     of us); its chunk follows next in small
				     pages and is collapsed to THP after the
				     handoff */
#define UFFDMOVE_FAULT_CHUNK	2 /* pull its whole 2 MiB chunk first (THP
				     kept; a first touch waits ~0.3-3 ms) */

/**
 * uffdmove_target_opts_init - fill @opts with the defaults.
 *
 * @return 0, or -EINVAL if @opts is NULL.
 */
int uffdmove_target_opts_init(struct uffdmove_target_opts *opts);

/**
 * uffdmove_target_new - prepare the new VMM's guest RAM to receive.
 *
 * Creates a userfaultfd that also catches kernel-mode faults (KVM, syscalls),
 * negotiates its features once and registers every region for MISSING
 * faults, with REMOVE/UNMAP/REMAP events. The regions must be private
 * anonymous mappings that the caller has not touched yet; they must stay
 * mapped until uffdmove_target_free().
 *
 * Not blocking. The handle is used by one thread at a time.
 *
 * @param out [out] the new handle, written only on success.
 * @param regions @n regions, copied; names are copied.
 * @param opts NULL for the defaults.
 * @return 0; -EINVAL for a bad argument (NULL, unaligned, overlapping, bad
 *	   name, non-zero reserved word); -EPERM if kernel-mode faults cannot
 *	   be caught (needs CAP_SYS_PTRACE or access to /dev/userfaultfd);
 *	   -EOPNOTSUPP if the kernel lacks userfaultfd or its REMOVE/UNMAP/
 *	   REMAP events; -ENOMEM; another
 *	   kernel errno from UFFDIO_REGISTER. Nothing stays registered on
 *	   failure.
 */
int uffdmove_target_new(struct uffdmove_target **out,
			const struct uffdmove_region *regions, size_t n,
			const struct uffdmove_target_opts *opts);

/**
 * uffdmove_target_handoff - start the handoff with the source and wait for
 * its answer.
 *
 * Checks the peer's credentials and sends HELLO over @sock (a connected
 * AF_UNIX SOCK_SEQPACKET socket). Where opts.pull allows, HELLO asks to
 * pull and the uffd stays here: the source offers its memory, and once we
 * proved we may read it (ptrace rules) we pull. Else, or when the source
 * declines, HELLO goes (again) with the uffd and the source pushes. Waits,
 * up to the handshake deadline per step, for ACCEPT or REJECT. @sock stays
 * the caller's and must stay open until the handoff completes or the
 * handle is freed.
 *
 * Once accepted, a region advised MADV_HUGEPAGE throughout is advised
 * MADV_NOHUGEPAGE until the handoff ends (unless a same-process source
 * moves its pages, or pull faults are UFFDMOVE_FAULT_CHUNK): a fault there
 * would make the kernel clear a huge page first. The advice comes back
 * when guest RAM is the VMM's again; uffdmove(7), "Transparent huge pages".
 *
 * Blocking (bounded by the handshake deadline).
 *
 * @return 0: accepted (resume the guest only after the first
 *	   uffdmove_target_process() committed); -ETIMEDOUT; -ECONNRESET
 *	   the source went away; -EINVAL called twice or bad socket; -EPERM
 *	   the source is not the expected peer. When the source REJECTs, its
 *	   errno is returned with its message: -EINVAL regions do not match,
 *	   -EPROTO malformed HELLO, -EPERM we are not authorised,
 *	   -EOPNOTSUPP / -EBUSY its MODE_MOVE cannot be honoured. -EPROTO
 *	   also when a source offering to be pulled cannot prove who it is
 *	   (its cookie). On failure the regions are unregistered and
 *	   untouched, and a source still waiting for us is told: the old VMM
 *	   still owns the guest.
 */
int uffdmove_target_handoff(struct uffdmove_target *t, int sock);

/**
 * uffdmove_target_abort - give the guest back before resuming it.
 *
 * Valid after uffdmove_target_handoff() returned 0 and before the first
 * uffdmove_target_process() or uffdmove_target_wait(), which commit the
 * handoff (the point of no return). Sends ABORT and unregisters the regions;
 * the source then keeps all of its guest memory (it copies, never moves,
 * before the commit) and may resume the old VMM. Pages already copied here
 * stay in the mappings and mean nothing: the caller should unmap or reuse
 * the regions.
 *
 * @return 0; -EINVAL if there is no accepted, uncommitted handoff.
 */
int uffdmove_target_abort(struct uffdmove_target *t);

/**
 * uffdmove_target_discard - discard guest RAM during a handoff, safely.
 *
 * What a balloon or free page reporting would do with MADV_DONTNEED, but
 * fenced against the handoff: a raw madvise() cannot be ordered against a
 * page the source is filling in at that moment, which may then land behind
 * the discard with stale data (see "Discards during a handoff" in
 * uffdmove(7)). Afterwards every page of the range reads zero and nothing
 * the source sends can land there. Missing pages become zero pages at
 * once; pages that had arrived are cleared but keep their memory (discard
 * them again after the handoff to free it). After the handoff it is a
 * plain MADV_DONTNEED.
 *
 * Blocking: a few microseconds per page; waits while a userfaultfd event
 * is pending (up to 5 s). May be called from any thread, also while
 * another is in uffdmove_target_process() or uffdmove_target_wait()
 * (a balloon driver's own thread, say): the handle serialises them.
 *
 * @param addr page aligned, inside one region.
 * @param len page multiple, non-zero.
 * @return 0; -EINVAL bad range, or before the commit (guest RAM is not
 *	   ours to discard yet); -ETIMEDOUT an event stayed pending; -ENOMEM;
 *	   another kernel errno from UFFDIO_ZEROPAGE or madvise.
 */
int uffdmove_target_discard(struct uffdmove_target *t, void *addr,
			    size_t len);

/**
 * uffdmove_target_fd - a pollable fd for the caller's event loop.
 *
 * Readable when uffdmove_target_process() has work. Borrowed: valid until
 * uffdmove_target_free().
 *
 * @return the fd, or -EINVAL.
 */
int uffdmove_target_fd(const struct uffdmove_target *t);

/**
 * uffdmove_target_process - handle what is pending, without blocking.
 *
 * The first call commits the handoff: from then on the target's state is
 * the newer one and uffdmove_target_abort() is no longer possible. Resume
 * the vCPUs right after it.
 *
 * Pushed: reads the source's messages (progress, THP chunks complete,
 * done). Pulling: the commit starts our puller threads and a fault thread
 * of ours (the fd above becomes readable when they end or fail), and
 * every chunk in is DONE. After the source's death it keeps the uffd
 * serviced under the death policy. On DONE a thread of the library checks
 * guest RAM, unregisters the regions, closes the uffd (the fd becomes
 * readable when it is done: the call then returns 1) and starts collapsing
 * THP chunks that arrived as small pages: stats.thp_collapsed grows
 * afterwards, until stats.thp_collapsing drops to 0. Every call does well
 * under a millisecond of work (its thread may still be preempted by the
 * guest's and the library's threads on a busy host): fit for an event
 * loop's thread. Before the commit the fd also becomes readable when the
 * source gives up: the next call then returns -ECANCELED.
 *
 * @return 1 handoff complete; 0 in progress; -ECONNRESET the source died
 *	   before completing (missing pages stay blocked or poisoned, never
 *	   zero); the errno the source sent with ABORT when it gave up
 *	   (e.g. -EPROTO after an mremap of guest RAM), with its message;
 *	   -EPROTO a malformed message, or DONE while guest RAM holds fewer
 *	   bytes with data than the source announced in ACCEPT (missing
 *	   pages stay blocked or poisoned; when pages moved, less what
 *	   reclaim took of MADV_FREE'd memory meanwhile, with a warning);
 *	   -EFAULT the old VMM unmapped part of guest RAM (its pages stay
 *	   missing, never zero); -ETIME nothing arrived for
 *	   opts.progress_timeout_ms: the source is treated as gone (as for
 *	   -ECONNRESET); -ECANCELED the source gave up
 *	   before the commit: do not resume the guest here, the old VMM
 *	   keeps it; -EINVAL called out of order. After a
 *	   failure stop polling uffdmove_target_fd(): it stays readable.
 */
int uffdmove_target_process(struct uffdmove_target *t);

/**
 * uffdmove_target_wait - process until complete, failed or @timeout_ms.
 *
 * With no timeout, or 20 s of it left, the end's check at DONE runs in the
 * calling thread (milliseconds per GiB, at most ~17 s with a slow source),
 * not in the library's thread; else as uffdmove_target_process().
 *
 * @param timeout_ms -1: no timeout.
 * @return 0 complete; -ETIMEDOUT; or the failure of uffdmove_target_process.
 */
int uffdmove_target_wait(struct uffdmove_target *t, int timeout_ms);

/**
 * uffdmove_target_stats - what the source reported, plus local counters.
 *
 * @return 0, or -EINVAL.
 */
int uffdmove_target_stats(const struct uffdmove_target *t,
			  struct uffdmove_stats *st);

/**
 * uffdmove_target_error - the last failure's explanation; "" if none.
 *
 * Valid until the next call on @t. Never NULL.
 */
const char *uffdmove_target_error(const struct uffdmove_target *t);

/**
 * uffdmove_target_free - release the handle.
 *
 * If the handoff is complete, nothing else happens. If the source died,
 * every page that never arrived is poisoned before the uffd is closed, so a
 * guest thread still touching one gets SIGBUS, never zeros (without
 * UFFDIO_POISON the uffd is deliberately left open instead). It is a caller
 * bug to free a target whose handoff is still running. NULL is a no-op.
 */
void uffdmove_target_free(struct uffdmove_target *t);

/* ------------------------------------------------------------------- source */

struct uffdmove_source;

enum uffdmove_mode {
	UFFDMOVE_MODE_AUTO,
	UFFDMOVE_MODE_COPY,
	UFFDMOVE_MODE_MOVE,
};

struct uffdmove_source_opts {
	uint32_t mode;		/* enum uffdmove_mode; default AUTO */
	uint32_t threads;	/* mover threads; 0: default (2) */
	uint32_t expected_uid;	/* target's uid; UFFDMOVE_UID_SELF: ours */
	int32_t expected_pid;	/* target's pid; 0: any */
	uint32_t handshake_timeout_ms; /* 0: default (5000) */
	/* How long the target may take to commit after ACCEPT, and to
	 * confirm DONE once it was sent; 0: default (30000). */
	uint32_t peer_timeout_ms;
	/* Called about every 64 MiB handed over (pulled: reported by the
	 * target) and at the end; may be NULL. Under uffdmove_source_run()
	 * it runs on the thread that serves faults: keep it short; driven by
	 * uffdmove_source_process(), on the caller's thread, with the latest
	 * counters (calls the loop was too slow for are merged). */
	void (*progress)(const struct uffdmove_stats *st, void *arg);
	void *progress_arg;
	uint32_t pull;		/* UFFDMOVE_PULL_AUTO (default), _OFF, _ON */
	/* After the commit, end the run (-ETIMEDOUT) when nothing is handed
	 * over (pulled: the target reports nothing) for this long, the
	 * target still alive; 0: never. */
	uint32_t progress_timeout_ms;
	uint64_t reserved[5];
};

/**
 * uffdmove_source_opts_init - fill @opts with the defaults.
 *
 * @return 0, or -EINVAL if @opts is NULL.
 */
int uffdmove_source_opts_init(struct uffdmove_source_opts *opts);

/**
 * uffdmove_source_new - describe the old VMM's guest RAM.
 *
 * The regions must stay mapped, and the guest paused, until the handoff is
 * done or uffdmove_source_free().
 *
 * @return 0; -EINVAL bad argument; -ENOMEM.
 */
int uffdmove_source_new(struct uffdmove_source **out,
			const struct uffdmove_region *regions, size_t n,
			const struct uffdmove_source_opts *opts);

/**
 * uffdmove_source_declare_pinned - never MOVE pages in this range.
 *
 * For ranges a device or the kernel holds: VFIO DMA maps, io_uring fixed
 * buffers, O_DIRECT in flight. They are copied instead. Call before
 * uffdmove_source_accept().
 *
 * @return 0; -EINVAL if the range is unaligned, empty or outside every
 *	   region, or accept was already called; -ENOMEM.
 */
int uffdmove_source_declare_pinned(struct uffdmove_source *s, void *addr,
				   size_t len);

/**
 * uffdmove_source_accept - receive the target's HELLO and answer it.
 *
 * Authenticates the peer (SO_PEERCRED), receives HELLO, validates the
 * regions against ours and answers ACCEPT or a specific REJECT. A HELLO
 * that asks to pull is offered our memory (or declined, opts.pull OFF or
 * MODE_MOVE), and the target's answer is taken too: PULL, or HELLO again
 * with its uffd to be pushed (then our pages are classified). @sock stays
 * the caller's; keep it open until uffdmove_source_run() returns.
 *
 * Blocking (bounded by the handshake deadline).
 *
 * @return 0: the target may commit (uffdmove_source_run() says whether it
 *	   did); -EPERM peer not authorised;
 *	   -EPROTO malformed HELLO or wrong fd count; -EINVAL regions do not
 *	   match (message names the region and both values) or called out of
 *	   order; -EOPNOTSUPP MODE_MOVE but the kernel cannot move here;
 *	   -EBUSY MODE_MOVE and a range is declared pinned; -ETIMEDOUT;
 *	   -ECONNRESET; -ECANCELED the target gave up the handshake after
 *	   our ACCEPT. Guest memory is untouched, and the target was sent a
 *	   REJECT with the same errno.
 */
int uffdmove_source_accept(struct uffdmove_source *s, int sock);

/**
 * uffdmove_source_run - serve faults and push, or be pulled, until the
 * target has all.
 *
 * Pushing: the calling thread serves faults through io_uring; opts.threads
 * - 1 more threads push in the background (with one thread, the caller
 * does both, faults first). Before the target commits nothing is moved,
 * only copied. Pulled: the target reads our memory itself; we follow its
 * messages and, in MODE_AUTO after its commit, free the ranges it reports
 * as arrived (declared pinned ranges stay). Returns 0 only when the target
 * committed and then confirmed that it has every page (FIN). On failure
 * the socket is shut down, so a target blocked on an event learns of it.
 *
 * Blocking; bounded by opts.peer_timeout_ms while the target has not
 * committed, after DONE until it confirms, and, pulled, after each report
 * of the committed target. uffdmove_source_cancel() ends it from another
 * thread.
 *
 * @return 0; -ECANCELED the target never committed, whatever ended the
 *	   session (it aborted, went away, did not commit in time, the
 *	   caller cancelled, or another failure before the commit): it never
 *	   ran the guest and can no longer commit, every byte is still here,
 *	   so the old VMM may resume; -ECONNRESET or -ESRCH the target died
 *	   or hung up after committing (stats tell how much was handed over;
 *	   in COPY mode our memory is intact); -ETIMEDOUT the target did not
 *	   confirm DONE in time, or, pulling, went silent, or nothing was
 *	   handed over for opts.progress_timeout_ms; -ECONNABORTED
 *	   cancelled after the commit;
 *	   -EBUSY MODE_MOVE and a page could not move (the kernel refused:
 *	   pinned or shared, or mapped unlike the target, e.g. read-only;
 *	   or the page map shows it copy-on-write shared with another
 *	   process): the handoff completed by copying that
 *	   page, the message names it; -EPROTO a malformed message, or the target mremap()ed
 *	   guest RAM; -EFAULT this process unmapped part of guest RAM
 *	   during the handoff; -EINVAL called out of order.
 */
int uffdmove_source_run(struct uffdmove_source *s);

/**
 * uffdmove_source_fd - a pollable fd for driving the run from an event loop.
 *
 * Instead of uffdmove_source_run() on a thread of its own, an event loop
 * calls uffdmove_source_process() once after a successful accept, then
 * whenever this fd is readable. Borrowed: valid until
 * uffdmove_source_free().
 *
 * @return the fd, or -EINVAL.
 */
int uffdmove_source_fd(const struct uffdmove_source *s);

/**
 * uffdmove_source_process - drive the run from an event loop, in bounded
 * steps.
 *
 * The first call (after a successful uffdmove_source_accept()) starts the
 * run that uffdmove_source_run() would do, in the library's own threads,
 * and returns 0. Later calls hand on what the run left: opts.progress is
 * then called from here, on the caller's thread, and at the end the
 * result. Never blocks: microseconds of work plus the progress callback.
 *
 * Not thread safe against itself; uffdmove_source_stats() and
 * uffdmove_source_cancel() may be called from any thread meanwhile, and
 * uffdmove_source_error() once a call returned the failure.
 *
 * @return 0 in progress; 1 complete (where uffdmove_source_run() returns
 *	   0); a negative errno exactly as uffdmove_source_run() returns it,
 *	   with its meaning (-ECANCELED: the old VMM may resume its guest).
 *	   After the end every call returns the same and the fd stays
 *	   readable: stop polling it. -EINVAL before a successful accept or
 *	   on a handle that uffdmove_source_run() drove.
 */
int uffdmove_source_process(struct uffdmove_source *s);

/**
 * uffdmove_source_cancel - end a handoff from another thread.
 *
 * Settled when it returns (it shuts our receiving side at once): a commit
 * the target attempts from then on fails there. uffdmove_source_run() (or
 * the run _process() drives) then returns soon: with -ECANCELED if the
 * target had not committed (the old VMM keeps its guest), else with
 * -ECONNABORTED (the guest runs in the target, whose missing pages then
 * block or are poisoned under its policy). Called after accept but before
 * the run, the run returns after its first look at the socket and the uffd
 * (a GO queued before the cancel counts).
 *
 * Not blocking. Thread safe; it is a caller bug to call it concurrently
 * with, or after, uffdmove_source_free().
 *
 * @return 0, or -EINVAL if @s is NULL.
 */
int uffdmove_source_cancel(struct uffdmove_source *s);

/**
 * uffdmove_source_stats - counters so far; safe during run from another
 * thread (values may be slightly stale).
 *
 * @return 0, or -EINVAL.
 */
int uffdmove_source_stats(const struct uffdmove_source *s,
			  struct uffdmove_stats *st);

/**
 * uffdmove_source_error - the last failure's explanation; "" if none.
 */
const char *uffdmove_source_error(const struct uffdmove_source *s);

/**
 * uffdmove_source_free - release the handle, its uffd and threads.
 * NULL is a no-op.
 */
void uffdmove_source_free(struct uffdmove_source *s);

#ifdef __cplusplus
}
#endif

#endif /* UFFDMOVE_H */
