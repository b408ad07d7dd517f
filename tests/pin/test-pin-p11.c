/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The token layer's context-specific login (pkcs11/p11.h, mk_p11_set_thread_auth) on a real
 * SoftHSM key with CKA_ALWAYS_AUTHENTICATE, through the counting shim: one C_Login
 * (CKU_CONTEXT_SPECIFIC) per PIN the thread's function hands over, asked again only when
 * the function says so, a PIN pad login without a PIN, and a failed or cancelled login that
 * leaves the pooled session usable.
 */
#include <pthread.h>

#include "common/error.h"
#include "common/secmem.h"
#include "pkcs11/p11.h"
#include "tests/pin/pin-test.h"

#define TOKEN "ctx"
#define PIN "246813"
#define EACH_URI "pkcs11:token=" TOKEN ";object=each;type=private"
#define PLAIN_URI "pkcs11:token=" TOKEN ";object=plain;type=private"

typedef struct answers {
	const char *pins[8]; /* per attempt: a PIN, "cancel", or "pad" */
	unsigned n;
	unsigned calls, last_attempt;
	int last_error;
	char last_label[64];
} answers;

static int answer(void *userdata, const mk_key_info *key, unsigned attempt, int last_error,
		  mk_secret **ret_pin)
{
	answers *a = userdata;
	const char *p;

	a->calls++;
	a->last_attempt = attempt;
	a->last_error = last_error;
	snprintf(a->last_label, sizeof(a->last_label), "%s", key->label);
	if (attempt > a->n)
		return mk_error(-ECANCELED, "no more PINs in this test");
	p = a->pins[attempt - 1];
	if (!strcmp(p, "cancel"))
		return mk_error(-ECANCELED, "cancelled by the test");
	if (!strcmp(p, "pad")) {
		*ret_pin = NULL;
		return 0;
	}
	return mk_secret_new_copy(p, strlen(p), ret_pin);
}

static int sign(mk_p11 *p, const char *uri)
{
	_cleanup_(mk_key_unrefp) mk_key *k = NULL;
	mk_bytes sig = { 0 };
	int r;

	r = mk_p11_find_key(p, uri, &k);
	if (r < 0)
		return r;
	r = mk_key_sign(k, (const uint8_t *)"abc", 3, &sig);
	if (r == 0 && (sig.len < 8 || sig.data[0] != 0x30))
		r = -EIO;
	mk_bytes_clear(&sig);
	return r;
}

static void *sign_elsewhere(void *p)
{
	static int r;

	r = sign(p, EACH_URI);
	return &r;
}

