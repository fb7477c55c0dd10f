/* SPDX-License-Identifier: MIT */
/*
 * What Debian 12's Linux 6.1 uapi headers lack. Numbers are the kernel's
 * (include/uapi/linux/userfaultfd.h, fs.h, mman-common.h); each definition is
 * guarded so newer headers win.
 */
#ifndef UFFDMOVE_COMPAT_H
#define UFFDMOVE_COMPAT_H

#include <linux/fs.h>
#include <linux/types.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#ifndef UFFD_FEATURE_WP_HUGETLBFS_SHMEM
#define UFFD_FEATURE_WP_HUGETLBFS_SHMEM	(1 << 12)
#endif
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED	(1 << 13)
#endif
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON		(1 << 14)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC		(1 << 15)
#endif
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE		(1 << 16)
#endif

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY		1
#endif

#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC			0xAA
#define USERFAULTFD_IOC_NEW		_IO(USERFAULTFD_IOC, 0x00)
#endif

#ifndef UFFDIO_MOVE
#define _UFFDIO_MOVE			(0x05)
struct uffdio_move {
	__u64 dst;
	__u64 src;
	__u64 len;
#define UFFDIO_MOVE_MODE_DONTWAKE		((__u64)1 << 0)
#define UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES	((__u64)1 << 1)
	__u64 mode;
	__s64 move;	/* bytes moved, or -errno */
};
#define UFFDIO_MOVE	_IOWR(UFFDIO, _UFFDIO_MOVE, struct uffdio_move)
#endif

#ifndef UFFDIO_POISON
#define _UFFDIO_POISON			(0x08)
struct uffdio_poison {
	struct uffdio_range range;
#define UFFDIO_POISON_MODE_DONTWAKE	((__u64)1 << 0)
	__u64 mode;
	__s64 updated;	/* bytes poisoned, or -errno */
};
#define UFFDIO_POISON	_IOWR(UFFDIO, _UFFDIO_POISON, struct uffdio_poison)
#endif

#ifndef PAGEMAP_SCAN
#define PAGE_IS_WPALLOWED	(1 << 0)
#define PAGE_IS_WRITTEN		(1 << 1)
#define PAGE_IS_FILE		(1 << 2)
#define PAGE_IS_PRESENT		(1 << 3)
#define PAGE_IS_SWAPPED		(1 << 4)
#define PAGE_IS_PFNZERO		(1 << 5)
#define PAGE_IS_HUGE		(1 << 6)
#define PAGE_IS_SOFT_DIRTY	(1 << 7)

struct page_region {
	__u64 start;
	__u64 end;
	__u64 categories;
};

#define PM_SCAN_WP_MATCHING	(1 << 0)
#define PM_SCAN_CHECK_WPASYNC	(1 << 1)

struct pm_scan_arg {
	__u64 size;
	__u64 flags;
	__u64 start;
	__u64 end;
	__u64 walk_end;
	__u64 vec;
	__u64 vec_len;
	__u64 max_pages;
	__u64 category_inverted;
	__u64 category_mask;
	__u64 category_anyof_mask;
	__u64 return_mask;
};

#define PAGEMAP_SCAN	_IOWR('f', 16, struct pm_scan_arg)
#endif

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE	25
#endif

#ifndef SO_PEERPIDFD		/* Linux 6.5: the peer as a pidfd */
#define SO_PEERPIDFD 77
#endif

#ifndef PR_SET_PTRACER		/* Yama: who may ptrace (and read) us */
#define PR_SET_PTRACER 0x59616d61
#endif

#ifndef PR_SET_THP_DISABLE
#define PR_SET_THP_DISABLE 41
#endif

/* pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst) */
#define PM_PRESENT		(1ULL << 63)
#define PM_SWAPPED		(1ULL << 62)
#define PM_FILE_SHARED		(1ULL << 61)
#define PM_UFFD_WP		(1ULL << 57)
#define PM_MMAP_EXCLUSIVE	(1ULL << 56)
#define PM_PFN_MASK		((1ULL << 55) - 1)

_Static_assert(sizeof(struct uffdio_move) == 40, "uffdio_move layout");
_Static_assert(sizeof(struct uffdio_poison) == 32, "uffdio_poison layout");
_Static_assert(sizeof(struct pm_scan_arg) == 96, "pm_scan_arg layout");
_Static_assert(sizeof(struct page_region) == 24, "page_region layout");

#endif /* UFFDMOVE_COMPAT_H */
