// SPDX-License-Identifier: MIT
/*
 * Cross-process handoff, the library's main job: a forked target (new VMM)
 * runs guest threads that read and write guest RAM while it streams in;
 * kernel-mode faults (read/write syscalls into missing pages) ride along.
 * Both ways are run: the target pulls (the default where it may read the
 * source: one copy, THP kept, the source frees what arrived), and the
 * source pushes through the target's uffd (COPY, its memory intact).
 * Every byte is checked in the target at the end.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "guest.h"
#include "harness.h"

static struct guest layout(void)
{
	struct guest g = {
		.n = 3,
		.spec = {
			{ "ram0", 256UL << 20, false, 0 },
			{ "ram-thp", 64UL << 20, true, 0 },
			{ "rom", (8UL << 20) - T_PAGE, false, 3 * T_PAGE },
		},
		.seed = 0x1234,
		.hole_pct = 30,
	};
	return g;
}

/*
 * Kernel-mode faults: the kernel itself touches missing pages. write()
 * from one reads guest RAM; read() into another writes the bytes that page
 * must hold anyway, so the final check covers it too.
 */
static int syscall_faults(struct guest *g, char *why, size_t len)
{
	const size_t rom_page = 17, off = 64;
	uint8_t *src = g->addr[0] + 1000 * T_PAGE + 123;
	uint8_t *dst = g->addr[2] + rom_page * T_PAGE + off;
	uint64_t buf[64], want[64], i;
	int p[2], ret = -1;

	if (pipe(p))
		return -1;
	if (write(p[1], src, sizeof(buf)) != (ssize_t)sizeof(buf) ||
	    read(p[0], buf, sizeof(buf)) != (ssize_t)sizeof(buf)) {
		snprintf(why, len, "pipe I/O: %s", strerror(errno));
		goto out;
	}
	if (memcmp(buf, src, sizeof(buf))) {
		snprintf(why, len, "write() from a missing page saw other bytes than a load");
		goto out;
	}
	for (i = 0; i < 64; i++)
		want[i] = guest_is_hole(g, 2, rom_page) ? 0 :
			  t_word(g->seed, (uint64_t)2 << 40 | rom_page,
				 off / 8 + i);
	if (write(p[1], want, sizeof(want)) != (ssize_t)sizeof(want) ||
	    read(p[0], dst, sizeof(want)) != (ssize_t)sizeof(want)) {
		snprintf(why, len, "read() into a missing page: %s",
			 strerror(errno));
		goto out;
	}
	ret = memcmp(dst, want, sizeof(want)) ? -1 : 0;
	if (ret)
		snprintf(why, len, "read() into a missing page lost the data");
out:
	close(p[0]);
	close(p[1]);
	return ret;
}

/*
 * Pulled: one copy into staging and a MOVE, so a THP chunk arrives whole
 * unless a fault copied a page of it first; those are collapsed after
 * DONE, like copied ones (see wait_collapse()).
 */
static int check_pulled(const struct guest *g, const struct uffdmove_stats *st)
{
	uint64_t huge;

	if (st->primitive != UFFDMOVE_PRIM_PULL || st->pull_unused_reason) {
		fprintf(stderr, "FAIL: primitive %u, pull_unused_reason %u\n",
			st->primitive, st->pull_unused_reason);
		return 1;
	}
	if (st->bytes_pulled < st->bytes_populated ||
	    st->bytes_moved + st->bytes_copied < st->bytes_populated) {
		fprintf(stderr, "FAIL: pulled %" PRIu64 ", in place %" PRIu64
			" of %" PRIu64 " populated\n", st->bytes_pulled,
			st->bytes_moved + st->bytes_copied,
			st->bytes_populated);
		return 1;
	}
	huge = t_anon_huge_bytes_range(0, g->addr[1], g->spec[1].len);
	if (huge < g->spec[1].len * 99 / 100) {
		fprintf(stderr, "FAIL: THP region %" PRIu64 " KiB huge; %" PRIu64
			" chunks whole, %" PRIu64 " in small pages, %" PRIu64
			" collapsed\n", huge >> 10, st->thp_moved,
			st->thp_copied, st->thp_collapsed);
		return 1;
	}
	return 0;
}

/* THP chunks that arrived as small pages are collapsed after DONE, in
 * the library's own thread: give it a few seconds. */
