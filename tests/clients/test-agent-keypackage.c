/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * CreateKeyPackage end to end: the real mlskeyd on a private bus with a SoftHSM token, called
 * over libdbus, through libmlskey and through `mlskey keypackage`. What comes back is parsed
 * with the strict decoder (whose encoding tests/crypto/test-keypackage.c checks against
 * hand-written bytes), both signatures are verified in software under the key's public key
 * from GetPublicKey, the KeyPackageRef is recomputed here, the new keys are looked up in
 * ListKeys, and a Welcome sealed in software to the init key is opened through the agent.
 */
#include <openssl/evp.h>
#include <time.h>

#include "agent/keypackage.h"
#include "agent/mls.h"
#include "agent/suite.h"
#include "common/error.h"
#include "clients/mlskey.h"
#include "tests/agent/agent-test.h"
#include "tests/pin/pin-test.h" /* pin_make_key: a key that wants its PIN for every use */

#define TOKEN "kp"
#define TOKEN_URI "pkcs11:token=" TOKEN

static DBusConnection *bus;
static mlskey_client *cl;
static const char *addr;

/* --- calling CreateKeyPackage over libdbus -------------------------------------------------- */

typedef struct kp_call {
	const char *identity;	/* as s */
	bool identity_ay;	/* send identity as ay instead */
	uint32_t lifetime_days; /* 0: not sent */
	bool last_resort;
	const char *unknown; /* an unknown option's name */
	bool dup_extension;  /* extensions with the same type twice */
	bool leaf_ext;	     /* one leaf extension (application_id "mailbox") */
} kp_call;

typedef struct kp_reply {
	mk_bytes msg, ref;
	char init[1024], leaf[1024];
	char err[256], err_msg[512];
} kp_reply;

static void kp_reply_clear(kp_reply *r)
{
	mk_bytes_clear(&r->msg);
	mk_bytes_clear(&r->ref);
}

static void dict_open(DBusMessageIter *d, DBusMessageIter *e, DBusMessageIter *v, const char *key,
		      const char *sig)
{
	dbus_message_iter_open_container(d, DBUS_TYPE_DICT_ENTRY, NULL, e);
	dbus_message_iter_append_basic(e, DBUS_TYPE_STRING, &key);
	dbus_message_iter_open_container(e, DBUS_TYPE_VARIANT, sig, v);
}

static void dict_close(DBusMessageIter *d, DBusMessageIter *e, DBusMessageIter *v)
{
	dbus_message_iter_close_container(e, v);
	dbus_message_iter_close_container(d, e);
}

static void dict_exts(DBusMessageIter *d, const char *key, const uint16_t *types, size_t n)
{
	DBusMessageIter e, v, a;
	static const uint8_t data[] = "mailbox";
	const uint8_t *p = data;

	dict_open(d, &e, &v, key, "a(qay)");
	dbus_message_iter_open_container(&v, DBUS_TYPE_ARRAY, "(qay)", &a);
	for (size_t i = 0; i < n; i++) {
		DBusMessageIter st, b;

		dbus_message_iter_open_container(&a, DBUS_TYPE_STRUCT, NULL, &st);
		dbus_message_iter_append_basic(&st, DBUS_TYPE_UINT16, &types[i]);
		dbus_message_iter_open_container(&st, DBUS_TYPE_ARRAY, "y", &b);
		dbus_message_iter_append_fixed_array(&b, DBUS_TYPE_BYTE, &p, 7);
		dbus_message_iter_close_container(&st, &b);
		dbus_message_iter_close_container(&a, &st);
	}
	dbus_message_iter_close_container(&v, &a);
	dict_close(d, &e, &v);
}

