/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Malformed calls get the right error name, before any work starts (no PIN dialog, no
 * token), and the agent then serves a valid call as before: wrong signatures, arrays over
 * the configured cap (max-array-bytes=1024 here), unknown and malformed URIs, invalid points
 * as KEM output, unknown and unsupported suites.
 */
#include "agent/mls.h"
#include "tests/agent/agent-test.h"

static DBusConnection *c;
static char sig_key[1024], hpke_key[1024], x_key[1024];
static mk_bytes hpub;
static const uint8_t content[] = "content";

/* A valid SignWithLabel must succeed after each malformed call. */
static void valid_call_works(const char *after)
{
	_cleanup_bytes_ mk_bytes sig = MK_BYTES_NULL;
	char name[256] = "";

	mkt_ok(agent_sign(c, sig_key, 2, "ok", content, sizeof(content), &sig, name,
			  sizeof(name)) == 0 &&
		       sig.len > 8,
	       "  after %s, a valid SignWithLabel succeeds %s", after, name);
}

/* A SignWithLabel that must succeed. */
static bool sign_ok(const char *label, const uint8_t *p, size_t n)
{
	_cleanup_bytes_ mk_bytes sig = MK_BYTES_NULL;

	return agent_sign(c, sig_key, 2, label, p, n, &sig, NULL, 0) == 0 && sig.len > 8;
}

/* Sends m, expects error `want` (a full name); prints the message. */
static void expect(DBusMessage *m, const char *want, const char *what)
{
	char name[256], msg[1024];
	DBusMessage *r = agent_send(c, m, 30000, name, sizeof(name), msg, sizeof(msg));

	if (r)
		dbus_message_unref(r);
	mkt_diag("%s: %s", name, msg);
	mkt_ok(!r && !strcmp(name, want), "%s -> %s (got %s)", what, want, r ? "a reply" : name);
}

#define INVALID "org.mlskey.Error.InvalidInput"
#define UNSUPPORTED "org.mlskey.Error.Unsupported"

static DBusMessage *sign_msg(const char *key, uint16_t suite, const char *label,
			     const uint8_t *p, size_t n)
{
	DBusMessage *m = agent_call_new("SignWithLabel");

	dbus_message_append_args(m, DBUS_TYPE_STRING, &key, DBUS_TYPE_UINT16, &suite,
				 DBUS_TYPE_STRING, &label, DBUS_TYPE_INVALID);
	append_ay(m, p, n);
	return m;
}

static DBusMessage *decrypt_msg(const char *key, uint16_t suite, const uint8_t *ctx,
				size_t ctx_n, const uint8_t *kem, size_t kem_n, const uint8_t *ct,
				size_t ct_n)
{
	DBusMessage *m = agent_call_new("DecryptWithLabel");
	const char *label = "Welcome";

	dbus_message_append_args(m, DBUS_TYPE_STRING, &key, DBUS_TYPE_UINT16, &suite,
				 DBUS_TYPE_STRING, &label, DBUS_TYPE_INVALID);
	append_ay(m, ctx, ctx_n);
	append_ay(m, kem, kem_n);
	append_ay(m, ct, ct_n);
	return m;
}

static DBusMessage *hpke_msg(const char *key, uint16_t kdf, uint16_t aead, const uint8_t *enc,
			     size_t enc_n)
{
	DBusMessage *m = agent_call_new("HpkeOpen");

	dbus_message_append_args(m, DBUS_TYPE_STRING, &key, DBUS_TYPE_UINT16, &kdf,
				 DBUS_TYPE_UINT16, &aead, DBUS_TYPE_INVALID);
	append_ay(m, NULL, 0);
	append_ay(m, NULL, 0);
	append_ay(m, enc, enc_n);
	append_ay(m, content, sizeof(content));
	return m;
}

