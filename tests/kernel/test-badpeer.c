// SPDX-License-Identifier: MIT
/*
 * Hostile and broken peers: every bad HELLO gets its specific error and a
 * message naming the field, before any page is touched; no fd leaks; the
 * guest memory on both sides is unchanged.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "guest.h"
#include "harness.h"
#include "peer.h"
#include "uffd.h"
#include "wire.h"

static const struct guest layout = {
	.n = 1, .seed = 5, .hole_pct = 20,
	.spec = { { "ram0", 4UL << 20, false, 0 } },
};

/* What a raw client sends instead of a proper HELLO. */
struct bad {
	const char *name;
	void (*mangle)(struct wire_msg *m, unsigned char *buf, int *len);
	int nfds;		/* real uffds attached (0, 1, 2) */
	bool pipe_fd;		/* attach a pipe instead of a uffd */
	int want;		/* accept's -errno */
	const char *says;	/* in the message */
};

static void m_none(struct wire_msg *m, unsigned char *b, int *len) { }

static void m_magic(struct wire_msg *m, unsigned char *b, int *len)
{
	b[0] ^= 0xff;
}

static void m_version(struct wire_msg *m, unsigned char *b, int *len)
{
	b[4] = 7;
}

static void m_truncate(struct wire_msg *m, unsigned char *b, int *len)
{
	*len -= 10;
}

static void m_reserved(struct wire_msg *m, unsigned char *b, int *len)
{
	b[12] = 1;
}

static void m_length(struct wire_msg *m, unsigned char *b, int *len)
{
	m->hello.regions[0].len += 2UL << 20;
}

/* The encoder refuses what would not decode, so some damage is done to
 * the bytes (*len > 0: after encoding). HELLO's first region starts at
 * byte 48: name[32], addr, len, page_size, flags, ioctls. */
#define REGION0_ADDR	80
#define REGION1_ADDR	(REGION0_ADDR + 64)

static void m_unaligned(struct wire_msg *m, unsigned char *b, int *len)
{
	if (*len)
		b[REGION0_ADDR] += 100;
}

static void m_name(struct wire_msg *m, unsigned char *b, int *len)
{
	strcpy(m->hello.regions[0].name, "other");
}

static void m_overlap(struct wire_msg *m, unsigned char *b, int *len)
{
	uint64_t a = m->hello.regions[0].addr + 4096;

	if (*len) {
		memcpy(b + REGION1_ADDR, &a, sizeof(a));
		return;
	}
	m->hello.n_regions = 2;
	m->hello.regions[1] = m->hello.regions[0];
	strcpy(m->hello.regions[1].name, "ram1");
	m->hello.regions[1].addr += 64UL << 20;
}

static void m_oversized(struct wire_msg *m, unsigned char *b, int *len)
{
	*len = WIRE_MSG_MAX + 100;
}

/* HELLO claims no events; the uffd has them. */
static void m_features_lie(struct wire_msg *m, unsigned char *b, int *len)
{
	m->hello.features = 0;
}

/* An honest target whose uffd lacks the events (see client()). */
static void m_events(struct wire_msg *m, unsigned char *b, int *len)
{
	m->hello.features = 0;
}

static void m_type(struct wire_msg *m, unsigned char *b, int *len)
{
	m->type = WIRE_GO;
}

static const struct bad bads[] = {
	{ "no-fd", m_none, 0, false, -EPROTO, "exactly one fd" },
	{ "two-fds", m_none, 2, false, -EPROTO, "exactly one fd" },
	{ "not-a-uffd", m_none, 0, true, -EPROTO, "not a userfaultfd" },
	{ "bad-magic", m_magic, 1, false, -EPROTO, "magic" },
	{ "bad-version", m_version, 1, false, -EPROTO, "version" },
	{ "truncated", m_truncate, 1, false, -EPROTO, "bytes" },
	{ "reserved", m_reserved, 1, false, -EPROTO, "reserved" },
	{ "length-mismatch", m_length, 1, false, -EINVAL,
	  "region 'ram0': target length 6291456 != source length 4194304" },
	{ "unaligned", m_unaligned, 1, false, -EINVAL, "aligned" },
	{ "unknown-name", m_name, 1, false, -EINVAL, "'ram0'" },
	{ "overlap", m_overlap, 1, false, -EINVAL, "overlap" },
	{ "oversized", m_oversized, 1, false, -EPROTO, "larger" },
	{ "no-remove-events", m_events, 1, false, -EPROTO, "REMOVE" },
	{ "features-lie", m_features_lie, 1, false, -EPROTO,
	  "HELLO says features" },
	{ "not-hello", m_type, 1, false, -EPROTO, "expected HELLO" },
};

