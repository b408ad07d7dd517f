/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libmlskey as a program outside the tree sees it: the shared object exports only mlskey_*
 * (under the MLSKEY_0.1 version), has the soname libmlskey.so.0, and pkg-config finds it
 * through the uninstalled .pc file well enough to build and link the example program.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/tap.h"

static const char *build, *source;

static bool have(const char *prog)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", prog);
	return system(cmd) == 0;
}

/* Runs a shell command and returns its stdout (malloc), or NULL when it fails. */
static char *capture(const char *cmd)
{
	FILE *p = popen(cmd, "r");
	char *buf = NULL;
	size_t len = 0, cap = 0, k;

	if (!p)
		return NULL;
	do {
		if (len + 1025 > cap) {
			cap = cap * 2 + 2048;
			buf = realloc(buf, cap);
		}
		k = fread(buf + len, 1, cap - len - 1, p);
		len += k;
	} while (k > 0);
	buf[len] = '\0';
	if (pclose(p) != 0) {
		free(buf);
		return NULL;
	}
	return buf;
}

static void test_exports(void)
{
	char cmd[1024], *out, *line, *save = NULL;
	int n = 0, bad = 0;

	snprintf(cmd, sizeof(cmd), "nm -D --defined-only %s/clients/libmlskey.so.0", build);
	out = capture(cmd);
	if (!mkt_ok(out != NULL, "%s", cmd))
		return;
	for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		const char *sym = strrchr(line, ' ');

		sym = sym ? sym + 1 : line;
		if (strcmp(sym, "MLSKEY_0.1") == 0)
			continue;
		if (strncmp(sym, "mlskey_", 7) != 0 || !strstr(sym, "@@MLSKEY_0.1")) {
			mkt_diag("exported: %s", sym);
			bad++;
		}
		n++;
	}
	mkt_ok(n >= 20 && bad == 0, "%d exported symbols, all mlskey_*@@MLSKEY_0.1 (%d others)", n,
	       bad);
	free(out);

	snprintf(cmd, sizeof(cmd), "objdump -p %s/clients/libmlskey.so.0 | grep SONAME", build);
	out = capture(cmd);
	mkt_ok(out && strstr(out, "libmlskey.so.0"), "soname libmlskey.so.0");
	free(out);
	snprintf(cmd, sizeof(cmd), "readlink %s/clients/libmlskey.so.0", build);
	out = capture(cmd);
	mkt_ok(out && strncmp(out, "libmlskey.so.0.1.0", 18) == 0,
	       "libmlskey.so.0 -> libmlskey.so.0.1.0");
	free(out);
}

static void test_pkg_config(void)
{
	char cmd[2048], *cflags, *libs, *exe;

	if (!have("pkg-config")) {
		printf("ok %d - pkg-config # SKIP pkg-config is not installed\n", ++mkt_n);
		return;
	}
	snprintf(cmd, sizeof(cmd), "PKG_CONFIG_PATH=%s/meson-uninstalled pkg-config --cflags mlskey",
		 build);
	cflags = capture(cmd);
	snprintf(cmd, sizeof(cmd), "PKG_CONFIG_PATH=%s/meson-uninstalled pkg-config --libs mlskey",
		 build);
	libs = capture(cmd);
	mkt_ok(cflags && libs && strstr(libs, "-lmlskey"), "pkg-config --cflags --libs mlskey: %s %s",
	       cflags ? strtok(cflags, "\n") : "(failed)", libs ? strtok(libs, "\n") : "(failed)");
	snprintf(cmd, sizeof(cmd), "PKG_CONFIG_PATH=%s/meson-uninstalled pkg-config --modversion mlskey",
		 build);
	exe = capture(cmd);
	mkt_ok(exe && strncmp(exe, "0.1.0", 5) == 0, "pkg-config --modversion mlskey: 0.1.0");
	free(exe);
	if (!cflags || !libs || !have("cc")) {
		printf("ok %d - example builds # SKIP no pkg-config output or no cc\n", ++mkt_n);
		goto out;
	}
	/* Built the way the example's comment says, with nothing from the tree but the .pc. */
	exe = NULL;
	snprintf(cmd, sizeof(cmd),
		 "cc -std=c99 -Wall -Werror %s/clients/example.c %s %s -o %s/abi-example.%d && "
		 "LD_LIBRARY_PATH=%s/clients ldd %s/abi-example.%d | grep -q 'libmlskey.so.0 =>' && "
		 "echo built",
		 source, cflags, libs, build, (int)getpid(), build, build, (int)getpid());
	exe = capture(cmd);
	mkt_ok(exe && strstr(exe, "built"), "clients/example.c builds with pkg-config's flags and "
	       "links libmlskey.so.0");
	free(exe);
	snprintf(cmd, sizeof(cmd), "%s/abi-example.%d", build, (int)getpid());
	unlink(cmd);
out:
	free(cflags);
	free(libs);
}

int main(void)
{
	build = getenv("MLSKEY_BUILD_ROOT");
	source = getenv("MLSKEY_SOURCE_ROOT");
	if (!build || !source)
		mkt_bail("MLSKEY_BUILD_ROOT and MLSKEY_SOURCE_ROOT must be set (meson test does)");
	if (!have("nm") || !have("objdump"))
		mkt_skip_all("binutils (nm, objdump) are not installed");
	test_exports();
	test_pkg_config();
	return mkt_done();
}
