// SPDX-License-Identifier: MIT
/*
 * postcopy_upgrade - a toy VMM that replaces itself with a new process
 * while its guest keeps running, using libuffdmove.
 *
 * The "guest" is anonymous memory (THP where asked) that vCPU threads read
 * and write, plus an I/O thread that moves guest pages through a pipe with
 * read()/write() the way device emulation does. Every page holds a pattern
 * derived from (seed, page, version); a per-page version table, kept in a
 * memfd that the old VMM passes to the new one, lets every byte be checked
 * at the end.
 *
 * The upgrade: the old VMM fork+execs its successor (--role new, the
 * socket as an inherited fd), which maps fresh guest RAM and registers it
 * (uffdmove_target_new) while the guest still runs in the old VMM. Then the
 * old VMM pauses its vCPUs, sends the pause time and the version table,
 * and serves the handoff (uffdmove_source_accept/run); the new VMM resumes
 * the guest as soon as the source accepted, with its RAM streaming in.
 *
 * The process you start is a small supervisor: it forks the old VMM and,
 * as a child subreaper, inherits the new VMM when the old one exits, so
 * that its exit status is the new VMM's (0 only when every byte verified).
 *
 * Builds with the public header and libc only:
 *   cc postcopy_upgrade.c $(pkg-config --cflags --libs libuffdmove) -pthread
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <uffdmove.h>

#define PAGE		4096UL
#define HPAGE		(2UL << 20)
#define MAX_VCPUS	64
#define MAX_AGENTS	(MAX_VCPUS + 1)	/* vCPUs + the I/O thread */
#define REGION_NAME	"guest-ram"
#define MSG_MAGIC	0x50435550u	/* "PCUP" */
#define MSG_VERSION	1
#define READY_TIMEOUT_MS 10000
#define STOP_TIMEOUT_MS	1000
#define HOT_BYTES	(64ULL << 20)	/* a guest thread's working set */
#define HOT_SHARE	90	/* percent of its accesses that stay in it */
#define HOT_OPS		50000	/* accesses before the working set moves */

#define LOAD(x)		__atomic_load_n(&(x), __ATOMIC_ACQUIRE)
#define STORE(x, v)	__atomic_store_n(&(x), (v), __ATOMIC_RELEASE)
#define INC(x)		__atomic_fetch_add(&(x), 1, __ATOMIC_RELAXED)

/* ------------------------------------------------------------- options */

enum role { ROLE_MAIN, ROLE_NEW };

struct options {
	uint64_t mem;
	unsigned int vcpus;
	bool thp;
	unsigned int populate;	/* percent */
	uint32_t mode;		/* enum uffdmove_mode */
	unsigned int threads;	/* source mover threads; 0: library default */
	bool same_process;
	int kill_at;		/* percent; -1: never */
	uint32_t on_death;	/* UFFDMOVE_ON_SOURCE_DEATH_* */
	bool json;
	unsigned int warmup_ms;
	uint64_t seed;
	const char *new_binary;
	enum role role;
	int sock_fd;
};

static const char *const mode_names[] = { "auto", "copy", "move" };

static void usage(FILE *f, const char *argv0)
{
	fprintf(f,
"Usage: %s [OPTION]...\n"
"A toy VMM that live-upgrades itself: the running (old) VMM starts its\n"
"successor, which resumes the guest at once while guest RAM streams in\n"
"over userfaultfd (libuffdmove), postcopy style. At the end every byte of\n"
"guest RAM is checked; the exit status is 0 only if all of it verified.\n"
"\n"
"  --mem SIZE           guest RAM size, a multiple of 2M (K, M, G, T\n"
"                       suffixes; default 1G)\n"
"  --vcpus N            vCPU threads reading (checking) and writing guest\n"
"                       pages (default 2, at most %d); one more thread does\n"
"                       read()/write() syscalls into guest RAM\n"
"  --thp on|off         back guest RAM with transparent huge pages\n"
"                       (MADV_HUGEPAGE) or not (MADV_NOHUGEPAGE); default on\n"
"  --populate PERCENT   share of guest RAM the guest has touched before the\n"
"                       upgrade; the rest is never-touched memory (default 75)\n"
"  --mode auto|copy|move  how the source hands pages over: move where the\n"
"                       kernel allows and copy otherwise (auto, default),\n"
"                       always copy, or move or fail\n"
"  --threads N          source mover threads (default: the library's, 2)\n"
"  --same-process       hand over within one process (source and target in\n"
"                       one VMM, source in a thread): UFFDIO_MOVE really\n"
"                       moves there; by default the new VMM is a new,\n"
"                       exec'ed process and pages are copied\n"
"  --kill-source-at PERCENT  the old VMM SIGKILLs itself once this share\n"
"                       of the populated bytes was handed over: the new VMM\n"
"                       must end with a clear error, never with zeroed pages\n"
"  --on-source-death block|poison  what guest threads touching missing\n"
"                       pages get if the old VMM dies: they stay blocked\n"
"                       until the VMM stops the guest (default), or SIGBUS\n"
"  --warmup MS          run the guest in the old VMM this long before the\n"
"                       upgrade (default 300)\n"
"  --seed N             pattern seed (default 1)\n"
"  --new-binary PATH    exec PATH as the new VMM instead of /proc/self/exe\n"
"  --json               print the summary as one JSON object on stdout\n"
"  -h, --help           show this help\n"
"\n"
"Progress goes to stderr (a bar on a terminal, plain lines otherwise); the\n"
"summary to stdout. Exit status: 0 every byte verified, 1 the upgrade or\n"
"the check failed, 2 usage error.\n", argv0, MAX_VCPUS);
}

static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	int shift = 0;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s || *s == '-')
		return -1;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	case 't': case 'T': shift = 40; end++; break;
	default: break;
	}
	if (shift && (!strcmp(end, "iB") || !strcmp(end, "B")))
		end += strlen(end);
	if (*end || (shift && v > (UINT64_MAX >> shift)))
		return -1;
	*out = (uint64_t)v << shift;
	return 0;
}

static int parse_uint(const char *s, unsigned int max, unsigned int *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || *s == '-' || v > max)
		return -1;
	*out = (unsigned int)v;
	return 0;
}

static int parse_options(int argc, char **argv, struct options *o)
{
	enum { O_MEM = 256, O_VCPUS, O_THP, O_POPULATE, O_MODE, O_THREADS,
	       O_SAME, O_KILL, O_DEATH, O_JSON, O_WARMUP, O_SEED, O_NEWBIN,
	       O_ROLE, O_SOCKFD };
	static const struct option longopts[] = {
		{ "mem", required_argument, NULL, O_MEM },
		{ "vcpus", required_argument, NULL, O_VCPUS },
		{ "thp", required_argument, NULL, O_THP },
		{ "populate", required_argument, NULL, O_POPULATE },
		{ "mode", required_argument, NULL, O_MODE },
		{ "threads", required_argument, NULL, O_THREADS },
		{ "same-process", no_argument, NULL, O_SAME },
		{ "kill-source-at", required_argument, NULL, O_KILL },
		{ "on-source-death", required_argument, NULL, O_DEATH },
		{ "json", no_argument, NULL, O_JSON },
		{ "warmup", required_argument, NULL, O_WARMUP },
		{ "seed", required_argument, NULL, O_SEED },
		{ "new-binary", required_argument, NULL, O_NEWBIN },
		{ "role", required_argument, NULL, O_ROLE },	/* hidden */
		{ "sock-fd", required_argument, NULL, O_SOCKFD }, /* hidden */
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	unsigned int u;
	uint64_t v;
	int c;

	*o = (struct options){
		.mem = 1ULL << 30, .vcpus = 2, .thp = true, .populate = 75,
		.mode = UFFDMOVE_MODE_AUTO, .kill_at = -1,
		.on_death = UFFDMOVE_ON_SOURCE_DEATH_BLOCK, .warmup_ms = 300,
		.seed = 1, .role = ROLE_MAIN, .sock_fd = -1,
	};
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case O_MEM:
			if (parse_size(optarg, &o->mem) || !o->mem ||
			    o->mem % HPAGE || o->mem > (1ULL << 40)) {
				fprintf(stderr, "--mem %s: want a non-zero multiple of 2M, at most 1T (e.g. 256M, 4G)\n",
					optarg);
				return -1;
			}
			break;
		case O_VCPUS:
			if (parse_uint(optarg, MAX_VCPUS, &o->vcpus) ||
			    !o->vcpus) {
				fprintf(stderr, "--vcpus %s: want 1..%d\n",
					optarg, MAX_VCPUS);
				return -1;
			}
			break;
		case O_THP:
			if (strcmp(optarg, "on") && strcmp(optarg, "off")) {
				fprintf(stderr, "--thp %s: want on or off\n",
					optarg);
				return -1;
			}
			o->thp = !strcmp(optarg, "on");
			break;
		case O_POPULATE:
			if (parse_uint(optarg, 100, &o->populate)) {
				fprintf(stderr, "--populate %s: want 0..100\n",
					optarg);
				return -1;
			}
			break;
		case O_MODE:
			for (u = 0; u < 3; u++)
				if (!strcmp(optarg, mode_names[u]))
					break;
			if (u == 3) {
				fprintf(stderr, "--mode %s: want auto, copy or move\n",
					optarg);
				return -1;
			}
			o->mode = u;
			break;
		case O_THREADS:
			if (parse_uint(optarg, 64, &o->threads) ||
			    !o->threads) {
				fprintf(stderr, "--threads %s: want 1..64\n",
					optarg);
				return -1;
			}
			break;
		case O_SAME:
			o->same_process = true;
			break;
		case O_KILL:
			if (parse_uint(optarg, 99, &u)) {
				fprintf(stderr, "--kill-source-at %s: want 0..99\n",
					optarg);
				return -1;
			}
			o->kill_at = (int)u;
			break;
		case O_DEATH:
			if (!strcmp(optarg, "block")) {
				o->on_death = UFFDMOVE_ON_SOURCE_DEATH_BLOCK;
			} else if (!strcmp(optarg, "poison")) {
				o->on_death = UFFDMOVE_ON_SOURCE_DEATH_POISON;
			} else {
				fprintf(stderr, "--on-source-death %s: want block or poison\n",
					optarg);
				return -1;
			}
			break;
		case O_JSON:
			o->json = true;
			break;
		case O_WARMUP:
			if (parse_uint(optarg, 3600 * 1000, &o->warmup_ms)) {
				fprintf(stderr, "--warmup %s: want milliseconds\n",
					optarg);
				return -1;
			}
			break;
		case O_SEED:
			if (parse_size(optarg, &v)) {
				fprintf(stderr, "--seed %s: want a number\n",
					optarg);
				return -1;
			}
			o->seed = v;
			break;
		case O_NEWBIN:
			o->new_binary = optarg;
			break;
		case O_ROLE:
			if (strcmp(optarg, "new")) {
				fprintf(stderr, "--role %s: internal option\n",
					optarg);
				return -1;
			}
			o->role = ROLE_NEW;
			break;
		case O_SOCKFD:
			if (parse_uint(optarg, INT_MAX, &u)) {
				fprintf(stderr, "--sock-fd %s: internal option\n",
					optarg);
				return -1;
			}
			o->sock_fd = (int)u;
			break;
		case 'h':
			usage(stdout, argv[0]);
			exit(0);
		default:
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "unexpected argument '%s'\n", argv[optind]);
		return -1;
	}
	if (o->same_process && o->kill_at >= 0) {
		fprintf(stderr, "--kill-source-at needs two processes: it kills the old VMM, which --same-process does not have\n");
		return -1;
	}
	if (o->role == ROLE_NEW && o->sock_fd < 0) {
		fprintf(stderr, "--role new needs --sock-fd\n");
		return -1;
	}
	return 0;
}

