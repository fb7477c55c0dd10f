// SPDX-License-Identifier: MIT
/*
 * Everything the VMMs print: informational lines and the progress of the
 * handoff on stderr, the summary on stdout (text, or one JSON object with
 * --json, which keeps stdout to that object alone).
 */
#include "toy.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Informational lines go to stderr so that --json keeps stdout clean. */
void say(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

const char *fmt_bytes(char *buf, size_t len, uint64_t n)
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

static double pct(uint64_t part, uint64_t whole)
{
	return whole ? 100.0 * (double)part / (double)whole : 0.0;
}

/* The report's error text, from its start (report_error) or its end. */
static void report_vfmt(struct report *r, size_t at, const char *fmt,
			va_list ap) __attribute__((format(printf, 3, 0)));
static void report_vfmt(struct report *r, size_t at, const char *fmt,
			va_list ap)
{
	vsnprintf(r->error + at, sizeof(r->error) - at, fmt, ap);
}

void report_error(struct report *r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	report_vfmt(r, 0, fmt, ap);
	va_end(ap);
}

void report_append(struct report *r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	report_vfmt(r, strlen(r->error), fmt, ap);
	va_end(ap);
}

/* -------------------------------------------------------------- progress */

void progress_init(struct progress *pr, uint64_t total)
{
	memset(pr, 0, sizeof(*pr));
	pr->tty = isatty(STDERR_FILENO);
	pr->total = total;
	pr->t0 = pr->last_t = now_ns();
	pr->next = pr->t0 + (pr->tty ? 100 : 500) * 1000000ULL;
}

/* A bar on a terminal (10 a second), else a plain line (2 a second). */
void progress_update(struct progress *pr, const struct uffdmove_stats *st)
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

void progress_end(struct progress *pr)
{
	if (pr->shown)
		fputs("\r\033[K", stderr);
	pr->shown = false;
}

/* ------------------------------------------------------------------ JSON */

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

static const char *why_no_pull(uint32_t why)
{
	switch (why) {
	case UFFDMOVE_PULL_WHY_OFF_TARGET:
	case UFFDMOVE_PULL_WHY_OFF_SOURCE:
		return "--pull off or --mode move";
	case UFFDMOVE_PULL_WHY_DENIED:
		return "the new VMM may not read the old one's memory";
	case UFFDMOVE_PULL_WHY_NO_MOVE:
		return "the kernel has no UFFDIO_MOVE";
	case UFFDMOVE_PULL_WHY_SAME_MM:
		return "one process: MOVE needs no copy";
	case UFFDMOVE_PULL_WHY_NO_THP:
		return "no huge pages, a push copies once (--pull on to pull)";
	default:
		return "";
	}
}

static const char *prim_name(const struct uffdmove_stats *st)
{
	switch (st->primitive) {
	case UFFDMOVE_PRIM_PULL:
		return "pull";
	case UFFDMOVE_PRIM_MOVE:
		return "move";
	default:
		return "copy";
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

/* What ran: the configuration, and how the pages went over. */
static void json_setup(const struct report *r)
{
	const struct uffdmove_stats *st = &r->st;

	json_str("mode", mode_names[r->o->mode], false);
	json_str("guest", r->o->paused ? "paused" : "running", false);
	json_bool("same_process", r->same_process);
	json_u64("mem_bytes", r->o->mem);
	json_u64("populated_bytes", r->populated);
	json_str("thp", r->o->thp ? "on" : "off", false);
	json_u64("vcpus", r->o->vcpus);
	json_u64("seed", r->o->seed);
	json_str("on_source_death",
		 r->o->on_death == UFFDMOVE_ON_SOURCE_DEATH_POISON ?
		 "poison" : "block", false);
	json_str("primitive", !r->have_stats ? NULL : prim_name(st), false);
	json_str("move_unused_reason",
		 r->have_stats && st->primitive == UFFDMOVE_PRIM_COPY ?
		 why_copy(st->move_unused_reason) : NULL, false);
	json_str("pull_unused_reason",
		 r->have_stats && st->primitive != UFFDMOVE_PRIM_PULL ?
		 why_no_pull(st->pull_unused_reason) : NULL, false);
}

/* The handoff's times and the library's counters. */
static void json_handoff(const struct report *r)
{
	const struct uffdmove_stats *st = &r->st;
	bool resumed = r->resume_ns && r->pause_ns;
	bool done = r->done && r->done_ns > r->resume_ns;
	uint64_t got = st->bytes_moved + st->bytes_copied;

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
	json_u64("bytes_pulled", st->bytes_pulled);
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
	json_u64("thp_uncollapsed", st->thp_uncollapsed);
}

/* Memory, the guest's activity meanwhile, and the verdict. */
static void json_outcome(const struct report *r)
{
	char addr[32];

	json_u64("rss_before", r->rss_before);
	json_u64("anon_huge_before", r->huge_before);
	json_u64("rss_done", r->rss_done);
	json_u64("anon_huge_done", r->huge_done);
	json_u64("rss_after", r->rss_after);
	json_u64("anon_huge_after", r->huge_after);
	json_num("thp_before_pct", pct(r->huge_before, r->rss_before),
		 r->o->thp && r->rss_before);
	json_num("thp_done_pct", pct(r->huge_done, r->rss_done),
		 r->o->thp && r->done && r->rss_done);
	json_num("thp_after_pct", pct(r->huge_after, r->rss_after),
		 r->o->thp && r->done && r->rss_after);
	json_u64("peak_host_bytes", r->peak_host);
	json_num("peak_host_ratio", r->populated ?
		 (double)r->peak_host / (double)r->populated : 0,
		 r->peak_host && r->populated);
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
}

/* ------------------------------------------------------------------ text */

/* Which way each byte went: the primitive, and why not a better one. */
static void text_path(const struct report *r)
{
	const struct uffdmove_stats *st = &r->st;
	char a[32], b[32], c[32];

	printf("  handoff            %s, --mode %s: pages went by %s",
	       r->same_process ? "within one process" :
	       "to an exec'ed new process", mode_names[r->o->mode],
	       prim_name(st));
	if (st->primitive == UFFDMOVE_PRIM_COPY)
		printf(" (%s%s%s)", why_copy(st->move_unused_reason),
		       st->pull_unused_reason ? "; no pull: " : "",
		       why_no_pull(st->pull_unused_reason));
	else if (st->primitive == UFFDMOVE_PRIM_MOVE &&
		 st->pull_unused_reason != UFFDMOVE_PULL_WHY_SAME_MM)
		printf(" (no pull: %s)", why_no_pull(st->pull_unused_reason));
	printf("\n");
	printf("  bytes              %s moved (%" PRIu64 " THP whole), %s copied, %s zero pages",
	       fmt_bytes(a, sizeof(a), st->bytes_moved), st->thp_moved,
	       fmt_bytes(b, sizeof(b), st->bytes_copied),
	       fmt_bytes(c, sizeof(c), st->bytes_zeroed));
	if (st->primitive == UFFDMOVE_PRIM_PULL)
		printf("; %s read from the old VMM", fmt_bytes(a, sizeof(a),
		       st->bytes_pulled));
	printf("\n");
}

/* The guest, the way pages went over, and how long it took. */
static void text_handoff(const struct report *r)
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
		text_path(r);
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
}

/* The library's counters, THP coverage, the guest's activity. */
static void text_stats(const struct report *r)
{
	const struct uffdmove_stats *st = &r->st;
	char a[32];

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
		printf("  THP coverage       before %.1f%%, when all was in %.1f%%, after collapsing %.1f%% (THP chunks: %" PRIu64 " arrived whole, %" PRIu64 " in small pages, %" PRIu64 " collapsed, %" PRIu64 " given up on)\n",
		       pct(r->huge_before, r->rss_before),
		       pct(r->huge_done, r->rss_done),
		       pct(r->huge_after, r->rss_after), st->thp_moved,
		       st->thp_copied, st->thp_collapsed,
		       st->thp_uncollapsed);
	if (r->peak_host)
		printf("  peak host memory   %s, %.2fx the populated guest RAM (%s both VMMs' resident memory during the handoff)\n",
		       fmt_bytes(a, sizeof(a), r->peak_host),
		       r->populated ? (double)r->peak_host /
				      (double)r->populated : 0,
		       r->same_process ? "this VMM's," : "the sum of");
	else
		printf("  THP coverage       before %.1f%%\n",
		       pct(r->huge_before, r->rss_before));
	if (r->resume_ns)
		printf("  guest activity     %" PRIu64 " vCPU reads, %" PRIu64 " vCPU writes, %" PRIu64 " I/O syscall pairs while RAM streamed in\n",
		       r->reads, r->writes, r->io_ops);
}

static void text_verdict(const struct report *r)
{
	char a[32], b[32];

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

void print_report(const struct report *r)
{
	if (r->o->json) {
		printf("{\n");
		json_setup(r);
		json_handoff(r);
		json_outcome(r);
		printf("}\n");
	} else {
		text_handoff(r);
		text_stats(r);
		text_verdict(r);
	}
	fflush(stdout);
}