/* CreateKeyPackage(key, suite, options of k): 0 and *ret, or -1 with ret->err set. */
static int create(const char *key, uint16_t suite, const kp_call *k, kp_reply *ret)
{
	DBusMessage *m = agent_call_new("CreateKeyPackage"), *r;
	DBusMessageIter it, d, e, v, sub;
	const char *s;
	int q = 0;

	memset(ret, 0, sizeof(*ret));
	dbus_message_iter_init_append(m, &it);
	dbus_message_iter_append_basic(&it, DBUS_TYPE_STRING, &key);
	dbus_message_iter_append_basic(&it, DBUS_TYPE_UINT16, &suite);
	dbus_message_iter_open_container(&it, DBUS_TYPE_ARRAY, "{sv}", &d);
	if (k->identity && !k->identity_ay) {
		dict_open(&d, &e, &v, "identity", "s");
		dbus_message_iter_append_basic(&v, DBUS_TYPE_STRING, &k->identity);
		dict_close(&d, &e, &v);
	} else if (k->identity) {
		const uint8_t *p = (const uint8_t *)k->identity;

		dict_open(&d, &e, &v, "identity", "ay");
		dbus_message_iter_open_container(&v, DBUS_TYPE_ARRAY, "y", &sub);
		dbus_message_iter_append_fixed_array(&sub, DBUS_TYPE_BYTE, &p,
						     (int)strlen(k->identity));
		dbus_message_iter_close_container(&v, &sub);
		dict_close(&d, &e, &v);
	}
	if (k->lifetime_days) {
		dict_open(&d, &e, &v, "lifetime_days", "u");
		dbus_message_iter_append_basic(&v, DBUS_TYPE_UINT32, &k->lifetime_days);
		dict_close(&d, &e, &v);
	}
	if (k->last_resort) {
		dbus_bool_t t = TRUE;

		dict_open(&d, &e, &v, "last_resort", "b");
		dbus_message_iter_append_basic(&v, DBUS_TYPE_BOOLEAN, &t);
		dict_close(&d, &e, &v);
	}
	if (k->unknown) {
		dbus_bool_t t = TRUE;

		dict_open(&d, &e, &v, k->unknown, "b");
		dbus_message_iter_append_basic(&v, DBUS_TYPE_BOOLEAN, &t);
		dict_close(&d, &e, &v);
	}
	if (k->dup_extension) {
		static const uint16_t two[] = { 0xff00, 0xff00 };

		dict_exts(&d, "extensions", two, 2);
	}
	if (k->leaf_ext) {
		static const uint16_t app_id[] = { 0x0001 };

		dict_exts(&d, "leaf_extensions", app_id, 1);
	}
	dbus_message_iter_close_container(&it, &d);
	r = agent_send(bus, m, 120000, ret->err, sizeof(ret->err), ret->err_msg,
		       sizeof(ret->err_msg));
	if (!r)
		return -1;
	if (strcmp(dbus_message_get_signature(r), "ayssay") != 0) {
		dbus_message_unref(r);
		snprintf(ret->err, sizeof(ret->err), "bad reply signature");
		return -1;
	}
	dbus_message_iter_init(r, &it);
	{
		const uint8_t *p;
		int n;

		dbus_message_iter_recurse(&it, &sub);
		dbus_message_iter_get_fixed_array(&sub, &p, &n);
		q |= mk_bytes_dup(p, (size_t)n, &ret->msg);
		dbus_message_iter_next(&it);
		dbus_message_iter_get_basic(&it, &s);
		snprintf(ret->init, sizeof(ret->init), "%s", s);
		dbus_message_iter_next(&it);
		dbus_message_iter_get_basic(&it, &s);
		snprintf(ret->leaf, sizeof(ret->leaf), "%s", s);
		dbus_message_iter_next(&it);
		dbus_message_iter_recurse(&it, &sub);
		dbus_message_iter_get_fixed_array(&sub, &p, &n);
		q |= mk_bytes_dup(p, (size_t)n, &ret->ref);
	}
	dbus_message_unref(r);
	return q < 0 ? -1 : 0;
}

/* --- checks ----------------------------------------------------------------------------------- */

static bool span_eq(mk_kp_span s, const uint8_t *p, size_t n)
{
	return s.n == n && memcmp(s.p, p, n) == 0;
}

