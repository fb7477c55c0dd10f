// SPDX-License-Identifier: MIT
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "uffd.h"
#include "util.h"

int uffd_open(int flags)
{
	int dev, fd;

	dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev >= 0) {
		fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
		close(dev);
		if (fd >= 0)
			return fd;
	}
	return neg_errno((int)syscall(SYS_userfaultfd, flags));
}

/* Linux < 5.11 does not know UFFD_USER_MODE_ONLY (EINVAL); there every
 * uffd catches kernel faults too. */
int uffd_open_user(void)
{
	int fd = uffd_open(O_CLOEXEC | UFFD_USER_MODE_ONLY);

	return fd == -EINVAL ? uffd_open(O_CLOEXEC) : fd;
}

int uffd_api(int fd, uint64_t features, uint64_t *offered, uint64_t *ioctls)
{
	struct uffdio_api api = { .api = UFFD_API, .features = features };

	if (ioctl(fd, UFFDIO_API, &api) < 0)
		return -errno;
	if (offered)
		*offered = api.features;
	if (ioctls)
		*ioctls = api.ioctls;
	return 0;
}

int uffd_offered(uint64_t *features)
{
	int fd = uffd_open(O_CLOEXEC | O_NONBLOCK), ret;

	if (fd < 0)
		return fd;
	ret = uffd_api(fd, 0, features, NULL);
	close(fd);
	return ret;
}

int uffd_register(int fd, void *addr, size_t len, uint64_t mode,
		  uint64_t *ioctls)
{
	struct uffdio_register reg = {
		.range = { .start = (uintptr_t)addr, .len = len },
		.mode = mode,
	};

	if (ioctl(fd, UFFDIO_REGISTER, &reg) < 0)
		return -errno;
	if (ioctls)
		*ioctls = reg.ioctls;
	return 0;
}

int uffd_unregister(int fd, void *addr, size_t len)
{
	struct uffdio_range range = { .start = (uintptr_t)addr, .len = len };

	return neg_errno(ioctl(fd, UFFDIO_UNREGISTER, &range));
}

int uffd_wake(int fd, uint64_t addr, size_t len)
{
	struct uffdio_range range = { .start = addr, .len = len };

	return neg_errno(ioctl(fd, UFFDIO_WAKE, &range));
}

/* The kernel stores bytes done, or -errno, in a signed field. */
static size_t progress(__s64 field)
{
	return field > 0 ? (size_t)field : 0;
}

/* One range ioctl; the kernel stores bytes done, or -errno, in @field. */
static int range_op(int fd, unsigned long req, void *arg,
		    const __s64 *field, size_t len, size_t *done)
{
	int ret = neg_errno(ioctl(fd, req, arg));

	*done = ret ? progress(*field) : len;
	return ret;
}

int uffd_copy(int fd, uint64_t dst, const void *src, size_t len, uint64_t mode,
	      size_t *done)
{
	struct uffdio_copy c = {
		.dst = dst, .src = (uintptr_t)src, .len = len, .mode = mode,
	};

	return range_op(fd, UFFDIO_COPY, &c, &c.copy, len, done);
}

int uffd_zeropage(int fd, uint64_t dst, size_t len, size_t *done)
{
	struct uffdio_zeropage z = { .range = { .start = dst, .len = len } };

	return range_op(fd, UFFDIO_ZEROPAGE, &z, &z.zeropage, len, done);
}

int uffd_move(int fd, uint64_t dst, uint64_t src, size_t len, uint64_t mode,
	      size_t *done)
{
	struct uffdio_move m = {
		.dst = dst, .src = src, .len = len, .mode = mode,
	};

	return range_op(fd, UFFDIO_MOVE, &m, &m.move, len, done);
}

int uffd_poison(int fd, uint64_t dst, size_t len, size_t *done)
{
	struct uffdio_poison p = { .range = { .start = dst, .len = len } };

	return range_op(fd, UFFDIO_POISON, &p, &p.updated, len, done);
}

/* The kernel marks a context whose UFFDIO_API is done with this bit of the
 * features it prints in fdinfo (older kernels: any feature at all). */
#define FDINFO_INITIALIZED	(1ULL << 31)

int uffd_features(int fd, uint64_t *features, bool *ready)
{
	char path[64], line[128];
	unsigned long long api, feat, ioctls;
	ssize_t n;
	FILE *f;
	int ret = -ENOTTY;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, line, sizeof(line) - 1);
	if (n < 0)
		return -errno;
	line[n] = '\0';
	if (strcmp(line, "anon_inode:[userfaultfd]"))
		return -ENOTTY;
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "API:\t%llx:%llx:%llx", &api, &feat,
			   &ioctls) == 3) {
			*ready = feat != 0;
			*features = feat & ~FDINFO_INITIALIZED;
			ret = 0;
		}
	fclose(f);
	return ret;
}
