/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Who may use which key (issue 7), through the real mlskeyd with a [policy] and [rule]s, on a
 * private bus with SoftHSM (behind the shim) and the scripted pinentry: rules by executable
 * (this test, busctl, gdbus: real programs), the default policy's MLS labels and HpkeOpen,
 * confirm = always / first (dialog text, Deny, once per process, again after Lock), the
 * provenance gate for an imported key, always-authenticate keys with and without a rule
 * naming them, and single-use init keys (used up by one Welcome, also when two race, and
 * still marked and still gone after a restart of the agent).
 */
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <spawn.h>
#include <sys/wait.h>

#include "agent/mls.h"
#include "tests/p11-import.h"
#include "tests/pin/pin-test.h"

#define TOKEN "office"
#define PIN MKT_USER_PIN
#define KEY(o) "pkcs11:token=" TOKEN ";object=" o ";type=private"
#define ALICE KEY("alice")

static DBusConnection *c;
static char self[512], cli[PATH_MAX], conf_text[8192];
static const char *conf, *addr;
static char name[256], msg[2048];
static const uint8_t content[] = "an MLS structure, more or less";
static const uint8_t context_b[] = "the group context";
static const uint8_t secret[] = "the welcome secret: 32 bytes!!!";

static bool is(const char *got, const char *want)
{
	if (!want[0])
		return !got[0];
	return !strncmp(got, "org.mlskey.Error.", 17) && !strcmp(got + 17, want);
}

/* SignWithLabel: "" or the error name; the message into msg. */
static const char *sign(const char *key, const char *label)
{
	DBusMessage *m = agent_call_new("SignWithLabel"), *r;
	uint16_t suite = 2;

	msg[0] = '\0';
	dbus_message_append_args(m, DBUS_TYPE_STRING, &key, DBUS_TYPE_UINT16, &suite,
				 DBUS_TYPE_STRING, &label, DBUS_TYPE_INVALID);
	append_ay(m, content, sizeof(content) - 1);
	r = agent_send(c, m, 60000, name, sizeof(name), msg, sizeof(msg));
	if (r)
		dbus_message_unref(r);
	return name;
}

/* DecryptWithLabel of a fresh seal to key's public key under label, over conn. */
static const char *decrypt_on(DBusConnection *conn, const char *key, const char *label,
			      char *err, size_t cap, char *m_out, size_t m_cap)
{
	_cleanup_bytes_ mk_bytes pub = MK_BYTES_NULL, kem = MK_BYTES_NULL, ct = MK_BYTES_NULL;
	DBusMessage *m, *r;
	uint16_t suite = 2;
	bool ok;

	if (agent_public_key(conn, key, &pub) < 0) {
		/* a key that is gone: seal to a throwaway key, to see the agent's answer */
		EVP_PKEY *e = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
		uint8_t q[65];
		size_t ql = 0;

		if (!e || !EVP_PKEY_get_octet_string_param(e, OSSL_PKEY_PARAM_PUB_KEY, q, sizeof(q),
							   &ql) ||
		    mk_bytes_dup(q, ql, &pub) < 0)
			mkt_bail("cannot make a throwaway key");
		EVP_PKEY_free(e);
	}
	if (mk_mls_encrypt_with_label(2, pub.data, pub.len, label, context_b, sizeof(context_b),
				      secret, sizeof(secret), &kem, &ct) < 0)
		mkt_bail("EncryptWithLabel failed");
	m = agent_call_new("DecryptWithLabel");
	dbus_message_append_args(m, DBUS_TYPE_STRING, &key, DBUS_TYPE_UINT16, &suite,
				 DBUS_TYPE_STRING, &label, DBUS_TYPE_INVALID);
	append_ay(m, context_b, sizeof(context_b));
	append_ay(m, kem.data, kem.len);
	append_ay(m, ct.data, ct.len);
	r = agent_send(conn, m, 60000, err, cap, m_out, m_cap);
	ok = false;
	if (r) {
		mk_bytes pt = MK_BYTES_NULL;

		ok = reply_ay(r, &pt) == 0 && pt.len == sizeof(secret) &&
		     !memcmp(pt.data, secret, sizeof(secret));
		mk_bytes_clear(&pt);
		dbus_message_unref(r);
		if (!ok)
			snprintf(err, cap, "wrong-plaintext");
	}
	return err;
}

