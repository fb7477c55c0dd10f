// SPDX-License-Identifier: MIT
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define WORDS_PER_PAGE	(T_PAGE / sizeof(uint64_t))

void t_fail_msg(const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "FAIL: %s:%d: ", file, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fflush(stderr);
}

_Noreturn void t_skip(const char *fmt, ...)
{
	va_list ap;

	printf("SKIP: ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
	exit(T_SKIP);
}

_Noreturn void t_die(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "FAIL: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(T_FAIL);
}

void t_child(unsigned seconds)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	t_watchdog(seconds);
}

void t_watchdog(unsigned seconds)
{
	signal(SIGALRM, SIG_DFL);
	alarm(seconds);
}

void *t_map(size_t len, bool thp)
{
	uintptr_t start, aligned;
	size_t span = len + T_HPAGE;
	void *p;

	if (!len)
		t_die("t_map: zero length");
	p = mmap(NULL, span, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		t_die("t_map: mmap %zu bytes: %s", span, strerror(errno));
	start = (uintptr_t)p;
	aligned = (start + T_HPAGE - 1) & ~(T_HPAGE - 1);
	if (aligned > start)
		munmap(p, aligned - start);
	if (start + span > aligned + len)
		munmap((void *)(aligned + len), start + span - aligned - len);
	p = (void *)aligned;
	if (madvise(p, len, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE) < 0)
		t_die("t_map: madvise(%s): %s",
		      thp ? "MADV_HUGEPAGE" : "MADV_NOHUGEPAGE",
		      strerror(errno));
	return p;
}

void t_unmap(void *p, size_t len)
{
	if (p && munmap(p, len) < 0)
		t_die("t_unmap %p: %s", p, strerror(errno));
}

/* splitmix64's finaliser: cheap, and every input bit moves every output */
static uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

uint64_t t_word(uint64_t seed, uint64_t page, uint64_t word)
{
	uint64_t x = mix(mix(seed) ^ (page * 0x100000001b3ULL)) ^ word;

	x = mix(x);
	if (word == 0)
		x |= 1;
	return x;
}

void t_fill_page(void *page, uint64_t seed, uint64_t page_index)
{
	uint64_t *w = page;
	size_t i;

	for (i = 0; i < WORDS_PER_PAGE; i++)
		w[i] = t_word(seed, page_index, i);
}

void t_fill(void *p, size_t len, uint64_t seed, uint64_t first_page)
{
	size_t i;

	if (len % T_PAGE)
		t_die("t_fill: length %zu is not a page multiple", len);
	for (i = 0; i < len / T_PAGE; i++)
		t_fill_page((char *)p + i * T_PAGE, seed, first_page + i);
}

int t_verify(const void *p, size_t len, uint64_t seed, uint64_t first_page,
	     size_t *bad_off)
{
	const unsigned char *b = p;
	uint64_t want, got;
	size_t off, i;

	if (len % T_PAGE)
		t_die("t_verify: length %zu is not a page multiple", len);
	for (off = 0; off < len; off += sizeof(uint64_t)) {
		want = t_word(seed, first_page + off / T_PAGE,
			      (off % T_PAGE) / sizeof(uint64_t));
		memcpy(&got, b + off, sizeof(got));
		if (got == want)
			continue;
		for (i = 0; i < sizeof(got); i++) {
			if (((unsigned char *)&got)[i] !=
			    ((unsigned char *)&want)[i])
				break;
		}
		if (bad_off)
			*bad_off = off + i;
		return -1;
	}
	return 0;
}

bool t_is_zero(const void *p, size_t len)
{
	const unsigned char *b = p;
	size_t i;

	for (i = 0; i < len; i++) {
		if (b[i])
			return false;
	}
	return true;
}

static FILE *open_proc(pid_t pid, const char *name)
{
	char path[64];

	if (pid)
		snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, name);
	else
		snprintf(path, sizeof(path), "/proc/self/%s", name);
	return fopen(path, "re");
}

