/* SPDX-License-Identifier: MIT */
/*
 * Compiled, never run, by tests/abi/header-check: once as strict C99 and
 * once as C++11, with -pedantic -Werror. The header comes first, so it must
 * be self-contained, and twice, so its include guard must work.
 *
 * The table below pins each call of the API contract (the calls and
 * argument orders programs outside this tree are written against, kept
 * since 0.1) to its signature: a changed argument or return type is an
 * incompatible pointer (an error in C++, a warning made an error in C).
 * Calls the header adds beyond that contract are left to the symbols test. The
 * table's references also give the C++ object undefined symbols, which
 * header-check reads to prove the extern "C" guards work (a mangled
 * _Z...uffdmove_ name means they do not).
 */
#include <uffdmove.h>
#include <uffdmove.h>

struct abi_api {
	const char *(*version)(void);
	int (*probe)(struct uffdmove_caps *);

	int (*target_opts_init)(struct uffdmove_target_opts *);
	int (*target_new)(struct uffdmove_target **,
			  const struct uffdmove_region *, size_t,
			  const struct uffdmove_target_opts *);
	int (*target_handoff)(struct uffdmove_target *, int);
	int (*target_fd)(const struct uffdmove_target *);
	int (*target_process)(struct uffdmove_target *);
	int (*target_wait)(struct uffdmove_target *, int);
	int (*target_stats)(const struct uffdmove_target *,
			    struct uffdmove_stats *);
	const char *(*target_error)(const struct uffdmove_target *);
	void (*target_free)(struct uffdmove_target *);

	int (*source_opts_init)(struct uffdmove_source_opts *);
	int (*source_new)(struct uffdmove_source **,
			  const struct uffdmove_region *, size_t,
			  const struct uffdmove_source_opts *);
	int (*source_declare_pinned)(struct uffdmove_source *, void *, size_t);
	int (*source_accept)(struct uffdmove_source *, int);
	int (*source_run)(struct uffdmove_source *);
	int (*source_stats)(const struct uffdmove_source *,
			    struct uffdmove_stats *);
	const char *(*source_error)(const struct uffdmove_source *);
	void (*source_free)(struct uffdmove_source *);
};

/* extern, so that neither C nor C++ may call it unused */
extern const struct abi_api abi_api;
const struct abi_api abi_api = {
	uffdmove_version,
	uffdmove_probe,

	uffdmove_target_opts_init,
	uffdmove_target_new,
	uffdmove_target_handoff,
	uffdmove_target_fd,
	uffdmove_target_process,
	uffdmove_target_wait,
	uffdmove_target_stats,
	uffdmove_target_error,
	uffdmove_target_free,

	uffdmove_source_opts_init,
	uffdmove_source_new,
	uffdmove_source_declare_pinned,
	uffdmove_source_accept,
	uffdmove_source_run,
	uffdmove_source_stats,
	uffdmove_source_error,
	uffdmove_source_free,
};

/* The fields and constants of the contract, with their types. */
extern size_t abi_fields(struct uffdmove_region *r,
			 struct uffdmove_source_opts *o);
size_t abi_fields(struct uffdmove_region *r, struct uffdmove_source_opts *o)
{
	const char **name = &r->name;
	void **addr = &r->addr;
	size_t *len = &r->len;
	enum uffdmove_mode modes[3] = {
		UFFDMOVE_MODE_AUTO, UFFDMOVE_MODE_COPY, UFFDMOVE_MODE_MOVE,
	};

	o->mode = (uint32_t)modes[UFFDMOVE_MODE_AUTO];
	return *len + (*name != NULL) + (*addr != NULL) +
	       sizeof(struct uffdmove_caps) + sizeof(struct uffdmove_stats) +
	       sizeof(struct uffdmove_target_opts);
}

#if !defined(UFFDMOVE_VERSION_MAJOR) || !defined(UFFDMOVE_VERSION_MINOR) || \
	!defined(UFFDMOVE_VERSION_MICRO)
#error "uffdmove.h must define UFFDMOVE_VERSION_MAJOR/MINOR/MICRO"
#elif UFFDMOVE_VERSION_MAJOR < 0 || UFFDMOVE_VERSION_MINOR < 0 || \
	UFFDMOVE_VERSION_MICRO < 0
#error "UFFDMOVE_VERSION_* must be non-negative integers usable in #if"
#endif
