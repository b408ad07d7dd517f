/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* mlskeyd's settings: defaults, the INI file and its errors (agent/agent-config.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent-config.h"
#include "agent/log.h"
#include "common/error.h"
#include "tests/fixture.h"
#include "tests/tap.h"

static const char *write_conf(const char *name, const char *text)
{
	static char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", mkt_tmpdir(), name);
	f = fopen(path, "we");
	if (!f)
		mkt_bail("cannot write %s", path);
	fputs(text, f);
	fclose(f);
	return path;
}

static void expect_error(const char *name, const char *text, const char *want_in_msg)
{
	mk_config c;
	const char *path = write_conf(name, text);
	int r;

	mk_config_init(&c);
	mk_error_clear();
	r = mk_config_load(&c, path);
	mkt_ok_err(r, -EINVAL, "%s is refused", name);
	mkt_ok(mk_error_message() && strstr(mk_error_message(), want_in_msg),
	       "%s: the message says \"%s\" (%s)", name, want_in_msg,
	       mk_error_message() ? mk_error_message() : "(none)");
	mk_config_clear(&c);
}

int main(void)
{
	mk_config c;
	char *p = NULL;
	const char *path;

	mkt_ok_r(mk_config_init(&c), "defaults");
	mkt_ok(c.bus == MK_BUS_SESSION && !strcmp(c.pinentry, "pinentry") && c.use_p11_kit &&
		       c.n_modules == 0 && c.max_array_bytes == 4u * 1024 * 1024 &&
		       c.max_label_bytes == 255 && c.workers >= 2 && c.max_queue == 256 &&
		       c.log_level == LOG_INFO && c.pinentry_timeout > 0 && c.worker_spin_us == 200 &&
		       c.token_timeout_s == 30 && c.slot_poll_ms == 2000 && c.pcsc,
	       "defaults: session bus, pinentry, p11-kit, 4 MiB arrays, 255-byte labels, "
	       "max-queue 256, at least 2 workers");

	path = write_conf("good.conf", "# comment\n; another\n[agent]\n"
				       "pinentry = /usr/bin/pinentry-tty\n"
				       "pinentry-timeout = 30\n"
				       "p11-kit = no\n"
				       "modules = /a/one.so, /b/two.so;/c/three.so\n"
				       "log-level = debug\n"
				       "max-array-bytes = 1024\n"
				       "max-label-bytes = 64\n"
				       "workers = 3\n"
				       "max-queue = 7\n"
				       "worker-spin-us = 0\n"
				       "token-timeout = 5\n"
				       "slot-poll-ms = 10\n"
				       "pcsc = no\n");
	mkt_ok_r(mk_config_load(&c, path), "a full config loads");
	mkt_ok(!strcmp(c.pinentry, "/usr/bin/pinentry-tty") && c.pinentry_timeout == 30 &&
		       !c.use_p11_kit && c.log_level == LOG_DEBUG && c.max_array_bytes == 1024 &&
		       c.max_label_bytes == 64 && c.workers == 3 && c.max_queue == 7 &&
		       c.worker_spin_us == 0 && c.token_timeout_s == 5 && c.slot_poll_ms == 50 &&
		       !c.pcsc,
	       "every setting is read");
	mkt_ok(c.n_modules == 3 && !strcmp(c.modules[0], "/a/one.so") &&
		       !strcmp(c.modules[1], "/b/two.so") && !strcmp(c.modules[2], "/c/three.so") &&
		       c.modules[3] == NULL,
	       "modules: a list separated by ',' or ';', spaces trimmed, NULL-terminated");

	/* the command line overrides: --module replaces the list, --log-level sets */
	mk_config_clear_modules(&c);
	mkt_ok_r(mk_config_add_module(&c, "/d/four.so"), "--module adds");
	mkt_ok(c.n_modules == 1 && !strcmp(c.modules[0], "/d/four.so") && !c.modules[1],
	       "after clear + add only the command line's module is left");
	mkt_ok_r(mk_config_set(&c, "log-level", "warning"), "log-level warning");
	mkt_ok(c.log_level == LOG_WARNING, "log-level is LOG_WARNING");
	mk_config_clear(&c);

	mk_config_init(&c);
	mkt_ok_err(mk_config_load(&c, "/nonexistent/mlskeyd.conf"), -ENOENT,
		   "a missing file is -ENOENT (the default path may be missing)");
	mk_config_clear(&c);

	expect_error("unknown-key.conf", "[agent]\nworkers = 2\nfoo = bar\n", ":3: unknown setting \"foo\"");
	expect_error("unknown-section.conf", "[agnet]\nworkers = 2\n", "unknown section [agnet]");
	expect_error("bad-bool.conf", "[agent]\np11-kit = maybe\n", "p11-kit must be yes or no");
	expect_error("bad-number.conf", "[agent]\nmax-queue = 12x\n", "max-queue must be a number");
	expect_error("zero-workers.conf", "[agent]\nworkers = 0\n", "workers must be a number from 1");
	expect_error("negative.conf", "[agent]\nmax-array-bytes = -5\n", "max-array-bytes must be");
	expect_error("label-over.conf", "[agent]\nmax-label-bytes = 256\n", "from 0 to 255");
	expect_error("bad-level.conf", "[agent]\nlog-level = loud\n", "log-level must be");
	expect_error("syntax.conf", "[agent]\nthis line has no equals sign\n", ":2:");
	expect_error("empty-pinentry.conf", "[agent]\npinentry =\n", "pinentry must name");

	expect_error("attempts-0.conf", "[agent]\npin-attempts = 0\n", "pin-attempts must be a number from 1 to 10");
	expect_error("attempts-11.conf", "[agent]\npin-attempts = 11\n", "from 1 to 10");
	expect_error("idle-word.conf", "[agent]\nidle-logout = soon\n", "idle-logout must be a number");
	expect_error("pin-file-first.conf", "[token]\npin-file = /x.pin\n", "pin-file before uri");
	expect_error("pin-file-relative.conf", "[token]\nuri = pkcs11:token=a\npin-file = x.pin\n",
		     "pin-file must be an absolute path");
	expect_error("token-key-uri.conf", "[token]\nuri = pkcs11:token=a;object=k\n",
		     "uri = pkcs11:token=a;object=k: ");
	expect_error("token-not-uri.conf", "[token]\nuri = hsm1\n", "uri = hsm1: ");
	expect_error("token-unknown.conf", "[token]\nuri = pkcs11:token=a\ncolor = red\n",
		     ":3: unknown setting \"color\" in a [token] section");

	mkt_ok_r(mk_config_init(&c), "defaults again");
	mkt_ok(c.pin_attempts == 3 && c.idle_logout == 900 && c.n_tokens == 0,
	       "defaults: 3 PIN attempts, log out after 15 min idle, no [token] entries");
	path = write_conf("tokens.conf",
			  "[agent]\npin-attempts = 1\nidle-logout = 0\n"
			  "[token]\nuri = pkcs11:model=SoftHSM%20v2;manufacturer=SoftHSM%20project;"
			  "serial=0123456789abcdef;token=hsm1\npin-file = /etc/mlskey/hsm1.pin\n"
			  "uri = pkcs11:token=hsm2\n"
			  "[agent]\nworkers = 2\n"
			  "[token]\nuri = pkcs11:token=hsm2\npin-file = /run/secrets/hsm 2.pin\n");
	mkt_ok_r(mk_config_load(&c, path), "[token] entries load");
	mkt_ok(c.pin_attempts == 1 && c.idle_logout == 0 && c.workers == 2,
	       "pin-attempts, idle-logout read");
	mkt_ok(c.n_tokens == 2 &&
		       !strcmp(c.tokens[0].uri, "pkcs11:model=SoftHSM%20v2;manufacturer=SoftHSM%20"
						"project;serial=0123456789abcdef;token=hsm1") &&
		       !strcmp(c.tokens[0].pin_file, "/etc/mlskey/hsm1.pin") &&
		       !strcmp(c.tokens[1].uri, "pkcs11:token=hsm2") &&
		       !strcmp(c.tokens[1].pin_file, "/run/secrets/hsm 2.pin"),
	       "two entries: a long URI (past inih's 49-byte section names), each uri= starts "
	       "one, a second [token] section with the same uri adds to its entry");
	mk_config_clear(&c);

	setenv("XDG_CONFIG_HOME", "/x/config", 1);
	mkt_ok(mk_config_default_path(&p) == 0 && !strcmp(p, "/x/config/mlskey/mlskeyd.conf"),
	       "default path under $XDG_CONFIG_HOME");
	free(p);
	unsetenv("XDG_CONFIG_HOME");
	setenv("HOME", "/home/u", 1);
	mkt_ok(mk_config_default_path(&p) == 0 && !strcmp(p, "/home/u/.config/mlskey/mlskeyd.conf"),
	       "default path under $HOME/.config");
	free(p);

	mkt_ok(mk_log_level_from_name("debug") == LOG_DEBUG &&
		       mk_log_level_from_name("err") == LOG_ERR &&
		       mk_log_level_from_name("nope") == -EINVAL,
	       "log level names");
	return mkt_done();
}
