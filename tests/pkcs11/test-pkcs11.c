/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The token layer on real SoftHSM2 tokens through p11-kit: enumeration, login, generation of
 * every algorithm, signatures checked by OpenSSL, ECDH compared with OpenSSL, the known-answer
 * vectors imported into the token, URIs (round trip, restart), two tokens, many threads,
 * bad input to every public function, and a token that disappears.
 */
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>
#include <p11-kit/p11-kit.h>
#include <p11-kit/uri.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/error.h"
#include "pkcs11/p11.h"
#include "tests/fixture.h"
#include "tests/p11-import.h"
#include "tests/tap.h"
#include "tests/vectors.h"

#define PIN ((const uint8_t *)MKT_USER_PIN)
#define PIN_LEN (sizeof(MKT_USER_PIN) - 1)

static const char *const all_algs_names[] = { "ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "ed25519",
					      "dhkem-p256", "dhkem-p384", "dhkem-p521",
					      "dhkem-x25519" };

static mk_p11 *p;
static char *uri_alpha, *uri_beta, *uri_pinlock, *uri_gone;

/* --- OpenSSL helpers --------------------------------------------------------------------- */

static const char *group_name(mk_curve c)
{
	switch (c) {
	case MK_CURVE_P256:
		return "prime256v1";
	case MK_CURVE_P384:
		return "secp384r1";
	case MK_CURVE_P521:
		return "secp521r1";
	default:
		return NULL;
	}
}

/* An OpenSSL key from an MLS public key (and, if priv, its private scalar/seed). */
static EVP_PKEY *pkey_from(mk_curve c, const uint8_t *pub, size_t pub_len, const uint8_t *priv,
			   size_t priv_len)
{
	OSSL_PARAM_BLD *b;
	OSSL_PARAM *params;
	EVP_PKEY_CTX *ctx;
	EVP_PKEY *k = NULL;
	BIGNUM *bn = NULL;

	if (c == MK_CURVE_ED25519 || c == MK_CURVE_X25519) {
		int type = c == MK_CURVE_ED25519 ? EVP_PKEY_ED25519 : EVP_PKEY_X25519;

		return priv ? EVP_PKEY_new_raw_private_key(type, NULL, priv, priv_len)
			    : EVP_PKEY_new_raw_public_key(type, NULL, pub, pub_len);
	}
	b = OSSL_PARAM_BLD_new();
	OSSL_PARAM_BLD_push_utf8_string(b, OSSL_PKEY_PARAM_GROUP_NAME, group_name(c), 0);
	OSSL_PARAM_BLD_push_octet_string(b, OSSL_PKEY_PARAM_PUB_KEY, pub, pub_len);
	if (priv) {
		bn = BN_bin2bn(priv, (int)priv_len, NULL);
		OSSL_PARAM_BLD_push_BN(b, OSSL_PKEY_PARAM_PRIV_KEY, bn);
	}
	params = OSSL_PARAM_BLD_to_param(b);
	ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	if (EVP_PKEY_fromdata_init(ctx) != 1 ||
	    EVP_PKEY_fromdata(ctx, &k, priv ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY, params) != 1)
		k = NULL;
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(b);
	BN_free(bn);
	return k;
}

static const EVP_MD *curve_md(mk_curve c)
{
	switch (c) {
	case MK_CURVE_P256:
		return EVP_sha256();
	case MK_CURVE_P384:
		return EVP_sha384();
	case MK_CURVE_P521:
		return EVP_sha512();
	default:
		return NULL;
	}
}

/* Verifies a signature the way an MLS peer would: ECDSA with the curve's hash, or Ed25519. */
static bool verify_with(EVP_PKEY *k, mk_curve c, const uint8_t *msg, size_t n, const uint8_t *sig,
			size_t sig_len)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	bool ok;

	ok = k && EVP_DigestVerifyInit(ctx, NULL, curve_md(c), NULL, k) == 1 &&
	     EVP_DigestVerify(ctx, sig, sig_len, msg, n) == 1;
	EVP_MD_CTX_free(ctx);
	return ok;
}

static bool verify(mk_curve c, const uint8_t *pub, size_t pub_len, const uint8_t *msg, size_t n,
		   const uint8_t *sig, size_t sig_len)
{
	EVP_PKEY *k = pkey_from(c, pub, pub_len, NULL, 0);
	bool ok = verify_with(k, c, msg, n, sig, sig_len);

	EVP_PKEY_free(k);
	return ok;
}

/* Software ECDH: priv with peer's public key; returns the length written to out. */
static size_t soft_dh(EVP_PKEY *priv, EVP_PKEY *peer, uint8_t *out, size_t cap)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(priv, NULL);
	size_t len = cap;

	if (!ctx || EVP_PKEY_derive_init(ctx) != 1 || EVP_PKEY_derive_set_peer(ctx, peer) != 1 ||
	    EVP_PKEY_derive(ctx, out, &len) != 1)
		len = 0;
	EVP_PKEY_CTX_free(ctx);
	return len;
}

static EVP_PKEY *ephemeral(mk_curve c, uint8_t *pub, size_t *pub_len)
{
	EVP_PKEY *k = c == MK_CURVE_X25519 ? EVP_PKEY_Q_keygen(NULL, NULL, "X25519")
					   : EVP_PKEY_Q_keygen(NULL, NULL, "EC", group_name(c));

	if (k && EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, pub, 140,
						 pub_len) != 1) {
		EVP_PKEY_free(k);
		return NULL;
	}
	return k;
}

/* --- layer helpers ----------------------------------------------------------------------- */

static mk_key_alg alg_of(const char *name)
{
	return mk_key_alg_from_name(name);
}

static const mk_token_info *token_by_label(const mk_token_info *a, size_t n, const char *label)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(a[i].label, label) == 0)
			return &a[i];
	return NULL;
}

static char *token_uri(const char *label)
{
	mk_token_info *a = NULL;
	const mk_token_info *t;
	size_t n = 0;
	char *s;

	if (mk_p11_list_tokens(p, &a, &n) < 0)
		mkt_bail("cannot list tokens: %s", mk_error_text(-EIO));
	t = token_by_label(a, n, label);
	if (!t)
		mkt_bail("token %s not found", label);
	s = strdup(t->uri);
	mk_token_info_array_free(a, n);
	return s;
}

static mk_p11 *open_path(void)
{
	const char *paths[] = { mkt_softhsm_module(), NULL };
	mk_p11_options o = { .module_paths = paths };
	mk_p11 *q = NULL;
	int r = mk_p11_open(&o, &q);

	if (r < 0)
		mkt_bail("mk_p11_open: %s", mk_error_text(r));
	return q;
}

static mk_key *find(const char *uri)
{
	mk_key *k = NULL;
	int r = mk_p11_find_key(p, uri, &k);

	if (r < 0)
		mkt_diag("find %s: %s", uri, mk_error_text(r));
	return k;
}

static bool key_listed(const char *tok, const char *key_uri)
{
	mk_key_info *a = NULL;
	size_t n = 0;
	bool found = false;

	if (mk_p11_list_keys(p, tok, &a, &n) < 0)
		return false;
	for (size_t i = 0; i < n; i++)
		found |= strcmp(a[i].uri, key_uri) == 0;
	mk_key_info_array_free(a, n);
	return found;
}

/* --- enumeration and login --------------------------------------------------------------- */

static void test_enumerate(void)
{
	mk_token_info *a = NULL, one = { 0 };
	const mk_token_info *t;
	size_t n = 0;

	mkt_ok_r(mk_p11_list_tokens(p, &a, &n), "list tokens");
	mkt_ok(n == 4, "four SoftHSM tokens (got %zu)", n);
	t = token_by_label(a, n, "alpha");
	if (!mkt_ok(t != NULL, "token alpha listed"))
		goto out;
	mkt_ok(strcmp(t->manufacturer, "SoftHSM project") == 0, "manufacturer \"%s\"",
	       t->manufacturer);
	mkt_ok(strcmp(t->model, "SoftHSM v2") == 0, "model \"%s\" (trailing blanks trimmed)",
	       t->model);
	mkt_ok(strlen(t->serial) == 16 && strspn(t->serial, "0123456789abcdef") == 16,
	       "serial \"%s\" is 16 hex digits", t->serial);
	mkt_ok(t->module && t->module[0], "module named \"%s\"", t->module);
	mkt_ok(t->present && t->login_required && !t->logged_in, "present, login required, "
	       "not logged in");
	mkt_ok(!t->pin_locked && !t->pin_final_try && !t->protected_auth_path && !t->write_protected,
	       "no PIN trouble, no PIN pad, writable");
	mkt_ok(strncmp(t->uri, "pkcs11:", 7) == 0 && strstr(t->uri, "token=alpha") &&
	       strstr(t->uri, "serial=") && strstr(t->uri, "model=SoftHSM%20v2") &&
	       strstr(t->uri, "manufacturer=SoftHSM%20project"),
	       "token URI %s", t->uri);
	mkt_ok(!strchr(t->uri, ' '), "URI has no raw blanks");

	mkt_ok_r(mk_p11_get_token(p, t->uri, &one), "get_token by its URI");
	mkt_ok(one.label && strcmp(one.label, "alpha") == 0 && strcmp(one.serial, t->serial) == 0,
	       "get_token finds the same token");
	mk_token_info_clear(&one);
	mkt_ok_r(mk_p11_get_token(p, "pkcs11:token=beta", &one), "get_token by label only");
	mkt_ok(one.label && strcmp(one.label, "beta") == 0, "that is beta");
	mk_token_info_clear(&one);
	mkt_ok_err(mk_p11_get_token(p, "pkcs11:token=nope", &one), -ENODEV, "unknown token: ENODEV");
	mkt_ok(mk_error_message() && strstr(mk_error_message(), "nope"), "message names the URI: %s",
	       mk_error_message());
	mkt_ok_err(mk_p11_get_token(p, "garbage", &one), -EINVAL, "not a URI: EINVAL");
	mkt_ok_err(mk_p11_get_token(p, "pkcs11:model=SoftHSM%20v2", &one), -EINVAL,
		   "a URI that matches four tokens is ambiguous");
	mkt_ok_err(mk_p11_get_token(p, NULL, &one), -EINVAL, "NULL URI");
	mkt_ok_err(mk_p11_get_token(p, t->uri, NULL), -EINVAL, "NULL result");
	mkt_ok(one.uri == NULL, "result untouched on failure");
out:
	mk_token_info_array_free(a, n);
}

