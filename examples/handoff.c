// SPDX-License-Identifier: MIT
/*
 * The smallest complete live handoff, both sides, every error path.
 *
 * This process plays the old VMM: it owns a guest of 64 MiB of private
 * anonymous memory (a quarter of it never touched) and forks the new VMM.
 * The new VMM registers fresh, empty guest RAM, takes the guest over,
 * commits, runs a "vCPU" that reads guest memory while pages still arrive,
 * and checks every byte at the end.
 *
 * Build out of tree:  cc handoff.c $(pkg-config --cflags --libs libuffdmove)
 * Run as root (or with CAP_SYS_PTRACE, or access to /dev/userfaultfd).
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <uffdmove.h>

#define GUEST_SIZE	(64UL << 20)
#define PAGE		4096UL

/* What page @i of the guest holds: a word derived from its index, or
 * nothing (a page the guest never touched). */
static int is_hole(size_t i)
{
	return i % 4 == 3;
}

static uint64_t pattern(size_t i)
{
	return i * 0x9e3779b97f4a7c15ULL + 1;
}

static void *map_guest(void)
{
	void *p = mmap(NULL, GUEST_SIZE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		perror("mmap");
		return NULL;
	}
	madvise(p, GUEST_SIZE, MADV_HUGEPAGE);	/* THP where it can */
	return p;
}

/* A vCPU stand-in: touches guest pages in a stride while pages arrive. */
static void *vcpu(void *guest)
{
	volatile uint64_t *g = guest;
	uint64_t sum = 0;
	size_t i;

	for (i = 0; i < GUEST_SIZE / PAGE; i += 7)
		sum += g[i * PAGE / sizeof(*g)];
	return (void *)(uintptr_t)sum;
}

static int verify(const uint8_t *guest)
{
	size_t i, w;

	for (i = 0; i < GUEST_SIZE / PAGE; i++) {
		const uint64_t *p = (const uint64_t *)(guest + i * PAGE);

		for (w = 0; w < PAGE / sizeof(*p); w++)
			if (p[w] != (is_hole(i) ? 0 : pattern(i) + w)) {
				fprintf(stderr, "new VMM: page %zu word %zu wrong\n",
					i, w);
				return -1;
			}
	}
	return 0;
}

/* The new VMM. Exit status 0: it runs the guest with every byte. */
static int new_vmm(int sock)
{
	struct uffdmove_region ram = { .name = "ram0", .len = GUEST_SIZE };
	struct uffdmove_target *t;
	pthread_t tid;
	int ret;

	ram.addr = map_guest();		/* fresh: every page missing */
	if (!ram.addr)
		return 1;
	ret = uffdmove_target_new(&t, &ram, 1, NULL);
	if (ret < 0) {
		fprintf(stderr, "new VMM: %s\n", uffdmove_new_error());
		return 1;
	}
	ret = uffdmove_target_handoff(t, sock);
	if (ret == 0)
		ret = uffdmove_target_process(t);	/* the commit */
	if (ret < 0) {		/* never resume here; -ECANCELED: the old VMM
				 * keeps the guest (it decides, see its run) */
		fprintf(stderr, "new VMM: %s\n", uffdmove_target_error(t));
		uffdmove_target_free(t);
		return 1;
	}
	/* Committed: resume the guest now. Its first touches fault; the
	 * library serves them (reading the old VMM's memory where the kernel
	 * lets us, else the old VMM pushes) while the rest streams in. */
	pthread_create(&tid, NULL, vcpu, ram.addr);
	ret = uffdmove_target_wait(t, -1);
	if (ret < 0) {
		/* The guest lost pages; missing ones block (never read zero):
		 * stop the guest. Leaving keeps the blocked vCPU from waiting
		 * forever; freeing the handle now would be a caller bug. */
		fprintf(stderr, "new VMM: %s\n", uffdmove_target_error(t));
		_exit(1);
	}
	pthread_join(tid, NULL);
	ret = verify(ram.addr);
	if (!ret)
		printf("new VMM: every byte of %lu MiB is here\n",
		       GUEST_SIZE >> 20);
	uffdmove_target_free(t);
	return ret ? 1 : 0;
}

/* The old VMM: hand the guest over, or keep it if the new one never ran. */
static int old_vmm(uint8_t *guest, int sock)
{
	struct uffdmove_region ram = { "ram0", guest, GUEST_SIZE };
	struct uffdmove_source *s;
	struct uffdmove_stats st;
	int ret;

	ret = uffdmove_source_new(&s, &ram, 1, NULL);
	if (ret < 0) {
		fprintf(stderr, "old VMM: %s\n", uffdmove_new_error());
		return ret;
	}
	ret = uffdmove_source_accept(s, sock);		/* the guest is paused */
	if (ret == 0)
		ret = uffdmove_source_run(s);
	uffdmove_source_stats(s, &st);
	if (ret == 0 && st.primitive == UFFDMOVE_PRIM_PULL)
		/* The new VMM read our memory itself; we freed what it took. */
		printf("old VMM: the new VMM pulled %llu MiB, %llu MiB freed here; exiting\n",
		       (unsigned long long)(st.bytes_pulled >> 20),
		       (unsigned long long)(st.bytes_released >> 20));
	else if (ret == 0)
		printf("old VMM: handed over %llu MiB (%llu faults served, p50 %llu us); exiting\n",
		       (unsigned long long)((st.bytes_moved + st.bytes_copied) >> 20),
		       (unsigned long long)st.faults,
		       (unsigned long long)st.fault_ns_p50 / 1000);
	else if (ret == -ECANCELED)
		printf("old VMM: the new VMM never committed; resuming the guest here (%s)\n",
		       uffdmove_source_error(s));
	else
		fprintf(stderr, "old VMM: the handoff failed after the commit: %s\n",
			uffdmove_source_error(s));
	uffdmove_source_free(s);
	return ret;
}

int main(void)
{
	uint8_t *guest;
	int sv[2], status, ret;
	size_t i, w;
	pid_t pid;

	/* The old VMM's guest, as it would be when it pauses it. */
	guest = map_guest();
	if (!guest)
		return 1;
	for (i = 0; i < GUEST_SIZE / PAGE; i++)
		for (w = 0; !is_hole(i) && w < PAGE / sizeof(uint64_t); w++)
			((uint64_t *)(guest + i * PAGE))[w] = pattern(i) + w;
	/* Keep the guest out of the child: a COW-shared page cannot move. */
	madvise(guest, GUEST_SIZE, MADV_DONTFORK);

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv)) {
		perror("socketpair");
		return 1;
	}
	pid = fork();
	if (pid < 0) {
		perror("fork");
		return 1;
	}
	if (pid == 0) {		/* in a real upgrade: exec the new binary */
		close(sv[0]);
		ret = new_vmm(sv[1]);
		fflush(stdout);
		_exit(ret);
	}
	close(sv[1]);
	ret = old_vmm(guest, sv[0]);
	close(sv[0]);
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) ||
	    WEXITSTATUS(status))
		ret = ret ? ret : -1;
	return ret ? 1 : 0;
}
