// SPDX-License-Identifier: MIT
/*
 * The old VMM reads the target's HELLO: the uffd that came with it (the
 * kernel's word on it, not HELLO's), the regions matched by name, whether
 * both are one process, and what MODE_MOVE may promise.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "mover.h"
#include "peer.h"
#include "probe.h"
#include "session.h"
#include "source.h"
#include "uffd.h"
#include "util.h"
#include "wire.h"

/*
 * What the received fd really is: a userfaultfd whose UFFDIO_API was done,
 * with the features it negotiated (the kernel's word, not HELLO's).
 */
static int check_uffd(struct uffdmove_source *s, int fd,
		      const struct wire_msg *hello)
{
	uint64_t features;
	bool ready;

	if (uffd_features(fd, &features, &ready))
		return err_set(&s->err, EPROTO,
			       "the fd sent with HELLO is not a userfaultfd");
	if (!ready)
		return err_set(&s->err, EPROTO,
			       "the userfaultfd sent with HELLO never had UFFDIO_API: create it with uffdmove_target_new()");
	if (features != hello->hello.features)
		return err_set(&s->err, EPROTO,
			       "HELLO says features 0x%llx, the userfaultfd has 0x%llx",
			       (unsigned long long)hello->hello.features,
			       (unsigned long long)features);
	if ((features & SESSION_REQUIRED_FEATURES) != SESSION_REQUIRED_FEATURES)
		return err_set(&s->err, EPROTO,
			       "target did not negotiate REMOVE/UNMAP/REMAP events (features 0x%llx): its discards would be lost",
			       (unsigned long long)features);
	s->features = features;
	return 0;
}

/* Is the target this very process? Look for its cookie in our memory. */
bool source_same_mm(const struct wire_msg *h)
{
	uint64_t v = 0;
	struct iovec local = { &v, sizeof(v) };
	struct iovec remote = {
		(void *)(uintptr_t)h->hello.mm_cookie_addr, sizeof(v)
	};

	return h->hello.mm_cookie &&
	       process_vm_readv(getpid(), &local, 1, &remote, 1, 0) ==
	       (ssize_t)sizeof(v) && v == h->hello.mm_cookie;
}

/* Match every region of ours to one of the target's, by name. */
int source_match_regions(struct uffdmove_source *s, const struct wire_msg *h,
			 struct plan_input *in)
{
	uint32_t i, j;

	if (h->hello.n_regions != s->nregions)
		return err_set(&s->err, EINVAL,
			       "target has %u regions, source has %zu",
			       h->hello.n_regions, s->nregions);
	for (i = 0; i < s->nregions; i++) {
		const struct session_region *mine = &s->regions[i];
		const struct wire_region *theirs = NULL;

		for (j = 0; j < h->hello.n_regions; j++)
			if (!strcmp(h->hello.regions[j].name, mine->name))
				theirs = &h->hello.regions[j];
		if (!theirs)
			return err_set(&s->err, EINVAL,
				       "region '%s': the target has no region of that name",
				       mine->name);
		if (theirs->len != mine->len)
			return err_set(&s->err, EINVAL,
				       "region '%s': target length %llu != source length %llu",
				       mine->name,
				       (unsigned long long)theirs->len,
				       (unsigned long long)mine->len);
		if (!(theirs->ioctls & (1ULL << _UFFDIO_COPY)) ||
		    !(theirs->ioctls & (1ULL << _UFFDIO_ZEROPAGE)))
			return err_set(&s->err, EINVAL,
				       "region '%s': registered without UFFDIO_COPY/ZEROPAGE (ioctls 0x%llx); is it private anonymous memory?",
				       mine->name,
				       (unsigned long long)theirs->ioctls);
		in[i] = (struct plan_input){
			.src = mine->addr, .dst = theirs->addr,
			.len = mine->len,
			.thp = theirs->flags & WIRE_REGION_THP,
		};
	}
	return 0;
}

/* MODE_MOVE promises zero-copy: refuse up front what cannot move. */
static int check_move_mode(struct uffdmove_source *s, bool same_mm)
{
	bool known, works = false;

	if (s->opts.mode != UFFDMOVE_MODE_MOVE)
		return 0;
	if (!(s->features & UFFD_FEATURE_MOVE))
		return err_set(&s->err, EOPNOTSUPP,
			       "MODE_MOVE: the target did not negotiate UFFD_FEATURE_MOVE (kernel too old?); use MODE_AUTO");
	/* Trying it here would fork and COW-share the guest: only an
	 * answer the caller already got from uffdmove_probe() counts. */
	known = probe_cross_move_known(&works);
	if (!same_mm && !works)
		return err_set(&s->err, EOPNOTSUPP,
			       known ?
			       "MODE_MOVE: this kernel refuses UFFDIO_MOVE between processes (EINVAL); use MODE_AUTO or COPY, or hand over within one process" :
			       "MODE_MOVE between processes: not known to work; call uffdmove_probe() before populating guest RAM, or use MODE_AUTO");
	if (s->npinned)
		return err_set(&s->err, EBUSY,
			       "MODE_MOVE: range 0x%llx-0x%llx is declared pinned and can never move; use MODE_AUTO",
			       (unsigned long long)s->pinned[0].start,
			       (unsigned long long)s->pinned[0].end);
	return 0;
}