static bool token_flags(const char *uri, mk_token_info *ret)
{
	return mk_p11_get_token(p, uri, ret) == 0;
}

static void test_login(void)
{
	mk_token_info ti = { 0 };
	uint8_t long_pin[300];

	mkt_ok_err(mk_p11_login(p, uri_pinlock, (const uint8_t *)"000000", 6), -EKEYREJECTED,
		   "wrong PIN: EKEYREJECTED");
	mkt_ok(mk_error_message() && strstr(mk_error_message(), "pinlock") &&
	       strstr(mk_error_message(), "PIN"), "message names token and PIN: %s",
	       mk_error_message());
	if (token_flags(uri_pinlock, &ti))
		mkt_ok(ti.pin_count_low && !ti.logged_in, "after a wrong PIN: pin-count-low, "
		       "not logged in");
	mk_token_info_clear(&ti);
	mkt_ok_r(mk_p11_login(p, uri_pinlock, PIN, PIN_LEN), "right PIN after a wrong one");
	mkt_ok_r(mk_p11_logout(p, uri_pinlock), "log out of pinlock");

	mkt_ok_r(mk_p11_login(p, uri_alpha, PIN, PIN_LEN), "log in to alpha");
	mkt_ok_r(mk_p11_login(p, uri_alpha, PIN, PIN_LEN), "log in again: still 0");
	if (token_flags(uri_alpha, &ti))
		mkt_ok(ti.logged_in, "alpha shows logged in");
	mk_token_info_clear(&ti);
	mkt_ok_r(mk_p11_logout(p, uri_alpha), "log out of alpha");
	if (token_flags(uri_alpha, &ti))
		mkt_ok(!ti.logged_in, "alpha shows logged out");
	mk_token_info_clear(&ti);
	mkt_ok_r(mk_p11_logout(p, uri_alpha), "log out again: still 0");

	mkt_ok_err(mk_p11_login(p, uri_alpha, NULL, 6), -EINVAL, "NULL PIN with a length");
	memset(long_pin, '1', sizeof(long_pin));
	mkt_ok_err(mk_p11_login(p, uri_alpha, long_pin, sizeof(long_pin)), -EINVAL,
		   "300-byte PIN refused before it reaches the token");
	mkt_ok_err(mk_p11_login(p, "pkcs11:token=nope", PIN, PIN_LEN), -ENODEV, "unknown token");
	mkt_ok_err(mk_p11_login(p, "%%%", PIN, PIN_LEN), -EINVAL, "garbage URI");
	mkt_ok_err(mk_p11_login(NULL, uri_alpha, PIN, PIN_LEN), -EINVAL, "NULL layer");
	mkt_ok_err(mk_p11_logout(NULL, NULL), -EINVAL, "logout: NULL layer");
	mkt_ok_err(mk_p11_logout(p, "pkcs11:token=nope"), -ENODEV, "logout: unknown token");

	mkt_ok_r(mk_p11_login(p, uri_alpha, PIN, PIN_LEN), "log in to alpha for what follows");
	mkt_ok_r(mk_p11_login(p, uri_beta, PIN, PIN_LEN), "log in to beta");
	mkt_ok_r(mk_p11_login(p, uri_gone, PIN, PIN_LEN), "log in to gone");
}

/* --- generation, signing, deriving ------------------------------------------------------- */

static void check_sign(mk_key *k, const char *name)
{
	const mk_key_info *i = mk_key_get_info(k);
	mk_curve c = mk_key_alg_curve(i->alg);
	static const uint8_t msg[] = "MLS 1.0 SignWithLabel over some content";
	uint8_t digest[64];
	unsigned int dlen = 0;
	mk_bytes sig = MK_BYTES_NULL;
	mk_secret *dh = NULL;
	uint8_t pt[140];

	if (!mkt_ok_r(mk_key_sign(k, msg, sizeof(msg), &sig), "%s: sign", name))
		return;
	if (c == MK_CURVE_ED25519)
		mkt_ok(sig.len == 64, "%s: raw 64-byte signature", name);
	else
		mkt_ok(sig.len > 8 && sig.data[0] == 0x30, "%s: DER signature (%zu bytes)", name,
		       sig.len);
	mkt_ok(verify(c, i->public_key, i->public_key_len, msg, sizeof(msg), sig.data, sig.len),
	       "%s: OpenSSL verifies the token's signature", name);
	mkt_ok(!verify(c, i->public_key, i->public_key_len, msg, sizeof(msg) - 1, sig.data,
		       sig.len), "%s: and rejects it for another message", name);
	mk_bytes_clear(&sig);

	mkt_ok_r(mk_key_sign(k, NULL, 0, &sig), "%s: sign the empty message", name);
	mkt_ok(verify(c, i->public_key, i->public_key_len, (const uint8_t *)"", 0, sig.data,
		      sig.len), "%s: empty message verifies", name);
	mk_bytes_clear(&sig);

	if (c != MK_CURVE_ED25519) {
		EVP_Digest(msg, sizeof(msg), digest, &dlen, curve_md(c), NULL);
		mkt_ok_r(mk_key_sign_digest(k, digest, dlen, &sig), "%s: sign a digest", name);
		mkt_ok(verify(c, i->public_key, i->public_key_len, msg, sizeof(msg), sig.data,
			      sig.len), "%s: digest signature verifies over the message", name);
		mk_bytes_clear(&sig);
		mkt_ok_err(mk_key_sign_digest(k, digest, dlen - 1, &sig), -EINVAL,
			   "%s: digest of the wrong length", name);
	} else {
		mkt_ok_err(mk_key_sign_digest(k, digest, 32, &sig), -EOPNOTSUPP,
			   "%s: no digest signing for Ed25519", name);
	}
	mkt_ok(sig.data == NULL, "%s: no signature on failure", name);
	memset(pt, 4, sizeof(pt));
	mkt_ok_err(mk_key_derive(k, pt, 65, &dh), -EOPNOTSUPP, "%s: a signature key cannot derive",
		   name);
	mkt_ok(dh == NULL, "%s: no secret on failure", name);
}

static void check_derive(mk_key *k, const char *name)
{
	const mk_key_info *i = mk_key_get_info(k);
	mk_curve c = mk_key_alg_curve(i->alg);
	uint8_t pub[140], want[80];
	size_t pub_len = 0, want_len;
	EVP_PKEY *eph, *tok_pub;
	mk_secret *dh = NULL;
	mk_bytes sig = MK_BYTES_NULL;

	eph = ephemeral(c, pub, &pub_len);
	tok_pub = pkey_from(c, i->public_key, i->public_key_len, NULL, 0);
	want_len = soft_dh(eph, tok_pub, want, sizeof(want));
	mkt_ok(want_len == mk_curve_get(c)->dh_len, "%s: OpenSSL DH gives %zu bytes", name,
	       want_len);
	if (mkt_ok_r(mk_key_derive(k, pub, pub_len, &dh), "%s: derive on the token", name))
		mkt_ok(dh->len == want_len && memcmp(dh->data, want, want_len) == 0,
		       "%s: token DH equals OpenSSL's", name);
	mk_secret_free(dh);
	dh = NULL;
	EVP_PKEY_free(eph);
	EVP_PKEY_free(tok_pub);

	mkt_ok_err(mk_key_sign(k, pub, 10, &sig), -EOPNOTSUPP, "%s: a derive key cannot sign", name);
	mkt_ok_err(mk_key_derive(k, pub, pub_len - 1, &dh), -EINVAL, "%s: short point", name);
	mkt_ok_err(mk_key_derive(k, NULL, pub_len, &dh), -EINVAL, "%s: NULL point", name);
	mkt_ok_err(mk_key_derive(k, pub, pub_len, NULL), -EINVAL, "%s: NULL result", name);
	if (c != MK_CURVE_X25519) {
		pub[pub_len - 1] ^= 1;
		mkt_ok_err(mk_key_derive(k, pub, pub_len, &dh), -EINVAL, "%s: off-curve point",
			   name);
		pub[0] = 0x02;
		mkt_ok_err(mk_key_derive(k, pub, pub_len, &dh), -EINVAL, "%s: not uncompressed",
			   name);
	} else {
		/* Small-order points give an all-zero result: refused. */
		memset(pub, 0, 32);
		mkt_ok(mk_key_derive(k, pub, 32, &dh) < 0, "%s: the zero point is refused", name);
		pub[0] = 1;
		mkt_ok(mk_key_derive(k, pub, 32, &dh) < 0, "%s: the order-1 point is refused", name);
	}
	mkt_ok(dh == NULL, "%s: no secret on failure", name);
}

