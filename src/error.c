// SPDX-License-Identifier: MIT
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "error.h"

int err_set(struct err_buf *e, int errnum, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
	return -errnum;
}

static __thread char kept[ERR_MSG_MAX];

int err_keep(const struct err_buf *e, int ret)
{
	memcpy(kept, e->msg, sizeof(kept));
	return ret;
}

void err_forget(void)
{
	kept[0] = '\0';
}

const char *err_kept(void)
{
	return kept;
}

int err_keep_new(int errnum, const char *msg)
{
	snprintf(kept, sizeof(kept), "%s", msg);
	return -errnum;
}
