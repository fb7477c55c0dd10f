// SPDX-License-Identifier: MIT
/*
 * uffdmove_probe(): stable, leak-free, and right about this machine. Every
 * answer that can be learnt independently (procfs, sysfs, /dev) is
 * cross-checked; the rest is what Linux 6.18 run as root must report.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "compat.h"

/* Capability numbers from <linux/capability.h>. */
#define CAP_NR_SYS_PTRACE	19
#define CAP_NR_SYS_ADMIN	21
#define CAP_NR_SYS_NICE		23

/* A sysctl as the probe should see it: -1 when absent or unreadable. */
static int32_t sysctl_value(const char *path)
{
	char buf[32];
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	return (int32_t)strtol(buf, NULL, 10);
}

/* CapEff from /proc/self/status, independent of libcap. */
static uint64_t cap_eff(void)
{
	unsigned long long v = 0;
	char line[256];
	FILE *f;

	f = fopen("/proc/self/status", "re");
	if (!f)
		t_die("open /proc/self/status: %s", strerror(errno));
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "CapEff: %llx", &v) == 1)
			break;
	fclose(f);
	return v;
}

static uint32_t thp_mode(void)
{
	char buf[128] = "";
	FILE *f;

	f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "re");
	if (!f)
		return UFFDMOVE_THP_UNKNOWN;
	if (!fgets(buf, sizeof(buf), f))
		buf[0] = '\0';
	fclose(f);
	if (strstr(buf, "[always]"))
		return UFFDMOVE_THP_ALWAYS;
	if (strstr(buf, "[madvise]"))
		return UFFDMOVE_THP_MADVISE;
	if (strstr(buf, "[never]"))
		return UFFDMOVE_THP_NEVER;
	return UFFDMOVE_THP_UNKNOWN;
}

/* Running kernel >= major.minor? */
static bool kernel_at_least(int major, int minor)
{
	struct utsname u;
	int ma = 0, mi = 0;

	if (uname(&u) < 0 || sscanf(u.release, "%d.%d", &ma, &mi) != 2)
		t_die("cannot parse the kernel release");
	return ma > major || (ma == major && mi >= minor);
}