static void test_generate_all(void)
{
	for (size_t a = 0; a < ELEMENTSOF(all_algs_names); a++) {
		const char *name = all_algs_names[a];
		mk_key_alg alg = alg_of(name);
		char label[64], *uri = NULL;
		const mk_key_info *i;
		mk_key *k = NULL;

		snprintf(label, sizeof(label), "gen-%s", name);
		if (!mkt_ok_r(mk_p11_generate_key(p, uri_alpha, alg, label, &uri), "generate %s",
			      name))
			continue;
		mkt_ok(strstr(uri, "token=alpha") && strstr(uri, "type=private") &&
		       strstr(uri, "id=") && strstr(uri, label), "%s: key URI %s", name, uri);
		k = find(uri);
		if (!mkt_ok(k != NULL, "%s: find by its URI", name)) {
			free(uri);
			continue;
		}
		i = mk_key_get_info(k);
		mkt_ok(i->alg == alg && i->reason == NULL, "%s: listed as %s", name,
		       mk_key_alg_name(i->alg));
		mkt_ok(strcmp(i->uri, uri) == 0, "%s: same URI back", name);
		mkt_ok(strcmp(i->label, label) == 0 && i->id_len == 16, "%s: label and 16-byte id",
		       name);
		mkt_ok(i->public_key && i->public_key_len == mk_curve_get(mk_key_alg_curve(alg))->pub_len,
		       "%s: %zu-byte public key", name, i->public_key_len);
		mkt_ok(i->private_visible && i->local && i->never_extractable && i->always_sensitive &&
		       i->sensitive && !i->extractable, "%s: provenance: local, never extractable, "
		       "always sensitive", name);
		mkt_ok(i->can_sign == mk_key_alg_is_signature(alg) &&
		       i->can_derive == !mk_key_alg_is_signature(alg), "%s: exactly one purpose", name);
		mkt_ok(strcmp(i->token_uri, uri_alpha) == 0, "%s: token URI", name);
		mkt_ok(key_listed(uri_alpha, uri), "%s: in alpha's key list", name);
		if (mk_key_alg_is_signature(alg))
			check_sign(k, name);
		else
			check_derive(k, name);
		mk_key_unref(k);
		free(uri);
	}
}

/* A certificate for the public key `pub` (P-256, MLS encoding), signed by a throwaway CA key. */
static int make_cert(const uint8_t *pub, size_t pub_len, mk_bytes *ret)
{
	EVP_PKEY *subject = pkey_from(MK_CURVE_P256, pub, pub_len, NULL, 0);
	EVP_PKEY *ca = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	unsigned char *der = NULL;
	int len = -1;

	if (subject && ca && x && X509_set_version(x, X509_VERSION_3) == 1 &&
	    ASN1_INTEGER_set(X509_get_serialNumber(x), 1) == 1 &&
	    X509_gmtime_adj(X509_getm_notBefore(x), 0) && X509_gmtime_adj(X509_getm_notAfter(x), 3600) &&
	    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
				       (const unsigned char *)"clerk", -1, -1, 0) == 1 &&
	    X509_set_issuer_name(x, X509_get_subject_name(x)) == 1 && X509_set_pubkey(x, subject) == 1 &&
	    X509_sign(x, ca, EVP_sha256()) > 0)
		len = i2d_X509(x, &der);
	X509_free(x);
	EVP_PKEY_free(ca);
	EVP_PKEY_free(subject);
	if (len <= 0)
		return -EIO;
	len = mk_bytes_dup(der, (size_t)len, ret);
	OPENSSL_free(der);
	return len;
}