/* RefHash("MLS 1.0 KeyPackage Reference", kp) computed here, not with mk_kp_ref. */
static bool ref_matches(uint16_t suite, mk_kp_span kp, const mk_bytes *ref)
{
	static const char label[] = "MLS 1.0 KeyPackage Reference";
	const mk_suite *s = mk_suite_get(suite);
	const EVP_MD *md = s->md_len == 32   ? EVP_sha256()
			   : s->md_len == 48 ? EVP_sha384()
					     : EVP_sha512();
	uint8_t hdr[4], out[64];
	unsigned outl = 0;
	size_t hn = mk_varint_encode(kp.n, hdr);
	uint8_t ll = (uint8_t)(sizeof(label) - 1);
	EVP_MD_CTX *c = EVP_MD_CTX_new();

	EVP_DigestInit_ex(c, md, NULL);
	EVP_DigestUpdate(c, &ll, 1);
	EVP_DigestUpdate(c, label, ll);
	EVP_DigestUpdate(c, hdr, hn);
	EVP_DigestUpdate(c, kp.p, kp.n);
	EVP_DigestFinal_ex(c, out, &outl);
	EVP_MD_CTX_free(c);
	return ref->len == outl && outl == s->md_len && memcmp(ref->data, out, outl) == 0;
}

static const mlskey_key *listed(mlskey_key *keys, size_t n, const char *uri)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(keys[i].uri, uri) == 0)
			return &keys[i];
	return NULL;
}

static size_t count_keys(void)
{
	mlskey_key *keys = NULL;
	size_t n = 0;

	if (mlskey_list_keys(cl, &keys, &n) < 0)
		mkt_bail("ListKeys failed: %s", mlskey_last_error()->message);
	mlskey_keys_free(keys, n);
	return n;
}

/* The two new HPKE keys are on the token as a receiver of the KeyPackage expects them. */
static void check_listed(const char *what, const kp_reply *r, const mk_key_package *kp,
			 uint16_t suite)
{
	const char *kem = mlskey_suite_algorithm(suite, "hpke");
	mlskey_key *keys = NULL;
	size_t n = 0;
	const mlskey_key *ik, *lk;

	mlskey_list_keys(cl, &keys, &n);
	ik = listed(keys, n, r->init);
	lk = listed(keys, n, r->leaf);
	mkt_ok(ik && lk && strstr(r->init, "object=mls-init-") &&
		       strstr(r->leaf, "object=mls-leaf-"),
	       "%s: init and leaf keys are listed (%s)", what, r->init);
	if (ik && lk) {
		mkt_ok(!strcmp(ik->purpose, "hpke") && !strcmp(ik->algorithm, kem) &&
			       !strcmp(lk->purpose, "hpke") && !strcmp(lk->algorithm, kem),
		       "%s:   both are %s HPKE keys", what, kem);
		mkt_ok(ik->public_key &&
			       span_eq(kp->init_key, ik->public_key, ik->public_key_len) &&
			       lk->public_key &&
			       span_eq(kp->leaf.encryption_key, lk->public_key, lk->public_key_len),
		       "%s:   their public keys are init_key and encryption_key", what);
		mkt_ok(ik->local && ik->never_extractable && ik->always_sensitive && lk->local &&
			       lk->never_extractable && lk->always_sensitive,
		       "%s:   generated on the token, always sensitive, never extractable", what);
	}
	mlskey_keys_free(keys, n);
}

/* --- the tests ---------------------------------------------------------------------------------
 */

static char *sig_keys[8];

