/* SPDX-License-Identifier: MIT */
/* The socket side: credentials, fd passing, deadlines. 0/-errno. */
#ifndef UFFDMOVE_PEER_H
#define UFFDMOVE_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define PEER_FDS_MAX 4

/* Check @sock is a connected AF_UNIX SOCK_SEQPACKET socket: 0 or -EINVAL. */
int peer_check_socket(int sock);
/* The peer's credentials; -errno from getsockopt. */
int peer_cred(int sock, pid_t *pid, uid_t *uid);
/* A pidfd (close-on-exec) for process @pid. When it is the socket's peer
 * (@is_peer), from SO_PEERPIDFD where the kernel has it: no pid reuse is
 * possible then. Else pidfd_open(), which the caller must prove. */
int peer_pidfd(int sock, bool is_peer, pid_t pid);
/* Send one message with an optional fd (-1: none). @timeout_ms < 0 blocks;
 * 0 never waits (-EAGAIN). -ECONNRESET when the peer is gone. */
int peer_send(int sock, const void *buf, size_t len, int fd, int timeout_ms);
/*
 * Receive one message into @buf. Returns its length (0 for an empty
 * message while the peer is still there); -ETIMEDOUT after
 * @timeout_ms (< 0 blocks, 0 polls: -EAGAIN); -ECONNRESET on hang-up;
 * -EMSGSIZE when the message did not fit (it is consumed). Received fds
 * (CLOEXEC) go to @fds, their number to *nfds; when more arrive than fit
 * they are all closed and *nfds is PEER_FDS_MAX + 1.
 */
int peer_recv(int sock, void *buf, size_t cap, int *fds, size_t *nfds,
	      int timeout_ms);
void peer_close_fds(int *fds, size_t nfds);

#endif /* UFFDMOVE_PEER_H */
