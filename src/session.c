// SPDX-License-Identifier: MIT
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include "peer.h"
#include "session.h"
#include "util.h"

int session_copy_regions(struct err_buf *err,
			 const struct uffdmove_region *in, size_t n,
			 struct session_region **out)
{
	struct session_region *r;
	size_t i, j, len;

	if (!in || n == 0 || n > UFFDMOVE_REGIONS_MAX)
		return err_set(err, EINVAL,
			       "need 1..%d regions, got %zu", UFFDMOVE_REGIONS_MAX,
			       in ? n : 0);
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
		if (!in[i].len || !IS_ALIGNED(addr | in[i].len, PAGE_SZ) ||
		    addr + in[i].len < addr) {
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