uint64_t t_anon_huge_bytes_range(pid_t pid, void *addr, size_t len)
{
	uintptr_t lo = (uintptr_t)addr, hi = lo + len;
	unsigned long long start, end, kb;
	bool overlap = false;
	uint64_t total = 0;
	char line[512];
	FILE *f;

	f = open_proc(pid, "smaps");
	if (!f)
		t_die("t_anon_huge_bytes_range: smaps of %d: %s", (int)pid,
		      strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		/* a VMA header: "start-end perms offset dev inode [path]" */
		if (sscanf(line, "%llx-%llx ", &start, &end) == 2 &&
		    strchr(line, '-') < strchr(line, ' ')) {
			overlap = start < hi && end > lo;
			continue;
		}
		if (overlap &&
		    sscanf(line, "AnonHugePages: %llu kB", &kb) == 1)
			total += kb * 1024;
	}
	fclose(f);
	return total;
}

bool t_vma_flag(const void *addr, const char *flag)
{
	unsigned long long start, end;
	uintptr_t a = (uintptr_t)addr;
	bool in = false, found = false;
	char line[512], *tok, *save;
	FILE *f;

	f = open_proc(0, "smaps");
	if (!f)
		t_die("t_vma_flag: smaps: %s", strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%llx-%llx ", &start, &end) == 2 &&
		    strchr(line, '-') < strchr(line, ' ')) {
			in = a >= start && a < end;
			continue;
		}
		if (!in || strncmp(line, "VmFlags:", 8))
			continue;
		for (tok = strtok_r(line + 8, " \n", &save); tok;
		     tok = strtok_r(NULL, " \n", &save))
			found |= !strcmp(tok, flag);
		break;
	}
	fclose(f);
	return found;
}

uint64_t t_pagemap(const void *addr)
{
	uint64_t entry;
	ssize_t n;
	int fd;

	fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		t_die("open /proc/self/pagemap: %s", strerror(errno));
	n = pread(fd, &entry, sizeof(entry),
		  (off_t)((uintptr_t)addr / T_PAGE * sizeof(entry)));
	if (n != (ssize_t)sizeof(entry))
		t_die("pagemap entry of %p: %s", addr,
		      n < 0 ? strerror(errno) : "short read");
	close(fd);
	return entry;
}

#define KPF_ZERO_PAGE	24	/* include/uapi/linux/kernel-page-flags.h */

/*
 * Is the page at @pfn the shared zero page (or the huge zero page)? A read
 * of freed anonymous memory maps it again (a 2 MiB huge zero page in a THP
 * range): present, but no memory. Needs root for PFNs and kpageflags;
 * without them every present page counts.
 */
static bool zero_pfn(int kpf, uint64_t pfn)
{
	uint64_t flags;

	return kpf >= 0 && pfn &&
	       pread(kpf, &flags, sizeof(flags),
		     (off_t)(pfn * sizeof(flags))) == sizeof(flags) &&
	       (flags >> KPF_ZERO_PAGE & 1);
}

uint64_t t_resident_bytes(const void *addr, size_t len)
{
	size_t n = len / T_PAGE, i;
	uint64_t *entries, total = 0;
	ssize_t got;
	int fd, kpf;

	entries = calloc(n ? n : 1, sizeof(*entries));
	fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (!entries || fd < 0)
		t_die("t_resident_bytes: %s", strerror(errno));
	kpf = open("/proc/kpageflags", O_RDONLY | O_CLOEXEC);
	got = pread(fd, entries, n * sizeof(*entries),
		    (off_t)((uintptr_t)addr / T_PAGE * sizeof(*entries)));
	if (got != (ssize_t)(n * sizeof(*entries)))
		t_die("pagemap of %p+%zu: %s", addr, len,
		      got < 0 ? strerror(errno) : "short read");
	for (i = 0; i < n; i++)
		if ((entries[i] >> 63) &&	/* present */
		    !zero_pfn(kpf, entries[i] & ((1ULL << 55) - 1)))
			total += T_PAGE;
	if (kpf >= 0)
		close(kpf);
	close(fd);
	free(entries);
	return total;
}

bool t_thread_named(const char *name)
{
	char path[300], comm[32];
	struct dirent *e;
	bool found = false;
	DIR *d = opendir("/proc/self/task");
	FILE *f;

	while (d && !found && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm",
			 e->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;	/* it ended meanwhile */
		found = fgets(comm, sizeof(comm), f) &&
			!strncmp(comm, name, strlen(name)) &&
			(comm[strlen(name)] == '\n' || !comm[strlen(name)]);
		fclose(f);
	}
	if (d)
		closedir(d);
	return found;
}

