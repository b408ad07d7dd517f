/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libmlskey against the real mlskeyd on a private bus with a SoftHSM token: every method,
 * every algorithm and suite, the checks libmlskey adds, and every error name the agent can
 * give on SoftHSM, each provoked by a call a client could make.
 */
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include "config.h"

#include "agent/hpke.h"
#include "tests/agent-fixture.h"
#include "tests/clients/clients-test.h"

#define TOKEN "clients"
#define TOKEN2 "clients-second"
#define TOKEN_LOCKED "clients-locked"
#define TOKEN_BROKEN "clients-broken"

static const char *addr;
static mlskey_client *c;   /* every check on */
static mlskey_client *raw; /* checks off: the agent's own answers */
static pid_t agent;
static bool locked_marked;

static const struct {
	const char *alg, *purpose;
	uint16_t suites[2];
	size_t pub_len;
} algs[] = {
	{ "ecdsa-p256", "signature", { 2 }, 65 },   { "ecdsa-p384", "signature", { 7 }, 97 },
	{ "ecdsa-p521", "signature", { 5 }, 133 },  { "ed25519", "signature", { 1, 3 }, 32 },
	{ "dhkem-p256", "hpke", { 2 }, 65 },	    { "dhkem-p384", "hpke", { 7 }, 97 },
	{ "dhkem-p521", "hpke", { 5 }, 133 },	    { "dhkem-x25519", "hpke", { 1, 3 }, 32 },
};
static char *uris[ELEMENTSOF(algs)];
#define P256 0
#define ED25519 3
#define HPKE_P256 4
#define X25519 7

static const uint8_t content[] = "LeafNodeTBS bytes for the test";
static const uint8_t context[] = "a group context";
static const uint8_t secret[] = "a path secret of some bytes";

/*
 * Sets CKF_USER_PIN_LOCKED (0x40000) in the SoftHSM token file of the token with that label,
 * before the agent loads the module. SoftHSM never locks a PIN by itself (it only sets
 * COUNT_LOW); a card would, and the agent then refuses without a dialog. The token flags
 * are the big-endian u64 after the CKA_OS_TOKENFLAGS attribute header in token.object.
 */
static bool softhsm_mark_pin_locked(const char *label)
{
	static const uint8_t tag[16] = { 0, 0, 0, 0, 0x80, 0, 0x53, 0x4b, 0, 0, 0, 0, 0, 0, 0, 2 };
	char dir[600], padded[33], path[1200];
	struct dirent *de;
	bool done = false;
	DIR *d;

	memset(padded, ' ', 32);
	memcpy(padded, label, strlen(label));
	padded[32] = '\0';
	snprintf(dir, sizeof(dir), "%s/tokens", mkt_tmpdir());
	d = opendir(dir);
	while (d && !done && (de = readdir(d))) {
		uint8_t buf[8192];
		size_t n;
		FILE *f;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s/token.object", dir, de->d_name);
		f = fopen(path, "r+be");
		if (!f)
			continue;
		n = fread(buf, 1, sizeof(buf), f);
		if (memmem(buf, n, padded, 32))
			for (size_t i = 0; i + 24 <= n; i++)
				if (!memcmp(buf + i, tag, sizeof(tag))) {
					buf[i + 16 + 5] |= 0x04;
					done = fseek(f, 0, SEEK_SET) == 0 && fwrite(buf, 1, n, f) == n;
					break;
				}
		fclose(f);
	}
	if (d)
		closedir(d);
	return done;
}

static mlskey_client *connect_or_bail(unsigned checks)
{
	mlskey_client *h = NULL;

	if (mlskey_client_new(addr, &h) < 0 || mlskey_client_set_checks(h, checks) < 0)
		mkt_bail("cannot connect to %s: %s", addr, mlskey_last_error()->message);
	return h;
}

static char *token_uri(const char *label)
{
	mlskey_token *t = NULL;
	const mlskey_token *f;
	size_t n = 0;
	char *uri;

	if (mlskey_list_tokens(c, &t, &n) < 0)
		mkt_bail("ListTokens: %s", mlskey_last_error()->message);
	f = find_token(t, n, label);
	if (!f)
		mkt_bail("token %s is not listed", label);
	uri = strdup(f->uri);
	mlskey_tokens_free(t, n);
	return uri;
}

