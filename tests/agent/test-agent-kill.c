/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Clients that misbehave or wait do not disturb the others:
 *  - a busctl call waiting on a slow PIN dialog for one token is killed; meanwhile and
 *    afterwards other clients are served (a slow token does not stall another token);
 *  - a per-token queue cap (max-queue) answers Busy instead of piling up;
 *  - SIGTERM during a PIN dialog ends the dialog, answers the waiting call and exits 0;
 *  - a second mlskeyd on the same bus says the name is taken and exits 1.
 */
#include "tests/agent/agent-test.h"

static const char *addr;
static char addr_arg[512];
static const uint8_t content[] = "content";

static pid_t spawn_busctl_sign(const char *key)
{
	char *argv[] = { "busctl", addr_arg, "call", AGENT_NAME, AGENT_PATH, AGENT_IFACE,
			 "SignWithLabel", "sqsay", (char *)key, "2", "LeafNodeTBS", "3", "1", "2", "3",
			 "--timeout=120", NULL };
	posix_spawn_file_actions_t fa;
	pid_t pid;
	int r;

	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
	r = posix_spawnp(&pid, "busctl", &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (r != 0)
		mkt_bail("cannot run busctl: %s", strerror(r));
	return pid;
}

static int wait_status(pid_t pid)
{
	int status;

	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Waits up to 10 s until the test pinentry has shown n GETPINs in all. */
static bool wait_getpins(int n)
{
	for (int i = 0; i < 1000; i++) {
		if (mkt_pinentry_getpins() >= n)
			return true;
		usleep(10000);
	}
	return false;
}

static bool sign_ok(DBusConnection *c, const char *key)
{
	_cleanup_bytes_ mk_bytes sig = MK_BYTES_NULL;
	char name[256] = "";
	bool ok = agent_sign(c, key, 2, "LeafNodeTBS", content, sizeof(content), &sig, name,
			     sizeof(name)) == 0;

	if (!ok)
		mkt_diag("SignWithLabel: %s", name);
	return ok;
}

static void test_killed_client(void)
{
	char slow_key[1024], fast_key[1024];
	DBusConnection *c;
	pid_t pid, client;
	double t0, t_other;
	int n0, ok = 0, status;

	mkt_pinentry_control("");
	pid = mkt_agent_start(NULL);
	c = bus_open(addr);
	if (agent_generate(c, "pkcs11:token=slow", "signature", "ecdsa-p256", "s", slow_key,
			   sizeof(slow_key)) < 0 ||
	    agent_generate(c, "pkcs11:token=fast", "signature", "ecdsa-p256", "f", fast_key,
			   sizeof(fast_key)) < 0)
		mkt_bail("cannot generate the test keys");
	mkt_ok(agent_lock(c, "pkcs11:token=slow") == 0, "token slow is locked, fast is logged in");

	/* a client waits on a PIN dialog that takes 4 s */
	mkt_pinentry_control("MKT_PINENTRY_SLEEP=4\n");
	n0 = mkt_pinentry_getpins();
	client = spawn_busctl_sign(slow_key);
	mkt_ok(wait_getpins(n0 + 1), "a busctl call on token slow waits in the PIN dialog");
	t0 = mkt_now();
	mkt_ok(sign_ok(c, fast_key), "meanwhile a call on token fast is served");
	t_other = mkt_now() - t0;
	mkt_ok(t_other < 1.0, "  at once (%.3f s): the bus thread and token fast are not stalled",
	       t_other);
	kill(client, SIGKILL);
	status = wait_status(client);
	mkt_ok(status == 128 + SIGKILL, "the waiting busctl is killed (status %d)", status);
	mkt_pinentry_control("");

	/* the dialog ends (the PIN was right), the reply goes nowhere; everything still works */
	for (int i = 0; i < 20; i++)
		ok += sign_ok(c, fast_key);
	mkt_ok(ok == 20, "20 more calls on token fast succeed (%d)", ok);
	t0 = mkt_now();
	mkt_ok(sign_ok(c, slow_key), "a call on token slow succeeds once its dialog is over");
	mkt_diag("it waited %.2f s for the killed client's dialog to end", mkt_now() - t0);
	mkt_ok(mkt_pinentry_getpins() == n0 + 1,
	       "  without another dialog: the killed client's login stands");
	{
		DBusConnection *c2 = bus_open(addr);

		mkt_ok(sign_ok(c2, slow_key) && sign_ok(c2, fast_key), "a new client is served");
		bus_close(c2);
	}
	bus_close(c);
	mkt_ok(kill(pid, 0) == 0 && mkt_agent_stop(pid) == 0, "mlskeyd ran on and stops cleanly");
}

static void test_busy(void)
{
	const char *args[3], *conf;
	char slow_key[1024], e1[256], e2[256], e3[256];
	DBusConnection *c;
	DBusPendingCall *first, *second, *third;
	pid_t pid;
	int n0;

	conf = write_agent_conf("busy.conf", "[agent]\nworkers = 1\nmax-queue = 1\n");
	args[0] = "--config";
	args[1] = conf;
	args[2] = NULL;
	mkt_pinentry_control("");
	pid = mkt_agent_start(args);
	c = bus_open(addr);
	if (agent_generate(c, "pkcs11:token=slow", "signature", "ecdsa-p256", "b", slow_key,
			   sizeof(slow_key)) < 0)
		mkt_bail("cannot generate the test key");
	agent_lock(c, "");
	mkt_pinentry_control("MKT_PINENTRY_SLEEP=3\n");
	n0 = mkt_pinentry_getpins();
	first = sign_send(c, slow_key, content, sizeof(content), 120000); /* runs: in the dialog */
	dbus_connection_flush(c);
	mkt_ok(wait_getpins(n0 + 1), "one call runs (its PIN dialog is open)");
	/* one connection keeps the order: the second waits in the queue, the third is refused */
	second = sign_send(c, slow_key, content, sizeof(content), 120000);
	third = sign_send(c, slow_key, content, sizeof(content), 120000);
	dbus_connection_flush(c);
	pending_error(third, e3, sizeof(e3));
	mkt_ok(!strcmp(e3, "org.mlskey.Error.Busy"),
	       "with workers=1 max-queue=1, a third call gets Busy at once (%s)", e3);
	mkt_pinentry_control("");
	pending_error(first, e1, sizeof(e1));
	pending_error(second, e2, sizeof(e2));
	mkt_ok(!e1[0] && !e2[0], "the running and the queued call both succeed (%s %s)", e1, e2);
	mkt_ok(sign_ok(c, slow_key), "and the agent serves the next call");
	bus_close(c);
	mkt_ok(mkt_agent_stop(pid) == 0, "stops cleanly");
}

static void test_stop_during_dialog(void)
{
	char key[1024];
	DBusConnection *c;
	pid_t pid;
	DBusMessage *m;
	DBusPendingCall *pending = NULL;
	double t0;
	int n0, status;
	const char *label = "LeafNodeTBS";
	dbus_uint16_t suite = 2;

	mkt_pinentry_control("");
	pid = mkt_agent_start(NULL);
	c = bus_open(addr);
	if (agent_generate(c, "pkcs11:token=slow", "signature", "ecdsa-p256", "t", key,
			   sizeof(key)) < 0)
		mkt_bail("cannot generate the test key");
	agent_lock(c, "");
	mkt_pinentry_control("MKT_PINENTRY_SLEEP=60\n");
	n0 = mkt_pinentry_getpins();
	m = agent_call_new("SignWithLabel");
	{
		const char *k = key;

		dbus_message_append_args(m, DBUS_TYPE_STRING, &k, DBUS_TYPE_UINT16, &suite,
					 DBUS_TYPE_STRING, &label, DBUS_TYPE_INVALID);
	}
	append_ay(m, content, sizeof(content));
	dbus_connection_send_with_reply(c, m, &pending, 120000);
	dbus_message_unref(m);
	dbus_connection_flush(c);
	mkt_ok(wait_getpins(n0 + 1), "a call waits in a 60 s PIN dialog");
	t0 = mkt_now();
	status = mkt_agent_stop(pid);
	mkt_ok(status == 0 && mkt_now() - t0 < 5,
	       "SIGTERM ends the dialog and mlskeyd exits 0 at once (%d after %.2f s)", status,
	       mkt_now() - t0);
	dbus_pending_call_block(pending);
	m = dbus_pending_call_steal_reply(pending);
	mkt_ok(m && dbus_message_get_type(m) == DBUS_MESSAGE_TYPE_ERROR &&
		       !strcmp(dbus_message_get_error_name(m), "org.mlskey.Error.Cancelled"),
	       "  the waiting call is answered: %s",
	       m && dbus_message_get_error_name(m) ? dbus_message_get_error_name(m) : "?");
	if (m)
		dbus_message_unref(m);
	dbus_pending_call_unref(pending);
	bus_close(c);
	mkt_pinentry_control("");
}

static void test_name_taken(void)
{
	pid_t pid = mkt_agent_start(NULL);
	run_result *r = malloc(sizeof(*r));

	run_list(r, mkt_build_path("ipc/mlskeyd"), "--address", addr, "--no-p11-kit", "--module",
		 mkt_softhsm_module(), NULL);
	mkt_ok(r->status == 1, "a second mlskeyd on the same bus exits 1 (%d)", r->status);
	mkt_ok(strstr(r->err, "another mlskeyd already owns org.mlskey.Agent1 on this bus") !=
		       NULL,
	       "  and says why: %s", r->err);
	run_list(r, mkt_build_path("ipc/mlskeyd"), "--no-such-option", NULL);
	mkt_ok(r->status == 2 && strstr(r->err, "--help"), "a bad option exits 2 and points to "
							   "--help");
	run_list(r, mkt_build_path("ipc/mlskeyd"), "--help", NULL);
	mkt_ok(r->status == 0 && strstr(r->out, "--address ADDR") &&
		       strstr(r->out, "--pinentry PROGRAM") && strstr(r->out, "--no-p11-kit"),
	       "--help explains the options");
	run_list(r, mkt_build_path("ipc/mlskeyd"), "--config", "/nonexistent.conf", NULL);
	mkt_ok(r->status == 1 && strstr(r->err, "/nonexistent.conf"),
	       "a missing --config file is an error that names it");
	free(r);
	mkt_ok(mkt_agent_stop(pid) == 0, "the first agent stops cleanly");
}

int main(void)
{
	mkt_softhsm_setup();
	mkt_softhsm_add_token("slow");
	mkt_softhsm_add_token("fast");
	addr = mkt_dbus_setup();
	snprintf(addr_arg, sizeof(addr_arg), "--address=%s", addr);
	mkt_pinentry_log_path();
	{
		run_result *r = malloc(sizeof(*r));

		run_list(r, "busctl", "--version", NULL);
		if (r->status != 0)
			mkt_skip_all("busctl not installed (it comes with systemd)");
		free(r);
	}
	test_killed_client();
	test_busy();
	test_stop_during_dialog();
	test_name_taken();
	return mkt_done();
}