static void test_suite(uint16_t suite)
{
	const char *alg = mlskey_suite_algorithm(suite, "signature");
	static const char identity[] = "alice@example.org";
	char what[32], label[32];
	_cleanup_free_ char *key = NULL;
	uint8_t *pub = NULL;
	size_t pub_len = 0;
	kp_reply r;
	mk_key_package kp;
	mk_kp_span inner;
	_cleanup_bytes_ mk_bytes tbs = MK_BYTES_NULL, kptbs = MK_BYTES_NULL;
	uint64_t now = (uint64_t)time(NULL);
	kp_call k = { .identity = identity, .leaf_ext = true };

	snprintf(what, sizeof(what), "suite %u", suite);
	snprintf(label, sizeof(label), "kp-sig-%u", suite);
	if (!mkt_ok_r(mlskey_generate_key(cl, TOKEN_URI, NULL, alg, label, &key),
		      "%s: a %s signature key", what, alg))
		return;
	sig_keys[suite] = strdup(key);
	mkt_ok_r(mlskey_get_public_key(cl, key, &pub, &pub_len), "%s: its public key", what);
	if (!mkt_ok(create(key, suite, &k, &r) == 0, "%s: CreateKeyPackage (%s %s)", what, r.err,
		    r.err_msg)) {
		mlskey_free(pub, pub_len);
		return;
	}
	if (!mkt_ok_r(mk_kp_decode_message(r.msg.data, r.msg.len, &kp, &inner),
		      "%s: the MLSMessage parses with the strict decoder (%zu bytes)", what,
		      r.msg.len))
		goto out;
	mkt_ok(kp.version == 1 && kp.cipher_suite == suite, "%s:   mls10, cipher suite %u", what,
	       suite);
	mkt_ok(span_eq(kp.leaf.signature_key, pub, pub_len),
	       "%s:   the leaf's signature_key is GetPublicKey of the key", what);
	mkt_ok(kp.leaf.credential.type == MK_MLS_CREDENTIAL_BASIC &&
		       span_eq(kp.leaf.credential.identity, (const uint8_t *)identity,
			       strlen(identity)),
	       "%s:   a basic credential with the identity", what);
	mkt_ok(kp.leaf.capabilities.versions.n == 1 && kp.leaf.capabilities.versions.v[0] == 1 &&
		       kp.leaf.capabilities.cipher_suites.n == 1 &&
		       kp.leaf.capabilities.cipher_suites.v[0] == suite &&
		       kp.leaf.capabilities.credentials.n == 1 &&
		       kp.leaf.capabilities.credentials.v[0] == MK_MLS_CREDENTIAL_BASIC &&
		       kp.leaf.capabilities.extensions.n == 0,
	       "%s:   capabilities: [mls10], [%u], no non-default extension, [basic]", what, suite);
	mkt_ok(kp.leaf.extensions.n == 1 && kp.leaf.extensions.v[0].type == 1 &&
		       span_eq(kp.leaf.extensions.v[0].data, (const uint8_t *)"mailbox", 7) &&
		       kp.extensions.n == 0,
	       "%s:   the leaf extension as asked, no KeyPackage extension", what);
	mkt_ok(kp.leaf.not_before + 3600 + 5 >= now && kp.leaf.not_before + 3600 <= now + 5 &&
		       kp.leaf.not_after == kp.leaf.not_before + 90 * 86400ULL,
	       "%s:   lifetime now - 1 hour (clock margin) .. + 90 days", what);
	mkt_ok_r(mk_kp_leaf_tbs(&kp.leaf, &tbs), "%s:   LeafNodeTBS", what);
	mkt_ok(mk_mls_verify_with_label(suite, pub, pub_len, "LeafNodeTBS", tbs.data, tbs.len,
					kp.leaf.signature.p, kp.leaf.signature.n) == 0,
	       "%s:   the LeafNode signature verifies (VerifyWithLabel)", what);
	mkt_ok_r(mk_kp_tbs(&kp, &kptbs), "%s:   KeyPackageTBS", what);
	mkt_ok(mk_mls_verify_with_label(suite, pub, pub_len, "KeyPackageTBS", kptbs.data, kptbs.len,
					kp.signature.p, kp.signature.n) == 0,
	       "%s:   the KeyPackage signature verifies (VerifyWithLabel)", what);
	if (!mkt_ok_r(mk_kp_check(&kp, (uint64_t)time(NULL)), "%s:   passes every receiver check",
		      what))
		mkt_diag("%s", mk_error_message() ? mk_error_message() : "");
	mkt_ok(ref_matches(suite, inner, &r.ref), "%s:   KeyPackageRef = RefHash of the KeyPackage",
	       what);
	check_listed(what, &r, &kp, suite);

	/* a Welcome: EncryptedGroupSecrets sealed to the init key */
	{
		static const uint8_t egi[] = "the encrypted_group_info of a Welcome";
		static const uint8_t secrets[] = "GroupSecrets: joiner_secret, path_secret, psks";
		_cleanup_bytes_ mk_bytes kem = MK_BYTES_NULL, ct = MK_BYTES_NULL,
					 ctx = MK_BYTES_NULL, pt = MK_BYTES_NULL;
		char err[256];

		mk_bytes_dup(egi, sizeof(egi), &ctx);
		mkt_ok_r(mk_mls_encrypt_with_label(suite, kp.init_key.p, kp.init_key.n, "Welcome",
						   egi, sizeof(egi), secrets, sizeof(secrets), &kem,
						   &ct),
			 "%s: EncryptWithLabel(init_key, \"Welcome\", encrypted_group_info)", what);
		mkt_ok(agent_decrypt(bus, r.init, suite, "Welcome", &ctx, &kem, &ct, &pt, err,
				     sizeof(err)) == 0 &&
			       pt.len == sizeof(secrets) && !memcmp(pt.data, secrets, pt.len),
		       "%s:   DecryptWithLabel with the init key opens it (%s)", what, err);
		if (suite == 2) {
			mlskey_key *keys = NULL;
			size_t n = 0;

			mk_bytes_clear(&pt);
			agent_decrypt(bus, r.init, suite, "Welcome", &ctx, &kem, &ct, &pt, err,
				      sizeof(err));
			mlskey_list_keys(cl, &keys, &n);
			/*
			 * EXPECTED TO FAIL ON BRANCH kp ALONE: deleting a single-use init key after
			 * its first Welcome (MK_GENERATE_SINGLE_USE) is implemented on another
			 * branch; here the flag is accepted and ignored. Passes once merged.
			 */
			mkt_ok(!listed(keys, n, r.init) &&
				       !strcmp(err, "org.mlskey.Error.NoSuchKey"),
			       "%s:   the init key is gone after its first Welcome (NoSuchKey: %s) "
			       "[needs the single-use branch]",
			       what, err[0] ? err : "it opened again");
			mlskey_keys_free(keys, n);
		}
	}
out:
	mlskey_free(pub, pub_len);
	kp_reply_clear(&r);
}