/* The client: a registered uffd and a HELLO, then mangled. Exits 0 when
 * it received REJECT carrying @want. */
static int client(int sock, const struct bad *b, void *ram)
{
	struct wire_msg *m = calloc(1, sizeof(*m));
	unsigned char buf[WIRE_MSG_MAX + 200] = { 0 };
	union {
		struct cmsghdr h;
		char c[CMSG_SPACE(2 * sizeof(int))];
	} ctl;
	struct iovec iov;
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	int fds[2], uffd, p[2], len, n;
	uint64_t ioctls = 0, feat;
	size_t nfds;

	uffd = uffd_open(O_CLOEXEC | O_NONBLOCK);
	if (uffd < 0 || uffd_api(uffd, b->mangle == m_events ? 0 :
				 UFFD_FEATURE_EVENT_REMOVE |
				 UFFD_FEATURE_EVENT_UNMAP |
				 UFFD_FEATURE_EVENT_REMAP, &feat, NULL) ||
	    uffd_register(uffd, ram, 4UL << 20, UFFDIO_REGISTER_MODE_MISSING,
			  &ioctls))
		return 10;
	m->type = WIRE_HELLO;
	m->hello.features = UFFD_FEATURE_EVENT_REMOVE |
			    UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMAP;
	m->hello.n_regions = 1;
	strcpy(m->hello.regions[0].name, "ram0");
	m->hello.regions[0].addr = (uintptr_t)ram;
	m->hello.regions[0].len = 4UL << 20;
	m->hello.regions[0].page_size = 4096;
	m->hello.regions[0].ioctls = ioctls;
	len = 0;
	b->mangle(m, buf, &len);	/* struct-level changes */
	len = wire_encode(m, buf, sizeof(buf));
	if (len < 0)
		return 11;
	b->mangle(m, buf, &len);	/* byte-level changes */

	fds[0] = fds[1] = uffd;
	nfds = (size_t)b->nfds;
	if (b->pipe_fd) {
		if (pipe(p))
			return 12;
		fds[0] = p[0];
		nfds = 1;
	}
	iov.iov_base = buf;
	iov.iov_len = (size_t)len;
	if (nfds) {
		struct cmsghdr *c;

		memset(&ctl, 0, sizeof(ctl));
		msg.msg_control = ctl.c;
		msg.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
		c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
		memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
	}
	if (sendmsg(sock, &msg, MSG_NOSIGNAL) != len)
		return 13;
	n = peer_recv(sock, buf, sizeof(buf), fds, &nfds, 5000);
	if (n < 0 || wire_decode(buf, (size_t)n, m, NULL, 0) ||
	    m->type != WIRE_REJECT)
		return 14;
	return -(int)m->reason.errnum == b->want ? 0 : 15;
}

static int run_bad(const struct bad *b)
{
	struct guest g = layout;
	struct uffdmove_region r[1];
	struct uffdmove_source *s;
	char why[256];
	int sv[2], fds_before, ret, status;
	pid_t pid;

	guest_map(&g);
	guest_fill(&g);
	guest_regions(&g, r);
	pid = t_fork_peer(sv, 30);
	if (pid == 0)
		_exit(client(sv[1], b, t_map(4UL << 20, false)));
	fds_before = t_count_fds();
	T_CHECK(uffdmove_source_new(&s, r, 1, NULL) == 0, "source_new");
	ret = uffdmove_source_accept(s, sv[0]);
	printf("  %s: %d %s\n", b->name, ret, uffdmove_source_error(s));
	T_CHECK(ret == b->want, "%s: accept returned %d, expected %d",
		b->name, ret, b->want);
	T_CHECK(strstr(uffdmove_source_error(s), b->says),
		"%s: message '%s' does not say '%s'", b->name,
		uffdmove_source_error(s), b->says);
	T_CHECK(uffdmove_source_run(s) == -EINVAL, "run after a failed accept");
	uffdmove_source_free(s);
	T_CHECK(t_count_fds() == fds_before, "%s: fds leaked (%d -> %d)",
		b->name, fds_before, t_count_fds());
	status = t_wait(pid);
	T_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		"%s: the peer did not get REJECT with the errno (status %d)",
		b->name, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	T_CHECK(guest_verify_source(&g, why, sizeof(why)) == 0,
		"%s: source memory changed: %s", b->name, why);
	close(sv[0]);
	guest_unmap(&g);
	return T_PASS;
}

