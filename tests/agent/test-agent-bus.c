/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Every method of org.mlskey.Agent1 through busctl, and every error name through gdbus,
 * against the real mlskeyd on a private bus with SoftHSM tokens. A SignWithLabel made with
 * busctl is verified in OpenSSL against GetPublicKey's bytes and the SignContent built here;
 * a DecryptWithLabel opens what was sealed in software.
 */
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "agent/hpke.h"
#include "agent/mls.h"
#include "tests/agent/agent-test.h"

static const char *addr;
static char addr_arg[512];


static void av_ay(av *a, ay_args *tmp, const uint8_t *p, size_t n)
{
	ay_args_fill(tmp, p, n);
	for (size_t i = 0; tmp->argv[i]; i++)
		av_add(a, tmp->argv[i]);
}

static void av_busctl(av *a, const char *method, const char *sig)
{
	a->n = 0;
	av_add_busctl(a, addr_arg, method, sig);
}

static char method_arg[128];

static void av_gdbus(av *a, const char *method)
{
	a->n = 0;
	av_add_gdbus(a, addr, method, method_arg, sizeof(method_arg));
}

static run_result res;

static bool run_ok(av *a, const char *what)
{
	run_argv((char *const *)a->v, &res);
	if (res.status != 0)
		mkt_diag("%s: status %d: %s", what, res.status, res.err);
	return mkt_ok(res.status == 0, "%s", what);
}

/* A gdbus call that must fail with org.mlskey.Error.<name>; prints the message. */
static void expect_error(av *a, const char *name, const char *what)
{
	char full[128];

	snprintf(full, sizeof(full), "org.mlskey.Error.%s", name);
	run_argv((char *const *)a->v, &res);
	mkt_diag("%s", res.err[0] ? res.err : res.out);
	mkt_ok(res.status != 0 && !strcmp(gdbus_error_name(&res), full), "%s -> %s (got %s)",
	       what, name, gdbus_error_name(&res)[0] ? gdbus_error_name(&res) : "no error");
}

/* Verifies an ECDSA P-256 DER signature over msg in OpenSSL. */
static bool openssl_verify_p256(const mk_bytes *pub, const mk_bytes *msg, const mk_bytes *sig)
{
	OSSL_PARAM params[] = {
		OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)"prime256v1", 0),
		OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, pub->data, pub->len),
		OSSL_PARAM_END,
	};
	EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	EVP_PKEY *pkey = NULL;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	bool ok = false;

	if (pc && md && EVP_PKEY_fromdata_init(pc) == 1 &&
	    EVP_PKEY_fromdata(pc, &pkey, EVP_PKEY_PUBLIC_KEY, params) == 1 &&
	    EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pkey) == 1)
		ok = EVP_DigestVerify(md, sig->data, sig->len, msg->data, msg->len) == 1;
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(pkey);
	EVP_PKEY_CTX_free(pc);
	return ok;
}

/* Sets CKF_USER_PIN_LOCKED in the SoftHSM token file of the token labelled label. SoftHSM
 * never locks a PIN by itself (it only sets COUNT_LOW), so this is how a test gets a token
 * that reports a locked PIN, as a card would. Call before the module is loaded. */
static bool softhsm_mark_pin_locked(const char *label)
{
	static const uint8_t tag[16] = { 0, 0, 0, 0, 0x80, 0, 0x53, 0x4b, 0, 0, 0, 0, 0, 0, 0, 2 };
	char padded[33], cmd[1024];
	run_result *r = malloc(sizeof(*r));
	bool done = false;

	memset(padded, ' ', 32);
	memcpy(padded, label, strlen(label));
	padded[32] = '\0';
	snprintf(cmd, sizeof(cmd), "grep -l -F '%s' %s/tokens/*/token.object", padded,
		 mkt_tmpdir());
	run_list(r, "sh", "-c", cmd, NULL);
	if (r->status == 0) {
		char path[600];
		FILE *f;
		uint8_t buf[4096];
		size_t n;

		snprintf(path, sizeof(path), "%.*s", (int)strcspn(r->out, "\n"), r->out);
		f = fopen(path, "r+b");
		if (f) {
			n = fread(buf, 1, sizeof(buf), f);
			for (size_t i = 0; i + 24 <= n; i++)
				if (!memcmp(buf + i, tag, 16)) {
					buf[i + 16 + 5] |= 0x04; /* 0x40000 in the big-endian u64 */
					fseek(f, 0, SEEK_SET);
					done = fwrite(buf, 1, n, f) == n;
					break;
				}
			fclose(f);
		}
	}
	free(r);
	return done;
}