/* A last-resort KeyPackage carries the extension, and its init key stays after a Welcome. */
static void test_last_resort(void)
{
	kp_call k = {
		.identity = "alice", .identity_ay = true, .last_resort = true, .lifetime_days = 7
	};
	static const uint8_t egi[] = "egi", secrets[] = "secrets";
	_cleanup_bytes_ mk_bytes kem = MK_BYTES_NULL, ct = MK_BYTES_NULL, ctx = MK_BYTES_NULL,
				 pt = MK_BYTES_NULL;
	mk_key_package kp;
	kp_reply r;
	char err[256];

	if (!sig_keys[1])
		return;
	if (!mkt_ok(create(sig_keys[1], 1, &k, &r) == 0, "last resort: CreateKeyPackage (%s %s)",
		    r.err, r.err_msg))
		return;
	if (mkt_ok_r(mk_kp_decode_message(r.msg.data, r.msg.len, &kp, NULL), "  parses")) {
		mkt_ok(kp.extensions.n == 1 && kp.extensions.v[0].type == 0x000a &&
			       kp.extensions.v[0].data.n == 0 &&
			       kp.leaf.capabilities.extensions.n == 1 &&
			       kp.leaf.capabilities.extensions.v[0] == 0x000a,
		       "  last_resort (0x000a) in its extensions and in the capabilities");
		mkt_ok(kp.leaf.not_after - kp.leaf.not_before == 7 * 86400ULL, "  lifetime_days 7");
		mkt_ok(span_eq(kp.leaf.credential.identity, (const uint8_t *)"alice", 5),
		       "  identity given as ay");
		mkt_ok_r(mk_kp_check(&kp, (uint64_t)time(NULL)), "  passes every receiver check");
		mk_bytes_dup(egi, sizeof(egi), &ctx);
		mk_mls_encrypt_with_label(1, kp.init_key.p, kp.init_key.n, "Welcome", egi,
					  sizeof(egi), secrets, sizeof(secrets), &kem, &ct);
		agent_decrypt(bus, r.init, 1, "Welcome", &ctx, &kem, &ct, &pt, err, sizeof(err));
		mk_bytes_clear(&pt);
		mkt_ok(agent_decrypt(bus, r.init, 1, "Welcome", &ctx, &kem, &ct, &pt, err,
				     sizeof(err)) == 0 &&
			       pt.len == sizeof(secrets),
		       "  its init key opens a second Welcome (not single-use)");
	}
	kp_reply_clear(&r);
}

