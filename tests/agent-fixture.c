/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <dbus/dbus.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/macros.h"
#include "tests/agent-fixture.h"
#include "tests/fixture.h"
#include "tests/tap.h"

const char *mkt_build_path(const char *rel)
{
	static char buf[1024];
	const char *root = getenv("MLSKEY_BUILD_ROOT");

	if (!root)
		root = ".";
	snprintf(buf, sizeof(buf), "%s/%s", root, rel);
	return buf;
}

static const char *source_path(const char *rel)
{
	static char buf[1024];
	const char *root = getenv("MLSKEY_SOURCE_ROOT");

	if (!root)
		root = "..";
	snprintf(buf, sizeof(buf), "%s/%s", root, rel);
	return buf;
}

/* True once someone owns org.mlskey.Agent1 on the bus at addr. */
static bool name_owned(DBusConnection *c)
{
	DBusError err;
	bool owned;

	dbus_error_init(&err);
	owned = dbus_bus_name_has_owner(c, "org.mlskey.Agent1", &err);
	dbus_error_free(&err);
	return owned;
}

pid_t mkt_agent_start(const char *const *extra_args)
{
	char exe[1024], pinentry[1024], xdg[512];
	const char *argv[64];
	const char *addr, *level = getenv("MKT_AGENT_LOG_LEVEL");
	size_t n = 0;
	DBusConnection *c;
	DBusError err;
	pid_t pid;

	mkt_softhsm_setup();
	addr = mkt_dbus_setup();
	/* the user's own mlskeyd.conf must not leak into a test */
	snprintf(xdg, sizeof(xdg), "%s/xdg-config", mkt_tmpdir());
	if (mkdir(xdg, 0700) < 0 && errno != EEXIST)
		mkt_bail("mkdir %s: %s", xdg, strerror(errno));
	setenv("XDG_CONFIG_HOME", xdg, 1);
	snprintf(exe, sizeof(exe), "%s", mkt_build_path("ipc/mlskeyd"));
	snprintf(pinentry, sizeof(pinentry), "%s", source_path("tests/pinentry-test"));
	if (access(exe, X_OK) != 0)
		mkt_bail("mlskeyd not built at %s", exe);
	argv[n++] = exe;
	argv[n++] = "--address";
	argv[n++] = addr;
	argv[n++] = "--no-p11-kit";
	argv[n++] = "--module";
	argv[n++] = mkt_softhsm_module();
	argv[n++] = "--pinentry";
	argv[n++] = pinentry;
	argv[n++] = "--foreground";
	argv[n++] = "--log-level";
	argv[n++] = level ? level : "info";
	for (size_t i = 0; extra_args && extra_args[i]; i++) {
		if (n + 1 >= ELEMENTSOF(argv))
			mkt_bail("too many mlskeyd arguments");
		argv[n++] = extra_args[i];
	}
	argv[n] = NULL;

	fflush(stdout);
	pid = fork();
	if (pid < 0)
		mkt_bail("fork: %s", strerror(errno));
	if (pid == 0) {
		/* gone with the test, however it ends; its stdout must not mix into TAP */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		dup2(STDERR_FILENO, STDOUT_FILENO);
		execv(exe, (char *const *)argv);
		fprintf(stderr, "exec %s: %s\n", exe, strerror(errno));
		_exit(127);
	}

	dbus_error_init(&err);
	c = dbus_connection_open_private(addr, &err);
	if (!c || !dbus_bus_register(c, &err))
		mkt_bail("cannot connect to the test bus %s: %s", addr, err.message);
	dbus_connection_set_exit_on_disconnect(c, FALSE);
	for (int i = 0; i < 1000; i++) {
		int status;

		if (name_owned(c)) {
			dbus_connection_close(c);
			dbus_connection_unref(c);
			return pid;
		}
		if (waitpid(pid, &status, WNOHANG) == pid)
			mkt_bail("mlskeyd exited at start (status %d); see its messages above",
				 WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
		nanosleep(&(struct timespec){ 0, 10 * 1000 * 1000 }, NULL);
	}
	kill(pid, SIGKILL);
	mkt_bail("mlskeyd did not own org.mlskey.Agent1 within 10 s");
}

int mkt_agent_stop(pid_t pid)
{
	int status;

	if (kill(pid, SIGTERM) < 0)
		return -errno;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void mkt_pinentry_control(const char *shell)
{
	static char path[512];
	FILE *f;

	if (!path[0])
		snprintf(path, sizeof(path), "%s/pinentry.control", mkt_tmpdir());
	f = fopen(path, "we");
	if (!f || fputs(shell, f) < 0 || fclose(f) != 0)
		mkt_bail("cannot write %s", path);
	setenv("MKT_PINENTRY_CONTROL", path, 1);
}

const char *mkt_pinentry_log_path(void)
{
	static char path[512];

	if (!path[0]) {
		snprintf(path, sizeof(path), "%s/pinentry.log", mkt_tmpdir());
		setenv("MKT_PINENTRY_LOG", path, 1);
	}
	return path;
}

int mkt_pinentry_getpins(void)
{
	FILE *f = fopen(mkt_pinentry_log_path(), "re");
	char line[2048];
	int n = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, "GETPIN", 6) == 0)
			n++;
	fclose(f);
	return n;
}
