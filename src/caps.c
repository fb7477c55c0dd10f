// SPDX-License-Identifier: MIT
#include <errno.h>

#include "caps.h"

int caps_have(cap_value_t cap, bool *out)
{
	cap_flag_value_t val;
	cap_t set;
	int err;

	set = cap_get_proc();
	if (!set)
		return -errno;
	/* libcap rejects an unknown @cap with -1 but may leave errno alone */
	errno = 0;
	err = cap_get_flag(set, cap, CAP_EFFECTIVE, &val) < 0 ?
	      (errno ? errno : EINVAL) : 0;
	cap_free(set);	/* may clobber errno: read it first */
	if (err)
		return -err;
	*out = val == CAP_SET;
	return 0;
}
