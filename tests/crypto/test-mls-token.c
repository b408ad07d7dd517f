/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * MLS SignWithLabel and HPKE DecryptWithLabel with keys on a real SoftHSM2 token:
 *  - crypto-basics of suites 1, 2, 3, 5, 7 with the vectors' private keys imported;
 *  - RFC 9180 base vectors (P-256, X25519; AES-128-GCM, ChaCha20Poly1305) with the DH on the
 *    token: shared secret, key, every nonce, and the sequence-0 ciphertext opened;
 *  - keys generated on the token round-trip for every suite;
 *  - negative cases through the token, and large inputs.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "agent/mls.h"
#include "common/error.h"
#include "tests/crypto/crypto-test.h"
#include "tests/fixture.h"
#include "tests/p11-import.h"
#include "tests/vectors.h"

#define TOKEN "mls-test"

static const uint16_t suites[] = { 1, 2, 3, 5, 7 };
static mk_p11 *p11;
static char *token_uri;
static uint8_t next_id = 1;

static mk_curve suite_curve(mk_key_alg a)
{
	return mk_key_alg_curve(a);
}

/* Imports a key pair and returns a reference to it (bails out on failure). */
static mk_key *import(mk_key_alg alg, const char *label, const mk_bytes *priv,
		      const mk_bytes *pub)
{
	uint8_t id[4] = { 0x4d, 0x4c, 0x53, next_id++ };
	mk_key_info *all = NULL;
	size_t n = 0;
	mk_key *k = NULL;
	int r;

	if (mkt_import_key(TOKEN, alg, label, id, sizeof(id), priv->data, priv->len, pub->data,
			   pub->len) < 0)
		mkt_bail("cannot import %s key \"%s\"", mk_key_alg_name(alg), label);
	r = mk_p11_list_keys(p11, token_uri, &all, &n);
	if (r < 0)
		mkt_bail("listing keys failed: %s", mk_error_text(r));
	for (size_t i = 0; i < n; i++)
		if (all[i].id_len == sizeof(id) && memcmp(all[i].id, id, sizeof(id)) == 0) {
			r = mk_p11_find_key(p11, all[i].uri, &k);
			if (r < 0)
				mkt_bail("find %s: %s", all[i].uri, mk_error_text(r));
		}
	mk_key_info_array_free(all, n);
	if (!k)
		mkt_bail("imported key \"%s\" not found on the token", label);
	if (mk_key_get_info(k)->alg != alg)
		mkt_bail("imported key \"%s\" is %s, not %s", label,
			 mk_key_alg_name(mk_key_get_info(k)->alg), mk_key_alg_name(alg));
	return k;
}

static mk_key *generate(mk_key_alg alg, const char *label)
{
	_cleanup_free_ char *uri = NULL;
	mk_key *k = NULL;
	int r;

	r = mk_p11_generate_key(p11, token_uri, alg, label, &uri);
	if (r < 0)
		mkt_bail("generating %s: %s", mk_key_alg_name(alg), mk_error_text(r));
	r = mk_p11_find_key(p11, uri, &k);
	if (r < 0)
		mkt_bail("find %s: %s", uri, mk_error_text(r));
	return k;
}