/* Refused calls: the right error, and no key generated. */
static void expect_refused(const char *key, uint16_t suite, const kp_call *k, const char *name,
			   const char *what)
{
	size_t before = count_keys(), after;
	char full[128];
	kp_reply r;
	int q = create(key, suite, k, &r);

	snprintf(full, sizeof(full), "org.mlskey.Error.%s", name);
	mkt_diag("%s: %s", r.err, r.err_msg);
	mkt_ok(q < 0 && !strcmp(r.err, full), "%s -> %s", what, name);
	after = count_keys();
	mkt_ok(after == before, "  no key was generated (%zu keys before, %zu after)", before,
	       after);
	kp_reply_clear(&r);
}

static void test_refused(void)
{
	kp_call ok = { .identity = "alice" };
	kp_call unknown = { .identity = "alice", .unknown = "colour" };
	kp_call none = { 0 };
	kp_call dup = { .identity = "alice", .dup_extension = true };

	if (!sig_keys[1] || !sig_keys[2])
		return;
	expect_refused(sig_keys[1], 1, &unknown, "InvalidInput", "an unknown option");
	expect_refused(sig_keys[1], 1, &none, "InvalidInput",
		       "no identity and no certificate on the token");
	expect_refused(sig_keys[1], 1, &dup, "InvalidInput", "an extension type twice");
	expect_refused(sig_keys[1], 2, &ok, "Unsupported", "an Ed25519 key with suite 2 (P-256)");
	expect_refused(sig_keys[2], 7, &ok, "Unsupported", "a P-256 key with suite 7 (P-384)");
	expect_refused(sig_keys[1], 4, &ok, "Unsupported", "suite 4 (X448)");
	expect_refused("pkcs11:token=" TOKEN ";object=nope;type=private", 1, &ok, "NoSuchKey",
		       "a key that does not exist");
}

/*
 * A failure after the keys were made: the signature key wants its PIN for every use
 * (CKA_ALWAYS_AUTHENTICATE), and its dialog is cancelled when LeafNodeTBS is signed, after
 * the init and leaf keys were generated. They must be deleted again.
 */
static void test_rollback(void)
{
	kp_call k = { .identity = "alice" };
	int getpins = mkt_pinentry_getpins();
	size_t before = count_keys(), after;
	kp_reply r;
	int q;

	mkt_pinentry_control("MKT_PINENTRY_CANCEL=1\n");
	q = create("pkcs11:token=" TOKEN ";object=each;type=private", 2, &k, &r);
	mkt_pinentry_control("");
	mkt_diag("%s: %s", r.err, r.err_msg);
	mkt_ok(q < 0 && !strcmp(r.err, "org.mlskey.Error.Cancelled"),
	       "the key's PIN dialog cancelled while signing LeafNodeTBS -> Cancelled");
	mkt_ok(mkt_pinentry_getpins() == getpins + 1 &&
		       strstr(pin_last_desc(), "needs the PIN for every use") &&
		       strstr(pin_last_desc(), "SignWithLabel"),
	       "  it failed in the signature, after the keys were made: %s", pin_last_desc());
	after = count_keys();
	mkt_ok(after == before, "  the init and leaf keys made for it were deleted (%zu keys, %zu)",
	       before, after);
	kp_reply_clear(&r);
}

