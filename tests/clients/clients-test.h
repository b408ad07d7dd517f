/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Helpers shared by the client tests (tests/clients/): error checks, the test pinentry, RSS. */
#pragma once

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/resource.h>
#include <sys/types.h>

#include "clients/mlskey.h"
#include "common/macros.h"
#include "tests/fixture.h"
#include "tests/tap.h"

/*
 * Checks that a libmlskey call failed with errno `want` and D-Bus error name `name`, with a
 * message in words. Prints what came instead.
 */
_printf_(4, 5) static inline bool mkt_ok_mlskey_err(int r, int want, const char *name,
						    const char *fmt, ...)
{
	const mlskey_error *e = mlskey_last_error();
	char what[512];
	va_list ap;
	bool ok;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	ok = r == want && e->code == r && strcmp(e->name, name) == 0 && strlen(e->message) > 10;
	if (!ok)
		mkt_diag("got r=%d (%s) %s: \"%s\"; want %d %s", r, r < 0 ? strerror(-r) : "ok",
			 e->name, e->message, want, name);
	else
		mkt_diag("%s: %s", e->name, e->message);
	return mkt_ok(ok, "%s -> %s", what, name);
}

/* A libmlskey call that must succeed; prints the error otherwise. */
_printf_(2, 3) static inline bool mkt_ok_mlskey(int r, const char *fmt, ...)
{
	const mlskey_error *e = mlskey_last_error();
	char what[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (r < 0)
		mkt_diag("r=%d (%s) %s: %s", r, strerror(-r), e->name, e->message);
	return mkt_ok(r == 0, "%s", what);
}


/* The resident set size of a process in KiB (VmRSS of /proc/PID/status), or -1. */
static inline long rss_kib(pid_t pid)
{
	char path[64], line[256];
	long kib = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

/* The key in a listing with that URI, or NULL. */
static inline const mlskey_key *find_key(const mlskey_key *keys, size_t n, const char *uri)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(keys[i].uri, uri) == 0)
			return &keys[i];
	return NULL;
}

/* The token in a listing with that label, or NULL. */
static inline const mlskey_token *find_token(const mlskey_token *t, size_t n, const char *label)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(t[i].label, label) == 0)
			return &t[i];
	return NULL;
}

/*
 * Lets process pid open no more files than it has open now (RLIMIT_NOFILE, via prlimit), so
 * that SoftHSM's file store under the agent cannot write a new object: a real storage failure
 * of the token. Saves the old limit in *old for files_restore(). false when it cannot.
 */
static inline bool files_freeze(pid_t pid, struct rlimit *old)
{
	struct rlimit tight;
	char fddir[64];
	long fds = 0;
	DIR *d;

	snprintf(fddir, sizeof(fddir), "/proc/%d/fd", (int)pid);
	d = opendir(fddir);
	for (struct dirent *de; d && (de = readdir(d));)
		fds += de->d_name[0] != '.';
	if (d)
		closedir(d);
	if (fds == 0 || prlimit(pid, RLIMIT_NOFILE, NULL, old) < 0)
		return false;
	tight = (struct rlimit){ (rlim_t)fds, old->rlim_max };
	return prlimit(pid, RLIMIT_NOFILE, &tight, NULL) == 0;
}

static inline void files_restore(pid_t pid, const struct rlimit *old)
{
	prlimit(pid, RLIMIT_NOFILE, old, NULL);
}