static void test_connect(void)
{
	mlskey_client *h = NULL;
	char *v = NULL;
	int r;

	r = mlskey_client_new("unix:path=/nonexistent/mlskey-test-bus", &h);
	mkt_ok(r == -ECONNREFUSED && mlskey_last_error()->code == r &&
		       strncmp(mlskey_last_error()->name, "org.freedesktop.DBus.Error.", 27) == 0 &&
		       strstr(mlskey_last_error()->message, "/nonexistent/mlskey-test-bus"),
	       "mlskey_client_new on a socket that does not exist: %s: %s",
	       mlskey_last_error()->name, mlskey_last_error()->message);
	mkt_ok(h == NULL, "no handle written on failure");
	r = mlskey_client_new("no-such-transport:x=1", &h);
	mkt_ok(r == -EINVAL || r == -ECONNREFUSED, "a malformed address fails (r=%d %s)", r,
	       mlskey_last_error()->name);

	mkt_ok_mlskey(mlskey_client_new(NULL, &h), "mlskey_client_new(NULL): the session bus");
	mkt_ok_mlskey(mlskey_ping(h), "Peer.Ping answered by the agent");
	mkt_ok(mlskey_last_error()->code == 0 && !mlskey_last_error()->name[0],
	       "a success resets the last error");
	mlskey_client_free(h);

	mkt_ok_mlskey(mlskey_agent_version(c, &v), "Version property");
	mkt_ok(v && strcmp(v, MK_VERSION) == 0, "Version is %s (got %s)", MK_VERSION, v);
	free(v);
	mkt_ok_err(mlskey_client_set_timeout(c, -2), -EINVAL, "timeout below -1 is refused");
	mkt_ok_err(mlskey_client_set_checks(c, 0x100), -EINVAL, "unknown check bits are refused");
	mkt_ok(strcmp(mlskey_suite_algorithm(2, "signature"), "ecdsa-p256") == 0 &&
		       strcmp(mlskey_suite_algorithm(3, "hpke"), "dhkem-x25519") == 0 &&
		       !mlskey_suite_algorithm(4, "hpke"),
	       "mlskey_suite_algorithm");
}

static void test_tokens(void)
{
	mlskey_token *t = NULL;
	const mlskey_token *f;
	size_t n = 0;

	if (!mkt_ok_mlskey(mlskey_list_tokens(c, &t, &n), "ListTokens"))
		return;
	f = find_token(t, n, TOKEN);
	mkt_ok(f != NULL, "token %s is listed (%zu tokens)", TOKEN, n);
	if (f) {
		mkt_ok(strncmp(f->uri, "pkcs11:", 7) == 0 && strstr(f->uri, "token=" TOKEN),
		       "token URI %s", f->uri);
		mkt_ok(strcmp(f->manufacturer, "SoftHSM project") == 0 && f->model[0] &&
			       f->serial[0] && f->module[0],
		       "manufacturer \"%s\", model \"%s\", serial \"%s\", module \"%s\"",
		       f->manufacturer, f->model, f->serial, f->module);
		mkt_ok(f->present && f->login_required && !f->logged_in && !f->pin_locked &&
			       !f->protected_auth_path && !f->write_protected,
		       "present, login required, not logged in yet");
	}
	mlskey_tokens_free(t, n);
}

static void test_generate(void)
{
	_cleanup_free_ char *tok = token_uri(TOKEN);
	int getpins = mkt_pinentry_getpins();
	mlskey_token *t = NULL;
	size_t n = 0;

	for (size_t i = 0; i < ELEMENTSOF(algs); i++) {
		char label[64];

		snprintf(label, sizeof(label), "test-%s", algs[i].alg);
		/* purpose NULL for half of them: libmlskey derives it from the algorithm */
		mkt_ok_mlskey(mlskey_generate_key(c, i % 2 ? tok : "pkcs11:token=" TOKEN,
						  i % 2 ? algs[i].purpose : NULL, algs[i].alg,
						  label, &uris[i]),
			      "GenerateKey %s", algs[i].alg);
		if (!uris[i])
			mkt_bail("cannot go on without keys");
		mkt_ok(strncmp(uris[i], "pkcs11:", 7) == 0 && strstr(uris[i], "type=private") &&
			       strstr(uris[i], label),
		       "key URI %s", uris[i]);
	}
	mkt_ok(mkt_pinentry_getpins() == getpins + 1, "one PIN dialog for eight keys (%d)",
	       mkt_pinentry_getpins() - getpins);
	if (mkt_ok_mlskey(mlskey_list_tokens(c, &t, &n), "ListTokens after the login")) {
		const mlskey_token *f = find_token(t, n, TOKEN);

		mkt_ok(f && f->logged_in, "the token is logged in now");
	}
	mlskey_tokens_free(t, n);
}

static void test_keys(void)
{
	_cleanup_free_ char *tok = token_uri(TOKEN);
	mlskey_key *keys = NULL;
	size_t n = 0;

	if (!mkt_ok_mlskey(mlskey_list_keys(c, &keys, &n), "ListKeys"))
		return;
	mkt_ok(n == ELEMENTSOF(algs), "%zu keys listed, %zu generated", n, ELEMENTSOF(algs));
	for (size_t i = 0; i < ELEMENTSOF(algs); i++) {
		const mlskey_key *k = find_key(keys, n, uris[i]);
		uint8_t *pub = NULL;
		size_t pub_len = 0;
		bool suites_ok;

		if (!mkt_ok(k != NULL, "%s is listed", algs[i].alg))
			continue;
		suites_ok = k->n_cipher_suites == (algs[i].suites[1] ? 2u : 1u) &&
			    k->cipher_suites[0] == algs[i].suites[0] &&
			    (!algs[i].suites[1] || k->cipher_suites[1] == algs[i].suites[1]);
		mkt_ok(strcmp(k->algorithm, algs[i].alg) == 0 &&
			       strcmp(k->purpose, algs[i].purpose) == 0 && suites_ok,
		       "%s: algorithm %s, purpose %s, %zu suites", algs[i].alg, k->algorithm,
		       k->purpose, k->n_cipher_suites);
		mkt_ok(k->public_key_len == algs[i].pub_len &&
			       (algs[i].pub_len == 32 || k->public_key[0] == 0x04),
		       "%s: %zu-byte public key", algs[i].alg, k->public_key_len);
		mkt_ok(k->usable && !k->reason[0] && k->local && k->never_extractable &&
			       k->always_sensitive && !k->has_certificate && k->id_len == 16,
		       "%s: usable, generated on the token, never extractable, 16-byte id",
		       algs[i].alg);
		mkt_ok(strcmp(k->token, tok) == 0 && strncmp(k->label, "test-", 5) == 0,
		       "%s: token and label", algs[i].alg);
		if (mkt_ok_mlskey(mlskey_get_public_key(raw, uris[i], &pub, &pub_len),
				  "GetPublicKey %s", algs[i].alg))
			mkt_ok(pub_len == k->public_key_len &&
				       memcmp(pub, k->public_key, pub_len) == 0,
			       "GetPublicKey equals the listing");
		mlskey_free(pub, pub_len);
	}
	mlskey_keys_free(keys, n);
}

