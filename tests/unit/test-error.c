// SPDX-License-Identifier: MIT
/*
 * error.c: err_set formats the handle's message, returns the negated errno
 * in the same statement, and never writes past ERR_MSG_MAX bytes.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "error.h"

/* An err_buf with guard bytes behind it, to catch a write past the end. */
struct guarded {
	struct err_buf e;
	unsigned char guard[64];
};

static void guard_init(struct guarded *g)
{
	memset(g, 0x5a, sizeof(*g));
}

static void guard_check(const struct guarded *g)
{
	size_t i;

	for (i = 0; i < sizeof(g->guard); i++)
		assert_int_equal(g->guard[i], 0x5a);
}

static int fails_with(struct err_buf *e, const char *name)
{
	return err_set(e, EINVAL, "region '%s': length %zu is not a multiple of %d",
		       name, (size_t)12345, 4096);
}

static void test_returns_negative(void **state)
{
	struct err_buf e;

	assert_int_equal(err_set(&e, EINVAL, "x"), -EINVAL);
	assert_int_equal(err_set(&e, EPROTO, "x"), -EPROTO);
	assert_int_equal(err_set(&e, EPERM, "x"), -EPERM);
	assert_int_equal(err_set(&e, ECONNRESET, "x"), -ECONNRESET);
	assert_int_equal(err_set(&e, 4095, "x"), -4095);
	/* the shape the library uses: return err_set(...) */
	assert_int_equal(fails_with(&e, "ram0"), -EINVAL);
	assert_string_equal(e.msg,
			    "region 'ram0': length 12345 is not a multiple of 4096");
}

static void test_formats(void **state)
{
	struct err_buf e;

	err_set(&e, EPERM, "peer uid %u is not the expected uid %u", 1000u,
		0u);
	assert_string_equal(e.msg, "peer uid 1000 is not the expected uid 0");
	err_set(&e, EIO, "0x%llx+%llu: %s", 0x7f0000001000ULL, 4096ULL,
		"Input/output error");
	assert_string_equal(e.msg, "0x7f0000001000+4096: Input/output error");
	/* a new message replaces the old one entirely */
	err_set(&e, EIO, "short");
	assert_string_equal(e.msg, "short");
	err_set(&e, EIO, "%s", "");
	assert_string_equal(e.msg, "");
	/* a percent sign in an argument is not interpreted */
	err_set(&e, EINVAL, "region '%s'", "100%s");
	assert_string_equal(e.msg, "region '100%s'");
}

static void test_truncates(void **state)
{
	struct guarded g;
	char big[1000];

	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';

	/* exactly ERR_MSG_MAX - 1 bytes fit */
	guard_init(&g);
	big[ERR_MSG_MAX - 1] = '\0';
	err_set(&g.e, EINVAL, "%s", big);
	assert_int_equal(strlen(g.e.msg), ERR_MSG_MAX - 1);
	guard_check(&g);

	/* one more is cut, and the result stays terminated */
	big[ERR_MSG_MAX - 1] = 'b';
	big[ERR_MSG_MAX] = '\0';
	guard_init(&g);
	err_set(&g.e, EINVAL, "%s", big);
	assert_int_equal(strlen(g.e.msg), ERR_MSG_MAX - 1);
	assert_int_equal(g.e.msg[ERR_MSG_MAX - 1], '\0');
	assert_int_equal(g.e.msg[ERR_MSG_MAX - 2], 'a');
	guard_check(&g);

	/* far longer, built from the format: prefix kept, nothing past */
	big[ERR_MSG_MAX] = 'a';
	guard_init(&g);
	assert_int_equal(err_set(&g.e, ENOMEM, "prefix: %s: %s", big, big),
			 -ENOMEM);
	assert_int_equal(strlen(g.e.msg), ERR_MSG_MAX - 1);
	assert_memory_equal(g.e.msg, "prefix: aaa", 11);
	guard_check(&g);
}

static void test_clear(void **state)
{
	struct err_buf e;

	err_set(&e, EINVAL, "something");
	err_clear(&e);
	assert_string_equal(e.msg, "");
	assert_int_equal(sizeof(e.msg), ERR_MSG_MAX);
	assert_int_equal(ERR_MSG_MAX, 256);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_returns_negative),
		cmocka_unit_test(test_formats),
		cmocka_unit_test(test_truncates),
		cmocka_unit_test(test_clear),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
