// SPDX-License-Identifier: MIT
/*
 * The simulated guest as a VMM sees it: its state (which version of each
 * page it wrote, in a memfd the old VMM passes on), booting it, and
 * starting, pausing, resuming and stopping its threads.
 */
#include "toy.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* A guest's state and its RAM; *@ram is NULL (errno set) on failure. */
struct vm *vm_alloc(const struct options *o, uint8_t **ram)
{
	struct vm *vm = calloc(1, sizeof(*vm));

	*ram = vm ? map_guest_ram(o->mem, o->thp) : NULL;
	return vm;
}

/* The version table: a new memfd, or the one the old VMM sent. */
static int map_versions(struct vm *vm, int ver_fd)
{
	size_t tlen = vm->npages * sizeof(uint32_t);
	struct stat stb;

	if (ver_fd < 0) {
		ver_fd = memfd_create("postcopy-upgrade-versions", MFD_CLOEXEC);
		if (ver_fd < 0)
			return -errno;
		vm->ver_fd = ver_fd;
		if (ftruncate(ver_fd, (off_t)tlen) < 0)
			return -errno;
	} else {
		vm->ver_fd = ver_fd;
		if (fstat(ver_fd, &stb) < 0)
			return -errno;
		if ((uint64_t)stb.st_size != tlen)
			return -EPROTO;
	}
	vm->ver = mmap(NULL, tlen, PROT_READ | PROT_WRITE, MAP_SHARED,
		       ver_fd, 0);
	if (vm->ver == MAP_FAILED) {
		vm->ver = NULL;
		return -errno;
	}
	return 0;
}