static void test_crypto_basics(uint16_t id)
{
	const mk_suite *su = mk_suite_get(id);
	_cleanup_(mk_key_unrefp) mk_key *sk = NULL, *kk = NULL;
	_cleanup_bytes_ mk_bytes priv = MK_BYTES_NULL, pub = MK_BYTES_NULL,
				 content = MK_BYTES_NULL, vsig = MK_BYTES_NULL, sig = MK_BYTES_NULL,
				 epriv = MK_BYTES_NULL, epub = MK_BYTES_NULL, ctx = MK_BYTES_NULL,
				 kem = MK_BYTES_NULL, ct = MK_BYTES_NULL, pt = MK_BYTES_NULL,
				 got = MK_BYTES_NULL, bad = MK_BYTES_NULL;
	mk_bytes none = MK_BYTES_NULL;
	const char *slabel, *elabel;
	char file[64], name[32];
	json_object *v;
	int r;

	snprintf(file, sizeof(file), "mls-crypto-basics-suite%u.json", id);
	v = mkt_vector_load(file);
	mkt_diag("suite %u: %s", id, su->name);

	slabel = mkt_json_str(v, "sign_with_label.label");
	mkt_json_hex(v, "sign_with_label.priv", &priv);
	mkt_json_hex(v, "sign_with_label.pub", &pub);
	mkt_json_hex(v, "sign_with_label.content", &content);
	mkt_json_hex(v, "sign_with_label.signature", &vsig);
	snprintf(name, sizeof(name), "sig-suite%u", id);
	sk = import(su->sig_alg, name, &priv, &pub);

	mkt_ok_r(mk_mls_verify_with_label(id, pub.data, pub.len, slabel, content.data,
					  content.len, vsig.data, vsig.len),
		 "suite %u: the vector's signature verifies", id);
	r = mk_mls_sign_with_label(sk, id, slabel, content.data, content.len, &sig);
	mkt_ok_r(r, "suite %u: SignWithLabel on the token", id);
	mkt_ok(r == 0 && mk_mls_verify_with_label(id, pub.data, pub.len, slabel, content.data,
						  content.len, sig.data, sig.len) == 0,
	       "suite %u: the token's signature verifies under the vector's pub", id);
	if (su->sig_alg == MK_ALG_ED25519)
		mkt_ok(mkt_bytes_eq(sig.data, sig.len, &vsig),
		       "suite %u: Ed25519 signature equals the vector byte for byte", id);
	else
		mkt_ok(sig.len > 8 && sig.data[0] == 0x30,
		       "suite %u: ECDSA signature is DER (%zu bytes)", id, sig.len);
	mkt_ok(r == 0 && mk_mls_verify_with_label(id, pub.data, pub.len, "SignWithLabelX",
						  content.data, content.len, sig.data,
						  sig.len) == -EBADMSG,
	       "suite %u: the token's signature does not verify under another label", id);

	elabel = mkt_json_str(v, "encrypt_with_label.label");
	mkt_json_hex(v, "encrypt_with_label.priv", &epriv);
	mkt_json_hex(v, "encrypt_with_label.pub", &epub);
	mkt_json_hex(v, "encrypt_with_label.context", &ctx);
	mkt_json_hex(v, "encrypt_with_label.kem_output", &kem);
	mkt_json_hex(v, "encrypt_with_label.ciphertext", &ct);
	mkt_json_hex(v, "encrypt_with_label.plaintext", &pt);
	snprintf(name, sizeof(name), "kem-suite%u", id);
	kk = import(su->kem_alg, name, &epriv, &epub);
	mkt_ok(mkt_bytes_eq(mk_key_get_info(kk)->public_key, mk_key_get_info(kk)->public_key_len,
			    &epub),
	       "suite %u: the token reports the vector's public key", id);

	r = mk_mls_decrypt_with_label(kk, id, elabel, ctx.data, ctx.len, kem.data, kem.len,
				      ct.data, ct.len, &got);
	mkt_ok_r(r, "suite %u: DecryptWithLabel through the token", id);
	mkt_ok(mkt_bytes_eq(got.data, got.len, &pt), "suite %u: plaintext matches", id);

	/* negative cases, each through the token */
	mk_bytes_dup(ct.data, ct.len, &bad);
	bad.data[0] ^= 1;
	mkt_ok_err(mk_mls_decrypt_with_label(kk, id, elabel, ctx.data, ctx.len, kem.data, kem.len,
					     bad.data, bad.len, &none),
		   -EBADMSG, "suite %u: tampered ciphertext: DecryptFailed", id);
	bad.data[0] ^= 1;
	bad.data[bad.len - 1] ^= 1;
	mkt_ok_err(mk_mls_decrypt_with_label(kk, id, elabel, ctx.data, ctx.len, kem.data, kem.len,
					     bad.data, bad.len, &none),
		   -EBADMSG, "suite %u: tampered tag: DecryptFailed", id);
	mkt_ok_err(mk_mls_decrypt_with_label(kk, id, "EncryptWithLabeL", ctx.data, ctx.len,
					     kem.data, kem.len, ct.data, ct.len, &none),
		   -EBADMSG, "suite %u: other label: DecryptFailed", id);
	ctx.data[ctx.len - 1] ^= 1;
	mkt_ok_err(mk_mls_decrypt_with_label(kk, id, elabel, ctx.data, ctx.len, kem.data, kem.len,
					     ct.data, ct.len, &none),
		   -EBADMSG, "suite %u: other context: DecryptFailed", id);
	ctx.data[ctx.len - 1] ^= 1;
	mkt_ok_err(mk_mls_decrypt_with_label(kk, id, elabel, ctx.data, ctx.len, kem.data, kem.len,
					     ct.data, 15, &none),
		   -EBADMSG, "suite %u: truncated ciphertext: DecryptFailed", id);
	mkt_ok_err(mk_mls_decrypt_with_label(kk, id, elabel, ctx.data, ctx.len, kem.data,
					     kem.len - 1, ct.data, ct.len, &none),
		   -EINVAL, "suite %u: truncated kem_output: InvalidInput", id);
	kem.data[kem.len - 1] ^= 1;
	r = mk_mls_decrypt_with_label(kk, id, elabel, ctx.data, ctx.len, kem.data, kem.len,
				      ct.data, ct.len, &none);
	if (su->kem_id == MK_HPKE_KEM_X25519)
		mkt_ok_err(r, -EBADMSG, "suite %u: tampered kem_output: DecryptFailed", id);
	else
		mkt_ok_err(r, -EINVAL, "suite %u: tampered kem_output is off the curve, refused "
			   "before the token: InvalidInput", id);
	kem.data[kem.len - 1] ^= 1;
	mkt_ok(none.data == NULL, "suite %u: no byte of plaintext from any failure", id);

	/* the wrong suite for the key */
	{
		uint16_t other = id == 2 ? 7 : 2;

		r = mk_mls_sign_with_label(sk, other, slabel, content.data, content.len, &none);
		mkt_ok_err(r, -EOPNOTSUPP, "suite %u key used for suite %u: Unsupported", id,
			   other);
		mkt_ok(mk_error_message() && strstr(mk_error_message(), "suite") &&
			       strstr(mk_error_message(), mk_key_alg_name(su->sig_alg)),
		       "the message names the key's algorithm and the suite (%s)",
		       mk_error_message());
		mkt_ok_err(mk_mls_decrypt_with_label(kk, other, elabel, ctx.data, ctx.len,
						     kem.data, kem.len, ct.data, ct.len, &none),
			   -EOPNOTSUPP, "suite %u HPKE key used for suite %u: Unsupported", id,
			   other);
		mkt_ok_err(mk_mls_sign_with_label(kk, id, slabel, content.data, content.len,
						  &none),
			   -EOPNOTSUPP, "suite %u: signing with the HPKE key: Unsupported", id);
		mkt_ok_err(mk_mls_decrypt_with_label(sk, id, elabel, ctx.data, ctx.len, kem.data,
						     kem.len, ct.data, ct.len, &none),
			   -EOPNOTSUPP, "suite %u: decrypting with the signature key: Unsupported",
			   id);
		mkt_ok_err(mk_mls_sign_with_label(sk, 6, slabel, content.data, content.len, &none),
			   -EOPNOTSUPP, "suite 6 (Ed448): Unsupported");
		if (id == 1 || id == 3)
			mkt_ok_err(mk_mls_decrypt_with_label(kk, id == 1 ? 3 : 1, elabel, ctx.data,
							     ctx.len, kem.data, kem.len, ct.data,
							     ct.len, &none),
				   -EBADMSG, "suite %u ciphertext opened as suite %u (same X25519 "
				   "key): DecryptFailed", id, id == 1 ? 3 : 1);
		mkt_ok(none.data == NULL, "nothing handed out");
	}
	json_object_put(v);
}

