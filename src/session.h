/* SPDX-License-Identifier: MIT */
/* Helpers shared by source.c and target.c: region validation, handshake
 * deadlines, and the uffd features both sides rely on. */
#ifndef UFFDMOVE_SESSION_H
#define UFFDMOVE_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "error.h"
#include "uffdmove.h"
#include "compat.h"

#define HANDSHAKE_TIMEOUT_MS 5000

/* Without these the target's munmap/mremap/MADV_DONTNEED of a missing page
 * would be silently zero-filled instead of reported. */
#define SESSION_REQUIRED_FEATURES (UFFD_FEATURE_EVENT_REMOVE | \
				   UFFD_FEATURE_EVENT_UNMAP | \
				   UFFD_FEATURE_EVENT_REMAP)

struct session_region {
	char name[UFFDMOVE_NAME_MAX + 1];
	uint64_t addr;
	uint64_t len;
};

/* Validate and copy caller regions: names, alignment, overlap. */
int session_copy_regions(struct err_buf *err,
			 const struct uffdmove_region *in, size_t n,
			 struct session_region **out);

/*
 * The start of a *_new call: the thread's kept message forgotten, @out
 * checked, and a zeroed handle of @size bytes. NULL with *@ret set when
 * either fails (@fn names the call in the message).
 */
void *session_new_handle(const void *out, size_t size, const char *fn,
			 int *ret);

/* Both: the caller's regions, valid and mapped as they must be. */
int session_take_regions(struct err_buf *err,
			 const struct uffdmove_region *in, size_t n,
			 bool writable, struct session_region **out);

/* Every region is mapped, private and anonymous, readable (and writable
 * when @writable): 0, or -EINVAL naming the region and the reason. */
int session_check_mappings(struct err_buf *err,
			   const struct session_region *regions, size_t n,
			   bool writable);

/*
 * The handshake's first step on both ends: the handle is in the state the
 * call needs (@ready, else -ENOTSOCK with @misuse as the message), @sock
 * is a connected AF_UNIX SOCK_SEQPACKET socket (else -ENOTSOCK), and its
 * peer is who the options expect (session_check_peer()). On -ENOTSOCK the
 * caller answers -EINVAL and leaves the socket alone.
 */
int session_open(struct err_buf *err, bool ready, const char *misuse,
		 int sock, uint32_t expected_uid, int32_t expected_pid,
		 pid_t *pid);

/* The same in process @pid's address space (0: ours). */
int session_check_mappings_of(struct err_buf *err, pid_t pid,
			      const struct session_region *regions, size_t n,
			      bool writable);

/* SO_PEERCRED against the expected uid (UFFDMOVE_UID_SELF: ours) and pid
 * (0: any): 0, -EPERM with a message naming both values, or -errno. */
int session_check_peer(struct err_buf *err, int sock, uint32_t expected_uid,
		       int32_t expected_pid, pid_t *pid);

/* Encode @m and send it, with @fd (-1: none); peer_send()'s results. */
struct wire_msg;
int session_send(int sock, const struct wire_msg *m, int fd, int timeout_ms);

/*
 * Receive one message and decode it; fds that came with it are closed
 * (only HELLO carries one, and the source's accept takes that itself).
 * 0 with @m filled; peer_recv()'s -errno; or -EBADMSG when it did not
 * decode, with @why (may be NULL) saying what was wrong.
 */
int session_recv(int sock, struct wire_msg *m, int timeout_ms, char *why,
		 size_t why_len);

/* One option of a handle's opts: at most @max, else -EINVAL naming it. */
struct session_opt {
	const char *name;
	uint32_t value, max;
};

/* Every option in range, and the reserved words at the end zero. */
int session_check_opts(struct err_buf *err, const struct session_opt *opt,
		       size_t n, const void *reserved, size_t reserved_len);

/* Both opts structs end in reserved words that must be zero. */
int session_check_reserved(struct err_buf *err, const void *words,
			   size_t len);

#endif /* UFFDMOVE_SESSION_H */