static void test_signatures(void)
{
	DBusMessage *m;
	const char *s = sig_key;
	dbus_uint16_t q = 2;
	dbus_uint32_t u = 2;
	char name[256], msg[1024];

	m = agent_call_new("SignWithLabel");
	dbus_message_append_args(m, DBUS_TYPE_STRING, &s, DBUS_TYPE_INVALID);
	{
		DBusMessage *r = agent_send(c, m, 30000, name, sizeof(name), msg, sizeof(msg));

		if (r)
			dbus_message_unref(r);
		mkt_ok(!r && !strcmp(name, INVALID), "SignWithLabel with (s) only -> InvalidInput");
		mkt_ok(strstr(msg, "(sqsay)") && strstr(msg, "not (s)"),
		       "  the message gives the right signature: %s", msg);
	}
	valid_call_works("(s)");

	m = agent_call_new("SignWithLabel");
	dbus_message_append_args(m, DBUS_TYPE_STRING, &s, DBUS_TYPE_UINT32, &u, DBUS_TYPE_STRING,
				 &s, DBUS_TYPE_INVALID);
	append_ay(m, content, sizeof(content));
	expect(m, INVALID, "SignWithLabel with a u for the suite (susay)");
	m = sign_msg(sig_key, 2, "x", content, sizeof(content));
	dbus_message_append_args(m, DBUS_TYPE_STRING, &s, DBUS_TYPE_INVALID);
	expect(m, INVALID, "SignWithLabel with an extra argument (sqsays)");
	m = agent_call_new("SignWithLabel");
	dbus_message_append_args(m, DBUS_TYPE_STRING, &s, DBUS_TYPE_UINT16, &q, DBUS_TYPE_STRING,
				 &s, DBUS_TYPE_INVALID);
	expect(m, INVALID, "SignWithLabel without content (sqs)");
	expect(agent_call_new("DecryptWithLabel"), INVALID, "DecryptWithLabel with no arguments");
	m = agent_call_new("GenerateKey");
	dbus_message_append_args(m, DBUS_TYPE_STRING, &s, DBUS_TYPE_STRING, &s, DBUS_TYPE_STRING,
				 &s, DBUS_TYPE_STRING, &s, DBUS_TYPE_INVALID);
	expect(m, INVALID, "GenerateKey without options (ssss)");
	m = agent_call_new("ListKeys");
	dbus_message_append_args(m, DBUS_TYPE_STRING, &s, DBUS_TYPE_INVALID);
	expect(m, INVALID, "ListKeys with an argument");
	m = agent_call_new("HpkeOpen");
	dbus_message_append_args(m, DBUS_TYPE_STRING, &s, DBUS_TYPE_UINT16, &q, DBUS_TYPE_INVALID);
	expect(m, INVALID, "HpkeOpen with (sq)");
	valid_call_works("wrong signatures");
}

static void test_sizes(void)
{
	uint8_t *big = calloc(1, 2048);

	mkt_ok(sign_ok("x", big, 1024),
	       "1024 bytes of content, at the cap, are signed");
	expect(sign_msg(sig_key, 2, "x", big, 2048), INVALID,
	       "2048 bytes of content with max-array-bytes=1024");
	valid_call_works("an oversized content");
	expect(decrypt_msg(hpke_key, 2, big, 2048, hpub.data, hpub.len, content, sizeof(content)),
	       INVALID, "a 2048-byte context");
	expect(decrypt_msg(hpke_key, 2, NULL, 0, hpub.data, hpub.len, big, 2048), INVALID,
	       "a 2048-byte ciphertext");
	expect(decrypt_msg(hpke_key, 2, NULL, 0, big, 2048, content, sizeof(content)), INVALID,
	       "a 2048-byte kem_output");
	expect(hpke_msg(hpke_key, 1, 1, big, 2048), INVALID, "a 2048-byte enc");
	valid_call_works("oversized arrays");
	free(big);
}

