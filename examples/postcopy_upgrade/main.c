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
 * Where to read on: old_vmm.c and new_vmm.c are the two roles, and
 * same_process.c both in one process; postcopy.c is the target's side
 * that the last two share. guest.c, vcpu.c and pattern.c simulate the
 * guest, ram.c maps its RAM; proto.c is our own two messages; report.c
 * prints; options.c parses the command line.
 *
 * Builds with the public header and libc only, in this folder:
 *   cc *.c $(pkg-config --cflags --libs libuffdmove) -pthread
 */
#include "toy.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

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