/* Waits up to 5 s for a signal on the monitor connection. */
static bool wait_signal(DBusConnection *mon, const char *member)
{
	double end = mkt_now() + 5;

	while (mkt_now() < end) {
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

static void test_standard(DBusConnection *c)
{
	DBusMessage *m, *r;
	char name[256], msg[512];
	const char *iface = AGENT_IFACE, *prop = "Version", *xml = NULL;

	/* Version through busctl get-property */
	run_list(&res, "busctl", addr_arg, "get-property", AGENT_NAME, AGENT_PATH, AGENT_IFACE,
		 "Version", NULL);
	mkt_ok(res.status == 0 && strstr(res.out, "s \"0."), "Version property: %s", res.out);

	/* Introspection: the installed XML's methods, plus the standard interfaces */
	run_list(&res, "busctl", addr_arg, "introspect", "--xml-interface", AGENT_NAME,
		 AGENT_PATH, NULL);
	mkt_ok(res.status == 0 && strstr(res.out, "<method name=\"HpkeOpen\">") &&
		       strstr(res.out, "<signal name=\"KeysChanged\"/>") &&
		       strstr(res.out, "org.freedesktop.DBus.Properties") &&
		       strstr(res.out, "<arg name=\"kem_output\" type=\"ay\" direction=\"in\"/>"),
	       "Introspect returns the interface XML");
	run_list(&res, "busctl", addr_arg, "tree", AGENT_NAME, NULL);
	mkt_ok(res.status == 0 && strstr(res.out, "/org/mlskey/Agent1"),
	       "busctl tree finds /org/mlskey/Agent1");

	m = dbus_message_new_method_call(AGENT_NAME, AGENT_PATH, DBUS_INTERFACE_PROPERTIES, "Get");
	dbus_message_append_args(m, DBUS_TYPE_STRING, &iface, DBUS_TYPE_STRING, &prop,
				 DBUS_TYPE_INVALID);
	r = agent_send(c, m, 10000, NULL, 0, NULL, 0);
	mkt_ok(r != NULL, "Properties.Get Version");
	if (r)
		dbus_message_unref(r);
	m = dbus_message_new_method_call(AGENT_NAME, AGENT_PATH, DBUS_INTERFACE_PROPERTIES,
					 "GetAll");
	dbus_message_append_args(m, DBUS_TYPE_STRING, &iface, DBUS_TYPE_INVALID);
	r = agent_send(c, m, 10000, NULL, 0, NULL, 0);
	mkt_ok(r && dbus_message_has_signature(r, "a{sv}"), "Properties.GetAll");
	if (r)
		dbus_message_unref(r);

	prop = "Colour";
	m = dbus_message_new_method_call(AGENT_NAME, AGENT_PATH, DBUS_INTERFACE_PROPERTIES, "Get");
	dbus_message_append_args(m, DBUS_TYPE_STRING, &iface, DBUS_TYPE_STRING, &prop,
				 DBUS_TYPE_INVALID);
	r = agent_send(c, m, 10000, name, sizeof(name), msg, sizeof(msg));
	mkt_ok(!r && !strcmp(name, DBUS_ERROR_UNKNOWN_PROPERTY), "unknown property -> %s", name);

	m = dbus_message_new_method_call(AGENT_NAME, AGENT_PATH, DBUS_INTERFACE_PROPERTIES, "Set");
	{
		DBusMessageIter it, v;
		const char *val = "9.9";

		prop = "Version";
		dbus_message_append_args(m, DBUS_TYPE_STRING, &iface, DBUS_TYPE_STRING, &prop,
					 DBUS_TYPE_INVALID);
		dbus_message_iter_init_append(m, &it);
		dbus_message_iter_open_container(&it, DBUS_TYPE_VARIANT, "s", &v);
		dbus_message_iter_append_basic(&v, DBUS_TYPE_STRING, &val);
		dbus_message_iter_close_container(&it, &v);
	}
	r = agent_send(c, m, 10000, name, sizeof(name), msg, sizeof(msg));
	mkt_ok(!r && !strcmp(name, DBUS_ERROR_PROPERTY_READ_ONLY), "Set Version -> %s", name);

	r = agent_send(c, agent_call_new("Frobnicate"), 10000, name, sizeof(name), msg,
		       sizeof(msg));
	mkt_ok(!r && !strcmp(name, DBUS_ERROR_UNKNOWN_METHOD), "unknown method -> %s (%s)", name,
	       msg);
	m = dbus_message_new_method_call(AGENT_NAME, AGENT_PATH, "org.example.Nope", "ListKeys");
	r = agent_send(c, m, 10000, name, sizeof(name), msg, sizeof(msg));
	mkt_ok(!r && !strcmp(name, DBUS_ERROR_UNKNOWN_INTERFACE), "unknown interface -> %s",
	       name);
	m = dbus_message_new_method_call(AGENT_NAME, "/org/mlskey/Nope", AGENT_IFACE, "ListKeys");
	r = agent_send(c, m, 10000, name, sizeof(name), msg, sizeof(msg));
	mkt_ok(!r && !strcmp(name, DBUS_ERROR_UNKNOWN_OBJECT), "unknown object -> %s", name);
	m = dbus_message_new_method_call(AGENT_NAME, AGENT_PATH, DBUS_INTERFACE_PEER, "Ping");
	r = agent_send(c, m, 10000, NULL, 0, NULL, 0);
	mkt_ok(r != NULL, "Peer.Ping");
	if (r)
		dbus_message_unref(r);
	m = dbus_message_new_method_call(AGENT_NAME, AGENT_PATH, DBUS_INTERFACE_INTROSPECTABLE,
					 "Introspect");
	r = agent_send(c, m, 10000, NULL, 0, NULL, 0);
	mkt_ok(r && dbus_message_get_args(r, NULL, DBUS_TYPE_STRING, &xml, DBUS_TYPE_INVALID) &&
		       strstr(xml, "DecryptWithLabel"),
	       "Introspect over libdbus");
	if (r)
		dbus_message_unref(r);
}

int main(void)
{
	_cleanup_bytes_ mk_bytes pub = MK_BYTES_NULL, sig = MK_BYTES_NULL, sc = MK_BYTES_NULL,
				 hpub = MK_BYTES_NULL, kem = MK_BYTES_NULL, ct = MK_BYTES_NULL,
				 pt = MK_BYTES_NULL, epub = MK_BYTES_NULL, xpub = MK_BYTES_NULL;
	static const uint8_t content[] = "an MLS LeafNodeTBS, more or less";
	static const uint8_t context[] = "the group context";
	static const uint8_t secret[] = "the welcome secret: 32 bytes!!!";
	char sig_key[1024], hpke_key[1024], ed_key[1024], x_key[1024], spare_key[1024];
	const char *args[3];
	char *lbl256, *gv, *gv2, *gv3, *gv4;
	DBusConnection *c, *mon;
	ay_args t1, t2, t3, t4;
	bool locked_marked;
	av a;
	pid_t pid;
	int n0, status;

	mkt_softhsm_setup();
	mkt_softhsm_add_token("alice");
	mkt_softhsm_add_token("spare");
	mkt_softhsm_add_token("locked");
	locked_marked = softhsm_mark_pin_locked("locked");
	addr = mkt_dbus_setup();
	snprintf(addr_arg, sizeof(addr_arg), "--address=%s", addr);
	mkt_pinentry_log_path();
	mkt_pinentry_control("");
	run_list(&res, "gdbus", "help", NULL);
	if (res.status < 0)
		mkt_skip_all("gdbus not installed (apt-get install libglib2.0-bin)");
	run_list(&res, "busctl", "--version", NULL);
	if (res.status != 0)
		mkt_skip_all("busctl not installed (it comes with systemd)");

	/* HpkeOpen and labels outside RFC 9420 are tested here: the policy lets them through */
	args[0] = "--config";
	args[1] = write_agent_conf("bus.conf", MKT_RULE_OPEN);
	args[2] = NULL;
	pid = mkt_agent_start(args);
	c = bus_open(addr);
	mon = bus_open(addr);
	dbus_bus_add_match(mon, "type='signal',interface='org.mlskey.Agent1'", NULL);
	dbus_connection_flush(mon);

	test_standard(c);

	/* ListTokens */
	av_busctl(&a, "ListTokens", NULL);
	if (run_ok(&a, "busctl ListTokens"))
		mkt_ok(strstr(res.out, "token=alice\"") && strstr(res.out, "token=spare\"") &&
			       strstr(res.out, "\"pin_locked\" b") &&
			       strstr(res.out, "\"logged_in\" b false"),
		       "  lists both tokens with their flags, not logged in");

	/* GenerateKey: asks the PIN once, naming the token, the caller and the operation */
	n0 = mkt_pinentry_getpins();
	av_busctl(&a, "GenerateKey", "ssssa{sv}");
	av_add(&a, "pkcs11:token=alice");
	av_add(&a, "signature");
	av_add(&a, "ecdsa-p256");
	av_add(&a, "busctl-p256");
	av_add(&a, "0");
	if (!run_ok(&a, "busctl GenerateKey ecdsa-p256"))
		mkt_bail("cannot go on without a key");
	busctl_parse_s(res.out, sig_key, sizeof(sig_key));
	mkt_ok(strstr(sig_key, "object=busctl-p256") && strstr(sig_key, "type=private"),
	       "  returns the key URI: %s", sig_key);
	mkt_ok(mkt_pinentry_getpins() == n0 + 1, "  one PIN dialog (%d)", mkt_pinentry_getpins() - n0);
	mkt_ok(strstr(pin_last_desc(), "token \"alice\"") && strstr(pin_last_desc(), "serial ") &&
		       strstr(pin_last_desc(), "busctl (pid ") &&
		       strstr(pin_last_desc(), "generate a new ecdsa-p256 key"),
	       "  the dialog names the token, the caller and the operation: %s", pin_last_desc());
	mkt_ok(wait_signal(mon, "KeysChanged"), "  KeysChanged is emitted");

	/* GetPublicKey + SignWithLabel with busctl, verified in OpenSSL */
	av_busctl(&a, "GetPublicKey", "s");
	av_add(&a, sig_key);
	if (run_ok(&a, "busctl GetPublicKey"))
		mkt_ok(busctl_parse_ay(res.out, &pub) == 0 && pub.len == 65 && pub.data[0] == 4,
		       "  a 65-byte uncompressed P-256 point");
	av_busctl(&a, "SignWithLabel", "sqsay");
	av_add(&a, sig_key);
	av_add(&a, "2");
	av_add(&a, "LeafNodeTBS");
	av_ay(&a, &t1, content, sizeof(content));
	if (run_ok(&a, "busctl SignWithLabel suite 2"))
		busctl_parse_ay(res.out, &sig);
	mkt_ok_r(mk_mls_labeled_content("LeafNodeTBS", content, sizeof(content), &sc),
		 "SignContent built here");
	mkt_ok(sig.len >= 8 && sig.data[0] == 0x30 && openssl_verify_p256(&pub, &sc, &sig),
	       "the busctl signature verifies in OpenSSL (%zu-byte DER)", sig.len);
	sc.data[sc.len - 1] ^= 1;
	mkt_ok(!openssl_verify_p256(&pub, &sc, &sig), "  and not over other content");
	sc.data[sc.len - 1] ^= 1;
	mkt_ok(mk_mls_verify_with_label(2, pub.data, pub.len, "LeafNodeTBS", content,
					sizeof(content), sig.data, sig.len) == 0,
	       "  and with mk_mls_verify_with_label");

	/* HPKE P-256: DecryptWithLabel and HpkeOpen with busctl */
	av_busctl(&a, "GenerateKey", "ssssa{sv}");
	av_add(&a, "pkcs11:token=alice");
	av_add(&a, "hpke");
	av_add(&a, "dhkem-p256");
	av_add(&a, "busctl-hpke");
	av_add(&a, "0");
	if (!run_ok(&a, "busctl GenerateKey dhkem-p256"))
		mkt_bail("cannot go on without an HPKE key");
	busctl_parse_s(res.out, hpke_key, sizeof(hpke_key));
	mkt_ok(mkt_pinentry_getpins() == n0 + 1, "  no second PIN dialog while logged in");
	mkt_ok_r(agent_public_key(c, hpke_key, &hpub), "its public key");
	mkt_ok_r(mk_mls_encrypt_with_label(2, hpub.data, hpub.len, "Welcome", context,
					   sizeof(context), secret, sizeof(secret), &kem, &ct),
		 "sealed in software to it (EncryptWithLabel)");
	av_busctl(&a, "DecryptWithLabel", "sqsayayay");
	av_add(&a, hpke_key);
	av_add(&a, "2");
	av_add(&a, "Welcome");
	av_ay(&a, &t1, context, sizeof(context));
	av_ay(&a, &t2, kem.data, kem.len);
	av_ay(&a, &t3, ct.data, ct.len);
	if (run_ok(&a, "busctl DecryptWithLabel"))
		mkt_ok(busctl_parse_ay(res.out, &pt) == 0 && pt.len == sizeof(secret) &&
			       !memcmp(pt.data, secret, pt.len),
		       "  returns the plaintext");
	mk_bytes_clear(&pt);
	{
		mk_hpke_suite hs = { MK_HPKE_KEM_P256, MK_HPKE_KDF_SHA384,
				     MK_HPKE_AEAD_CHACHA20POLY1305 };
		_cleanup_bytes_ mk_bytes enc = MK_BYTES_NULL, hct = MK_BYTES_NULL;
		static const uint8_t info[] = "info", aad[] = "aad";

		mkt_ok_r(mk_hpke_seal_base(hs, hpub.data, hpub.len, info, sizeof(info), aad,
					   sizeof(aad), secret, sizeof(secret), NULL, 0, &enc, &hct),
			 "HPKE SealBase P-256/SHA384/ChaCha20 in software");
		av_busctl(&a, "HpkeOpen", "sqqayayayay");
		av_add(&a, hpke_key);
		av_add(&a, "2");
		av_add(&a, "3");
		av_ay(&a, &t1, info, sizeof(info));
		av_ay(&a, &t2, aad, sizeof(aad));
		av_ay(&a, &t3, enc.data, enc.len);
		av_ay(&a, &t4, hct.data, hct.len);
		if (run_ok(&a, "busctl HpkeOpen kdf 2 aead 3"))
			mkt_ok(busctl_parse_ay(res.out, &pt) == 0 && pt.len == sizeof(secret) &&
				       !memcmp(pt.data, secret, pt.len),
			       "  returns the plaintext");
		mk_bytes_clear(&pt);
	}

	/* Ed25519 and X25519 (suites 1 and 3) */
	if (agent_generate(c, "pkcs11:token=alice", "signature", "ed25519", "ed", ed_key,
			   sizeof(ed_key)) == 0 &&
	    agent_public_key(c, ed_key, &epub) == 0) {
		av_busctl(&a, "SignWithLabel", "sqsay");
		av_add(&a, ed_key);
		av_add(&a, "3");
		av_add(&a, "LeafNodeTBS");
		av_ay(&a, &t1, content, sizeof(content));
		mk_bytes_clear(&sig);
		if (run_ok(&a, "busctl SignWithLabel ed25519 suite 3"))
			busctl_parse_ay(res.out, &sig);
		mkt_ok(sig.len == 64 && mk_mls_verify_with_label(3, epub.data, epub.len,
								 "LeafNodeTBS", content,
								 sizeof(content), sig.data,
								 sig.len) == 0,
		       "  a 64-byte Ed25519 signature that verifies");
	} else {
		mkt_ok(false, "GenerateKey ed25519");
	}
	if (agent_generate(c, "pkcs11:token=alice", "hpke", "dhkem-x25519", "x", x_key,
			   sizeof(x_key)) == 0 &&
	    agent_public_key(c, x_key, &xpub) == 0) {
		char en[256] = "";

		mk_bytes_clear(&kem);
		mk_bytes_clear(&ct);
		mk_bytes_clear(&pt);
		mk_mls_encrypt_with_label(3, xpub.data, xpub.len, "Welcome", context,
					  sizeof(context), secret, sizeof(secret), &kem, &ct);
		{
			mk_bytes ctxb = { (uint8_t *)context, sizeof(context) };

			mkt_ok(agent_decrypt(c, x_key, 3, "Welcome", &ctxb, &kem, &ct, &pt, en,
					     sizeof(en)) == 0 &&
				       pt.len == sizeof(secret) && !memcmp(pt.data, secret, pt.len),
			       "X25519 DecryptWithLabel suite 3 %s", en);
		}
	} else {
		mkt_ok(false, "GenerateKey dhkem-x25519");
	}

	/* ListKeys with busctl */
	av_busctl(&a, "ListKeys", NULL);
	if (run_ok(&a, "busctl ListKeys"))
		mkt_ok(strstr(res.out, "object=busctl-p256") && strstr(res.out, "object=ed") &&
			       strstr(res.out, "\"cipher_suites\" aq 2 1 3") &&
			       strstr(res.out, "\"cipher_suites\" aq 1 2") &&
			       strstr(res.out, "\"purpose\" s \"hpke\"") &&
			       strstr(res.out, "\"never_extractable\" b true") &&
			       strstr(res.out, "\"usable\" b true"),
		       "  lists the keys with purpose, suites and provenance");

	/* Lock: the next operation asks for the PIN again */
	n0 = mkt_pinentry_getpins();
	av_busctl(&a, "Lock", "s");
	av_add(&a, "");
	run_ok(&a, "busctl Lock \"\"");
	mk_bytes_clear(&sig);
	mkt_ok(agent_sign(c, sig_key, 2, "x", content, 4, &sig, NULL, 0) == 0 &&
		       mkt_pinentry_getpins() == n0 + 1,
	       "after Lock, signing asks for the PIN again (%d dialog)", mkt_pinentry_getpins() - n0);
	av_busctl(&a, "Lock", "s");
	av_add(&a, "pkcs11:token=alice");
	run_ok(&a, "busctl Lock pkcs11:token=alice");

	/* --- every error name, through gdbus ------------------------------------------------ */
	gv = gvariant_ay(content, 4);
	av_gdbus(&a, "SignWithLabel");
	av_add(&a, "pkcs11:token=alice;object=nonesuch;type=private");
	av_add(&a, "2");
	av_add(&a, "x");
	av_add(&a, gv);
	expect_error(&a, "NoSuchKey", "a key that does not exist");

	av_gdbus(&a, "GenerateKey");
	av_add(&a, "pkcs11:token=nonesuch");
	av_add(&a, "signature");
	av_add(&a, "ecdsa-p256");
	av_add(&a, "k");
	av_add(&a, "@a{sv} {}");
	expect_error(&a, "NoSuchToken", "a token that does not exist");

	av_gdbus(&a, "SignWithLabel");
	av_add(&a, ed_key);
	av_add(&a, "2");
	av_add(&a, "x");
	av_add(&a, gv);
	expect_error(&a, "Unsupported", "an ed25519 key with suite 2");
	mkt_ok(strstr(res.err, "ed25519") && strstr(res.err, "ecdsa-p256"),
	       "  the message names both algorithms");

	av_gdbus(&a, "SignWithLabel");
	av_add(&a, "not-a-uri");
	av_add(&a, "2");
	av_add(&a, "x");
	av_add(&a, gv);
	expect_error(&a, "InvalidInput", "a key URI that is no pkcs11: URI");
	lbl256 = malloc(257);
	memset(lbl256, 'L', 256);
	lbl256[256] = '\0';
	av_gdbus(&a, "SignWithLabel");
	av_add(&a, sig_key);
	av_add(&a, "2");
	av_add(&a, lbl256);
	av_add(&a, gv);
	expect_error(&a, "InvalidInput", "a 256-byte label");
	free(lbl256);
	av_gdbus(&a, "GenerateKey");
	av_add(&a, "pkcs11:token=alice");
	av_add(&a, "signature");
	av_add(&a, "rsa-2048");
	av_add(&a, "k");
	av_add(&a, "@a{sv} {}");
	expect_error(&a, "InvalidInput", "an unknown algorithm");
	av_gdbus(&a, "GenerateKey");
	av_add(&a, "pkcs11:token=alice");
	av_add(&a, "signature");
	av_add(&a, "ecdsa-p256");
	av_add(&a, "k");
	av_add(&a, "{'extractable': <true>}");
	expect_error(&a, "InvalidInput", "an unknown GenerateKey option");

	ct.data[ct.len - 1] ^= 0x01; /* tamper with the X25519 ciphertext's tag */
	gv2 = gvariant_ay(context, sizeof(context));
	gv3 = gvariant_ay(kem.data, kem.len);
	gv4 = gvariant_ay(ct.data, ct.len);
	av_gdbus(&a, "DecryptWithLabel");
	av_add(&a, x_key);
	av_add(&a, "3");
	av_add(&a, "Welcome");
	av_add(&a, gv2);
	av_add(&a, gv3);
	av_add(&a, gv4);
	n0 = mkt_pinentry_getpins();
	expect_error(&a, "DecryptFailed", "a tampered ciphertext");
	mkt_ok(!strstr(res.out, "0x"), "  and no plaintext");

	/* PinIncorrect: logged out, the pinentry answers a wrong PIN each time it is asked:
	 * pin-attempts (3) dialogs, one C_Login each, never a PIN tried twice */
	mkt_ok(agent_lock(c, "") == 0, "Lock every token");
	mkt_pinentry_control("MKT_PINENTRY_PIN=000000\n");
	av_gdbus(&a, "SignWithLabel");
	av_add(&a, sig_key);
	av_add(&a, "2");
	av_add(&a, "x");
	av_add(&a, gv);
	n0 = mkt_pinentry_getpins();
	expect_error(&a, "PinIncorrect", "a wrong PIN from the pinentry");
	mkt_ok(mkt_pinentry_getpins() == n0 + 3, "  asked three times (pin-attempts), then given up (%d)",
	       mkt_pinentry_getpins() - n0);
	expect_error(&a, "PinIncorrect", "a wrong PIN again");
	mkt_ok(strstr(res.err, "few tries are left"),
	       "  the token now says its count is low, and the message says so");

	mkt_pinentry_control("MKT_PINENTRY_CANCEL=1\n");
	expect_error(&a, "Cancelled", "the person cancels the PIN dialog");
	mkt_pinentry_control("");

	/* PinLocked: a token whose flags say the PIN is locked is not even asked */
	if (locked_marked) {
		n0 = mkt_pinentry_getpins();
		av_gdbus(&a, "GenerateKey");
		av_add(&a, "pkcs11:token=locked");
		av_add(&a, "signature");
		av_add(&a, "ecdsa-p256");
		av_add(&a, "k");
		av_add(&a, "@a{sv} {}");
		expect_error(&a, "PinLocked", "a token with a locked PIN");
		mkt_ok(mkt_pinentry_getpins() == n0, "  without a PIN dialog");
	} else {
		mkt_diag("could not mark the SoftHSM token's PIN locked; PinLocked is only checked "
			 "at the unit level (test-agent-check)");
	}

	/* TokenAbsent: a key found and used, then its token goes away */
	if (agent_generate(c, "pkcs11:token=spare", "signature", "ecdsa-p256", "gone",
			   spare_key, sizeof(spare_key)) == 0) {
		mk_bytes_clear(&sig);
		mkt_ok(agent_sign(c, spare_key, 2, "x", content, 4, &sig, NULL, 0) == 0,
		       "a key on token spare signs");
		mkt_softhsm_delete_token("spare");
		av_gdbus(&a, "SignWithLabel");
		av_add(&a, spare_key);
		av_add(&a, "2");
		av_add(&a, "x");
		av_add(&a, gv);
		expect_error(&a, "TokenAbsent", "its token was deleted");
		mkt_ok(wait_signal(mon, "TokensChanged"), "  TokensChanged is emitted");
	} else {
		mkt_ok(false, "GenerateKey on token spare");
	}

	/* AccessDenied: another user on the same bus */
	run_list(&res, "setpriv", "--version", NULL);
	if (res.status == 0 && geteuid() == 0) {
		char sock[600];

		chmod(mkt_tmpdir(), 0711);
		snprintf(sock, sizeof(sock), "%s/bus", mkt_tmpdir());
		chmod(sock, 0777);
		av_gdbus(&a, "SignWithLabel");
		memmove(a.v + 5, a.v, (a.n + 1) * sizeof(a.v[0]));
		a.v[0] = "setpriv";
		a.v[1] = "--reuid=65534";
		a.v[2] = "--regid=65534";
		a.v[3] = "--clear-groups";
		a.v[4] = "--";
		a.n += 5;
		av_add(&a, sig_key);
		av_add(&a, "2");
		av_add(&a, "x");
		av_add(&a, gv);
		expect_error(&a, "AccessDenied", "a call from user nobody");
		mkt_ok(strstr(res.err, "user 65534") != NULL, "  the message names the user");
		/* the caller is checked before the arguments: a malformed call learns nothing */
		run_list(&res, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
			 "busctl", addr_arg, "call", AGENT_NAME, AGENT_PATH, AGENT_IFACE,
			 "SignWithLabel", "s", "x", NULL);
		mkt_ok(res.status != 0 && strstr(res.err, "may not use the mlskey agent"),
		       "a malformed call from user nobody is also AccessDenied: %s", res.err);
		chmod(mkt_tmpdir(), 0700);
	} else {
		mkt_diag("not root or no setpriv: AccessDenied is not provoked here");
	}

	/* DeleteKey with busctl; then the key is gone */
	av_busctl(&a, "DeleteKey", "s");
	av_add(&a, sig_key);
	run_ok(&a, "busctl DeleteKey");
	mkt_ok(wait_signal(mon, "KeysChanged"), "  KeysChanged is emitted");
	av_gdbus(&a, "GetPublicKey");
	av_add(&a, sig_key);
	expect_error(&a, "NoSuchKey", "GetPublicKey of the deleted key");

	/* the agent still serves, and stops cleanly */
	mk_bytes_clear(&sig);
	mkt_ok(agent_sign(c, ed_key, 1, "x", content, 4, &sig, NULL, 0) == 0,
	       "after all that, a valid call succeeds");
	free(gv);
	free(gv2);
	free(gv3);
	free(gv4);
	bus_close(c);
	bus_close(mon);
	status = mkt_agent_stop(pid);
	mkt_ok(status == 0, "mlskeyd stops on SIGTERM with status 0 (%d)", status);
	return mkt_done();
}