/* -------------------------------------------------------------- helpers */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static const char *fmt_bytes(char *buf, size_t len, uint64_t n)
{
	static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)n;
	int i = 0;

	while (v >= 1024 && i < 4) {
		v /= 1024;
		i++;
	}
	if (i == 0)
		snprintf(buf, len, "%" PRIu64 " B", n);
	else
		snprintf(buf, len, "%.1f %s", v, unit[i]);
	return buf;
}

/* Informational lines go to stderr so that --json keeps stdout clean. */
static void say(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* splitmix64's finaliser: good enough to make every page unique. */
static uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* ---------------------------------------------------------------- guest */

/*
 * Page @p of guest RAM with version @v (never 0: version 0 is a page the
 * guest never wrote, which must read as zeros) holds words
 * base + i * K, base = mix(seed, p, v).
 */
#define WORDS		(PAGE / 8)
#define WORD_STEP	0xd1b54a32d192ed03ULL

static uint64_t page_base(uint64_t seed, uint64_t p, uint32_t v)
{
	return mix(seed ^ mix(p << 20 ^ v));
}

static void fill_page(void *page, uint64_t base)
{
	uint64_t *w = page;
	size_t i;

	for (i = 0; i < WORDS; i++)
		w[i] = base + i * WORD_STEP;
}

/* Index of the first wrong word of @page, or -1. */
static long check_page(const void *page, uint64_t seed, uint64_t p,
		       uint32_t v)
{
	const uint64_t *w = page;
	uint64_t base = v ? page_base(seed, p, v) : 0;
	uint64_t step = v ? WORD_STEP : 0;
	size_t i;

	for (i = 0; i < WORDS; i++)
		if (w[i] != base + i * step)
			return (long)i;
	return -1;
}

static bool page_is_zero(const void *page)
{
	const uint64_t *w = page;
	size_t i;

	for (i = 0; i < WORDS; i++)
		if (w[i])
			return false;
	return true;
}

struct failure {
	pthread_mutex_t lock;
	bool set;
	uintptr_t addr;
	char why[400];
};

static void failure_set(struct failure *f, uintptr_t addr, const char *fmt,
			...) __attribute__((format(printf, 3, 4)));
static void failure_set(struct failure *f, uintptr_t addr, const char *fmt,
			...)
{
	va_list ap;

	pthread_mutex_lock(&f->lock);
	if (!f->set) {
		f->set = true;
		f->addr = addr;
		va_start(ap, fmt);
		vsnprintf(f->why, sizeof(f->why), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&f->lock);
}

/* Describe a wrong page for failure_set(). */
static void report_bad_page(struct failure *f, const char *who,
			    const uint8_t *page, uint64_t p, long word,
			    uint64_t seed, uint32_t v)
{
	const uint64_t *w = (const uint64_t *)page;
	uint64_t want = v ? page_base(seed, p, v) + (uint64_t)word * WORD_STEP : 0;

	failure_set(f, (uintptr_t)&w[word],
		    "%s: guest page %" PRIu64 " (version %u) is wrong at %p: 0x%016" PRIx64 ", expected 0x%016" PRIx64 "%s",
		    who, p, v, (void *)&w[word], w[word], want,
		    v && page_is_zero(page) ?
		    " -- the page is all ZEROS: guest data was lost" : "");
}

enum vm_state { VM_RUN, VM_PAUSE, VM_STOP };

struct vm;

struct agent {
	struct vm *vm;
	unsigned int id;
	bool io;		/* the I/O thread, else a vCPU */
	pthread_t tid;
	uint64_t rng;
	uint64_t hot_start, hot_left;	/* working set */
	int pipe[2];		/* I/O thread only */
	uint8_t *buf;		/* I/O thread only: one page */
	/* published to other threads */
	uint64_t reads, writes;
	int64_t cur_page;	/* page being accessed, -1: none */
	bool exited;
	uintptr_t sigbus_addr;	/* SIGBUS, or the I/O thread's EFAULT */
	int io_errno;
	/* SIGBUS (poisoned page) exits the loop through here */
	sigjmp_buf jb;
	volatile sig_atomic_t jb_armed;
};

struct vm {
	uint8_t *ram;		/* 2 MiB aligned; may change on resume */
	uint64_t size, npages;
	uint32_t *ver;		/* per page, in the shared memfd */
	int ver_fd;
	uint64_t seed;
	unsigned int nagents;	/* vCPUs + 1 I/O thread */
	uint64_t hot_pages;	/* working set size, 0: none */
	unsigned int hot_share;	/* percent of accesses in it */
	struct agent agents[MAX_AGENTS];
	unsigned int started, exited, parked;
	int state;		/* enum vm_state */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct failure fail;
};

static __thread struct agent *tls_agent;

/* A poisoned guest page (--on-source-death poison): record it and leave
 * the thread's loop. Anything else: the default action. */
static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	struct agent *a = tls_agent;

	(void)uc;
	if (!a || !a->jb_armed) {
		signal(sig, SIG_DFL);
		return;		/* re-executes the access: default action */
	}
	a->sigbus_addr = (uintptr_t)si->si_addr;
	a->jb_armed = 0;
	siglongjmp(a->jb, 1);
}

static int install_sigbus_handler(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_sigbus;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	return sigaction(SIGBUS, &sa, NULL);
}

/* Guest RAM: private anonymous, 2 MiB aligned, THP as asked. */
static uint8_t *map_guest_ram(uint64_t size, bool thp)
{
	size_t len = size + HPAGE;
	uint8_t *p, *a;

	p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	a = (uint8_t *)(((uintptr_t)p + HPAGE - 1) & ~(HPAGE - 1));
	if (a > p)
		munmap(p, (size_t)(a - p));
	if (a + size < p + len)
		munmap(a + size, (size_t)(p + len - (a + size)));
	if (madvise(a, size, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE) &&
	    thp) {
		munmap(a, size);
		errno = EOPNOTSUPP;
		return NULL;
	}
	/* Guest RAM must never be COW-shared with a child: the kernel then
	 * refuses to move it (EBUSY) until the guest writes each page again,
	 * and the guest pays for COW faults. The new VMM is exec'ed and
	 * does not need it. */
	madvise(a, size, MADV_DONTFORK);
	return a;
}

static int vm_init(struct vm *vm, const struct options *o, uint8_t *ram,
		   int ver_fd)
{
	pthread_condattr_t ca;
	size_t tlen;

	memset(vm, 0, sizeof(*vm));
	vm->ram = ram;
	vm->size = o->mem;
	vm->npages = o->mem / PAGE;
	vm->seed = o->seed;
	vm->nagents = o->vcpus + 1;
	vm->hot_pages = HOT_BYTES / PAGE;
	vm->hot_share = HOT_SHARE;
	tlen = vm->npages * sizeof(uint32_t);
	if (ver_fd < 0) {
		ver_fd = memfd_create("postcopy-upgrade-versions", MFD_CLOEXEC);
		if (ver_fd < 0)
			return -errno;
		vm->ver_fd = ver_fd;
		if (ftruncate(ver_fd, (off_t)tlen) < 0)
			return -errno;
	} else {
		struct stat stb;

		vm->ver_fd = ver_fd;
		if (fstat(ver_fd, &stb) < 0)
			return -errno;
		if ((uint64_t)stb.st_size != tlen)
			return -EPROTO;
	}
	vm->ver = mmap(NULL, tlen, PROT_READ | PROT_WRITE, MAP_SHARED,
		       ver_fd, 0);
	if (vm->ver == MAP_FAILED) {
		vm->ver = NULL;
		return -errno;
	}
	pthread_mutex_init(&vm->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&vm->cond, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_init(&vm->fail.lock, NULL);
	return 0;
}

/* Which units (2 MiB with THP, else 4 KiB pages) the guest has touched. */
static bool unit_populated(const struct options *o, uint64_t unit)
{
	return mix(o->seed ^ 0x706f70756c617465ULL ^ mix(unit)) % 100 <
	       o->populate;
}

/* The guest boots: write version 1 of every page of the touched units. */
static uint64_t vm_populate(struct vm *vm, const struct options *o)
{
	uint64_t unit_pages = o->thp ? HPAGE / PAGE : 1, u, p, n = 0;

	for (u = 0; u < vm->npages / unit_pages; u++) {
		if (!unit_populated(o, u))
			continue;
		for (p = u * unit_pages; p < (u + 1) * unit_pages; p++) {
			fill_page(vm->ram + p * PAGE, page_base(vm->seed, p, 1));
			vm->ver[p] = 1;
			n++;
		}
	}
	return n * PAGE;
}

/*
 * A page for agent @a to touch: one of its own (page % nagents == id), so
 * that no two threads ever access one page. Like a real guest, most
 * accesses stay in a working set that drifts from time to time; the rest
 * go anywhere in guest RAM.
 */
static uint64_t pick_page(struct agent *a)
{
	const struct vm *vm = a->vm;
	uint64_t x = xorshift(&a->rng), lo = 0, n = vm->npages, first, cnt;

	if (vm->hot_pages && vm->hot_pages < vm->npages) {
		if (!a->hot_left--) {
			a->hot_left = HOT_OPS;
			a->hot_start = (x >> 20) %
				       ((vm->npages - vm->hot_pages) /
					(HPAGE / PAGE) + 1) * (HPAGE / PAGE);
		}
		if (x % 100 < vm->hot_share) {
			lo = a->hot_start;
			n = vm->hot_pages;
		}
	}
	first = lo + (a->id + vm->nagents - lo % vm->nagents) % vm->nagents;
	cnt = (lo + n - first + vm->nagents - 1) / vm->nagents;
	return first + (x >> 8) % cnt * vm->nagents;
}

static uint32_t next_version(uint32_t v)
{
	return v == UINT32_MAX ? 1 : v + 1;
}

/* One vCPU step: check a page (reads; holes must be zero) or write a new
 * version of it. Writes stay in memory the guest has touched, as a guest
 * with free memory does; reads go anywhere. */
static bool vcpu_step(struct agent *a, uint8_t *ram)
{
	struct vm *vm = a->vm;
	uint64_t p = pick_page(a);
	uint8_t *page = ram + p * PAGE;
	uint32_t v = vm->ver[p];
	long bad;

	STORE(a->cur_page, (int64_t)p);
	if (v && (a->rng >> 62) == 0) {	/* a quarter are writes */
		v = next_version(v);
		fill_page(page, page_base(vm->seed, p, v));
		vm->ver[p] = v;
		INC(a->writes);
	} else {
		bad = check_page(page, vm->seed, p, v);
		INC(a->reads);
		if (bad >= 0) {
			report_bad_page(&vm->fail, "a vCPU read", page, p, bad,
					vm->seed, v);
			return false;
		}
	}
	STORE(a->cur_page, -1);
	return true;
}

/* One I/O step, like device emulation: write() a guest page to a pipe
 * (the kernel reads guest RAM) or read() from the pipe into a guest page
 * (the kernel writes guest RAM). Missing pages fault in kernel mode. */
static bool io_step(struct agent *a, uint8_t *ram)
{
	struct vm *vm = a->vm;
	uint64_t p = pick_page(a);
	uint8_t *page = ram + p * PAGE;
	uint32_t v = vm->ver[p];
	ssize_t n;
	long bad;

	STORE(a->cur_page, (int64_t)p);
	if (v && (a->rng >> 63)) {
		v = next_version(v);
		fill_page(a->buf, page_base(vm->seed, p, v));
		if (write(a->pipe[1], a->buf, PAGE) != (ssize_t)PAGE)
			goto io_error;
		n = read(a->pipe[0], page, PAGE);
		if (n != (ssize_t)PAGE) {
			/* What the kernel did not store stays in the pipe;
			 * the thread stops here anyway. */
			goto io_error;
		}
		vm->ver[p] = v;
		INC(a->writes);
	} else {
		n = write(a->pipe[1], page, PAGE);
		if (n != (ssize_t)PAGE)
			goto io_error;
		if (read(a->pipe[0], a->buf, PAGE) != (ssize_t)PAGE)
			goto io_error;
		bad = check_page(a->buf, vm->seed, p, v);
		INC(a->reads);
		if (bad >= 0) {
			report_bad_page(&vm->fail, "an I/O write() from guest RAM",
					a->buf, p, bad, vm->seed, v);
			return false;
		}
	}
	STORE(a->cur_page, -1);
	return true;
io_error:
	/* EFAULT: the kernel met a poisoned page (the source died). */
	a->io_errno = errno;
	a->sigbus_addr = (uintptr_t)page;
	return false;
}

/* The agent loop; left by return, or by siglongjmp on SIGBUS. */
static __attribute__((noinline)) void agent_loop(struct agent *a)
{
	struct vm *vm = a->vm;
	int st;

	for (;;) {
		st = LOAD(vm->state);
		if (st == VM_RUN) {
			uint8_t *ram = LOAD(vm->ram);

			if (!(a->io ? io_step(a, ram) : vcpu_step(a, ram)))
				return;
			continue;
		}
		pthread_mutex_lock(&vm->lock);
		if (vm->state == VM_PAUSE) {
			vm->parked++;
			pthread_cond_broadcast(&vm->cond);
			while (vm->state == VM_PAUSE)
				pthread_cond_wait(&vm->cond, &vm->lock);
			vm->parked--;
		}
		st = vm->state;
		pthread_mutex_unlock(&vm->lock);
		if (st == VM_STOP)
			return;
	}
}

static void *agent_main(void *arg)
{
	struct agent *a = arg;
	struct vm *vm = a->vm;

	tls_agent = a;
	if (sigsetjmp(a->jb, 1) == 0) {
		a->jb_armed = 1;
		agent_loop(a);
		a->jb_armed = 0;
	}
	tls_agent = NULL;
	pthread_mutex_lock(&vm->lock);
	STORE(a->exited, true);
	vm->exited++;
	pthread_cond_broadcast(&vm->cond);
	pthread_mutex_unlock(&vm->lock);
	return NULL;
}

static int vm_start(struct vm *vm, uint64_t generation)
{
	unsigned int i;
	int ret;

	STORE(vm->state, VM_RUN);
	for (i = 0; i < vm->nagents; i++) {
		struct agent *a = &vm->agents[i];

		memset(a, 0, sizeof(*a));
		a->vm = vm;
		a->id = i;
		a->io = i == vm->nagents - 1;
		a->rng = mix(vm->seed ^ generation << 32 ^ i) | 1;
		a->cur_page = -1;
		a->pipe[0] = a->pipe[1] = -1;
		if (a->io) {
			a->buf = aligned_alloc(PAGE, PAGE);
			if (!a->buf || pipe2(a->pipe, O_CLOEXEC))
				return -ENOMEM;
		}
		ret = pthread_create(&a->tid, NULL, agent_main, a);
		if (ret)
			return -ret;
		vm->started++;
	}
	return 0;
}

static void deadline_in(struct timespec *ts, unsigned int ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/* Stop the vCPUs where they are (they park); returns the time the pause
 * was requested: the guest makes no progress from then on. */
static uint64_t vm_pause(struct vm *vm)
{
	uint64_t t;

	pthread_mutex_lock(&vm->lock);
	t = now_ns();
	STORE(vm->state, VM_PAUSE);
	while (vm->parked + vm->exited < vm->started)
		pthread_cond_wait(&vm->cond, &vm->lock);
	pthread_mutex_unlock(&vm->lock);
	return t;
}

static void vm_resume(struct vm *vm, uint8_t *ram)
{
	pthread_mutex_lock(&vm->lock);
	STORE(vm->ram, ram);
	STORE(vm->state, VM_RUN);
	pthread_cond_broadcast(&vm->cond);
	pthread_mutex_unlock(&vm->lock);
}

/*
 * Stop the guest threads; join those that stop within @timeout_ms. The
 * others are blocked on guest pages that will never arrive: they are
 * abandoned (the process exits without them). Returns their number.
 */
static unsigned int vm_stop(struct vm *vm, unsigned int timeout_ms)
{
	struct timespec dl;
	unsigned int i, abandoned = 0;

	deadline_in(&dl, timeout_ms);
	pthread_mutex_lock(&vm->lock);
	STORE(vm->state, VM_STOP);
	pthread_cond_broadcast(&vm->cond);
	while (vm->exited < vm->started &&
	       pthread_cond_timedwait(&vm->cond, &vm->lock, &dl) != ETIMEDOUT)
		;
	pthread_mutex_unlock(&vm->lock);
	for (i = 0; i < vm->started; i++) {
		struct agent *a = &vm->agents[i];

		if (!LOAD(a->exited)) {
			abandoned++;
			continue;
		}
		pthread_join(a->tid, NULL);
		if (a->io) {
			close(a->pipe[0]);
			close(a->pipe[1]);
			free(a->buf);
			a->buf = NULL;
		}
	}
	vm->started = abandoned ? vm->started : 0;
	return abandoned;
}

static void vm_counters(const struct vm *vm, uint64_t *reads,
			uint64_t *writes, uint64_t *io)
{
	unsigned int i;

	*reads = *writes = *io = 0;
	for (i = 0; i < vm->nagents; i++) {
		const struct agent *a = &vm->agents[i];
		uint64_t r = __atomic_load_n(&a->reads, __ATOMIC_RELAXED);
		uint64_t w = __atomic_load_n(&a->writes, __ATOMIC_RELAXED);

		if (a->io) {
			*io += r + w;
		} else {
			*reads += r;
			*writes += w;
		}
	}
}

/*
 * Stop what still runs and release the guest state (not guest RAM).
 * Returns -EBUSY, releasing nothing, if a thread cannot be stopped (it
 * waits for a page that will never arrive).
 */
static int vm_destroy(struct vm *vm)
{
	size_t tlen;

	if (!vm)
		return 0;
	if (vm->started && vm_stop(vm, STOP_TIMEOUT_MS))
		return -EBUSY;
	tlen = vm->npages * sizeof(uint32_t);
	if (vm->ver)
		munmap(vm->ver, tlen);
	if (vm->ver_fd > 0)
		close(vm->ver_fd);
	free(vm);
	return 0;
}

/* The first poisoned page a guest thread met, or 0. */
static uintptr_t vm_poison_hit(const struct vm *vm, unsigned int *n)
{
	uintptr_t first = 0;
	unsigned int i;

	*n = 0;
	for (i = 0; i < vm->nagents; i++)
		if (vm->agents[i].sigbus_addr) {
			if (!first)
				first = vm->agents[i].sigbus_addr;
			(*n)++;
		}
	return first;
}

struct verify_result {
	uint64_t checked;	/* bytes */
	uint64_t missing;	/* bytes not present (only_present) */
	bool ok;
};

/*
 * Check every byte of guest RAM against the version table; with
 * @only_present, only the pages that are in memory (the others never
 * arrived: touching them would block or raise SIGBUS), skipping the pages
 * abandoned threads were working on.
 */
static int vm_verify(struct vm *vm, bool only_present,
		     struct verify_result *res)
{
	uint64_t entries[512], p, k, n;
	uint8_t *ram = vm->ram;
	int pm = -1;
	long bad;

	memset(res, 0, sizeof(*res));
	if (only_present) {
		pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
		if (pm < 0)
			return -errno;
	}
	for (p = 0; p < vm->npages; p += n) {
		n = vm->npages - p < 512 ? vm->npages - p : 512;
		if (pm >= 0) {
			off_t off = (off_t)((uintptr_t)(ram + p * PAGE) / PAGE * 8);

			if (pread(pm, entries, n * 8, off) != (ssize_t)(n * 8)) {
				close(pm);
				return -EIO;
			}
		}
		for (k = 0; k < n; k++) {
			unsigned int i;
			bool busy = false;

			if (pm >= 0 && !(entries[k] >> 63)) {
				res->missing += PAGE;
				continue;
			}
			for (i = 0; pm >= 0 && i < vm->started; i++)
				busy |= !LOAD(vm->agents[i].exited) &&
					LOAD(vm->agents[i].cur_page) ==
					(int64_t)(p + k);
			if (busy)
				continue;
			bad = check_page(ram + (p + k) * PAGE, vm->seed, p + k,
					 vm->ver[p + k]);
			if (bad >= 0) {
				report_bad_page(&vm->fail, "the final check",
						ram + (p + k) * PAGE, p + k, bad,
						vm->seed, vm->ver[p + k]);
				if (pm >= 0)
					close(pm);
				return 0;
			}
			res->checked += PAGE;
		}
	}
	if (pm >= 0)
		close(pm);
	res->ok = true;
	return 0;
}

/* Rss and AnonHugePages of the VMAs in [addr, addr+len), from smaps. */
static int range_usage(const void *addr, uint64_t len, uint64_t *rss,
		       uint64_t *huge)
{
	uintptr_t lo = (uintptr_t)addr, hi = lo + len;
	unsigned long long start, end, kb;
	bool in = false;
	char line[512];
	FILE *f = fopen("/proc/self/smaps", "re");

	*rss = *huge = 0;
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%llx-%llx ", &start, &end) == 2 &&
		    strchr(line, '-') < strchr(line, ' ')) {
			in = start < hi && end > lo;
			continue;
		}
		if (!in)
			continue;
		if (sscanf(line, "Rss: %llu kB", &kb) == 1)
			*rss += kb * 1024;
		else if (sscanf(line, "AnonHugePages: %llu kB", &kb) == 1)
			*huge += kb * 1024;
	}
	fclose(f);
	return 0;
}

static double pct(uint64_t part, uint64_t whole)
{
	return whole ? 100.0 * (double)part / (double)whole : 0.0;
}

/* ------------------------------------------------------ the wire (ours) */

/*
 * Our own two messages travel on the library's socket before the
 * handshake, strictly in turn: READY (new -> old: guest RAM is mapped and
 * registered) and STATE (old -> new, with the version table's memfd).
 * After that the socket belongs to libuffdmove.
 */
enum { MSG_READY = 1, MSG_STATE = 2 };

struct msg_ready {
	uint32_t magic, type;
	int32_t pid;
	uint32_t pad;
	uint64_t mem;
};

struct msg_state {
	uint32_t magic, type, version, vcpus;
	uint64_t mem, seed;
	uint64_t pause_ns;	/* CLOCK_MONOTONIC: one machine */
	uint64_t populated;	/* bytes the guest has written */
	uint64_t rss_before;	/* smaps of the old guest RAM */
	uint64_t huge_before;
	uint64_t reads, writes, io_ops;	/* in the old VMM */
	int32_t old_pid;
	uint32_t thp;
};

static int send_msg(int sock, const void *buf, size_t len, int fd)
{
	union {
		struct cmsghdr hdr;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct iovec iov = { (void *)buf, len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *c;

	if (fd >= 0) {
		memset(&ctl, 0, sizeof(ctl));
		msg.msg_control = ctl.buf;
		msg.msg_controllen = sizeof(ctl.buf);
		c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	if (sendmsg(sock, &msg, MSG_NOSIGNAL) != (ssize_t)len)
		return -errno;
	return 0;
}

/* One message of exactly @len bytes (and maybe an fd) within @timeout_ms. */
static int recv_msg(int sock, void *buf, size_t len, int *fd,
		    int timeout_ms)
{
	union {
		struct cmsghdr hdr;
		char buf[CMSG_SPACE(sizeof(int) * 4)];
	} ctl;
	struct iovec iov = { buf, len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
			      .msg_control = ctl.buf,
			      .msg_controllen = sizeof(ctl.buf) };
	struct pollfd pfd = { .fd = sock, .events = POLLIN };
	struct cmsghdr *c;
	ssize_t n;
	int ret;

	if (fd)
		*fd = -1;
	ret = poll(&pfd, 1, timeout_ms);
	if (ret == 0)
		return -ETIMEDOUT;
	if (ret < 0)
		return -errno;
	n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	if (n < 0)
		return -errno;
	for (c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
		size_t i, k;
		int f;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (i = 0; i < k; i++) {
			memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(f));
			if (fd && *fd < 0)
				*fd = f;
			else
				close(f);
		}
	}
	if (n == 0)
		return -ECONNRESET;
	if ((size_t)n != len || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)))
		return -EPROTO;
	return 0;
}

/* -------------------------------------------------------------- progress */

struct progress {
	bool tty, shown;
	uint64_t total;		/* populated bytes */
	uint64_t t0, next, last_t, last_bytes;
};

static void progress_init(struct progress *pr, uint64_t total)
{
	memset(pr, 0, sizeof(*pr));
	pr->tty = isatty(STDERR_FILENO);
	pr->total = total;
	pr->t0 = pr->last_t = now_ns();
	pr->next = pr->t0 + (pr->tty ? 100 : 500) * 1000000ULL;
}

static void progress_update(struct progress *pr,
			    const struct uffdmove_stats *st)
{
	uint64_t t = now_ns(), got = st->bytes_moved + st->bytes_copied;
	double share = pr->total ? (double)got / (double)pr->total : 1.0;
	double rate;
	char a[32], b[32];
	int i, width = 30;

	if (t < pr->next)
		return;
	pr->next = t + (pr->tty ? 100 : 500) * 1000000ULL;
	if (share > 1.0)
		share = 1.0;
	rate = t > pr->last_t ? (double)(got - pr->last_bytes) /
				((double)(t - pr->last_t) / 1e9) : 0;
	pr->last_t = t;
	pr->last_bytes = got;
	fmt_bytes(a, sizeof(a), got);
	fmt_bytes(b, sizeof(b), pr->total);
	if (!pr->tty) {
		fprintf(stderr, "progress: %3.0f%%  %s of %s handed over, %.0f MB/s, %" PRIu64 " faults served\n",
			share * 100, a, b, rate / 1e6, st->faults);
		return;
	}
	fputs("\r\033[K[", stderr);
	for (i = 0; i < width; i++)
		fputc(i < (int)(share * width) ? '#' : '.', stderr);
	fprintf(stderr, "] %3.0f%%  %s / %s  %.0f MB/s  %" PRIu64 " faults",
		share * 100, a, b, rate / 1e6, st->faults);
	pr->shown = true;
}

static void progress_end(struct progress *pr)
{
	if (pr->shown)
		fputs("\r\033[K", stderr);
	pr->shown = false;
}

/* --------------------------------------------------------------- summary */

struct report {
	const struct options *o;
	bool same_process, handoff_started, done;
	uint64_t populated;
	uint64_t pause_ns, resume_ns, done_ns;
	struct uffdmove_stats st;
	bool have_stats;
	uint64_t rss_before, huge_before, rss_after, huge_after;
	uint64_t reads, writes, io_ops;		/* during the handoff */
	bool verified;
	uint64_t verified_bytes, checked_bytes, missing_bytes;
	uintptr_t bad_addr;
	char error[1024];
};

static const char *why_copy(uint32_t why)
{
	switch (why) {
	case UFFDMOVE_WHY_MODE_COPY:
		return "--mode copy";
	case UFFDMOVE_WHY_NO_FEATURE:
		return "the kernel has no UFFDIO_MOVE";
	case UFFDMOVE_WHY_CROSS_MM:
		return "this kernel refuses UFFDIO_MOVE between processes";
	case UFFDMOVE_WHY_NOT_MOVABLE:
		return "no page could move";
	default:
		return "";
	}
}

static void json_str(const char *key, const char *s, bool last)
{
	const unsigned char *c;

	printf("  \"%s\": ", key);
	if (!s) {
		printf("null%s\n", last ? "" : ",");
		return;
	}
	putchar('"');
	for (c = (const unsigned char *)s; *c; c++) {
		if (*c == '"' || *c == '\\')
			printf("\\%c", *c);
		else if (*c < 0x20)
			printf("\\u%04x", *c);
		else
			putchar(*c);
	}
	printf("\"%s\n", last ? "" : ",");
}

static void json_u64(const char *key, uint64_t v)
{
	printf("  \"%s\": %" PRIu64 ",\n", key, v);
}

static void json_num(const char *key, double v, bool valid)
{
	if (valid)
		printf("  \"%s\": %.3f,\n", key, v);
	else
		printf("  \"%s\": null,\n", key);
}

static void json_bool(const char *key, bool v)
{
	printf("  \"%s\": %s,\n", key, v ? "true" : "false");
}

static void print_json(const struct report *r)
{
	const struct uffdmove_stats *st = &r->st;
	bool resumed = r->resume_ns && r->pause_ns;
	bool done = r->done && r->done_ns > r->resume_ns;
	uint64_t got = st->bytes_moved + st->bytes_copied;
	char addr[32];

	printf("{\n");
	json_str("mode", mode_names[r->o->mode], false);
	json_bool("same_process", r->same_process);
	json_u64("mem_bytes", r->o->mem);
	json_u64("populated_bytes", r->populated);
	json_str("thp", r->o->thp ? "on" : "off", false);
	json_u64("vcpus", r->o->vcpus);
	json_u64("seed", r->o->seed);
	json_str("on_source_death",
		 r->o->on_death == UFFDMOVE_ON_SOURCE_DEATH_POISON ?
		 "poison" : "block", false);
	json_str("primitive", !r->have_stats ? NULL :
		 st->primitive == UFFDMOVE_PRIM_MOVE ? "move" : "copy", false);
	json_str("move_unused_reason",
		 r->have_stats && st->primitive != UFFDMOVE_PRIM_MOVE ?
		 why_copy(st->move_unused_reason) : NULL, false);
	json_num("downtime_us", resumed ?
		 (double)(r->resume_ns - r->pause_ns) / 1e3 : 0, resumed);
	json_num("handoff_ms", done ?
		 (double)(r->done_ns - r->pause_ns) / 1e6 : 0, done);
	json_num("throughput_mbps", done ?
		 (double)got / ((double)(r->done_ns - r->resume_ns) / 1e9) /
		 1e6 : 0, done);
	json_u64("bytes_populated", st->bytes_populated);
	json_u64("bytes_moved", st->bytes_moved);
	json_u64("bytes_copied", st->bytes_copied);
	json_u64("bytes_zeroed", st->bytes_zeroed);
	json_u64("bytes_skipped", st->bytes_skipped);
	json_u64("bytes_discarded", st->bytes_discarded);
	json_u64("faults", st->faults);
	json_num("fault_p50_us", (double)st->fault_ns_p50 / 1e3,
		 r->have_stats);
	json_num("fault_p99_us", (double)st->fault_ns_p99 / 1e3,
		 r->have_stats);
	json_num("fault_max_us", (double)st->fault_ns_max / 1e3,
		 r->have_stats);
	json_u64("move_ebusy", st->move_ebusy);
	json_u64("pinned_skipped", st->pinned_skipped);
	json_u64("eagain_retries", st->eagain_retries);
	json_u64("thp_moved", st->thp_moved);
	json_u64("thp_copied", st->thp_copied);
	json_u64("thp_collapsed", st->thp_collapsed);
	json_u64("rss_before", r->rss_before);
	json_u64("anon_huge_before", r->huge_before);
	json_u64("rss_after", r->rss_after);
	json_u64("anon_huge_after", r->huge_after);
	json_num("thp_before_pct", pct(r->huge_before, r->rss_before),
		 r->o->thp && r->rss_before);
	json_num("thp_after_pct", pct(r->huge_after, r->rss_after),
		 r->o->thp && r->done && r->rss_after);
	json_u64("guest_reads", r->reads);
	json_u64("guest_writes", r->writes);
	json_u64("io_ops", r->io_ops);
	json_bool("verified", r->verified);
	json_u64("verified_bytes", r->verified_bytes);
	if (!r->verified)
		json_u64("checked_bytes", r->checked_bytes);
	if (!r->verified)
		json_u64("missing_bytes", r->missing_bytes);
	snprintf(addr, sizeof(addr), "0x%" PRIxPTR, r->bad_addr);
	json_str("first_bad_addr", r->bad_addr ? addr : NULL, false);
	json_str("error", r->error[0] ? r->error : NULL, true);
	printf("}\n");
}

static void print_text(const struct report *r)
{
	const struct uffdmove_stats *st = &r->st;
	uint64_t got = st->bytes_moved + st->bytes_copied;
	char a[32], b[32];

	printf("summary (new VMM, pid %d):\n", (int)getpid());
	printf("  guest RAM          %s, %s populated, THP %s, %u vCPUs + 1 I/O thread\n",
	       fmt_bytes(a, sizeof(a), r->o->mem),
	       fmt_bytes(b, sizeof(b), r->populated), r->o->thp ? "on" : "off",
	       r->o->vcpus);
	if (r->have_stats)
		printf("  handoff            %s, --mode %s: pages went by %s%s%s%s\n",
		       r->same_process ? "within one process" :
		       "to an exec'ed new process",
		       mode_names[r->o->mode],
		       st->primitive == UFFDMOVE_PRIM_MOVE ? "MOVE" : "COPY",
		       st->primitive == UFFDMOVE_PRIM_MOVE ? "" : " (",
		       st->primitive == UFFDMOVE_PRIM_MOVE ? "" :
		       why_copy(st->move_unused_reason),
		       st->primitive == UFFDMOVE_PRIM_MOVE ? "" : ")");
	if (r->resume_ns && r->pause_ns)
		printf("  guest downtime     %.3f ms (vCPUs paused in the old VMM -> resumed in the new)\n",
		       (double)(r->resume_ns - r->pause_ns) / 1e6);
	if (r->done && r->done_ns > r->resume_ns) {
		printf("  handoff time       %.1f ms (pause -> every page in the new VMM)\n",
		       (double)(r->done_ns - r->pause_ns) / 1e6);
		printf("  throughput         %.0f MB/s (%s handed over while the guest ran)\n",
		       (double)got / ((double)(r->done_ns - r->resume_ns) / 1e9) / 1e6,
		       fmt_bytes(a, sizeof(a), got));
	}
	if (r->have_stats) {
		printf("  bytes moved        %" PRIu64 " (%s)\n", st->bytes_moved,
		       fmt_bytes(a, sizeof(a), st->bytes_moved));
		printf("  bytes copied       %" PRIu64 " (%s)\n", st->bytes_copied,
		       fmt_bytes(a, sizeof(a), st->bytes_copied));
		printf("  bytes zero-filled  %" PRIu64 " (%s)\n", st->bytes_zeroed,
		       fmt_bytes(a, sizeof(a), st->bytes_zeroed));
		printf("  bytes skipped      %" PRIu64 " (%s, never touched)\n",
		       st->bytes_skipped,
		       fmt_bytes(a, sizeof(a), st->bytes_skipped));
		printf("  faults served      %" PRIu64 ", latency p50 %.0f us, p99 %.0f us, max %.0f us\n",
		       st->faults, (double)st->fault_ns_p50 / 1e3,
		       (double)st->fault_ns_p99 / 1e3,
		       (double)st->fault_ns_max / 1e3);
	}
	if (!r->o->thp)
		printf("  THP coverage       off (--thp off)\n");
	else if (r->done)
		printf("  THP coverage       before %.1f%%, after %.1f%% (THP chunks: %" PRIu64 " moved, %" PRIu64 " copied, %" PRIu64 " collapsed)\n",
		       pct(r->huge_before, r->rss_before),
		       pct(r->huge_after, r->rss_after), st->thp_moved,
		       st->thp_copied, st->thp_collapsed);
	else
		printf("  THP coverage       before %.1f%%\n",
		       pct(r->huge_before, r->rss_before));
	if (r->resume_ns)
		printf("  guest activity     %" PRIu64 " vCPU reads, %" PRIu64 " vCPU writes, %" PRIu64 " I/O syscall pairs while RAM streamed in\n",
		       r->reads, r->writes, r->io_ops);
	if (r->verified) {
		printf("verified: all %" PRIu64 " bytes\n", r->verified_bytes);
		return;
	}
	/* Never the word that means success here. */
	if (r->checked_bytes || r->missing_bytes)
		printf("checked: the %s that arrived hold the right bytes, none zeroed; %s never arrived\n",
		       fmt_bytes(a, sizeof(a), r->checked_bytes),
		       fmt_bytes(b, sizeof(b), r->missing_bytes));
	if (r->bad_addr)
		printf("first wrong address: 0x%" PRIxPTR "\n", r->bad_addr);
	printf("FAILED: %s\n", r->error);
}

static void print_report(const struct report *r)
{
	if (r->o->json)
		print_json(r);
	else
		print_text(r);
	fflush(stdout);
}

/* -------------------------------------------------------- the new side */

/*
 * The target's life after the commit, shared by both modes: the guest
 * runs while RAM streams in; then stop, check and report. Returns the
 * exit status.
 */
static int run_guest_until_done(struct vm *vm, struct uffdmove_target *t,
				struct report *r, uint64_t gen)
{
	struct verify_result vr;
	struct progress pr;
	uint64_t r0, w0, io0, r1, w1, io1;
	unsigned int abandoned, npoison;
	uintptr_t poison;
	int ret;

	/* The pause->resume span ends when the vCPUs may run again. */
	vm_counters(vm, &r0, &w0, &io0);
	if (gen) {
		r->resume_ns = now_ns();
		ret = vm_start(vm, gen);
	} else {
		r->resume_ns = now_ns();
		vm_resume(vm, vm->ram);
		ret = 0;
	}
	if (ret) {
		snprintf(r->error, sizeof(r->error),
			 "starting the guest threads: %s", strerror(-ret));
		return 1;	/* cannot stop safely; exit */
	}

	progress_init(&pr, r->populated);
	for (;;) {
		ret = uffdmove_target_wait(t, pr.tty ? 100 : 250);
		if (ret != -ETIMEDOUT)
			break;
		/* -ETIMEDOUT is also what a session that failed with
		 * ETIMEDOUT returns: process() tells them apart. */
		ret = uffdmove_target_process(t);
		if (ret) {
			ret = ret > 0 ? 0 : ret;
			break;
		}
		uffdmove_target_stats(t, &r->st);
		progress_update(&pr, &r->st);
	}
	progress_end(&pr);
	uffdmove_target_stats(t, &r->st);
	r->have_stats = true;

	if (ret == 0) {
		r->done = true;
		r->done_ns = now_ns();
		abandoned = vm_stop(vm, 10000);
		vm_counters(vm, &r1, &w1, &io1);
		r->reads = r1 - r0;
		r->writes = w1 - w0;
		r->io_ops = io1 - io0;
		if (abandoned) {
			snprintf(r->error, sizeof(r->error),
				 "%u guest thread%s still blocked in guest RAM 10 s after the handoff completed",
				 abandoned, abandoned == 1 ? " is" : "s are");
			return 3;
		}
		range_usage(vm->ram, vm->size, &r->rss_after, &r->huge_after);
		poison = vm_poison_hit(vm, &npoison);
		if (npoison && !vm->fail.set)
			failure_set(&vm->fail, poison,
				    "a guest thread could not access guest RAM at %p: %s",
				    (void *)poison, vm->agents[vm->nagents - 1].io_errno ?
				    strerror(vm->agents[vm->nagents - 1].io_errno) :
				    "SIGBUS");
		if (vm->fail.set) {
			r->bad_addr = vm->fail.addr;
			snprintf(r->error, sizeof(r->error), "%s",
				 vm->fail.why);
			return 1;
		}
		ret = vm_verify(vm, false, &vr);
		if (ret) {
			snprintf(r->error, sizeof(r->error),
				 "cannot check guest RAM: %s", strerror(-ret));
			return 1;
		}
		if (!vr.ok) {
			r->bad_addr = vm->fail.addr;
			snprintf(r->error, sizeof(r->error), "%s",
				 vm->fail.why);
			return 1;
		}
		r->verified = true;
		r->verified_bytes = vr.checked;
		return 0;
	}

	/*
	 * The handoff failed after the guest resumed (the source died, say):
	 * guest RAM is incomplete and the guest cannot go on. Stop what
	 * still runs; threads blocked on missing pages are abandoned (the
	 * process exits without them) and poisoned ones have stopped.
	 */
	snprintf(r->error, sizeof(r->error),
		 "the handoff failed after the guest resumed: %s (%s)",
		 uffdmove_target_error(t), strerror(-ret));
	abandoned = vm_stop(vm, STOP_TIMEOUT_MS);
	vm_counters(vm, &r1, &w1, &io1);
	r->reads = r1 - r0;
	r->writes = w1 - w0;
	r->io_ops = io1 - io0;
	poison = vm_poison_hit(vm, &npoison);
	if (abandoned)
		say("new VMM: %u guest thread%s blocked on guest pages that will never arrive; stopping the guest without %s",
		    abandoned, abandoned == 1 ? " is" : "s are",
		    abandoned == 1 ? "it" : "them");
	if (npoison)
		say("new VMM: %u guest thread%s hit poisoned guest RAM (SIGBUS/EFAULT), first at %p, and stopped",
		    npoison, npoison == 1 ? "" : "s", (void *)poison);
	if (vm->fail.set) {
		r->bad_addr = vm->fail.addr;
		snprintf(r->error + strlen(r->error),
			 sizeof(r->error) - strlen(r->error),
			 "; and a guest thread read wrong bytes: %s",
			 vm->fail.why);
	} else if (!vm_verify(vm, true, &vr)) {
		r->checked_bytes = vr.checked;
		r->missing_bytes = vr.missing;
		if (!vr.ok) {
			r->bad_addr = vm->fail.addr;
			snprintf(r->error + strlen(r->error),
				 sizeof(r->error) - strlen(r->error),
				 "; and a page that arrived is wrong: %s",
				 vm->fail.why);
		}
	}
	return abandoned ? 3 : 1;	/* 3: do not free the target */
}

static int new_vmm(const struct options *o)
{
	struct uffdmove_target_opts topts;
	struct uffdmove_region region;
	struct uffdmove_target *t = NULL;
	struct msg_ready ready = { MSG_MAGIC, MSG_READY, 0, 0, 0 };
	struct msg_state state;
	struct report r;
	struct vm *vm;
	uint8_t *ram = NULL;
	int sock = o->sock_fd, ver_fd = -1, ret, status = 1;

	memset(&r, 0, sizeof(r));
	r.o = o;
	vm = calloc(1, sizeof(*vm));
	if (!vm) {
		say("new VMM: out of memory");
		return 1;
	}
	fcntl(sock, F_SETFD, FD_CLOEXEC);
	if (o->on_death == UFFDMOVE_ON_SOURCE_DEATH_POISON &&
	    install_sigbus_handler()) {
		snprintf(r.error, sizeof(r.error), "sigaction: %s",
			 strerror(errno));
		goto report;
	}

	/* Before the old VMM pauses anything: map and register. */
	ram = map_guest_ram(o->mem, o->thp);
	if (!ram) {
		snprintf(r.error, sizeof(r.error),
			 "mapping %" PRIu64 " bytes of guest RAM: %s", o->mem,
			 strerror(errno));
		goto report;
	}
	region = (struct uffdmove_region){ REGION_NAME, ram, o->mem };
	uffdmove_target_opts_init(&topts);
	topts.on_source_death = o->on_death;
	ret = uffdmove_target_new(&t, &region, 1, &topts);
	if (ret) {
		snprintf(r.error, sizeof(r.error),
			 "uffdmove_target_new: %s", strerror(-ret));
		goto report;
	}
	ready.pid = getpid();
	ready.mem = o->mem;
	ret = send_msg(sock, &ready, sizeof(ready), -1);
	if (ret) {
		snprintf(r.error, sizeof(r.error),
			 "telling the old VMM we are ready: %s",
			 strerror(-ret));
		goto report;
	}

	ret = recv_msg(sock, &state, sizeof(state), &ver_fd, 30000);
	if (!ret && (state.magic != MSG_MAGIC || state.type != MSG_STATE ||
		     state.version != MSG_VERSION || ver_fd < 0))
		ret = -EPROTO;
	if (!ret && (state.mem != o->mem || state.vcpus != o->vcpus ||
		     state.seed != o->seed || !state.thp != !o->thp))
		ret = -EINVAL;
	if (ret) {
		snprintf(r.error, sizeof(r.error),
			 "receiving the guest state from the old VMM: %s",
			 ret == -EINVAL ? "it runs another configuration" :
			 strerror(-ret));
		goto report;
	}
	ret = vm_init(vm, o, ram, ver_fd);
	if (ret) {
		snprintf(r.error, sizeof(r.error),
			 "mapping the guest state: %s", strerror(-ret));
		goto report;
	}
	r.pause_ns = state.pause_ns;
	r.populated = state.populated;
	r.rss_before = state.rss_before;
	r.huge_before = state.huge_before;

	ret = uffdmove_target_handoff(t, sock);
	if (ret) {
		snprintf(r.error, sizeof(r.error),
			 "the handoff was refused, the old VMM keeps the guest: %s",
			 uffdmove_target_error(t));
		goto report;
	}
	r.handoff_started = true;
	/* Commit: the point of no return; resume at once. */
	ret = uffdmove_target_process(t);
	if (ret < 0) {
		snprintf(r.error, sizeof(r.error), "committing: %s",
			 uffdmove_target_error(t));
		goto report;
	}
	status = run_guest_until_done(vm, t, &r, 2);
	if (!o->json && r.resume_ns)
		say("new VMM (pid %d): guest resumed %.3f ms after the pause; handoff %s",
		    (int)getpid(), (double)(r.resume_ns - r.pause_ns) / 1e6,
		    r.done ? "complete" : "FAILED");
report:
	print_report(&r);
	if (status == 3) {
		/* Threads are blocked in guest RAM; freeing the target would
		 * apply the death policy under them. The guest is lost:
		 * stop it the way a VMM does, by exiting. */
		fflush(NULL);
		_exit(1);
	}
	/* The target goes first: guest RAM stays mapped until then. */
	uffdmove_target_free(t);
	if (ver_fd >= 0 && vm->ver_fd != ver_fd)
		close(ver_fd);
	if (vm_destroy(vm) == 0 && ram)
		munmap(ram, o->mem);
	close(sock);
	return r.verified ? 0 : 1;
}

/* -------------------------------------------------------- the old side */

struct killer {
	struct uffdmove_source *s;
	uint64_t threshold;
	int percent;
	bool stop;
	pthread_t tid;
};

/* --kill-source-at: die like a crashed VMM once that share went over. */
static void *killer_main(void *arg)
{
	struct killer *k = arg;
	struct uffdmove_stats st;
	char a[32];

	while (!LOAD(k->stop)) {
		uffdmove_source_stats(k->s, &st);
		if (st.bytes_moved + st.bytes_copied >= k->threshold) {
			say("old VMM (pid %d): --kill-source-at %d: %s handed over, killing myself with SIGKILL",
			    (int)getpid(), k->percent,
			    fmt_bytes(a, sizeof(a),
				      st.bytes_moved + st.bytes_copied));
			raise(SIGKILL);
		}
		usleep(50);
	}
	return NULL;
}

/* Start the successor: fork + exec, the socket as an inherited fd. */
static pid_t spawn_new_vmm(const struct options *o, int argc, char **argv,
			   int sock)
{
	char fdarg[16];
	char **nargv;
	const char *path = o->new_binary ? o->new_binary : "/proc/self/exe";
	pid_t pid;
	int i;

	nargv = calloc((size_t)argc + 6, sizeof(*nargv));
	if (!nargv)
		return -1;
	snprintf(fdarg, sizeof(fdarg), "%d", sock);
	for (i = 0; i < argc; i++)
		nargv[i] = argv[i];
	nargv[i++] = (char *)"--role";
	nargv[i++] = (char *)"new";
	nargv[i++] = (char *)"--sock-fd";
	nargv[i++] = fdarg;
	nargv[i] = NULL;
	pid = fork();
	if (pid == 0) {
		/* Async-signal-safe only: we have threads. */
		if (fcntl(sock, F_SETFD, 0) == 0)
			execv(path, nargv);
		_exit(127);
	}
	free(nargv);
	return pid;
}

static int old_vmm(const struct options *o, int argc, char **argv)
{
	struct uffdmove_source_opts sopts;
	struct uffdmove_region region;
	struct uffdmove_source *s = NULL;
	struct msg_ready ready;
	struct msg_state state;
	struct killer k = { 0 };
	struct vm *vm;
	uint64_t t0, populated;
	char a[32], b[32];
	uint8_t *ram = NULL;
	int sv[2] = { -1, -1 }, ret, status = 1;
	pid_t child = -1;

	vm = calloc(1, sizeof(*vm));
	ram = vm ? map_guest_ram(o->mem, o->thp) : NULL;
	if (!ram) {
		say("old VMM: mapping %" PRIu64 " bytes of guest RAM: %s",
		    o->mem, strerror(errno));
		goto out;
	}
	ret = vm_init(vm, o, ram, -1);
	if (ret) {
		say("old VMM: guest state: %s", strerror(-ret));
		goto out;
	}
	t0 = now_ns();
	populated = vm_populate(vm, o);
	if (!o->json)
		say("old VMM (pid %d): guest RAM %s, THP %s, %s populated in %.2f s; %u vCPUs + 1 I/O thread run for %u ms",
		    (int)getpid(), fmt_bytes(a, sizeof(a), o->mem),
		    o->thp ? "on" : "off",
		    fmt_bytes(b, sizeof(b), populated),
		    (double)(now_ns() - t0) / 1e9, o->vcpus, o->warmup_ms);
	ret = vm_start(vm, 1);
	if (ret) {
		say("old VMM: starting the guest: %s", strerror(-ret));
		goto out;
	}
	usleep(o->warmup_ms * 1000U);

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv)) {
		say("old VMM: socketpair: %s", strerror(errno));
		goto out;
	}
	child = spawn_new_vmm(o, argc, argv, sv[1]);
	if (child < 0) {
		say("old VMM: starting the new VMM: %s", strerror(errno));
		goto out;
	}
	close(sv[1]);
	sv[1] = -1;

	region = (struct uffdmove_region){ REGION_NAME, ram, o->mem };
	uffdmove_source_opts_init(&sopts);
	sopts.mode = o->mode;
	if (o->threads)
		sopts.threads = o->threads;
	ret = uffdmove_source_new(&s, &region, 1, &sopts);
	if (ret) {
		say("old VMM: uffdmove_source_new: %s", strerror(-ret));
		goto out_kill;
	}

	/* The guest still runs while the new VMM comes up. */
	ret = recv_msg(sv[0], &ready, sizeof(ready), NULL, READY_TIMEOUT_MS);
	if (!ret && (ready.magic != MSG_MAGIC || ready.type != MSG_READY ||
		     ready.mem != o->mem))
		ret = -EPROTO;
	if (ret) {
		say("old VMM: the new VMM (pid %d) did not get ready: %s; the guest would keep running here",
		    (int)child, ret == -ECONNRESET ? "it exited" :
		    strerror(-ret));
		goto out_kill;
	}
	if (!o->json)
		say("old VMM: new VMM (pid %d) is ready; pausing the guest and handing over",
		    (int)ready.pid);

	memset(&state, 0, sizeof(state));
	state.magic = MSG_MAGIC;
	state.type = MSG_STATE;
	state.version = MSG_VERSION;
	state.vcpus = o->vcpus;
	state.mem = o->mem;
	state.seed = o->seed;
	state.thp = o->thp;
	state.old_pid = getpid();
	/* THP coverage as the guest left it, outside the downtime: guest
	 * writes stay within touched memory, so the pause changes nothing
	 * here. */
	range_usage(ram, o->mem, &state.rss_before, &state.huge_before);

	/* ---- downtime starts ---- */
	state.pause_ns = vm_pause(vm);
	state.populated = populated;
	vm_counters(vm, &state.reads, &state.writes, &state.io_ops);
	ret = send_msg(sv[0], &state, sizeof(state), vm->ver_fd);
	if (ret) {
		say("old VMM: sending the guest state: %s", strerror(-ret));
		goto out_kill;
	}
	ret = uffdmove_source_accept(s, sv[0]);
	if (ret) {
		say("old VMM: the handoff did not start: %s",
		    uffdmove_source_error(s));
		say("old VMM: the guest is intact here (a real VMM would resume it)");
		goto out;
	}
	/* ---- the new VMM resumes the guest now ---- */

	if (o->kill_at >= 0) {
		k.s = s;
		k.percent = o->kill_at;
		k.threshold = populated / 100 * (uint64_t)o->kill_at;
		if (pthread_create(&k.tid, NULL, killer_main, &k)) {
			say("old VMM: cannot start the --kill-source-at thread");
			goto out_kill;
		}
	}
	ret = uffdmove_source_run(s);
	if (o->kill_at >= 0) {
		STORE(k.stop, true);
		pthread_join(k.tid, NULL);
	}
	if (ret) {
		say("old VMM: the handoff failed: %s", uffdmove_source_error(s));
		goto out;
	}
	/* Done: the guest lives in the new VMM. Release all and exit. */
	status = 0;
	goto out;