static bool listed_with_cert(const char *uri)
{
	mk_key_info *keys = NULL;
	size_t n = 0;
	bool has = false;

	if (mk_p11_list_keys(p, uri_alpha, &keys, &n) < 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (strcmp(keys[i].uri, uri) == 0)
			has = keys[i].has_certificate;
	mk_key_info_array_free(keys, n);
	return has;
}

/* has_certificate follows the certificate's public key, not its CKA_ID: a certificate stored
 * under key B's id but carrying key A's public key belongs to A, never to B. */
static void test_certificate(void)
{
	_cleanup_bytes_ mk_bytes cert = MK_BYTES_NULL;
	char *uri_a = NULL, *uri_b = NULL;
	mk_key *a = NULL, *b = NULL;

	if (!mkt_ok_r(mk_p11_generate_key(p, uri_alpha, MK_ALG_ECDSA_P256, "cert-a", &uri_a),
		      "certificate: generate key A") ||
	    !mkt_ok_r(mk_p11_generate_key(p, uri_alpha, MK_ALG_ECDSA_P256, "cert-b", &uri_b),
		      "certificate: generate key B"))
		goto out;
	a = find(uri_a);
	b = find(uri_b);
	if (!mkt_ok(a && b, "certificate: keys found"))
		goto out;
	mkt_ok(!listed_with_cert(uri_a) && !listed_with_cert(uri_b),
	       "certificate: no key has one before the import");
	if (!mkt_ok_r(make_cert(mk_key_get_info(a)->public_key, mk_key_get_info(a)->public_key_len,
				&cert),
		      "certificate: OpenSSL made a certificate for A's public key"))
		goto out;
	if (!mkt_ok_r(mkt_import_cert("alpha", "cert-of-a", mk_key_get_info(b)->id,
				      mk_key_get_info(b)->id_len, cert.data, cert.len),
		      "certificate: imported under B's CKA_ID"))
		goto out;
	mkt_ok(listed_with_cert(uri_a), "certificate: A has a certificate (its public key matches)");
	mkt_ok(!listed_with_cert(uri_b), "certificate: B has none (the CKA_ID alone does not count)");
out:
	mk_key_unref(a);
	mk_key_unref(b);
	if (uri_a)
		mk_p11_delete_key(p, uri_a);
	if (uri_b)
		mk_p11_delete_key(p, uri_b);
	free(uri_a);
	free(uri_b);
}

static void test_delete(void)
{
	char *uri = NULL;
	mk_key *k = NULL;
	mk_bytes sig = MK_BYTES_NULL;

	if (!mkt_ok_r(mk_p11_generate_key(p, uri_alpha, MK_ALG_ECDSA_P256, "to-delete", &uri),
		      "generate a key to delete"))
		return;
	k = find(uri);
	mkt_ok_r(mk_p11_delete_key(p, uri), "delete it");
	mkt_ok(!key_listed(uri_alpha, uri), "no longer listed");
	mkt_ok_err(mk_p11_find_key(p, uri, &(mk_key *){ NULL }), -ENOKEY, "find: ENOKEY");
	mkt_ok_err(mk_p11_delete_key(p, uri), -ENOKEY, "delete again: ENOKEY");
	if (k)
		mkt_ok_err(mk_key_sign(k, (const uint8_t *)"x", 1, &sig), -ENOKEY,
			   "a reference held across the deletion: ENOKEY, no crash");
	mkt_ok(mk_error_message() && strstr(mk_error_message(), "to-delete"), "message: %s",
	       mk_error_message());
	mk_key_unref(k);
	free(uri);

	mkt_ok_err(mk_p11_delete_key(p, "pkcs11:token=alpha"), -EINVAL,
		   "a URI without id or object deletes nothing");
	mkt_ok_err(mk_p11_delete_key(p, "junk"), -EINVAL, "garbage URI");
	mkt_ok_err(mk_p11_delete_key(p, NULL), -EINVAL, "NULL URI");
	mkt_ok_err(mk_p11_delete_key(NULL, "pkcs11:id=%01"), -EINVAL, "NULL layer");
	mkt_ok_err(mk_p11_delete_key(p, "pkcs11:token=nope;id=%01"), -ENODEV, "unknown token");
}

/* --- known answers through the token ----------------------------------------------------- */

/* RFC 9420 varint, minimal form (tests build SignContent by hand, independent of common/). */
static size_t put_varint(uint8_t *out, size_t v)
{
	if (v < 64) {
		out[0] = (uint8_t)v;
		return 1;
	}
	out[0] = (uint8_t)(0x40 | (v >> 8));
	out[1] = (uint8_t)v;
	return 2;
}

/* SignContent = V("MLS 1.0 " + label) || V(content). */
static size_t sign_content(const char *label, const mk_bytes *content, uint8_t *out)
{
	char full[128];
	size_t n = 0, l = (size_t)snprintf(full, sizeof(full), "MLS 1.0 %s", label);

	n += put_varint(out + n, l);
	memcpy(out + n, full, l);
	n += l;
	n += put_varint(out + n, content->len);
	memcpy(out + n, content->data, content->len);
	return n + content->len;
}

static const struct {
	int suite;
	mk_key_alg sig, kem;
} suites[] = {
	{ 1, MK_ALG_ED25519, MK_ALG_DHKEM_X25519 },   { 2, MK_ALG_ECDSA_P256, MK_ALG_DHKEM_P256 },
	{ 3, MK_ALG_ED25519, MK_ALG_DHKEM_X25519 },   { 5, MK_ALG_ECDSA_P521, MK_ALG_DHKEM_P521 },
	{ 7, MK_ALG_ECDSA_P384, MK_ALG_DHKEM_P384 },
};

static char *import(mk_key_alg alg, const char *label, uint8_t id0, const mk_bytes *priv,
		    const mk_bytes *pub)
{
	uint8_t id[4] = { 0xee, id0, 0, 1 };
	mk_key_info *a = NULL;
	size_t n = 0;
	char *uri = NULL;

	if (mkt_import_key("alpha", alg, label, id, sizeof(id), priv->data, priv->len, pub->data,
			   pub->len) < 0)
		return NULL;
	if (mk_p11_list_keys(p, uri_alpha, &a, &n) < 0)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (a[i].id_len == sizeof(id) && memcmp(a[i].id, id, sizeof(id)) == 0)
			uri = strdup(a[i].uri);
	mk_key_info_array_free(a, n);
	return uri;
}

static void test_sign_vectors(void)
{
	for (size_t s = 0; s < ELEMENTSOF(suites); s++) {
		char file[64], name[32];
		json_object *v;
		mk_bytes priv, pub, content, want_sig, sig = MK_BYTES_NULL;
		uint8_t tbs[256];
		size_t tbs_len;
		mk_curve c = mk_key_alg_curve(suites[s].sig);
		mk_key *k;
		char *uri;

		snprintf(file, sizeof(file), "mls-crypto-basics-suite%d.json", suites[s].suite);
		snprintf(name, sizeof(name), "suite %d sign", suites[s].suite);
		v = mkt_vector_load(file);
		mkt_json_hex(v, "sign_with_label.priv", &priv);
		mkt_json_hex(v, "sign_with_label.pub", &pub);
		mkt_json_hex(v, "sign_with_label.content", &content);
		mkt_json_hex(v, "sign_with_label.signature", &want_sig);
		tbs_len = sign_content(mkt_json_str(v, "sign_with_label.label"), &content, tbs);
		mkt_ok(verify(c, pub.data, pub.len, tbs, tbs_len, want_sig.data, want_sig.len),
		       "%s: the vector's signature verifies over our SignContent", name);

		uri = import(suites[s].sig, name, (uint8_t)(0x10 + s), &priv, &pub);
		k = uri ? find(uri) : NULL;
		if (mkt_ok(k != NULL, "%s: imported and found", name)) {
			const mk_key_info *i = mk_key_get_info(k);

			mkt_ok(i->alg == suites[s].sig, "%s: alg %s", name, mk_key_alg_name(i->alg));
			mkt_ok(i->public_key_len == pub.len &&
			       memcmp(i->public_key, pub.data, pub.len) == 0,
			       "%s: public key equals the vector's", name);
			mkt_ok(!i->local && !i->never_extractable,
			       "%s: provenance says imported (not local)", name);
			if (mkt_ok_r(mk_key_sign(k, tbs, tbs_len, &sig), "%s: token signs", name)) {
				mkt_ok(verify(c, pub.data, pub.len, tbs, tbs_len, sig.data, sig.len),
				       "%s: token signature verifies under the vector's pub", name);
				if (c == MK_CURVE_ED25519)
					mkt_ok(sig.len == want_sig.len &&
					       memcmp(sig.data, want_sig.data, sig.len) == 0,
					       "%s: Ed25519 signature equals the vector's byte for "
					       "byte", name);
			}
		}
		mk_bytes_clear(&sig);
		mk_key_unref(k);
		free(uri);
		mk_bytes_clear(&priv);
		mk_bytes_clear(&pub);
		mk_bytes_clear(&content);
		mk_bytes_clear(&want_sig);
		json_object_put(v);
	}
}

/* Token DH(priv, peer) against OpenSSL's DH with the same private key. */
static void check_vector_dh(mk_key_alg alg, const char *name, uint8_t id0, const mk_bytes *priv,
			    const mk_bytes *pub, const mk_bytes *peer, mk_secret **ret_dh)
{
	mk_curve c = mk_key_alg_curve(alg);
	EVP_PKEY *sk, *pk;
	uint8_t want[80];
	size_t want_len;
	mk_secret *dh = NULL;
	mk_key *k;
	char *uri;

	sk = pkey_from(c, pub->data, pub->len, priv->data, priv->len);
	pk = pkey_from(c, peer->data, peer->len, NULL, 0);
	want_len = soft_dh(sk, pk, want, sizeof(want));
	EVP_PKEY_free(sk);
	EVP_PKEY_free(pk);
	mkt_ok(want_len == mk_curve_get(c)->dh_len, "%s: software DH", name);

	uri = import(alg, name, id0, priv, pub);
	k = uri ? find(uri) : NULL;
	if (mkt_ok(k != NULL, "%s: imported and found", name)) {
		const mk_key_info *i = mk_key_get_info(k);

		mkt_ok(i->alg == alg, "%s: alg %s", name, mk_key_alg_name(i->alg));
		mkt_ok(i->public_key_len == pub->len && memcmp(i->public_key, pub->data, pub->len) == 0,
		       "%s: public key equals the vector's", name);
		if (mkt_ok_r(mk_key_derive(k, peer->data, peer->len, &dh), "%s: token DH", name))
			mkt_ok(dh->len == want_len && memcmp(dh->data, want, want_len) == 0,
			       "%s: token DH equals software DH", name);
	}
	if (ret_dh)
		*ret_dh = dh;
	else
		mk_secret_free(dh);
	mk_key_unref(k);
	free(uri);
}

static void test_mls_dh_vectors(void)
{
	for (size_t s = 0; s < ELEMENTSOF(suites); s++) {
		char file[64], name[32];
		json_object *v;
		mk_bytes priv, pub, enc;

		snprintf(file, sizeof(file), "mls-crypto-basics-suite%d.json", suites[s].suite);
		snprintf(name, sizeof(name), "suite %d DH", suites[s].suite);
		v = mkt_vector_load(file);
		mkt_json_hex(v, "encrypt_with_label.priv", &priv);
		mkt_json_hex(v, "encrypt_with_label.pub", &pub);
		mkt_json_hex(v, "encrypt_with_label.kem_output", &enc);
		check_vector_dh(suites[s].kem, name, (uint8_t)(0x20 + s), &priv, &pub, &enc, NULL);
		mk_bytes_clear(&priv);
		mk_bytes_clear(&pub);
		mk_bytes_clear(&enc);
		json_object_put(v);
	}
}

/* RFC 9180 §4.1 ExtractAndExpand for HKDF-SHA256, Nsecret = 32: the KEM's known answer. */
static void kem_shared_secret(uint16_t kem_id, const mk_secret *dh, const mk_bytes *enc,
			      const mk_bytes *pkrm, uint8_t out[32])
{
	static const uint8_t zero[1];
	uint8_t buf[512], prk[32], t1[32];
	uint8_t suite[5] = { 'K', 'E', 'M', (uint8_t)(kem_id >> 8), (uint8_t)kem_id };
	unsigned int len = 0;
	size_t n = 0;

	/* eae_prk = LabeledExtract("", "eae_prk", dh) */
	memcpy(buf + n, "HPKE-v1", 7), n += 7;
	memcpy(buf + n, suite, 5), n += 5;
	memcpy(buf + n, "eae_prk", 7), n += 7;
	memcpy(buf + n, dh->data, dh->len), n += dh->len;
	HMAC(EVP_sha256(), zero, 0, buf, n, prk, &len);
	/* shared_secret = LabeledExpand(eae_prk, "shared_secret", enc || pkRm, 32): one block */
	n = 0;
	buf[n++] = 0, buf[n++] = 32;
	memcpy(buf + n, "HPKE-v1", 7), n += 7;
	memcpy(buf + n, suite, 5), n += 5;
	memcpy(buf + n, "shared_secret", 13), n += 13;
	memcpy(buf + n, enc->data, enc->len), n += enc->len;
	memcpy(buf + n, pkrm->data, pkrm->len), n += pkrm->len;
	buf[n++] = 1;
	HMAC(EVP_sha256(), prk, sizeof(prk), buf, n, t1, &len);
	memcpy(out, t1, 32);
}

static void test_hpke_vectors(void)
{
	static const struct {
		const char *file;
		uint16_t kem;
		mk_key_alg alg;
	} files[] = {
		{ "hpke-base-kem0010-kdf0001-aead0001.json", 0x10, MK_ALG_DHKEM_P256 },
		{ "hpke-base-kem0010-kdf0001-aead0003.json", 0x10, MK_ALG_DHKEM_P256 },
		{ "hpke-base-kem0020-kdf0001-aead0001.json", 0x20, MK_ALG_DHKEM_X25519 },
		{ "hpke-base-kem0020-kdf0001-aead0003.json", 0x20, MK_ALG_DHKEM_X25519 },
	};

	for (size_t f = 0; f < ELEMENTSOF(files); f++) {
		json_object *v = mkt_vector_load(files[f].file);
		mk_bytes sk, pk, enc, want;
		mk_secret *dh = NULL;
		uint8_t ss[32];
		char name[64];

		snprintf(name, sizeof(name), "HPKE kem %04x #%zu", files[f].kem, f);
		mkt_json_hex(v, "skRm", &sk);
		mkt_json_hex(v, "pkRm", &pk);
		mkt_json_hex(v, "enc", &enc);
		mkt_json_hex(v, "shared_secret", &want);
		check_vector_dh(files[f].alg, name, (uint8_t)(0x30 + f), &sk, &pk, &enc, &dh);
		if (dh) {
			kem_shared_secret(files[f].kem, dh, &enc, &pk, ss);
			mkt_ok(want.len == 32 && memcmp(ss, want.data, 32) == 0,
			       "%s: the token's DH gives the vector's KEM shared_secret", name);
		}
		mk_secret_free(dh);
		mk_bytes_clear(&sk);
		mk_bytes_clear(&pk);
		mk_bytes_clear(&enc);
		mk_bytes_clear(&want);
		json_object_put(v);
	}
}

/* --- URIs -------------------------------------------------------------------------------- */

static void test_uris(void)
{
	char *uri = NULL, *by_label = NULL;
	mk_key *k = NULL, *k2 = NULL;
	mk_key *none = NULL;

	if (!mkt_ok_r(mk_p11_generate_key(p, uri_alpha, MK_ALG_ED25519, "uri test/ä;=", &uri),
		      "generate a key whose label needs escaping"))
		return;
	mkt_ok(strstr(uri, "object=uri%20test%2F%C3%A4%3B%3D") != NULL, "label percent-encoded: %s",
	       uri);
	k = find(uri);
	mkt_ok(k && strcmp(mk_key_get_info(k)->uri, uri) == 0, "format -> find -> same URI");
	mkt_ok(k && strcmp(mk_key_get_info(k)->label, "uri test/ä;=") == 0, "label decoded");

	by_label = strdup("pkcs11:token=alpha;object=uri%20test%2F%C3%A4%3B%3D");
	k2 = find(by_label);
	mkt_ok(k && k2 && memcmp(mk_key_get_info(k)->id, mk_key_get_info(k2)->id, 16) == 0,
	       "found by token and label alone");
	mk_key_unref(k2);
	free(by_label);

	mkt_ok_err(mk_p11_find_key(p, "not a uri", &none), -EINVAL, "garbage: EINVAL");
	mkt_ok_err(mk_p11_find_key(p, "pkcs11:id=%zz", &none), -EINVAL, "bad percent-encoding");
	mkt_ok_err(mk_p11_find_key(p, "pkcs11:frobnicate=1;id=%01", &none), -EINVAL,
		   "unknown attribute: EINVAL");
	mkt_ok_err(mk_p11_find_key(p, "pkcs11:token=alpha", &none), -EINVAL,
		   "token URI is no key URI");
	mkt_ok_err(mk_p11_find_key(p, "pkcs11:token=alpha;id=%01;type=cert", &none), -EINVAL,
		   "type=cert is no key");
	mkt_ok_err(mk_p11_find_key(p, "pkcs11:token=alpha;id=%ff%fe%fd", &none), -ENOKEY,
		   "unknown id: ENOKEY");
	mkt_ok_err(mk_p11_find_key(p, "pkcs11:token=nope;id=%01", &none), -ENODEV,
		   "unknown token: ENODEV");
	mkt_ok_err(mk_p11_find_key(p, NULL, &none), -EINVAL, "NULL URI");
	mkt_ok_err(mk_p11_find_key(NULL, uri, &none), -EINVAL, "NULL layer");
	mkt_ok_err(mk_p11_find_key(p, uri, NULL), -EINVAL, "NULL result");
	mkt_ok(none == NULL, "no key on failure");

	mk_key_unref(k);
	free(uri);
}

/* Every key URI on alpha, sorted as listed. */
static char **key_uris(size_t *ret_n)
{
	mk_key_info *a = NULL;
	size_t n = 0;
	char **u;

	if (mk_p11_list_keys(p, uri_alpha, &a, &n) < 0)
		mkt_bail("list keys");
	u = calloc(n + 1, sizeof(*u));
	for (size_t i = 0; i < n; i++)
		u[i] = strdup(a[i].uri);
	mk_key_info_array_free(a, n);
	*ret_n = n;
	return u;
}

static bool uris_contain(char **a, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(a[i], s) == 0)
			return true;
	return false;
}

