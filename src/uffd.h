/* SPDX-License-Identifier: MIT */
/*
 * Thin userfaultfd wrappers: each returns 0 or -errno. Operations with a
 * progress field write the bytes done to *done (0 when the kernel stored an
 * errno there), so no caller ever reads the signed field.
 */
#ifndef UFFDMOVE_UFFD_H
#define UFFDMOVE_UFFD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "compat.h"

/* Open a uffd: /dev/userfaultfd first, then the syscall. @flags: O_CLOEXEC,
 * O_NONBLOCK, UFFD_USER_MODE_ONLY. */
int uffd_open(int flags);
/*
 * A uffd that catches user-mode faults only: what every process may open
 * whatever vm.unprivileged_userfaultfd says (close-on-exec).
 */
int uffd_open_user(void);
/* UFFDIO_API: request @features; *offered gets what the kernel offers
 * (when @features is 0 this is a probe). Once per fd. */
int uffd_api(int fd, uint64_t features, uint64_t *offered, uint64_t *ioctls);
/* The features UFFDIO_API offers, asked of a scratch uffd: 0 or -errno. */
int uffd_offered(uint64_t *features);
int uffd_register(int fd, void *addr, size_t len, uint64_t mode,
		  uint64_t *ioctls);
int uffd_unregister(int fd, void *addr, size_t len);
int uffd_wake(int fd, uint64_t addr, size_t len);
int uffd_copy(int fd, uint64_t dst, const void *src, size_t len, uint64_t mode,
	      size_t *done);
int uffd_zeropage(int fd, uint64_t dst, size_t len, size_t *done);
int uffd_move(int fd, uint64_t dst, uint64_t src, size_t len, uint64_t mode,
	      size_t *done);
int uffd_poison(int fd, uint64_t dst, size_t len, size_t *done);
/*
 * What the kernel says of @fd in /proc/self/fdinfo: its negotiated
 * features, and whether UFFDIO_API was done (@ready). -ENOTTY when @fd is
 * no userfaultfd.
 */
int uffd_features(int fd, uint64_t *features, bool *ready);

#endif /* UFFDMOVE_UFFD_H */
