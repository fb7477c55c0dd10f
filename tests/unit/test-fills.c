// SPDX-License-Identifier: MIT
/*
 * fills.c: a discard is counted as raced when a fill of its range was in
 * flight or ended after the discard's event was read, and never lost
 * because more fills ended meanwhile than the log keeps.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "fills.h"
#include "util.h"

#define PG	4096ULL
#define RACED	(1000 * PG)	/* the page the discard and a fill share */

static void fill(struct fills *f, uint64_t start)
{
	fills_end(f, fills_begin(f, start, start + PG));
}

static void test_in_flight(void **state)
{
	struct fills f;
	unsigned int slot;

	(void)state;
	assert_int_equal(fills_init(&f), 0);
	slot = fills_begin(&f, RACED, RACED + PG);
	assert_int_equal(fills_check_discard(&f, RACED, RACED + PG,
					     now_ns()), PG);
	fills_end(&f, slot);
	fills_fini(&f);
}

static void test_ended_after_read(void **state)
{
	struct fills f;
	uint64_t since;

	(void)state;
	assert_int_equal(fills_init(&f), 0);
	fill(&f, RACED);		/* before the read: no race */
	since = now_ns() + 1;
	while (now_ns() < since)
		;
	assert_int_equal(fills_check_discard(&f, RACED, RACED + PG, since), 0);
	fill(&f, RACED);		/* after it: raced */
	fill(&f, 2 * RACED);		/* elsewhere: not this discard */
	assert_int_equal(fills_check_discard(&f, RACED, RACED + PG, since), PG);
	fills_fini(&f);
}

/* The reader came late: the racing fill is older than the log's memory.
 * Unknown must count as raced, never as clean. */
static void test_log_overrun(void **state)
{
	struct fills f;
	uint64_t since = now_ns();
	unsigned int i;

	(void)state;
	assert_int_equal(fills_init(&f), 0);
	fill(&f, RACED);
	for (i = 0; i < 4 * FILLS_LOG; i++)
		fill(&f, 2 * RACED + i * PG);
	assert_true(fills_check_discard(&f, RACED, RACED + PG, since) >= PG);
	fills_fini(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_in_flight),
		cmocka_unit_test(test_ended_after_read),
		cmocka_unit_test(test_log_overrun),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
