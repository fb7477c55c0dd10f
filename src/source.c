// SPDX-License-Identifier: MIT
/*
 * The old VMM's side, up to the run: options, regions, pinned ranges, and
 * the handshake that accepts the target's uffd (run.c does the rest).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "mover.h"
#include "peer.h"
#include "probe.h"
#include "session.h"
#include "source.h"
#include "uffd.h"
#include "util.h"
#include "wake.h"
#include "wire.h"

#define PEER_TIMEOUT_MS		30000

static struct uffdmove_source_opts source_defaults(void)
{
	return (struct uffdmove_source_opts){
		.mode = UFFDMOVE_MODE_AUTO,
		.threads = 2,
		.expected_uid = UFFDMOVE_UID_SELF,
		.handshake_timeout_ms = HANDSHAKE_TIMEOUT_MS,
		.peer_timeout_ms = PEER_TIMEOUT_MS,
		.pull = UFFDMOVE_PULL_AUTO,
	};
}

UFFDMOVE_EXPORT int uffdmove_source_opts_init(struct uffdmove_source_opts *o)
{
	if (!o)
		return -EINVAL;
	*o = source_defaults();
	return 0;
}

/* Each option in range, and the reserved words zero. */
static int check_opts(const struct uffdmove_source_opts *o, struct err_buf *err)
{
	const struct session_opt opts[] = {
		{ "mode", o->mode, UFFDMOVE_MODE_MOVE },
		{ "threads", o->threads, 64 },
		{ "pull", o->pull, UFFDMOVE_PULL_ON },
	};

	return session_check_opts(err, opts, ARRAY_SIZE(opts), o->reserved,
				  sizeof(o->reserved));
}

UFFDMOVE_EXPORT int uffdmove_source_new(struct uffdmove_source **out,
					const struct uffdmove_region *regions,
					size_t n,
					const struct uffdmove_source_opts *opts)
{
	struct uffdmove_source *s;
	int ret;

	s = session_new_handle(out, sizeof(*s), "uffdmove_source_new", &ret);
	if (!s)
		return ret;
	s->sock = s->efd = -1;
	s->opts = opts ? *opts : source_defaults();
	ret = check_opts(&s->opts, &s->err);
	if (!ret)
		ret = session_take_regions(&s->err, regions, n, false,
					   &s->regions);
	if (!ret) {
		s->efd = wake_open();
		if (s->efd < 0)
			ret = err_set(&s->err, -s->efd, "eventfd: %s",
				      strerror(-s->efd));
	}
	if (!ret)
		ret = source_loop_init(s);
	if (ret) {
		err_keep(&s->err, ret);
		if (s->efd >= 0)
			close(s->efd);
		free(s->regions);
		free(s);
		return ret;
	}
	s->nregions = n;
	if (!s->opts.threads)
		s->opts.threads = 2;
	if (!s->opts.handshake_timeout_ms)
		s->opts.handshake_timeout_ms = HANDSHAKE_TIMEOUT_MS;
	if (!s->opts.peer_timeout_ms)
		s->opts.peer_timeout_ms = PEER_TIMEOUT_MS;
	*out = s;
	return 0;
}

UFFDMOVE_EXPORT int uffdmove_source_declare_pinned(struct uffdmove_source *s,
						   void *addr, size_t len)
{
	uint64_t a = (uintptr_t)addr;
	struct pinned_range *p;
	size_t i;

	if (source_in_state(s, SRC_NEW,
			    "declare pinned ranges before uffdmove_source_accept()"))
		return -EINVAL;
	if (a + len < a)
		return err_set(&s->err, EINVAL,
			       "pinned range %p+%zu wraps around the address space",
			       addr, len);
	if (!len || !IS_ALIGNED(a | len, PAGE_SZ))
		return err_set(&s->err, EINVAL,
			       "pinned range %p+%zu must be non-empty and page aligned",
			       addr, len);
	for (i = 0; i < s->nregions; i++)
		if (a >= s->regions[i].addr &&
		    a + len <= s->regions[i].addr + s->regions[i].len)
			break;
	if (i == s->nregions)
		return err_set(&s->err, EINVAL,
			       "pinned range %p+%zu lies outside every region",
			       addr, len);
	p = realloc(s->pinned, (s->npinned + 1) * sizeof(*p));
	if (!p)
		return err_set(&s->err, ENOMEM, "out of memory");
	s->pinned = p;
	s->pinned[s->npinned++] = (struct pinned_range){ a, a + len };
	return 0;
}

int source_in_state(struct uffdmove_source *s, enum source_state want,
		    const char *misuse)
{
	if (!s)
		return -EINVAL;
	if (s->state == want)
		return 0;
	if (s->state == SRC_RUNNING)
		misuse = "the handoff is running already";
	else if (s->state == SRC_ENDED)
		misuse = "this handle's handoff has ended: a new one needs a new handle";
	return err_set(&s->err, EINVAL, "%s", misuse);
}