/* An mk_hpke_dh_fn on the token, for the known-answer checks of the intermediate values. */
static int token_dh(void *userdata, const uint8_t *pk, size_t n, mk_secret **ret)
{
	return mk_key_derive(userdata, pk, n, ret);
}

static void test_rfc9180(const char *file)
{
	_cleanup_(mk_key_unrefp) mk_key *k = NULL;
	_cleanup_secret_ mk_secret *shared = NULL;
	_cleanup_(mk_hpke_ctx_freep) mk_hpke_ctx *c = NULL;
	_cleanup_bytes_ mk_bytes sk = MK_BYTES_NULL, pk = MK_BYTES_NULL, enc = MK_BYTES_NULL,
				 info = MK_BYTES_NULL, want = MK_BYTES_NULL, pt = MK_BYTES_NULL,
				 aad = MK_BYTES_NULL, ct = MK_BYTES_NULL, got = MK_BYTES_NULL;
	json_object *v = mkt_vector_load(file), *encs;
	mk_hpke_suite s = { (uint16_t)mkt_json_int(v, "kem_id"),
			    (uint16_t)mkt_json_int(v, "kdf_id"),
			    (uint16_t)mkt_json_int(v, "aead_id") };
	const mk_key_info *ki;

	mkt_diag("%s through the token", file);
	mkt_json_hex(v, "skRm", &sk);
	mkt_json_hex(v, "pkRm", &pk);
	mkt_json_hex(v, "enc", &enc);
	mkt_json_hex(v, "info", &info);
	k = import(s.kem == MK_HPKE_KEM_X25519 ? MK_ALG_DHKEM_X25519 : MK_ALG_DHKEM_P256, file, &sk,
		   &pk);
	ki = mk_key_get_info(k);

	mkt_json_hex(v, "shared_secret", &want);
	mkt_ok(mk_hpke_decap(s, token_dh, k, enc.data, enc.len, ki->public_key,
			     ki->public_key_len, &shared) == 0 &&
		       mkt_secret_eq(shared, &want),
	       "Decap with the DH on the token: shared_secret matches");
	if (!shared)
		goto out;
	mkt_ok_r(mk_hpke_key_schedule(s, shared, info.data, info.len, &c), "KeySchedule");
	if (!c)
		goto out;
	mk_bytes_clear(&want);
	mkt_json_hex(v, "key", &want);
	mkt_ok(mkt_secret_eq(mk_hpke_ctx_key(c), &want), "key matches");
	mk_bytes_clear(&want);
	mkt_json_hex(v, "base_nonce", &want);
	mkt_ok(mkt_secret_eq(mk_hpke_ctx_base_nonce(c), &want), "base_nonce matches");
	encs = mkt_json_path(v, "encryptions");
	for (size_t i = 0; encs && i < json_object_array_length(encs); i++) {
		json_object *e = json_object_array_get_idx(encs, i);
		long long seq = mkt_json_int(e, "sequence_number");
		uint8_t n[12];

		mk_bytes_clear(&want);
		mkt_json_hex(e, "nonce", &want);
		mk_hpke_ctx_set_seq(c, (uint64_t)seq);
		mkt_ok(mk_hpke_ctx_nonce(c, n, sizeof(n)) == 0 && mkt_bytes_eq(n, 12, &want),
		       "sequence %lld: nonce matches", seq);
	}
	mkt_json_hex(v, "encryptions.0.pt", &pt);
	mkt_json_hex(v, "encryptions.0.aad", &aad);
	mkt_json_hex(v, "encryptions.0.ct", &ct);
	mkt_ok(mk_mls_hpke_open(k, s.kdf, s.aead, info.data, info.len, aad.data, aad.len,
				enc.data, enc.len, ct.data, ct.len, &got) == 0 &&
		       mkt_bytes_eq(got.data, got.len, &pt),
	       "sequence-0 ciphertext opened through the token (HpkeOpen)");
	mkt_ok_err(mk_mls_hpke_open(k, s.kdf, s.aead, info.data, info.len, aad.data, aad.len - 1,
				    enc.data, enc.len, ct.data, ct.len, &got),
		   -EBADMSG, "HpkeOpen with another aad: DecryptFailed");
out:
	json_object_put(v);
}

