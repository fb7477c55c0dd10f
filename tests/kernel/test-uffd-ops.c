// SPDX-License-Identifier: MIT
/*
 * Every wrapper in src/uffd.c against the real kernel, in one process:
 * the bytes that arrive, the state the source is left in, and the errnos
 * the rest of the library relies on (EEXIST, ENOENT, EINVAL).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "uffd.h"

#define SEED 0x75666664ULL	/* "uffd" */

/* A uffd with @features negotiated; exits 1 if that fails. */
static int open_uffd(uint64_t features)
{
	int fd, ret;

	fd = uffd_open(O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	if (fd < 0)
		t_die("uffd_open: %s", strerror(-fd));
	ret = uffd_api(fd, features, NULL, NULL);
	if (ret)
		t_die("uffd_api(0x%llx): %s", (unsigned long long)features,
		      strerror(-ret));
	return fd;
}

/* What most cases work on: a uffd, a source and a destination mapping. */
struct pair {
	int fd;
	char *src, *dst;
	size_t src_len, dst_len;
};

/*
 * A uffd with @features and fresh, untouched mappings (no source when
 * @src_len is 0); exits 1 if any of it fails.
 */
static void pair_open(struct pair *p, uint64_t features, size_t src_len,
		      size_t dst_len, bool thp)
{
	p->fd = open_uffd(features);
	p->src_len = src_len;
	p->dst_len = dst_len;
	p->src = src_len ? t_map(src_len, thp) : NULL;
	p->dst = t_map(dst_len, thp);
}

/* All of dst registered for missing-page faults; exits 1 if that fails. */
static void pair_register(const struct pair *p)
{
	int ret = uffd_register(p->fd, p->dst, p->dst_len,
				UFFDIO_REGISTER_MODE_MISSING, NULL);

	if (ret)
		t_die("uffd_register of %zu bytes: %s", p->dst_len,
		      strerror(-ret));
}

static void pair_close(struct pair *p)
{
	close(p->fd);
	t_unmap(p->src, p->src_len);
	t_unmap(p->dst, p->dst_len);
}

static bool present(const void *addr)
{
	return t_pagemap(addr) & T_PM_PRESENT;
}

static int test_open_api_register(struct t_ctx *ctx)
{
	uint64_t features = 0, ioctls = 0, range_ioctls = 0;
	const uint64_t want_range = 1ULL << _UFFDIO_COPY |
				    1ULL << _UFFDIO_ZEROPAGE |
				    1ULL << _UFFDIO_WAKE;
	const uint64_t want_api = 1ULL << _UFFDIO_API |
				  1ULL << _UFFDIO_REGISTER |
				  1ULL << _UFFDIO_UNREGISTER;
	void *dst;
	int fd, ret;

	fd = uffd_open(O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	T_CHECK(fd >= 0, "uffd_open: %s", strerror(-fd));
	T_CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC, "uffd is not O_CLOEXEC");
	T_CHECK(fcntl(fd, F_GETFL) & O_NONBLOCK, "uffd is not O_NONBLOCK");

	ret = uffd_api(fd, 0, &features, &ioctls);
	T_CHECK(ret == 0, "uffd_api: %s", strerror(-ret));
	T_CHECK(features == ctx->caps->uffd_features,
		"features 0x%llx, probe said 0x%llx",
		(unsigned long long)features,
		(unsigned long long)ctx->caps->uffd_features);
	T_CHECK((ioctls & want_api) == want_api, "api ioctls 0x%llx",
		(unsigned long long)ioctls);
	/* once per fd: what a receiver of a passed uffd runs into */
	ret = uffd_api(fd, 0, NULL, NULL);
	T_CHECK(ret == -EINVAL, "second UFFDIO_API: %d, want -EINVAL", ret);

	dst = t_map(4 * T_PAGE, false);
	ret = uffd_register(fd, dst, 4 * T_PAGE, UFFDIO_REGISTER_MODE_MISSING,
			    &range_ioctls);
	T_CHECK(ret == 0, "uffd_register: %s", strerror(-ret));
	T_CHECK((range_ioctls & want_range) == want_range,
		"range ioctls 0x%llx lack COPY/ZEROPAGE/WAKE",
		(unsigned long long)range_ioctls);
	/* unaligned ranges are the caller's bug */
	ret = uffd_register(fd, (char *)dst + 1, T_PAGE,
			    UFFDIO_REGISTER_MODE_MISSING, NULL);
	T_CHECK(ret == -EINVAL, "unaligned register: %d, want -EINVAL", ret);

	close(fd);
	t_unmap(dst, 4 * T_PAGE);
	return T_PASS;
}

static int test_copy_4k(struct t_ctx *ctx)
{
	size_t done = 1, bad = 0;
	struct pair p;
	int ret;

	pair_open(&p, 0, T_PAGE, 2 * T_PAGE, false);
	t_fill(p.src, T_PAGE, SEED, 7);
	pair_register(&p);

	ret = uffd_copy(p.fd, (uintptr_t)p.dst, p.src, T_PAGE, 0, &done);
	T_CHECK(ret == 0, "uffd_copy: %s", strerror(-ret));
	T_CHECK(done == T_PAGE, "done %zu", done);
	T_CHECK(t_verify(p.dst, T_PAGE, SEED, 7, &bad) == 0,
		"copied page differs at byte %zu", bad);
	/* COPY leaves the source intact, and fills only what it was asked */
	T_CHECK(t_verify(p.src, T_PAGE, SEED, 7, &bad) == 0,
		"source changed at byte %zu", bad);
	T_CHECK(!present(p.dst + T_PAGE), "neighbour page became present");

	/* an unmapped source: EFAULT, nothing done */
	ret = uffd_copy(p.fd, (uintptr_t)p.dst + T_PAGE, (void *)8, T_PAGE, 0,
			&done);
	T_CHECK(ret == -EFAULT, "copy from NULL page: %d, want -EFAULT", ret);
	T_CHECK(done == 0, "done %zu after EFAULT", done);

	pair_close(&p);
	return T_PASS;
}

static int test_zeropage(struct t_ctx *ctx)
{
	size_t done = 1;
	struct pair p;
	int ret;

	pair_open(&p, 0, 0, 2 * T_PAGE, false);
	pair_register(&p);

	ret = uffd_zeropage(p.fd, (uintptr_t)p.dst, T_PAGE, &done);
	T_CHECK(ret == 0, "uffd_zeropage: %s", strerror(-ret));
	T_CHECK(done == T_PAGE, "done %zu", done);
	T_CHECK(present(p.dst), "zeropage'd page is not present");
	/* would block forever (watchdog) if the page were still missing */
	T_CHECK(t_is_zero(p.dst, T_PAGE), "zeropage'd page is not zero");
	T_CHECK(!present(p.dst + T_PAGE), "neighbour page became present");

	/* ZEROPAGE onto a present page */
	ret = uffd_zeropage(p.fd, (uintptr_t)p.dst, T_PAGE, &done);
	T_CHECK(ret == -EEXIST, "second zeropage: %d, want -EEXIST", ret);
	T_CHECK(done == 0, "done %zu after EEXIST", done);

	pair_close(&p);
	return T_PASS;
}

static int test_copy_eexist(struct t_ctx *ctx)
{
	size_t done = 1, bad = 0;
	struct pair p;
	int ret;

	pair_open(&p, 0, T_PAGE, T_PAGE, false);
	t_fill(p.src, T_PAGE, SEED, 1);
	t_fill(p.dst, T_PAGE, SEED, 2);	/* present before registering */
	pair_register(&p);

	ret = uffd_copy(p.fd, (uintptr_t)p.dst, p.src, T_PAGE, 0, &done);
	T_CHECK(ret == -EEXIST, "copy onto present page: %d, want -EEXIST",
		ret);
	T_CHECK(done == 0, "done %zu after EEXIST", done);
	T_CHECK(t_verify(p.dst, T_PAGE, SEED, 2, &bad) == 0,
		"present page overwritten at byte %zu", bad);

	pair_close(&p);
	return T_PASS;
}

static int test_move_4k(struct t_ctx *ctx)
{
	size_t done = 0, bad = 0;
	struct pair p;
	int ret;

	if (!ctx->caps->move)
		return t_case_skip(ctx, "kernel offers no UFFD_FEATURE_MOVE");
	pair_open(&p, UFFD_FEATURE_MOVE, T_PAGE, T_PAGE, false);
	t_fill(p.src, T_PAGE, SEED, 3);
	T_CHECK(t_pagemap(p.src) & T_PM_EXCLUSIVE, "fresh page not exclusive");
	pair_register(&p);

	ret = uffd_move(p.fd, (uintptr_t)p.dst, (uintptr_t)p.src, T_PAGE, 0,
			&done);
	T_CHECK(ret == 0, "uffd_move: %s", strerror(-ret));
	T_CHECK(done == T_PAGE, "done %zu", done);
	/* the source is a hole now: bit 63 clear before anything reads it */
	T_CHECK(!present(p.src), "source still present after MOVE");
	T_CHECK(t_verify(p.dst, T_PAGE, SEED, 3, &bad) == 0,
		"moved page differs at byte %zu", bad);
	/* the hole refaults as a fresh zero page (src is not registered) */
	T_CHECK(t_is_zero(p.src, T_PAGE), "source hole does not read zero");

	/* moving again onto the now present destination */
	t_fill(p.src, T_PAGE, SEED, 4);
	ret = uffd_move(p.fd, (uintptr_t)p.dst, (uintptr_t)p.src, T_PAGE, 0,
			&done);
	T_CHECK(ret == -EEXIST, "move onto present page: %d, want -EEXIST",
		ret);
	T_CHECK(done == 0, "done %zu after EEXIST", done);
	T_CHECK(t_verify(p.src, T_PAGE, SEED, 4, &bad) == 0,
		"source changed by a refused MOVE at byte %zu", bad);

	pair_close(&p);
	return T_PASS;
}

static const char *thp_name(uint32_t mode)
{
	switch (mode) {
	case UFFDMOVE_THP_NEVER:
		return "never";
	case UFFDMOVE_THP_MADVISE:
		return "madvise";
	case UFFDMOVE_THP_ALWAYS:
		return "always";
	default:
		return "unknown";
	}
}

static int test_move_thp(struct t_ctx *ctx)
{
	uint64_t huge;
	size_t done = 0, bad = 0;
	struct pair p;
	int ret;

	if (!ctx->caps->move)
		return t_case_skip(ctx, "kernel offers no UFFD_FEATURE_MOVE");
	pair_open(&p, UFFD_FEATURE_MOVE, T_HPAGE, T_HPAGE, true);
	t_fill(p.src, T_HPAGE, SEED, 100);
	huge = t_anon_huge_bytes_range(0, p.src, T_HPAGE);
	if (huge < T_HPAGE) {
		pair_close(&p);
		return t_case_skip(ctx, "source did not get a THP "
				   "(AnonHugePages %llu kB, THP mode %s)",
				   (unsigned long long)huge / 1024,
				   thp_name(ctx->caps->thp_mode));
	}
	pair_register(&p);

	ret = uffd_move(p.fd, (uintptr_t)p.dst, (uintptr_t)p.src, T_HPAGE, 0,
			&done);
	T_CHECK(ret == 0, "uffd_move 2 MiB: %s", strerror(-ret));
	T_CHECK(done == T_HPAGE, "done %zu", done);
	T_CHECK(!present(p.src) && !present(p.src + T_HPAGE - T_PAGE),
		"source still present after MOVE");
	/* moved as one PMD: the huge page arrived whole */
	huge = t_anon_huge_bytes_range(0, p.dst, T_HPAGE);
	T_CHECK(huge >= T_HPAGE, "target AnonHugePages %llu kB after MOVE",
		(unsigned long long)huge / 1024);
	T_CHECK(t_verify(p.dst, T_HPAGE, SEED, 100, &bad) == 0,
		"moved THP differs at byte %zu", bad);

	pair_close(&p);
	return T_PASS;
}

static int test_move_enoent(struct t_ctx *ctx)
{
	size_t done = 1;
	struct pair p;
	int ret;

	if (!ctx->caps->move)
		return t_case_skip(ctx, "kernel offers no UFFD_FEATURE_MOVE");
	/* the source is never touched: a hole */
	pair_open(&p, UFFD_FEATURE_MOVE, T_PAGE, T_PAGE, false);
	pair_register(&p);

	ret = uffd_move(p.fd, (uintptr_t)p.dst, (uintptr_t)p.src, T_PAGE, 0,
			&done);
	T_CHECK(ret == -ENOENT, "move of a hole: %d, want -ENOENT", ret);
	T_CHECK(done == 0, "done %zu after ENOENT", done);
	T_CHECK(!present(p.dst), "destination became present");

	pair_close(&p);
	return T_PASS;
}

static int test_move_src_holes(struct t_ctx *ctx)
{
	size_t done = 0, bad = 0;
	struct pair p;
	int ret;

	if (!ctx->caps->move)
		return t_case_skip(ctx, "kernel offers no UFFD_FEATURE_MOVE");
	pair_open(&p, UFFD_FEATURE_MOVE, 2 * T_PAGE, 2 * T_PAGE, false);
	t_fill(p.src, T_PAGE, SEED, 5);	/* page 1 stays a hole */
	T_CHECK(!present(p.src + T_PAGE), "hole page is present");
	pair_register(&p);

	ret = uffd_move(p.fd, (uintptr_t)p.dst, (uintptr_t)p.src, 2 * T_PAGE,
			UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES, &done);
	T_CHECK(ret == 0, "move with ALLOW_SRC_HOLES: %s", strerror(-ret));
	T_CHECK(done == 2 * T_PAGE, "done %zu", done);
	T_CHECK(!present(p.src), "source page still present");
	T_CHECK(present(p.dst), "moved page not present in the destination");
	/* the hole stays missing: a later fault still reaches the handler */
	T_CHECK(!present(p.dst + T_PAGE), "hole became present in the target");
	T_CHECK(t_verify(p.dst, T_PAGE, SEED, 5, &bad) == 0,
		"moved page differs at byte %zu", bad);

	pair_close(&p);
	return T_PASS;
}

static int test_poison(struct t_ctx *ctx)
{
	struct rlimit no_core = { 0, 0 };
	size_t done = 0;
	int ret, status;
	struct pair p;
	pid_t pid;

	if (!ctx->caps->poison)
		return t_case_skip(ctx,
				   "kernel offers no UFFD_FEATURE_POISON");
	pair_open(&p, UFFD_FEATURE_POISON, 0, 2 * T_PAGE, false);
	pair_register(&p);

	ret = uffd_poison(p.fd, (uintptr_t)p.dst, T_PAGE, &done);
	T_CHECK(ret == 0, "uffd_poison: %s", strerror(-ret));
	T_CHECK(done == T_PAGE, "done %zu", done);

	fflush(NULL);
	pid = fork();
	T_CHECK(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		setrlimit(RLIMIT_CORE, &no_core);
		/* sanitizers catch SIGBUS and exit 1: die of it instead */
		signal(SIGBUS, SIG_DFL);
		(void)*(volatile char *)p.dst;
		_exit(0);	/* reached only if the touch did not SIGBUS */
	}
	status = t_wait(pid);
	T_CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS,
		"child touching the poisoned page: status 0x%x, want SIGBUS",
		status);

	/* POISON only fills missing pages */
	ret = uffd_poison(p.fd, (uintptr_t)p.dst, T_PAGE, &done);
	T_CHECK(ret == -EEXIST, "second poison: %d, want -EEXIST", ret);

	pair_close(&p);
	return T_PASS;
}