static int malformed_hellos(struct t_ctx *ctx)
{
	size_t i;

	for (i = 0; i < sizeof(bads) / sizeof(bads[0]); i++)
		if (run_bad(&bads[i]))
			return T_FAIL;
	return T_PASS;
}

/* A peer running as another uid is refused before anything is read. */
static int wrong_uid(struct t_ctx *ctx)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct guest g = layout;
	struct uffdmove_region r[1];
	struct uffdmove_source *s;
	char why[256];
	int lfd, sock, ret, status;
	pid_t pid;

	if (geteuid() != 0)
		return t_case_skip(ctx, "needs root to run the peer as another uid");
	snprintf(sa.sun_path + 1, sizeof(sa.sun_path) - 1, "uffdmove-test-%d",
		 getpid());
	lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	T_CHECK(lfd >= 0 && bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
		listen(lfd, 1) == 0, "listen");
	pid = fork();
	if (pid == 0) {
		int c;
		char buf[512];

		t_child(30);
		if (setresgid(65534, 65534, 65534) || setresuid(65534, 65534, 65534))
			_exit(20);
		c = socket(AF_UNIX, SOCK_SEQPACKET, 0);
		if (connect(c, (struct sockaddr *)&sa, sizeof(sa)))
			_exit(21);
		/* The source may have refused us already (it checks the
		 * uid before it reads): then this fails, and the REJECT
		 * waits in our queue all the same. */
		(void)send(c, "HELLO?", 6, MSG_NOSIGNAL);
		/* the answer: REJECT, then hang-up */
		if (read(c, buf, sizeof(buf)) > 0)
			_exit(0);
		perror("wrong-uid peer: read");
		_exit(23);
	}
	sock = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	T_CHECK(sock >= 0, "accept");
	guest_map(&g);
	guest_fill(&g);
	guest_regions(&g, r);
	T_CHECK(uffdmove_source_new(&s, r, 1, NULL) == 0, "source_new");
	ret = uffdmove_source_accept(s, sock);
	printf("  %d %s\n", ret, uffdmove_source_error(s));
	T_CHECK(ret == -EPERM, "accept returned %d", ret);
	T_CHECK(strstr(uffdmove_source_error(s),
		       "peer uid 65534 is not the expected uid 0"),
		"message: %s", uffdmove_source_error(s));
	uffdmove_source_free(s);
	close(sock);
	status = t_wait(pid);
	T_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		"peer status 0x%x", status);
	T_CHECK(guest_verify_source(&g, why, sizeof(why)) == 0, "%s", why);
	close(lfd);
	guest_unmap(&g);
	return T_PASS;
}

/* Nobody speaks: the handshake deadline ends it. */
static int handshake_deadline(struct t_ctx *ctx)
{
	struct guest g = layout;
	struct uffdmove_region r[1];
	struct uffdmove_source_opts o;
	struct uffdmove_source *s;
	uint64_t t0;
	int sv[2], ret;

	guest_map(&g);
	guest_regions(&g, r);
	T_CHECK(t_seqpacket_pair(sv) == 0, "socketpair");
	uffdmove_source_opts_init(&o);
	o.handshake_timeout_ms = 200;
	T_CHECK(uffdmove_source_new(&s, r, 1, &o) == 0, "source_new");
	t0 = (uint64_t)time(NULL);
	ret = uffdmove_source_accept(s, sv[0]);
	T_CHECK(ret == -ETIMEDOUT, "accept returned %d", ret);
	T_CHECK((uint64_t)time(NULL) - t0 <= 2, "deadline not kept");
	uffdmove_source_free(s);
	close(sv[0]);
	close(sv[1]);
	guest_unmap(&g);
	return T_PASS;
}

/*
 * A real target whose regions do not match: the source REJECTs, the
 * target reports why and gives its RAM back untouched and unregistered.
 */