static void strv_free(char **a, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(a[i]);
	free(a);
}

static void test_restart(void)
{
	char **before, **after, *tok_before = strdup(uri_alpha);
	size_t n_before, n_after, same = 0;
	mk_bytes sig = MK_BYTES_NULL;
	mk_key *k;

	before = key_uris(&n_before);
	mk_p11_free(p);
	p = open_path();
	free(uri_alpha);
	uri_alpha = token_uri("alpha");
	mkt_ok(strcmp(tok_before, uri_alpha) == 0, "token URI unchanged after a restart");
	mkt_ok_r(mk_p11_login(p, uri_alpha, PIN, PIN_LEN), "log in after the restart");
	after = key_uris(&n_after);
	for (size_t i = 0; i < n_before; i++)
		same += uris_contain(after, n_after, before[i]);
	mkt_ok(n_before > 10 && n_after == n_before && same == n_before,
	       "all %zu key URIs unchanged after a restart", n_before);
	k = find(before[0]);
	mkt_ok(k != NULL, "an old URI finds its key after the restart");
	if (k && mk_key_alg_is_signature(mk_key_get_info(k)->alg))
		mkt_ok_r(mk_key_sign(k, (const uint8_t *)"x", 1, &sig), "and it signs");
	mk_bytes_clear(&sig);
	mk_key_unref(k);
	strv_free(before, n_before);
	strv_free(after, n_after);
	free(tok_before);
	mkt_ok_r(mk_p11_login(p, uri_beta, PIN, PIN_LEN), "log in to beta again");
	mkt_ok_r(mk_p11_login(p, uri_gone, PIN, PIN_LEN), "log in to gone again");
}

/* --- two tokens -------------------------------------------------------------------------- */

/* The URI of key_uri's object on the token that other_token names. */
static char *move_uri(const char *key_uri, const char *other_token)
{
	P11KitUri *k = p11_kit_uri_new(), *t = p11_kit_uri_new();
	char *s = NULL;

	if (p11_kit_uri_parse(key_uri, P11_KIT_URI_FOR_ANY, k) != P11_KIT_URI_OK ||
	    p11_kit_uri_parse(other_token, P11_KIT_URI_FOR_ANY, t) != P11_KIT_URI_OK)
		mkt_bail("cannot parse URIs");
	*p11_kit_uri_get_token_info(k) = *p11_kit_uri_get_token_info(t);
	p11_kit_uri_format(k, P11_KIT_URI_FOR_OBJECT_ON_TOKEN, &s);
	p11_kit_uri_free(k);
	p11_kit_uri_free(t);
	return s;
}

static void test_two_tokens(void)
{
	char *ua = NULL, *ub = NULL, *moved;
	mk_key *ka, *kb, *none = NULL;

	mkt_ok_r(mk_p11_generate_key(p, uri_alpha, MK_ALG_ECDSA_P384, "twin", &ua), "key on alpha");
	mkt_ok_r(mk_p11_generate_key(p, uri_beta, MK_ALG_ECDSA_P384, "twin", &ub), "key on beta");
	if (!ua || !ub)
		goto out;
	mkt_ok(strcmp(ua, ub) != 0, "same label, different URIs");
	mkt_ok(key_listed(uri_alpha, ua) && !key_listed(uri_alpha, ub), "alpha lists only its own");
	mkt_ok(key_listed(uri_beta, ub) && !key_listed(uri_beta, ua), "beta lists only its own");
	mkt_ok(key_listed(NULL, ua) && key_listed(NULL, ub), "listing all tokens shows both");
	ka = find(ua);
	kb = find(ub);
	mkt_ok(ka && kb && memcmp(mk_key_get_info(ka)->public_key, mk_key_get_info(kb)->public_key,
				  97) != 0, "two different keys");
	mk_key_unref(ka);
	mk_key_unref(kb);
	moved = move_uri(ua, uri_beta);
	mkt_ok_err(mk_p11_find_key(p, moved, &none), -ENOKEY,
		   "alpha's key id with beta's token fields: ENOKEY");
	free(moved);
	mkt_ok_err(mk_p11_generate_key(p, "pkcs11:model=SoftHSM%20v2", MK_ALG_ED25519, "x",
				       &(char *){ NULL }), -EINVAL,
		   "generate on an ambiguous token URI: EINVAL");
out:
	free(ua);
	free(ub);
}

/* --- threads ----------------------------------------------------------------------------- */

#define THREADS 4
#define PER_THREAD 1000