static const char *decrypt(const char *key, const char *label)
{
	return decrypt_on(c, key, label, name, sizeof(name), msg, sizeof(msg));
}

/* HpkeOpen with key's own public key as enc: refused or failing, never a plaintext. */
static const char *hpke_open(const char *key)
{
	_cleanup_bytes_ mk_bytes pub = MK_BYTES_NULL;
	DBusMessage *m = agent_call_new("HpkeOpen"), *r;
	uint16_t kdf = 1, aead = 1;

	if (agent_public_key(c, key, &pub) < 0)
		mkt_bail("no public key for %s", key);
	dbus_message_append_args(m, DBUS_TYPE_STRING, &key, DBUS_TYPE_UINT16, &kdf,
				 DBUS_TYPE_UINT16, &aead, DBUS_TYPE_INVALID);
	append_ay(m, NULL, 0);
	append_ay(m, NULL, 0);
	append_ay(m, pub.data, pub.len);
	append_ay(m, secret, 32); /* 32 bytes: a tag and more */
	r = agent_send(c, m, 60000, name, sizeof(name), msg, sizeof(msg));
	if (r)
		dbus_message_unref(r);
	return name;
}

/* GenerateKey with the option single_use (0/1), or an unknown option (-1), or none (-2). */
static const char *generate(const char *alg, const char *label, int single_use, char *uri,
			    size_t cap)
{
	DBusMessage *m = agent_call_new("GenerateKey"), *r;
	DBusMessageIter it, d, e, v;
	const char *token = "pkcs11:token=" TOKEN;
	const char *purpose = !strncmp(alg, "dhkem", 5) ? "hpke" : "signature";
	const char *key = single_use == -1 ? "reusable" : "single_use";
	dbus_bool_t b = single_use == 1;

	dbus_message_append_args(m, DBUS_TYPE_STRING, &token, DBUS_TYPE_STRING, &purpose,
				 DBUS_TYPE_STRING, &alg, DBUS_TYPE_STRING, &label,
				 DBUS_TYPE_INVALID);
	dbus_message_iter_init_append(m, &it);
	dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "{sv}", &d);
	if (single_use != -2) {
		dbus_message_iter_open_container(&d, DBUS_TYPE_DICT_ENTRY, NULL, &e);
		dbus_message_iter_append_basic(&e, DBUS_TYPE_STRING, &key);
		dbus_message_iter_open_container(&e, DBUS_TYPE_VARIANT, "b", &v);
		dbus_message_iter_append_basic(&v, DBUS_TYPE_BOOLEAN, &b);
		dbus_message_iter_close_container(&e, &v);
		dbus_message_iter_close_container(&d, &e);
	}
	dbus_message_iter_close_container(&it, &d);
	r = agent_send(c, m, 60000, name, sizeof(name), msg, sizeof(msg));
	if (r) {
		const char *s = "";

		dbus_message_get_args(r, NULL, DBUS_TYPE_STRING, &s, DBUS_TYPE_INVALID);
		snprintf(uri, cap, "%s", s);
		dbus_message_unref(r);
	}
	return name;
}

/* One key of ListKeys, by label. */
typedef struct listed {
	bool found, usable, single_use;
	char reason[512], uri[1024];
} listed;