/* Points that must never reach the token. */
static void test_bad_points(void)
{
	_cleanup_(mk_key_unrefp) mk_key *p256 = generate(MK_ALG_DHKEM_P256, "bad-points-p256");
	_cleanup_(mk_key_unrefp) mk_key *x = generate(MK_ALG_DHKEM_X25519, "bad-points-x25519");
	_cleanup_bytes_ mk_bytes kem = MK_BYTES_NULL, ct = MK_BYTES_NULL;
	const mk_key_info *ki = mk_key_get_info(p256);
	mk_bytes none = MK_BYTES_NULL;
	uint8_t off[65], zero32[32] = { 0 }, one32[32] = { 1 };

	mkt_ok_r(mk_mls_encrypt_with_label(2, ki->public_key, ki->public_key_len, "Welcome",
					   (const uint8_t *)"ctx", 3, (const uint8_t *)"pt", 2,
					   &kem, &ct),
		 "EncryptWithLabel to a generated P-256 key");
	memcpy(off, kem.data, 65);
	off[64] ^= 0x55;
	mkt_ok_err(mk_mls_decrypt_with_label(p256, 2, "Welcome", (const uint8_t *)"ctx", 3, off,
					     65, ct.data, ct.len, &none),
		   -EINVAL, "off-curve kem_output refused: %s", mk_error_message());
	mkt_ok(mk_error_message() && strstr(mk_error_message(), "curve"),
	       "the message says the point is not on the curve");
	memset(off, 0, sizeof(off));
	off[0] = 0x04;
	mkt_ok_err(mk_mls_decrypt_with_label(p256, 2, "Welcome", (const uint8_t *)"ctx", 3, off,
					     65, ct.data, ct.len, &none),
		   -EINVAL, "(0,0) refused");
	mkt_ok_err(mk_mls_decrypt_with_label(p256, 2, "Welcome", (const uint8_t *)"ctx", 3, off,
					     1, ct.data, ct.len, &none),
		   -EINVAL, "single-byte point at infinity refused");
	mkt_ok_err(mk_mls_decrypt_with_label(x, 1, "Welcome", (const uint8_t *)"ctx", 3, zero32,
					     32, ct.data, ct.len, &none),
		   -EINVAL, "X25519 zero point: all-zero DH refused");
	mkt_ok_err(mk_mls_decrypt_with_label(x, 1, "Welcome", (const uint8_t *)"ctx", 3, one32,
					     32, ct.data, ct.len, &none),
		   -EINVAL, "X25519 low-order point 1: all-zero DH refused");
	mkt_ok(none.data == NULL, "no plaintext");
}

