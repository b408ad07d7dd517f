/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Who is calling (agent/caller.h): the unit from sample /proc/PID/cgroup contents (cgroup v2,
 * v1, hybrid), the Flatpak app id from .flatpak-info files, the start time from stat lines
 * whose command name has spaces and parentheses, groups from status; mk_caller_identify() on
 * a /proc laid out in a temp directory and on a real process that is gone; who may call in
 * session and system mode; and the allow-users/allow-groups/audit-file settings.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent/agent-config.h"
#include "agent/caller.h"
#include "common/error.h"
#include "tests/fixture.h"
#include "tests/tap.h"

static void test_unit(void)
{
	static const struct {
		const char *cgroup, *want;
	} cases[] = {
		/* cgroup v2 */
		{ "0::/user.slice/user-1000.slice/user@1000.service/app.slice/"
		  "app-flatpak-org.example.Mail-1234.scope\n",
		  "app-flatpak-org.example.Mail-1234.scope" },
		{ "0::/system.slice/mailbox.service\n", "mailbox.service" },
		{ "0::/system.slice/mailbox.service/payload/worker\n", "mailbox.service" },
		{ "0::/user.slice/user-1000.slice/session-2.scope", "session-2.scope" },
		{ "0::/system.slice/_cpu.service\n", "cpu.service" }, /* systemd's cg_escape */
		/* cgroup v1 with systemd's named hierarchy, and hybrid (v1 + an empty v2) */
		{ "12:pids:/user.slice/user-1000.slice\n11:memory:/user.slice\n"
		  "1:name=systemd:/user.slice/user-1000.slice/session-7.scope\n",
		  "session-7.scope" },
		{ "4:memory:/process_api/9bac13b2\n1:name=systemd:/system.slice/cron.service\n0::/\n",
		  "cron.service" },
		/* v2 counts before v1 */
		{ "1:name=systemd:/system.slice/old.service\n0::/system.slice/new.service\n",
		  "new.service" },
		/* only a controller names it */
		{ "5:cpu,cpuacct:/system.slice/sshd.service\n", "sshd.service" },
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		char unit[256] = "junk";
		int r = mk_caller_unit_from_cgroup(cases[i].cgroup, unit, sizeof(unit));

		mkt_ok(r == 0 && strcmp(unit, cases[i].want) == 0, "cgroup case %zu -> %s (got %s)",
		       i, cases[i].want, unit);
	}
	{
		char unit[256] = "junk";

		mkt_ok_err(mk_caller_unit_from_cgroup("0::/\n1:name=systemd:/\n", unit, sizeof(unit)),
			   -ENOENT, "no unit in a root cgroup (a container)");
		mkt_ok(unit[0] == '\0', "  and the name is empty");
		mkt_ok_err(mk_caller_unit_from_cgroup("0::/user.slice/user-1000.slice\n", unit,
						      sizeof(unit)),
			   -ENOENT, "no unit in a slice only");
		mkt_ok_err(mk_caller_unit_from_cgroup("", unit, sizeof(unit)), -ENOENT,
			   "no unit in an empty file");
		mkt_ok_err(mk_caller_unit_from_cgroup("0::/system.slice/a-long-name.service\n", unit,
						      8),
			   -ENAMETOOLONG, "a name that does not fit is refused, not cut");
		mkt_ok_err(mk_caller_unit_from_cgroup("garbage without colons\n", unit, sizeof(unit)),
			   -ENOENT, "a line that is not cgroup syntax names nothing");
	}
}

static void test_flatpak(void)
{
	char app[256] = "junk";

	mkt_ok(mk_caller_app_id_from_flatpak_info(
		       "[Application]\nname=org.example.Mail\nruntime=runtime/org.gnome.Platform/"
		       "x86_64/45\n\n[Instance]\ninstance-id=1234567\nbranch=stable\n",
		       app, sizeof(app)) == 0 &&
		       strcmp(app, "org.example.Mail") == 0,
	       ".flatpak-info: [Application] name (got %s)", app);
	mkt_ok(mk_caller_app_id_from_flatpak_info("[Runtime]\nname=org.gnome.Platform\n"
						  "[Application]\nname = org.example.Chat \n",
						  app, sizeof(app)) == 0 &&
		       strcmp(app, "org.example.Chat") == 0,
	       "  only [Application]'s name, spaces trimmed (got %s)", app);
	mkt_ok_err(mk_caller_app_id_from_flatpak_info("[Runtime]\nname=org.gnome.Platform\n", app,
						      sizeof(app)),
		   -ENOENT, "  a runtime's info has no app id");
	mkt_ok(app[0] == '\0', "  and the id is empty");
	mkt_ok_err(mk_caller_app_id_from_flatpak_info("this is not an ini file\n", app, sizeof(app)),
		   -EINVAL, "  a file that is not INI is refused");
	mkt_ok_err(mk_caller_app_id_from_flatpak_info("[Application]\nname=org.example.Mail\n", app,
						      4),
		   -ENAMETOOLONG, "  an id that does not fit is refused");
}

