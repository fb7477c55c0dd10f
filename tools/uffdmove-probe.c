// SPDX-License-Identifier: MIT
/*
 * uffdmove-probe: what this kernel and this process allow for a live
 * upgrade, as a table with the consequence of every missing piece, or as
 * JSON for scripts. Uses only the public API.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "uffdmove.h"

static const char *yes_no(bool b)
{
	return b ? "yes" : "no";
}

static const char *json_bool(bool b)
{
	return b ? "true" : "false";
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

static const char *kfault_name(uint32_t via)
{
	switch (via) {
	case UFFDMOVE_KFAULT_DEV:
		return "dev";
	case UFFDMOVE_KFAULT_CAP:
		return "cap";
	case UFFDMOVE_KFAULT_SYSCTL:
		return "sysctl";
	default:
		return "no";
	}
}

static const char *kfault_text(uint32_t via)
{
	switch (via) {
	case UFFDMOVE_KFAULT_DEV:
		return "yes (/dev/userfaultfd)";
	case UFFDMOVE_KFAULT_CAP:
		return "yes (CAP_SYS_PTRACE)";
	case UFFDMOVE_KFAULT_SYSCTL:
		return "yes (vm.unprivileged_userfaultfd=1)";
	default:
		return "no";
	}
}

static void print_json(const struct uffdmove_caps *c)
{
	printf("{\n");
	printf("  \"version\": \"%s\",\n", uffdmove_version());
	printf("  \"userfaultfd\": %s,\n", json_bool(c->userfaultfd));
	printf("  \"uffd_features\": \"0x%" PRIx64 "\",\n", c->uffd_features);
	printf("  \"move\": %s,\n", json_bool(c->move));
	printf("  \"cross_process_move\": %s,\n",
	       json_bool(c->cross_process_move));
	printf("  \"poison\": %s,\n", json_bool(c->poison));
	printf("  \"kernel_faults\": %s,\n", json_bool(c->kernel_faults));
	printf("  \"kernel_faults_via\": \"%s\",\n",
	       kfault_name(c->kernel_faults_via));
	printf("  \"dev_userfaultfd\": %s,\n", json_bool(c->dev_userfaultfd));
	printf("  \"unprivileged_userfaultfd\": %" PRId32 ",\n",
	       c->unprivileged_userfaultfd);
	printf("  \"pagemap_scan\": %s,\n", json_bool(c->pagemap_scan));
	printf("  \"pagemap_pfn\": %s,\n", json_bool(c->pagemap_pfn));
	printf("  \"io_uring\": %s,\n", json_bool(c->io_uring));
	printf("  \"io_uring_disabled\": %" PRId32 ",\n", c->io_uring_disabled);
	printf("  \"thp_mode\": \"%s\",\n", thp_name(c->thp_mode));
	printf("  \"madv_collapse\": %s,\n", json_bool(c->madv_collapse));
	printf("  \"cap_sys_ptrace\": %s,\n", json_bool(c->cap_sys_ptrace));
	printf("  \"cap_sys_admin\": %s,\n", json_bool(c->cap_sys_admin));
	printf("  \"cap_sys_nice\": %s,\n", json_bool(c->cap_sys_nice));
	printf("  \"yama_ptrace_scope\": %" PRId32 ",\n",
	       c->yama_ptrace_scope);
	printf("  \"pidfd\": %s,\n", json_bool(c->pidfd));
	printf("  \"pull\": %s\n", json_bool(c->pull));
	printf("}\n");
}

static void row(const char *feature, const char *value)
{
	printf("%-30s %s\n", feature, value);
}

static void row_int(const char *feature, int32_t value)
{
	char buf[16];

	if (value < 0)
		snprintf(buf, sizeof(buf), "unreadable");
	else
		snprintf(buf, sizeof(buf), "%" PRId32, value);
	row(feature, buf);
}

static void print_table(const struct uffdmove_caps *c)
{
	char features[24];

	snprintf(features, sizeof(features), "0x%" PRIx64, c->uffd_features);
	printf("libuffdmove %s\n\n", uffdmove_version());
	row("FEATURE", "VALUE");
	row("userfaultfd", yes_no(c->userfaultfd));
	row("uffd features", features);
	row("UFFDIO_MOVE", yes_no(c->move));
	row("cross-process MOVE", yes_no(c->cross_process_move));
	row("UFFDIO_POISON", yes_no(c->poison));
	row("kernel-mode faults", kfault_text(c->kernel_faults_via));
	row("/dev/userfaultfd", yes_no(c->dev_userfaultfd));
	row_int("vm.unprivileged_userfaultfd", c->unprivileged_userfaultfd);
	row("PAGEMAP_SCAN", yes_no(c->pagemap_scan));
	row("pagemap PFNs", yes_no(c->pagemap_pfn));
	row("io_uring", yes_no(c->io_uring));
	row_int("kernel.io_uring_disabled", c->io_uring_disabled);
	row("THP mode", thp_name(c->thp_mode));
	row("MADV_COLLAPSE", yes_no(c->madv_collapse));
	row("CAP_SYS_PTRACE", yes_no(c->cap_sys_ptrace));
	row("CAP_SYS_ADMIN", yes_no(c->cap_sys_admin));
	row("CAP_SYS_NICE", yes_no(c->cap_sys_nice));
	if (c->yama_ptrace_scope < 0)
		row("kernel.yama.ptrace_scope", "no Yama");
	else
		row_int("kernel.yama.ptrace_scope", c->yama_ptrace_scope);
	row("pidfd", yes_no(c->pidfd));
	row("pull (new VMM reads old)", yes_no(c->pull));
}

/* One line per "no": what it costs a live upgrade, and the remedy. */
static void print_consequences(const struct uffdmove_caps *c)
{
	bool header = false;

#define SAY(cond, text)							\
	do {								\
		if (cond) {						\
			if (!header)					\
				printf("\nConsequences:\n");		\
			header = true;					\
			printf("  %s\n", text);				\
		}							\
	} while (0)

	SAY(!c->userfaultfd,
	    "no userfaultfd: guest RAM cannot be handed over at all; "
	    "needs CONFIG_USERFAULTFD and a seccomp policy that allows it");
	SAY(c->userfaultfd && !c->move,
	    "no UFFDIO_MOVE (Linux < 6.8): every page is copied "
	    "(UFFDIO_COPY), also within one process");
	SAY(c->move && !c->cross_process_move,
	    "cross-process MOVE refused by this kernel: handoff between "
	    "processes copies (UFFDIO_COPY); same-process handoff still "
	    "moves");
	SAY(c->userfaultfd && !c->poison,
	    "no UFFDIO_POISON: if the old VMM dies mid-handoff, missing "
	    "pages can only stay blocked, not raise SIGBUS");
	SAY(c->userfaultfd && !c->kernel_faults,
	    "kernel-mode faults cannot be caught: KVM access to guest RAM "
	    "would not fault; grant CAP_SYS_PTRACE or access to "
	    "/dev/userfaultfd");
	SAY(!c->dev_userfaultfd && c->kernel_faults,
	    "/dev/userfaultfd not usable: no effect, kernel-mode faults are "
	    "caught another way (see above)");
	SAY(!c->dev_userfaultfd && !c->kernel_faults,
	    "/dev/userfaultfd not usable: give the VMM's user read-write "
	    "access to it to catch kernel-mode faults without privileges");
	SAY(!c->pagemap_scan,
	    "no PAGEMAP_SCAN (Linux < 6.7): pages are classified from "
	    "8-byte pagemap entries, slower on large guests");
	SAY(!c->pagemap_pfn,
	    "pagemap hides PFNs (no CAP_SYS_ADMIN): handoff unaffected; "
	    "diagnostics cannot name physical pages");
	SAY(!c->io_uring,
	    "no io_uring: the source's fault loop cannot read events "
	    "through io_uring; check kernel.io_uring_disabled and seccomp");
	SAY(c->thp_mode == UFFDMOVE_THP_NEVER,
	    "THP disabled (never): guest RAM has no huge pages to keep; "
	    "set transparent_hugepage/enabled to madvise");
	SAY(c->thp_mode == UFFDMOVE_THP_UNKNOWN,
	    "THP mode unknown: THP coverage cannot be predicted");
	SAY(!c->madv_collapse,
	    "MADV_COLLAPSE refused (Linux < 6.1 or THP disabled for this "
	    "process): copied THP chunks stay 4 KiB pages until "
	    "khugepaged collapses them");
	SAY(!c->cap_sys_ptrace && c->kernel_faults,
	    "no CAP_SYS_PTRACE: no effect, kernel-mode faults are caught "
	    "another way (see above)");
	SAY(!c->cap_sys_ptrace && !c->kernel_faults,
	    "no CAP_SYS_PTRACE: with it (or /dev/userfaultfd access) "
	    "kernel-mode faults could be caught");
	SAY(c->move && !c->pull,
	    "a new VMM cannot pull from an old one here (Yama ptrace_scope "
	    ">= 2 without CAP_SYS_PTRACE, or no pidfd): the old VMM pushes, "
	    "copying every page and collapsing THP after; see uffdmove(7), "
	    "\"Pull\"");
	SAY(c->pull && c->yama_ptrace_scope == 1,
	    "Yama ptrace_scope 1: the old VMM declares the new one its "
	    "ptracer for the session (PR_SET_PTRACER); a socketpair it made "
	    "itself names no peer: declare the new VMM yourself");
	SAY(!c->cap_sys_admin,
	    "no CAP_SYS_ADMIN: only pagemap PFNs are hidden (diagnostics)");
#undef SAY
}

