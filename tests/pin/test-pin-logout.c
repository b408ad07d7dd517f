/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * When the agent logs out (issue 5): after idle-logout seconds without an operation (and
 * not while operations keep coming), on Lock, on logind's Session.Lock, on a screensaver's
 * ActiveChanged(true) (org.freedesktop and org.gnome), on PrepareForSleep(true); each time
 * C_Logout reaches the token and the next operation asks for the PIN again. The signals
 * are sent on the private bus, where the agent listens for them as on a session bus;
 * ActiveChanged(false) and PrepareForSleep(false) change nothing.
 */
#include "tests/pin/pin-test.h"

#define PIN "123456"
#define ALICE "pkcs11:token=clerk;object=alice;type=private"

static DBusConnection *c;
static char msg[512];

static void send_signal(const char *path, const char *iface, const char *member, int arg)
{
	DBusMessage *m = dbus_message_new_signal(path, iface, member);
	dbus_bool_t b = arg > 0;

	if (!m || (arg >= 0 && !dbus_message_append_args(m, DBUS_TYPE_BOOLEAN, &b,
							 DBUS_TYPE_INVALID)))
		mkt_bail("out of memory");
	dbus_connection_send(c, m, NULL);
	dbus_connection_flush(c);
	dbus_message_unref(m);
}

/* Logged in with one dialog; returns the C_Logout count before the event. */
static int login_first(void)
{
	int starts = pin_log_count("START");

	pin_script("PIN " PIN "\n");
	if (strcmp(pin_sign(c, ALICE, msg, sizeof(msg)), "") != 0)
		mkt_bail("cannot sign: %s", msg);
	mkt_ok(pin_log_count("START") <= starts + 1, "  (logged in)");
	return mkt_shim_count("C_Logout");
}

/* After an event that should log out: C_Logout came, and the next signature asks again. */
static void expect_logout(const char *what, int logouts)
{
	int starts;

	mkt_ok(pin_wait_shim("C_Logout", logouts + 1, 3000), "%s: C_Logout reaches the token", what);
	pin_script("PIN " PIN "\n");
	starts = pin_log_count("START");
	mkt_ok(!strcmp(pin_sign(c, ALICE, msg, sizeof(msg)), "") &&
		       pin_log_count("START") == starts + 1,
	       "  the next signature asks for the PIN again (%s)", msg);
}

/* After an event that should not: no C_Logout within half a second, no new dialog. */
static void expect_no_logout(const char *what, int logouts)
{
	int starts = pin_log_count("START");

	usleep(500 * 1000);
	mkt_ok(mkt_shim_count("C_Logout") == logouts, "%s: no C_Logout", what);
	mkt_ok(!strcmp(pin_sign(c, ALICE, msg, sizeof(msg)), "") &&
		       pin_log_count("START") == starts,
	       "  and the next signature needs no PIN");
}

static void test_signals(void)
{
	int n;

	n = login_first();
	mkt_ok(agent_lock(c, "") == 0, "Lock(\"\")");
	expect_logout("Lock", n);

	n = login_first();
	mkt_ok(agent_lock(c, "pkcs11:token=clerk") == 0, "Lock(the token)");
	expect_logout("Lock of the token", n);

	n = login_first();
	send_signal("/org/freedesktop/login1/session/_32", "org.freedesktop.login1.Session", "Lock",
		    -1);
	expect_logout("logind's Session.Lock", n);

	n = login_first();
	send_signal("/org/freedesktop/ScreenSaver", "org.freedesktop.ScreenSaver", "ActiveChanged",
		    1);
	expect_logout("org.freedesktop.ScreenSaver ActiveChanged(true)", n);

	n = login_first();
	send_signal("/org/gnome/ScreenSaver", "org.gnome.ScreenSaver", "ActiveChanged", 1);
	expect_logout("org.gnome.ScreenSaver ActiveChanged(true)", n);

	n = login_first();
	send_signal("/org/freedesktop/login1", "org.freedesktop.login1.Manager", "PrepareForSleep",
		    1);
	expect_logout("logind's PrepareForSleep(true)", n);

	n = login_first();
	send_signal("/org/freedesktop/ScreenSaver", "org.freedesktop.ScreenSaver", "ActiveChanged",
		    0);
	expect_no_logout("ActiveChanged(false) (the screen unlocked)", n);
	send_signal("/org/freedesktop/login1", "org.freedesktop.login1.Manager", "PrepareForSleep",
		    0);
	expect_no_logout("PrepareForSleep(false) (resumed)", n);
	send_signal("/org/freedesktop/login1/session/_32", "org.freedesktop.login1.Session",
		    "Unlock", -1);
	expect_no_logout("Session.Unlock", n);
}

static void test_idle(void)
{
	const char *conf = write_agent_conf("idle.conf", "[agent]\nidle-logout = 2\n");
	const char *args[] = { "--config", conf, NULL };
	double t0, last;
	pid_t pid;
	int n;

	pid = pin_agent_start(NULL, NULL, args);
	bus_close(c);
	c = bus_open(mkt_dbus_setup());
	n = login_first();
	/* in use every 300 ms for 3 s: never idle for two seconds */
	t0 = last = mkt_now();
	while (mkt_now() - t0 < 3.0) {
		if (strcmp(pin_sign(c, ALICE, msg, sizeof(msg)), "") != 0)
			break;
		last = mkt_now();
		usleep(300 * 1000);
	}
	mkt_ok(mkt_shim_count("C_Logout") == n, "idle-logout = 2: no logout while the token is "
	       "used every 300 ms for 3 s");
	mkt_ok(pin_wait_shim("C_Logout", n + 1, 6000), "after two seconds without use, C_Logout");
	mkt_ok(mkt_now() - last >= 1.9, "  not before they were over (%.2f s)", mkt_now() - last);
	mkt_ok(mkt_now() - last < 4.5, "  nor long after (%.2f s)", mkt_now() - last);
	expect_logout("idle timeout", n);
	mkt_ok(mkt_agent_stop(pid) == 0, "the idle agent stops cleanly");
}

int main(void)
{
	pid_t pid;

	pin_add_token("clerk", PIN);
	if (pin_make_key("clerk", PIN, "alice", false) < 0)
		mkt_bail("cannot make the test key");
	mkt_shim_setup();
	pin_script("");
	pid = pin_agent_start(NULL, NULL, NULL);
	c = bus_open(mkt_dbus_setup());
	test_signals();
	mkt_ok(mkt_agent_stop(pid) == 0, "mlskeyd stops cleanly");
	test_idle();
	bus_close(c);
	return mkt_done();
}