/* How many fds a message may carry: HELLO its uffd, unless it asks to
 * pull (then the uffd stays with the target). */
static size_t fds_expected(const struct wire_msg *m)
{
	return m->type == WIRE_HELLO && !(m->hello.flags & WIRE_HELLO_PULL);
}

/*
 * What the target may send in each round: first a HELLO (asking to pull
 * or not); after our offer, PULL or a HELLO with its uffd; after we
 * declined, only a HELLO with its uffd. 0, or -EPROTO with @why.
 */
static int check_round(enum hello_round round, const struct wire_msg *m,
		       size_t nfds, char *why, size_t len)
{
	bool pull_asked = m->type == WIRE_HELLO &&
			  (m->hello.flags & WIRE_HELLO_PULL);

	if (m->type == WIRE_PULL && round != HELLO_AFTER_OFFER)
		return err_format(why, len, EPROTO,
				  "PULL, but we did not offer it");
	if (m->type != WIRE_HELLO && m->type != WIRE_PULL)
		return err_format(why, len, EPROTO, "expected HELLO, got %s",
				  wire_type_name(m->type));
	if (pull_asked && round != HELLO_FIRST)
		return err_format(why, len, EPROTO,
				  "a second HELLO asking to pull");
	if (nfds != fds_expected(m))
		return err_format(why, len, EPROTO,
				  "HELLO must carry %s, it carried %s",
				  fds_expected(m) ? "exactly one fd" : "no fd",
				  nfds > PEER_FDS_MAX ? "too many" :
				  nfds > 1 ? "more than one" :
				  nfds ? "one" : "none");
	return 0;
}

/*
 * The target's message in round @round: @hello, and *@uffd when it brought
 * one (else -1). On failure *@answer says whether the target may still
 * read a REJECT.
 */
int source_recv_hello(struct uffdmove_source *s, struct wire_msg *hello,
		      int *uffd, bool *answer, enum hello_round round)
{
	char buf[WIRE_MSG_MAX + 1], why[160];
	int fds[PEER_FDS_MAX], len, ret;
	size_t nfds = 0;

	*uffd = -1;
	*answer = true;
	len = peer_recv(s->sock, buf, sizeof(buf), fds, &nfds,
			(int)s->opts.handshake_timeout_ms);
	if (len == -EMSGSIZE)
		return err_set(&s->err, EPROTO, "HELLO larger than %d bytes",
			       WIRE_MSG_MAX);
	*answer = len >= 0;
	if (len == -ETIMEDOUT)
		return err_set(&s->err, ETIMEDOUT, "no %s within %u ms",
			       round == HELLO_FIRST ? "HELLO" :
			       "answer to our ACCEPT",
			       s->opts.handshake_timeout_ms);
	if (len < 0)
		return err_set(&s->err, -len, "receiving HELLO: %s",
			       strerror(-len));
	ret = len ? wire_decode(buf, (size_t)len, hello, why, sizeof(why)) :
		    err_format(why, sizeof(why), EPROTO, "an empty message");
	if (!ret && hello->type == WIRE_ABORT && round != HELLO_FIRST)
		ret = -ECANCELED;
	else if (!ret)
		ret = check_round(round, hello, nfds, why, sizeof(why));
	if (ret && nfds <= PEER_FDS_MAX)
		peer_close_fds(fds, nfds);
	if (ret == -ECANCELED)
		return err_set(&s->err, ECANCELED,
			       "the target gave up the handshake (%s); nothing was handed over, every byte of the guest is intact here",
			       hello->reason.text);
	if (ret)
		return err_set(&s->err, -ret, "bad HELLO: %s", why);
	if (nfds)
		*uffd = fds[0];
	return 0;
}

/* Check what the target offers and set the session up on it: the core
 * owns @uffd from here, whatever happens. */
int source_take_hello(struct uffdmove_source *s, const struct wire_msg *hello,
		      int uffd)
{
	struct plan_input in[UFFDMOVE_REGIONS_MAX];
	bool one_mm;
	int ret;

	ret = check_uffd(s, uffd, hello);
	if (!ret)
		ret = source_match_regions(s, hello, in);
	if (ret)
		goto fail;
	one_mm = source_same_mm(hello);
	ret = check_move_mode(s, one_mm);
	if (ret)
		goto fail;
	ret = fcntl(uffd, F_GETFL);
	if (ret < 0 || fcntl(uffd, F_SETFL, ret | O_NONBLOCK) < 0) {
		ret = err_set(&s->err, errno,
			      "fcntl(O_NONBLOCK) on the uffd: %s",
			      strerror(errno));
		goto fail;
	}
	return source_setup_mover(s, uffd, one_mm, in);
fail:
	close(uffd);
	return ret;
}