static listed list_key(const char *label)
{
	DBusMessage *r = agent_send(c, agent_call_new("ListKeys"), 60000, NULL, 0, NULL, 0);
	DBusMessageIter it, arr, st, dict, e, v;
	listed out = { 0 };

	if (!r)
		mkt_bail("ListKeys failed");
	dbus_message_iter_init(r, &it);
	dbus_message_iter_recurse(&it, &arr);
	for (; dbus_message_iter_get_arg_type(&arr) == DBUS_TYPE_STRUCT;
	     dbus_message_iter_next(&arr)) {
		listed k = { .found = true };
		const char *uri, *s;
		bool mine = false;
		dbus_bool_t b;

		dbus_message_iter_recurse(&arr, &st);
		dbus_message_iter_get_basic(&st, &uri);
		snprintf(k.uri, sizeof(k.uri), "%s", uri);
		dbus_message_iter_next(&st);
		dbus_message_iter_recurse(&st, &dict);
		for (; dbus_message_iter_get_arg_type(&dict) == DBUS_TYPE_DICT_ENTRY;
		     dbus_message_iter_next(&dict)) {
			const char *key;

			dbus_message_iter_recurse(&dict, &e);
			dbus_message_iter_get_basic(&e, &key);
			dbus_message_iter_next(&e);
			dbus_message_iter_recurse(&e, &v);
			if (!strcmp(key, "label")) {
				dbus_message_iter_get_basic(&v, &s);
				mine = !strcmp(s, label);
			} else if (!strcmp(key, "reason")) {
				dbus_message_iter_get_basic(&v, &s);
				snprintf(k.reason, sizeof(k.reason), "%s", s);
			} else if (!strcmp(key, "usable")) {
				dbus_message_iter_get_basic(&v, &b);
				k.usable = b;
			} else if (!strcmp(key, "single_use")) {
				dbus_message_iter_get_basic(&v, &b);
				k.single_use = b;
			}
		}
		if (mine)
			out = k;
	}
	dbus_message_unref(r);
	return out;
}

/* How many keys ListKeys shows. */
static size_t count_keys(void)
{
	DBusMessage *r = agent_send(c, agent_call_new("ListKeys"), 60000, NULL, 0, NULL, 0);
	DBusMessageIter it, arr;
	size_t n = 0;

	if (!r)
		mkt_bail("ListKeys failed");
	dbus_message_iter_init(r, &it);
	dbus_message_iter_recurse(&it, &arr);
	for (; dbus_message_iter_get_arg_type(&arr) == DBUS_TYPE_STRUCT;
	     dbus_message_iter_next(&arr))
		n++;
	dbus_message_unref(r);
	return n;
}

/* CreateKeyPackage(key, suite 2, {identity: "alice"}): "" or the error name, msg. */
static const char *create_key_package(const char *key)
{
	DBusMessage *m = agent_call_new("CreateKeyPackage"), *r;
	DBusMessageIter it, opts, e, v;
	const char *k = "identity", *id = "alice@example.org";
	uint16_t suite = 2;

	msg[0] = '\0';
	dbus_message_append_args(m, DBUS_TYPE_STRING, &key, DBUS_TYPE_UINT16, &suite,
				 DBUS_TYPE_INVALID);
	dbus_message_iter_init_append(m, &it);
	if (!dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "{sv}", &opts) ||
	    !dbus_message_iter_open_container(&opts, DBUS_TYPE_DICT_ENTRY, NULL, &e) ||
	    !dbus_message_iter_append_basic(&e, DBUS_TYPE_STRING, &k) ||
	    !dbus_message_iter_open_container(&e, DBUS_TYPE_VARIANT, "s", &v) ||
	    !dbus_message_iter_append_basic(&v, DBUS_TYPE_STRING, &id) ||
	    !dbus_message_iter_close_container(&e, &v) ||
	    !dbus_message_iter_close_container(&opts, &e) ||
	    !dbus_message_iter_close_container(&it, &opts))
		mkt_bail("no memory for a CreateKeyPackage call");
	r = agent_send(c, m, 60000, name, sizeof(name), msg, sizeof(msg));
	if (r)
		dbus_message_unref(r);
	return name;
}

/* --- rules by executable ------------------------------------------------------------------- */

static run_result res;

static void busctl_sign(const char *key)
{
	char addr_arg[600];

	snprintf(addr_arg, sizeof(addr_arg), "--address=%s", addr);
	run_list(&res, "busctl", addr_arg, "call", AGENT_NAME, AGENT_PATH, AGENT_IFACE,
		 "SignWithLabel", "sqsay", key, "2", "LeafNodeTBS", "3", "1", "2", "3", NULL);
}

