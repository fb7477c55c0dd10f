/* SPDX-License-Identifier: MIT */
/*
 * What the probes share: a clock, a way out, the classic blocking uffd
 * handler (b3's, one 4 KiB COPY per fault) and a sort order. See
 * probe-thp-fault.c and probe-neighbour.c.
 */
#ifndef UFFDMOVE_BENCH_PROBE_H
#define UFFDMOVE_BENCH_PROBE_H

#include <stdint.h>

uint64_t probe_now_ns(void);
/* Print "PROGRAM: @what: strerror(errno)" and exit(1). */
void probe_die(const char *what) __attribute__((noreturn));
/* Thread body: serve the uffd at *(int *)@uffd for ever. */
void *probe_classic_handler(void *uffd);
/* qsort() order of uint64_t. */
int probe_cmp_u64(const void *a, const void *b);

#endif /* UFFDMOVE_BENCH_PROBE_H */