static void wait_collapse(struct uffdmove_target *t, struct uffdmove_stats *st)
{
	int i;

	uffdmove_target_stats(t, st);
	for (i = 0; i < 500 && st->thp_collapsed < st->thp_copied; i++) {
		usleep(10000);
		uffdmove_target_stats(t, st);
	}
}

static int target_main(int sock, bool pull)
{
	struct guest g = layout();
	struct uffdmove_region regions[GUEST_REGIONS_MAX];
	struct uffdmove_target *t;
	struct guest_workers w;
	struct uffdmove_stats st;
	char why[256] = "";
	int ret;

	guest_map(&g);
	guest_regions(&g, regions);
	ret = uffdmove_target_new(&t, regions, g.n, NULL);
	if (ret) {
		fprintf(stderr, "target_new: %s\n", strerror(-ret));
		return 1;
	}
	ret = uffdmove_target_handoff(t, sock);
	if (ret) {
		fprintf(stderr, "handoff: %s\n", uffdmove_target_error(t));
		return 1;
	}
	ret = uffdmove_target_process(t);	/* commit: the guest runs */
	guest_workers_start(&w, &g, 4);
	if (syscall_faults(&g, why, sizeof(why))) {
		fprintf(stderr, "FAIL: kernel-mode faults: %s\n", why);
		return 1;
	}
	ret = uffdmove_target_wait(t, 60000);
	if (guest_workers_stop(&w)) {
		fprintf(stderr, "FAIL: %s\n", w.why);
		return 1;
	}
	if (ret) {
		fprintf(stderr, "FAIL: wait: %s\n", uffdmove_target_error(t));
		return 1;
	}
	if (guest_verify(&g, why, sizeof(why))) {
		fprintf(stderr, "FAIL: after the handoff: %s\n", why);
		return 1;
	}
	wait_collapse(t, &st);
	if (pull && check_pulled(&g, &st))
		return 1;
	printf("target: %" PRIu64 " reads and %" PRIu64 " writes during the handoff, %" PRIu64 " THP collapsed, AnonHugePages %" PRIu64 " KiB\n",
	       w.reads, w.writes, st.thp_collapsed,
	       t_anon_huge_bytes_range(0, g.addr[1], g.spec[1].len) >> 10);
	if (t_anon_huge_bytes_range(0, g.addr[1], g.spec[1].len) <
	    g.spec[1].len * 95 / 100 && st.thp_copied) {
		fprintf(stderr, "FAIL: THP region lost its huge pages\n");
		return 1;
	}
	uffdmove_target_free(t);
	fflush(stdout);		/* the child leaves with _exit() */
	return 0;
}

/* The source's stats of a pushed (COPY) session. */
static int check_pushed(struct t_ctx *ctx, struct guest *g,
			const struct uffdmove_stats *st, uint64_t before)
{
	T_CHECK(st->primitive == UFFDMOVE_PRIM_COPY, "primitive %u",
		st->primitive);
	T_CHECK(st->pull_unused_reason == UFFDMOVE_PULL_WHY_OFF_SOURCE,
		"pull_unused_reason %u", st->pull_unused_reason);
	if (!ctx->caps->cross_process_move)
		T_CHECK(st->bytes_moved == 0 &&
			st->move_unused_reason == (ctx->caps->move ?
						   UFFDMOVE_WHY_CROSS_MM :
						   UFFDMOVE_WHY_NO_FEATURE),
			"cross-process session says why it copied (%u)",
			st->move_unused_reason);
	T_CHECK(st->bytes_copied == st->bytes_populated,
		"copied %" PRIu64 " != populated %" PRIu64, st->bytes_copied,
		st->bytes_populated);
	T_CHECK(st->bytes_copied + st->bytes_zeroed + st->bytes_skipped ==
		guest_total_bytes(g), "stats do not add up to the regions");
	T_CHECK(st->faults > 0, "no fault was served");
	T_CHECK(st->thp_copied == g->spec[1].len / T_HPAGE || before == 0,
		"thp_copied %" PRIu64, st->thp_copied);
	return T_PASS;
}

/* Pushed or pulled, AUTO frees as it goes: every populated byte arrived
 * and was freed here; what is left of guest RAM in this process is nothing. */
