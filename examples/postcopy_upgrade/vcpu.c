// SPDX-License-Identifier: MIT
/*
 * The guest threads: vCPUs that read and write guest pages, and an I/O
 * thread that moves them through a pipe the way device emulation does.
 * Each checks what it reads; a poisoned page (SIGBUS, or EFAULT from a
 * syscall) stops the thread.
 */
#include "toy.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

static __thread struct agent *tls_agent;

/* A poisoned guest page (--on-source-death poison): record it and leave
 * the thread's loop. Anything else: the default action. */
static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	struct agent *a = tls_agent;

	(void)uc;
	if (!a || !a->jb_armed) {
		signal(sig, SIG_DFL);
		return;		/* re-executes the access: default action */
	}
	a->sigbus_addr = (uintptr_t)si->si_addr;
	a->jb_armed = 0;
	siglongjmp(a->jb, 1);
}

/* With --on-source-death poison, guest threads catch SIGBUS. */
int catch_poison(const struct options *o)
{
	struct sigaction sa;

	if (o->on_death != UFFDMOVE_ON_SOURCE_DEATH_POISON)
		return 0;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_sigbus;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	return sigaction(SIGBUS, &sa, NULL);
}

static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/*
 * A page for agent @a to touch: one of its own (page % nagents == id), so
 * that no two threads ever access one page. Like a real guest, most
 * accesses stay in a working set that drifts from time to time; the rest
 * go anywhere in guest RAM.
 */
static uint64_t pick_page(struct agent *a)
{
	const struct vm *vm = a->vm;
	uint64_t x = xorshift(&a->rng), lo = 0, n = vm->npages, first, cnt;

	if (vm->hot_pages && vm->hot_pages < vm->npages) {
		if (!a->hot_left--) {
			a->hot_left = HOT_OPS;
			a->hot_start = (x >> 20) %
				       ((vm->npages - vm->hot_pages) /
					(HPAGE / PAGE) + 1) * (HPAGE / PAGE);
		}
		if (x % 100 < vm->hot_share) {
			lo = a->hot_start;
			n = vm->hot_pages;
		}
	}
	first = lo + (a->id + vm->nagents - lo % vm->nagents) % vm->nagents;
	cnt = (lo + n - first + vm->nagents - 1) / vm->nagents;
	return first + (x >> 8) % cnt * vm->nagents;
}

static uint32_t next_version(uint32_t v)
{
	return v == UINT32_MAX ? 1 : v + 1;
}

/* One vCPU step: check a page (reads; holes must be zero) or write a new
 * version of it. Writes stay in memory the guest has touched, as a guest
 * with free memory does; reads go anywhere. */
static bool vcpu_step(struct agent *a, uint8_t *page, uint64_t p)
{
	struct vm *vm = a->vm;
	uint32_t v = vm->ver[p];
	long bad;

	if (v && (a->rng >> 62) == 0) {	/* a quarter are writes */
		v = next_version(v);
		fill_page(page, page_base(vm->seed, p, v));
		vm->ver[p] = v;
		INC(a->writes);
	} else {
		bad = check_page(page, vm->seed, p, v);
		INC(a->reads);
		if (bad >= 0) {
			report_bad_page(&vm->fail, "a vCPU read", page, p, bad,
					vm->seed, v);
			return false;
		}
	}
	return true;
}

/* One I/O step, like device emulation: write() a guest page to a pipe
 * (the kernel reads guest RAM) or read() from the pipe into a guest page
 * (the kernel writes guest RAM). Missing pages fault in kernel mode. */
static bool io_step(struct agent *a, uint8_t *page, uint64_t p)
{
	struct vm *vm = a->vm;
	uint32_t v = vm->ver[p];
	ssize_t n;
	long bad;

	if (v && (a->rng >> 63)) {
		v = next_version(v);
		fill_page(a->buf, page_base(vm->seed, p, v));
		if (write(a->pipe[1], a->buf, PAGE) != (ssize_t)PAGE)
			goto io_error;
		n = read(a->pipe[0], page, PAGE);
		if (n != (ssize_t)PAGE) {
			/* What the kernel did not store stays in the pipe;
			 * the thread stops here anyway. */
			goto io_error;
		}
		vm->ver[p] = v;
		INC(a->writes);
	} else {
		n = write(a->pipe[1], page, PAGE);
		if (n != (ssize_t)PAGE)
			goto io_error;
		if (read(a->pipe[0], a->buf, PAGE) != (ssize_t)PAGE)
			goto io_error;
		bad = check_page(a->buf, vm->seed, p, v);
		INC(a->reads);
		if (bad >= 0) {
			report_bad_page(&vm->fail, "an I/O write() from guest RAM",
					a->buf, p, bad, vm->seed, v);
			return false;
		}
	}
	return true;
io_error:
	/* EFAULT: the kernel met a poisoned page (the source died). */
	a->io_errno = errno;
	a->sigbus_addr = (uintptr_t)page;
	return false;
}

/* One access to one of the agent's pages; false stops the thread. While
 * it runs, cur_page names the page: should the thread block there for
 * good, the final check skips that page. */
static bool agent_step(struct agent *a, uint8_t *ram)
{
	uint64_t p = pick_page(a);
	uint8_t *page = ram + p * PAGE;

	STORE(a->cur_page, (int64_t)p);
	if (!(a->io ? io_step(a, page, p) : vcpu_step(a, page, p)))
		return false;
	STORE(a->cur_page, -1);
	return true;
}

/* The agent loop; left by return, or by siglongjmp on SIGBUS. */
static __attribute__((noinline)) void agent_loop(struct agent *a)
{
	struct vm *vm = a->vm;
	int st;

	for (;;) {
		st = LOAD(vm->state);
		if (st == VM_RUN) {
			if (!agent_step(a, LOAD(vm->ram)))
				return;
			continue;
		}
		pthread_mutex_lock(&vm->lock);
		if (vm->state == VM_PAUSE) {
			vm->parked++;
			pthread_cond_broadcast(&vm->cond);
			while (vm->state == VM_PAUSE)
				pthread_cond_wait(&vm->cond, &vm->lock);
			vm->parked--;
		}
		st = vm->state;
		pthread_mutex_unlock(&vm->lock);
		if (st == VM_STOP)
			return;
	}
}

void *agent_main(void *arg)
{
	struct agent *a = arg;
	struct vm *vm = a->vm;

	tls_agent = a;
	if (sigsetjmp(a->jb, 1) == 0) {
		a->jb_armed = 1;
		agent_loop(a);
		a->jb_armed = 0;
	}
	tls_agent = NULL;
	pthread_mutex_lock(&vm->lock);
	STORE(a->exited, true);
	vm->exited++;
	pthread_cond_broadcast(&vm->cond);
	pthread_mutex_unlock(&vm->lock);
	return NULL;
}
