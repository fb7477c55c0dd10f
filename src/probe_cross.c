// SPDX-License-Identifier: MIT
/*
 * The one probe that forks: does this kernel MOVE a page into another
 * process's mm? A child registers a page with a uffd of its own and hands
 * it over; we try one real UFFDIO_MOVE into it. Run only when the caller
 * asks, by uffdmove_probe() (see probe.c).
 */
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mem.h"
#include "peer.h"
#include "probe.h"
#include "uffd.h"
#include "util.h"

/* How long either side waits for the other. */
#define XPROC_TIMEOUT_S		2

/* Child to parent: the page the child registered, and the uffd. */
struct xproc_msg {
	uint64_t addr;
	int32_t err;	/* 0, or the -errno that stopped the child */
	uint32_t pad;
};

/*
 * The child: creates a uffd for its own mm with MOVE negotiated, registers
 * one missing page, hands both to the parent and waits until the parent
 * has tried and hung up, so that its mm is alive during the MOVE.
 *
 * It runs in a copy of a possibly multi-threaded process: async-signal-safe
 * calls only, no malloc, no stdio, and _exit().
 */
static void __attribute__((noreturn)) xproc_child(int sock)
{
	struct xproc_msg msg = { 0 };
	void *page;
	char byte;
	int fd;

	fd = uffd_open_user();
	if (fd < 0) {
		msg.err = fd;
		goto send;
	}
	msg.err = uffd_api(fd, UFFD_FEATURE_MOVE, NULL, NULL);
	if (msg.err)
		goto send;
	page = mem_map(PAGE_SZ);
	if (!page) {
		msg.err = -errno;
		goto send;
	}
	msg.err = uffd_register(fd, page, PAGE_SZ,
				UFFDIO_REGISTER_MODE_MISSING, NULL);
	if (msg.err)
		goto send;

	msg.addr = (uintptr_t)page;
send:
	/* peer_send() is async-signal-safe: sendmsg and poll only */
	if (!peer_send(sock, &msg, sizeof(msg), msg.err ? -1 : fd, -1)) {
		/* EOF (the parent shut down) or the receive timeout ends it */
		while (read(sock, &byte, 1) < 0 && errno == EINTR)
			;
	}
	_exit(0);
}

/* The uffd and page address from the child; -errno if it sent none. */
static int xproc_recv(int sock, uint64_t *addr)
{
	struct xproc_msg msg = { 0 };
	int fds[PEER_FDS_MAX], n;
	size_t nfds;

	n = peer_recv(sock, &msg, sizeof(msg), fds, &nfds,
		      XPROC_TIMEOUT_S * 1000);
	if (n != (int)sizeof(msg) || msg.err || nfds != 1) {
		if (nfds <= PEER_FDS_MAX)
			peer_close_fds(fds, nfds);
		return n < 0 ? n : msg.err ? msg.err : -EPROTO;
	}
	*addr = msg.addr;
	return fds[0];
}

/* One MOVE of a page of ours into the child's mm, through its uffd. */
static bool xproc_try_move(int ufd, uint64_t dst)
{
	size_t done;
	char *page;
	int ret;

	page = mem_map(PAGE_SZ);
	if (!page)
		return false;
	memset(page, 0x5a, PAGE_SZ);
	/* upstream answers EINVAL: "no cross-mm moves" */
	ret = uffd_move(ufd, dst, (uintptr_t)page, PAGE_SZ, 0, &done);
	munmap(page, PAGE_SZ);
	return ret == 0 && done == PAGE_SZ;
}

/*
 * The child is cloned without an exit signal (a fork in all but that):
 * no SIGCHLD reaches the application, its reaper (waitpid(-1) without
 * __WALL) cannot steal our child, and no pthread_atfork handlers run in
 * the middle of a library call. All signals stay blocked in the child.
 */
static pid_t xproc_spawn(int sv[2])
{
	sigset_t all, old;
	pid_t pid;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pid = (pid_t)syscall(SYS_clone, 0UL, NULL, NULL, NULL, 0UL);
	if (pid == 0) {
		close(sv[0]);
		xproc_child(sv[1]);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return pid;
}

bool probe_cross_move(void)
{
	struct timeval tv = { .tv_sec = XPROC_TIMEOUT_S };
	uint64_t addr = 0;
	bool moved = false;
	int sv[2], ufd;
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return false;
	/* bounded waits on both sides: neither can hang the other */
	if (setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
	    setsockopt(sv[1], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0) {
		close(sv[0]);
		close(sv[1]);
		return false;
	}

	pid = xproc_spawn(sv);
	close(sv[1]);
	if (pid < 0) {
		close(sv[0]);
		return false;
	}

	ufd = xproc_recv(sv[0], &addr);
	if (ufd >= 0) {
		moved = xproc_try_move(ufd, addr);
		close(ufd);
	}
	/* shutdown, not just close: EOF even if another fork holds sv[0] */
	shutdown(sv[0], SHUT_RDWR);
	close(sv[0]);
	if (ufd < 0)
		kill(pid, SIGKILL);
	while (waitpid(pid, NULL, __WALL) < 0 && errno == EINTR)
		;
	return moved;
}