int t_seqpacket_pair(int sv[2])
{
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	return 0;
}

pid_t t_fork_peer(int sv[2], unsigned int watchdog_s)
{
	int ret = t_seqpacket_pair(sv);
	pid_t pid;

	if (ret)
		t_die("socketpair: %s", strerror(-ret));
	pid = fork();
	if (pid < 0)
		t_die("fork: %s", strerror(errno));
	if (pid == 0) {
		t_child(watchdog_s);
		close(sv[0]);
	} else {
		close(sv[1]);
	}
	return pid;
}

uint64_t t_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

uint64_t t_now_ms(void)
{
	return t_now_ns() / 1000000;
}

int t_count_fds(void)
{
	struct dirent *de;
	int n = 0;
	DIR *d;

	d = opendir("/proc/self/fd");
	if (!d)
		return -errno;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1;	/* the directory's own fd */
}

int t_count_maps(void)
{
	int c, n = 0;
	FILE *f;

	f = fopen("/proc/self/maps", "re");
	if (!f)
		return -errno;
	while ((c = fgetc(f)) != EOF)
		if (c == '\n')
			n++;
	fclose(f);
	return n;
}

int t_wait(pid_t pid)
{
	int status;

	while (waitpid(pid, &status, __WALL) < 0) {
		if (errno != EINTR)
			t_die("waitpid %d: %s", (int)pid, strerror(errno));
	}
	return status;
}

void t_probe(struct uffdmove_caps *caps)
{
	int ret = uffdmove_probe(caps);

	if (ret)
		t_die("uffdmove_probe: %s", strerror(-ret));
}

void t_require_uffd(const struct uffdmove_caps *caps)
{
	if (!caps->userfaultfd)
		t_skip("userfaultfd unavailable (CONFIG_USERFAULTFD off, or "
		       "the syscall and /dev/userfaultfd are blocked)");
}

void t_require_move(const struct uffdmove_caps *caps)
{
	t_require_uffd(caps);
	if (!caps->move)
		t_skip("kernel offers no UFFD_FEATURE_MOVE");
}

void t_require_kernel_faults(const struct uffdmove_caps *caps)
{
	t_require_uffd(caps);
	if (!caps->kernel_faults)
		t_skip("needs CAP_SYS_PTRACE or /dev/userfaultfd");
}

int t_case_skip(struct t_ctx *ctx, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(ctx->why, sizeof(ctx->why), fmt, ap);
	va_end(ap);
	return T_SKIP;
}

int t_run_cases(const struct t_case *cases, size_t n, struct t_ctx *ctx)
{
	size_t i, skipped = 0;
	bool failed = false;
	int ret;

	const char *only = getenv("T_ONLY");	/* run one case by name */

	for (i = 0; i < n; i++) {
		if (only && strcmp(only, cases[i].name)) {
			skipped++;
			continue;
		}
		ctx->why[0] = '\0';
		ret = cases[i].fn(ctx);
		switch (ret) {
		case T_PASS:
			printf("ok %s\n", cases[i].name);
			break;
		case T_SKIP:
			printf("SKIP %s: %s\n", cases[i].name,
			       ctx->why[0] ? ctx->why : "no reason given");
			skipped++;
			break;
		default:
			printf("FAIL %s\n", cases[i].name);
			failed = true;
			break;
		}
		fflush(stdout);
	}
	if (failed)
		return T_FAIL;
	return n && skipped == n ? T_SKIP : T_PASS;
}

int t_main(const struct t_case *cases, size_t n, unsigned int watchdog_s,
	   unsigned int needs, void *priv)
{
	struct uffdmove_caps caps;
	struct t_ctx ctx = { .caps = &caps, .priv = priv };

	setvbuf(stdout, NULL, _IOLBF, 0);
	t_watchdog(watchdog_s);
	t_probe(&caps);
	if (needs & T_NEED_UFFD)
		t_require_uffd(&caps);
	if (needs & T_NEED_MOVE)
		t_require_move(&caps);
	if (needs & T_NEED_KERNEL_FAULTS)
		t_require_kernel_faults(&caps);
	return t_run_cases(cases, n, &ctx);
}
