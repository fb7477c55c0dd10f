// SPDX-License-Identifier: MIT
/*
 * uffdmove_probe(): what this kernel and this process allow. Every answer
 * comes from trying the thing (open, ioctl, madvise, a real cross-process
 * MOVE), never from a version number. Computed once per process.
 */
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "uffdmove.h"
#include "caps.h"
#include "compat.h"
#include "peer.h"
#include "probe.h"
#include "uffd.h"
#include "util.h"

#define DEV_USERFAULTFD		"/dev/userfaultfd"
#define SYSCTL_UNPRIV_UFFD	"/proc/sys/vm/unprivileged_userfaultfd"
#define SYSCTL_IO_URING		"/proc/sys/kernel/io_uring_disabled"
#define THP_ENABLED		"/sys/kernel/mm/transparent_hugepage/enabled"

/* How long either side of the cross-process probe waits for the other. */
#define XPROC_TIMEOUT_S		2

/* The local answers never fork; the cross-process MOVE trial forks (COW-
 * sharing every private page of the caller for a moment, which makes the
 * kernel refuse to MOVE them until they are written again), so only an
 * explicit uffdmove_probe() runs it. */
static pthread_once_t local_once = PTHREAD_ONCE_INIT;
static pthread_once_t cross_once = PTHREAD_ONCE_INIT;
static struct uffdmove_caps probe_cache;
static bool cross_move_result;
static bool cross_move_known;	/* atomic */