static void test_uris(void)
{
	char *long_uri = malloc(5001);

	expect(sign_msg("pkcs11:token=alice;object=nonesuch;type=private", 2, "x", content, 3),
	       "org.mlskey.Error.NoSuchKey", "a key that does not exist");
	expect(sign_msg("pkcs11:token=nonesuch;object=k;type=private", 2, "x", content, 3),
	       "org.mlskey.Error.NoSuchToken", "a key on a token that does not exist");
	expect(sign_msg("garbage", 2, "x", content, 3), INVALID, "\"garbage\" as key URI");
	expect(sign_msg("", 2, "x", content, 3), INVALID, "an empty key URI");
	expect(sign_msg("pkcs11:object=%zz", 2, "x", content, 3), INVALID, "a bad escape");
	expect(sign_msg("pkcs11:token=alice", 2, "x", content, 3), INVALID,
	       "a token URI where a key is wanted");
	memset(long_uri, 'a', 5000);
	memcpy(long_uri, "pkcs11:object=", 14);
	long_uri[5000] = '\0';
	expect(sign_msg(long_uri, 2, "x", content, 3), INVALID, "a 5000-byte URI");
	{
		DBusMessage *m = agent_call_new("Lock");
		const char *t = "pkcs11:token=alice;object=x";

		dbus_message_append_args(m, DBUS_TYPE_STRING, &t, DBUS_TYPE_INVALID);
		expect(m, INVALID, "Lock with a key URI");
	}
	valid_call_works("unknown URIs");
	free(long_uri);
}

static void test_points(void)
{
	uint8_t p[133];

	memcpy(p, hpub.data, 65);
	p[64] ^= 1;
	expect(decrypt_msg(hpke_key, 2, NULL, 0, p, 65, content, sizeof(content)), INVALID,
	       "a P-256 kem_output off the curve");
	memset(p, 0, sizeof(p));
	p[0] = 4;
	expect(decrypt_msg(hpke_key, 2, NULL, 0, p, 65, content, sizeof(content)), INVALID,
	       "04 || zeros");
	expect(decrypt_msg(hpke_key, 2, NULL, 0, p, 1, content, sizeof(content)), INVALID,
	       "a lone 0x00 (the point at infinity)");
	memcpy(p, hpub.data, 33);
	p[0] = 2;
	expect(decrypt_msg(hpke_key, 2, NULL, 0, p, 33, content, sizeof(content)), INVALID,
	       "a compressed point");
	expect(decrypt_msg(hpke_key, 2, NULL, 0, hpub.data, 64, content, sizeof(content)),
	       INVALID, "64 bytes for P-256");
	expect(decrypt_msg(x_key, 1, NULL, 0, p, 31, content, sizeof(content)), INVALID,
	       "31 bytes for X25519");
	memset(p, 0, 64);
	/* a ciphertext long enough to hold a tag: the point is what fails */
	expect(decrypt_msg(x_key, 1, NULL, 0, p, 32, p + 32, 32), INVALID,
	       "the X25519 point 0 (small order)");
	memcpy(p, hpub.data, 65);
	p[64] ^= 1;
	expect(hpke_msg(hpke_key, 1, 1, p, 65), INVALID, "HpkeOpen with an enc off the curve");
	expect(hpke_msg(hpke_key, 1, 1, p, 32), INVALID, "HpkeOpen with a 32-byte enc for P-256");
	valid_call_works("invalid points");
}

static void test_suites(void)
{
	static const struct {
		uint16_t id;
		const char *want;
	} s[] = { { 0, INVALID }, { 4, UNSUPPORTED }, { 6, UNSUPPORTED }, { 99, INVALID },
		  { 0xffff, INVALID } };
	char what[128];

	for (size_t i = 0; i < ELEMENTSOF(s); i++) {
		snprintf(what, sizeof(what), "SignWithLabel with suite %u", s[i].id);
		expect(sign_msg(sig_key, s[i].id, "x", content, 3), s[i].want, what);
		snprintf(what, sizeof(what), "DecryptWithLabel with suite %u", s[i].id);
		expect(decrypt_msg(hpke_key, s[i].id, NULL, 0, hpub.data, hpub.len, content,
				   sizeof(content)),
		       s[i].want, what);
	}
	expect(sign_msg(sig_key, 1, "x", content, 3), UNSUPPORTED,
	       "a P-256 signature key with suite 1 (Ed25519)");
	expect(decrypt_msg(hpke_key, 7, NULL, 0, hpub.data, hpub.len, content, sizeof(content)),
	       INVALID, "a 65-byte kem_output with suite 7 (P-384 wants 97)");
	expect(sign_msg(hpke_key, 2, "x", content, 3), UNSUPPORTED,
	       "an HPKE key asked to sign");
	expect(hpke_msg(hpke_key, 0, 1, hpub.data, hpub.len), INVALID, "HpkeOpen kdf 0");
	expect(hpke_msg(hpke_key, 1, 0xffff, hpub.data, hpub.len), UNSUPPORTED,
	       "HpkeOpen aead 0xFFFF (export-only)");
	expect(hpke_msg(sig_key, 1, 1, hpub.data, hpub.len), UNSUPPORTED,
	       "HpkeOpen with a signature key");
	valid_call_works("unknown suites");
}