static void test_sign(void)
{
	static uint8_t big[1 << 20];

	for (size_t i = 0; i < ELEMENTSOF(algs); i++) {
		uint8_t *pub = NULL;
		size_t pub_len = 0;

		if (strcmp(algs[i].purpose, "signature") != 0)
			continue;
		if (mlskey_get_public_key(c, uris[i], &pub, &pub_len) < 0)
			mkt_bail("GetPublicKey: %s", mlskey_last_error()->message);
		for (size_t s = 0; s < 2 && algs[i].suites[s]; s++) {
			uint16_t suite = algs[i].suites[s];
			uint8_t *sig = NULL, bad[sizeof(content)];
			size_t sig_len = 0;
			int r;

			r = mlskey_sign_with_label(c, uris[i], suite, "LeafNodeTBS", content,
						   sizeof(content), &sig, &sig_len);
			if (!mkt_ok_mlskey(r, "SignWithLabel %s suite %u", algs[i].alg, suite))
				continue;
			mkt_ok(suite == 1 || suite == 3 ? sig_len == 64 : sig[0] == 0x30,
			       "%zu-byte %s signature", sig_len, suite == 1 || suite == 3 ?
			       "Ed25519" : "DER");
			mkt_ok_mlskey(mlskey_verify_with_label(suite, pub, pub_len, "LeafNodeTBS",
							       content, sizeof(content), sig,
							       sig_len),
				      "VerifyWithLabel %s suite %u", algs[i].alg, suite);
			memcpy(bad, content, sizeof(bad));
			bad[3] ^= 1;
			r = mlskey_verify_with_label(suite, pub, pub_len, "LeafNodeTBS", bad,
						     sizeof(bad), sig, sig_len);
			mkt_ok_mlskey_err(r, -EBADMSG, "org.mlskey.Client.SignatureInvalid",
					  "VerifyWithLabel of changed content (%s)", algs[i].alg);
			r = mlskey_verify_with_label(suite, pub, pub_len, "KeyPackageTBS", content,
						     sizeof(content), sig, sig_len);
			mkt_ok(r == -EBADMSG, "VerifyWithLabel with another label fails");
			mlskey_free(sig, sig_len);
		}
		mlskey_free(pub, pub_len);
	}

	/* Empty and large content; the handle without checks gets the same kind of answer. */
	{
		uint8_t *sig = NULL, *pub = NULL;
		size_t sig_len = 0, pub_len = 0;

		mkt_ok_mlskey(mlskey_sign_with_label(c, uris[P256], 2, "", NULL, 0, &sig, &sig_len),
			      "SignWithLabel of empty content with an empty label");
		mlskey_get_public_key(c, uris[P256], &pub, &pub_len);
		mkt_ok_mlskey(mlskey_verify_with_label(2, pub, pub_len, "", NULL, 0, sig, sig_len),
			      "... verifies");
		mlskey_free(sig, sig_len);
		memset(big, 0x42, sizeof(big));
		mkt_ok_mlskey(mlskey_sign_with_label(raw, uris[ED25519], 3, "LeafNodeTBS", big,
						     sizeof(big), &sig, &sig_len),
			      "SignWithLabel of 1 MiB content (Ed25519, no client checks)");
		mlskey_free(pub, pub_len);
		mlskey_get_public_key(c, uris[ED25519], &pub, &pub_len);
		mkt_ok_mlskey(mlskey_verify_with_label(3, pub, pub_len, "LeafNodeTBS", big,
						       sizeof(big), sig, sig_len),
			      "... verifies");
		mlskey_free(sig, sig_len);
		mlskey_free(pub, pub_len);
	}
}