struct waker {
	const volatile uint64_t *addr;
	uint64_t seen;
	atomic_bool done;
};

static void *fault_thread(void *arg)
{
	struct waker *w = arg;

	w->seen = *w->addr;	/* blocks until the page arrives and wakes */
	atomic_store(&w->done, true);
	return NULL;
}

static int test_wake(struct t_ctx *ctx)
{
	struct timespec pause = { 0, 50 * 1000 * 1000 }, deadline;
	struct waker w = { 0 };
	struct uffd_msg msg;
	struct pollfd pfd;
	size_t done = 0, bad = 0;
	struct pair p;
	pthread_t th;
	int ret;
	ssize_t n;

	pair_open(&p, 0, T_PAGE, T_PAGE, false);
	t_fill(p.src, T_PAGE, SEED, 6);
	pair_register(&p);

	w.addr = (const volatile uint64_t *)p.dst;
	ret = pthread_create(&th, NULL, fault_thread, &w);
	T_CHECK(ret == 0, "pthread_create: %s", strerror(ret));

	pfd = (struct pollfd){ .fd = p.fd, .events = POLLIN };
	ret = poll(&pfd, 1, 5000);
	T_CHECK(ret == 1 && (pfd.revents & POLLIN), "no fault event");
	n = read(p.fd, &msg, sizeof(msg));
	T_CHECK(n == (ssize_t)sizeof(msg), "read uffd_msg: %zd", n);
	T_CHECK(msg.event == UFFD_EVENT_PAGEFAULT &&
		msg.arg.pagefault.address == (uintptr_t)p.dst,
		"event %u at 0x%llx, want a fault at %p", msg.event,
		(unsigned long long)msg.arg.pagefault.address, (void *)p.dst);

	/* resolve without waking: the thread must stay asleep */
	ret = uffd_copy(p.fd, (uintptr_t)p.dst, p.src, T_PAGE,
			UFFDIO_COPY_MODE_DONTWAKE, &done);
	T_CHECK(ret == 0, "uffd_copy DONTWAKE: %s", strerror(-ret));
	nanosleep(&pause, NULL);
	T_CHECK(!atomic_load(&w.done), "thread ran without UFFDIO_WAKE");

	ret = uffd_wake(p.fd, (uintptr_t)p.dst, T_PAGE);
	T_CHECK(ret == 0, "uffd_wake: %s", strerror(-ret));
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += 5;
	ret = pthread_timedjoin_np(th, NULL, &deadline);
	T_CHECK(ret == 0, "faulting thread not woken: %s", strerror(ret));
	T_CHECK(atomic_load(&w.done), "thread not done after join");
	T_CHECK(w.seen == t_word(SEED, 6, 0), "thread read 0x%llx",
		(unsigned long long)w.seen);
	T_CHECK(t_verify(p.dst, T_PAGE, SEED, 6, &bad) == 0,
		"page differs at byte %zu", bad);

	pair_close(&p);
	return T_PASS;
}

