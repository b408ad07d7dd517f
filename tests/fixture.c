/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/macros.h"
#include "tests/fixture.h"
#include "tests/tap.h"

extern char **environ;

static char tmpdir[256];
static int reaper_fd = -1; /* write end; the reaper sees EOF when this process is gone */
static char softhsm_conf[300];
static char dbus_address[400];

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	remove(path);
	return 0;
}

/* The reaper: reads "pid\n" lines naming processes to kill, then on EOF kills them and
 * removes the directory. It runs in its own session so that a signal to the test's process
 * group (meson's timeout) does not take it down before it has cleaned up. */
static _Noreturn void reaper(int rfd)
{
	pid_t pids[64];
	size_t npids = 0;
	char buf[64], line[32];
	size_t ll = 0;
	ssize_t n;

	setsid();
	signal(SIGINT, SIG_IGN);
	signal(SIGTERM, SIG_IGN);
	while ((n = read(rfd, buf, sizeof(buf))) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] == '\n') {
				line[ll] = '\0';
				if (npids < ELEMENTSOF(pids))
					pids[npids++] = (pid_t)atoi(line);
				ll = 0;
			} else if (ll + 1 < sizeof(line)) {
				line[ll++] = buf[i];
			}
		}
	}
	for (size_t i = 0; i < npids; i++)
		if (pids[i] > 0)
			kill(pids[i], SIGTERM);
	for (size_t i = 0; i < npids; i++)
		if (pids[i] > 0)
			for (int t = 0; t < 50 && kill(pids[i], 0) == 0; t++)
				usleep(20000);
	for (size_t i = 0; i < npids; i++)
		if (pids[i] > 0)
			kill(pids[i], SIGKILL);
	nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	_exit(0);
}