/* libmlskey: mlskey_create_key_package, with its own receiver checks. */
static void test_libmlskey(void)
{
	mlskey_key_package_options o = { .identity = "carol", .lifetime_days = 30 };
	mlskey_key_package kp = { 0 };
	mk_key_package d;
	mk_kp_span inner;

	if (!sig_keys[3])
		return;
	if (!mkt_ok_r(mlskey_create_key_package(cl, sig_keys[3], 3, &o, &kp),
		      "libmlskey: mlskey_create_key_package suite 3"))
		return;
	mkt_ok(mk_kp_decode_message(kp.key_package, kp.key_package_len, &d, &inner) == 0 &&
		       d.cipher_suite == 3 && d.leaf.not_after - d.leaf.not_before == 30 * 86400ULL,
	       "  a suite 3 KeyPackage valid for 30 days");
	{
		mk_bytes ref = { kp.ref, kp.ref_len };

		mkt_ok(ref_matches(3, inner, &ref) && kp.init_key && kp.leaf_key,
		       "  its ref, init key and leaf key");
	}
	mlskey_key_package_clear(&kp);
	o.identity = NULL;
	mkt_ok(mlskey_create_key_package(cl, sig_keys[3], 3, &o, &kp) == -EINVAL &&
		       !strcmp(mlskey_last_error()->name, "org.mlskey.Error.InvalidInput"),
	       "  without identity: -EINVAL, InvalidInput (%s)", mlskey_last_error()->message);
	o.identity = "carol";
	mkt_ok(mlskey_create_key_package(cl, sig_keys[3], 2, &o, &kp) == -EOPNOTSUPP,
	       "  suite 2 with an Ed25519 key: -EOPNOTSUPP (%s)", mlskey_last_error()->message);
}

/* `mlskey keypackage`. */
static void test_cli(void)
{
	const char *mlskey = mkt_build_path("clients/mlskey");
	char out[512], line_init[3][1024];
	run_result *res = malloc(sizeof(*res));
	size_t n = 0;
	FILE *f;
	uint8_t buf[65536];
	size_t len;
	mk_reader rd;
	mk_kp_span inits[4];
	bool distinct = true, refs_ok = true;

	if (!res || !sig_keys[1])
		mkt_bail("no memory or no key");
	snprintf(out, sizeof(out), "%s/three.kp", mkt_tmpdir());
	run_list(res, mlskey, "--address", addr, "keypackage", sig_keys[1], "--suite", "1",
		 "--identity", "bob", "--count", "3", "-o", out, NULL);
	mkt_diag("stdout: %.600s stderr: %.300s", res->out, res->err);
	mkt_ok(res->status == 0, "mlskey keypackage --count 3: exit 0");
	f = fopen(out, "rb");
	len = f ? fread(buf, 1, sizeof(buf), f) : 0;
	if (f)
		fclose(f);
	mk_reader_init(&rd, buf, len);
	while (!mk_reader_empty(&rd) && n < 4) {
		mk_key_package kp;
		mk_kp_span inner;
		char hexref[200], init[1024], leaf[1024];
		const char *line = res->out;

		if (mk_kp_read_message(&rd, &kp, &inner) < 0 ||
		    mk_kp_check(&kp, (uint64_t)time(NULL)) < 0)
			break;
		inits[n] = kp.init_key;
		for (size_t i = 0; i < n; i++)
			if (span_eq(inits[i], kp.init_key.p, kp.init_key.n))
				distinct = false;
		/* line n: REF INIT LEAF, the ref being RefHash of KeyPackage n */
		for (size_t i = 0; i < n && line; i++) {
			line = strchr(line, '\n');
			line = line ? line + 1 : NULL;
		}
		if (!line || sscanf(line, "%199s %1023s %1023s", hexref, init, leaf) != 3) {
			refs_ok = false;
		} else {
			mk_bytes ref = MK_BYTES_NULL;

			refs_ok &= mk_hex_decode(hexref, &ref) == 0 &&
				   ref_matches(1, inner, &ref) && strstr(init, "mls-init-") &&
				   strstr(leaf, "mls-leaf-");
			mk_bytes_clear(&ref);
			if (n < 3)
				snprintf(line_init[n], sizeof(line_init[n]), "%s", init);
		}
		n++;
	}
	mkt_ok(n == 3 && mk_reader_empty(&rd),
	       "  the file holds exactly 3 MLSMessages back to back, each passing every check "
	       "(%zu, %zu bytes)",
	       n, len);
	mkt_ok(distinct, "  with 3 distinct init keys");
	mkt_ok(refs_ok, "  one line per KeyPackage: its ref (= RefHash), init and leaf key URIs");

	snprintf(out, sizeof(out), "%s/last.kp", mkt_tmpdir());
	run_list(res, mlskey, "--address", addr, "keypackage", sig_keys[1], "--suite", "1",
		 "--identity", "bob", "--last-resort", "--lifetime-days", "3", "-o", out, NULL);
	mkt_ok(res->status == 0, "mlskey keypackage --last-resort: exit 0 (%.200s)", res->err);
	f = fopen(out, "rb");
	len = f ? fread(buf, 1, sizeof(buf), f) : 0;
	if (f)
		fclose(f);
	{
		mk_key_package kp;

		mkt_ok(mk_kp_decode_message(buf, len, &kp, NULL) == 0 && kp.extensions.n == 1 &&
			       kp.extensions.v[0].type == MK_MLS_EXTENSION_LAST_RESORT &&
			       kp.leaf.not_after - kp.leaf.not_before == 3 * 86400ULL,
		       "  carries the last_resort extension, valid for 3 days");
	}
	run_list(res, mlskey, "--address", addr, "keypackage", sig_keys[1], "--suite", "1", "-o",
		 out, NULL);
	mkt_ok(res->status == 1 && strstr(res->err, "InvalidInput"),
	       "mlskey keypackage without --identity: exit 1, InvalidInput (%.200s)", res->err);
	run_list(res, mlskey, "--address", addr, "keypackage", sig_keys[1], "--suite", "1",
		 "--identity", "bob", "--json", "-o", out, NULL);
	mkt_ok(res->status == 0 && !strncmp(res->out, "[{\"ref\": \"", 10) &&
		       strstr(res->out, "\"init_key\": \"pkcs11:") &&
		       strstr(res->out, "\"leaf_key\": \"pkcs11:"),
	       "mlskey keypackage --json: %.100s", res->out);
	/* the busctl example of docs/API.md */
	{
		char addr_arg[600];

		snprintf(addr_arg, sizeof(addr_arg), "--address=%s", addr);
		run_list(res, "busctl", addr_arg, "call", AGENT_NAME, AGENT_PATH, AGENT_IFACE,
			 "CreateKeyPackage", "sqa{sv}", sig_keys[2], "2", "1", "identity", "s",
			 "alice@example.org", NULL);
		if (res->status < 0)
			mkt_diag("busctl is not installed: the docs example is not checked");
		else
			mkt_ok(res->status == 0 && !strncmp(res->out, "ayssay ", 7) &&
				       strstr(res->out, "object=mls-init-") &&
				       strstr(res->out, "object=mls-leaf-"),
			       "the busctl example of docs/API.md: %.120s%s", res->out, res->err);
	}
	run_list(res, mlskey, "keypackage", "--help", NULL);
	mkt_ok(res->status == 0 && strstr(res->out, "back to back"),
	       "mlskey keypackage --help documents the file format");
	free(res);
}

