// SPDX-License-Identifier: MIT
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "ring.h"
#include "util.h"

enum { TAG_READ = 1, TAG_SOCK, TAG_EFD };

int ring_init(struct ring *r, int uffd, int sock, int efd)
{
	int ret;

	memset(r, 0, sizeof(*r));
	r->uffd = uffd;
	r->sock = sock;
	r->efd = efd;
	ret = io_uring_queue_init(8, &r->uring, 0);
	if (ret < 0)
		r->uring.ring_fd = -1;
	return ret;
}

void ring_fini(struct ring *r)
{
	if (r->uring.ring_fd >= 0)
		io_uring_queue_exit(&r->uring);
	r->uring.ring_fd = -1;
}

static int arm(struct ring *r)
{
	struct io_uring_sqe *sqe;
	bool queued = false;

	if (!r->read_armed && (sqe = io_uring_get_sqe(&r->uring))) {
		io_uring_prep_read(sqe, r->uffd, r->msgs, sizeof(r->msgs), 0);
		io_uring_sqe_set_data64(sqe, TAG_READ);
		r->read_armed_ns = now_ns();
		r->read_armed = queued = true;
	}
	if (r->sock >= 0 && !r->sock_armed &&
	    (sqe = io_uring_get_sqe(&r->uring))) {
		io_uring_prep_poll_add(sqe, r->sock, POLLIN | POLLRDHUP);
		io_uring_sqe_set_data64(sqe, TAG_SOCK);
		r->sock_armed = queued = true;
	}
	if (r->efd >= 0 && !r->efd_armed &&
	    (sqe = io_uring_get_sqe(&r->uring))) {
		io_uring_prep_poll_add(sqe, r->efd, POLLIN);
		io_uring_sqe_set_data64(sqe, TAG_EFD);
		r->efd_armed = queued = true;
	}
	return queued ? io_uring_submit(&r->uring) : 0;
}

static int reap(struct ring *r, struct io_uring_cqe *cqe,
		struct uffd_msg *out, size_t cap, struct ring_events *ev)
{
	int res = cqe->res;
	uint64_t tag = io_uring_cqe_get_data64(cqe);
	uint64_t val;
	size_t n;

	io_uring_cqe_seen(&r->uring, cqe);
	switch (tag) {
	case TAG_READ:
		r->read_armed = false;
		if (res == -EAGAIN || res == -EINTR)
			return 0;
		if (res < 0)
			return res;
		n = (size_t)res / sizeof(struct uffd_msg);
		n = MIN(n, cap - ev->nmsgs);
		memcpy(out + ev->nmsgs, r->msgs, n * sizeof(*out));
		ev->read_since_ns = r->read_armed_ns;
		ev->nmsgs += n;
		return 0;
	case TAG_SOCK:
		r->sock_armed = false;
		ev->sock = true;
		return 0;
	case TAG_EFD:
		r->efd_armed = false;
		if (read(r->efd, &val, sizeof(val)) < 0 && errno != EAGAIN)
			return -errno;
		ev->efd = true;
		return 0;
	default:
		return 0;
	}
}

bool ring_ready(void *ring)
{
	struct pollfd pfd = { .events = POLLIN };
	struct ring *r = ring;

	if (io_uring_cq_ready(&r->uring))
		return true;
	/* A fault that came while we were in an ioctl is often not in the
	 * completion queue yet (measured: 5 of ~130 seen); the uffd says. */
	pfd.fd = r->uffd;
	return poll(&pfd, 1, 0) > 0;
}

int ring_wait(struct ring *r, struct uffd_msg *out, size_t cap,
	      struct ring_events *ev, unsigned int spin_us, int timeout_ms)
{
	struct __kernel_timespec ts;
	struct io_uring_cqe *cqe;
	uint64_t spin_end;
	int ret;

	memset(ev, 0, sizeof(*ev));
	if (cap < RING_MSGS)
		return -EINVAL;
	ret = arm(r);
	if (ret < 0)
		return ret;

	spin_end = now_ns() + spin_us * 1000ULL;
	for (;;) {
		ret = io_uring_peek_cqe(&r->uring, &cqe);
		if (ret == 0)
			break;
		if (now_ns() >= spin_end)
			break;
	}
	if (ret) {
		if (timeout_ms == 0)
			return 0;
		if (timeout_ms > 0) {
			ts.tv_sec = timeout_ms / 1000;
			ts.tv_nsec = (timeout_ms % 1000) * 1000000LL;
			ret = io_uring_wait_cqe_timeout(&r->uring, &cqe, &ts);
		} else {
			ret = io_uring_wait_cqe(&r->uring, &cqe);
		}
		if (ret == -ETIME || ret == -EINTR)
			return 0;
		if (ret)
			return ret;
	}
	/* Everything that completed meanwhile, so reads are batched. */
	do {
		ret = reap(r, cqe, out, cap, ev);
		if (ret)
			return ret;
		if (ev->nmsgs + RING_MSGS > cap)
			break;
	} while (io_uring_peek_cqe(&r->uring, &cqe) == 0);
	return 0;
}