static void test_executables(void)
{
	mkt_ok(is(sign(ALICE, "LeafNodeTBS"), ""), "this test's executable signs under rule self");
	busctl_sign(ALICE);
	mkt_ok(res.status == 0, "busctl signs with alice under rule busctl-alice (%s)", res.err);
	busctl_sign(KEY("bob"));
	mkt_ok(res.status != 0 && strstr(res.err, "default policy") && strstr(res.err, "busctl"),
	       "busctl is refused key bob by the default (deny), in words: %s", res.err);
	run_list(&res, "gdbus", "call", "--address", addr, "--dest", AGENT_NAME, "--object-path",
		 AGENT_PATH, "--method", AGENT_IFACE ".SignWithLabel", ALICE, "2", "LeafNodeTBS",
		 "[byte 1, 2, 3]", NULL);
	mkt_ok(res.status != 0 && !strcmp(gdbus_error_name(&res), "org.mlskey.Error.AccessDenied") &&
	       strstr(res.err, "no-gdbus"),
	       "gdbus is refused by rule no-gdbus: %s", res.err);
	run_list(&res, "gdbus", "call", "--address", addr, "--dest", AGENT_NAME, "--object-path",
		 AGENT_PATH, "--method", AGENT_IFACE ".ListKeys", NULL);
	mkt_ok(res.status == 0, "  listing keys stays open to it");
}

static void test_labels(const char *plain_hpke)
{
	mkt_ok(is(sign(ALICE, "x"), "AccessDenied") && strstr(msg, "labels = x"),
	       "a label RFC 9420 does not define is refused, saying what to add: %s", msg);
	mkt_ok(is(sign(ALICE, "Welcome"), "AccessDenied"), "  a decrypt label to sign too");
	mkt_ok(is(sign(ALICE, "custom-label"), ""), "a label rule self lists is signed");
	mkt_ok(is(decrypt(plain_hpke, "Welcome"), ""), "DecryptWithLabel(Welcome) is allowed");
	mkt_ok(is(decrypt(plain_hpke, "x"), "AccessDenied"), "  DecryptWithLabel(x) is not");
	mkt_ok(is(hpke_open(plain_hpke), "AccessDenied") && strstr(msg, "hpke-open"),
	       "HpkeOpen needs a rule with operations = hpke-open: %s", msg);
}

/* --- confirmations ------------------------------------------------------------------------- */

static void test_confirm_always(void)
{
	char want[1400];

	pin_log_reset();
	pin_script("CONFIRM yes\nCONFIRM yes\nCONFIRM no\nCANCEL\n");
	mkt_ok(is(sign(ALICE, "GroupInfoTBS"), ""), "confirm = always, Allow: signed (%s)", msg);
	snprintf(want, sizeof(want), "Allow %s (pid %d) to sign an MLS GroupInfo with 'alice'?",
		 self, (int)getpid());
	mkt_ok(pin_log_count("CONFIRM") == 1 && strstr(pin_log_last("SETDESC "), want),
	       "  one CONFIRM naming program, pid, operation and key: %s",
	       pin_log_last("SETDESC "));
	mkt_ok(strstr(pin_log_last("SETDESC "), "on token \"" TOKEN "\"") != NULL,
	       "  and the token");
	mkt_ok(pin_log_count("GETPIN") == 0, "  no PIN asked: the token is logged in");
	mkt_ok(is(sign(ALICE, "GroupInfoTBS"), "") && pin_log_count("CONFIRM") == 2,
	       "the next call asks again");
	mkt_ok(is(sign(ALICE, "GroupInfoTBS"), "AccessDenied") && strstr(msg, "refused"),
	       "Deny: AccessDenied: %s", msg);
	mkt_ok(is(sign(ALICE, "GroupInfoTBS"), "AccessDenied"), "a closed dialog: AccessDenied");
}

/*
 * CreateKeyPackage is decided once, as operation keypackage with its signature key: one
 * confirmation for the whole KeyPackage (not one per key generated and per signature, and
 * rule keypackage-first, which asks for KeyPackageTBS signatures, is not consulted), and a
 * refusal leaves no key behind. A caller with no keypackage rule is refused by the default.
 */
