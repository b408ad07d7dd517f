/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The fixtures themselves: a private SoftHSM2 token and a private dbus-daemon come up, are
 * usable, and are gone after the test process ends, also when it dies by a signal.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/fixture.h"
#include "tests/tap.h"

static bool gone_within(const char *path, int ms)
{
	struct stat st;

	for (int i = 0; i < ms / 20; i++) {
		if (stat(path, &st) < 0)
			return true;
		usleep(20000);
	}
	return false;
}

/* Child: set up both fixtures, report the directory and bus address, then die as told. */
static _Noreturn void child(int fd, int how)
{
	const char *dir, *addr;
	char out[1024];

	dir = mkt_softhsm_setup();
	mkt_softhsm_add_token("fixture-a");
	addr = mkt_dbus_setup();
	snprintf(out, sizeof(out), "%s\n%s\n", dir, addr);
	if (write(fd, out, strlen(out)) < 0)
		_exit(3);
	close(fd);
	if (how == 1)
		abort();
	if (how == 2)
		raise(SIGKILL);
	_exit(0);
}

static void run_case(int how, const char *what)
{
	char buf[1024] = "", *nl;
	int p[2], status;
	ssize_t n, len = 0;
	pid_t pid;

	if (pipe(p) < 0)
		mkt_bail("pipe");
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		close(p[0]);
		char fdarg[16], howarg[16];

		/* A fresh process image, so that it makes fixtures of its own. */
		snprintf(fdarg, sizeof(fdarg), "%d", p[1]);
		snprintf(howarg, sizeof(howarg), "%d", how);
		execl("/proc/self/exe", "test-fixture", "child", fdarg, howarg, (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	while ((n = read(p[0], buf + len, sizeof(buf) - 1 - (size_t)len)) > 0)
		len += n;
	close(p[0]);
	waitpid(pid, &status, 0);
	buf[len] = '\0';
	nl = strchr(buf, '\n');
	if (!mkt_ok(nl != NULL, "%s: fixtures came up", what))
		return;
	*nl = '\0';
	mkt_ok(strncmp(buf, "/", 1) == 0 && strstr(nl + 1, "unix:") != NULL,
	       "%s: temp dir and bus address reported", what);
	mkt_ok(gone_within(buf, 5000), "%s: temp dir %s removed", what, buf);
}

int main(int argc, char **argv)
{
	const char *dir;
	char path[600];
	struct stat st;

	if (argc == 4 && strcmp(argv[1], "child") == 0) {
		/* keep the child's output out of our TAP stream */
		if (!freopen("/dev/null", "w", stdout))
			_exit(4);
		child(atoi(argv[2]), atoi(argv[3]));
	}

	/* In this process: the token store exists while the test runs. */
	dir = mkt_softhsm_setup();
	mkt_softhsm_add_token("fixture-main");
	snprintf(path, sizeof(path), "%s/tokens", dir);
	mkt_ok(stat(path, &st) == 0 && S_ISDIR(st.st_mode), "token directory exists");
	mkt_ok(getenv("SOFTHSM2_CONF") && strstr(getenv("SOFTHSM2_CONF"), dir) == getenv("SOFTHSM2_CONF"),
	       "SOFTHSM2_CONF points into the private directory");
	mkt_ok(mkt_dbus_setup() && strncmp(getenv("DBUS_SESSION_BUS_ADDRESS"), "unix:", 5) == 0,
	       "private bus address exported");

	run_case(0, "normal exit");
	run_case(1, "abort");
	run_case(2, "SIGKILL");
	return mkt_done();
}