int main(void)
{
	const char *modules[] = { NULL, NULL };
	mk_p11_options o = { .use_p11_kit = false, .module_paths = modules };
	_cleanup_(mk_key_unrefp) mk_key *k = NULL;
	answers a;
	mk_p11 *p = NULL;
	pthread_t th;
	int *tr, before;

	mk_secmem_init();
	pin_add_token(TOKEN, PIN);
	if (pin_make_key(TOKEN, PIN, "each", true) < 0 || pin_make_key(TOKEN, PIN, "plain", false) < 0)
		mkt_bail("cannot make the test keys");
	mkt_shim_setup();
	modules[0] = mkt_shim_path();

	mkt_ok_r(mk_p11_open(&o, &p), "the token layer opens the shim around SoftHSM");
	mkt_ok_r(mk_p11_login(p, "pkcs11:token=" TOKEN, (const uint8_t *)PIN, strlen(PIN)),
		 "log in");
	mkt_ok(mk_p11_find_key(p, EACH_URI, &k) == 0 && mk_key_get_info(k)->always_authenticate,
	       "after login ListKeys' always_authenticate is true for the key");
	k = mk_key_unref(k);

	before = mkt_shim_count("C_Login ");
	mkt_ok_err(sign(p, EACH_URI), -EACCES, "without a PIN function the key does not sign");
	mkt_ok(strstr(mk_error_message(), "PIN for every use") != NULL, "  and says why: %s",
	       mk_error_message());
	mkt_ok(mkt_shim_count("C_Login ") == before, "  and no C_Login was made");
	mkt_ok_r(sign(p, PLAIN_URI), "a key without CKA_ALWAYS_AUTHENTICATE signs without one");

	a = (answers){ .pins = { PIN }, .n = 1 };
	mk_p11_set_thread_auth(answer, &a);
	before = mkt_shim_count("C_Login user=2 ");
	mkt_ok_r(sign(p, EACH_URI), "with the right PIN the key signs");
	mkt_ok(a.calls == 1 && a.last_attempt == 1 && a.last_error == 0 &&
		       !strcmp(a.last_label, "each"),
	       "  asked once, attempt 1, no earlier error, for key \"each\"");
	mkt_ok_r(sign(p, PLAIN_URI), "  the plain key does not ask");
	mkt_ok(a.calls == 1, "  (still one ask)");
	mkt_ok_r(sign(p, EACH_URI), "a second signature");
	mkt_ok(a.calls == 2 && mkt_shim_count("C_Login user=2 ") == before + 2,
	       "  asks again: one context login per signature (%d)",
	       mkt_shim_count("C_Login user=2 ") - before);

	a = (answers){ .pins = { "000000", PIN }, .n = 2 };
	before = mkt_shim_count("C_Login user=2 ");
	mkt_ok_r(sign(p, EACH_URI), "a wrong PIN, then the right one");
	mkt_ok(a.calls == 2 && a.last_attempt == 2 && a.last_error == -EKEYREJECTED,
	       "  the second ask knows the first PIN was wrong (attempt %u, error %d)",
	       a.last_attempt, a.last_error);
	mkt_ok(mkt_shim_count("C_Login user=2 ") == before + 2, "  two PINs, two C_Logins");

	a = (answers){ .pins = { "000000", "111111", "222222" }, .n = 3 };
	before = mkt_shim_count("C_Login user=2 ");
	mkt_ok_err(sign(p, EACH_URI), -ECANCELED, "three wrong PINs, then the function gives up");
	mkt_ok(a.calls == 4 && mkt_shim_count("C_Login user=2 ") == before + 3,
	       "  three C_Logins, never a PIN tried twice (%u asks, %d logins)", a.calls,
	       mkt_shim_count("C_Login user=2 ") - before);

	a = (answers){ .pins = { "cancel" }, .n = 1 };
	before = mkt_shim_count("C_Login ");
	mkt_ok_err(sign(p, EACH_URI), -ECANCELED, "cancelled: the function's error");
	mkt_ok(mkt_shim_count("C_Login ") == before, "  and no C_Login");
	for (int i = 0; i < 3; i++) {
		a = (answers){ .pins = { PIN }, .n = 1 };
		mkt_ok_r(sign(p, EACH_URI), "after a failed context login the session signs (%d)", i);
		mkt_ok_r(sign(p, PLAIN_URI), "  and so does the plain key (%d)", i);
		a = (answers){ .pins = { "cancel" }, .n = 1 };
		mkt_ok_err(sign(p, EACH_URI), -ECANCELED, "  cancel again (%d)", i);
	}

	/* the function is the calling thread's: another thread has none */
	a = (answers){ .pins = { PIN }, .n = 1 };
	pthread_create(&th, NULL, sign_elsewhere, p);
	pthread_join(th, (void **)&tr);
	mkt_ok(*tr == -EACCES && a.calls == 0, "another thread has no PIN function (%d)", *tr);

	/* a PIN pad (the shim types the PIN on its keypad): C_Login without a PIN */
	mkt_shim_control("pinpad=1\npinpad_pin=" PIN "\n");
	a = (answers){ .pins = { "pad" }, .n = 1 };
	before = mkt_shim_count("C_Login user=2 pin=keypad ");
	mkt_ok_r(sign(p, EACH_URI), "a PIN pad: the function hands over no PIN, the key signs");
	mkt_ok(mkt_shim_count("C_Login user=2 pin=keypad ") == before + 1,
	       "  one C_Login(CKU_CONTEXT_SPECIFIC) without a PIN");
	mkt_shim_control("");

	mk_p11_set_thread_auth(NULL, NULL);
	mk_p11_free(p);
	return mkt_done();
}