static void test_keypackage(void)
{
	char want[1400];
	size_t before = count_keys();

	pin_log_reset();
	pin_script("CONFIRM yes\n");
	mkt_ok(is(create_key_package(ALICE), ""), "CreateKeyPackage under rule kp-always, Allow "
	       "(%s)", msg);
	snprintf(want, sizeof(want), "Allow %s (pid %d) to create an MLS KeyPackage (two new keys "
		 "on the token, signed) with 'alice'?", self, (int)getpid());
	mkt_ok(pin_log_count("CONFIRM") == 1 && strstr(pin_log_last("SETDESC "), want),
	       "  one confirmation for the whole KeyPackage, in words: %s",
	       pin_log_last("SETDESC "));
	mkt_ok(count_keys() == before + 2, "  its init and leaf keys are on the token (%zu -> %zu)",
	       before, count_keys());
	before = count_keys();
	pin_script("CONFIRM no\n");
	mkt_ok(is(create_key_package(ALICE), "AccessDenied") && strstr(msg, "refused"),
	       "Deny: AccessDenied: %s", msg);
	mkt_ok(count_keys() == before, "  and no key was made (%zu keys)", count_keys());
	mkt_ok(is(create_key_package(KEY("qes")), "AccessDenied") &&
		       strstr(msg, "default policy"),
	       "a key no keypackage rule names: refused by the default (deny): %s", msg);
	mkt_ok(count_keys() == before, "  and no key was made (%zu keys)", count_keys());
	pin_script("");
}

/* The child process of test_confirm_first: signs a KeyPackage once and exits 0 or 1. */
static int child_sign(const char *a)
{
	c = bus_open(a);
	return is(sign(ALICE, "KeyPackageTBS"), "") ? 0 : 1;
}

