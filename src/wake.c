// SPDX-License-Identifier: MIT
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "wake.h"

int wake_open(void)
{
	int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);

	return fd < 0 ? -errno : fd;
}

void wake_kick(int efd)
{
	uint64_t one = 1;

	if (write(efd, &one, sizeof(one)) < 0) {
		/* EAGAIN: the counter is full, a wake-up is pending */
	}
}

bool wake_drain(int efd)
{
	uint64_t val;

	return read(efd, &val, sizeof(val)) == (ssize_t)sizeof(val);
}

bool wake_wait(int fd, int efd, int timeout_ms)
{
	struct pollfd pfd[2] = {
		{ .fd = fd, .events = POLLIN },
		{ .fd = efd, .events = POLLIN },
	};

	if (poll(pfd, 2, timeout_ms) <= 0)
		return false;
	return pfd[1].revents && wake_drain(efd);
}
