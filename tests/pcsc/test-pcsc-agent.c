/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mlskeyd with OpenSC's module and a real pcscd (vpcd reader, vicc card): the agent lists
 * the reader as a slot, sees the card come and go at once (PC/SC events, TokensChanged),
 * reports what OpenSC makes of vicc's card, never holds it, and keeps serving through a
 * pcscd that stops and starts again.
 *
 * What is true for this card: vicc -t iso7816 has no PKCS#15 application, so OpenSC puts
 * it in the slot as "token not recognized" (C_GetTokenInfo: CKR_TOKEN_NOT_RECOGNIZED). The
 * agent shows exactly that: ListSlots state "unrecognized", no token in ListTokens.
 */
#include <winscard.h>

#include "tests/pcsc/pcsc-fixture.h"
#include "tests/pcsc/pcsc-test.h"

static bool take_exclusively(void)
{
	SCARDCONTEXT ctx;
	SCARDHANDLE h;
	DWORD proto;
	LONG rv;

	if (SCardEstablishContext(SCARD_SCOPE_SYSTEM, NULL, NULL, &ctx) != SCARD_S_SUCCESS)
		return false;
	rv = SCardConnect(ctx, MKT_VPCD_READER, SCARD_SHARE_EXCLUSIVE,
			  SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1, &h, &proto);
	if (rv == SCARD_S_SUCCESS)
		SCardDisconnect(h, SCARD_LEAVE_CARD);
	else
		mkt_diag("SCardConnect(EXCLUSIVE): %s", pcsc_stringify_error(rv));
	SCardReleaseContext(ctx);
	return rv == SCARD_S_SUCCESS;
}

/* The vpcd slot as the agent lists it now; false when it is not listed. */
static bool vpcd_slot(DBusConnection *c, entry *ret)
{
	entry e[64];
	int n = list_entries(c, "ListSlots", e, 64);
	const entry *s = n > 0 ? entry_find(e, n, MKT_VPCD_READER) : NULL;

	if (s)
		*ret = *s;
	return s != NULL;
}

/* Waits until the vpcd slot is in that state ("empty", "unrecognized", ...); the last look
 * in *ret. */
static bool vpcd_slot_wait(DBusConnection *c, const char *state, entry *ret, double secs)
{
	double until = mkt_now() + secs;

	do {
		if (vpcd_slot(c, ret) && strcmp(ret->state, state) == 0)
			return true;
		usleep(100000);
	} while (mkt_now() < until);
	mkt_diag("the slot: state \"%s\", token_present %d", ret->state, ret->token_present);
	return false;
}

int main(void)
{
	const char *opensc = mkt_opensc_module();
	const char *args[] = { "--module", opensc, "--config", NULL, NULL };
	entry slot, toks[32];
	DBusConnection *c;
	pid_t agent;
	double t;
	bool ok;
	int n;

	mkt_vicc_check();
	mkt_softhsm_setup();
	mkt_softhsm_add_token("soft");
	mkt_pcscd_start();
	/* PC/SC events, no waiting for the slot poll */
	args[3] = mkt_write_file("pcsc.conf", "[agent]\nslot-poll-ms = 60000\n");
	agent = mkt_agent_start(args);
	c = bus_open(mkt_dbus_setup());
	signals_watch(c);

	mkt_ok(vpcd_slot(c, &slot), "ListSlots lists the reader \"%s\" (OpenSC's slot)",
	       MKT_VPCD_READER);
	mkt_ok(!slot.token_present && strcmp(slot.state, "empty") == 0,
	       "empty: token_present false, state \"%s\"", slot.state);

	signals_drain(c);
	mkt_vicc_insert();
	t = mkt_now();
	ok = signal_wait(c, "TokensChanged", 5);
	mkt_ok(ok, "vicc's card in: TokensChanged (%.2f s)", mkt_now() - t);
	/* OpenSC tries each of its card drivers on vicc's card: seconds */
	mkt_ok(vpcd_slot_wait(c, "unrecognized", &slot, 30) && slot.token_present && !slot.token[0],
	       "as OpenSC says: a card in the slot that it cannot read (\"unrecognized\", no "
	       "token)");
	n = list_entries(c, "ListTokens", toks, 32);
	mkt_ok(n == 1 && strcmp(toks[0].label, "soft") == 0,
	       "ListTokens: only the SoftHSM token, no token for that card (%d)", n);
	mkt_ok(take_exclusively(), "the agent does not hold the card: another program takes it "
	       "exclusively");

	signals_drain(c);
	mkt_vicc_remove();
	t = mkt_now();
	ok = signal_wait(c, "TokensChanged", 5);
	mkt_ok(ok, "card out: TokensChanged (%.2f s)", mkt_now() - t);
	mkt_ok(vpcd_slot_wait(c, "empty", &slot, 10) && !slot.token_present,
	       "the slot is empty again");

	/* pcscd goes away and comes back: the agent carries on and finds it again */
	mkt_pcscd_stop();
	n = list_entries(c, "ListTokens", toks, 32);
	mkt_ok(n == 1 && toks[0].present, "pcscd stopped: the agent still answers (ListTokens)");
	mkt_ok(kill(agent, 0) == 0, "and runs");
	signals_drain(c);
	mkt_pcscd_start();
	t = mkt_now();
	/* the monitor tries again after 1, 2, 4 ... s */
	ok = signal_wait(c, "TokensChanged", 15);
	mkt_ok(ok, "pcscd back: the monitor finds its readers again, TokensChanged (%.1f s)",
	       mkt_now() - t);
	signals_drain(c);
	mkt_vicc_insert();
	mkt_ok(signal_wait(c, "TokensChanged", 5) && vpcd_slot_wait(c, "unrecognized", &slot, 30),
	       "and the card put in then (TokensChanged, ListSlots)");
	mkt_vicc_remove();

	bus_close(c);
	mkt_ok(mkt_agent_stop(agent) == 0, "mlskeyd stops cleanly");
	mkt_pcscd_stop();
	return mkt_done();
}