static int check_released(struct guest *g, const struct uffdmove_stats *st)
{
	uint64_t left = 0;
	size_t r;

	T_CHECK(st->bytes_released >= st->bytes_populated,
		"released %" PRIu64 " of %" PRIu64, st->bytes_released,
		st->bytes_populated);
	for (r = 0; r < g->n; r++)
		left += t_resident_bytes(g->addr[r], g->spec[r].len);
	T_CHECK(left == 0, "%" PRIu64 " bytes of guest RAM still resident",
		left);
	return T_PASS;
}

/* What the progress reports showed freed before everything had arrived. */
struct midway {
	uint64_t populated;		/* the guest's bytes with data */
	uint64_t released;		/* most freed while some were missing */
};

static void note_midway(const struct uffdmove_stats *st, void *arg)
{
	struct midway *w = arg;

	if (st->bytes_copied + st->bytes_moved + st->bytes_pulled <
	    w->populated &&
	    st->bytes_released > w->released)
		w->released = st->bytes_released;
}

static int cross_process(struct t_ctx *ctx, bool pull, uint32_t threads)
{
	struct guest g = layout();
	struct uffdmove_region regions[GUEST_REGIONS_MAX];
	struct uffdmove_source_opts so;
	struct uffdmove_source *s;
	struct uffdmove_stats st;
	struct midway midway = { 0 };
	int sv[2], ret, status;
	uint64_t before;
	pid_t pid;

	guest_map_source(&g);
	midway.populated = guest_populated_bytes(&g);
	before = t_anon_huge_bytes_range(0, g.addr[1], g.spec[1].len);
	guest_regions(&g, regions);
	pid = t_fork_peer(sv, 120);
	if (pid == 0)
		_exit(target_main(sv[1], pull));
	uffdmove_source_opts_init(&so);
	so.pull = pull ? UFFDMOVE_PULL_AUTO : UFFDMOVE_PULL_OFF;
	so.threads = threads;
	so.progress = note_midway;
	so.progress_arg = &midway;
	T_CHECK(uffdmove_source_new(&s, regions, g.n, &so) == 0, "source_new");
	ret = uffdmove_source_accept(s, sv[0]);
	T_CHECK(ret == 0, "accept: %s", uffdmove_source_error(s));
	/* The handshake is downtime: no scan of guest RAM in it, pages
	 * are counted chunk by chunk later. */
	T_CHECK(uffdmove_source_stats(s, &st) == 0 && st.bytes_populated == 0,
		"accept counted %" PRIu64 " populated bytes", st.bytes_populated);
	ret = uffdmove_source_run(s);
	T_CHECK(ret == 0, "run: %s", uffdmove_source_error(s));
	T_CHECK(uffdmove_source_stats(s, &st) == 0, "stats");
	printf("stats: copied %" PRIu64 " moved %" PRIu64 " zero-filled %" PRIu64
	       " skipped %" PRIu64 " faults %" PRIu64 " p50 %" PRIu64
	       " ns p99 %" PRIu64 " ns max %" PRIu64 " ns thp_copied %" PRIu64
	       " elapsed %" PRIu64 " ms primitive %u why %u\n",
	       st.bytes_copied, st.bytes_moved, st.bytes_zeroed,
	       st.bytes_skipped, st.faults, st.fault_ns_p50, st.fault_ns_p99,
	       st.fault_ns_max, st.thp_copied, st.elapsed_ns / 1000000,
	       st.primitive, st.move_unused_reason);
	status = t_wait(pid);
	T_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		"target failed (status 0x%x)", status);
	T_CHECK(st.bytes_populated == guest_populated_bytes(&g),
		"populated %" PRIu64 " != %" PRIu64, st.bytes_populated,
		guest_populated_bytes(&g));
	if (pull)
		T_CHECK(st.primitive == UFFDMOVE_PRIM_PULL, "primitive %u",
			st.primitive);
	else
		T_CHECK(check_pushed(ctx, &g, &st, before) == T_PASS,
			"pushed session");
	T_CHECK(check_released(&g, &st) == T_PASS, "source freed");
	/* As it goes, not at the end: the host holds one copy, not two. */
	T_CHECK(midway.released > 0,
		"nothing freed before the last byte arrived (%" PRIu64
		" bytes populated)", midway.populated);
	uffdmove_source_free(s);
	close(sv[0]);
	guest_unmap(&g);
	return T_PASS;
}

static int cross_process_pull(struct t_ctx *ctx)
{
	return cross_process(ctx, true, 0);
}

static int cross_process_copy(struct t_ctx *ctx)
{
	return cross_process(ctx, false, 0);
}

