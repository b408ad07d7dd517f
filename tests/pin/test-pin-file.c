/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Headless login from a [token] pin-file (issue 5), with no PIN program at all: the right
 * PIN works; a wrong one disables the token after exactly one C_Login, with a log line and
 * an error that says what the operator must do, until the file changes; a file that its
 * group or others may read or write, that belongs to another user, or that is missing is
 * refused without a C_Login; keys that want the PIN for every use get it from the file too.
 */
#include <sys/stat.h>

#include "tests/pin/pin-test.h"

#define PIN "97531864"
#define WRONG "11112222"
#define SVC "pkcs11:token=hsm;object=svc;type=private"
#define EACH "pkcs11:token=hsm;object=each;type=private"
#define DESK "pkcs11:token=desk;object=d;type=private"

static DBusConnection *c;
static char msg[1024], pin_file[512], log_path[512];

static void write_pin(const char *text, mode_t mode)
{
	char tmp[600];
	FILE *f;

	/* a new file renamed into place, as an operator's editor would do */
	snprintf(tmp, sizeof(tmp), "%s.tmp", pin_file);
	f = fopen(tmp, "we");
	if (!f)
		mkt_bail("cannot write %s", tmp);
	fputs(text, f);
	fclose(f);
	chmod(tmp, mode);
	if (rename(tmp, pin_file) < 0)
		mkt_bail("rename %s", tmp);
}

static const char *sign(const char *key)
{
	const char *r = pin_sign(c, key, msg, sizeof(msg));

	return strncmp(r, "org.mlskey.Error.", 17) ? r : r + 17;
}

static void refused(const char *what, const char *want_in_msg)
{
	int logins;

	agent_lock(c, "");
	logins = mkt_shim_count("C_Login ");
	mkt_ok(!strcmp(sign(SVC), "AccessDenied"), "%s: AccessDenied", what);
	mkt_ok(strstr(msg, want_in_msg) && strstr(msg, pin_file), "  the message names the file "
	       "and says \"%s\": %s", want_in_msg, msg);
	mkt_ok(mkt_shim_count("C_Login ") == logins, "  no C_Login");
}

