/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * One dialog per token for calls that arrive together (issue 5): twenty first calls give
 * one dialog and one C_Login; one Cancel gives Cancelled to all twenty; three wrong PINs
 * give PinIncorrect to all twenty after three dialogs; a call for another token is not
 * held up by an open dialog. The real mlskeyd with its default 4 workers per token, so
 * most of the twenty wait in the token's queue, not in the dialog.
 */
#include "tests/pin/pin-test.h"

#define PIN "123456"
#define ALICE "pkcs11:token=clerk;object=alice;type=private"
#define BOB "pkcs11:token=clerk;object=bob;type=private"
#define OTHER "pkcs11:token=other;object=carol;type=private"
#define N 20

static DBusConnection *c;

static DBusPendingCall *sign_async(const char *key)
{
	static const uint8_t content[] = { 9, 8, 7 };

	return sign_send(c, key, content, sizeof(content), 60000);
}

/* The call's result: "" or its error name without the org.mlskey.Error. prefix. */
static const char *result(DBusPendingCall *pc, char *buf, size_t cap)
{
	char full[256];
	const char *n = pending_error(pc, full, sizeof(full));

	snprintf(buf, cap, "%s", strncmp(n, "org.mlskey.Error.", 17) ? n : n + 17);
	return buf;
}

/* N calls at once on alice and bob (one token); how many ended as want. */
static int burst(const char *want, char *first_other, size_t cap)
{
	DBusPendingCall *pc[N];
	int hits = 0;

	for (int i = 0; i < N; i++)
		pc[i] = sign_async(i % 2 ? BOB : ALICE);
	dbus_connection_flush(c);
	first_other[0] = '\0';
	for (int i = 0; i < N; i++) {
		char got[256];

		if (!strcmp(result(pc[i], got, sizeof(got)), want))
			hits++;
		else if (!first_other[0])
			snprintf(first_other, cap, "%s", got[0] ? got : "(success)");
	}
	return hits;
}

static void reset(const char *script)
{
	if (agent_lock(c, "") < 0)
		mkt_bail("Lock failed");
	pin_log_reset();
	pin_script(script);
}

int main(void)
{
	char other[256], err[256], msg[512];
	int logins, hits;
	double t0, t;
	pid_t pid;

	pin_add_token("clerk", PIN);
	pin_add_token("other", PIN);
	if (pin_make_key("clerk", PIN, "alice", false) < 0 ||
	    pin_make_key("clerk", PIN, "bob", false) < 0 ||
	    pin_make_key("other", PIN, "carol", false) < 0)
		mkt_bail("cannot make the test keys");
	mkt_shim_setup();
	pin_script("");
	pid = pin_agent_start(NULL, NULL, NULL);
	c = bus_open(mkt_dbus_setup());

	/* twenty first calls, the person takes half a second to type */
	reset("DELAY 500\nPIN " PIN "\nPIN " PIN "\n");
	logins = mkt_shim_count("C_Login ");
	hits = burst("", other, sizeof(other));
	mkt_ok(hits == N, "%d simultaneous first calls all succeed (%d; else %s)", N, hits, other);
	mkt_ok(pin_log_count("START") == 1 && pin_log_count("GETPIN") == 1,
	       "  after one dialog (%d started, %d GETPIN)", pin_log_count("START"),
	       pin_log_count("GETPIN"));
	mkt_ok(mkt_shim_count("C_Login ") - logins == 1, "  and one C_Login (%d)",
	       mkt_shim_count("C_Login ") - logins);

	/* one Cancel answers them all */
	reset("DELAY 500\nCANCEL\nPIN " PIN "\n");
	logins = mkt_shim_count("C_Login ");
	hits = burst("Cancelled", other, sizeof(other));
	mkt_ok(hits == N, "Cancel gives Cancelled to all %d waiting calls (%d; else %s)", N, hits,
	       other);
	mkt_ok(pin_log_count("START") == 1, "  one dialog (%d)", pin_log_count("START"));
	mkt_ok(mkt_shim_count("C_Login ") == logins, "  no C_Login");
	mkt_ok(!strcmp(pin_sign(c, ALICE, msg, sizeof(msg)), "") && pin_log_count("START") == 2,
	       "  a call made after the Cancel asks again, and works (%s)", msg);

	/* three wrong PINs: all get PinIncorrect, after three dialogs */
	reset("PIN 000000\nPIN 111111\nDELAY 300\nPIN 222222\nPIN " PIN "\n");
	logins = mkt_shim_count("C_Login ");
	hits = burst("PinIncorrect", other, sizeof(other));
	mkt_ok(hits == N, "three wrong PINs give PinIncorrect to all %d calls (%d; else %s)", N,
	       hits, other);
	mkt_ok(pin_log_count("GETPIN") == 3 && mkt_shim_count("C_Login ") - logins == 3,
	       "  after three dialogs and three C_Logins (%d, %d)", pin_log_count("GETPIN"),
	       mkt_shim_count("C_Login ") - logins);

	/* a dialog for one token does not hold up another token */
	reset("PIN " PIN "\n");
	mkt_ok(!strcmp(pin_sign(c, OTHER, msg, sizeof(msg)), ""), "token other logged in (%s)", msg);
	if (agent_lock(c, "pkcs11:token=clerk") < 0)
		mkt_bail("Lock failed");
	pin_log_reset();
	pin_script("DELAY 2500\nPIN " PIN "\n");
	{
		DBusPendingCall *slow = sign_async(ALICE);

		dbus_connection_flush(c);
		for (int i = 0; i < 200 && pin_log_count("GETPIN") == 0; i++)
			usleep(10 * 1000);
		mkt_ok(pin_log_count("GETPIN") == 1, "a dialog for token clerk is open");
		t0 = mkt_now();
		mkt_ok(!strcmp(pin_sign(c, OTHER, msg, sizeof(msg)), ""),
		       "  meanwhile token other signs (%s)", msg);
		t = mkt_now() - t0;
		mkt_ok(t < 1.0, "  at once (%.3f s), not after the dialog", t);
		mkt_ok(!strcmp(result(slow, err, sizeof(err)), ""), "  then clerk's call ends well (%s)",
		       err);
	}

	mkt_ok(mkt_agent_stop(pid) == 0, "mlskeyd stops cleanly");
	bus_close(c);
	return mkt_done();
}