static int spawn_child(void)
{
	char *argv[] = { self, (char *)"--child-sign", (char *)addr, NULL };
	pid_t pid;
	int status;

	if (posix_spawn(&pid, self, NULL, NULL, argv, environ) != 0)
		return -1;
	if (waitpid(pid, &status, 0) < 0)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

typedef struct signer {
	pthread_t th;
	char err[256];
} signer;

static void *sign_bg(void *p)
{
	signer *s = p;
	DBusConnection *own = bus_open(addr);
	DBusMessage *m = agent_call_new("SignWithLabel"), *r;
	const char *key = ALICE, *label = "KeyPackageTBS";
	uint16_t suite = 2;

	dbus_message_append_args(m, DBUS_TYPE_STRING, &key, DBUS_TYPE_UINT16, &suite,
				 DBUS_TYPE_STRING, &label, DBUS_TYPE_INVALID);
	append_ay(m, content, 8);
	r = agent_send(own, m, 60000, s->err, sizeof(s->err), NULL, 0);
	if (r)
		dbus_message_unref(r);
	bus_close(own);
	return NULL;
}

static void test_confirm_first(void)
{
	signer s[3] = { 0 };
	int ok = 0;

	pin_log_reset();
	/* the first dialog takes a while: the other calls wait for its answer, not a dialog */
	pin_script("DELAY 600\nCONFIRM yes\n");
	for (int i = 0; i < 3; i++)
		pthread_create(&s[i].th, NULL, sign_bg, &s[i]);
	for (int i = 0; i < 3; i++) {
		pthread_join(s[i].th, NULL);
		ok += !s[i].err[0];
	}
	mkt_ok(ok == 3, "confirm = first, three calls at once, Allow: all signed (%d)", ok);
	mkt_ok(pin_log_count("CONFIRM") == 1 &&
	       strstr(pin_log_last("SETDESC "), "to sign an MLS KeyPackage with 'alice'?"),
	       "  one CONFIRM for them all (%d): %s", pin_log_count("CONFIRM"),
	       pin_log_last("SETDESC "));
	mkt_ok(is(sign(ALICE, "KeyPackageTBS"), "") && is(sign(ALICE, "KeyPackageTBS"), "") &&
	       pin_log_count("CONFIRM") == 1, "  the same process is not asked again (%d)",
	       pin_log_count("CONFIRM"));
	pin_script("CONFIRM yes\n");
	{
		int st = spawn_child(), n = pin_log_count("CONFIRM");

		mkt_ok(st == 0 && n == 2,
		       "another process of the same program is asked once for itself (%d, %d)", st,
		       n);
	}
	pin_script("PIN " PIN "\nCONFIRM yes\n");
	agent_lock(c, "");
	mkt_ok(is(sign(ALICE, "KeyPackageTBS"), "") && pin_log_count("CONFIRM") == 3 &&
	       pin_log_count("GETPIN") == 1,
	       "after Lock: asked again (the PIN, then the use: the key is hidden until login)");
	pin_script("");
	mkt_ok(is(sign(ALICE, "KeyPackageTBS"), "") && pin_log_count("CONFIRM") == 3,
	       "  and then not again");
}

/* --- gates --------------------------------------------------------------------------------- */

/* Imports a fresh P-256 key with C_CreateObject: never CKA_NEVER_EXTRACTABLE. */
static void import_loose(void)
{
	EVP_PKEY *e = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	static const uint8_t id[] = { 0x10, 0x05, 0xe0 };
	BIGNUM *d = NULL;
	uint8_t priv[32], pub[65];
	size_t pub_len = 0;

	if (!e || !EVP_PKEY_get_bn_param(e, OSSL_PKEY_PARAM_PRIV_KEY, &d) ||
	    BN_bn2binpad(d, priv, sizeof(priv)) != sizeof(priv) ||
	    !EVP_PKEY_get_octet_string_param(e, OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof(pub),
					     &pub_len))
		mkt_bail("cannot make a P-256 key in software");
	if (mkt_import_key(TOKEN, MK_ALG_ECDSA_P256, "loose", id, sizeof(id), priv, sizeof(priv),
			   pub, pub_len) < 0)
		mkt_bail("cannot import the key");
	OPENSSL_cleanse(priv, sizeof(priv));
	BN_clear_free(d);
	EVP_PKEY_free(e);
}

static void test_provenance(void)
{
	listed k = list_key("loose");

	mkt_ok(k.found && !k.usable && strstr(k.reason, "never left the token"),
	       "ListKeys: the imported key is not usable, with the reason: %s", k.reason);
	mkt_ok(is(sign(KEY("loose"), "LeafNodeTBS"), "AccessDenied") &&
	       strstr(msg, "may have left its token"), "  signing with it is refused: %s", msg);
	k = list_key("alice");
	mkt_ok(k.found && k.usable && !k.reason[0], "  a key generated on the token is usable");
}

static void test_always_authenticate(void)
{
	listed k = list_key("qes2");

	mkt_ok(k.found && !k.usable && strstr(k.reason, "every use"),
	       "ListKeys: an always-authenticate key no rule names is not usable: %s", k.reason);
	mkt_ok(is(sign(KEY("qes2"), "LeafNodeTBS"), "AccessDenied") &&
	       strstr(msg, "qualified-signature"), "  and refused: %s", msg);
	k = list_key("qes");
	mkt_ok(k.found && k.usable, "  one that rule qes names is usable (%s)", k.reason);
	pin_log_reset();
	pin_script("CONFIRM yes\nPIN " PIN "\n");
	mkt_ok(is(sign(KEY("qes"), "LeafNodeTBS"), ""), "  and signs, for this program (%s)", msg);
	{
		const char *log = pin_log(), *cf = strstr(log, "CONFIRM"), *gp = strstr(log, "GETPIN");

		mkt_ok(cf && gp && cf < gp, "  the use is confirmed first, then its own PIN asked");
	}
	busctl_sign(KEY("qes"));
	mkt_ok(res.status != 0 && strstr(res.err, "default policy"),
	       "  busctl may not use it: %s", res.err);
}

/* --- single-use init keys ------------------------------------------------------------------ */

static DBusConnection *mon;

static void drain_signals(void)
{
	DBusMessage *m;

	dbus_connection_read_write(mon, 0);
	while ((m = dbus_connection_pop_message(mon)))
		dbus_message_unref(m);
}

static bool wait_signal(const char *member, int ms)
{
	for (double end = mkt_now() + ms / 1000.0; mkt_now() < end;) {
		DBusMessage *m;

		dbus_connection_read_write(mon, 100);
		while ((m = dbus_connection_pop_message(mon))) {
			bool hit = dbus_message_is_signal(m, AGENT_IFACE, member);

			dbus_message_unref(m);
			if (hit)
				return true;
		}
	}
	return false;
}

typedef struct racer {
	pthread_t th;
	const char *key;
	char err[256];
} racer;

static void *race(void *p)
{
	racer *r = p;
	DBusConnection *own = bus_open(addr);

	decrypt_on(own, r->key, "Welcome", r->err, sizeof(r->err), NULL, 0);
	bus_close(own);
	return NULL;
}

static void test_single_use(void)
{
	char init[1024], init2[1024], sig[1024];
	listed k;

	mkt_ok(is(generate("dhkem-p256", "init", 1, init, sizeof(init)), ""),
	       "GenerateKey single_use = true (%s)", msg);
	k = list_key("init");
	mkt_ok(k.found && k.single_use && k.usable, "  ListKeys: single_use true, usable");
	mkt_ok(is(generate("ecdsa-p256", "s", 1, sig, sizeof(sig)), "InvalidInput") &&
	       strstr(msg, "hpke"), "a single-use signature key is refused: %s", msg);
	mkt_ok(is(generate("dhkem-p256", "u", -1, sig, sizeof(sig)), "InvalidInput") &&
	       strstr(msg, "single_use"), "an unknown option stays refused: %s", msg);
	mkt_ok(is(decrypt(init, "UpdatePathNode"), "") && list_key("init").found,
	       "a non-Welcome decryption does not use it up");
	drain_signals();
	mkt_ok(is(decrypt(init, "Welcome"), ""), "its Welcome is decrypted (%s)", msg);
	mkt_ok(wait_signal("KeysChanged", 3000), "  KeysChanged is emitted");
	mkt_ok(!list_key("init").found, "  then ListKeys no longer lists it");
	mkt_ok(is(decrypt_on(c, init, "Welcome", name, sizeof(name), msg, sizeof(msg)),
		  "NoSuchKey"), "  and a second Welcome gets NoSuchKey (%s)", name);

	mkt_ok(is(generate("dhkem-p256", "init2", 1, init2, sizeof(init2)), ""),
	       "another single-use key");
	{
		racer r[2] = { { .key = init2 }, { .key = init2 } };
		int ok = 0, gone = 0;

		for (int i = 0; i < 2; i++)
			pthread_create(&r[i].th, NULL, race, &r[i]);
		for (int i = 0; i < 2; i++) {
			pthread_join(r[i].th, NULL);
			ok += !r[i].err[0];
			gone += is(r[i].err, "NoSuchKey");
		}
		mkt_ok(ok == 1 && gone == 1,
		       "two racing Welcomes with it: one succeeds, the other NoSuchKey (%s, %s)",
		       r[0].err[0] ? r[0].err : "ok", r[1].err[0] ? r[1].err : "ok");
	}
}

static void test_cli(void)
{
	char uri[1024];

	run_list(&res, cli, "generate", "pkcs11:token=" TOKEN, "-a", "dhkem-p256", "-l", "cli-init",
		 "--single-use", NULL);
	mkt_ok(res.status == 0 && strstr(res.out, "object=cli-init"),
	       "mlskey generate --single-use (%s)", res.err);
	snprintf(uri, sizeof(uri), "%.*s", (int)strcspn(res.out, "\n"), res.out);
	mkt_ok(list_key("cli-init").single_use, "  makes a single-use key");
	run_list(&res, cli, "keys", NULL);
	mkt_ok(res.status == 0 && strstr(res.out, "single-use (deleted after its first Welcome)"),
	       "  mlskey keys says so");
	run_list(&res, cli, "keys", "--json", NULL);
	mkt_ok(res.status == 0 && strstr(res.out, "\"single_use\": true"),
	       "  and mlskey keys --json (libmlskey's mlskey_key.single_use)");
	mkt_ok(is(decrypt(uri, "Welcome"), "") && !list_key("cli-init").found,
	       "  which its first Welcome uses up");
	run_list(&res, cli, "generate", "pkcs11:token=" TOKEN, "-a", "ecdsa-p256", "-l", "cli-s",
		 "--single-use", NULL);
	mkt_ok(res.status != 0 && strstr(res.err, "only hpke keys"),
	       "mlskey generate --single-use of a signature key fails: %s", res.err);
	mkt_ok(!list_key("cli-s").found, "  and makes no key");
}

static pid_t start_agent(void)
{
	const char *args[] = { "--config", conf, NULL };

	return pin_agent_start(NULL, NULL, args);
}

static void test_restart(pid_t *pid)
{
	char init3[1024];

	mkt_ok(is(generate("dhkem-p256", "init3", 1, init3, sizeof(init3)), ""),
	       "a third single-use key");
	bus_close(c);
	mkt_ok(mkt_agent_stop(*pid) == 0, "the agent stops");
	pin_script("PIN " PIN "\n");
	*pid = start_agent();
	c = bus_open(addr);
	mkt_ok(is(sign(ALICE, "LeafNodeTBS"), ""), "a new agent logs in (%s)", msg);
	mkt_ok(!list_key("init").found && !list_key("init2").found,
	       "the used-up keys are still gone after the restart");
	mkt_ok(list_key("init3").single_use, "the unused one is still single-use: the mark is on "
	       "the token");
	mkt_ok(is(decrypt(init3, "Welcome"), "") && !list_key("init3").found,
	       "  and its Welcome uses it up");
	mkt_ok(is(decrypt(init3, "Welcome"), "NoSuchKey"), "  NoSuchKey after that");
}

int main(int argc, char **argv)
{
	char plain[1024], bob[1024];
	ssize_t n;
	pid_t pid;

	if (argc == 3 && !strcmp(argv[1], "--child-sign"))
		return child_sign(argv[2]);
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0)
		mkt_bail("cannot read /proc/self/exe");
	self[n] = '\0';
	if (!realpath(mkt_build_path("clients/mlskey"), cli))
		mkt_bail("the mlskey command is not built");

	pin_add_token(TOKEN, PIN);
	if (pin_make_key(TOKEN, PIN, "alice", false) < 0 ||
	    pin_make_key(TOKEN, PIN, "qes", true) < 0 || pin_make_key(TOKEN, PIN, "qes2", true) < 0)
		mkt_bail("cannot make the test keys");
	import_loose();
	mkt_shim_setup();
	snprintf(conf_text, sizeof(conf_text),
		 "[policy]\ndefault = deny\n"
		 "[rule]\nname = no-gdbus\ncaller = exe:/usr/bin/gdbus\n"
		 "operations = sign decrypt hpke-open generate delete\naction = deny\n"
		 "[rule]\nname = busctl-alice\ncaller = exe:/usr/bin/busctl\n"
		 "key = pkcs11:token=" TOKEN ";object=alice\n"
		 "[rule]\nname = qes\ncaller = exe:%s\nkey = pkcs11:token=" TOKEN ";object=qes\n"
		 "confirm = always\n"
		 "[rule]\nname = groupinfo-always\ncaller = exe:%s\n"
		 "key = pkcs11:token=" TOKEN ";object=alice\nlabels = GroupInfoTBS\n"
		 "confirm = always\n"
		 "[rule]\nname = keypackage-first\ncaller = exe:%s\n"
		 "key = pkcs11:token=" TOKEN ";object=alice\nlabels = KeyPackageTBS\n"
		 "confirm = first\n"
		 "[rule]\nname = kp-always\ncaller = exe:%s\n"
		 "key = pkcs11:token=" TOKEN ";object=alice\noperations = keypackage\n"
		 "confirm = always\n"
		 "[rule]\nname = self\ncaller = exe:%s\noperations = sign decrypt generate delete\n"
		 "labels = mls custom-label\n"
		 "[rule]\nname = cli\ncaller = exe:%s\noperations = generate\n",
		 self, self, self, self, self, cli);
	conf = write_agent_conf("policy.conf", conf_text);
	addr = mkt_dbus_setup();
	pin_script("PIN " PIN "\n");
	pid = start_agent();
	c = bus_open(addr);
	mon = bus_open(addr);
	dbus_bus_add_match(mon, "type='signal',interface='" AGENT_IFACE "'", NULL);
	dbus_connection_flush(mon);
	if (!is(generate("ecdsa-p256", "bob", -2, bob, sizeof(bob)), "") ||
	    !is(generate("dhkem-p256", "plain", -2, plain, sizeof(plain)), ""))
		mkt_bail("cannot generate the test keys: %s %s", name, msg);

	test_executables();
	test_labels(plain);
	test_confirm_always();
	test_confirm_first();
	test_keypackage();
	test_provenance();
	test_always_authenticate();
	test_single_use();
	test_cli();
	test_restart(&pid);

	bus_close(c);
	mkt_ok(mkt_agent_stop(pid) == 0, "the agent stops cleanly");
	return mkt_done();
}