out_kill:
	kill(child, SIGKILL);
out:
	uffdmove_source_free(s);
	if (sv[0] >= 0)
		close(sv[0]);
	if (sv[1] >= 0)
		close(sv[1]);
	if (vm_destroy(vm) == 0 && ram)
		munmap(ram, o->mem);
	return status;
}

/* ------------------------------------------------- same-process handoff */

struct source_thread {
	struct uffdmove_source *s;
	int sock, ret;
	char error[512];
};

static void *source_thread_main(void *arg)
{
	struct source_thread *st = arg;

	st->ret = uffdmove_source_accept(st->s, st->sock);
	if (!st->ret)
		st->ret = uffdmove_source_run(st->s);
	if (st->ret)
		snprintf(st->error, sizeof(st->error), "%s",
			 uffdmove_source_error(st->s));
	return NULL;
}

static int same_process(const struct options *o)
{
	struct uffdmove_source_opts sopts;
	struct uffdmove_target_opts topts;
	struct uffdmove_region oreg, nreg;
	struct uffdmove_target *t = NULL;
	struct source_thread src = { 0 };
	pthread_t stid;
	struct report r;
	struct vm *vm;
	uint8_t *old_ram, *new_ram;
	uint64_t t0;
	char a[32], b[32];
	int sv[2] = { -1, -1 }, ret, status = 1;
	bool joined = true;

	memset(&r, 0, sizeof(r));
	r.o = o;
	r.same_process = true;
	vm = calloc(1, sizeof(*vm));
	old_ram = vm ? map_guest_ram(o->mem, o->thp) : NULL;
	new_ram = old_ram ? map_guest_ram(o->mem, o->thp) : NULL;
	if (!new_ram) {
		snprintf(r.error, sizeof(r.error), "mapping guest RAM: %s",
			 strerror(errno));
		goto report;
	}
	if (o->on_death == UFFDMOVE_ON_SOURCE_DEATH_POISON &&
	    install_sigbus_handler()) {
		snprintf(r.error, sizeof(r.error), "sigaction: %s",
			 strerror(errno));
		goto report;
	}
	ret = vm_init(vm, o, old_ram, -1);
	if (ret) {
		snprintf(r.error, sizeof(r.error), "guest state: %s",
			 strerror(-ret));
		goto report;
	}
	t0 = now_ns();
	r.populated = vm_populate(vm, o);
	if (!o->json)
		say("VMM (pid %d): guest RAM %s, THP %s, %s populated in %.2f s; %u vCPUs + 1 I/O thread run for %u ms",
		    (int)getpid(), fmt_bytes(a, sizeof(a), o->mem),
		    o->thp ? "on" : "off",
		    fmt_bytes(b, sizeof(b), r.populated),
		    (double)(now_ns() - t0) / 1e9, o->vcpus, o->warmup_ms);
	ret = vm_start(vm, 1);
	if (ret) {
		snprintf(r.error, sizeof(r.error), "starting the guest: %s",
			 strerror(-ret));
		goto report;
	}
	usleep(o->warmup_ms * 1000U);

	/* The "new VMM": fresh guest RAM, registered while the guest runs. */
	nreg = (struct uffdmove_region){ REGION_NAME, new_ram, o->mem };
	oreg = (struct uffdmove_region){ REGION_NAME, old_ram, o->mem };
	uffdmove_target_opts_init(&topts);
	topts.on_source_death = o->on_death;
	ret = uffdmove_target_new(&t, &nreg, 1, &topts);
	if (ret) {
		snprintf(r.error, sizeof(r.error), "uffdmove_target_new: %s",
			 strerror(-ret));
		goto report;
	}
	uffdmove_source_opts_init(&sopts);
	sopts.mode = o->mode;
	if (o->threads)
		sopts.threads = o->threads;
	ret = uffdmove_source_new(&src.s, &oreg, 1, &sopts);
	if (!ret && socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv))
		ret = -errno;
	if (ret) {
		snprintf(r.error, sizeof(r.error), "setting up the source: %s",
			 strerror(-ret));
		goto report;
	}
	range_usage(old_ram, o->mem, &r.rss_before, &r.huge_before);
	if (!o->json)
		say("VMM: pausing the guest and handing guest RAM over to a new mapping");

	/* ---- downtime starts ---- */
	r.pause_ns = vm_pause(vm);
	src.sock = sv[0];
	ret = pthread_create(&stid, NULL, source_thread_main, &src);
	if (ret) {
		snprintf(r.error, sizeof(r.error), "pthread_create: %s",
			 strerror(ret));
		goto report;
	}
	joined = false;
	ret = uffdmove_target_handoff(t, sv[1]);
	if (ret) {
		shutdown(sv[1], SHUT_RDWR);	/* the source stops waiting */
		pthread_join(stid, NULL);
		joined = true;
		snprintf(r.error, sizeof(r.error),
			 "the handoff was refused, the guest stays in the old mapping: %s",
			 uffdmove_target_error(t));
		goto report;
	}
	r.handoff_started = true;
	ret = uffdmove_target_process(t);
	if (ret < 0) {
		snprintf(r.error, sizeof(r.error), "committing: %s",
			 uffdmove_target_error(t));
		goto report;
	}
	vm->ram = new_ram;	/* the paused vCPUs resume on the new RAM */
	status = run_guest_until_done(vm, t, &r, 0);
	if (status != 3) {	/* else a thread is stuck: just exit */
		pthread_join(stid, NULL);
		joined = true;
	}
	if (joined && src.ret && !r.error[0])
		snprintf(r.error, sizeof(r.error), "source: %s", src.error);
	if (!o->json && r.resume_ns)
		say("VMM: guest resumed on the new mapping %.3f ms after the pause; handoff %s",
		    (double)(r.resume_ns - r.pause_ns) / 1e6,
		    r.done ? "complete" : "FAILED");