static void test_generated(uint16_t id)
{
	const mk_suite *su = mk_suite_get(id);
	char name[32];
	_cleanup_(mk_key_unrefp) mk_key *sk = NULL, *kk = NULL;
	_cleanup_bytes_ mk_bytes sig = MK_BYTES_NULL, kem = MK_BYTES_NULL, ct = MK_BYTES_NULL,
				 got = MK_BYTES_NULL, big = MK_BYTES_NULL;
	const mk_key_info *si, *ki;
	static const uint8_t msg[] = "a group secret";

	snprintf(name, sizeof(name), "gen-sig-%u", id);
	sk = generate(su->sig_alg, name);
	snprintf(name, sizeof(name), "gen-kem-%u", id);
	kk = generate(su->kem_alg, name);
	si = mk_key_get_info(sk);
	ki = mk_key_get_info(kk);
	mkt_ok(si->public_key && si->public_key_len == mk_curve_get(suite_curve(si->alg))->pub_len,
	       "suite %u: generated signature key has its public key", id);

	mkt_ok(mk_mls_sign_with_label(sk, id, "LeafNodeTBS", msg, sizeof(msg), &sig) == 0 &&
		       mk_mls_verify_with_label(id, si->public_key, si->public_key_len,
						"LeafNodeTBS", msg, sizeof(msg), sig.data,
						sig.len) == 0,
	       "suite %u: generated key signs on the token, verifies in software", id);
	mkt_ok(mk_mls_encrypt_with_label(id, ki->public_key, ki->public_key_len, "UpdatePathNode",
					 msg, sizeof(msg), msg, sizeof(msg), &kem, &ct) == 0 &&
		       mk_mls_decrypt_with_label(kk, id, "UpdatePathNode", msg, sizeof(msg),
						 kem.data, kem.len, ct.data, ct.len, &got) == 0 &&
		       got.len == sizeof(msg) && memcmp(got.data, msg, sizeof(msg)) == 0,
	       "suite %u: sealed in software, opened through the token", id);

	/* large inputs: a 4 MiB content to sign, a 1 MiB context to decrypt with */
	mk_bytes_alloc((size_t)4 << 20, &big);
	for (size_t i = 0; i < big.len; i++)
		big.data[i] = (uint8_t)(i * 31 + (i >> 12));
	mk_bytes_clear(&sig);
	mkt_ok(mk_mls_sign_with_label(sk, id, "FramedContentTBS", big.data, big.len, &sig) == 0 &&
		       mk_mls_verify_with_label(id, si->public_key, si->public_key_len,
						"FramedContentTBS", big.data, big.len, sig.data,
						sig.len) == 0,
	       "suite %u: 4 MiB content signed on the token and verified", id);
	big.data[big.len / 2] ^= 1;
	mkt_ok(mk_mls_verify_with_label(id, si->public_key, si->public_key_len,
					"FramedContentTBS", big.data, big.len, sig.data,
					sig.len) == -EBADMSG,
	       "suite %u: 4 MiB content with one bit flipped does not verify", id);
	mk_bytes_clear(&kem);
	mk_bytes_clear(&ct);
	mk_bytes_clear(&got);
	mkt_ok(mk_mls_encrypt_with_label(id, ki->public_key, ki->public_key_len, "Welcome",
					 big.data, (size_t)1 << 20, msg, sizeof(msg), &kem,
					 &ct) == 0 &&
		       mk_mls_decrypt_with_label(kk, id, "Welcome", big.data, (size_t)1 << 20,
						 kem.data, kem.len, ct.data, ct.len, &got) == 0 &&
		       got.len == sizeof(msg),
	       "suite %u: 1 MiB context: DecryptWithLabel through the token", id);
}

