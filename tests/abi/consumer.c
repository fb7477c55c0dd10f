/* SPDX-License-Identifier: MIT */
/*
 * A program from outside the tree: tests/abi/pkgconfig-check builds it with
 * nothing but `pkg-config --cflags --libs libuffdmove` against a DESTDIR
 * install and checks what it prints.
 */
#include <stdio.h>
#include <string.h>

#include <uffdmove.h>

int main(void)
{
	struct uffdmove_caps caps;
	int ret;

	memset(&caps, 0, sizeof(caps));
	ret = uffdmove_probe(&caps);
	printf("version %s\n", uffdmove_version());
	printf("probe %d\n", ret);
	if (ret == 0)
		printf("userfaultfd %d move %d\n", (int)caps.userfaultfd,
		       (int)caps.move);
	return ret == 0 ? 0 : 1;
}
