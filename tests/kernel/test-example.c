// SPDX-License-Identifier: MIT
/*
 * examples/postcopy_upgrade in a small configuration, so that CI covers
 * the example end to end: a cross-process upgrade (the default), a
 * same-process one whose JSON must show every populated byte moved, and
 * a source killed halfway, which must end in a clear error and never
 * claim that guest RAM verified.
 *
 * Usage: test-example PATH-TO-postcopy_upgrade
 * (meson passes the path; $POSTCOPY_UPGRADE works as well).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define RUN_TIMEOUT_S	40
#define OUT_MAX		(256 * 1024)

struct run {
	int status;		/* waitpid status; -1: timed out */
	char *out;		/* stdout */
	char *err;		/* stderr */
	double secs;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Append what @fd has to @buf; false on EOF (or a full buffer). */
static bool drain(int fd, char *buf, size_t *len)
{
	ssize_t n = read(fd, buf + *len, OUT_MAX - 1 - *len);

	if (n > 0) {
		*len += (size_t)n;
		buf[*len] = '\0';
		return true;
	}
	if (n == 0)
		return false;
	return errno == EINTR || errno == EAGAIN;
}

/*
 * Run the example with @args (NULL-terminated), collecting stdout and
 * stderr until both close (the new VMM holds them too) and the process
 * exits, within RUN_TIMEOUT_S.
 */
static int run_example(const char *exe, const char *const *args,
		       struct run *r)
{
	const char *argv[32];
	int out[2], err[2], n = 0, status;
	size_t olen = 0, elen = 0;
	struct pollfd pfd[2];
	double t0 = now_s();
	bool oopen = true, eopen = true;
	pid_t pid;

	memset(r, 0, sizeof(*r));
	r->out = calloc(1, OUT_MAX);
	r->err = calloc(1, OUT_MAX);
	if (!r->out || !r->err || pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC))
		return -1;
	argv[n++] = exe;
	while (*args && n < 31)
		argv[n++] = *args++;
	argv[n] = NULL;
	fprintf(stderr, "+");
	for (n = 0; argv[n]; n++)
		fprintf(stderr, " %s", argv[n]);
	fprintf(stderr, "\n");

	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		/* Its own process group: a timeout kills every VMM. */
		setpgid(0, 0);
		dup2(out[1], STDOUT_FILENO);
		dup2(err[1], STDERR_FILENO);
		execv(exe, (char *const *)argv);
		_exit(127);
	}
	setpgid(pid, pid);
	close(out[1]);
	close(err[1]);
	while (oopen || eopen) {
		int left = (int)((t0 + RUN_TIMEOUT_S - now_s()) * 1000);

		if (left <= 0)
			break;
		pfd[0] = (struct pollfd){ oopen ? out[0] : -1, POLLIN, 0 };
		pfd[1] = (struct pollfd){ eopen ? err[0] : -1, POLLIN, 0 };
		if (poll(pfd, 2, left) < 0 && errno != EINTR)
			break;
		if (pfd[0].revents)
			oopen = drain(out[0], r->out, &olen);
		if (pfd[1].revents)
			eopen = drain(err[0], r->err, &elen);
	}
	if (oopen || eopen) {
		kill(-pid, SIGKILL);
		r->status = -1;
		t_wait(pid);
	} else {
		status = t_wait(pid);
		r->status = status;
	}
	close(out[0]);
	close(err[0]);
	r->secs = now_s() - t0;
	fprintf(stderr, "%s%s", r->err, r->out);
	fprintf(stderr, "(%s after %.1f s)\n",
		r->status == -1 ? "killed: timeout" :
		WIFEXITED(r->status) ? "exited" : "died", r->secs);
	return 0;
}

static void run_free(struct run *r)
{
	free(r->out);
	free(r->err);
}

static bool exited_with(const struct run *r, int code)
{
	return r->status != -1 && WIFEXITED(r->status) &&
	       WEXITSTATUS(r->status) == code;
}

/* The number after "key": in a flat JSON object; NULL if absent. */
static const char *json_number(const char *json, const char *key)
{
	char pat[64];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(json, pat);
	if (!p)
		return NULL;
	p += strlen(pat);
	while (*p == ' ')
		p++;
	return *p >= '0' && *p <= '9' ? p : NULL;
}

static bool json_u64(const char *json, const char *key, uint64_t *v)
{
	const char *p = json_number(json, key);

	if (p)
		*v = strtoull(p, NULL, 10);
	return p != NULL;
}

static bool json_double(const char *json, const char *key, double *v)
{
	const char *p = json_number(json, key);

	if (p)
		*v = strtod(p, NULL);
	return p != NULL;
}

static const char *example(struct t_ctx *ctx)
{
	return ctx->priv;
}

/* The default mode: an exec'ed new VMM, pages copied across processes. */
static int cross_process(struct t_ctx *ctx)
{
	static const char *const args[] = { "--mem", "64M", NULL };
	struct run r;

	T_CHECK(run_example(example(ctx), args, &r) == 0, "cannot run");
	T_CHECK(exited_with(&r, 0), "exit status 0x%x, want 0", r.status);
	T_CHECK(strstr(r.out, "verified: all 67108864 bytes"),
		"no \"verified: all 67108864 bytes\" in the summary");
	T_CHECK(strstr(r.out, "guest downtime") &&
		strstr(r.out, "faults served") && strstr(r.out, "THP coverage"),
		"summary lacks downtime, faults or THP lines");
	run_free(&r);
	return T_PASS;
}

