// SPDX-License-Identifier: MIT
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

void say(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("bench: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* A private anonymous mapping starting on a 2 MiB boundary, untouched. */
void *map_guest(size_t len, bool thp, bool dontfork)
{
	size_t maplen = len + B_HPAGE;
	uint8_t *p, *a;

	p = mmap(NULL, maplen, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	a = (uint8_t *)(((uintptr_t)p + B_HPAGE - 1) & ~(B_HPAGE - 1));
	if (a > p)
		munmap(p, (size_t)(a - p));
	if (a + len < p + maplen)
		munmap(a + len, (size_t)(p + maplen - (a + len)));
	madvise(a, len, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
	/* A forked target would COW-share the source's pages otherwise; a
	 * real new VMM is exec'ed. */
	if (dontfork)
		madvise(a, len, MADV_DONTFORK);
	return a;
}

void unmap_guest(void *p, size_t len)
{
	if (p)
		munmap(p, len);
}

uint64_t pattern_word(uint64_t page)
{
	return (page + 1) * 0x9e3779b97f4a7c15ULL | 1;
}

void guest_fill(struct guest *g)
{
	size_t b, off;

	for (b = 0; b < g->nblocks; b++)
		for (off = 0; off < g->block; off += B_PAGE) {
			size_t at = b * g->stride + off;

			*(volatile uint64_t *)(g->src + at) =
				pattern_word(at / B_PAGE);
		}
}

void guest_refill(struct guest *g)
{
	madvise(g->src, g->len, MADV_DONTNEED);
	guest_fill(g);
}

/* Pages of @dst whose first word is not the source's pattern. */
uint64_t guest_verify(const struct guest *g, const uint8_t *dst)
{
	uint64_t bad = 0;
	size_t b, off;

	for (b = 0; b < g->nblocks; b++)
		for (off = 0; off < g->block; off += B_PAGE) {
			size_t at = b * g->stride + off;

			bad += *(const volatile uint64_t *)(dst + at) !=
			       pattern_word(at / B_PAGE);
		}
	return bad;
}

/* AnonHugePages of the VMAs overlapping [addr, addr + len), in bytes. */
uint64_t anon_huge_bytes(const void *addr, size_t len)
{
	uintptr_t lo = (uintptr_t)addr, hi = lo + len;
	unsigned long long start, end, kb;
	uint64_t total = 0;
	bool in = false;
	char line[512];
	FILE *f = fopen("/proc/self/smaps", "re");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%llx-%llx ", &start, &end) == 2 &&
		    strchr(line, '-') < strchr(line, ' ')) {
			in = start < hi && end > lo;
			continue;
		}
		if (in && sscanf(line, "AnonHugePages: %llu kB", &kb) == 1)
			total += kb * 1024;
	}
	fclose(f);
	return total;
}

struct bench_result *result_map(void)
{
	void *p = mmap(NULL, sizeof(struct bench_result),
		       PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
		       -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

void result_reset(struct bench_result *r)
{
	/* The sample arrays are large: clear only the header. */
	memset(r, 0, offsetof(struct bench_result, samples));
	r->nhandler = 0;
	r->ok = 1;
}

int result_fail(struct bench_result *r, const char *fmt, ...)
{
	va_list ap;

	if (r->ok) {
		va_start(ap, fmt);
		vsnprintf(r->error, sizeof(r->error), fmt, ap);
		va_end(ap);
	}
	r->ok = 0;
	return -1;
}

void result_note_source(struct bench_result *r, const struct guest *g)
{
	r->populated = guest_populated(g);
	r->thp_src_bytes = anon_huge_bytes(g->src, g->len);
	r->mem_src_start = rss_self();
}

/* The resident size in /proc/PID/statm (second field, in pages), read
 * through an open fd; 0 once the process is gone or has no mm. */
static uint64_t statm_rss(int fd)
{
	static long page;
	unsigned long long size, res;
	char buf[128];
	ssize_t n;

	if (!page)
		page = sysconf(_SC_PAGESIZE);
	if (fd < 0)
		return 0;
	n = pread(fd, buf, sizeof(buf) - 1, 0);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	if (sscanf(buf, "%llu %llu", &size, &res) != 2)
		return 0;
	return (uint64_t)res * (uint64_t)page;
}

uint64_t rss_self(void)
{
	int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
	uint64_t v = statm_rss(fd);

	if (fd >= 0)
		close(fd);
	return v;
}

#define MEMWATCH_PERIOD_NS	1000000ULL

struct memwatch {
	pthread_t tid;
	int fd[2];
	bool stop;		/* atomic */
	uint64_t peak, samples;
};

static void *memwatch_main(void *arg)
{
	struct memwatch *w = arg;
	struct timespec next;

	clock_gettime(CLOCK_MONOTONIC, &next);
	for (;;) {
		/* A stop request still gets this last sample. */
		bool last = __atomic_load_n(&w->stop, __ATOMIC_ACQUIRE);
		uint64_t sum = statm_rss(w->fd[0]) + statm_rss(w->fd[1]);

		if (sum > w->peak)
			w->peak = sum;
		w->samples++;
		if (last)
			break;
		/* Late (preempted): no burst to catch up. */
		if (now_ns() > (uint64_t)next.tv_sec * 1000000000ULL +
			       (uint64_t)next.tv_nsec + MEMWATCH_PERIOD_NS)
			clock_gettime(CLOCK_MONOTONIC, &next);
		next.tv_nsec += MEMWATCH_PERIOD_NS;
		if (next.tv_nsec >= 1000000000L) {
			next.tv_nsec -= 1000000000L;
			next.tv_sec++;
		}
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
	}
	return NULL;
}

static int open_statm(pid_t pid)
{
	char path[64];

	if (!pid)
		return -1;
	snprintf(path, sizeof(path), "/proc/%d/statm", (int)pid);
	return open(path, O_RDONLY | O_CLOEXEC);
}

struct memwatch *memwatch_start(pid_t a, pid_t b)
{
	struct memwatch *w = calloc(1, sizeof(*w));

	if (!w)
		return NULL;
	w->fd[0] = open_statm(a);
	w->fd[1] = open_statm(b);
	if (pthread_create(&w->tid, NULL, memwatch_main, w)) {
		if (w->fd[0] >= 0)
			close(w->fd[0]);
		if (w->fd[1] >= 0)
			close(w->fd[1]);
		free(w);
		return NULL;
	}
	return w;
}

void memwatch_stop(struct memwatch *w, struct bench_result *r)
{
	int i;

	if (!w)
		return;
	__atomic_store_n(&w->stop, true, __ATOMIC_RELEASE);
	pthread_join(w->tid, NULL);
	r->mem_peak_raw = w->peak;
	r->mem_samples = w->samples;
	for (i = 0; i < 2; i++)
		if (w->fd[i] >= 0)
			close(w->fd[i]);
	free(w);
}

int seqpacket_pair(int sv[2])
{
	return socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv);
}

int send_fd(int sock, int fd, const void *buf, size_t len)
{
	char cbuf[CMSG_SPACE(sizeof(int))] = { 0 };
	struct iovec iov = { (void *)buf, len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *c;

	if (fd >= 0) {
		mh.msg_control = cbuf;
		mh.msg_controllen = sizeof(cbuf);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	return sendmsg(sock, &mh, MSG_NOSIGNAL) == (ssize_t)len ? 0 : -1;
}

int recv_fd(int sock, int *fd, void *buf, size_t len)
{
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { buf, len };
	struct msghdr mh = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = cbuf, .msg_controllen = sizeof(cbuf),
	};
	struct cmsghdr *c;
	ssize_t n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);

	if (fd)
		*fd = -1;
	if (n <= 0)
		return -1;
	for (c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
		if (fd && c->cmsg_level == SOL_SOCKET &&
		    c->cmsg_type == SCM_RIGHTS)
			memcpy(fd, CMSG_DATA(c), sizeof(int));
	return (int)n;
}

int uffd_missing(uint8_t *addr, size_t len, uint64_t features,
		 struct bench_result *r)
{
	struct uffdio_api api = { .api = UFFD_API, .features = features };
	struct uffdio_register reg = {
		.range = { .start = (uintptr_t)addr, .len = len },
		.mode = UFFDIO_REGISTER_MODE_MISSING,
	};
	int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
	const char *what;

	if (uffd < 0)
		return result_fail(r, "userfaultfd: %m");
	if (ioctl(uffd, UFFDIO_API, &api) < 0)
		what = "UFFDIO_API";
	else if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0)
		what = "UFFDIO_REGISTER";
	else
		return uffd;
	result_fail(r, "%s: %m", what);
	close(uffd);
	return -1;
}

uint64_t uffd_next_fault(int uffd, uint64_t *t_read, struct bench_result *r)
{
	struct uffd_msg msg;
	ssize_t n;

	for (;;) {
		n = read(uffd, &msg, sizeof(msg));
		*t_read = now_ns();
		if (n == (ssize_t)sizeof(msg)) {
			if (msg.event == UFFD_EVENT_PAGEFAULT)
				return msg.arg.pagefault.address & ~(B_PAGE - 1);
			continue;
		}
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		result_fail(r, "read(uffd): %zd: %m", n);
		return UINT64_MAX;
	}
}

pid_t fork_target(int sv[2], struct bench_result *r)
{
	pid_t pid;

	if (seqpacket_pair(sv))
		return result_fail(r, "socketpair: %m");
	pid = fork();
	if (pid < 0) {
		result_fail(r, "fork: %m");
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	if (pid == 0)
		close(sv[0]);
	else
		close(sv[1]);
	return pid;
}

int bench_pair(struct bench_result *r, const struct guest *g,
	       int (*target)(int sock, void *arg),
	       int (*source)(int sock, void *arg), void *arg)
{
	struct memwatch *w;
	int sv[2], ret;
	pid_t pid;

	result_note_source(r, g);
	pid = fork_target(sv, r);
	if (pid < 0)
		return -1;
	if (pid == 0)
		_exit(target(sv[1], arg) ? 1 : 0);
	w = memwatch_start(getpid(), pid);
	if (source(sv[0], arg))
		kill(pid, SIGKILL);	/* its guest would wait forever */
	close(sv[0]);
	ret = wait_child(pid, r);
	memwatch_stop(w, r);
	return ret;
}

int wait_child(pid_t pid, struct bench_result *r)
{
	int status;

	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return result_fail(r, "waitpid: %s", strerror(errno));
	if (!WIFEXITED(status) || WEXITSTATUS(status))
		return result_fail(r, "target process failed (status 0x%x)",
				   status);
	return r->ok ? 0 : -1;
}