/* Answer REJECT with the handle's message, and return @ret. */
static int reject(struct uffdmove_source *s, int ret)
{
	struct wire_msg m = { .type = WIRE_REJECT };
	char buf[WIRE_MSG_MAX];
	int fds[PEER_FDS_MAX], len;
	size_t nfds;

	m.reason.errnum = (uint32_t)-ret;
	str_copy(m.reason.text, sizeof(m.reason.text), s->err.msg);
	session_send(s->sock, &m, -1, 100);
	/* Closing a unix socket with unread data resets the peer before it
	 * reads our answer: consume what it sent (closing any fds). */
	do {
		len = peer_recv(s->sock, buf, sizeof(buf), fds, &nfds, 0);
		if (nfds <= PEER_FDS_MAX)
			peer_close_fds(fds, nfds);
	} while (len >= 0 || len == -EMSGSIZE);
	return ret;
}

/* Undo setup_mover(), so that a failed accept can be retried cleanly. */
void source_teardown_mover(struct uffdmove_source *s)
{
	if (s->mover_ready)
		mover_fini(&s->m);
	s->mover_ready = false;
}

/*
 * The core takes the uffd. It counts the pages with data chunk by chunk
 * as it classifies them, not here: a scan of all guest RAM would be
 * downtime. DONE carries the sum, which the target checks.
 */
int source_setup_mover(struct uffdmove_source *s, int uffd, bool same_mm,
		       const struct plan_input *in)
{
	struct mover_config cfg = {
		.uffd = uffd,
		.mode = s->opts.mode,
		.same_mm = same_mm,
		.move_offered = s->features & UFFD_FEATURE_MOVE,
		.pinned = s->pinned,
		.npinned = s->npinned,
		.regions = in,
		.nregions = s->nregions,
	};
	int ret = mover_setup(&s->m, &cfg, &s->err);

	s->mover_ready = true;
	return ret;
}

static int answer_push(struct uffdmove_source *s)
{
	struct wire_msg ans = { .type = WIRE_ACCEPT };
	int ret;

	ans.accept.primitive = mover_primitive(&s->m);
	ans.accept.populated = mover_populated(&s->m);
	ret = session_send(s->sock, &ans, -1,
			   (int)s->opts.handshake_timeout_ms);
	return ret ? err_set(&s->err, -ret, "sending ACCEPT: %s",
			     strerror(-ret)) : 0;
}

/*
 * Is [start, start + len) guest RAM of ours? It may span regions that
 * touch: the target coalesces the ranges it reports, wherever they lie.
 */
bool source_owns(const struct uffdmove_source *s, uint64_t start,
		 uint64_t len)
{
	uint64_t a = start, end = start + len;
	size_t i;

	if (!len || end < start)
		return false;
	while (a < end) {
		for (i = 0; i < s->nregions; i++)
			if (a >= s->regions[i].addr &&
			    a < s->regions[i].addr + s->regions[i].len)
				break;
		if (i == s->nregions)
			return false;
		a = s->regions[i].addr + s->regions[i].len;
	}
	return true;
}

UFFDMOVE_EXPORT int uffdmove_source_accept(struct uffdmove_source *s, int sock)
{
	struct wire_msg *hello;
	bool answer;
	int uffd = -1, ret;
	pid_t pid;

	if (!s)
		return -EINVAL;
	ret = session_open(&s->err, s->state == SRC_NEW,
			   "uffdmove_source_accept() called twice", sock,
			   s->opts.expected_uid, s->opts.expected_pid, &pid);
	if (ret == -ENOTSOCK)
		return -EINVAL;
	s->sock = sock;
	if (ret)
		return reject(s, ret);
	hello = malloc(sizeof(*hello));
	if (!hello)
		return reject(s, err_set(&s->err, ENOMEM, "out of memory"));
	ret = source_recv_hello(s, hello, &uffd, &answer, HELLO_FIRST);
	s->pull_why = wire_hello_why(hello) ?: UFFDMOVE_PULL_WHY_OFF_TARGET;
	if (!ret && uffd < 0)
		ret = source_offer_pull(s, hello, pid, &uffd);
	if (!ret && !s->pulling)
		ret = source_take_hello(s, hello, uffd);
	free(hello);
	if (!ret && !s->pulling)
		ret = answer_push(s);
	if (ret) {
		source_teardown_mover(s);
		return answer ? reject(s, ret) : ret;
	}
	s->t_start = now_ns();
	s->state = SRC_ACCEPTED;
	store_release(&s->accepted, true);
	if (load_acquire(&s->cancel))	/* cancelled during accept */
		uffdmove_source_cancel(s);
	return 0;
}

UFFDMOVE_EXPORT void uffdmove_source_free(struct uffdmove_source *s)
{
	if (!s)
		return;
	source_loop_fini(s);	/* a run still going is cancelled first */
	if (s->pulling)
		source_revoke_reader();
	source_teardown_mover(s);
	if (s->efd >= 0)
		close(s->efd);
	free(s->pinned);
	free(s->regions);
	free(s);
}
