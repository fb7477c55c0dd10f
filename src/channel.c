// SPDX-License-Identifier: MIT
/*
 * The handoff's socket over a channel the two VMMs already share, a unix
 * stream socket say (doc/design.md, "Sockets"). The new VMM makes a
 * SOCK_SEQPACKET pair and sends one end behind a 4-byte tag; the old VMM
 * takes it. The new VMM is the pair's creator, so SO_PEERCRED on the old
 * VMM's end names it: the peer the source authenticates and, for a pull,
 * declares its ptracer.
 */
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "error.h"
#include "peer.h"
#include "uffdmove.h"
#include "util.h"

#define CHANNEL_TAG	"UFMV"
#define CHANNEL_TAG_LEN	4

static int fail(int errnum, const char *what, int channel)
{
	char msg[160];

	snprintf(msg, sizeof(msg), "%s (channel fd %d): %s", what, channel,
		 strerror(errnum));
	return err_keep_new(errnum, msg);
}

UFFDMOVE_EXPORT int uffdmove_target_socket(int channel)
{
	int sv[2], ret;

	err_forget();
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv))
		return fail(errno, "socketpair", channel);
	ret = peer_send(channel, CHANNEL_TAG, CHANNEL_TAG_LEN, sv[1], -1);
	close(sv[1]);
	if (ret) {
		close(sv[0]);
		return fail(-ret, "sending the handoff's socket", channel);
	}
	return sv[0];
}

UFFDMOVE_EXPORT int uffdmove_source_socket(int channel, int timeout_ms)
{
	char tag[CHANNEL_TAG_LEN];
	int fds[PEER_FDS_MAX];
	size_t nfds = 0;
	int len;

	err_forget();
	len = peer_recv(channel, tag, sizeof(tag), fds, &nfds,
			timeout_ms < 0 ? -1 : timeout_ms);
	if (len < 0)
		return fail(-len, "receiving the handoff's socket", channel);
	if (nfds > PEER_FDS_MAX)
		nfds = 0;	/* closed already */
	if (len != CHANNEL_TAG_LEN || memcmp(tag, CHANNEL_TAG, sizeof(tag)) ||
	    nfds != 1 || peer_check_socket(fds[0])) {
		peer_close_fds(fds, nfds);
		return err_keep_new(EPROTO,
				    "the channel did not carry a handoff socket from uffdmove_target_socket() next: other data, or no SOCK_SEQPACKET socket came with it");
	}
	return fds[0];
}
