/* SPDX-License-Identifier: MIT */
/*
 * Wake-ups between the library's threads: an eventfd that one thread
 * kicks and another waits on beside the fd it really serves.
 */
#ifndef UFFDMOVE_WAKE_H
#define UFFDMOVE_WAKE_H

#include <stdbool.h>

/* A non-blocking, close-on-exec eventfd, or -errno. */
int wake_open(void);
/* Kick it; a full counter means it is being kicked already. */
void wake_kick(int efd);
/* Reset it; whether it had been kicked. */
bool wake_drain(int efd);
/*
 * Wait until @fd is readable or @efd kicked, at most @timeout_ms (< 0:
 * no limit). Returns whether @efd was kicked (and resets it).
 */
bool wake_wait(int fd, int efd, int timeout_ms);

#endif /* UFFDMOVE_WAKE_H */
