/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The PIN dialog of the real mlskeyd (issue 5), with the scripted pinentry answering and the
 * shim counting every C_Login and playing the token states SoftHSM cannot: the right PIN;
 * Cancel; a wrong PIN, then the right one; three wrong PINs; what the dialog says (token,
 * serial, program, pid, operation, key); few tries left, the final try (a CONFIRM first),
 * a locked PIN (no dialog), a card whose counter runs out, a PIN pad (a MESSAGE, C_Login
 * without a PIN); keys that want the PIN for every use; pin-attempts.
 */
#include "tests/pin/pin-test.h"

#define TOKEN "clerk"
#define PIN "123456"
#define ALICE "pkcs11:token=" TOKEN ";object=alice;type=private"
#define EACH "pkcs11:token=" TOKEN ";object=each;type=private"
/* the always-authenticate key is used only under a rule that names it (issue 7) */
#define RULE_EACH "[rule]\nname = each\ncaller = any\nkey = pkcs11:token=" TOKEN ";object=each\n"

static DBusConnection *c;

/* What happened since the last step(). */
typedef struct counts {
	int starts, getpins, confirms, messages, logins, user_logins, ctx_logins, keypad;
} counts;

static counts base;

static counts now(void)
{
	return (counts){
		.starts = pin_log_count("START"),
		.getpins = pin_log_count("GETPIN"),
		.confirms = pin_log_count("CONFIRM"),
		.messages = pin_log_count("MESSAGE"),
		.logins = mkt_shim_count("C_Login "),
		.user_logins = mkt_shim_count("C_Login user=1 "),
		.ctx_logins = mkt_shim_count("C_Login user=2 "),
		.keypad = mkt_shim_count("C_Login user=1 pin=keypad"),
	};
}

static counts delta(void)
{
	counts n = now();

	return (counts){ n.starts - base.starts,         n.getpins - base.getpins,
			 n.confirms - base.confirms,     n.messages - base.messages,
			 n.logins - base.logins,         n.user_logins - base.user_logins,
			 n.ctx_logins - base.ctx_logins, n.keypad - base.keypad };
}

/* A fresh start: logged out, the pinentry's script and the shim's knobs as given. */
static void step(const char *script, const char *shim)
{
	if (agent_lock(c, "") < 0)
		mkt_bail("Lock failed");
	mkt_shim_control(shim);
	pin_log_reset();
	pin_script(script);
	base = now();
}

static char msg[1024];

static const char *sign(const char *key)
{
	msg[0] = '\0';
	return pin_sign(c, key, msg, sizeof(msg));
}

static bool is(const char *got, const char *want)
{
	if (!want[0])
		return !got[0];
	return !strcmp(got, want) ||
	       (!strncmp(got, "org.mlskey.Error.", 17) && !strcmp(got + 17, want));
}

/* A 16-hex-digit serial right after "(serial " in s. */
static bool names_serial(const char *s)
{
	const char *p = strstr(s, "(serial ");

	if (!p)
		return false;
	p += 8;
	for (int i = 0; i < 16; i++)
		if (!strchr("0123456789abcdef", p[i]))
			return false;
	return p[16] == ')';
}

static void test_right_pin(void)
{
	char want[300], desc[4096];
	counts d;

	step("PIN " PIN "\n", "");
	mkt_ok(is(sign(ALICE), ""), "the right PIN: the signature is made (%s)", msg);
	d = delta();
	mkt_ok(d.starts == 1 && d.getpins == 1 && d.logins == 1,
	       "  one dialog, one GETPIN, one C_Login (%d, %d, %d)", d.starts, d.getpins, d.logins);
	mkt_ok(is(sign(ALICE), "") && delta().starts == 1 && delta().logins == 1,
	       "  the next signature needs no PIN: the token stays logged in");

	snprintf(desc, sizeof(desc), "%s", pin_log_last("SETDESC "));
	mkt_ok(strstr(desc, "token \"" TOKEN "\"") && names_serial(desc),
	       "the dialog names the token and its serial: %s", desc);
	snprintf(want, sizeof(want), "/tests/test-pin-dialog (pid %d)", (int)getpid());
	mkt_ok(strstr(desc, "Requested by: /") && strstr(desc, want),
	       "  the program that asks: its executable and pid (%s)", want);
	mkt_ok(strstr(desc, "Operation: sign (MLS SignWithLabel) with key \"alice\"") != NULL,
	       "  and the operation with the key's label");
	mkt_ok(strstr(pin_log_last("SETTITLE "), TOKEN) != NULL, "the title names the token: %s",
	       pin_log_last("SETTITLE "));
	mkt_ok(!strcmp(pin_log_last("SETPROMPT "), "PIN:"), "the prompt is PIN:");
	mkt_ok(pin_log_count("SETERROR") == 0, "no error shown on a first try");
}

