/* SPDX-License-Identifier: MIT */
/*
 * Kernel-test harness: skip/fail conventions, deterministic page patterns,
 * THP accounting, sockets and a watchdog. No globals: every test program
 * owns its state.
 *
 * Exit codes follow meson (and automake): 0 pass, 1 fail, 77 skip.
 */
#ifndef UFFDMOVE_TEST_HARNESS_H
#define UFFDMOVE_TEST_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "uffdmove.h"

#define T_PASS 0
#define T_FAIL 1
#define T_SKIP 77

#define T_PAGE		4096UL
#define T_HPAGE		(2UL << 20)

/*
 * Unless @cond holds, print "FAIL: file:line: msg" to stderr and return
 * T_FAIL from the calling function.
 */
#define T_CHECK(cond, fmt, ...)						\
	do {								\
		if (!(cond)) {						\
			t_fail_msg(__FILE__, __LINE__, fmt, ##__VA_ARGS__); \
			return T_FAIL;					\
		}							\
	} while (0)

/* Print "FAIL: file:line: msg" to stderr (what T_CHECK uses). */
void t_fail_msg(const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Print "SKIP: reason" and exit 77. */
_Noreturn void t_skip(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));

/* Print "FAIL: reason" to stderr and exit 1: for broken test setup. */
_Noreturn void t_die(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));

/* In a forked child: die with the parent (a child blocked on a missing
 * page must not outlive a failed test and hold its output open), and
 * have a watchdog of its own (alarms are not inherited). */
void t_child(unsigned seconds);
/* alarm(); the default SIGALRM action kills the program = failure. */
void t_watchdog(unsigned seconds);

/*
 * Anonymous private RW mapping of @len bytes whose start is 2 MiB aligned;
 * MADV_HUGEPAGE if @thp, MADV_NOHUGEPAGE otherwise. Exits 1 on failure.
 */
void *t_map(size_t len, bool thp);
void t_unmap(void *p, size_t len);

/*
 * Deterministic pattern: word @word (0..511) of page @page for @seed.
 * Word 0 of every page is non-zero, so no pattern page is all zeros.
 */
uint64_t t_word(uint64_t seed, uint64_t page, uint64_t word);
void t_fill_page(void *page, uint64_t seed, uint64_t page_index);
/* Every 4 KiB page of [p, p+len) from (seed, first_page + i). */
void t_fill(void *p, size_t len, uint64_t seed, uint64_t first_page);
/* 0 if every byte matches the pattern, else -1 and *bad_off = first
 * differing byte offset (@bad_off may be NULL). */
int t_verify(const void *p, size_t len, uint64_t seed, uint64_t first_page,
	     size_t *bad_off);
bool t_is_zero(const void *p, size_t len);

/* AnonHugePages in bytes of the VMAs overlapping [addr, addr+len), from
 * /proc/PID/smaps (@pid 0 = self). */
uint64_t t_anon_huge_bytes_range(pid_t pid, void *addr, size_t len);
/* Does the VMA holding @addr carry @flag ("hg", "nh", ...) in VmFlags? */
bool t_vma_flag(const void *addr, const char *flag);
/* Bytes of [addr, addr + len) present in this process's page tables,
 * less the zero page mapped there (which holds no memory). */
uint64_t t_resident_bytes(const void *addr, size_t len);

/* Does a thread of this process carry @name (its comm)? */
bool t_thread_named(const char *name);

/* This process's pagemap entry for @addr (PM_* bits); exits 1 on error. */
uint64_t t_pagemap(const void *addr);
#define T_PM_PRESENT	(1ULL << 63)
#define T_PM_SWAPPED	(1ULL << 62)
#define T_PM_EXCLUSIVE	(1ULL << 56)

/* socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC); 0 or -errno. */
int t_seqpacket_pair(int sv[2]);
/*
 * A seqpacket pair and a fork, for a peer in a child process. The child
 * (0 returned) keeps sv[1], dies with the parent and has a watchdog of
 * @watchdog_s seconds; the parent (the child's pid returned) keeps sv[0].
 * Exits 1 if the pair or the fork fails.
 */
pid_t t_fork_peer(int sv[2], unsigned int watchdog_s);
/* Entries in /proc/self/fd (not counting the one used to read it). */
int t_count_fds(void);
/* CLOCK_MONOTONIC, for how long a call took. */
uint64_t t_now_ns(void);
uint64_t t_now_ms(void);
/* Lines of /proc/self/maps: the number of VMAs. */
int t_count_maps(void);

/*
 * waitpid(@pid, &status, __WALL), retried on EINTR; the status, or exits 1
 * if there is no such child.
 */
int t_wait(pid_t pid);

/* Skip, with the reason, unless uffdmove_probe() says userfaultfd works. */
void t_require_uffd(const struct uffdmove_caps *caps);
/* Skip unless the kernel offers UFFD_FEATURE_MOVE (implies userfaultfd). */
void t_require_move(const struct uffdmove_caps *caps);
/* Skip unless kernel-mode faults can be caught. */
void t_require_kernel_faults(const struct uffdmove_caps *caps);
/* uffdmove_probe() or exit 1. */
void t_probe(struct uffdmove_caps *caps);

/*
 * Selftest-style case tables. A case returns T_PASS, T_FAIL, or T_SKIP
 * through t_case_skip(), which records why.
 */
struct t_ctx {
	const struct uffdmove_caps *caps;
	void *priv;		/* the program's own state */
	char why[256];		/* set by t_case_skip() */
};

struct t_case {
	const char *name;
	int (*fn)(struct t_ctx *ctx);
};

/* Record why the case skips; returns T_SKIP. */
int t_case_skip(struct t_ctx *ctx, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/*
 * Run @n cases, one stdout line each: "ok <name>", "FAIL <name>" or
 * "SKIP <name>: <why>". Returns the exit code: T_FAIL if any failed,
 * T_SKIP if every case skipped, else T_PASS.
 */
int t_run_cases(const struct t_case *cases, size_t n, struct t_ctx *ctx);

#define T_ARRAY_SIZE(a)	(sizeof(a) / sizeof((a)[0]))

/* What every case of a program needs; t_main() skips the program without. */
#define T_NEED_UFFD		(1u << 0)
#define T_NEED_MOVE		(1u << 1)	/* implies T_NEED_UFFD */
#define T_NEED_KERNEL_FAULTS	(1u << 2)	/* implies T_NEED_UFFD */

/*
 * The main() of a case-table program: stdout line-buffered (a forked child
 * must not inherit unwritten lines), a watchdog of @watchdog_s seconds,
 * uffdmove_probe(), a skip (77) unless the kernel has all of @needs, then
 * t_run_cases() with @priv in the context. Returns the exit code.
 */
int t_main(const struct t_case *cases, size_t n, unsigned int watchdog_s,
	   unsigned int needs, void *priv);

#endif /* UFFDMOVE_TEST_HARNESS_H */
