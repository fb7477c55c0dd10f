// SPDX-License-Identifier: MIT
/*
 * The command line: --help, and the options with their checks. The old
 * VMM passes its own argv to the new one, plus two hidden options.
 */
#include "toy.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Indexed by enum uffdmove_mode. */
const char *const mode_names[] = { "auto", "copy", "move" };

enum {
	O_MEM = 256, O_VCPUS, O_THP, O_POPULATE, O_MODE, O_THREADS,
	O_SAME, O_KILL, O_DEATH, O_JSON, O_WARMUP, O_SEED, O_NEWBIN,
	O_ROLE, O_SOCKFD, O_PULL, O_FAULTS, O_GUEST,
};

static const struct option longopts[] = {
	{ "mem", required_argument, NULL, O_MEM },
	{ "vcpus", required_argument, NULL, O_VCPUS },
	{ "thp", required_argument, NULL, O_THP },
	{ "populate", required_argument, NULL, O_POPULATE },
	{ "mode", required_argument, NULL, O_MODE },
	{ "pull", required_argument, NULL, O_PULL },
	{ "faults", required_argument, NULL, O_FAULTS },
	{ "guest", required_argument, NULL, O_GUEST },
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
"  --pull auto|off|on   auto (default): with --thp on the new VMM reads\n"
"                       the old one's memory and moves it into place\n"
"                       itself where the kernel lets it (one copy, THP\n"
"                       kept), with --thp off the old VMM pushes (one\n"
"                       copy too); on: pull also without THP (4 KiB\n"
"                       pages then cost a second copy); off: push\n"
"  --faults auto|page|chunk  pulling, serve a fault with its 4 KiB page\n"
"                       (page: lowest latency), its whole 2 MiB chunk\n"
"                       (chunk: THP kept, fewer faults, slower first\n"
"                       touch), or page while faults are rare and chunk\n"
"                       while they are frequent (auto, default)\n"
"  --guest running|paused  whether the guest runs while its RAM streams\n"
"                       in (running, default) or waits until all of it is\n"
"                       in (paused: the same handoff without a guest's\n"
"                       faults, to compare with)\n"
"  --threads N          mover threads of the side that moves pages\n"
"                       (default: the library's, 2)\n"
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

/* Say what is wrong with the command line; returns -1. */
static int complain(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));
static int complain(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	return -1;
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

/* The options that take a number or a size. */
static int parse_number(int c, const char *arg, struct options *o)
{
	unsigned int u;
	uint64_t v;

	switch (c) {
	case O_MEM:
		if (parse_size(arg, &o->mem) || !o->mem ||
		    o->mem % HPAGE || o->mem > (1ULL << 40))
			return complain("--mem %s: want a non-zero multiple of 2M, at most 1T (e.g. 256M, 4G)\n",
					arg);
		return 0;
	case O_VCPUS:
		if (parse_uint(arg, MAX_VCPUS, &o->vcpus) || !o->vcpus)
			return complain("--vcpus %s: want 1..%d\n", arg,
					MAX_VCPUS);
		return 0;
	case O_POPULATE:
		if (parse_uint(arg, 100, &o->populate))
			return complain("--populate %s: want 0..100\n", arg);
		return 0;
	case O_THREADS:
		if (parse_uint(arg, 64, &o->threads) || !o->threads)
			return complain("--threads %s: want 1..64\n", arg);
		return 0;
	case O_KILL:
		if (parse_uint(arg, 99, &u))
			return complain("--kill-source-at %s: want 0..99\n",
					arg);
		o->kill_at = (int)u;
		return 0;
	case O_WARMUP:
		if (parse_uint(arg, 3600 * 1000, &o->warmup_ms))
			return complain("--warmup %s: want milliseconds\n",
					arg);
		return 0;
	case O_SEED:
		if (parse_size(arg, &v))
			return complain("--seed %s: want a number\n", arg);
		o->seed = v;
		return 0;
	case O_SOCKFD:
		if (parse_uint(arg, INT_MAX, &u))
			return complain("--sock-fd %s: internal option\n", arg);
		o->sock_fd = (int)u;
		return 0;
	default:
		return -1;
	}
}

static const char *const fault_names[] = { "auto", "page", "chunk" };
static const char *const pull_names[] = { "auto", "off", "on" };

/* The options that take one of a few words. */
static int parse_word(int c, const char *arg, struct options *o)
{
	unsigned int u;

	switch (c) {
	case O_THP:
		if (strcmp(arg, "on") && strcmp(arg, "off"))
			return complain("--thp %s: want on or off\n", arg);
		o->thp = !strcmp(arg, "on");
		return 0;
	case O_MODE:
		for (u = 0; u < 3; u++)
			if (!strcmp(arg, mode_names[u]))
				break;
		if (u == 3)
			return complain("--mode %s: want auto, copy or move\n",
					arg);
		o->mode = u;
		return 0;
	case O_PULL:
		for (u = 0; u < 3; u++)
			if (!strcmp(arg, pull_names[u]))
				break;
		if (u == 3)
			return complain("--pull %s: want auto, off or on\n",
					arg);
		o->pull = u;	/* UFFDMOVE_PULL_* */
		return 0;
	case O_FAULTS:
		for (u = 0; u < 3; u++)
			if (!strcmp(arg, fault_names[u]))
				break;
		if (u == 3)
			return complain("--faults %s: want auto, page or chunk\n",
					arg);
		o->fault_policy = u;	/* UFFDMOVE_FAULT_*, in this order */
		return 0;
	case O_GUEST:
		if (strcmp(arg, "running") && strcmp(arg, "paused"))
			return complain("--guest %s: want running or paused\n",
					arg);
		o->paused = !strcmp(arg, "paused");
		return 0;
	case O_DEATH:
		if (!strcmp(arg, "block"))
			o->on_death = UFFDMOVE_ON_SOURCE_DEATH_BLOCK;
		else if (!strcmp(arg, "poison"))
			o->on_death = UFFDMOVE_ON_SOURCE_DEATH_POISON;
		else
			return complain("--on-source-death %s: want block or poison\n",
					arg);
		return 0;
	case O_ROLE:
		if (strcmp(arg, "new"))
			return complain("--role %s: internal option\n", arg);
		o->role = ROLE_NEW;
		return 0;
	default:
		return -1;
	}
}

static int parse_one(int c, const char *arg, struct options *o)
{
	switch (c) {
	case O_SAME:
		o->same_process = true;
		return 0;
	case O_JSON:
		o->json = true;
		return 0;
	case O_NEWBIN:
		o->new_binary = arg;
		return 0;
	case O_THP:
	case O_MODE:
	case O_PULL:
	case O_FAULTS:
	case O_GUEST:
	case O_DEATH:
	case O_ROLE:
		return parse_word(c, arg, o);
	default:
		return parse_number(c, arg, o);
	}
}

/* Fills @o; -1 on a usage error (said on stderr). --help exits here. */
int parse_options(int argc, char **argv, struct options *o)
{
	int c;

	*o = (struct options){
		.mem = 1ULL << 30, .vcpus = 2, .thp = true, .populate = 75,
		.mode = UFFDMOVE_MODE_AUTO, .kill_at = -1, .pull = UFFDMOVE_PULL_AUTO,
		.on_death = UFFDMOVE_ON_SOURCE_DEATH_BLOCK, .warmup_ms = 300,
		.seed = 1, .role = ROLE_MAIN, .sock_fd = -1,
	};
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		if (c == 'h') {
			usage(stdout, argv[0]);
			exit(0);
		}
		if (parse_one(c, optarg, o))
			return -1;
	}
	if (optind < argc)
		return complain("unexpected argument '%s'\n", argv[optind]);
	if (o->same_process && o->kill_at >= 0)
		return complain("--kill-source-at needs two processes: it kills the old VMM, which --same-process does not have\n");
	if (o->role == ROLE_NEW && o->sock_fd < 0)
		return complain("--role new needs --sock-fd\n");
	return 0;
}
