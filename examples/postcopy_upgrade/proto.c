// SPDX-License-Identifier: MIT
/*
 * Our own two messages. They travel on the library's socket before the
 * handshake, strictly in turn: READY (new -> old: guest RAM is mapped and
 * registered) and STATE (old -> new, with the version table's memfd).
 * After that the socket belongs to libuffdmove.
 */
#include "toy.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MSG_MAGIC	0x50435550u	/* "PCUP" */
#define MSG_VERSION	1
#define READY_TIMEOUT_MS 10000
#define STATE_TIMEOUT_MS 30000

enum { MSG_READY = 1, MSG_STATE = 2 };

struct msg_ready {
	uint32_t magic, type;
	int32_t pid;
	uint32_t pad;
	uint64_t mem;
};

static int send_msg(int sock, const void *buf, size_t len, int fd)
{
	union {
		struct cmsghdr hdr;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct iovec iov = { (void *)buf, len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *c;

	if (fd >= 0) {
		memset(&ctl, 0, sizeof(ctl));
		msg.msg_control = ctl.buf;
		msg.msg_controllen = sizeof(ctl.buf);
		c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	if (sendmsg(sock, &msg, MSG_NOSIGNAL) != (ssize_t)len)
		return -errno;
	return 0;
}

/* Keep the first fd that came with a message in *@fd (if @fd), close the
 * rest: a peer must not leave us fds we do not know about. */
static void take_fds(struct msghdr *msg, int *fd)
{
	struct cmsghdr *c;
	size_t i, k;
	int f;

	for (c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (i = 0; i < k; i++) {
			memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof(f));
			if (fd && *fd < 0)
				*fd = f;
			else
				close(f);
		}
	}
}

/* One message of exactly @len bytes (and maybe an fd) within @timeout_ms. */
static int recv_msg(int sock, void *buf, size_t len, int *fd,
		    int timeout_ms)
{
	union {
		struct cmsghdr hdr;
		char buf[CMSG_SPACE(sizeof(int) * 4)];
	} ctl;
	struct iovec iov = { buf, len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
			      .msg_control = ctl.buf,
			      .msg_controllen = sizeof(ctl.buf) };
	struct pollfd pfd = { .fd = sock, .events = POLLIN };
	ssize_t n;
	int ret;

	if (fd)
		*fd = -1;
	ret = poll(&pfd, 1, timeout_ms);
	if (ret == 0)
		return -ETIMEDOUT;
	if (ret < 0)
		return -errno;
	n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	if (n < 0)
		return -errno;
	take_fds(&msg, fd);
	if (n == 0)
		return -ECONNRESET;
	if ((size_t)n != len || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)))
		return -EPROTO;
	return 0;
}

/* New VMM: guest RAM of @mem bytes is mapped and registered. */
int send_ready(int sock, uint64_t mem)
{
	struct msg_ready m = { MSG_MAGIC, MSG_READY, 0, 0, 0 };

	m.pid = getpid();
	m.mem = mem;
	return send_msg(sock, &m, sizeof(m), -1);
}

/* Old VMM: wait for READY; -EPROTO if it is not one, or not for @mem. */
int recv_ready(int sock, uint64_t mem, pid_t *pid)
{
	struct msg_ready m;
	int ret;

	ret = recv_msg(sock, &m, sizeof(m), NULL, READY_TIMEOUT_MS);
	if (!ret && (m.magic != MSG_MAGIC || m.type != MSG_READY ||
		     m.mem != mem))
		ret = -EPROTO;
	if (!ret)
		*pid = m.pid;
	return ret;
}

/* STATE with what the options fix; the caller adds what it measures. */
void state_init(struct msg_state *m, const struct options *o)
{
	memset(m, 0, sizeof(*m));
	m->magic = MSG_MAGIC;
	m->type = MSG_STATE;
	m->version = MSG_VERSION;
	m->vcpus = o->vcpus;
	m->mem = o->mem;
	m->seed = o->seed;
	m->thp = o->thp;
	m->old_pid = getpid();
}

int send_state(int sock, const struct msg_state *m, int ver_fd)
{
	return send_msg(sock, m, sizeof(*m), ver_fd);
}

/*
 * New VMM: wait for STATE and the version table's fd (*@ver_fd, which
 * the caller closes even on error). -EPROTO if it is not one; -EINVAL if
 * the old VMM runs another configuration than @o.
 */
int recv_state(int sock, const struct options *o, struct msg_state *m,
	       int *ver_fd)
{
	int ret;

	ret = recv_msg(sock, m, sizeof(*m), ver_fd, STATE_TIMEOUT_MS);
	if (!ret && (m->magic != MSG_MAGIC || m->type != MSG_STATE ||
		     m->version != MSG_VERSION || *ver_fd < 0))
		ret = -EPROTO;
	if (!ret && (m->mem != o->mem || m->vcpus != o->vcpus ||
		     m->seed != o->seed || !m->thp != !o->thp))
		ret = -EINVAL;
	return ret;
}
