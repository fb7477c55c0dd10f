// SPDX-License-Identifier: MIT
/*
 * Peak host memory during the handoff: the resident memory of both VMMs
 * together, sampled every millisecond. In --mode auto the old VMM frees
 * what arrived as it goes, pushed or pulled (about 1x guest RAM); in
 * --mode copy it keeps every page until it exits (about 2x at the end).
 */
#include "toy.h"

#include <stdio.h>
#include <time.h>
#include <unistd.h>

#define SAMPLE_NS	(1000 * 1000L)

/* Resident bytes of @pid (0: this process), or 0 if it is gone. */
static uint64_t resident(pid_t pid)
{
	char path[64];
	unsigned long size, rss = 0;
	FILE *f;

	if (pid)
		snprintf(path, sizeof(path), "/proc/%d/statm", (int)pid);
	else
		snprintf(path, sizeof(path), "/proc/self/statm");
	f = fopen(path, "re");
	if (!f)
		return 0;
	if (fscanf(f, "%lu %lu", &size, &rss) != 2)
		rss = 0;
	fclose(f);
	return (uint64_t)rss * (uint64_t)sysconf(_SC_PAGESIZE);
}

static void *watch_main(void *arg)
{
	struct memwatch *w = arg;
	struct timespec ts = { 0, SAMPLE_NS };
	uint64_t now;

	while (!LOAD(w->stop)) {
		now = resident(0) + (w->other ? resident(w->other) : 0);
		if (now > w->peak)
			STORE(w->peak, now);
		nanosleep(&ts, NULL);
	}
	return NULL;
}

void memwatch_start(struct memwatch *w, pid_t other)
{
	w->other = other;
	w->stop = false;
	w->peak = 0;
	w->running = !pthread_create(&w->tid, NULL, watch_main, w);
}

uint64_t memwatch_stop(struct memwatch *w)
{
	if (w->running) {
		STORE(w->stop, true);
		pthread_join(w->tid, NULL);
		w->running = false;
	}
	return w->peak;
}
