/* SPDX-License-Identifier: MIT */
/* Per-handle "last failure" message: set in the statement that returns. */
#ifndef UFFDMOVE_ERROR_H
#define UFFDMOVE_ERROR_H

#include <stdarg.h>
#include <stddef.h>

#define ERR_MSG_MAX 256

struct err_buf {
	char msg[ERR_MSG_MAX];
};

/*
 * Format the handle's message and return -@errnum, so a failure reads
 *	return err_set(&s->err, EINVAL, "region '%s': ...", name);
 * @errnum is positive; the result is negative.
 */
int err_set(struct err_buf *e, int errnum, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* The same with a va_list: the one formatter all messages go through. */
int err_vset(struct err_buf *e, int errnum, const char *fmt, va_list ap)
	__attribute__((format(printf, 3, 0)));
/* Format into a plain buffer (NULL or 0 bytes: nothing), return -@errnum. */
int err_format(char *buf, size_t len, int errnum, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/*
 * A *_new call frees its handle on failure: keep the handle's message for
 * uffdmove_new_error() on this thread, and return @ret.
 */
int err_keep(const struct err_buf *e, int ret);
/* The same without a handle: keep @msg, return -@errnum. */
int err_keep_new(int errnum, const char *msg);
/* Forget the thread's kept message (each *_new call starts so). */
void err_forget(void);
/* The thread's kept message; "" if none. */
const char *err_kept(void);

static inline void err_clear(struct err_buf *e)
{
	e->msg[0] = '\0';
}

#endif /* UFFDMOVE_ERROR_H */
