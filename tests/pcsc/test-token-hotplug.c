/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Tokens without PC/SC come and go while mlskeyd runs (SoftHSM through the fault-injecting
 * shim of tests/shim, found by the agent's slot check every 200 ms):
 *
 *  - a token created meanwhile appears (TokensChanged, KeysChanged, ListTokens);
 *  - one whose store is taken away is gone at once: present false, its keys listed with
 *    usable false and the reason, its calls TokenAbsent, the other token's calls fine;
 *  - put back, it is the same token with the same keys under the same URIs, and the next use
 *    asks for the PIN again;
 *  - deleted while a call is in the token (the shim holds C_Sign), that call fails with
 *    TokenAbsent at once, while a call on the other token succeeds meanwhile.
 */
#include <dirent.h>

#include "tests/pcsc/pcsc-test.h"
#include "tests/shim/shim.h"

static char tokens_dir[512];

/* The one token directory in the store that is not in `known` (a NUL-separated list). */
static void new_token_dir(const char *known, char *ret, size_t cap)
{
	DIR *d = opendir(tokens_dir);
	struct dirent *e;

	ret[0] = '\0';
	if (!d)
		mkt_bail("opendir %s", tokens_dir);
	while ((e = readdir(d))) {
		bool seen = false;

		if (e->d_name[0] == '.')
			continue;
		for (const char *k = known; *k && !seen; k += strlen(k) + 1)
			seen = strcmp(k, e->d_name) == 0;
		if (!seen)
			snprintf(ret, cap, "%s", e->d_name);
	}
	closedir(d);
}

static const entry *token_wait(DBusConnection *c, const char *label, bool present, entry *a,
			       double secs)
{
	double until = mkt_now() + secs;

	do {
		int n = list_entries(c, "ListTokens", a, 32);
		const entry *t = n > 0 ? entry_find(a, n, label) : NULL;

		if (t && t->present == present)
			return t;
		if (!t && !present)
			return NULL;
		usleep(50000);
	} while (mkt_now() < until);
	return NULL;
}

static bool key_listed(DBusConnection *c, const char *uri, entry *ret)
{
	entry a[64];
	int n = list_entries(c, "ListKeys", a, 64);

	for (int i = 0; i < n; i++)
		if (strcmp(a[i].uri, uri) == 0) {
			*ret = a[i];
			return true;
		}
	return false;
}

int main(void)
{
	char base_dir[256], hot_dir[256], known[600], path[1024], moved[1024], msg[512];
	char key0[1024], key1[1024], name[256];
	const char *err;
	entry toks[32], k;
	DBusConnection *c, *c2;
	DBusPendingCall *slow;
	pid_t agent;
	double t;
	bool ok;
	int getpins, n;

	mkt_softhsm_setup();
	snprintf(tokens_dir, sizeof(tokens_dir), "%s/tokens", mkt_tmpdir());
	mkt_softhsm_add_token("base");
	new_token_dir("", base_dir, sizeof(base_dir));
	mkt_shim_setup();
	mkt_pinentry_log_path();
	agent = mkt_shim_agent_start((const char *const[]){
		"--config", mkt_write_file("hotplug.conf", "[agent]\nslot-poll-ms = 200\npcsc = no\n"),
		NULL });
	c = bus_open(mkt_dbus_setup());
	c2 = bus_open(mkt_dbus_setup());
	signals_watch(c);

	/* a token made while the agent runs */
	mkt_softhsm_add_token("hot");
	snprintf(known, sizeof(known), "%s", base_dir);
	new_token_dir(known, hot_dir, sizeof(hot_dir));
	t = mkt_now();
	ok = signal_wait(c, "TokensChanged", 5);
	mkt_ok(ok, "a token created while the agent runs: TokensChanged (%.2f s)", mkt_now() - t);
	mkt_ok(signal_wait(c, "KeysChanged", 2), "and KeysChanged");
	mkt_ok(token_wait(c, "hot", true, toks, 2) != NULL, "ListTokens lists it, present");

	mkt_ok(agent_generate(c, "pkcs11:token=base", "signature", "ecdsa-p256", "k0", key0,
			      sizeof(key0)) == 0, "a key on the base token");
	mkt_ok(agent_generate(c, "pkcs11:token=hot", "signature", "ecdsa-p256", "k1", key1,
			      sizeof(key1)) == 0, "a key on the new token");
	mkt_ok(!sign_now(c, key1, NULL, 0)[0] && !sign_now(c, key0, NULL, 0)[0],
	       "both sign");
	mkt_ok(key_listed(c, key1, &k) && k.usable, "ListKeys: its key, usable");

	/* taken away: its store leaves (a token pulled out) */
	snprintf(path, sizeof(path), "%s/%s", tokens_dir, hot_dir);
	snprintf(moved, sizeof(moved), "%s/away-%s", mkt_tmpdir(), hot_dir);
	signals_drain(c);
	if (rename(path, moved) < 0)
		mkt_bail("rename %s: %s", path, strerror(errno));
	t = mkt_now();
	ok = signal_wait(c, "TokensChanged", 5);
	mkt_ok(ok, "token taken away: TokensChanged (%.2f s)", mkt_now() - t);
	mkt_ok(token_wait(c, "hot", false, toks, 2) != NULL || !entry_find(toks, 32, "hot"),
	       "ListTokens: present false");
	mkt_ok(key_listed(c, key1, &k) && !k.usable && strstr(k.reason, "not present"),
	       "ListKeys: its key still listed, usable false, reason: %s", k.reason);
	err = sign_now(c, key1, msg, sizeof(msg));
	mkt_ok(strcmp(err, "org.mlskey.Error.TokenAbsent") == 0, "signing with it: %s: %s", err,
	       msg);
	mkt_ok(!sign_now(c, key0, NULL, 0)[0], "the base token signs on");

	/* put back: SoftHSM reads its store at C_Initialize, which the agent does only while
	 * none of the module's tokens is logged in: lock the base token first */
	mkt_ok(agent_lock(c, "pkcs11:token=base") == 0, "lock the base token");
	signals_drain(c);
	if (rename(moved, path) < 0)
		mkt_bail("rename back %s: %s", moved, strerror(errno));
	t = mkt_now();
	ok = signal_wait(c, "TokensChanged", 5);
	mkt_ok(ok, "token put back: TokensChanged (%.2f s)", mkt_now() - t);
	mkt_ok(token_wait(c, "hot", true, toks, 2) != NULL, "ListTokens: present again");
	mkt_ok(key_listed(c, key1, &k) && k.usable, "the same key under the same URI, usable");
	getpins = mkt_pinentry_getpins();
	mkt_ok(!sign_now(c, key1, NULL, 0)[0], "it signs");
	mkt_ok(mkt_pinentry_getpins() == getpins + 1, "after asking for the PIN again (%d dialog)",
	       mkt_pinentry_getpins() - getpins);

	/* deleted while a call is in it: the shim holds C_Sign on "hot" for 3 s */
	mkt_shim_control("sign_delay_ms=3000\ntoken=hot\n");
	getpins = mkt_shim_count("C_Sign delayed");
	slow = sign_start(c2, key1);
	for (int i = 0; i < 200 && mkt_shim_count("C_Sign delayed") == getpins; i++)
		usleep(10000);
	mkt_ok(mkt_shim_count("C_Sign delayed") > getpins, "a signature is under way in the token");
	mkt_softhsm_delete_token("hot");
	t = mkt_now();
	err = sign_now(c, key0, NULL, 0);
	mkt_ok(!err[0], "meanwhile the base token signs (%.2f s)", mkt_now() - t);
	pending_finish(slow, name, sizeof(name), msg, sizeof(msg));
	mkt_ok(strcmp(name, "org.mlskey.Error.TokenAbsent") == 0 && mkt_now() - t < 2.5,
	       "the call in the deleted token fails at once (%.2f s): %s: %s", mkt_now() - t,
	       name, msg);
	mkt_ok(token_wait(c, "hot", false, toks, 2) != NULL || !entry_find(toks, 32, "hot"),
	       "the deleted token is gone (present false)");
	mkt_shim_control("");
	usleep(3200000); /* the held C_Sign ends; its result goes nowhere */
	mkt_ok(!sign_now(c, key0, NULL, 0)[0], "the base token still signs afterwards");

	/* another token under the same label is another token: its serial and URI differ */
	mkt_ok(agent_lock(c, "") == 0, "lock every token (SoftHSM shows a new one only then)");
	signals_drain(c);
	mkt_softhsm_add_token("hot");
	ok = signal_wait(c, "TokensChanged", 5);
	n = list_entries(c, "ListTokens", toks, 32);
	{
		const entry *old = NULL, *now = NULL;

		for (int i = 0; i < n; i++)
			if (strcmp(toks[i].label, "hot") == 0 && toks[i].present)
				now = &toks[i];
			else if (strcmp(toks[i].label, "hot") == 0)
				old = &toks[i];
		mkt_ok(ok && now && old && strcmp(now->uri, old->uri) != 0,
		       "a new token labelled \"hot\" is listed beside the old one, another URI");
	}
	err = sign_now(c, key1, msg, sizeof(msg));
	mkt_ok(strcmp(err, "org.mlskey.Error.TokenAbsent") == 0,
	       "the old token's key is not taken from the new one: %s", err);

	bus_close(c2);
	bus_close(c);
	mkt_ok(mkt_agent_stop(agent) == 0, "mlskeyd stops cleanly");
	return mkt_done();
}
