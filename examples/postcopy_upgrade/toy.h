// SPDX-License-Identifier: MIT
/*
 * postcopy_upgrade's private header: the options, the simulated guest,
 * the report the new VMM prints, and the calls between this folder's
 * files. Include it first: it sets _GNU_SOURCE for what follows.
 */
#ifndef POSTCOPY_UPGRADE_TOY_H
#define POSTCOPY_UPGRADE_TOY_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include <uffdmove.h>

#define PAGE		4096UL
#define HPAGE		(2UL << 20)
#define MAX_VCPUS	64
#define MAX_AGENTS	(MAX_VCPUS + 1)	/* vCPUs + the I/O thread */
#define STOP_TIMEOUT_MS	1000
#define HOT_BYTES	(64ULL << 20)	/* a guest thread's working set */
#define HOT_SHARE	90	/* percent of its accesses that stay in it */
#define HOT_OPS		50000	/* accesses before the working set moves */

#define LOAD(x)		__atomic_load_n(&(x), __ATOMIC_ACQUIRE)
#define STORE(x, v)	__atomic_store_n(&(x), (v), __ATOMIC_RELEASE)
#define INC(x)		__atomic_fetch_add(&(x), 1, __ATOMIC_RELAXED)

static inline uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* splitmix64's finaliser: good enough to make every page unique. */
static inline uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* ------------------------------------------------------------ options.c */

enum role { ROLE_MAIN, ROLE_NEW };

struct options {
	uint64_t mem;
	unsigned int vcpus;
	bool thp;
	unsigned int populate;	/* percent */
	uint32_t mode;		/* enum uffdmove_mode */
	unsigned int threads;	/* mover threads; 0: library default */
	uint32_t pull;		/* UFFDMOVE_PULL_*, both VMMs */
	uint32_t fault_policy;	/* pulling: UFFDMOVE_FAULT_* */
	bool paused;		/* the guest waits for all of its RAM */
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

extern const char *const mode_names[];

int parse_options(int argc, char **argv, struct options *o);

/* ------------------------------------------- guest.c, vcpu.c, pattern.c */

/* The first thing a guest thread found wrong; the rest are not kept. */
struct failure {
	pthread_mutex_t lock;
	bool set;
	uintptr_t addr;
	char why[400];
};

enum vm_state { VM_RUN, VM_PAUSE, VM_STOP };

struct vm;

/* A guest thread: a vCPU, or the I/O thread. */
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

struct verify_result {
	uint64_t checked;	/* bytes */
	uint64_t missing;	/* bytes not present (only_present) */
	bool ok;
};

/* guest.c: the guest's life cycle */
struct vm *vm_alloc(const struct options *o, uint8_t **ram);
int vm_init(struct vm *vm, const struct options *o, uint8_t *ram,
	    int ver_fd);
int vm_boot(struct vm *vm, const struct options *o, uint8_t *ram,
	    const char *who, uint64_t *populated, const char **what);
int vm_start(struct vm *vm, uint64_t generation);
uint64_t vm_pause(struct vm *vm);
void vm_resume(struct vm *vm, uint8_t *ram);
unsigned int vm_stop(struct vm *vm, unsigned int timeout_ms);
void vm_counters(const struct vm *vm, uint64_t *reads, uint64_t *writes,
		 uint64_t *io);
int vm_destroy(struct vm *vm);
void vm_release(struct vm *vm, uint8_t *ram, uint8_t *ram2, uint64_t size);
uintptr_t vm_poison_hit(const struct vm *vm, unsigned int *n);

/* vcpu.c: what the guest threads do */
void *agent_main(void *arg);
int catch_poison(const struct options *o);

/* pattern.c: what every guest page holds, and the checks */
uint64_t page_base(uint64_t seed, uint64_t p, uint32_t v);
void fill_page(void *page, uint64_t base);
long check_page(const void *page, uint64_t seed, uint64_t p, uint32_t v);
void failure_set(struct failure *f, uintptr_t addr, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void report_bad_page(struct failure *f, const char *who,
		     const uint8_t *page, uint64_t p, long word,
		     uint64_t seed, uint32_t v);
int vm_verify(struct vm *vm, bool only_present, struct verify_result *res);

/* ram.c: guest RAM as host memory */
uint8_t *map_guest_ram(uint64_t size, bool thp);
int handoff_end_new(const struct options *o, uint8_t *ram,
		    struct uffdmove_source **s, struct uffdmove_target **t);
int range_usage(const void *addr, uint64_t len, uint64_t *rss,
		uint64_t *huge);

/* ------------------------------------------------------------- proto.c */

/* Old -> new, with the version table's memfd, at the pause. */
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

int send_ready(int sock, uint64_t mem);
int recv_ready(int sock, uint64_t mem, pid_t *pid);
void state_init(struct msg_state *m, const struct options *o);
int send_state(int sock, const struct msg_state *m, int ver_fd);
int recv_state(int sock, const struct options *o, struct msg_state *m,
	       int *ver_fd);

/* ------------------------------------------------------------ report.c */

/* What the new VMM (or the one VMM of --same-process) reports. */
struct report {
	const struct options *o;
	bool same_process, handoff_started, done;
	uint64_t populated;
	uint64_t pause_ns, resume_ns, done_ns;
	struct uffdmove_stats st;
	bool have_stats;
	uint64_t rss_before, huge_before;
	uint64_t rss_done, huge_done;		/* when every byte was in */
	uint64_t rss_after, huge_after;		/* after THP came back */
	uint64_t peak_host;			/* both VMMs, see memwatch.c */
	uint64_t reads, writes, io_ops;		/* during the handoff */
	bool verified;
	uint64_t verified_bytes, checked_bytes, missing_bytes;
	uintptr_t bad_addr;
	char error[1024];
};

/* memwatch.c: peak resident memory of this VMM and @other together. */
struct memwatch {
	pthread_t tid;
	pid_t other;		/* the old VMM, 0 if it is us */
	bool running, stop;
	uint64_t peak;
};

void memwatch_start(struct memwatch *w, pid_t other);
uint64_t memwatch_stop(struct memwatch *w);

struct progress {
	bool tty, shown;
	uint64_t total;		/* populated bytes */
	uint64_t t0, next, last_t, last_bytes;
};

void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *fmt_bytes(char *buf, size_t len, uint64_t n);
void report_error(struct report *r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void report_append(struct report *r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void print_report(const struct report *r);
void progress_init(struct progress *pr, uint64_t total);
void progress_update(struct progress *pr, const struct uffdmove_stats *st);
void progress_end(struct progress *pr);

/* ------------------------------------------------------------- the roles */

/* old_vmm.c, new_vmm.c, same_process.c; postcopy.c is the target's side
 * that the last two share. */

int old_vmm(const struct options *o, int argc, char **argv);
int new_vmm(const struct options *o);
int commit(struct uffdmove_target *t, struct report *r);
void abandon_guest(void) __attribute__((noreturn));
int run_guest_until_done(struct vm *vm, struct uffdmove_target *t,
			 struct report *r, uint64_t gen);
int same_process(const struct options *o);

#endif