typedef struct worker {
	mk_key *k;
	int index, n;
	mk_bytes sig[PER_THREAD];
	int failed;
} worker;

static void msg_for(int t, int i, char *buf, size_t cap)
{
	snprintf(buf, cap, "thread %d message %d", t, i);
}

static void *sign_worker(void *arg)
{
	worker *w = arg;
	char msg[64];

	for (int i = 0; i < w->n; i++) {
		msg_for(w->index, i, msg, sizeof(msg));
		if (mk_key_sign(w->k, (const uint8_t *)msg, strlen(msg), &w->sig[i]) < 0)
			w->failed++;
	}
	return NULL;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* n threads x per signatures with k; every signature checked by OpenSSL afterwards. */
static void run_threads(mk_key *k, int n, int per, const char *what)
{
	static worker w[THREADS];
	pthread_t th[THREADS];
	const mk_key_info *i = mk_key_get_info(k);
	mk_curve c = mk_key_alg_curve(i->alg);
	EVP_PKEY *pk = pkey_from(c, i->public_key, i->public_key_len, NULL, 0);
	int failed = 0, bad = 0;
	double t0, t1;
	char msg[64];

	t0 = now();
	for (int t = 0; t < n; t++) {
		w[t] = (worker){ .k = k, .index = t, .n = per };
		pthread_create(&th[t], NULL, sign_worker, &w[t]);
	}
	for (int t = 0; t < n; t++)
		pthread_join(th[t], NULL);
	t1 = now();
	for (int t = 0; t < n; t++) {
		failed += w[t].failed;
		for (int j = 0; j < per; j++) {
			msg_for(t, j, msg, sizeof(msg));
			if (!verify_with(pk, c, (const uint8_t *)msg, strlen(msg), w[t].sig[j].data,
					 w[t].sig[j].len))
				bad++;
			mk_bytes_clear(&w[t].sig[j]);
		}
	}
	EVP_PKEY_free(pk);
	mkt_ok(failed == 0, "%s: %d x %d signatures, %d failed", what, n, per, failed);
	mkt_ok(bad == 0, "%s: every signature verifies (%d bad)", what, bad);
	mkt_diag("%s: %d signatures in %.3f s = %.1f us each, %.0f/s", what, n * per, t1 - t0,
		 (t1 - t0) * 1e6 / (n * per), (n * per) / (t1 - t0));
}

/* The bare token call for comparison: one session, C_SignInit + C_Sign on a digest. */
static double bare_sign_us(const mk_key_info *i, int n)
{
	CK_FUNCTION_LIST *m = p11_kit_module_load(mkt_softhsm_module(), 0);
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE tmpl[] = { { CKA_CLASS, &cls, sizeof(cls) }, { CKA_ID, i->id, i->id_len } };
	CK_MECHANISM mech = { CKM_ECDSA, NULL, 0 };
	CK_SLOT_ID slots[16];
	CK_ULONG ns = 16, got = 0;
	CK_SESSION_HANDLE s = 0;
	CK_OBJECT_HANDLE h = 0;
	uint8_t digest[32] = { 1 }, sig[132];
	double t0, t1 = 0;

	t0 = 0;
	if (!m || p11_kit_module_initialize(m) != CKR_OK)
		return -1;
	m->C_GetSlotList(CK_TRUE, slots, &ns);
	for (CK_ULONG j = 0; j < ns && !got; j++) {
		CK_TOKEN_INFO ti;

		if (m->C_GetTokenInfo(slots[j], &ti) != CKR_OK || memcmp(ti.label, "alpha ", 6))
			continue;
		m->C_OpenSession(slots[j], CKF_SERIAL_SESSION, NULL, NULL, &s);
		m->C_FindObjectsInit(s, tmpl, 2);
		m->C_FindObjects(s, &h, 1, &got);
		m->C_FindObjectsFinal(s);
	}
	if (got) {
		t0 = now();
		for (int j = 0; j < n; j++) {
			CK_ULONG len = sizeof(sig);

			m->C_SignInit(s, &mech, h);
			m->C_Sign(s, digest, sizeof(digest), sig, &len);
		}
		t1 = now();
	}
	m->C_CloseSession(s);
	p11_kit_module_finalize(m);
	p11_kit_module_release(m);
	return got ? (t1 - t0) * 1e6 / n : -1;
}

static void test_threads(void)
{
	const char *paths[] = { mkt_softhsm_module(), NULL };
	mk_p11_options small = { .module_paths = paths, .max_sessions = 2 };
	uint8_t digest[32] = { 1 };
	mk_p11 *q = NULL;
	char *uri = NULL;
	mk_key *k, *k2 = NULL;
	double t0, t1, bare;

	if (!mkt_ok_r(mk_p11_generate_key(p, uri_alpha, MK_ALG_ECDSA_P256, "threads", &uri),
		      "generate a P-256 key for the threads"))
		return;
	k = find(uri);
	if (!k)
		goto out;
	run_threads(k, THREADS, PER_THREAD, "4 threads, pool of 8");

	/* Single-thread cost against the bare token call, for the record. */
	t0 = now();
	for (int j = 0; j < 1000; j++) {
		mk_bytes sig = MK_BYTES_NULL;

		mk_key_sign_digest(k, digest, 32, &sig);
		mk_bytes_clear(&sig);
	}
	t1 = now();
	bare = bare_sign_us(mk_key_get_info(k), 1000);
	mkt_diag("1 thread: mk_key_sign_digest %.1f us/signature; bare C_SignInit+C_Sign %.1f us",
		 (t1 - t0) * 1e3, bare);

	/* Fewer sessions than threads: workers wait for a free session. */
	if (mkt_ok_r(mk_p11_open(&small, &q), "open a second layer with 2 sessions per token")) {
		mkt_ok_r(mk_p11_find_key(q, uri, &k2), "find the key there");
		if (k2)
			run_threads(k2, THREADS, 250, "4 threads, pool of 2");
		mk_key_unref(k2);
		mk_p11_free(q);
		/* Freeing that layer logged the token out for everyone in this process. */
		mkt_ok_r(mk_p11_login(p, uri_alpha, PIN, PIN_LEN), "log in again");
	}
	mk_key_unref(k);
out:
	free(uri);
}

/* --- p11-kit registered modules ---------------------------------------------------------- */

static size_t softhsm_tokens(mk_p11 *q, size_t *ret_dupes)
{
	mk_token_info *a = NULL;
	size_t n = 0, count = 0, dupes = 0;

	if (mk_p11_list_tokens(q, &a, &n) < 0)
		return 0;
	for (size_t i = 0; i < n; i++) {
		if (strcmp(a[i].manufacturer, "SoftHSM project") == 0)
			count++;
		for (size_t j = 0; j < i; j++)
			dupes += strcmp(a[i].uri, a[j].uri) == 0;
	}
	mk_token_info_array_free(a, n);
	*ret_dupes = dupes;
	return count;
}

static void test_p11_kit(void)
{
	const char *paths[] = { mkt_softhsm_module(), "/usr/lib/softhsm/libsofthsm2.so",
				"/nonexistent/module.so", NULL };
	mk_p11_options reg = { .use_p11_kit = true };
	mk_p11_options both = { .use_p11_kit = true, .module_paths = paths };
	mk_p11 *q = NULL;
	size_t dupes = 0, n;
	mk_key *k = NULL;
	mk_bytes sig = MK_BYTES_NULL;
	mk_key_info *keys = NULL;
	size_t n_keys = 0;

	if (!mkt_ok_r(mk_p11_open(&reg, &q), "open with p11-kit's registered modules"))
		return;
	n = softhsm_tokens(q, &dupes);
	mkt_ok(n == 4 && dupes == 0, "the registered softhsm2 module (SOFTHSM2_CONF) shows our 4 "
	       "tokens (got %zu, %zu duplicates)", n, dupes);
	mkt_ok_r(mk_p11_login(q, uri_alpha, PIN, PIN_LEN), "log in through p11-kit");
	mkt_ok_r(mk_p11_list_keys(q, uri_alpha, &keys, &n_keys), "list alpha's keys");
	for (size_t i = 0; i < n_keys && !k; i++)
		if (keys[i].alg == MK_ALG_ECDSA_P256)
			mk_p11_find_key(q, keys[i].uri, &k);
	if (mkt_ok(k != NULL, "find a P-256 key through p11-kit")) {
		const mk_key_info *i = mk_key_get_info(k);

		mkt_ok_r(mk_key_sign(k, (const uint8_t *)"p11-kit", 7, &sig), "sign through p11-kit");
		mkt_ok(verify(MK_CURVE_P256, i->public_key, i->public_key_len,
			      (const uint8_t *)"p11-kit", 7, sig.data, sig.len), "and it verifies");
	}
	mk_bytes_clear(&sig);
	mk_key_unref(k);
	mk_key_info_array_free(keys, n_keys);
	mk_p11_free(q);
	q = NULL;

	if (mkt_ok_r(mk_p11_open(&both, &q), "open with p11-kit, the same module by two paths, "
		     "and a missing one")) {
		n = softhsm_tokens(q, &dupes);
		mkt_ok(n == 4 && dupes == 0, "a module loaded both ways is used once (%zu tokens, "
		       "%zu duplicates)", n, dupes);
		mk_p11_free(q);
	}
	mkt_ok_r(mk_p11_login(p, uri_alpha, PIN, PIN_LEN), "log in to alpha again");
	mkt_ok_r(mk_p11_login(p, uri_beta, PIN, PIN_LEN), "log in to beta again");
	mkt_ok_r(mk_p11_login(p, uri_gone, PIN, PIN_LEN), "log in to gone again");
}

/* --- bad input and failure modes ---------------------------------------------------------- */

static void test_open_errors(void)
{
	const char *missing[] = { "/nonexistent/libnothing.so", NULL };
	const char *none[] = { NULL };
	mk_p11_options o = { .module_paths = missing };
	mk_p11_options empty = { .module_paths = none };
	mk_p11_options huge = { .module_paths = missing, .max_sessions = 1u << 20 };
	mk_p11 *q = NULL;

	mkt_ok_err(mk_p11_open(NULL, &q), -EINVAL, "open: NULL options");
	mkt_ok_err(mk_p11_open(&o, NULL), -EINVAL, "open: NULL result");
	mkt_ok_err(mk_p11_open(&o, &q), -ENOENT, "open: only a missing module: ENOENT");
	mkt_ok(mk_error_message() && strstr(mk_error_message(), "libnothing"),
	       "message names the module: %s", mk_error_message());
	mkt_ok_err(mk_p11_open(&empty, &q), -ENOENT, "open: no module at all: ENOENT");
	mkt_ok_err(mk_p11_open(&huge, &q), -EINVAL, "open: absurd max_sessions");
	mkt_ok(q == NULL, "no layer on failure");
	mkt_ok(mk_p11_free(NULL) == NULL, "free(NULL)");
	mkt_ok(mk_p11_refresh(NULL) == -EINVAL, "refresh(NULL)");
}

static void test_bad_input(void)
{
	mk_token_info *ta = NULL;
	mk_key_info *ka = NULL;
	size_t n = 0;
	char *uri = NULL;

	mkt_ok_err(mk_p11_list_tokens(NULL, &ta, &n), -EINVAL, "list_tokens: NULL layer");
	mkt_ok_err(mk_p11_list_tokens(p, NULL, &n), -EINVAL, "list_tokens: NULL result");
	mkt_ok_err(mk_p11_list_tokens(p, &ta, NULL), -EINVAL, "list_tokens: NULL count");
	mkt_ok_err(mk_p11_list_keys(NULL, NULL, &ka, &n), -EINVAL, "list_keys: NULL layer");
	mkt_ok_err(mk_p11_list_keys(p, NULL, NULL, &n), -EINVAL, "list_keys: NULL result");
	mkt_ok_err(mk_p11_list_keys(p, "pkcs11:token=nope", &ka, &n), -ENODEV,
		   "list_keys: unknown token");
	mkt_ok_err(mk_p11_list_keys(p, "bogus", &ka, &n), -EINVAL, "list_keys: garbage URI");
	mkt_ok(ta == NULL && ka == NULL, "no results on failure");
	mk_token_info_array_free(NULL, 0);
	mk_key_info_array_free(NULL, 0);
	mk_token_info_clear(NULL);
	mk_key_info_clear(NULL);
	mkt_ok(mk_key_unref(NULL) == NULL && mk_key_ref(NULL) == NULL, "ref/unref(NULL)");
	mkt_ok(mk_key_get_info(NULL) == NULL, "get_info(NULL)");

	mkt_ok_err(mk_p11_generate_key(NULL, uri_alpha, MK_ALG_ED25519, "x", &uri), -EINVAL,
		   "generate: NULL layer");
	mkt_ok_err(mk_p11_generate_key(p, uri_alpha, MK_ALG_ED25519, "x", NULL), -EINVAL,
		   "generate: NULL result");
	mkt_ok_err(mk_p11_generate_key(p, uri_alpha, MK_ALG_NONE, "x", &uri), -EOPNOTSUPP,
		   "generate: MK_ALG_NONE");
	mkt_ok_err(mk_p11_generate_key(p, uri_alpha, (mk_key_alg)77, "x", &uri), -EOPNOTSUPP,
		   "generate: out-of-range algorithm");
	mkt_ok_err(mk_p11_generate_key(p, "pkcs11:token=nope", MK_ALG_ED25519, "x", &uri), -ENODEV,
		   "generate: unknown token");
	mkt_ok_err(mk_p11_generate_key(p, NULL, MK_ALG_ED25519, "x", &uri), -EINVAL,
		   "generate: NULL token URI");
	{
		char label[400];

		memset(label, 'a', sizeof(label) - 1);
		label[sizeof(label) - 1] = '\0';
		mkt_ok_err(mk_p11_generate_key(p, uri_alpha, MK_ALG_ED25519, label, &uri), -EINVAL,
			   "generate: 399-byte label");
	}
	mkt_ok(uri == NULL, "no URI on failure");

	/* NULL label: an empty CKA_LABEL, found by id. */
	if (mkt_ok_r(mk_p11_generate_key(p, uri_alpha, MK_ALG_DHKEM_P256, NULL, &uri),
		     "generate with no label")) {
		mk_key *k = find(uri);

		mkt_ok(k && strcmp(mk_key_get_info(k)->label, "") == 0 && !strstr(uri, "object="),
		       "unlabelled key found by id: %s", uri);
		mk_key_unref(k);
		mkt_ok_r(mk_p11_delete_key(p, uri), "and deleted");
		free(uri);
	}

	mkt_ok_err(mk_key_sign(NULL, (const uint8_t *)"x", 1, &(mk_bytes){ 0 }), -EINVAL,
		   "sign: NULL key");
	mkt_ok_err(mk_key_sign_digest(NULL, (const uint8_t *)"x", 1, &(mk_bytes){ 0 }), -EINVAL,
		   "sign_digest: NULL key");
	mkt_ok_err(mk_key_derive(NULL, (const uint8_t *)"x", 1, &(mk_secret *){ NULL }), -EINVAL,
		   "derive: NULL key");
}

static void test_unsupported_and_login(void)
{
	mk_key_info *a = NULL;
	size_t n = 0, none_seen = 0;
	char *uri = NULL;
	mk_key *k = NULL, *k2 = NULL;
	mk_bytes sig = MK_BYTES_NULL;

	/* A key with both purposes is listed, but as unusable, with the reason. */
	if (mkt_ok_r(mk_p11_generate_key(p, uri_beta, MK_ALG_ECDSA_P256, "login-test", &uri),
		     "generate a key on beta")) {
		mkt_ok_r(mk_p11_logout(p, uri_beta), "log out of beta");
		mkt_ok_err(mk_p11_find_key(p, uri, &k2), -ENOTCONN,
			   "find a private key before login: ENOTCONN");
		mkt_ok(mk_error_message() && strstr(mk_error_message(), "log in"),
		       "message says to log in: %s", mk_error_message());
		mkt_ok_r(mk_p11_list_keys(p, uri_beta, &a, &n), "list keys before login");
		for (size_t i = 0; i < n; i++)
			if (strcmp(a[i].uri, uri) == 0)
				mkt_ok(!a[i].private_visible && a[i].alg == MK_ALG_ECDSA_P256 &&
				       a[i].public_key_len == 65,
				       "before login: public half, alg from CKA_VERIFY, pub key");
		mk_key_info_array_free(a, n);
		a = NULL;
		mkt_ok_err(mk_p11_generate_key(p, uri_beta, MK_ALG_ED25519, "no", &(char *){ NULL }),
			   -ENOTCONN, "generate without login: ENOTCONN");
		mkt_ok_r(mk_p11_login(p, uri_beta, PIN, PIN_LEN), "log in to beta");
		k = find(uri);
		mkt_ok_r(mk_p11_logout(p, uri_beta), "log out again, holding a key reference");
		mkt_ok_err(k ? mk_key_sign(k, (const uint8_t *)"x", 1, &sig) : -1, -ENOTCONN,
			   "sign with a cached handle after logout: ENOTCONN");
		mkt_ok(mk_error_message() && strstr(mk_error_message(), "beta"),
		       "message names the token: %s", mk_error_message());
		mkt_ok_r(mk_p11_login(p, uri_beta, PIN, PIN_LEN), "log in again");
		mkt_ok_r(k ? mk_key_sign(k, (const uint8_t *)"x", 1, &sig) : -1,
			 "the same reference signs again");
		mk_bytes_clear(&sig);
		mk_key_unref(k);
		free(uri);
	}

	/* RSA and a key with both purposes, made with raw PKCS#11: listed as unsupported. */
	{
		CK_FUNCTION_LIST *m = p11_kit_module_load(mkt_softhsm_module(), 0);
		CK_SLOT_ID slots[16];
		CK_ULONG ns = 16, bits = 2048;
		CK_BBOOL yes = CK_TRUE;
		CK_SESSION_HANDLE s = 0;
		CK_OBJECT_HANDLE h1, h2;
		CK_MECHANISM rsa = { CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0 };
		CK_MECHANISM ec = { CKM_EC_KEY_PAIR_GEN, NULL, 0 };
		static const uint8_t p256[] = { 0x06, 0x08, 0x2a, 0x86, 0x48,
						0xce, 0x3d, 0x03, 0x01, 0x07 };
		static const uint8_t bp256[] = { 0x06, 0x09, 0x2b, 0x24, 0x03, 0x03,
						 0x02, 0x08, 0x01, 0x01, 0x07 };
		CK_ATTRIBUTE rsa_pub[] = { { CKA_TOKEN, &yes, 1 }, { CKA_MODULUS_BITS, &bits, sizeof(bits) },
					   { CKA_LABEL, "rsa", 3 }, { CKA_ID, "r1", 2 } };
		CK_ATTRIBUTE rsa_priv[] = { { CKA_TOKEN, &yes, 1 }, { CKA_PRIVATE, &yes, 1 },
					    { CKA_LABEL, "rsa", 3 }, { CKA_ID, "r1", 2 } };
		CK_ATTRIBUTE ec_pub[] = { { CKA_TOKEN, &yes, 1 }, { CKA_EC_PARAMS, (void *)p256, 10 },
					  { CKA_LABEL, "dual", 4 }, { CKA_ID, "d1", 2 } };
		CK_ATTRIBUTE ec_priv[] = { { CKA_TOKEN, &yes, 1 }, { CKA_PRIVATE, &yes, 1 },
					   { CKA_SIGN, &yes, 1 }, { CKA_DERIVE, &yes, 1 },
					   { CKA_LABEL, "dual", 4 }, { CKA_ID, "d1", 2 } };
		CK_ATTRIBUTE bp_pub[] = { { CKA_TOKEN, &yes, 1 }, { CKA_EC_PARAMS, (void *)bp256, 11 },
					  { CKA_LABEL, "brainpool", 9 }, { CKA_ID, "b1", 2 } };
		CK_ATTRIBUTE bp_priv[] = { { CKA_TOKEN, &yes, 1 }, { CKA_PRIVATE, &yes, 1 },
					   { CKA_SIGN, &yes, 1 }, { CKA_LABEL, "brainpool", 9 },
					   { CKA_ID, "b1", 2 } };

		p11_kit_module_initialize(m);
		m->C_GetSlotList(CK_TRUE, slots, &ns);
		for (CK_ULONG j = 0; j < ns; j++) {
			CK_TOKEN_INFO ti;

			if (m->C_GetTokenInfo(slots[j], &ti) == CKR_OK && !memcmp(ti.label, "beta ", 5))
				m->C_OpenSession(slots[j], CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL,
						 NULL, &s);
		}
		mkt_ok(m->C_GenerateKeyPair(s, &rsa, rsa_pub, 4, rsa_priv, 4, &h1, &h2) == CKR_OK &&
		       m->C_GenerateKeyPair(s, &ec, ec_pub, 4, ec_priv, 6, &h1, &h2) == CKR_OK &&
		       m->C_GenerateKeyPair(s, &ec, bp_pub, 4, bp_priv, 5, &h1, &h2) == CKR_OK,
		       "raw PKCS#11: an RSA key, a sign+derive P-256 key and a brainpool key on beta");
		m->C_CloseSession(s);
		p11_kit_module_finalize(m);
		p11_kit_module_release(m);
	}
	mkt_ok_r(mk_p11_list_keys(p, uri_beta, &a, &n), "list beta's keys");
	for (size_t i = 0; i < n; i++) {
		if (a[i].alg != MK_ALG_NONE)
			continue;
		none_seen++;
		mkt_ok(a[i].reason != NULL, "\"%s\" unsupported: %s", a[i].label,
		       a[i].reason ? a[i].reason : "(no reason)");
		if (strcmp(a[i].label, "rsa") == 0)
			mkt_ok(strstr(a[i].reason, "RSA") != NULL, "RSA named in the reason");
		if (strcmp(a[i].label, "brainpool") == 0)
			mkt_ok(strstr(a[i].reason, "brainpoolP256r1") != NULL,
			       "the brainpool curve named in the reason");
		if (strcmp(a[i].label, "dual") == 0) {
			mkt_ok(strstr(a[i].reason, "both") != NULL, "dual purpose named");
			mkt_ok(mk_p11_find_key(p, a[i].uri, &k) == 0, "an unusable key can be found");
			if (k) {
				mkt_ok_err(mk_key_sign(k, (const uint8_t *)"x", 1, &sig), -EOPNOTSUPP,
					   "but it does not sign: EOPNOTSUPP");
				mkt_ok(mk_error_message() && strstr(mk_error_message(), "one purpose"),
				       "with the reason: %s", mk_error_message());
				mkt_ok_err(mk_key_derive(k, (const uint8_t *)"x", 1,
							 &(mk_secret *){ NULL }),
					   -EOPNOTSUPP, "nor derive");
				mk_key_unref(k);
				k = NULL;
			}
		}
	}
	mkt_ok(none_seen == 3, "three unsupported keys listed (got %zu)", none_seen);
	mk_key_info_array_free(a, n);
}

static void test_removed_token(void)
{
	mk_token_info ti = { 0 };
	char *uri = NULL;
	mk_key *k = NULL;
	mk_bytes sig = MK_BYTES_NULL;
	mk_secret *dh = NULL;
	mk_key_info *a = NULL;
	size_t n = 0;
	int r;

	if (!mkt_ok_r(mk_p11_generate_key(p, uri_gone, MK_ALG_ECDSA_P256, "doomed", &uri),
		      "generate a key on the token about to vanish"))
		return;
	k = find(uri);
	mkt_ok(k != NULL, "found it");
	mkt_softhsm_delete_token("gone");
	/* Before the layer notices: whatever happens, no crash. */
	r = k ? mk_key_sign(k, (const uint8_t *)"x", 1, &sig) : 0;
	mkt_diag("sign right after deletion, before refresh: %d (%s)", r,
		 r < 0 ? mk_error_text(r) : "ok");
	mk_bytes_clear(&sig);
	mkt_ok_r(mk_p11_refresh(p), "refresh");
	mkt_ok_r(mk_p11_get_token(p, uri_gone, &ti), "the vanished token still has info");
	mkt_ok(!ti.present, "marked absent");
	mk_token_info_clear(&ti);
	r = k ? mk_key_sign(k, (const uint8_t *)"x", 1, &sig) : -ENOMEDIUM;
	mkt_ok_err(r, -ENOMEDIUM, "sign on a removed token: ENOMEDIUM");
	mkt_ok(mk_error_message() && strstr(mk_error_message(), "gone") &&
	       strstr(mk_error_message(), "insert"), "message names the token and says what to "
	       "do: %s", mk_error_message());
	r = mk_p11_find_key(p, uri, &(mk_key *){ NULL });
	mkt_ok(r == -ENOMEDIUM || r == -ENODEV, "find on a removed token: %d", r);
	mkt_ok_err(mk_p11_login(p, uri_gone, PIN, PIN_LEN), -ENOMEDIUM, "login: ENOMEDIUM");
	mkt_ok_r(mk_p11_logout(p, uri_gone), "logout of a removed token: nothing to do");
	mkt_ok_err(mk_p11_generate_key(p, uri_gone, MK_ALG_ED25519, "x", &(char *){ NULL }),
		   -ENOMEDIUM, "generate: ENOMEDIUM");
	r = mk_p11_delete_key(p, uri);
	mkt_ok(r == -ENOMEDIUM || r == -ENODEV, "delete: %d", r);
	mkt_ok_r(mk_p11_list_keys(p, uri_gone, &a, &n), "list keys of the removed token");
	mkt_ok(n == 0, "no keys listed for it");
	mk_key_info_array_free(a, n);
	mkt_ok_r(mk_p11_list_keys(p, NULL, &a, &n), "list every key");
	mkt_ok(n > 0, "the other tokens' keys are still there (%zu)", n);
	mk_key_info_array_free(a, n);
	mkt_ok_r(mk_p11_logout(p, NULL), "logout of every token");
	if (k)
		mkt_ok_err(mk_key_derive(k, (const uint8_t *)"x", 1, &dh), -EOPNOTSUPP,
			   "derive with the vanished signing key: still a type error first");
	mk_key_unref(k);
	free(uri);
}

int main(void)
{
	mkt_softhsm_setup();
	/* SoftHSM sees only the tokens that exist when it is loaded. */
	mkt_softhsm_add_token("alpha");
	mkt_softhsm_add_token("beta");
	mkt_softhsm_add_token("pinlock");
	mkt_softhsm_add_token("gone");

	test_open_errors();
	p = open_path();
	uri_alpha = token_uri("alpha");
	uri_beta = token_uri("beta");
	uri_pinlock = token_uri("pinlock");
	uri_gone = token_uri("gone");

	test_enumerate();
	test_login();
	test_generate_all();
	test_certificate();
	test_delete();
	test_sign_vectors();
	test_mls_dh_vectors();
	test_hpke_vectors();
	test_uris();
	test_two_tokens();
	test_threads();
	test_bad_input();
	test_unsupported_and_login();
	test_p11_kit();
	test_restart();
	test_removed_token();

	mk_p11_free(p);
	free(uri_alpha);
	free(uri_beta);
	free(uri_pinlock);
	free(uri_gone);
	return mkt_done();
}