static void test_cancel(void)
{
	counts d;

	step("CANCEL\n", "");
	mkt_ok(is(sign(ALICE), "Cancelled"), "Cancel: the call gets Cancelled (%s)", msg);
	d = delta();
	mkt_ok(d.getpins == 1 && d.logins == 0, "  one dialog, no C_Login (%d, %d)", d.getpins,
	       d.logins);
	pin_script("PIN " PIN "\n");
	mkt_ok(is(sign(ALICE), ""), "  the next call asks again and works");
}

static void test_wrong_then_right(void)
{
	counts d;

	step("PIN 000000\nPIN " PIN "\n", "");
	mkt_ok(is(sign(ALICE), ""), "a wrong PIN, then the right one: signed in the same call (%s)",
	       msg);
	d = delta();
	mkt_ok(d.starts == 2 && d.getpins == 2 && d.logins == 2,
	       "  two dialogs, two C_Logins: one per PIN typed (%d, %d, %d)", d.starts, d.getpins,
	       d.logins);
	mkt_ok(pin_log_count("SETERROR ") == 1 &&
		       !strcmp(pin_log_last("SETERROR "), "Wrong PIN (attempt 2 of 3)"),
	       "  the second dialog says the PIN was wrong: %s", pin_log_last("SETERROR "));
}

static void test_wrong_three_times(void)
{
	counts d;

	step("PIN 000000\nPIN 111111\nPIN 222222\nPIN " PIN "\n", "");
	mkt_ok(is(sign(ALICE), "PinIncorrect"), "three wrong PINs: PinIncorrect");
	d = delta();
	mkt_ok(d.getpins == 3 && d.logins == 3,
	       "  three dialogs (pin-attempts), three C_Logins, the fourth line unused (%d, %d)",
	       d.getpins, d.logins);
	mkt_ok(strstr(msg, "incorrect 3 times") && strstr(msg, "few tries are left"),
	       "  the message counts them and says what the token tells of the tries left: %s",
	       msg);
	mkt_ok(!strcmp(pin_log_last("SETERROR "), "Wrong PIN (attempt 3 of 3)"),
	       "  the last dialog said attempt 3 of 3");

	step("PIN 000000\nCANCEL\n", "");
	mkt_ok(is(sign(ALICE), "Cancelled"), "a wrong PIN, then Cancel: Cancelled (%s)", msg);
	mkt_ok(delta().logins == 1, "  one C_Login");
}

static void test_count_low(void)
{
	step("PIN " PIN "\n", "count_low=1\n");
	mkt_ok(is(sign(ALICE), ""), "COUNT_LOW: the PIN is asked and works");
	mkt_ok(strstr(pin_log_last("SETDESC "), "few tries are left before the PIN locks") != NULL,
	       "  the dialog says few tries are left: %s", pin_log_last("SETDESC "));
	mkt_ok(delta().confirms == 0, "  no confirmation needed yet");
}

static void test_final_try(void)
{
	counts d;

	step("CONFIRM no\nPIN " PIN "\n", "final_try=1\n");
	mkt_ok(is(sign(ALICE), "Cancelled"), "FINAL_TRY: a CONFIRM first; No gives Cancelled");
	d = delta();
	mkt_ok(d.confirms == 1 && d.getpins == 0 && d.logins == 0,
	       "  one CONFIRM, no GETPIN, no C_Login: the last try is not spent (%d, %d, %d)",
	       d.confirms, d.getpins, d.logins);
	mkt_ok(strstr(pin_log_last("SETDESC "), "one PIN try left") &&
		       strstr(pin_log_last("SETDESC "), "Requested by: "),
	       "  the question says one try is left and who asks: %s", pin_log_last("SETDESC "));
	mkt_ok(strstr(msg, "last PIN try") != NULL, "  the error says so: %s", msg);

	step("CONFIRM yes\nPIN " PIN "\n", "final_try=1\n");
	mkt_ok(is(sign(ALICE), ""), "FINAL_TRY, Yes, the right PIN: signed");
	d = delta();
	mkt_ok(d.confirms == 1 && d.getpins == 1 && d.logins == 1,
	       "  one CONFIRM, one GETPIN, one C_Login (%d, %d, %d)", d.confirms, d.getpins,
	       d.logins);
	mkt_ok(strstr(pin_log_last("SETDESC "), "last try before the PIN locks") != NULL,
	       "  the PIN dialog says it is the last try");
}

