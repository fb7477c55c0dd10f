/* SPDX-License-Identifier: MIT */
/*
 * The header's UFFDMOVE_VERSION_* macros and the library's
 * uffdmove_version() both equal meson.project_version(), which meson passes
 * as ABI_EXPECTED_VERSION (string) and ABI_EXPECTED_{MAJOR,MINOR,MICRO}.
 */
#include <stdio.h>
#include <string.h>

#include <uffdmove.h>

int main(void)
{
	const char *run = uffdmove_version();
	char hdr[64];
	int failed = 0;

	snprintf(hdr, sizeof(hdr), "%d.%d.%d", UFFDMOVE_VERSION_MAJOR,
		 UFFDMOVE_VERSION_MINOR, UFFDMOVE_VERSION_MICRO);
	printf("meson.project_version() %s\n", ABI_EXPECTED_VERSION);
	printf("UFFDMOVE_VERSION_*      %s\n", hdr);
	printf("uffdmove_version()      %s\n", run ? run : "(NULL)");

	if (UFFDMOVE_VERSION_MAJOR != ABI_EXPECTED_MAJOR ||
	    UFFDMOVE_VERSION_MINOR != ABI_EXPECTED_MINOR ||
	    UFFDMOVE_VERSION_MICRO != ABI_EXPECTED_MICRO) {
		printf("FAIL: header macros %s != project version %s\n",
		       hdr, ABI_EXPECTED_VERSION);
		failed = 1;
	}
	if (!run || strcmp(run, ABI_EXPECTED_VERSION) != 0) {
		printf("FAIL: uffdmove_version() %s != project version %s\n",
		       run ? run : "(NULL)", ABI_EXPECTED_VERSION);
		failed = 1;
	}
	if (!failed)
		printf("version check passed\n");
	return failed;
}