int vm_init(struct vm *vm, const struct options *o, uint8_t *ram,
	    int ver_fd)
{
	pthread_condattr_t ca;
	int ret;

	memset(vm, 0, sizeof(*vm));
	vm->ram = ram;
	vm->size = o->mem;
	vm->npages = o->mem / PAGE;
	vm->seed = o->seed;
	vm->nagents = o->vcpus + 1;
	vm->hot_pages = HOT_BYTES / PAGE;
	vm->hot_share = HOT_SHARE;
	ret = map_versions(vm, ver_fd);
	if (ret)
		return ret;
	pthread_mutex_init(&vm->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&vm->cond, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_init(&vm->fail.lock, NULL);
	return 0;
}

/* Which units (2 MiB with THP, else 4 KiB pages) the guest has touched. */
static bool unit_populated(const struct options *o, uint64_t unit)
{
	return mix(o->seed ^ 0x706f70756c617465ULL ^ mix(unit)) % 100 <
	       o->populate;
}

/* The guest boots: write version 1 of every page of the touched units. */
static uint64_t vm_populate(struct vm *vm, const struct options *o)
{
	uint64_t unit_pages = o->thp ? HPAGE / PAGE : 1, u, p, n = 0;

	for (u = 0; u < vm->npages / unit_pages; u++) {
		if (!unit_populated(o, u))
			continue;
		for (p = u * unit_pages; p < (u + 1) * unit_pages; p++) {
			fill_page(vm->ram + p * PAGE, page_base(vm->seed, p, 1));
			vm->ver[p] = 1;
			n++;
		}
	}
	return n * PAGE;
}

/*
 * The guest as the old VMM runs it before the upgrade: its state on @ram,
 * the memory it wrote, its threads, then --warmup ms of running. @who
 * names the VMM in what it says; on error, @what names the step.
 */
int vm_boot(struct vm *vm, const struct options *o, uint8_t *ram,
	    const char *who, uint64_t *populated, const char **what)
{
	char a[32], b[32];
	uint64_t t0;
	int ret;

	ret = vm_init(vm, o, ram, -1);
	if (ret) {
		*what = "guest state";
		return ret;
	}
	t0 = now_ns();
	*populated = vm_populate(vm, o);
	if (!o->json)
		say("%s (pid %d): guest RAM %s, THP %s, %s populated in %.2f s; %u vCPUs + 1 I/O thread run for %u ms",
		    who, (int)getpid(), fmt_bytes(a, sizeof(a), o->mem),
		    o->thp ? "on" : "off",
		    fmt_bytes(b, sizeof(b), *populated),
		    (double)(now_ns() - t0) / 1e9, o->vcpus, o->warmup_ms);
	ret = vm_start(vm, 1);
	if (ret) {
		*what = "starting the guest";
		return ret;
	}
	usleep(o->warmup_ms * 1000U);
	return 0;
}

int vm_start(struct vm *vm, uint64_t generation)
{
	unsigned int i;
	int ret;

	STORE(vm->state, VM_RUN);
	for (i = 0; i < vm->nagents; i++) {
		struct agent *a = &vm->agents[i];

		memset(a, 0, sizeof(*a));
		a->vm = vm;
		a->id = i;
		a->io = i == vm->nagents - 1;
		a->rng = mix(vm->seed ^ generation << 32 ^ i) | 1;
		a->cur_page = -1;
		a->pipe[0] = a->pipe[1] = -1;
		if (a->io) {
			a->buf = aligned_alloc(PAGE, PAGE);
			if (!a->buf || pipe2(a->pipe, O_CLOEXEC))
				return -ENOMEM;
		}
		ret = pthread_create(&a->tid, NULL, agent_main, a);
		if (ret)
			return -ret;
		vm->started++;
	}
	return 0;
}

static void deadline_in(struct timespec *ts, unsigned int ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/* Stop the vCPUs where they are (they park); returns the time the pause
 * was requested: the guest makes no progress from then on. */
uint64_t vm_pause(struct vm *vm)
{
	uint64_t t;

	pthread_mutex_lock(&vm->lock);
	t = now_ns();
	STORE(vm->state, VM_PAUSE);
	while (vm->parked + vm->exited < vm->started)
		pthread_cond_wait(&vm->cond, &vm->lock);
	pthread_mutex_unlock(&vm->lock);
	return t;
}

void vm_resume(struct vm *vm, uint8_t *ram)
{
	pthread_mutex_lock(&vm->lock);
	STORE(vm->ram, ram);
	STORE(vm->state, VM_RUN);
	pthread_cond_broadcast(&vm->cond);
	pthread_mutex_unlock(&vm->lock);
}

/*
 * Stop the guest threads; join those that stop within @timeout_ms. The
 * others are blocked on guest pages that will never arrive: they are
 * abandoned (the process exits without them). Returns their number.
 */
unsigned int vm_stop(struct vm *vm, unsigned int timeout_ms)
{
	struct timespec dl;
	unsigned int i, abandoned = 0;

	deadline_in(&dl, timeout_ms);
	pthread_mutex_lock(&vm->lock);
	STORE(vm->state, VM_STOP);
	pthread_cond_broadcast(&vm->cond);
	while (vm->exited < vm->started &&
	       pthread_cond_timedwait(&vm->cond, &vm->lock, &dl) != ETIMEDOUT)
		;
	pthread_mutex_unlock(&vm->lock);
	for (i = 0; i < vm->started; i++) {
		struct agent *a = &vm->agents[i];

		if (!LOAD(a->exited)) {
			abandoned++;
			continue;
		}
		pthread_join(a->tid, NULL);
		if (a->io) {
			close(a->pipe[0]);
			close(a->pipe[1]);
			free(a->buf);
			a->buf = NULL;
		}
	}
	vm->started = abandoned ? vm->started : 0;
	return abandoned;
}

void vm_counters(const struct vm *vm, uint64_t *reads, uint64_t *writes,
		 uint64_t *io)
{
	unsigned int i;

	*reads = *writes = *io = 0;
	for (i = 0; i < vm->nagents; i++) {
		const struct agent *a = &vm->agents[i];
		uint64_t r = __atomic_load_n(&a->reads, __ATOMIC_RELAXED);
		uint64_t w = __atomic_load_n(&a->writes, __ATOMIC_RELAXED);

		if (a->io) {
			*io += r + w;
		} else {
			*reads += r;
			*writes += w;
		}
	}
}

/*
 * Stop what still runs and release the guest state (not guest RAM).
 * Returns -EBUSY, releasing nothing, if a thread cannot be stopped (it
 * waits for a page that will never arrive).
 */
int vm_destroy(struct vm *vm)
{
	size_t tlen;

	if (!vm)
		return 0;
	if (vm->started && vm_stop(vm, STOP_TIMEOUT_MS))
		return -EBUSY;
	tlen = vm->npages * sizeof(uint32_t);
	if (vm->ver)
		munmap(vm->ver, tlen);
	if (vm->ver_fd > 0)
		close(vm->ver_fd);
	free(vm);
	return 0;
}

/* The guest state, then guest RAM (@ram and @ram2 where set); neither
 * while a thread may still touch it. */
void vm_release(struct vm *vm, uint8_t *ram, uint8_t *ram2, uint64_t size)
{
	if (vm_destroy(vm))
		return;
	if (ram)
		munmap(ram, size);
	if (ram2)
		munmap(ram2, size);
}

/* The first poisoned page a guest thread met, or 0. */
uintptr_t vm_poison_hit(const struct vm *vm, unsigned int *n)
{
	uintptr_t first = 0;
	unsigned int i;

	*n = 0;
	for (i = 0; i < vm->nagents; i++)
		if (vm->agents[i].sigbus_addr) {
			if (!first)
				first = vm->agents[i].sigbus_addr;
			(*n)++;
		}
	return first;
}