/* Read a small text file, NUL-terminated. 0 or -errno. */
static int read_text(const char *path, char *buf, size_t size)
{
	ssize_t n;
	int fd, ret = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	do {
		n = read(fd, buf, size - 1);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		ret = -errno;
	else
		buf[n] = '\0';
	close(fd);
	return ret;
}

/* A non-negative integer sysctl, or -1 if it is absent or unreadable. */
static int32_t read_sysctl(const char *path)
{
	char buf[32], *end;
	long val;

	if (read_text(path, buf, sizeof(buf)) < 0)
		return -1;
	val = strtol(buf, &end, 10);
	if (end == buf || (*end != '\n' && *end != '\0') || val < 0 ||
	    val > INT32_MAX)
		return -1;
	return (int32_t)val;
}

static void *map_anon(size_t len)
{
	return mmap(NULL, len, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
}

/* @len bytes of anonymous memory starting on a @len boundary, or NULL. */
static void *map_aligned(size_t len)
{
	uintptr_t start, aligned;
	char *p;

	p = map_anon(2 * len);
	if (p == MAP_FAILED)
		return NULL;
	start = (uintptr_t)p;
	aligned = ALIGN_UP(start, len);
	if (aligned > start)
		munmap(p, aligned - start);
	munmap((char *)aligned + len, start + len - aligned);
	return (void *)aligned;
}

/*
 * A uffd that catches user-mode faults only: what every process may open
 * whatever vm.unprivileged_userfaultfd says. Linux < 5.11 does not know
 * the flag (EINVAL); there every uffd catches kernel faults too.
 */
static int open_user_uffd(void)
{
	int fd;

	fd = uffd_open(O_CLOEXEC | UFFD_USER_MODE_ONLY);
	if (fd == -EINVAL)
		fd = uffd_open(O_CLOEXEC);
	return fd;
}

static void probe_caps(struct uffdmove_caps *c)
{
	bool have;

	if (caps_have(CAP_SYS_PTRACE, &have) == 0)
		c->cap_sys_ptrace = have;
	if (caps_have(CAP_SYS_ADMIN, &have) == 0)
		c->cap_sys_admin = have;
	if (caps_have(CAP_SYS_NICE, &have) == 0)
		c->cap_sys_nice = have;
}

static void probe_uffd(struct uffdmove_caps *c)
{
	uint64_t features, ioctls;
	int fd;

	fd = open_user_uffd();
	if (fd < 0)
		return;
	/* features 0: a pure query, the kernel reports all it offers */
	if (uffd_api(fd, 0, &features, &ioctls) == 0) {
		c->userfaultfd = true;
		c->uffd_features = features;
		c->uffd_ioctls = ioctls;
		c->move = features & UFFD_FEATURE_MOVE;
		c->poison = features & UFFD_FEATURE_POISON;
	}
	close(fd);
}

/*
 * KVM and syscalls touch guest RAM in kernel mode; only a uffd opened
 * without UFFD_USER_MODE_ONLY catches those faults. The kernel allows it
 * through /dev/userfaultfd (file permissions), with CAP_SYS_PTRACE, or for
 * everyone when vm.unprivileged_userfaultfd is 1.
 */
static void probe_kernel_faults(struct uffdmove_caps *c)
{
	int fd;

	c->unprivileged_userfaultfd = read_sysctl(SYSCTL_UNPRIV_UFFD);

	fd = open(DEV_USERFAULTFD, O_RDWR | O_CLOEXEC);
	if (fd >= 0) {
		c->dev_userfaultfd = true;
		close(fd);
	}

	fd = uffd_open(O_CLOEXEC);
	if (fd >= 0) {
		c->kernel_faults = true;
		close(fd);
	}

	if (!c->kernel_faults)
		c->kernel_faults_via = UFFDMOVE_KFAULT_NO;
	else if (c->dev_userfaultfd)
		c->kernel_faults_via = UFFDMOVE_KFAULT_DEV;
	else if (c->cap_sys_ptrace)
		c->kernel_faults_via = UFFDMOVE_KFAULT_CAP;
	else	/* the sysctl is 1, or the kernel predates it (< 5.2) */
		c->kernel_faults_via = UFFDMOVE_KFAULT_SYSCTL;
}

/* ------------------------------------------------- cross-process MOVE */

/* Child to parent: the page the child registered, and the uffd. */
struct xproc_msg {
	uint64_t addr;
	int32_t err;	/* 0, or the -errno that stopped the child */
	uint32_t pad;
};

/*
 * The child: creates a uffd for its own mm with MOVE negotiated, registers
 * one missing page, hands both to the parent and waits until the parent
 * has tried and hung up, so that its mm is alive during the MOVE.
 *
 * It runs in a copy of a possibly multi-threaded process: async-signal-safe
 * calls only, no malloc, no stdio, and _exit().
 */
static void __attribute__((noreturn)) xproc_child(int sock)
{
	struct xproc_msg msg = { 0 };
	void *page;
	char byte;
	int fd;

	fd = open_user_uffd();
	if (fd < 0) {
		msg.err = fd;
		goto send;
	}
	msg.err = uffd_api(fd, UFFD_FEATURE_MOVE, NULL, NULL);
	if (msg.err)
		goto send;
	page = map_anon(PAGE_SZ);
	if (page == MAP_FAILED) {
		msg.err = -errno;
		goto send;
	}
	msg.err = uffd_register(fd, page, PAGE_SZ,
				UFFDIO_REGISTER_MODE_MISSING, NULL);
	if (msg.err)
		goto send;

	msg.addr = (uintptr_t)page;
send:
	/* peer_send() is async-signal-safe: sendmsg and poll only */
	if (!peer_send(sock, &msg, sizeof(msg), msg.err ? -1 : fd, -1)) {
		/* EOF (the parent shut down) or the receive timeout ends it */
		while (read(sock, &byte, 1) < 0 && errno == EINTR)
			;
	}
	_exit(0);
}

/* The uffd and page address from the child; -errno if it sent none. */
static int xproc_recv(int sock, uint64_t *addr)
{
	struct xproc_msg msg = { 0 };
	int fds[PEER_FDS_MAX], n;
	size_t nfds;

	n = peer_recv(sock, &msg, sizeof(msg), fds, &nfds,
		      XPROC_TIMEOUT_S * 1000);
	if (n != (int)sizeof(msg) || msg.err || nfds != 1) {
		if (nfds <= PEER_FDS_MAX)
			peer_close_fds(fds, nfds);
		return n < 0 ? n : msg.err ? msg.err : -EPROTO;
	}
	*addr = msg.addr;
	return fds[0];
}

/* One MOVE of a page of ours into the child's mm, through its uffd. */
static bool xproc_try_move(int ufd, uint64_t dst)
{
	size_t done;
	char *page;
	int ret;

	page = map_anon(PAGE_SZ);
	if (page == MAP_FAILED)
		return false;
	memset(page, 0x5a, PAGE_SZ);
	/* upstream answers EINVAL: "no cross-mm moves" */
	ret = uffd_move(ufd, dst, (uintptr_t)page, PAGE_SZ, 0, &done);
	munmap(page, PAGE_SZ);
	return ret == 0 && done == PAGE_SZ;
}

/*
 * The child is cloned without an exit signal (a fork in all but that):
 * no SIGCHLD reaches the application, its reaper (waitpid(-1) without
 * __WALL) cannot steal our child, and no pthread_atfork handlers run in
 * the middle of a library call. All signals stay blocked in the child.
 */
static pid_t xproc_spawn(int sv[2])
{
	sigset_t all, old;
	pid_t pid;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pid = (pid_t)syscall(SYS_clone, 0UL, NULL, NULL, NULL, 0UL);
	if (pid == 0) {
		close(sv[0]);
		xproc_child(sv[1]);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return pid;
}

static bool probe_cross_move(void)
{
	struct timeval tv = { .tv_sec = XPROC_TIMEOUT_S };
	uint64_t addr = 0;
	bool moved = false;
	int sv[2], ufd;
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return false;
	/* bounded waits on both sides: neither can hang the other */
	if (setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
	    setsockopt(sv[1], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0) {
		close(sv[0]);
		close(sv[1]);
		return false;
	}

	pid = xproc_spawn(sv);
	close(sv[1]);
	if (pid < 0) {
		close(sv[0]);
		return false;
	}

	ufd = xproc_recv(sv[0], &addr);
	if (ufd >= 0) {
		moved = xproc_try_move(ufd, addr);
		close(ufd);
	}
	/* shutdown, not just close: EOF even if another fork holds sv[0] */
	shutdown(sv[0], SHUT_RDWR);
	close(sv[0]);
	if (ufd < 0)
		kill(pid, SIGKILL);
	while (waitpid(pid, NULL, __WALL) < 0 && errno == EINTR)
		;
	return moved;
}

/* ------------------------------------------------------- the rest */

static void probe_pagemap(struct uffdmove_caps *c)
{
	struct page_region region;
	struct pm_scan_arg arg;
	uint64_t entry;
	char *page;
	int fd;

	page = map_anon(PAGE_SZ);
	if (page == MAP_FAILED)
		return;
	page[0] = 1;

	/* PFNs are shown or zeroed by the capabilities at open time */
	fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		goto out;

	memset(&arg, 0, sizeof(arg));
	arg.size = sizeof(arg);
	arg.start = (uintptr_t)page;
	arg.end = (uintptr_t)page + PAGE_SZ;
	arg.vec = (uintptr_t)&region;
	arg.vec_len = 1;
	arg.category_mask = PAGE_IS_PRESENT;
	arg.return_mask = PAGE_IS_PRESENT;
	c->pagemap_scan = ioctl(fd, PAGEMAP_SCAN, &arg) == 1 &&
			  region.start == (uintptr_t)page;

	if (pread(fd, &entry, sizeof(entry),
		  (off_t)((uintptr_t)page / PAGE_SZ * sizeof(entry))) ==
	    (ssize_t)sizeof(entry))
		c->pagemap_pfn = (entry & PM_PRESENT) && (entry & PM_PFN_MASK);
	close(fd);
out:
	munmap(page, PAGE_SZ);
}

static void probe_io_uring(struct uffdmove_caps *c)
{
	struct io_uring ring;

	c->io_uring_disabled = read_sysctl(SYSCTL_IO_URING);
	if (io_uring_queue_init(2, &ring, 0) == 0) {
		c->io_uring = true;
		io_uring_queue_exit(&ring);
	}
}

uint32_t probe_thp_mode(void)
{
	static const struct {
		const char *word;
		uint32_t mode;
	} modes[] = {
		{ "[always]", UFFDMOVE_THP_ALWAYS },
		{ "[madvise]", UFFDMOVE_THP_MADVISE },
		{ "[never]", UFFDMOVE_THP_NEVER },
	};
	char buf[128];
	size_t i;

	if (read_text(THP_ENABLED, buf, sizeof(buf)) < 0)
		return UFFDMOVE_THP_UNKNOWN;
	for (i = 0; i < ARRAY_SIZE(modes); i++) {
		if (strstr(buf, modes[i].word))
			return modes[i].mode;
	}
	return UFFDMOVE_THP_UNKNOWN;
}

/*
 * MADV_COLLAPSE (Linux 6.1) on a touched, 2 MiB-aligned MADV_HUGEPAGE
 * range. EINVAL means the kernel or this process (PR_SET_THP_DISABLE)
 * refuses; EAGAIN/ENOMEM are transient and still mean "accepted".
 */
static void probe_collapse(struct uffdmove_caps *c)
{
	size_t off;
	char *p;
	int ret;

	p = map_aligned(HPAGE_SZ);
	if (!p)
		return;
	if (madvise(p, HPAGE_SZ, MADV_HUGEPAGE) == 0) {
		for (off = 0; off < HPAGE_SZ; off += PAGE_SZ)
			p[off] = 1;
		ret = neg_errno(madvise(p, HPAGE_SZ, MADV_COLLAPSE));
		c->madv_collapse = ret != -EINVAL;
	}
	munmap(p, HPAGE_SZ);
}

static void probe_local_run(void)
{
	struct uffdmove_caps *c = &probe_cache;
	int saved_errno = errno;

	memset(c, 0, sizeof(*c));
	probe_caps(c);
	probe_uffd(c);
	probe_kernel_faults(c);
	probe_pagemap(c);
	probe_io_uring(c);
	c->thp_mode = probe_thp_mode();
	probe_collapse(c);
	errno = saved_errno;
}

static void probe_cross_run(void)
{
	int saved_errno = errno;

	pthread_once(&local_once, probe_local_run);
	cross_move_result = probe_cache.move && probe_cross_move();
	__atomic_store_n(&cross_move_known, true, __ATOMIC_RELEASE);
	errno = saved_errno;
}

void probe_local(struct uffdmove_caps *caps)
{
	pthread_once(&local_once, probe_local_run);
	*caps = probe_cache;
	caps->cross_process_move = false;
}

bool probe_cross_move_known(bool *works)
{
	if (!__atomic_load_n(&cross_move_known, __ATOMIC_ACQUIRE))
		return false;
	*works = cross_move_result;
	return true;
}

UFFDMOVE_EXPORT int uffdmove_probe(struct uffdmove_caps *caps)
{
	if (!caps)
		return -EINVAL;
	pthread_once(&cross_once, probe_cross_run);
	*caps = probe_cache;
	caps->cross_process_move = cross_move_result;
	return 0;
}