static void test_decrypt(void)
{
	for (size_t i = 0; i < ELEMENTSOF(algs); i++) {
		uint8_t *pub = NULL;
		size_t pub_len = 0;

		if (strcmp(algs[i].purpose, "hpke") != 0)
			continue;
		if (mlskey_get_public_key(c, uris[i], &pub, &pub_len) < 0)
			mkt_bail("GetPublicKey: %s", mlskey_last_error()->message);
		for (size_t s = 0; s < 2 && algs[i].suites[s]; s++) {
			uint16_t suite = algs[i].suites[s];
			uint8_t *kem = NULL, *ct = NULL, *pt = NULL;
			size_t kem_len = 0, ct_len = 0, pt_len = 0;

			if (!mkt_ok_mlskey(mlskey_encrypt_with_label(suite, pub, pub_len, "Welcome",
								     context, sizeof(context),
								     secret, sizeof(secret), &kem,
								     &kem_len, &ct, &ct_len),
					   "EncryptWithLabel to %s suite %u", algs[i].alg, suite))
				continue;
			mkt_ok(kem_len == algs[i].pub_len && ct_len == sizeof(secret) + 16,
			       "kem_output %zu bytes, ciphertext %zu bytes", kem_len, ct_len);
			if (mkt_ok_mlskey(mlskey_decrypt_with_label(c, uris[i], suite, "Welcome",
								    context, sizeof(context), kem,
								    kem_len, ct, ct_len, &pt,
								    &pt_len),
					  "DecryptWithLabel %s suite %u", algs[i].alg, suite))
				mkt_ok(pt_len == sizeof(secret) && !memcmp(pt, secret, pt_len),
				       "the plaintext is what was sealed");
			mlskey_free(pt, pt_len);
			mlskey_free(kem, kem_len);
			mlskey_free(ct, ct_len);
		}
		mlskey_free(pub, pub_len);
	}
}

/* HPKE OpenBase with info and aad, sealed in software by the project's HPKE. */
static void test_hpke_open(void)
{
	static const struct {
		size_t key;
		uint16_t kem, kdf, aead;
	} cases[] = {
		{ HPKE_P256, MK_HPKE_KEM_P256, 1, 1 },
		{ HPKE_P256, MK_HPKE_KEM_P256, 2, 3 },
		{ X25519, MK_HPKE_KEM_X25519, 3, 2 },
	};
	static const uint8_t info[] = "hpke info", aad[] = "associated data";

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		mk_bytes enc = MK_BYTES_NULL, ct = MK_BYTES_NULL;
		uint8_t *pub = NULL, *pt = NULL;
		size_t pub_len = 0, pt_len = 0;
		int r;

		mlskey_get_public_key(c, uris[cases[i].key], &pub, &pub_len);
		r = mk_hpke_seal_base((mk_hpke_suite){ cases[i].kem, cases[i].kdf, cases[i].aead },
				      pub, pub_len, info, sizeof(info), aad, sizeof(aad), secret,
				      sizeof(secret), NULL, 0, &enc, &ct);
		if (!mkt_ok_r(r, "SealBase kem %#x kdf %u aead %u", cases[i].kem, cases[i].kdf,
			      cases[i].aead))
			continue;
		r = mlskey_hpke_open(c, uris[cases[i].key], cases[i].kdf, cases[i].aead, info,
				     sizeof(info), aad, sizeof(aad), enc.data, enc.len, ct.data,
				     ct.len, &pt, &pt_len);
		if (mkt_ok_mlskey(r, "HpkeOpen kem %#x kdf %u aead %u", cases[i].kem, cases[i].kdf,
				  cases[i].aead))
			mkt_ok(pt_len == sizeof(secret) && !memcmp(pt, secret, pt_len),
			       "HpkeOpen plaintext");
		mlskey_free(pt, pt_len);
		r = mlskey_hpke_open(c, uris[cases[i].key], cases[i].kdf, cases[i].aead, info,
				     sizeof(info), aad, sizeof(aad) - 1, enc.data, enc.len, ct.data,
				     ct.len, &pt, &pt_len);
		mkt_ok_mlskey_err(r, -EBADMSG, "org.mlskey.Error.DecryptFailed",
				  "HpkeOpen with other aad");
		mk_bytes_clear(&enc);
		mk_bytes_clear(&ct);
		mlskey_free(pub, pub_len);
	}
}

/* A sealed message to the P-256 HPKE key, for the error cases. */
typedef struct sealed {
	uint8_t *kem, *ct;
	size_t kem_len, ct_len;
} sealed;

static sealed seal_p256(uint16_t suite, size_t key)
{
	uint8_t *pub = NULL;
	size_t pub_len = 0;
	sealed s = {};

	mlskey_get_public_key(c, uris[key], &pub, &pub_len);
	if (mlskey_encrypt_with_label(suite, pub, pub_len, "Welcome", context, sizeof(context),
				      secret, sizeof(secret), &s.kem, &s.kem_len, &s.ct,
				      &s.ct_len) < 0)
		mkt_bail("EncryptWithLabel: %s", mlskey_last_error()->message);
	mlskey_free(pub, pub_len);
	return s;
}

static void sealed_free(sealed *s)
{
	mlskey_free(s->kem, s->kem_len);
	mlskey_free(s->ct, s->ct_len);
}

static int sign_p256(mlskey_client *h)
{
	uint8_t *sig = NULL;
	size_t n = 0;
	int r;

	r = mlskey_sign_with_label(h, uris[P256], 2, "LeafNodeTBS", content, sizeof(content),
				   &sig, &n);
	mlskey_free(sig, n);
	return r;
}

