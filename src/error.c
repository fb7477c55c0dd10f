// SPDX-License-Identifier: MIT
#include <stdarg.h>
#include <stdio.h>

#include "error.h"

int err_set(struct err_buf *e, int errnum, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
	return -errnum;
}