static void test_stat_status(void)
{
	unsigned long long st = 0;
	gid_t g[8];
	size_t n = 0;

	mkt_ok(mk_caller_start_time_from_stat("1234 (my (weird) prog) S 1 1234 1234 0 -1 4194560 100 "
					      "0 0 0 0 0 0 0 20 0 1 0 987654 12345678 200 "
					      "18446744073709551615\n",
					      &st) == 0 &&
		       st == 987654,
	       "starttime is field 22, after a command name with spaces and ')' (got %llu)", st);
	mkt_ok_err(mk_caller_start_time_from_stat("1234 (short) S 1 2 3\n", &st), -EINVAL,
		   "a short stat line is refused");
	mkt_ok_err(mk_caller_start_time_from_stat("no parenthesis", &st), -EINVAL,
		   "a stat line without the command is refused");
	mkt_ok(mk_caller_groups_from_status("Name:\tx\nUid:\t1000\t1000\t1000\t1000\n"
					    "Gid:\t100\t100\t100\t100\nFDSize:\t64\n"
					    "Groups:\t4 24 27 \nNStgid:\t1\n",
					    g, ELEMENTSOF(g), &n) == 0 &&
		       n == 4 && g[0] == 100 && g[1] == 4 && g[2] == 24 && g[3] == 27,
	       "status: the real gid and the supplementary groups (%zu)", n);
	mkt_ok(mk_caller_groups_from_status("Gid:\t5\t5\t5\t5\nGroups:\t\n", g, ELEMENTSOF(g), &n) ==
			       0 &&
		       n == 1 && g[0] == 5,
	       "status: no supplementary groups");
	mkt_ok_err(mk_caller_groups_from_status("Name:\tx\n", g, ELEMENTSOF(g), &n), -EINVAL,
		   "status without Gid: is refused");
}

static void mkdirs(const char *path)
{
	char tmp[1024];

	snprintf(tmp, sizeof(tmp), "%s", path);
	for (char *p = tmp + 1; *p; p++)
		if (*p == '/') {
			*p = '\0';
			mkdir(tmp, 0700);
			*p = '/';
		}
	if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
		mkt_bail("mkdir %s: %s", tmp, strerror(errno));
}

static void write_at(const char *dir, const char *name, const char *text)
{
	char path[1024];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "we");
	if (!f || fputs(text, f) < 0 || fclose(f) != 0)
		mkt_bail("cannot write %s", path);
}