static void test_input_errors(void)
{
	char label[300], *no_key;
	uint8_t *out = (uint8_t *)"untouched", *before = out, bad_point[65] = { 0x04 };
	size_t n = 0;
	sealed s = seal_p256(2, HPKE_P256);
	int r;

	/* NoSuchKey: a well-formed URI of a key that is not there, with and without checks. */
	no_key = strdup("pkcs11:token=" TOKEN ";id=%00%01%02;type=private");
	r = mlskey_sign_with_label(raw, no_key, 2, "L", content, 1, &out, &n);
	mkt_ok_mlskey_err(r, -ENOKEY, "org.mlskey.Error.NoSuchKey", "SignWithLabel, unknown key");
	r = mlskey_sign_with_label(c, no_key, 2, "L", content, 1, &out, &n);
	mkt_ok_mlskey_err(r, -ENOKEY, "org.mlskey.Error.NoSuchKey",
			  "SignWithLabel, unknown key (libmlskey asks GetPublicKey first)");
	r = mlskey_get_public_key(c, no_key, &out, &n);
	mkt_ok_mlskey_err(r, -ENOKEY, "org.mlskey.Error.NoSuchKey", "GetPublicKey, unknown key");
	r = mlskey_decrypt_with_label(raw, no_key, 2, "Welcome", context, sizeof(context), s.kem,
				      s.kem_len, s.ct, s.ct_len, &out, &n);
	mkt_ok_mlskey_err(r, -ENOKEY, "org.mlskey.Error.NoSuchKey", "DecryptWithLabel, unknown key");
	r = mlskey_delete_key(c, no_key);
	mkt_ok_mlskey_err(r, -ENOKEY, "org.mlskey.Error.NoSuchKey", "DeleteKey, unknown key");
	free(no_key);

	/* NoSuchToken */
	r = mlskey_generate_key(c, "pkcs11:token=no-such-token", NULL, "ecdsa-p256", "x",
				(char **)&out);
	mkt_ok_mlskey_err(r, -ENODEV, "org.mlskey.Error.NoSuchToken", "GenerateKey, unknown token");
	r = mlskey_lock(c, "pkcs11:token=no-such-token");
	mkt_ok_mlskey_err(r, -ENODEV, "org.mlskey.Error.NoSuchToken", "Lock, unknown token");

	/* Unsupported: from the agent (no client checks), and the same from libmlskey. */
	r = mlskey_sign_with_label(raw, uris[ED25519], 2, "L", content, 1, &out, &n);
	mkt_ok_mlskey_err(r, -EOPNOTSUPP, "org.mlskey.Error.Unsupported",
			  "agent: SignWithLabel with an Ed25519 key and suite 2");
	r = mlskey_sign_with_label(c, uris[ED25519], 2, "L", content, 1, &out, &n);
	mkt_ok_mlskey_err(r, -EOPNOTSUPP, "org.mlskey.Error.Unsupported",
			  "libmlskey: SignWithLabel with an Ed25519 key and suite 2");
	mkt_ok(strstr(mlskey_last_error()->message, "ecdsa-p256") != NULL,
	       "the message names the algorithm the suite needs");
	r = mlskey_sign_with_label(raw, uris[P256], 4, "L", content, 1, &out, &n);
	mkt_ok_mlskey_err(r, -EOPNOTSUPP, "org.mlskey.Error.Unsupported",
			  "agent: SignWithLabel with suite 4 (X448)");
	r = mlskey_decrypt_with_label(raw, uris[P256], 2, "Welcome", context, sizeof(context),
				      s.kem, s.kem_len, s.ct, s.ct_len, &out, &n);
	mkt_ok_mlskey_err(r, -EOPNOTSUPP, "org.mlskey.Error.Unsupported",
			  "agent: DecryptWithLabel with a signature key");
	r = mlskey_decrypt_with_label(c, uris[P256], 2, "Welcome", context, sizeof(context),
				      s.kem, s.kem_len, s.ct, s.ct_len, &out, &n);
	mkt_ok_mlskey_err(r, -EOPNOTSUPP, "org.mlskey.Error.Unsupported",
			  "libmlskey: DecryptWithLabel with a signature key");
	r = mlskey_hpke_open(raw, uris[HPKE_P256], 1, 0xffff, NULL, 0, NULL, 0, s.kem, s.kem_len,
			     s.ct, s.ct_len, &out, &n);
	mkt_ok_mlskey_err(r, -EOPNOTSUPP, "org.mlskey.Error.Unsupported",
			  "agent: HpkeOpen with the export-only AEAD");

	/* InvalidInput */
	memset(label, 'a', sizeof(label) - 1);
	label[256] = '\0';
	r = mlskey_sign_with_label(raw, uris[P256], 2, label, content, 1, &out, &n);
	mkt_ok_mlskey_err(r, -EINVAL, "org.mlskey.Error.InvalidInput",
			  "agent: SignWithLabel with a 256-byte label");
	r = mlskey_sign_with_label(c, uris[P256], 2, label, content, 1, &out, &n);
	mkt_ok_mlskey_err(r, -EINVAL, "org.mlskey.Error.InvalidInput",
			  "libmlskey: SignWithLabel with a 256-byte label");
	r = mlskey_sign_with_label(raw, uris[P256], 0, "L", content, 1, &out, &n);
	mkt_ok_mlskey_err(r, -EINVAL, "org.mlskey.Error.InvalidInput",
			  "agent: SignWithLabel with suite 0");
	r = mlskey_sign_with_label(raw, "not-a-uri", 2, "L", content, 1, &out, &n);
	mkt_ok_mlskey_err(r, -EINVAL, "org.mlskey.Error.InvalidInput",
			  "agent: SignWithLabel with a key that is no pkcs11: URI");
	r = mlskey_decrypt_with_label(raw, uris[HPKE_P256], 2, "Welcome", context,
				      sizeof(context), bad_point, sizeof(bad_point), s.ct, s.ct_len,
				      &out, &n);
	mkt_ok_mlskey_err(r, -EINVAL, "org.mlskey.Error.InvalidInput",
			  "agent: DecryptWithLabel with a kem_output off the curve");
	r = mlskey_decrypt_with_label(c, uris[HPKE_P256], 2, "Welcome", context,
				      sizeof(context), s.kem, 33, s.ct, s.ct_len, &out, &n);
	mkt_ok_mlskey_err(r, -EINVAL, "org.mlskey.Error.InvalidInput",
			  "libmlskey: DecryptWithLabel with a 33-byte kem_output for suite 2");
	r = mlskey_hpke_open(raw, uris[HPKE_P256], 9, 1, NULL, 0, NULL, 0, s.kem, s.kem_len,
			     s.ct, s.ct_len, &out, &n);
	mkt_ok_mlskey_err(r, -EINVAL, "org.mlskey.Error.InvalidInput",
			  "agent: HpkeOpen with KDF id 9");
	r = mlskey_generate_key(c, "pkcs11:token=" TOKEN, "signature", "rsa-2048", "x",
				(char **)&out);
	mkt_ok_mlskey_err(r, -EINVAL, "org.mlskey.Error.InvalidInput",
			  "agent: GenerateKey rsa-2048");
	r = mlskey_generate_key(c, "pkcs11:token=" TOKEN, "hpke", "ecdsa-p256", "x",
				(char **)&out);
	mkt_ok_mlskey_err(r, -EINVAL, "org.mlskey.Error.InvalidInput",
			  "agent: GenerateKey of an ecdsa-p256 key for HPKE");
	r = mlskey_sign_with_label(c, uris[P256], 2, "\xff\xfe", content, 1, &out, &n);
	mkt_ok_mlskey_err(r, -EINVAL, "org.mlskey.Error.InvalidInput",
			  "libmlskey: a label that is not UTF-8 never reaches libdbus");

	/* DecryptFailed: wrong label, context, suite, changed ciphertext. */
	r = mlskey_decrypt_with_label(c, uris[HPKE_P256], 2, "UpdatePathNode", context,
				      sizeof(context), s.kem, s.kem_len, s.ct, s.ct_len, &out, &n);
	mkt_ok_mlskey_err(r, -EBADMSG, "org.mlskey.Error.DecryptFailed",
			  "DecryptWithLabel with another label");
	r = mlskey_decrypt_with_label(c, uris[HPKE_P256], 2, "Welcome", context,
				      sizeof(context) - 1, s.kem, s.kem_len, s.ct, s.ct_len, &out,
				      &n);
	mkt_ok_mlskey_err(r, -EBADMSG, "org.mlskey.Error.DecryptFailed",
			  "DecryptWithLabel with another context");
	s.ct[0] ^= 0x80;
	r = mlskey_decrypt_with_label(c, uris[HPKE_P256], 2, "Welcome", context,
				      sizeof(context), s.kem, s.kem_len, s.ct, s.ct_len, &out, &n);
	mkt_ok_mlskey_err(r, -EBADMSG, "org.mlskey.Error.DecryptFailed",
			  "DecryptWithLabel of a changed ciphertext");
	sealed_free(&s);
	s = seal_p256(1, X25519);
	r = mlskey_decrypt_with_label(c, uris[X25519], 3, "Welcome", context, sizeof(context),
				      s.kem, s.kem_len, s.ct, s.ct_len, &out, &n);
	mkt_ok_mlskey_err(r, -EBADMSG, "org.mlskey.Error.DecryptFailed",
			  "DecryptWithLabel of a suite 1 ciphertext as suite 3 (X25519 key)");
	sealed_free(&s);

	mkt_ok(out == before, "no output written by any failed call");
	mkt_ok_mlskey(sign_p256(c), "the agent serves a valid call after all that");
}