/* One process: MOVE really runs; the JSON must add up. */
static int same_process_json(struct t_ctx *ctx)
{
	static const char *const args[] = {
		"--same-process", "--mem", "64M", "--json", NULL
	};
	uint64_t moved, copied, populated, ours, verified_bytes, rss_before;
	double thp_before, thp_after;
	struct run r;

	if (!ctx->caps->move)
		return t_case_skip(ctx, "kernel offers no UFFD_FEATURE_MOVE");
	T_CHECK(run_example(example(ctx), args, &r) == 0, "cannot run");
	T_CHECK(exited_with(&r, 0), "exit status 0x%x, want 0", r.status);
	T_CHECK(r.out[0] == '{' && strstr(r.out, "\n}"),
		"stdout is not one JSON object");
	T_CHECK(strstr(r.out, "\"verified\": true"), "not verified");
	T_CHECK(strstr(r.out, "\"primitive\": \"move\""),
		"same-process handoff did not use MOVE");
	T_CHECK(json_u64(r.out, "bytes_moved", &moved) &&
		json_u64(r.out, "bytes_copied", &copied) &&
		json_u64(r.out, "bytes_populated", &populated) &&
		json_u64(r.out, "populated_bytes", &ours) &&
		json_u64(r.out, "verified_bytes", &verified_bytes),
		"JSON lacks byte counters");
	T_CHECK(verified_bytes == 64ULL << 20, "verified_bytes %" PRIu64,
		verified_bytes);
	T_CHECK(populated >= ours, "the source saw %" PRIu64
		" populated bytes, the guest wrote %" PRIu64, populated, ours);
	T_CHECK(moved + copied == populated,
		"moved %" PRIu64 " + copied %" PRIu64 " != populated %" PRIu64,
		moved, copied, populated);
	/*
	 * Every populated byte should move. The library still copies the
	 * few pages the guest faults on between the commit and the
	 * source's reading of it (it serves faults before the GO message
	 * that preceded them); allow those, no more.
	 */
	T_CHECK(copied <= 64 * 4096 && moved >= populated - 64 * 4096,
		"moved %" PRIu64 " of %" PRIu64 " populated bytes (copied %" PRIu64 ")",
		moved, populated, copied);
	/*
	 * MOVE keeps huge pages whole. Each page copied by that race costs
	 * its 2 MiB chunk the huge page (the chunk then moves page by page
	 * and is not collapsed again): allow for those, no more.
	 */
	if (ctx->caps->thp_mode != UFFDMOVE_THP_NEVER &&
	    json_double(r.out, "thp_before_pct", &thp_before) &&
	    json_double(r.out, "thp_after_pct", &thp_after) &&
	    json_u64(r.out, "rss_before", &rss_before) && rss_before) {
		double race = 100.0 * (double)(copied / 4096) * (2 << 20) /
			      (double)rss_before;

		T_CHECK(thp_after >= thp_before - race - 1.0,
			"THP coverage fell from %.1f%% to %.1f%% (%.1f%% allowed for %" PRIu64 " racing pages)",
			thp_before, thp_after, race + 1.0, copied / 4096);
	}
	run_free(&r);
	return T_PASS;
}

/*
 * The old VMM dies halfway: a clear error, nothing claimed. Pushed, it
 * dies at half of what it handed over. Pulled, it learns of arrivals every
 * few ms, so it dies early in a larger guest to die mid-pull.
 */
static int killed_source(struct t_ctx *ctx, const char *policy, bool pull)
{
	const char *const args[] = {
		"--kill-source-at", pull ? "10" : "50",
		"--mem", pull ? "256M" : "64M", "--pull", pull ? "auto" : "off",
		"--on-source-death", policy, NULL
	};
	struct run r;

	T_CHECK(run_example(example(ctx), args, &r) == 0, "cannot run");
	T_CHECK(r.status != -1, "did not end within %d s", RUN_TIMEOUT_S);
	T_CHECK(!exited_with(&r, 0), "exit status 0 after the source died");
	T_CHECK(!strstr(r.out, "verified: all") && !strstr(r.err, "verified: all"),
		"claims \"verified: all\" after the source died");
	T_CHECK(strstr(r.out, "FAILED: the handoff failed"),
		"no clear error in the summary");
	T_CHECK(strstr(r.err, "killing myself with SIGKILL"),
		"the old VMM did not kill itself");
	T_CHECK(!strstr(r.out, "ZERO") && !strstr(r.err, "ZERO"),
		"a page read as zeros");
	T_CHECK(strstr(r.out, "none zeroed"),
		"the pages that arrived were not checked");
	T_CHECK(r.secs < 20, "took %.1f s to give up", r.secs);
	run_free(&r);
	return T_PASS;
}

static int killed_source_block(struct t_ctx *ctx)
{
	return killed_source(ctx, "block", false);
}

static int killed_source_poison(struct t_ctx *ctx)
{
	if (!ctx->caps->poison)
		return t_case_skip(ctx, "kernel offers no UFFDIO_POISON");
	return killed_source(ctx, "poison", false);
}

static int killed_puller_source(struct t_ctx *ctx)
{
	return killed_source(ctx, "block", true);
}

int main(int argc, char **argv)
{
	static const struct t_case cases[] = {
		{ "cross-process", cross_process },
		{ "same-process-json", same_process_json },
		{ "kill-source-block", killed_source_block },
		{ "kill-source-poison", killed_source_poison },
		{ "kill-source-mid-pull", killed_puller_source },
	};
	const char *exe = argc > 1 ? argv[1] : getenv("POSTCOPY_UPGRADE");

	if (!exe || access(exe, X_OK))
		t_skip("examples/postcopy_upgrade not built (-Dexamples=false?)");
	return t_main(cases, T_ARRAY_SIZE(cases), 110, T_NEED_KERNEL_FAULTS,
		      (void *)exe);
}