static int target_rejected(struct t_ctx *ctx)
{
	struct guest src = layout, dst = layout;
	struct uffdmove_region rs[1], rd[1];
	struct uffdmove_source *s;
	struct uffdmove_target *t;
	char why[256];
	int sv[2], ret, status;
	pid_t pid;

	guest_map(&src);
	guest_fill(&src);
	guest_regions(&src, rs);
	pid = t_fork_peer(sv, 30);
	if (pid == 0) {
		if (uffdmove_source_new(&s, rs, 1, NULL))
			_exit(30);
		_exit(uffdmove_source_accept(s, sv[1]) == -EINVAL ? 0 : 31);
	}
	dst.spec[0].len = 2UL << 20;
	guest_map(&dst);
	guest_regions(&dst, rd);
	T_CHECK(uffdmove_target_new(&t, rd, 1, NULL) == 0, "target_new");
	ret = uffdmove_target_handoff(t, sv[0]);
	printf("  %d %s\n", ret, uffdmove_target_error(t));
	T_CHECK(ret == -EINVAL, "handoff returned %d", ret);
	T_CHECK(strstr(uffdmove_target_error(t), "target length 2097152 != source length 4194304"),
		"message: %s", uffdmove_target_error(t));
	/* Released: no page arrived, and touching one does not block (the
	 * watchdog would fire) but reads zero like any fresh memory. */
	T_CHECK(!(t_pagemap(dst.addr[0]) & T_PM_PRESENT), "a page arrived");
	T_CHECK(t_is_zero(dst.addr[0], 2UL << 20), "target RAM not zero");
	T_CHECK(uffdmove_target_process(t) == -EINVAL, "process after reject");
	uffdmove_target_free(t);
	status = t_wait(pid);
	T_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		"source status 0x%x", status);
	T_CHECK(guest_verify_source(&src, why, sizeof(why)) == 0, "%s", why);
	close(sv[0]);
	guest_unmap(&src);
	guest_unmap(&dst);
	return T_PASS;
}

/* A second HELLO in the middle of the handoff ends it with -EPROTO. */
static int second_hello(struct t_ctx *ctx)
{
	struct guest src = layout;
	struct uffdmove_region rs[1];
	struct uffdmove_source *s;
	char why[256];
	int sv[2], ret, status, fds;
	pid_t pid;

	guest_map_source(&src);
	guest_regions(&src, rs);
	pid = t_fork_peer(sv, 30);
	if (pid == 0) {
		struct guest dst = layout;
		struct uffdmove_region rd[1];
		struct uffdmove_target_opts to;
		struct uffdmove_target *t;
		struct wire_msg *m = calloc(1, sizeof(*m));
		unsigned char buf[WIRE_MSG_MAX];
		int len;

		guest_map(&dst);
		guest_regions(&dst, rd);
		/* Pushed: a second HELLO while the source serves our uffd. */
		uffdmove_target_opts_init(&to);
		to.pull = UFFDMOVE_PULL_OFF;
		if (uffdmove_target_new(&t, rd, 1, &to) ||
		    uffdmove_target_handoff(t, sv[1]))
			_exit(60);
		m->type = WIRE_HELLO;
		m->hello.features = UFFD_FEATURE_EVENT_REMOVE |
				    UFFD_FEATURE_EVENT_UNMAP |
				    UFFD_FEATURE_EVENT_REMAP;
		m->hello.n_regions = 1;
		strcpy(m->hello.regions[0].name, "ram0");
		m->hello.regions[0].addr = (uintptr_t)dst.addr[0];
		m->hello.regions[0].len = dst.spec[0].len;
		m->hello.regions[0].page_size = 4096;
		len = wire_encode(m, buf, sizeof(buf));
		if (len < 0 || peer_send(sv[1], buf, (size_t)len, -1, 1000))
			_exit(61);
		/* GO is not sent: the source must still end the session. */
		ret = uffdmove_target_wait(t, 10000);
		_exit(ret == -EPROTO ? 0 : 62);
	}
	fds = t_count_fds();
	T_CHECK(uffdmove_source_new(&s, rs, 1, NULL) == 0, "source_new");
	T_CHECK(uffdmove_source_accept(s, sv[0]) == 0, "accept: %s",
		uffdmove_source_error(s));
	ret = uffdmove_source_run(s);
	printf("  %d %s\n", ret, uffdmove_source_error(s));
	T_CHECK(ret == -EPROTO && strstr(uffdmove_source_error(s), "HELLO"),
		"run returned %d: %s", ret, uffdmove_source_error(s));
	uffdmove_source_free(s);
	T_CHECK(t_count_fds() == fds, "fd leak: %d -> %d", fds, t_count_fds());
	status = t_wait(pid);
	T_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		"target status %d", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	T_CHECK(guest_verify_source(&src, why, sizeof(why)) == 0, "%s", why);
	close(sv[0]);
	guest_unmap(&src);
	(void)ctx;
	return T_PASS;
}

int main(void)
{
	static const struct t_case cases[] = {
		{ "malformed-hellos", malformed_hellos },
		{ "wrong-uid", wrong_uid },
		{ "handshake-deadline", handshake_deadline },
		{ "target-rejected", target_rejected },
		{ "second-hello", second_hello },
	};
	return t_main(cases, T_ARRAY_SIZE(cases), 100,
		      T_NEED_KERNEL_FAULTS, NULL);
}