/* Several threads sign and decrypt at once through the same keys (sessions from the pool,
 * the shared secret pool and OpenSSL caches): every result must be right. */
typedef struct worker {
	mk_key *sk, *kk;
	uint16_t suite;
	const mk_bytes *kem, *ct;
	int ok;
} worker;

static void *work(void *p)
{
	worker *w = p;
	const mk_key_info *si = mk_key_get_info(w->sk);

	for (int i = 0; i < 25; i++) {
		mk_bytes sig = MK_BYTES_NULL, pt = MK_BYTES_NULL;
		uint8_t msg[8] = { (uint8_t)i };

		if (mk_mls_sign_with_label(w->sk, w->suite, "T", msg, sizeof(msg), &sig) == 0 &&
		    mk_mls_verify_with_label(w->suite, si->public_key, si->public_key_len, "T", msg,
					     sizeof(msg), sig.data, sig.len) == 0 &&
		    mk_mls_decrypt_with_label(w->kk, w->suite, "Welcome", (const uint8_t *)"c", 1,
					      w->kem->data, w->kem->len, w->ct->data, w->ct->len,
					      &pt) == 0 &&
		    pt.len == 5 && memcmp(pt.data, "hello", 5) == 0)
			w->ok++;
		mk_bytes_clear(&sig);
		mk_bytes_clear(&pt);
	}
	return NULL;
}

static void test_threads(void)
{
	_cleanup_(mk_key_unrefp) mk_key *sk = generate(MK_ALG_ECDSA_P256, "threads-sig");
	_cleanup_(mk_key_unrefp) mk_key *kk = generate(MK_ALG_DHKEM_P256, "threads-kem");
	_cleanup_bytes_ mk_bytes kem = MK_BYTES_NULL, ct = MK_BYTES_NULL;
	const mk_key_info *ki = mk_key_get_info(kk);
	pthread_t th[4];
	worker w[4];
	int total = 0;

	mk_mls_encrypt_with_label(2, ki->public_key, ki->public_key_len, "Welcome",
				  (const uint8_t *)"c", 1, (const uint8_t *)"hello", 5, &kem, &ct);
	for (int i = 0; i < 4; i++) {
		w[i] = (worker){ sk, kk, 2, &kem, &ct, 0 };
		pthread_create(&th[i], NULL, work, &w[i]);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		total += w[i].ok;
	}
	mkt_ok(total == 100, "4 threads x 25 sign+verify+decrypt at once: %d of 100 right", total);
}

int main(void)
{
	const char *module_paths[2] = { NULL, NULL };
	mk_p11_options opts = { .module_paths = module_paths };
	mk_token_info *toks = NULL;
	size_t ntoks = 0;
	int r;

	mkt_softhsm_setup();
	mkt_softhsm_add_token(TOKEN);
	module_paths[0] = mkt_softhsm_module();
	r = mk_p11_open(&opts, &p11);
	if (r < 0)
		mkt_bail("mk_p11_open: %s", mk_error_text(r));
	r = mk_p11_list_tokens(p11, &toks, &ntoks);
	for (size_t i = 0; r >= 0 && i < ntoks; i++)
		if (strcmp(toks[i].label, TOKEN) == 0)
			token_uri = strdup(toks[i].uri);
	mk_token_info_array_free(toks, ntoks);
	if (!token_uri)
		mkt_bail("token %s not found", TOKEN);
	r = mk_p11_login(p11, token_uri, (const uint8_t *)MKT_USER_PIN, strlen(MKT_USER_PIN));
	if (r < 0)
		mkt_bail("login: %s", mk_error_text(r));

	for (size_t i = 0; i < ELEMENTSOF(suites); i++)
		test_crypto_basics(suites[i]);
	test_rfc9180("hpke-base-kem0010-kdf0001-aead0001.json");
	test_rfc9180("hpke-base-kem0010-kdf0001-aead0003.json");
	test_rfc9180("hpke-base-kem0020-kdf0001-aead0001.json");
	test_rfc9180("hpke-base-kem0020-kdf0001-aead0003.json");
	test_bad_points();
	for (size_t i = 0; i < ELEMENTSOF(suites); i++)
		test_generated(suites[i]);
	test_threads();

	free(token_uri);
	mk_p11_free(p11);
	return mkt_done();
}
