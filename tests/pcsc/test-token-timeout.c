/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A token that hangs (the shim of tests/shim holds C_Sign on token "hung" for 5 s) with the
 * agent's timeout at 1 s (token-timeout in its config): the call fails with TokenError after the
 * timeout while its worker is still stuck in the module, the other token's calls go on
 * meanwhile, further calls on the hung token fail at once instead of queueing behind it, and
 * once the module answers again the token works as before. Also: the agent keeps working
 * under the systemd unit's memory protection (W^X, no new privileges) where the kernel has it.
 */
#include <sys/prctl.h>

#include "tests/pcsc/pcsc-test.h"
#include "tests/shim/shim.h"

#ifndef PR_SET_MDWE
#define PR_SET_MDWE 65
#define PR_MDWE_REFUSE_EXEC_GAIN 1
#endif

int main(void)
{
	char key_hung[1024], key_ok[1024], name[256], msg[512];
	const char *err;
	DBusConnection *c, *c2;
	DBusPendingCall *slow, *second;
	entry a[32];
	const char *conf;
	pid_t agent;
	double t, dt;
	bool mdwe;
	int n;

	mkt_softhsm_setup();
	mkt_softhsm_add_token("fine");
	mkt_softhsm_add_token("hung");
	mkt_shim_setup();
	conf = mkt_write_file("timeout.conf", "[agent]\ntoken-timeout = 1\npcsc = no\n");
	/* what mlskeyd.service sets: no new privileges, no memory both writable and executable
	 * (inherited by the agent and its PIN program) */
	mkt_ok(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0, "no new privileges from here on");
	mdwe = prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) == 0;
	if (!mdwe)
		mkt_diag("this kernel has no PR_SET_MDWE: the agent runs without W^X here");
	agent = mkt_shim_agent_start((const char *const[]){ "--config", conf, NULL });
	c = bus_open(mkt_dbus_setup());
	c2 = bus_open(mkt_dbus_setup());

	mkt_ok(agent_generate(c, "pkcs11:token=fine", "signature", "ecdsa-p256", "ok", key_ok,
			      sizeof(key_ok)) == 0, "a key on token fine%s", mdwe ? " (under W^X)" : "");
	mkt_ok(agent_generate(c, "pkcs11:token=hung", "signature", "ecdsa-p256", "h", key_hung,
			      sizeof(key_hung)) == 0, "a key on token hung");
	mkt_ok(!sign_now(c, key_hung, NULL, 0)[0] && !sign_now(c, key_ok, NULL, 0)[0],
	       "both sign while the module answers");
	n = list_entries(c, "ListKeys", a, 32); /* the agent remembers the keys */

	mkt_shim_control("sign_delay_ms=5000\ntoken=hung\n");
	t = mkt_now();
	slow = sign_start(c2, key_hung);
	for (int i = 0; i < 100 && mkt_shim_count("C_Sign delayed") == 0; i++)
		usleep(10000);
	mkt_ok(mkt_shim_count("C_Sign delayed") == 1, "a signature is held in the hung token");
	err = sign_now(c, key_ok, NULL, 0);
	dt = mkt_now() - t;
	mkt_ok(!err[0] && dt < 1.0, "meanwhile token fine signs (%.2f s after)", dt);
	pending_finish(slow, name, sizeof(name), msg, sizeof(msg));
	dt = mkt_now() - t;
	mkt_ok(strcmp(name, "org.mlskey.Error.TokenError") == 0, "the held call fails: %s: %s",
	       name, msg);
	mkt_ok(dt >= 0.9 && dt < 3.0, "after the timeout of 1 s, not the token's 5 s (%.2f s)", dt);
	mkt_ok(strstr(msg, "did not answer within 1 s") != NULL, "and says so");

	t = mkt_now();
	second = sign_start(c2, key_hung);
	pending_finish(second, name, sizeof(name), msg, sizeof(msg));
	dt = mkt_now() - t;
	mkt_ok(strcmp(name, "org.mlskey.Error.TokenError") == 0 && dt < 0.5,
	       "a second call on the hung token fails at once (%.2f s): %s", dt, msg);
	mkt_ok(!sign_now(c, key_ok, NULL, 0)[0], "token fine still signs");
	n = list_entries(c, "ListTokens", a, 32);
	mkt_ok(n == 2 && entry_find(a, n, "hung") && entry_find(a, n, "hung")->present,
	       "ListTokens answers, the hung token still present");
	n = list_entries(c, "ListKeys", a, 32);
	mkt_ok(n >= 2, "ListKeys answers (%d keys)", n);
	for (int i = 0; i < n; i++)
		if (strcmp(a[i].uri, key_hung) == 0)
			mkt_ok(!a[i].usable && strstr(a[i].reason, "does not answer"),
			       "its key: usable false, reason: %s", a[i].reason);

	/* the module answers again: the stuck call returns, the token works */
	mkt_shim_control("");
	t = mkt_now();
	err = "";
	do {
		usleep(200000);
		err = sign_now(c, key_hung, msg, sizeof(msg));
	} while (err[0] && mkt_now() - t < 8);
	mkt_ok(!err[0], "once the held C_Sign returned, the token signs again (%.1f s)",
	       mkt_now() - t);

	bus_close(c2);
	bus_close(c);
	mkt_ok(mkt_agent_stop(agent) == 0, "mlskeyd stops cleanly");
	return mkt_done();
}