/* A /proc laid out in a temp directory for this process's pid (alive: the pidfd says so). */
static void test_identify(void)
{
	char root[512], dir[600], sub[700], link[700];
	char stat[256];
	pid_t self = getpid();
	mk_caller c = { .uid = 1000, .pid = self };
	gid_t g[8];
	size_t n = 0;
	pid_t child;
	int r;

	snprintf(root, sizeof(root), "%s/proc", mkt_tmpdir());
	snprintf(dir, sizeof(dir), "%s/%d", root, (int)self);
	snprintf(sub, sizeof(sub), "%s/root", dir);
	mkdirs(sub);
	snprintf(stat, sizeof(stat),
		 "%d (mail client) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 424242 0 0\n",
		 (int)self);
	write_at(dir, "stat", stat);
	write_at(dir, "cgroup", "0::/user.slice/user-1000.slice/user@1000.service/app.slice/"
				"app-flatpak-org.example.Mail-1234.scope\n");
	write_at(dir, "status", "Name:\tmail\nGid:\t1000\t1000\t1000\t1000\nGroups:\t1000 100\n");
	write_at(sub, ".flatpak-info", "[Application]\nname=org.example.Mail\n");
	snprintf(link, sizeof(link), "%s/exe", dir);
	if (symlink("/app/bin/mail-client", link) < 0)
		mkt_bail("symlink: %s", strerror(errno));

	r = mk_caller_identify(root, self, -1, &c, g, ELEMENTSOF(g), &n);
	mkt_ok_r(r, "identify a process from a /proc in a temp directory");
	mkt_ok(c.uid == 1000 && c.pid == self, "  uid and pid stay the bus's");
	mkt_ok(c.start_time == 424242, "  start time %llu", c.start_time);
	mkt_ok(strcmp(c.exe, "/app/bin/mail-client") == 0, "  exe %s", c.exe);
	mkt_ok(strcmp(c.unit, "app-flatpak-org.example.Mail-1234.scope") == 0, "  unit %s", c.unit);
	mkt_ok(strcmp(c.app_id, "org.example.Mail") == 0, "  app id %s", c.app_id);
	mkt_ok(n == 3 && g[0] == 1000 && g[1] == 1000 && g[2] == 100, "  groups from status (%zu)",
	       n);

	/* a .flatpak-info that is a symlink or a FIFO is not followed nor waited on */
	{
		char fp[800];

		snprintf(fp, sizeof(fp), "%s/.flatpak-info", sub);
		unlink(fp);
		if (symlink("/etc/passwd", fp) < 0)
			mkt_bail("symlink: %s", strerror(errno));
		r = mk_caller_identify(root, self, -1, &c, NULL, 0, NULL);
		mkt_ok(r == 0 && c.app_id[0] == '\0', "a .flatpak-info symlink is not followed");
		unlink(fp);
		if (mkfifo(fp, 0600) < 0)
			mkt_bail("mkfifo: %s", strerror(errno));
		r = mk_caller_identify(root, self, -1, &c, NULL, 0, NULL);
		mkt_ok(r == 0 && c.app_id[0] == '\0', "a .flatpak-info FIFO is not waited on");
	}

	/* the real /proc: this test program itself */
	memset(&c, 0, sizeof(c));
	c.pid = self;
	mkt_ok_r(mk_caller_identify("/proc", self, -1, &c, NULL, 0, NULL), "identify this process");
	mkt_ok(strstr(c.exe, "test-caller") != NULL && c.start_time > 0, "  its exe %s, start %llu",
	       c.exe, c.start_time);

	/* a process that exited (a zombie: its /proc entry is still there) */
	child = fork();
	if (child < 0)
		mkt_bail("fork: %s", strerror(errno));
	if (child == 0)
		_exit(0);
	{
		siginfo_t si;

		/* wait until it is a zombie, without reaping it */
		waitid(P_PID, (id_t)child, &si, WEXITED | WNOWAIT);
	}
	memset(&c, 0, sizeof(c));
	c.pid = child;
	mk_error_clear();
	r = mk_caller_identify("/proc", child, -1, &c, NULL, 0, NULL);
	mkt_ok_err(r, -EACCES, "a caller that exited is refused");
	mkt_ok(strstr(mk_error_text(r), "the caller went away while it was identified") != NULL,
	       "  \"%s\"", mk_error_text(r));
	waitpid(child, NULL, 0);
	r = mk_caller_identify("/proc", child, -1, &c, NULL, 0, NULL);
	mkt_ok_err(r, -EACCES, "a caller whose pid is gone is refused too");
}

