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
#include "mem.h"
#include "pagemap.h"
#include "probe.h"
#include "uffd.h"
#include "util.h"

#define DEV_USERFAULTFD		"/dev/userfaultfd"
#define SYSCTL_UNPRIV_UFFD	"/proc/sys/vm/unprivileged_userfaultfd"
#define SYSCTL_IO_URING		"/proc/sys/kernel/io_uring_disabled"
#define SYSCTL_YAMA		"/proc/sys/kernel/yama/ptrace_scope"
#define THP_ENABLED		"/sys/kernel/mm/transparent_hugepage/enabled"


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

/*
 * Can a new VMM read an old one of the same user (process_vm_readv needs
 * ptrace-attach rights), and name it for sure (a pidfd)? Yama scope 1 is
 * fine: the source declares the target its ptracer; scope 2 wants
 * CAP_SYS_PTRACE; scope 3 allows no one.
 */
static void probe_pull(struct uffdmove_caps *c)
{
	int fd = (int)syscall(SYS_pidfd_open, getpid(), 0);

	c->pidfd = fd >= 0;
	if (fd >= 0)
		close(fd);
	c->yama_ptrace_scope = read_sysctl(SYSCTL_YAMA);
	c->pull = c->move && c->pidfd &&
		  (c->yama_ptrace_scope < 2 ||
		   (c->yama_ptrace_scope == 2 && c->cap_sys_ptrace));
}

static void probe_uffd(struct uffdmove_caps *c)
{
	uint64_t features, ioctls;
	int fd;

	fd = uffd_open_user();
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

static void probe_pagemap(struct uffdmove_caps *c)
{
	uint64_t entry;
	struct pm pm;
	char *page;

	page = mem_map(PAGE_SZ);
	if (!page)
		return;
	page[0] = 1;
	/* PFNs are shown or zeroed by the capabilities at open time */
	if (!pm_open(&pm, 0)) {
		c->pagemap_scan = pm.scan;
		c->pagemap_pfn = !pm_read(&pm, (uintptr_t)page, 1, &entry) &&
				 (entry & PM_PRESENT) && (entry & PM_PFN_MASK);
		pm_close(&pm);
	}
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

	p = mem_map_aligned(HPAGE_SZ, HPAGE_SZ);
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
	probe_pull(c);
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