static void usage(FILE *f, const char *argv0)
{
	fprintf(f,
		"Usage: %s [--json] [--help]\n"
		"\n"
		"Report what this kernel and this process allow for handing\n"
		"anonymous guest RAM between VMM processes with userfaultfd.\n"
		"Every feature is tried for real; a short-lived child process\n"
		"is forked once to try a cross-process UFFDIO_MOVE.\n"
		"\n"
		"  -j, --json   print one JSON object instead of the table\n"
		"  -h, --help   show this help\n",
		argv0);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct uffdmove_caps caps;
	bool json = false;
	int c, ret;

	while ((c = getopt_long(argc, argv, "jh", opts, NULL)) != -1) {
		switch (c) {
		case 'j':
			json = true;
			break;
		case 'h':
			usage(stdout, argv[0]);
			return EXIT_SUCCESS;
		default:
			usage(stderr, argv[0]);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "%s: unexpected argument '%s'\n", argv[0],
			argv[optind]);
		usage(stderr, argv[0]);
		return 2;
	}

	ret = uffdmove_probe(&caps);
	if (ret) {
		fprintf(stderr, "%s: uffdmove_probe: %s\n", argv[0],
			strerror(-ret));
		return EXIT_FAILURE;
	}
	if (json) {
		print_json(&caps);
	} else {
		print_table(&caps);
		print_consequences(&caps);
	}
	return fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