static void test_counter_runs_out(void)
{
	counts d;

	/* a card with three tries: two wrong PINs bring it to its final try within one call */
	step("PIN 000000\nPIN 111111\nCONFIRM no\n", "tries=3\n");
	mkt_ok(is(sign(ALICE), "Cancelled"), "a card at its final try after two wrong PINs: "
	       "the third attempt needs a Yes first, and No ends the call (%s)", msg);
	d = delta();
	mkt_ok(d.getpins == 2 && d.confirms == 1 && d.logins == 2,
	       "  two GETPINs, one CONFIRM, two C_Logins: never past FINAL_TRY without a Yes "
	       "(%d, %d, %d)", d.getpins, d.confirms, d.logins);

	pin_log_reset();
	pin_script("CONFIRM yes\nPIN 222222\nPIN " PIN "\n");
	base = now();
	mkt_ok(is(sign(ALICE), "PinLocked"), "Yes and a third wrong PIN lock the card: PinLocked "
	       "at once, no fourth dialog (%s)", msg);
	d = delta();
	mkt_ok(d.getpins == 1 && d.logins == 1, "  one GETPIN, one C_Login (%d, %d)", d.getpins,
	       d.logins);
	mkt_ok(strstr(msg, "PUK") != NULL, "  the message says what to do");

	base = now();
	mkt_ok(is(sign(ALICE), "PinLocked"), "the locked card: PinLocked");
	d = delta();
	mkt_ok(d.starts == 0 && d.logins == 0, "  without a dialog or a C_Login (%d, %d)", d.starts,
	       d.logins);
}

static void test_locked(void)
{
	counts d;

	step("PIN " PIN "\n", "locked=1\n");
	mkt_ok(is(sign(ALICE), "PinLocked"), "PIN_LOCKED: PinLocked (%s)", msg);
	d = delta();
	mkt_ok(d.starts == 0 && d.logins == 0, "  no dialog at all, no C_Login (%d, %d)", d.starts,
	       d.logins);
	mkt_ok(strstr(msg, "PUK") && strstr(msg, "administrator"), "  and says what to do");
}

static void test_pin_pad(void)
{
	counts d;

	step("", "pinpad=1\npinpad_delay_ms=300\npinpad_pin=" PIN "\n");
	mkt_ok(is(sign(ALICE), ""), "a PIN pad: the PIN typed on the keypad logs in (%s)", msg);
	d = delta();
	mkt_ok(d.keypad == 1 && d.logins == 1, "  one C_Login, without a PIN from the agent");
	mkt_ok(d.messages == 1 && d.getpins == 0,
	       "  a MESSAGE, never a GETPIN (%d, %d)", d.messages, d.getpins);
	mkt_ok(strstr(pin_log_last("SETDESC "), "keypad") &&
		       strstr(pin_log_last("SETDESC "), "token \"" TOKEN "\"") &&
		       strstr(pin_log_last("SETDESC "), "with key \"alice\""),
	       "  the message tells to type the PIN on the reader's keypad: %s",
	       pin_log_last("SETDESC "));

	/* the person takes a while to type: the notice is up (and logged) meanwhile */
	step("", "pinpad=1\npinpad_delay_ms=300\npinpad_pin=000000\n");
	mkt_ok(is(sign(ALICE), "PinIncorrect"), "a PIN pad, three wrong PINs: PinIncorrect");
	d = delta();
	mkt_ok(d.keypad == 3 && d.messages == 3, "  three keypad logins, each under its message "
	       "(%d, %d)", d.keypad, d.messages);

	step("", "pinpad=1\npinpad_delay_ms=300\npinpad_cancel=1\n");
	mkt_ok(is(sign(ALICE), "Cancelled"), "Cancel on the keypad: Cancelled (%s)", msg);
}

