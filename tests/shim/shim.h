/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Test helpers for the fault-injecting PKCS#11 shim (tests/shim/p11-shim.c, which lists
 * every knob): where it is built, its control and log files in the fixture directory, and
 * counting what it logged. Typical use with the real mlskeyd:
 *
 *     mkt_shim_setup();                       // MKT_SHIM_LOG / MKT_SHIM_CONTROL
 *     mkt_shim_control("sign_delay_ms=3000\n");
 *     pid = mkt_shim_agent_start(extra_args); // mlskeyd --module <the shim>
 *     ... mkt_shim_count("C_Login ") ...
 */
#pragma once

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/agent-fixture.h"
#include "tests/fixture.h"
#include "tests/tap.h"

/* The built shim, or bails out when it is missing. Static buffer. */
static inline const char *mkt_shim_path(void)
{
	static char path[1024];
	const char *root = getenv("MLSKEY_BUILD_ROOT");

	snprintf(path, sizeof(path), "%s/tests/shim/libmkt-p11shim.so", root ? root : ".");
	if (access(path, R_OK) != 0)
		mkt_bail("the PKCS#11 shim is not built at %s", path);
	return path;
}

static inline const char *mkt_shim_file(const char *name)
{
	static char paths[2][512];
	int i = strcmp(name, "log") == 0 ? 0 : 1;

	snprintf(paths[i], sizeof(paths[i]), "%s/shim.%s", mkt_tmpdir(), name);
	return paths[i];
}

/* Points MKT_SHIM_LOG and MKT_SHIM_CONTROL at files in the fixture directory (inherited by
 * the mlskeyd started afterwards) and empties both. */
static inline void mkt_shim_setup(void)
{
	FILE *f;

	for (int i = 0; i < 2; i++) {
		const char *p = mkt_shim_file(i ? "control" : "log");

		f = fopen(p, "we");
		if (!f)
			mkt_bail("cannot write %s", p);
		fclose(f);
	}
	setenv("MKT_SHIM_LOG", mkt_shim_file("log"), 1);
	setenv("MKT_SHIM_CONTROL", mkt_shim_file("control"), 1);
}

/* Replaces the control file (key=value lines; the shim rereads it at each call). */
static inline void mkt_shim_control(const char *text)
{
	const char *p = mkt_shim_file("control");
	char tmp[600];
	FILE *f;

	/* written aside and renamed, so that a call never reads half a file */
	snprintf(tmp, sizeof(tmp), "%s.new", p);
	f = fopen(tmp, "we");
	if (!f)
		mkt_bail("cannot write %s", tmp);
	fputs(text, f);
	fclose(f);
	if (rename(tmp, p) < 0)
		mkt_bail("cannot rename %s", tmp);
}

/* Lines of the shim's log that start with prefix, e.g. "C_Login " or "C_Login user=2". */
static inline int mkt_shim_count(const char *prefix)
{
	FILE *f = fopen(mkt_shim_file("log"), "re");
	char line[512];
	int n = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, prefix, strlen(prefix)) == 0)
			n++;
	fclose(f);
	return n;
}

/* mkt_agent_start() with the shim as mlskeyd's only module (it loads SoftHSM itself). */
static inline pid_t mkt_shim_agent_start(const char *const *extra_args)
{
	const char *old = getenv("MKT_SOFTHSM_MODULE");
	char *saved = old ? strdup(old) : NULL;
	pid_t pid;

	mkt_softhsm_setup();
	/* the fixture passes --module mkt_softhsm_module(): the shim instead, for mlskeyd only */
	setenv("MKT_SOFTHSM_MODULE", mkt_shim_path(), 1);
	pid = mkt_agent_start(extra_args);
	if (saved)
		setenv("MKT_SOFTHSM_MODULE", saved, 1);
	else
		unsetenv("MKT_SOFTHSM_MODULE");
	free(saved);
	return pid;
}