#define SAME(a, b, field)						\
	T_CHECK((a)->field == (b)->field, "second probe changed " #field)

/* Field by field: padding bytes carry no meaning. */
static int same_caps(const struct uffdmove_caps *a,
		     const struct uffdmove_caps *b)
{
	size_t i;

	SAME(a, b, uffd_features);
	SAME(a, b, uffd_ioctls);
	SAME(a, b, userfaultfd);
	SAME(a, b, move);
	SAME(a, b, cross_process_move);
	SAME(a, b, poison);
	SAME(a, b, kernel_faults);
	SAME(a, b, kernel_faults_via);
	SAME(a, b, dev_userfaultfd);
	SAME(a, b, unprivileged_userfaultfd);
	SAME(a, b, pagemap_scan);
	SAME(a, b, pagemap_pfn);
	SAME(a, b, io_uring);
	SAME(a, b, io_uring_disabled);
	SAME(a, b, thp_mode);
	SAME(a, b, madv_collapse);
	SAME(a, b, cap_sys_ptrace);
	SAME(a, b, cap_sys_admin);
	SAME(a, b, cap_sys_nice);
	for (i = 0; i < sizeof(a->reserved) / sizeof(a->reserved[0]); i++)
		T_CHECK(a->reserved[i] == 0 && b->reserved[i] == 0,
			"reserved[%zu] not zeroed", i);
	return T_PASS;
}

static int check_stable(void)
{
	struct uffdmove_caps a, b;
	int fds, maps, ret;

	fds = t_count_fds();
	maps = t_count_maps();
	T_CHECK(fds >= 0 && maps > 0, "cannot count fds/maps");

	memset(&a, 0xa5, sizeof(a));
	memset(&b, 0x5a, sizeof(b));
	ret = uffdmove_probe(&a);
	T_CHECK(ret == 0, "uffdmove_probe: %d", ret);

	/* the cross-process probe's child is reaped, clone child or not */
	T_CHECK(waitpid(-1, NULL, WNOHANG | __WALL) == -1 && errno == ECHILD,
		"a child process is left after uffdmove_probe");
	T_CHECK(t_count_fds() == fds, "fd count %d -> %d", fds,
		t_count_fds());
#ifndef __SANITIZE_ADDRESS__
	/* ASan's allocator maps memory lazily; without it, any new VMA is
	 * the probe's */
	T_CHECK(t_count_maps() == maps, "mapping count %d -> %d", maps,
		t_count_maps());
#endif

	ret = uffdmove_probe(&b);
	T_CHECK(ret == 0, "second uffdmove_probe: %d", ret);
	T_CHECK(same_caps(&a, &b) == T_PASS, "second probe differs");
	T_CHECK(t_count_fds() == fds, "second probe changed the fd count");

	T_CHECK(uffdmove_probe(NULL) == -EINVAL, "NULL not refused");
	return T_PASS;
}

/* What can be learnt without the library must agree with it. */
static int check_facts(const struct uffdmove_caps *c)
{
	uint64_t eff = cap_eff();
	int32_t io_dis;
	int fd;

	T_CHECK(c->cap_sys_ptrace == !!(eff & 1ULL << CAP_NR_SYS_PTRACE),
		"cap_sys_ptrace %d, CapEff 0x%llx", c->cap_sys_ptrace,
		(unsigned long long)eff);
	T_CHECK(c->cap_sys_admin == !!(eff & 1ULL << CAP_NR_SYS_ADMIN),
		"cap_sys_admin %d, CapEff 0x%llx", c->cap_sys_admin,
		(unsigned long long)eff);
	T_CHECK(c->cap_sys_nice == !!(eff & 1ULL << CAP_NR_SYS_NICE),
		"cap_sys_nice %d, CapEff 0x%llx", c->cap_sys_nice,
		(unsigned long long)eff);

	T_CHECK(c->unprivileged_userfaultfd ==
		sysctl_value("/proc/sys/vm/unprivileged_userfaultfd"),
		"unprivileged_userfaultfd %d", c->unprivileged_userfaultfd);
	io_dis = sysctl_value("/proc/sys/kernel/io_uring_disabled");
	T_CHECK(c->io_uring_disabled == io_dis, "io_uring_disabled %d, file %d",
		c->io_uring_disabled, io_dis);
	T_CHECK(c->thp_mode == thp_mode(), "thp_mode %u, sysfs says %u",
		c->thp_mode, thp_mode());

	fd = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	T_CHECK(c->dev_userfaultfd == (fd >= 0), "dev_userfaultfd %d",
		c->dev_userfaultfd);
	if (fd >= 0)
		close(fd);

	/* PFNs are zeroed in pagemap without CAP_SYS_ADMIN */
	T_CHECK(c->pagemap_pfn == c->cap_sys_admin, "pagemap_pfn %d",
		c->pagemap_pfn);

	/* features and ioctls are consistent with the flags */
	T_CHECK(c->userfaultfd == (c->uffd_features != 0),
		"userfaultfd %d, features 0x%llx", c->userfaultfd,
		(unsigned long long)c->uffd_features);
	T_CHECK(c->move == !!(c->uffd_features & UFFD_FEATURE_MOVE),
		"move %d", c->move);
	T_CHECK(c->poison == !!(c->uffd_features & UFFD_FEATURE_POISON),
		"poison %d", c->poison);
	if (c->userfaultfd)
		T_CHECK(c->uffd_ioctls & 1ULL << _UFFDIO_REGISTER,
			"ioctls 0x%llx lack UFFDIO_REGISTER",
			(unsigned long long)c->uffd_ioctls);
	T_CHECK(!c->cross_process_move || c->move,
		"cross-process MOVE without MOVE");

	switch (c->kernel_faults_via) {
	case UFFDMOVE_KFAULT_NO:
		T_CHECK(!c->kernel_faults, "kernel_faults without a reason");
		break;
	case UFFDMOVE_KFAULT_DEV:
		T_CHECK(c->kernel_faults && c->dev_userfaultfd, "via dev");
		break;
	case UFFDMOVE_KFAULT_CAP:
		T_CHECK(c->kernel_faults && c->cap_sys_ptrace &&
			!c->dev_userfaultfd, "via cap");
		break;
	case UFFDMOVE_KFAULT_SYSCTL:
		T_CHECK(c->kernel_faults && !c->dev_userfaultfd &&
			!c->cap_sys_ptrace, "via sysctl");
		break;
	default:
		T_CHECK(0, "kernel_faults_via %u", c->kernel_faults_via);
	}
	/* any of the three grants kernel-mode faults */
	if (c->userfaultfd && (c->dev_userfaultfd || c->cap_sys_ptrace ||
			       c->unprivileged_userfaultfd == 1))
		T_CHECK(c->kernel_faults, "kernel_faults false although "
			"dev %d, CAP_SYS_PTRACE %d, sysctl %d",
			c->dev_userfaultfd, c->cap_sys_ptrace,
			c->unprivileged_userfaultfd);

	/* io_uring_disabled: 0 all, 1 CAP_SYS_ADMIN (or the group), 2 none */
	if (io_dis == 2)
		T_CHECK(!c->io_uring, "io_uring although disabled");
	else if (io_dis <= 0 || c->cap_sys_admin)
		T_CHECK(c->io_uring, "io_uring refused, io_uring_disabled %d",
			io_dis);
	return T_PASS;
}

/* This machine: Linux >= 6.8 run as root. */
static int check_this_kernel(const struct uffdmove_caps *c)
{
	if (!c->userfaultfd) {
		/* not even seccomp stops USERFAULTFD_IOC_NEW on the device */
		T_CHECK(!c->dev_userfaultfd,
			"/dev/userfaultfd opens but no userfaultfd");
		t_skip("userfaultfd unavailable on this kernel");
	}
	if (!c->move) {
		T_CHECK(!kernel_at_least(6, 8),
			"Linux >= 6.8 but no UFFD_FEATURE_MOVE");
		t_skip("kernel offers no UFFD_FEATURE_MOVE");
	}
	/* upstream refuses a MOVE by any process but the uffd's creator;
	 * if this fails, the kernel learnt cross-mm MOVE: update
	 * docs/kernel-interface.md and the AUTO mode tests */
	T_CHECK(!c->cross_process_move,
		"cross-process MOVE succeeded on this kernel");
	T_CHECK(c->poison, "UFFD_FEATURE_MOVE but no UFFD_FEATURE_POISON");
	T_CHECK(c->pagemap_scan, "no PAGEMAP_SCAN on Linux >= 6.8");
	/* PR_SET_THP_DISABLE (inherited over exec) makes the kernel refuse */
	if (prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) == 0)
		T_CHECK(c->madv_collapse,
			"MADV_COLLAPSE refused on Linux >= 6.8");
	else
		T_CHECK(!c->madv_collapse,
			"MADV_COLLAPSE accepted although THP is disabled");
	if (geteuid() == 0 && c->cap_sys_ptrace)
		T_CHECK(c->kernel_faults, "root cannot catch kernel faults");
	if (c->io_uring_disabled <= 0)
		T_CHECK(c->io_uring, "io_uring unavailable");
	return T_PASS;
}

