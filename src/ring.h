/* SPDX-License-Identifier: MIT */
/*
 * The fault loop's io_uring: one READ of uffd_msg batches kept armed on the
 * (O_NONBLOCK) uffd, and one POLL each on the peer socket and on an eventfd
 * the pushers use to say "all done" or "failed". A blocking uffd would make
 * io_uring's READ complete with -EINTR over and over: never use one.
 */
#ifndef UFFDMOVE_RING_H
#define UFFDMOVE_RING_H

#include <liburing.h>
#include <stdbool.h>
#include <stddef.h>

#include "compat.h"

#define RING_MSGS 16

struct ring {
	struct io_uring uring;
	int uffd, sock, efd;
	struct uffd_msg msgs[RING_MSGS];
	bool read_armed, sock_armed, efd_armed;
	uint64_t read_armed_ns;	/* the armed READ reads events after this */
};

struct ring_events {
	size_t nmsgs;		/* uffd messages copied out */
	uint64_t read_since_ns;	/* they were read after this time */
	bool sock;		/* socket readable or hung up */
	bool efd;		/* eventfd signalled (already reset) */
};

int ring_init(struct ring *r, int uffd, int sock, int efd);
void ring_fini(struct ring *r);
/*
 * Wait for events: spin on the completion queue for @spin_us (waking a
 * sleeping thread costs ~3x on this class of VM), then sleep up to
 * @timeout_ms (< 0: forever; 0: do not sleep). Messages go to @out.
 */
int ring_wait(struct ring *r, struct uffd_msg *out, size_t cap,
	      struct ring_events *ev, unsigned int spin_us, int timeout_ms);
/* Is anything waiting that ring_wait() would return now: a completion,
 * or an event on the uffd that its READ has not completed with yet? */
bool ring_ready(void *ring);

#endif /* UFFDMOVE_RING_H */
