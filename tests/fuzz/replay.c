/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Replays a fuzz target's corpus without libFuzzer, as a TAP test: each argument is a file
 * or a directory of files; each file is fed once to LLVMFuzzerTestOneInput. A crash fails
 * the test (meson reports the signal); a file that cannot be read is a failed check.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tests/fuzz/fuzz.h"
#include "tests/tap.h"

static int cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void run_file(const char *path)
{
	uint8_t *buf = NULL;
	long n;
	FILE *f = fopen(path, "rb");

	if (!f || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
		mkt_ok(false, "%s: %s", path, strerror(errno));
		if (f)
			fclose(f);
		return;
	}
	buf = malloc(n ? (size_t)n : 1);
	if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
		mkt_ok(false, "%s: cannot read", path);
	} else {
		/* libFuzzer hands out an exactly sized copy; so does this, for ASan's sake */
		LLVMFuzzerTestOneInput(buf, (size_t)n);
		mkt_ok(true, "%s (%ld bytes)", path, n);
	}
	free(buf);
	fclose(f);
}

static void run_dir(const char *dir)
{
	char **names = NULL, path[4096];
	size_t n = 0, cap = 0;
	struct dirent *de;
	DIR *d = opendir(dir);

	if (!d) {
		mkt_ok(false, "%s: %s", dir, strerror(errno));
		return;
	}
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 64;
			names = realloc(names, cap * sizeof(*names));
			if (!names)
				mkt_bail("out of memory");
		}
		names[n++] = strdup(de->d_name);
	}
	closedir(d);
	qsort(names, n, sizeof(*names), cmp);
	for (size_t i = 0; i < n; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		run_file(path);
		free(names[i]);
	}
	free(names);
}

int main(int argc, char **argv)
{
	struct stat st;

	if (argc < 2)
		mkt_bail("usage: %s CORPUS-DIR-OR-FILE...", argv[0]);
	for (int i = 1; i < argc; i++) {
		if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode))
			run_dir(argv[i]);
		else
			run_file(argv[i]);
	}
	return mkt_done();
}