/* PIN and dialog errors: the test pinentry is told what to do before each dialog. */
static void test_pin_errors(void)
{
	mlskey_token *t = NULL;
	size_t n = 0;
	int r;

	mkt_ok_mlskey(mlskey_lock(c, NULL), "Lock every token");
	mkt_pinentry_control("MKT_PINENTRY_PIN=000000\n");
	r = sign_p256(c);
	mkt_ok_mlskey_err(r, -EKEYREJECTED, "org.mlskey.Error.PinIncorrect",
			  "SignWithLabel when the person types a wrong PIN");
	if (mkt_ok_mlskey(mlskey_list_tokens(c, &t, &n), "ListTokens")) {
		const mlskey_token *f = find_token(t, n, TOKEN);

		mkt_ok(f && !f->logged_in && f->pin_count_low,
		       "the token shows a wrong PIN was entered (pin_count_low)");
	}
	mlskey_tokens_free(t, n);

	mkt_pinentry_control("MKT_PINENTRY_CANCEL=1\n");
	r = sign_p256(c);
	mkt_ok_mlskey_err(r, -ECANCELED, "org.mlskey.Error.Cancelled",
			  "SignWithLabel when the person cancels the dialog");

	mkt_pinentry_control("exit 0\n");
	r = sign_p256(c);
	mkt_ok_mlskey_err(r, -EACCES, "org.mlskey.Error.AccessDenied",
			  "SignWithLabel when no PIN dialog can be shown");

	/* PinLocked: a token that reports its PIN locked (see softhsm_mark_pin_locked). */
	if (locked_marked) {
		_cleanup_free_ char *uri = NULL;
		int before = mkt_pinentry_getpins();

		r = mlskey_generate_key(c, "pkcs11:token=" TOKEN_LOCKED, NULL, "ecdsa-p256", "k",
					&uri);
		mkt_ok_mlskey_err(r, -EKEYREVOKED, "org.mlskey.Error.PinLocked",
				  "GenerateKey on a token whose PIN is locked");
		mkt_ok(mkt_pinentry_getpins() == before, "... without a PIN dialog");
		if (mkt_ok_mlskey(mlskey_list_tokens(c, &t, &n), "ListTokens")) {
			const mlskey_token *f = find_token(t, n, TOKEN_LOCKED);

			mkt_ok(f && f->pin_locked, "the token is listed with pin_locked");
		}
		mlskey_tokens_free(t, n);
	} else
		printf("ok %d - PinLocked # SKIP could not mark the SoftHSM token's PIN locked\n",
		       ++mkt_n);

	mkt_pinentry_control("");
	mkt_ok_mlskey(sign_p256(c), "the right PIN works again");
	if (mkt_ok_mlskey(mlskey_lock(c, "pkcs11:token=" TOKEN), "Lock the token")) {
		int before = mkt_pinentry_getpins();

		mkt_ok_mlskey(sign_p256(c), "SignWithLabel after Lock");
		mkt_ok(mkt_pinentry_getpins() == before + 1, "... asked for the PIN again");
	}
}