const char *mkt_tmpdir(void)
{
	int p[2];
	pid_t pid;

	if (tmpdir[0])
		return tmpdir;
	snprintf(tmpdir, sizeof(tmpdir), "%s/mlskey-test-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(tmpdir))
		mkt_bail("mkdtemp: %s", strerror(errno));
	if (pipe2(p, O_CLOEXEC) < 0)
		mkt_bail("pipe: %s", strerror(errno));
	fflush(stdout);
	pid = fork();
	if (pid < 0)
		mkt_bail("fork: %s", strerror(errno));
	if (pid == 0) {
		close(p[1]);
		reaper(p[0]);
	}
	close(p[0]);
	reaper_fd = p[1];
	return tmpdir;
}

static void reap_on_exit(pid_t pid)
{
	char line[32];
	int n = snprintf(line, sizeof(line), "%d\n", (int)pid);

	if (write(reaper_fd, line, (size_t)n) != n)
		mkt_bail("cannot register pid %d with the reaper", (int)pid);
}

static int run(char *const argv[])
{
	posix_spawn_file_actions_t fa;
	pid_t pid;
	int status, r;

	posix_spawn_file_actions_init(&fa);
	/* Tools print to stdout; keep TAP's stdout clean. */
	posix_spawn_file_actions_adddup2(&fa, STDERR_FILENO, STDOUT_FILENO);
	r = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (r != 0)
		return -r;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static bool have_program(const char *name)
{
	const char *path = getenv("PATH");
	char buf[512];

	if (!path)
		path = "/usr/bin:/bin";
	while (*path) {
		const char *end = strchr(path, ':');
		size_t len = end ? (size_t)(end - path) : strlen(path);

		snprintf(buf, sizeof(buf), "%.*s/%s", (int)len, path, name);
		if (access(buf, X_OK) == 0)
			return true;
		path += len + (end ? 1 : 0);
	}
	/* sbin directories are not always on PATH for non-root users */
	snprintf(buf, sizeof(buf), "/usr/sbin/%s", name);
	return access(buf, X_OK) == 0;
}

const char *mkt_softhsm_module(void)
{
	static const char *const candidates[] = {
		"/usr/lib/softhsm/libsofthsm2.so",
		"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
		"/usr/lib64/pkcs11/libsofthsm2.so",
		"/usr/lib/pkcs11/libsofthsm2.so",
	};
	const char *env = getenv("MKT_SOFTHSM_MODULE");

	if (env && access(env, R_OK) == 0)
		return env;
	for (size_t i = 0; i < ELEMENTSOF(candidates); i++)
		if (access(candidates[i], R_OK) == 0)
			return candidates[i];
	return NULL;
}

const char *mkt_softhsm_setup(void)
{
	char tokens[300];
	FILE *f;

	if (softhsm_conf[0])
		return tmpdir;
	if (!mkt_softhsm_module())
		mkt_skip_all("SoftHSM2 module not installed (apt-get install softhsm2)");
	if (!have_program("softhsm2-util"))
		mkt_skip_all("softhsm2-util not installed (apt-get install softhsm2)");
	mkt_tmpdir();
	snprintf(tokens, sizeof(tokens), "%s/tokens", tmpdir);
	if (mkdir(tokens, 0700) < 0)
		mkt_bail("mkdir %s: %s", tokens, strerror(errno));
	snprintf(softhsm_conf, sizeof(softhsm_conf), "%s/softhsm2.conf", tmpdir);
	f = fopen(softhsm_conf, "we");
	if (!f)
		mkt_bail("cannot write %s: %s", softhsm_conf, strerror(errno));
	fprintf(f, "directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n"
		   "slots.removable = false\n",
		tokens);
	fclose(f);
	setenv("SOFTHSM2_CONF", softhsm_conf, 1);
	return tmpdir;
}

void mkt_softhsm_add_token(const char *label)
{
	char *const argv[] = { "softhsm2-util", "--init-token", "--free", "--label", (char *)label,
			       "--so-pin", MKT_SO_PIN, "--pin", MKT_USER_PIN, NULL };

	mkt_softhsm_setup();
	if (run(argv) != 0)
		mkt_bail("softhsm2-util --init-token --label %s failed", label);
}

void mkt_softhsm_delete_token(const char *label)
{
	char *const argv[] = { "softhsm2-util", "--delete-token", "--token", (char *)label, NULL };

	if (run(argv) != 0)
		mkt_bail("softhsm2-util --delete-token --token %s failed", label);
}

const char *mkt_dbus_setup(void)
{
	char conf[300], sock[300];
	int p[2];
	pid_t pid;
	FILE *f;
	ssize_t n;
	size_t len = 0;

	if (dbus_address[0])
		return dbus_address;
	if (!have_program("dbus-daemon"))
		mkt_skip_all("dbus-daemon not installed (apt-get install dbus)");
	mkt_tmpdir();
	snprintf(conf, sizeof(conf), "%s/bus.conf", tmpdir);
	snprintf(sock, sizeof(sock), "%s/bus", tmpdir);
	f = fopen(conf, "we");
	if (!f)
		mkt_bail("cannot write %s: %s", conf, strerror(errno));
	fprintf(f,
		"<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n"
		" \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
		"<busconfig>\n"
		"  <type>session</type>\n"
		"  <listen>unix:path=%s</listen>\n"
		"  <auth>EXTERNAL</auth>\n"
		"  <policy context=\"default\">\n"
		"    <allow send_destination=\"*\" eavesdrop=\"true\"/>\n"
		"    <allow eavesdrop=\"true\"/>\n"
		"    <allow own=\"*\"/>\n"
		"    <allow user=\"*\"/>\n"
		"  </policy>\n"
		"</busconfig>\n",
		sock);
	fclose(f);
	if (pipe2(p, O_CLOEXEC) < 0)
		mkt_bail("pipe: %s", strerror(errno));
	fflush(stdout);
	pid = fork();
	if (pid < 0)
		mkt_bail("fork: %s", strerror(errno));
	if (pid == 0) {
		char fdarg[32], cfarg[320];

		dup2(p[1], 3);
		dup2(STDERR_FILENO, STDOUT_FILENO);
		snprintf(fdarg, sizeof(fdarg), "--print-address=3");
		snprintf(cfarg, sizeof(cfarg), "--config-file=%s", conf);
		execlp("dbus-daemon", "dbus-daemon", cfarg, "--nofork", "--nopidfile", fdarg,
		       (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	reap_on_exit(pid);
	/* dbus-daemon prints its address once it listens. */
	while (len < sizeof(dbus_address) - 1 &&
	       (n = read(p[0], dbus_address + len, sizeof(dbus_address) - 1 - len)) > 0) {
		len += (size_t)n;
		if (memchr(dbus_address, '\n', len))
			break;
	}
	close(p[0]);
	dbus_address[len] = '\0';
	dbus_address[strcspn(dbus_address, "\n")] = '\0';
	if (!dbus_address[0])
		mkt_bail("private dbus-daemon did not start");
	setenv("DBUS_SESSION_BUS_ADDRESS", dbus_address, 1);
	return dbus_address;
}

const char *mkt_write_file(const char *name, const char *text)
{
	static char paths[16][512];
	static size_t n;
	char *path;
	FILE *f;

	if (n == ELEMENTSOF(paths))
		mkt_bail("mkt_write_file: more than %zu files", ELEMENTSOF(paths));
	path = paths[n++];
	snprintf(path, sizeof(paths[0]), "%s/%s", mkt_tmpdir(), name);
	f = fopen(path, "we");
	if (!f || fputs(text, f) < 0 || fclose(f) != 0)
		mkt_bail("cannot write %s: %s", path, strerror(errno));
	return path;
}

const char *mkt_vectors_dir(void)
{
	const char *env = getenv("MLSKEY_VECTORS");

	if (env)
		return env;
#ifdef MKT_VECTORS_DIR
	return MKT_VECTORS_DIR;
#else
	return "../shared/vectors";
#endif
}
