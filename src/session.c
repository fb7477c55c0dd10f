// SPDX-License-Identifier: MIT
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "peer.h"
#include "session.h"
#include "util.h"
#include "wire.h"

int session_copy_regions(struct err_buf *err,
			 const struct uffdmove_region *in, size_t n,
			 struct session_region **out)
{
	struct session_region *r;
	size_t i, j, len;

	if (!in)
		return err_set(err, EINVAL, "regions is NULL");
	if (n == 0 || n > UFFDMOVE_REGIONS_MAX)
		return err_set(err, EINVAL, "need 1..%d regions, got %zu",
			       UFFDMOVE_REGIONS_MAX, n);
	r = calloc(n, sizeof(*r));
	if (!r)
		return err_set(err, ENOMEM, "out of memory for %zu regions", n);
	for (i = 0; i < n; i++) {
		uint64_t addr = (uintptr_t)in[i].addr;

		len = in[i].name ? strlen(in[i].name) : 0;
		if (len == 0 || len > UFFDMOVE_NAME_MAX) {
			free(r);
			return err_set(err, EINVAL,
				       "region %zu: name must be 1..%d bytes",
				       i, UFFDMOVE_NAME_MAX);
		}
		if (addr + in[i].len < addr) {
			free(r);
			return err_set(err, EINVAL,
				       "region '%s': address %p length %zu wraps around the address space",
				       in[i].name, in[i].addr, in[i].len);
		}
		if (!in[i].len || !IS_ALIGNED(addr | in[i].len, PAGE_SZ)) {
			free(r);
			return err_set(err, EINVAL,
				       "region '%s': address %p length %zu must be non-empty and %lu-byte aligned",
				       in[i].name, in[i].addr, in[i].len,
				       PAGE_SZ);
		}
		memcpy(r[i].name, in[i].name, len);
		r[i].addr = addr;
		r[i].len = in[i].len;
		for (j = 0; j < i; j++) {
			int ret = 0;

			if (!strcmp(r[j].name, r[i].name))
				ret = err_set(err, EINVAL,
					      "region name '%s' is used twice",
					      in[i].name);
			else if (r[i].addr < r[j].addr + r[j].len &&
				 r[j].addr < r[i].addr + r[i].len)
				ret = err_set(err, EINVAL,
					      "regions '%s' and '%s' overlap",
					      in[j].name, in[i].name);
			if (ret) {
				free(r);
				return ret;
			}
		}
	}
	*out = r;
	return 0;
}

int session_check_reserved(struct err_buf *err, const void *words,
			   size_t len)
{
	const unsigned char *p = words;
	size_t i;

	for (i = 0; i < len; i++)
		if (p[i])
			return err_set(err, EINVAL,
				       "options: reserved field is not zero; initialise options with *_opts_init()");
	return 0;
}

int session_check_peer(struct err_buf *err, int sock, uint32_t expected_uid,
		       int32_t expected_pid, pid_t *pid)
{
	uid_t uid, want;
	int ret = peer_cred(sock, pid, &uid);

	if (ret)
		return err_set(err, -ret, "SO_PEERCRED: %s", strerror(-ret));
	want = expected_uid == UFFDMOVE_UID_SELF ? geteuid() :
	       (uid_t)expected_uid;
	if (uid != want)
		return err_set(err, EPERM,
			       "peer uid %u is not the expected uid %u",
			       (unsigned int)uid, (unsigned int)want);
	if (expected_pid && *pid != expected_pid)
		return err_set(err, EPERM,
			       "peer pid %d is not the expected pid %d",
			       (int)*pid, (int)expected_pid);
	return 0;
}

/* One line of /proc/self/maps. */
struct vma {
	uint64_t start, end;
	char perms[5];
	unsigned long inode;
	char path[128];
};

static bool read_vma(FILE *f, struct vma *v)
{
	char line[512];
	int off = 0;

	if (!fgets(line, sizeof(line), f))
		return false;
	v->path[0] = '\0';
	if (sscanf(line, "%lx-%lx %4s %*x %*x:%*x %lu %n", &v->start, &v->end,
		   v->perms, &v->inode, &off) < 4)
		return false;
	if (off)
		sscanf(line + off, "%127[^\n]", v->path);
	return true;
}

/*
 * Anonymous private memory, the only kind a uffd handoff carries: a shared
 * or file mapping would be read as holes (its pages are not ours) and
 * handed over as zeros. [heap] and [stack] are anonymous too.
 */
static bool private_anon(const struct vma *v)
{
	if (v->perms[3] != 'p')
		return false;
	if (!strcmp(v->path, "/dev/zero"))	/* MAP_PRIVATE of it is */
		return true;			/* anonymous memory */
	return !v->inode && (!v->path[0] || v->path[0] == '[');
}

