/* SPDX-License-Identifier: MIT */
/*
 * libcap, converted to 0/-errno once. Only effective capabilities matter:
 * they are what the kernel checks when this process opens a userfaultfd
 * or reads PFNs from pagemap. CAP_SYS_NICE is only reported: nothing here
 * needs it.
 */
#ifndef UFFDMOVE_CAPS_H
#define UFFDMOVE_CAPS_H

#include <stdbool.h>
#include <sys/capability.h>

/*
 * Whether @cap is in this thread's effective set.
 * @out is written only on success.
 * Returns 0, or -errno from libcap (-ENOMEM, -EINVAL for an unknown @cap).
 */
int caps_have(cap_value_t cap, bool *out);

#endif /* UFFDMOVE_CAPS_H */