#define RACERS 4

static void *racer(void *arg)
{
	struct uffdmove_caps *c = arg;

	return (void *)(intptr_t)uffdmove_probe(c);
}

/*
 * Concurrent first calls, in a child whose probe has not run yet: every
 * thread gets the one result, and nothing is left behind.
 */
static int check_concurrent(void)
{
	struct uffdmove_caps caps[RACERS];
	pthread_t th[RACERS];
	int i, fds, ret;
	void *res;
	pid_t pid;

	fflush(NULL);
	pid = fork();
	T_CHECK(pid >= 0, "fork: %s", strerror(errno));
	if (pid) {
		ret = t_wait(pid);
		T_CHECK(WIFEXITED(ret) && WEXITSTATUS(ret) == 0,
			"concurrent probe child: status 0x%x", ret);
		return T_PASS;
	}

	fds = t_count_fds();
	for (i = 0; i < RACERS; i++) {
		memset(&caps[i], 0xff, sizeof(caps[i]));
		if (pthread_create(&th[i], NULL, racer, &caps[i]))
			t_die("pthread_create");
	}
	for (i = 0; i < RACERS; i++) {
		pthread_join(th[i], &res);
		if (res)
			t_die("racer %d: uffdmove_probe %d", i,
			      (int)(intptr_t)res);
		if (same_caps(&caps[i], &caps[0]) != T_PASS)
			t_die("racer %d got a different result", i);
	}
	if (t_count_fds() != fds)
		t_die("concurrent probes leaked fds");
	if (waitpid(-1, NULL, WNOHANG | __WALL) != -1 || errno != ECHILD)
		t_die("concurrent probes left a child");
	_exit(0);
}

int main(void)
{
	struct uffdmove_caps caps;
	int ret;

	t_watchdog(30);
	ret = check_concurrent();
	if (ret)
		return ret;
	ret = check_stable();
	if (ret)
		return ret;
	t_probe(&caps);
	printf("features 0x%llx ioctls 0x%llx move %d cross %d poison %d "
	       "kfaults %d/%u dev %d unpriv %d scan %d pfn %d uring %d/%d "
	       "thp %u collapse %d caps %d%d%d\n",
	       (unsigned long long)caps.uffd_features,
	       (unsigned long long)caps.uffd_ioctls, caps.move,
	       caps.cross_process_move, caps.poison, caps.kernel_faults,
	       caps.kernel_faults_via, caps.dev_userfaultfd,
	       caps.unprivileged_userfaultfd, caps.pagemap_scan,
	       caps.pagemap_pfn, caps.io_uring, caps.io_uring_disabled,
	       caps.thp_mode, caps.madv_collapse, caps.cap_sys_ptrace,
	       caps.cap_sys_admin, caps.cap_sys_nice);
	ret = check_facts(&caps);
	if (ret)
		return ret;
	ret = check_this_kernel(&caps);
	if (ret)
		return ret;
	printf("ok probe\n");
	return T_PASS;
}