static int check_one(struct err_buf *err, const struct session_region *r,
		     FILE *f, bool writable)
{
	uint64_t at = r->addr, end = r->addr + r->len;
	struct vma v;

	rewind(f);
	while (at < end && read_vma(f, &v)) {
		if (v.end <= at)
			continue;
		if (v.start > at)
			break;
		if (!private_anon(&v))
			return err_set(err, EINVAL,
				       "region '%s': 0x%llx is not private anonymous memory (%s mapping%s%s): its pages would be handed over as zeros; map guest RAM MAP_PRIVATE|MAP_ANONYMOUS",
				       r->name, (unsigned long long)at,
				       v.perms[3] != 's' ? "a file" :
				       !strncmp(v.path, "/dev/zero", 9) ?
				       "a MAP_SHARED anonymous" : "a shared",
				       v.path[0] && strncmp(v.path, "/dev/zero", 9) ?
				       " of " : "",
				       strncmp(v.path, "/dev/zero", 9) ? v.path : "");
		if (v.perms[0] != 'r' || (writable && v.perms[1] != 'w'))
			return err_set(err, EINVAL,
				       "region '%s': 0x%llx is mapped %s, guest RAM must be %s",
				       r->name, (unsigned long long)at, v.perms,
				       writable ? "readable and writable" :
				       "readable");
		at = v.end;
	}
	if (at < end)
		return err_set(err, EINVAL,
			       "region '%s': 0x%llx-0x%llx is not mapped",
			       r->name, (unsigned long long)at,
			       (unsigned long long)end);
	return 0;
}

int session_check_mappings(struct err_buf *err,
			   const struct session_region *regions, size_t n,
			   bool writable)
{
	return session_check_mappings_of(err, 0, regions, n, writable);
}

int session_check_mappings_of(struct err_buf *err, pid_t pid,
			      const struct session_region *regions, size_t n,
			      bool writable)
{
	char path[32];
	size_t i;
	int ret = 0;
	FILE *f;

	if (pid)
		snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	else
		snprintf(path, sizeof(path), "/proc/self/maps");
	f = fopen(path, "re");
	if (!f)
		return err_set(err, errno, "%s: %s", path, strerror(errno));
	for (i = 0; i < n && !ret; i++)
		ret = check_one(err, &regions[i], f, writable);
	fclose(f);
	return ret;
}

int session_send(int sock, const struct wire_msg *m, int fd, int timeout_ms)
{
	char buf[WIRE_MSG_MAX];
	int len = wire_encode(m, buf, sizeof(buf));

	if (len < 0)
		return len;
	return peer_send(sock, buf, (size_t)len, fd, timeout_ms);
}

int session_recv(int sock, struct wire_msg *m, int timeout_ms, char *why,
		 size_t why_len)
{
	char buf[WIRE_MSG_MAX + 1];
	int fds[PEER_FDS_MAX], len;
	size_t nfds = 0;

	len = peer_recv(sock, buf, sizeof(buf), fds, &nfds, timeout_ms);
	if (nfds && nfds <= PEER_FDS_MAX)
		peer_close_fds(fds, nfds);
	if (len < 0)
		return len;
	return wire_decode(buf, (size_t)len, m, why, why_len) ? -EBADMSG : 0;
}

int session_open(struct err_buf *err, bool ready, const char *misuse,
		 int sock, uint32_t expected_uid, int32_t expected_pid,
		 pid_t *pid)
{
	err_clear(err);
	if (!ready) {
		err_set(err, EINVAL, "%s", misuse);
		return -ENOTSOCK;
	}
	if (peer_check_socket(sock)) {
		err_set(err, EINVAL,
			"fd %d is not an AF_UNIX SOCK_SEQPACKET socket", sock);
		return -ENOTSOCK;
	}
	return session_check_peer(err, sock, expected_uid, expected_pid, pid);
}

int session_check_opts(struct err_buf *err, const struct session_opt *opt,
		       size_t n, const void *reserved, size_t reserved_len)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (opt[i].value > opt[i].max)
			return err_set(err, EINVAL,
				       "options: %s is %u, at most %u",
				       opt[i].name, opt[i].value, opt[i].max);
	return session_check_reserved(err, reserved, reserved_len);
}

int session_take_regions(struct err_buf *err,
			 const struct uffdmove_region *in, size_t n,
			 bool writable, struct session_region **out)
{
	int ret = session_copy_regions(err, in, n, out);

	if (!ret)
		ret = session_check_mappings(err, *out, n, writable);
	return ret;
}

void *session_new_handle(const void *out, size_t size, const char *fn,
			 int *ret)
{
	char msg[64];
	void *h;

	err_forget();
	if (!out) {
		snprintf(msg, sizeof(msg), "%s: out is NULL", fn);
		*ret = err_keep_new(EINVAL, msg);
		return NULL;
	}
	h = calloc(1, size);
	if (!h)
		*ret = -ENOMEM;
	return h;
}