report:
	print_report(&r);
	if (status == 3 || !joined) {
		fflush(NULL);
		_exit(1);
	}
	uffdmove_target_free(t);
	uffdmove_source_free(src.s);
	if (sv[0] >= 0)
		close(sv[0]);
	if (sv[1] >= 0)
		close(sv[1]);
	if (vm_destroy(vm) == 0) {
		if (old_ram)
			munmap(old_ram, o->mem);
		if (new_ram)
			munmap(new_ram, o->mem);
	}
	return r.verified && !src.ret ? 0 : 1;
}

/* ---------------------------------------------------------- supervisor */

/*
 * Fork the old VMM and stay around as a child subreaper: the new VMM,
 * its child, becomes ours when the old VMM exits (or is killed), so the
 * shell gets the new VMM's exit status and all of its output.
 */
static int supervisor(const struct options *o, int argc, char **argv)
{
	int st, old_st = -1, new_st = -1;
	pid_t old, pid;

	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))
		say("warning: PR_SET_CHILD_SUBREAPER: %s; the exit status may be the old VMM's",
		    strerror(errno));
	fflush(NULL);
	old = fork();
	if (old < 0) {
		say("fork: %s", strerror(errno));
		return 1;
	}
	if (old == 0)
		exit(old_vmm(o, argc, argv));
	for (;;) {
		pid = waitpid(-1, &st, 0);
		if (pid < 0 && errno == EINTR)
			continue;
		if (pid < 0)
			break;
		if (pid == old)
			old_st = st;
		else
			new_st = st;
	}
	if (new_st != -1) {
		if (WIFEXITED(new_st))
			return WEXITSTATUS(new_st);
		say("the new VMM was killed by signal %d (%s)",
		    WTERMSIG(new_st), strsignal(WTERMSIG(new_st)));
		return 1;
	}
	if (old_st != -1 && WIFEXITED(old_st) && WEXITSTATUS(old_st))
		return WEXITSTATUS(old_st);
	return 1;
}

int main(int argc, char **argv)
{
	struct uffdmove_caps caps;
	struct options o;

	if (parse_options(argc, argv, &o)) {
		fprintf(stderr, "Try '%s --help'.\n", argv[0]);
		return 2;
	}
	/* uffdmove_probe() forks once, on its first call (the library
	 * calls it too): do it before guest RAM exists, so that the fork
	 * neither copies its page tables nor COW-shares its pages, which
	 * UFFDIO_MOVE then refuses (EBUSY). */
	uffdmove_probe(&caps);
	/* A VMM does not die of a peer that hung up. */
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (o.role == ROLE_NEW)
		return new_vmm(&o);
	if (o.same_process)
		return same_process(&o);
	return supervisor(&o, argc, argv);
}