/*
 * TokenError: the store under a token fails (the agent cannot open files). SoftHSM then
 * takes that token for broken until it is loaded again, so this uses a token of its own.
 */
static void test_token_error(void)
{
	_cleanup_free_ char *uri = NULL, *first = NULL;
	struct rlimit old;
	int r;

	r = mlskey_generate_key(c, "pkcs11:token=" TOKEN_BROKEN, NULL, "ecdsa-p256", "first",
				&first);
	if (!mkt_ok_mlskey(r, "GenerateKey on token %s (logs in)", TOKEN_BROKEN))
		return;
	if (!files_freeze(agent, &old)) {
		printf("ok %d - TokenError # SKIP cannot limit the agent's files: %s\n", ++mkt_n,
		       strerror(errno));
		return;
	}
	r = mlskey_generate_key(c, "pkcs11:token=" TOKEN_BROKEN, NULL, "ecdsa-p256", "no-room",
				&uri);
	files_restore(agent, &old);
	mkt_ok_mlskey_err(r, -EIO, "org.mlskey.Error.TokenError",
			  "GenerateKey when the token's store cannot write");
	if (uri)
		mlskey_delete_key(c, uri);
	mkt_ok_mlskey(sign_p256(c), "the agent serves a valid call on another token afterwards");
}

/* TokenAbsent: a token that goes away while the agent holds a key of it. */
static void test_token_absent(void)
{
	_cleanup_free_ char *uri = NULL;
	uint8_t *sig = NULL;
	size_t n = 0;
	int r;

	r = mlskey_generate_key(c, "pkcs11:token=" TOKEN2, NULL, "ecdsa-p256", "gone", &uri);
	if (!mkt_ok_mlskey(r, "GenerateKey on a second token"))
		return;
	mkt_ok_mlskey(mlskey_sign_with_label(c, uri, 2, "L", content, 1, &sig, &n),
		      "SignWithLabel with its key");
	mlskey_free(sig, n);
	mkt_softhsm_delete_token(TOKEN2);
	r = mlskey_sign_with_label(raw, uri, 2, "L", content, 1, &sig, &n);
	mkt_ok_mlskey_err(r, -ENOMEDIUM, "org.mlskey.Error.TokenAbsent",
			  "SignWithLabel after the token was deleted");
	mkt_ok_mlskey(sign_p256(c), "keys on the other token still work");}

/* Busy: a queue of one call per token, and a PIN dialog that takes its time. */
typedef struct busy_job {
	mlskey_client *h;
	int r;
	char name[128];
} busy_job;

static void *busy_thread(void *p)
{
	busy_job *j = p;

	j->r = sign_p256(j->h);
	snprintf(j->name, sizeof(j->name), "%s", mlskey_last_error()->name);
	return NULL;
}