static void test_labels(void)
{
	char label[300];

	memset(label, 'l', 256);
	label[256] = '\0';
	expect(sign_msg(sig_key, 2, label, content, 3), INVALID, "a 256-byte label");
	label[255] = '\0';
	mkt_ok(sign_ok(label, content, 3),
	       "a 255-byte label is fine");
	{
		DBusMessage *m = agent_call_new("GenerateKey");
		DBusMessageIter it, d;
		const char *t = "pkcs11:token=alice", *p = "signature", *a = "ecdsa-p256";
		char *lp = label;

		label[255] = 'l';
		dbus_message_append_args(m, DBUS_TYPE_STRING, &t, DBUS_TYPE_STRING, &p,
					 DBUS_TYPE_STRING, &a, DBUS_TYPE_STRING, &lp,
					 DBUS_TYPE_INVALID);
		dbus_message_iter_init_append(m, &it);
		dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "{sv}", &d);
		dbus_message_iter_close_container(&it, &d);
		expect(m, INVALID, "GenerateKey with a 256-byte key label");
	}
	valid_call_works("long labels");
}

int main(void)
{
	const char *conf, *args[3];
	const char *addr;
	int n0;
	pid_t pid;

	mkt_softhsm_setup();
	mkt_softhsm_add_token("alice");
	addr = mkt_dbus_setup();
	mkt_pinentry_log_path();
	mkt_pinentry_control("");
	conf = write_agent_conf("malformed.conf",
				"[agent]\nmax-array-bytes = 1024\n" MKT_RULE_OPEN);
	args[0] = "--config";
	args[1] = conf;
	args[2] = NULL;
	pid = mkt_agent_start(args);
	c = bus_open(addr);

	if (agent_generate(c, "pkcs11:token=alice", "signature", "ecdsa-p256", "sig", sig_key,
			   sizeof(sig_key)) < 0 ||
	    agent_generate(c, "pkcs11:token=alice", "hpke", "dhkem-p256", "hpke", hpke_key,
			   sizeof(hpke_key)) < 0 ||
	    agent_generate(c, "pkcs11:token=alice", "hpke", "dhkem-x25519", "x", x_key,
			   sizeof(x_key)) < 0 ||
	    agent_public_key(c, hpke_key, &hpub) < 0)
		mkt_bail("cannot generate the test keys");
	valid_call_works("start");

	/* logged out: a malformed call that reached a worker would ask for the PIN */
	mkt_ok(agent_lock(c, "") == 0, "Lock every token");
	n0 = mkt_pinentry_getpins();
	test_signatures();
	mkt_ok(mkt_pinentry_getpins() == n0 + 1,
	       "wrong signatures were refused before any work: only the valid call asked the "
	       "PIN (%d dialogs)",
	       mkt_pinentry_getpins() - n0);
	test_sizes();
	test_uris();
	test_points();
	test_suites();
	test_labels();
	mkt_ok(kill(pid, 0) == 0, "mlskeyd is still running");
	mk_bytes_clear(&hpub);
	bus_close(c);
	mkt_ok(mkt_agent_stop(pid) == 0, "and stops cleanly");
	return mkt_done();
}