/* One thread pushes and serves faults: chunks go in slices, given back
 * and resumed whenever a fault comes; every byte still arrives once. */
static int cross_process_one_thread(struct t_ctx *ctx)
{
	return cross_process(ctx, false, 1);
}

/*
 * The VMMs' own channel is a stream socket: the new VMM sends the
 * handoff's socket over it, the old VMM takes it, and a pull then runs
 * with the peer SO_PEERCRED names on the old VMM's end: the new VMM.
 */
static int stream_channel(struct t_ctx *ctx)
{
	struct guest g = layout();
	struct uffdmove_region regions[GUEST_REGIONS_MAX];
	struct uffdmove_source_opts so;
	struct uffdmove_source *s;
	struct uffdmove_stats st;
	int ch[2], sock, ret, status;
	pid_t pid;

	(void)ctx;
	guest_map_source(&g);
	guest_regions(&g, regions);
	T_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ch) == 0,
		"socketpair");
	pid = fork();
	T_CHECK(pid >= 0, "fork");
	if (pid == 0) {
		t_child(120);
		close(ch[0]);
		sock = uffdmove_target_socket(ch[1]);
		if (sock < 0) {
			fprintf(stderr, "target_socket: %s\n", uffdmove_new_error());
			_exit(1);
		}
		_exit(target_main(sock, true));
	}
	close(ch[1]);
	sock = uffdmove_source_socket(ch[0], 10000);
	T_CHECK(sock >= 0, "source_socket: %s", uffdmove_new_error());
	uffdmove_source_opts_init(&so);
	so.expected_pid = pid;	/* the new VMM made the pair: it is the peer */
	T_CHECK(uffdmove_source_new(&s, regions, g.n, &so) == 0, "source_new");
	ret = uffdmove_source_accept(s, sock);
	T_CHECK(ret == 0, "accept: %s", uffdmove_source_error(s));
	ret = uffdmove_source_run(s);
	T_CHECK(ret == 0, "run: %s", uffdmove_source_error(s));
	T_CHECK(uffdmove_source_stats(s, &st) == 0 &&
		st.primitive == UFFDMOVE_PRIM_PULL, "primitive %u", st.primitive);
	status = t_wait(pid);
	T_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		"target failed (status 0x%x)", status);
	uffdmove_source_free(s);
	close(sock);
	close(ch[0]);
	guest_unmap(&g);
	return T_PASS;
}

/* The channel carries something else, or closes: a specific error, no
 * fd left behind, and the message says what came. */
static int stream_channel_bad(struct t_ctx *ctx)
{
	int ch[2], fds = t_count_fds(), ret;

	(void)ctx;
	T_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ch) == 0,
		"socketpair");
	T_CHECK(write(ch[1], "QEMU", 4) == 4, "write");
	ret = uffdmove_source_socket(ch[0], 1000);
	T_CHECK(ret == -EPROTO && strstr(uffdmove_new_error(), "other data"),
		"other bytes: %d %s", ret, uffdmove_new_error());
	ret = uffdmove_source_socket(ch[0], 50);
	T_CHECK(ret == -ETIMEDOUT && strstr(uffdmove_new_error(), "receiving"),
		"nothing: %d %s", ret, uffdmove_new_error());
	close(ch[1]);
	ret = uffdmove_source_socket(ch[0], 1000);
	T_CHECK(ret == -ECONNRESET, "closed: %d %s", ret, uffdmove_new_error());
	ret = uffdmove_target_socket(ch[0]);
	T_CHECK(ret < 0 && strstr(uffdmove_new_error(), "sending"),
		"sending to a closed channel: %d %s", ret, uffdmove_new_error());
	close(ch[0]);
	T_CHECK(t_count_fds() == fds, "fds %d -> %d", fds, t_count_fds());
	return T_PASS;
}

/*
 * Faults the moment the target commits, before any pusher has tried a
 * MOVE: the first MOVE of a session between two processes is a fault's,
 * and the kernel refuses it (EINVAL). That must turn the session to COPY,
 * not end it. Guest threads spin on a flag and touch the first page of
 * every chunk as soon as uffdmove_target_process() has sent the commit.
 */
#define EARLY_ROUNDS	8
#define EARLY_THREADS	2

struct early {
	struct guest *g;
	volatile int go;
	unsigned int start;
	pthread_t tid;
};

