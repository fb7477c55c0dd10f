// SPDX-License-Identifier: MIT
#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <string.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "compat.h"
#include "peer.h"
#include "util.h"

int peer_check_socket(int sock)
{
	int type = 0, domain = 0;
	socklen_t len = sizeof(type);

	if (sock < 0 ||
	    getsockopt(sock, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
		return -EINVAL;
	len = sizeof(domain);
	if (getsockopt(sock, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0)
		return -EINVAL;
	return domain == AF_UNIX && type == SOCK_SEQPACKET ? 0 : -EINVAL;
}

int peer_cred(int sock, pid_t *pid, uid_t *uid)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return -errno;
	*pid = cred.pid;
	*uid = cred.uid;
	return 0;
}

int peer_pidfd(int sock, bool is_peer, pid_t pid)
{
	socklen_t len = sizeof(int);
	int fd = -1;

	if (!is_peer || getsockopt(sock, SOL_SOCKET, SO_PEERPIDFD, &fd, &len))
		fd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (fd < 0)
		return -errno;
	fcntl(fd, F_SETFD, FD_CLOEXEC);
	return fd;
}

static int wait_for(int sock, short events, int timeout_ms)
{
	struct pollfd pfd = { .fd = sock, .events = events };
	uint64_t deadline = timeout_ms < 0 ? 0 :
			    now_ns() + (uint64_t)timeout_ms * 1000000;
	int ret, left = timeout_ms;

	for (;;) {
		ret = poll(&pfd, 1, left);
		if (ret > 0)
			return 0;
		if (ret == 0)
			return timeout_ms == 0 ? -EAGAIN : -ETIMEDOUT;
		if (errno != EINTR)
			return -errno;
		if (timeout_ms > 0) {
			uint64_t now = now_ns();

			if (now >= deadline)
				return -ETIMEDOUT;
			left = (int)((deadline - now) / 1000000) + 1;
		}
	}
}

static int conn_errno(int err)
{
	return err == EPIPE || err == ECONNREFUSED || err == ENOTCONN ?
	       -ECONNRESET : -err;
}

int peer_send(int sock, const void *buf, size_t len, int fd, int timeout_ms)
{
	union {
		struct cmsghdr hdr;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t n;
	int ret;

	if (fd >= 0) {
		struct cmsghdr *c;

		memset(&ctl, 0, sizeof(ctl));
		msg.msg_control = ctl.buf;
		msg.msg_controllen = sizeof(ctl.buf);
		c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	for (;;) {
		n = sendmsg(sock, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n >= 0)
			return (size_t)n == len ? 0 : -EMSGSIZE;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return conn_errno(errno);
		if (timeout_ms == 0)
			return -EAGAIN;
		ret = wait_for(sock, POLLOUT, timeout_ms);
		if (ret)
			return ret;
	}
}

void peer_close_fds(int *fds, size_t nfds)
{
	size_t i;

	for (i = 0; i < nfds && i < PEER_FDS_MAX; i++)
		close(fds[i]);
}

/* Collect SCM_RIGHTS fds; close every fd when there are too many. */
static void take_fds(struct msghdr *msg, int *fds, size_t *nfds)
{
	struct cmsghdr *c;
	size_t n = 0, i, k;
	bool overflow = msg->msg_flags & MSG_CTRUNC;

	for (c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (i = 0; i < k; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(fd));
			if (n < PEER_FDS_MAX)
				fds[n++] = fd;
			else {
				close(fd);
				overflow = true;
			}
		}
	}
	if (overflow) {
		peer_close_fds(fds, n);
		n = PEER_FDS_MAX + 1;
	}
	*nfds = n;
}

/* recvmsg() gives 0 for an empty message and for the end: tell them
 * apart, so an empty message is answered as malformed. */
static bool hung_up(int sock)
{
	struct pollfd pfd = { .fd = sock, .events = POLLRDHUP };

	int ret = poll(&pfd, 1, 0);

	return ret < 0 ||
	       (ret == 1 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR)));
}

int peer_recv(int sock, void *buf, size_t cap, int *fds, size_t *nfds,
	      int timeout_ms)
{
	union {
		struct cmsghdr hdr;
		char buf[CMSG_SPACE(sizeof(int) * PEER_FDS_MAX)];
	} ctl;
	struct iovec iov = { .iov_base = buf, .iov_len = cap };
	struct msghdr msg;
	ssize_t n;
	int ret;

	*nfds = 0;
	for (;;) {
		memset(&msg, 0, sizeof(msg));
		msg.msg_iov = &iov;
		msg.msg_iovlen = 1;
		msg.msg_control = ctl.buf;
		msg.msg_controllen = sizeof(ctl.buf);
		n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
		if (n >= 0)
			break;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return conn_errno(errno);
		ret = wait_for(sock, POLLIN, timeout_ms);
		if (ret)
			return ret;
	}
	take_fds(&msg, fds, nfds);
	if (n == 0 && *nfds == 0 && hung_up(sock))
		return -ECONNRESET;
	if (msg.msg_flags & MSG_TRUNC) {
		if (*nfds <= PEER_FDS_MAX)
			peer_close_fds(fds, *nfds);
		*nfds = 0;
		return -EMSGSIZE;
	}
	return (int)n;
}