static int test_unregister(struct t_ctx *ctx)
{
	size_t done = 1;
	struct pair p;
	int ret;

	pair_open(&p, 0, T_PAGE, 2 * T_PAGE, false);
	t_fill(p.src, T_PAGE, SEED, 8);
	pair_register(&p);

	ret = uffd_unregister(p.fd, p.dst, 2 * T_PAGE);
	T_CHECK(ret == 0, "uffd_unregister: %s", strerror(-ret));
	/* no longer ours: the kernel refuses to fill it */
	ret = uffd_copy(p.fd, (uintptr_t)p.dst, p.src, T_PAGE, 0, &done);
	T_CHECK(ret == -ENOENT, "copy after unregister: %d, want -ENOENT",
		ret);
	T_CHECK(done == 0, "done %zu after ENOENT", done);
	/* and a touch zero-fills instead of blocking (watchdog otherwise) */
	T_CHECK(t_is_zero(p.dst, 2 * T_PAGE), "unregistered range not zero");
	T_CHECK(present(p.dst), "touched page not present");

	pair_close(&p);
	return T_PASS;
}

static const struct t_case cases[] = {
	{ "open-api-register", test_open_api_register },
	{ "copy-4k", test_copy_4k },
	{ "zeropage", test_zeropage },
	{ "copy-eexist", test_copy_eexist },
	{ "move-4k", test_move_4k },
	{ "move-thp", test_move_thp },
	{ "move-enoent", test_move_enoent },
	{ "move-src-holes", test_move_src_holes },
	{ "poison-sigbus", test_poison },
	{ "wake", test_wake },
	{ "unregister", test_unregister },
};

int main(void)
{
	return t_main(cases, T_ARRAY_SIZE(cases), 50, T_NEED_UFFD, NULL);
}