static void test_access(void)
{
	mk_config cfg;
	uid_t users[] = { 1000 };
	gid_t groups[] = { 50 };
	gid_t in50[] = { 7, 50 }, other[] = { 7 };
	int r;

	mk_config_init(&cfg);
	mkt_ok_r(mk_caller_access(&cfg, 0, 0, NULL, 0), "session mode: the agent's user may call");
	r = mk_caller_access(&cfg, 0, 65534, NULL, 0);
	mkt_ok_err(r, -EACCES, "session mode: another user may not");
	mkt_ok(strstr(mk_error_text(r), "user 65534 may not use the mlskey agent of user 0") != NULL,
	       "  \"%s\"", mk_error_text(r));
	cfg.system_mode = true;
	cfg.allow_users = users;
	cfg.n_allow_users = 1;
	cfg.allow_groups = groups;
	cfg.n_allow_groups = 1;
	mkt_ok_r(mk_caller_access(&cfg, 0, 0, NULL, 0), "system mode: the agent's user may call");
	mkt_ok_r(mk_caller_access(&cfg, 0, 1000, NULL, 0), "system mode: a user of allow-users may");
	mkt_ok_r(mk_caller_access(&cfg, 0, 1001, in50, 2),
		 "system mode: a member of an allow-groups group may");
	r = mk_caller_access(&cfg, 0, 1001, other, 1);
	mkt_ok_err(r, -EACCES, "system mode: anyone else may not");
	mkt_ok(strstr(mk_error_text(r), "user 1001") && strstr(mk_error_text(r), "allow-users"),
	       "  \"%s\"", mk_error_text(r));
	cfg.allow_users = NULL;
	cfg.allow_groups = NULL;
	mk_config_clear(&cfg);
}

static void test_config(void)
{
	mk_config cfg;
	const char *path;
	int r;

	mk_config_init(&cfg);
	r = mk_config_set(&cfg, "allow-users", "nobody");
	mkt_ok_err(r, -EINVAL, "allow-users is refused in session mode");
	mkt_ok(strstr(mk_error_text(r), "--system") != NULL, "  \"%s\"", mk_error_text(r));
	mkt_ok_err(mk_config_set(&cfg, "allow-groups", "nogroup"), -EINVAL,
		   "allow-groups too");
	cfg.system_mode = true;
	mkt_ok_r(mk_config_set(&cfg, "allow-users", "root, 1234 nobody"),
		 "system mode: allow-users = root, 1234 nobody");
	mkt_ok_r(mk_config_set(&cfg, "allow-users", "daemon"), "  a second line adds");
	mkt_ok(cfg.n_allow_users == 4 && cfg.allow_users[0] == 0 && cfg.allow_users[1] == 1234 &&
		       cfg.allow_users[2] == 65534 && cfg.allow_users[3] == 1,
	       "  resolved to 0 1234 65534 1");
	mkt_ok_r(mk_config_set(&cfg, "allow-groups", "nogroup,100"), "allow-groups = nogroup,100");
	mkt_ok(cfg.n_allow_groups == 2 && cfg.allow_groups[0] == 65534 && cfg.allow_groups[1] == 100,
	       "  resolved to 65534 100");
	r = mk_config_set(&cfg, "allow-users", "root no-such-user-xyz");
	mkt_ok_err(r, -EINVAL, "an unknown user name is an error");
	mkt_ok(strstr(mk_error_text(r), "no-such-user-xyz") != NULL, "  \"%s\"", mk_error_text(r));
	mkt_ok_err(mk_config_set(&cfg, "allow-groups", "no-such-group-xyz"), -EINVAL,
		   "an unknown group name is an error");
	mkt_ok_err(mk_config_set(&cfg, "audit-file", "audit.jsonl"), -EINVAL,
		   "audit-file must be absolute");
	mkt_ok_r(mk_config_set(&cfg, "audit-file", "/var/log/mlskey/audit.jsonl"),
		 "audit-file = /var/log/mlskey/audit.jsonl");
	mk_config_clear(&cfg);

	/* in a file: the line is named */
	path = mkt_write_file("system.conf", "[agent]\nallow-users = nobody\n"
					     "allow-groups = no-such-group-xyz\n");
	mk_config_init(&cfg);
	cfg.system_mode = true;
	r = mk_config_load(&cfg, path);
	mkt_ok_err(r, -EINVAL, "a config file with an unknown group");
	mkt_ok(strstr(mk_error_text(r), "system.conf:3:") && strstr(mk_error_text(r),
								     "no-such-group-xyz"),
	       "  names the file and line: \"%s\"", mk_error_text(r));
	mk_config_clear(&cfg);
	mk_config_init(&cfg);
	r = mk_config_load(&cfg, path);
	mkt_ok(r == -EINVAL && strstr(mk_error_text(r), "system.conf:2:") &&
		       strstr(mk_error_text(r), "session"),
	       "in session mode the allow-users line is refused: \"%s\"", mk_error_text(r));
	mk_config_clear(&cfg);
}

int main(void)
{
	test_unit();
	test_flatpak();
	test_stat_status();
	test_identify();
	test_access();
	test_config();
	return mkt_done();
}