static void *early_main(void *arg)
{
	struct early *e = arg;
	size_t n = e->g->spec[0].len / T_HPAGE, c;
	volatile uint64_t sink = 0;

	while (!__atomic_load_n(&e->go, __ATOMIC_ACQUIRE))
		;
	for (c = 0; c < n; c++)
		sink += *(volatile uint64_t *)(e->g->addr[0] +
			((c + e->start) % n) * T_HPAGE + e->start * T_PAGE);
	(void)sink;
	return NULL;
}

static struct guest early_layout(void)
{
	struct guest g = {
		.n = 1,
		.spec = { { "ram0", 64UL << 20, false, 0 } },
		.seed = 0x1235,
		.hole_pct = 0,
	};
	return g;
}

static int early_target(int sock)
{
	struct guest g = early_layout();
	struct uffdmove_region regions[GUEST_REGIONS_MAX];
	struct early e[EARLY_THREADS];
	struct uffdmove_target *t;
	char why[256];
	int i, ret;

	guest_map(&g);
	guest_regions(&g, regions);
	if (uffdmove_target_new(&t, regions, g.n, NULL) ||
	    uffdmove_target_handoff(t, sock)) {
		fprintf(stderr, "target: setup failed\n");
		return 1;
	}
	for (i = 0; i < EARLY_THREADS; i++) {
		e[i] = (struct early){ .g = &g, .start = (unsigned int)i * 7 };
		pthread_create(&e[i].tid, NULL, early_main, &e[i]);
	}
	ret = uffdmove_target_process(t);	/* the commit */
	for (i = 0; i < EARLY_THREADS; i++)
		__atomic_store_n(&e[i].go, 1, __ATOMIC_RELEASE);
	if (ret >= 0)
		ret = uffdmove_target_wait(t, 30000);
	for (i = 0; i < EARLY_THREADS; i++)
		pthread_join(e[i].tid, NULL);
	if (ret) {
		fprintf(stderr, "target: %s\n", uffdmove_target_error(t));
		return 1;
	}
	if (guest_verify(&g, why, sizeof(why))) {
		fprintf(stderr, "target: after the handoff: %s\n", why);
		return 1;
	}
	uffdmove_target_free(t);
	return 0;
}

static int faults_at_commit(struct t_ctx *ctx)
{
	struct guest g = early_layout();
	struct uffdmove_region regions[GUEST_REGIONS_MAX];
	struct uffdmove_source_opts so;
	struct uffdmove_source *s;
	struct uffdmove_stats st;
	int sv[2], ret, status, round;
	pid_t pid;

	guest_map_source(&g);
	guest_regions(&g, regions);
	uffdmove_source_opts_init(&so);
	so.pull = UFFDMOVE_PULL_OFF;
	so.mode = UFFDMOVE_MODE_AUTO;
	for (round = 0; round < EARLY_ROUNDS; round++) {
		if (round)
			guest_fill(&g);	/* AUTO freed what arrived */
		pid = t_fork_peer(sv, 60);
		if (pid == 0)
			_exit(early_target(sv[1]));
		T_CHECK(uffdmove_source_new(&s, regions, g.n, &so) == 0,
			"source_new");
		ret = uffdmove_source_accept(s, sv[0]);
		if (!ret)
			ret = uffdmove_source_run(s);
		uffdmove_source_stats(s, &st);
		status = t_wait(pid);
		T_CHECK(ret == 0 && WIFEXITED(status) && !WEXITSTATUS(status),
			"round %d: source %d %s, target status 0x%x", round,
			ret, uffdmove_source_error(s), status);
		T_CHECK(st.primitive == UFFDMOVE_PRIM_COPY &&
			st.bytes_copied == st.bytes_populated,
			"round %d: primitive %u, copied %" PRIu64 " of %" PRIu64,
			round, st.primitive, st.bytes_copied,
			st.bytes_populated);
		uffdmove_source_free(s);
		close(sv[0]);
	}
	guest_unmap(&g);
	return T_PASS;
}

int main(void)
{
	static const struct t_case cases[] = {
		{ "cross-process-pull", cross_process_pull },
		{ "cross-process-copy", cross_process_copy },
		{ "cross-process-one-thread", cross_process_one_thread },
		{ "stream-channel", stream_channel },
		{ "stream-channel-bad", stream_channel_bad },
		{ "faults-at-commit", faults_at_commit },
	};
	return t_main(cases, T_ARRAY_SIZE(cases), 240,
		      T_NEED_KERNEL_FAULTS, NULL);
}