static void test_busy(void)
{
	char conf[512];
	const char *args[] = { "--config", conf, NULL };
	busy_job jobs[6] = {};
	pthread_t th[ELEMENTSOF(jobs)];
	int busy = 0, ok = 0, other = 0;
	FILE *f;

	mkt_agent_stop(agent);
	snprintf(conf, sizeof(conf), "%s/mlskeyd-busy.conf", mkt_tmpdir());
	f = fopen(conf, "we");
	if (!f)
		mkt_bail("cannot write %s", conf);
	fprintf(f, "[agent]\nworkers = 1\nmax-queue = 1\n" MKT_RULE_OPEN);
	fclose(f);
	agent = mkt_agent_start(args);
	mlskey_client_free(c);
	mlskey_client_free(raw);
	c = connect_or_bail(MLSKEY_CHECK_ALL);
	raw = connect_or_bail(0);

	mkt_pinentry_control("MKT_PINENTRY_SLEEP=2\n");
	for (size_t i = 0; i < ELEMENTSOF(jobs); i++) {
		jobs[i].h = connect_or_bail(0);
		pthread_create(&th[i], NULL, busy_thread, &jobs[i]);
	}
	for (size_t i = 0; i < ELEMENTSOF(jobs); i++) {
		pthread_join(th[i], NULL);
		if (jobs[i].r == -EBUSY && strcmp(jobs[i].name, "org.mlskey.Error.Busy") == 0)
			busy++;
		else if (jobs[i].r == 0)
			ok++;
		else {
			other++;
			mkt_diag("call %zu: r=%d %s", i, jobs[i].r, jobs[i].name);
		}
		mlskey_client_free(jobs[i].h);
	}
	mkt_pinentry_control("");
	mkt_ok(busy >= 1 && ok >= 1 && other == 0,
	       "6 calls at once, queue of 1 -> Busy for some (%d), done for the others (%d)", busy,
	       ok);
	mkt_ok_mlskey(sign_p256(c), "a call after the rush is served");
}

static void test_delete(void)
{
	mlskey_key *keys = NULL;
	size_t n = 0;
	int r;

	mkt_ok_mlskey(mlskey_delete_key(c, uris[1]), "DeleteKey %s", algs[1].alg);
	if (mkt_ok_mlskey(mlskey_list_keys(c, &keys, &n), "ListKeys"))
		mkt_ok(!find_key(keys, n, uris[1]) && find_key(keys, n, uris[0]),
		       "the deleted key is gone, the others stay");
	mlskey_keys_free(keys, n);
	r = mlskey_delete_key(c, uris[1]);
	mkt_ok_mlskey_err(r, -ENOKEY, "org.mlskey.Error.NoSuchKey", "DeleteKey again");
	{
		uint8_t *sig = NULL;
		size_t sn = 0;

		r = mlskey_sign_with_label(c, uris[1], 7, "L", content, 1, &sig, &sn);
		mkt_ok_mlskey_err(r, -ENOKEY, "org.mlskey.Error.NoSuchKey",
				  "SignWithLabel with the deleted key (cache dropped)");
	}
}

static void test_agent_gone(void)
{
	int r;

	mkt_agent_stop(agent);
	agent = 0;
	r = mlskey_ping(c);
	mkt_ok_mlskey_err(r, -ECONNREFUSED, "org.freedesktop.DBus.Error.ServiceUnknown",
			  "Ping when no agent owns the name");
	r = sign_p256(raw);
	mkt_ok(r == -ECONNREFUSED, "SignWithLabel when no agent owns the name: r=%d %s", r,
	       mlskey_last_error()->name);
}

int main(void)
{
	mkt_softhsm_setup();
	mkt_softhsm_add_token(TOKEN);
	mkt_softhsm_add_token(TOKEN2); /* SoftHSM sees the tokens there are when it starts */
	mkt_softhsm_add_token(TOKEN_LOCKED);
	mkt_softhsm_add_token(TOKEN_BROKEN);
	locked_marked = softhsm_mark_pin_locked(TOKEN_LOCKED);
	mkt_pinentry_log_path();
	mkt_pinentry_control("");
	/* HpkeOpen and labels outside RFC 9420 are tested here: the policy lets them by */
	agent = mkt_agent_start((const char *[]){
		"--config", mkt_write_file("libmlskey.conf", MKT_RULE_OPEN), NULL });
	addr = getenv("DBUS_SESSION_BUS_ADDRESS");
	if (!addr)
		mkt_bail("no bus address");
	c = connect_or_bail(MLSKEY_CHECK_ALL);
	raw = connect_or_bail(0);

	test_connect();
	test_tokens();
	test_generate();
	test_keys();
	test_sign();
	test_decrypt();
	test_hpke_open();
	test_input_errors();
	test_pin_errors();
	test_token_error();
	test_token_absent();
	test_busy();
	test_delete();
	test_agent_gone();

	mlskey_client_free(c);
	mlskey_client_free(raw);
	for (size_t i = 0; i < ELEMENTSOF(uris); i++)
		free(uris[i]);
	return mkt_done();
}