int main(void)
{
	char conf_text[1200], *log;
	const char *conf, *args[8];
	int logins;
	pid_t pid;

	pin_add_token("hsm", PIN);
	pin_add_token("desk", "123456");
	if (pin_make_key("hsm", PIN, "svc", false) < 0 || pin_make_key("hsm", PIN, "each", true) < 0 ||
	    pin_make_key("desk", "123456", "d", false) < 0)
		mkt_bail("cannot make the test keys");
	mkt_shim_setup();
	snprintf(pin_file, sizeof(pin_file), "%s/hsm.pin", mkt_tmpdir());
	snprintf(log_path, sizeof(log_path), "%s/mlskeyd.log", mkt_tmpdir());
	snprintf(conf_text, sizeof(conf_text),
		 "[agent]\nlog-level = debug\n[token]\nuri = pkcs11:token=hsm\npin-file = %s\n"
		 /* the always-authenticate key is used only under a rule that names it */
		 "[rule]\nname = each\ncaller = any\nkey = pkcs11:token=hsm;object=each\n",
		 pin_file);
	conf = write_agent_conf("pin-file.conf", conf_text);
	write_pin(PIN "\n", 0600);
	args[0] = "--config";
	args[1] = conf;
	args[2] = "--log-level";
	args[3] = "debug";
	args[4] = NULL;
	/* headless: no PIN program can be run at all */
	pid = pin_agent_start("/nonexistent/pinentry", log_path, args);
	c = bus_open(mkt_dbus_setup());

	logins = mkt_shim_count("C_Login ");
	mkt_ok(!strcmp(sign(SVC), ""), "the right PIN in the pin-file: signed without any dialog "
	       "(%s)", msg);
	mkt_ok(mkt_shim_count("C_Login ") == logins + 1, "  one C_Login");
	mkt_ok(!strcmp(sign(SVC), "") && mkt_shim_count("C_Login ") == logins + 1,
	       "  and the token stays logged in");
	mkt_ok(!strcmp(sign(DESK), "AccessDenied") && strstr(msg, "/nonexistent/pinentry"),
	       "a token without a pin-file still needs the PIN program (%s)", msg);

	/* a wrong PIN in the file */
	agent_lock(c, "");
	write_pin(WRONG "\n", 0600);
	logins = mkt_shim_count("C_Login ");
	mkt_ok(!strcmp(sign(SVC), "PinIncorrect"), "a wrong PIN in the pin-file: PinIncorrect");
	mkt_ok(strstr(msg, pin_file) && strstr(msg, "disabled") && strstr(msg, "operator"),
	       "  the message names the file and what the operator must do: %s", msg);
	mkt_ok(mkt_shim_count("C_Login ") == logins + 1, "  after exactly one C_Login");
	for (int i = 0; i < 3; i++)
		mkt_ok(!strcmp(sign(SVC), "PinIncorrect") && strstr(msg, "is disabled"),
		       "  call %d: still PinIncorrect, the token is disabled (%s)", i + 2, msg);
	mkt_ok(mkt_shim_count("C_Login ") == logins + 1,
	       "  the file is never tried again while it is unchanged (%d C_Login)",
	       mkt_shim_count("C_Login ") - logins);
	agent_lock(c, "");
	mkt_ok(!strcmp(sign(SVC), "PinIncorrect") && mkt_shim_count("C_Login ") == logins + 1,
	       "  not even after Lock");
	log = pin_slurp(log_path);
	mkt_ok(strstr(log, "refused the PIN in the pin-file") && strstr(log, "disabled"),
	       "  mlskeyd logs a clear line about it");
	free(log);

	/* the operator fixes the file */
	write_pin(PIN "\n", 0600);
	mkt_ok(!strcmp(sign(SVC), ""), "the file fixed: the next call logs in (%s)", msg);
	mkt_ok(mkt_shim_count("C_Login ") == logins + 2, "  with one more C_Login");

	/* a key that wants the PIN for every use takes it from the file as well */
	logins = mkt_shim_count("C_Login user=2 ");
	mkt_ok(!strcmp(sign(EACH), "") && !strcmp(sign(EACH), ""),
	       "a key with CKA_ALWAYS_AUTHENTICATE signs twice from the pin-file (%s)", msg);
	mkt_ok(mkt_shim_count("C_Login user=2 ") == logins + 2, "  one context login each");

	/* files that are not the daemon user's alone */
	write_pin(PIN "\n", 0640);
	refused("a group-readable pin-file (0640)", "chmod 600");
	write_pin(PIN "\n", 0604);
	refused("a world-readable pin-file (0604)", "chmod 600");
	write_pin(PIN "\n", 0620);
	refused("a group-writable pin-file (0620)", "owner-only");
	if (geteuid() == 0) {
		write_pin(PIN "\n", 0600);
		if (chown(pin_file, 65534, 65534) < 0)
			mkt_bail("chown: %s", strerror(errno));
		refused("a pin-file of another user", "belongs to uid 65534");
	} else {
		pin_skip("the pin-file of another user: chown needs root");
	}
	unlink(pin_file);
	refused("a missing pin-file", "cannot open");
	write_pin("\n", 0600);
	refused("an empty pin-file", "is empty");
	write_pin(PIN "\n", 0600);
	agent_lock(c, "");
	mkt_ok(!strcmp(sign(SVC), ""), "a good file again: signed (%s)", msg);

	mkt_ok(mkt_agent_stop(pid) == 0, "mlskeyd stops cleanly");
	log = pin_slurp(log_path);
	mkt_ok(!strstr(log, PIN) && !strstr(log, WRONG), "neither PIN appears in mlskeyd's log "
	       "(%zu bytes at log-level debug)", strlen(log));
	free(log);
	bus_close(c);
	return mkt_done();
}