static void test_always_authenticate(void)
{
	counts d;

	step("PIN " PIN "\nPIN " PIN "\n", "");
	mkt_ok(is(sign(EACH), ""), "a key with CKA_ALWAYS_AUTHENTICATE, token logged out: signed "
	       "(%s)", msg);
	d = delta();
	mkt_ok(d.getpins == 2 && d.user_logins == 1 && d.ctx_logins == 1,
	       "  two dialogs: the token's login, then the key's (CKU_CONTEXT_SPECIFIC) "
	       "(%d, %d, %d)", d.getpins, d.user_logins, d.ctx_logins);
	mkt_ok(strstr(pin_log_last("SETDESC "), "Key \"each\"") &&
		       strstr(pin_log_last("SETDESC "), "needs the PIN for every use") &&
		       strstr(pin_log_last("SETDESC "), "Operation: sign (MLS SignWithLabel) with key"),
	       "  the key's dialog names the key and the operation: %s", pin_log_last("SETDESC "));
	mkt_ok(strstr(pin_log_last("SETTITLE "), "each") != NULL, "  its title names the key");

	pin_script("PIN " PIN "\n");
	base = now();
	mkt_ok(is(sign(EACH), ""), "the next signature with it");
	d = delta();
	mkt_ok(d.getpins == 1 && d.user_logins == 0 && d.ctx_logins == 1,
	       "  has a dialog of its own: one GETPIN, one context login (%d, %d, %d)", d.getpins,
	       d.user_logins, d.ctx_logins);
	mkt_ok(is(sign(ALICE), "") && delta().getpins == 1, "  while the plain key needs none");

	pin_script("PIN 000000\nPIN " PIN "\n");
	base = now();
	mkt_ok(is(sign(EACH), ""), "a wrong PIN for the key, then the right one");
	d = delta();
	mkt_ok(d.ctx_logins == 2 && !strcmp(pin_log_last("SETERROR "), "Wrong PIN (attempt 2 of 3)"),
	       "  two context logins, the second dialog says the first PIN was wrong");

	pin_script("CANCEL\n");
	base = now();
	mkt_ok(is(sign(EACH), "Cancelled"), "Cancel in the key's dialog: Cancelled (%s)", msg);
	mkt_ok(delta().ctx_logins == 0, "  no context login");
	mkt_ok(is(sign(ALICE), "") && is(sign(ALICE), ""),
	       "  and the token still signs with other keys (the session was not left busy)");
}

static void test_attempts_setting(void)
{
	const char *conf = write_agent_conf("one-attempt.conf",
					    "[agent]\npin-attempts = 1\n" RULE_EACH);
	const char *args[] = { "--config", conf, NULL };
	pid_t pid;

	pid = pin_agent_start(NULL, NULL, args);
	step("PIN 000000\nPIN " PIN "\n", "");
	mkt_ok(is(sign(ALICE), "PinIncorrect"), "pin-attempts = 1: a wrong PIN ends the call");
	mkt_ok(delta().getpins == 1 && delta().logins == 1, "  after one dialog and one C_Login");
	mkt_ok(mkt_agent_stop(pid) == 0, "  the agent stops cleanly");
}

int main(void)
{
	const char *args[] = { "--config", NULL, NULL };
	pid_t pid;

	pin_add_token(TOKEN, PIN);
	if (pin_make_key(TOKEN, PIN, "alice", false) < 0 || pin_make_key(TOKEN, PIN, "each", true) < 0)
		mkt_bail("cannot make the test keys");
	mkt_shim_setup();
	pin_script("");
	args[1] = write_agent_conf("dialog.conf", RULE_EACH);
	pid = pin_agent_start(NULL, NULL, args);
	c = bus_open(mkt_dbus_setup());

	test_right_pin();
	test_cancel();
	test_wrong_then_right();
	test_wrong_three_times();
	test_count_low();
	test_final_try();
	test_counter_runs_out();
	mkt_shim_control(""); /* the card's counter starts afresh */
	test_locked();
	test_pin_pad();
	test_always_authenticate();
	mkt_ok(mkt_agent_stop(pid) == 0, "mlskeyd stops cleanly");
	bus_close(c);
	c = bus_open(mkt_dbus_setup());
	test_attempts_setting();
	bus_close(c);
	return mkt_done();
}
