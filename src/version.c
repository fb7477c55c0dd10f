// SPDX-License-Identifier: MIT
#include "error.h"
#include "uffdmove.h"
#include "util.h"

_Static_assert(UFFDMOVE_VERSION_MAJOR == UFFDMOVE_VERSION_MAJOR_CHECK &&
	       UFFDMOVE_VERSION_MINOR == UFFDMOVE_VERSION_MINOR_CHECK,
	       "uffdmove.h version macros disagree with meson.build");

UFFDMOVE_EXPORT const char *uffdmove_version(void)
{
	return UFFDMOVE_VERSION;
}

UFFDMOVE_EXPORT const char *uffdmove_new_error(void)
{
	return err_kept();
}
