// SPDX-License-Identifier: MIT
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "error.h"

static int vformat(char *buf, size_t len, int errnum, const char *fmt,
		   va_list ap)
{
	if (buf && len)
		vsnprintf(buf, len, fmt, ap);
	return -errnum;
}

int err_vset(struct err_buf *e, int errnum, const char *fmt, va_list ap)
{
	return vformat(e->msg, sizeof(e->msg), errnum, fmt, ap);
}

int err_set(struct err_buf *e, int errnum, const char *fmt, ...)
{
	va_list ap;
	int ret;

	va_start(ap, fmt);
	ret = err_vset(e, errnum, fmt, ap);
	va_end(ap);
	return ret;
}

int err_format(char *buf, size_t len, int errnum, const char *fmt, ...)
{
	va_list ap;
	int ret;

	va_start(ap, fmt);
	ret = vformat(buf, len, errnum, fmt, ap);
	va_end(ap);
	return ret;
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