int main(void)
{
	static const uint16_t suites[] = { 1, 2, 3, 5, 7 };
	pid_t pid;

	mkt_softhsm_setup();
	mkt_softhsm_add_token(TOKEN);
	addr = mkt_dbus_setup();
	if (pin_make_key(TOKEN, MKT_USER_PIN, "each", true) < 0)
		mkt_bail("cannot make a key with CKA_ALWAYS_AUTHENTICATE");
	mkt_pinentry_log_path();
	mkt_pinentry_control("");
	{
		/* "each" wants its PIN for every use: a qualified-signature key, which the policy
		 * only lets a rule naming it use (agent/policy.h) */
		const char *args[] = {
			"--config",
			mkt_write_file("mlskeyd.conf", "[rule]\nname = the each key\ncaller = any\n"
						       "key = pkcs11:token=" TOKEN ";object=each\n"
						       "operations = keypackage sign\n"),
			NULL,
		};

		pid = mkt_agent_start(args);
	}
	bus = bus_open(addr);
	if (mlskey_client_new(addr, &cl) < 0)
		mkt_bail("libmlskey cannot connect: %s", mlskey_last_error()->message);

	for (size_t i = 0; i < ELEMENTSOF(suites); i++)
		test_suite(suites[i]);
	test_last_resort();
	test_refused();
	test_rollback();
	test_libmlskey();
	test_cli();

	mlskey_client_free(cl);
	bus_close(bus);
	mkt_ok(mkt_agent_stop(pid) == 0, "mlskeyd stops cleanly (exit status 0: no leak found)");
	for (size_t i = 0; i < ELEMENTSOF(sig_keys); i++)
		free(sig_keys[i]);
	return mkt_done();
}
