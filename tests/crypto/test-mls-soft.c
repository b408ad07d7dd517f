/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * MLS crypto-basics (RFC 9420) in software for suites 1, 2, 3, 5, 7: the vectors' signatures
 * verify under VerifyWithLabel, their ciphertexts open with DecryptWithLabel's HPKE call and
 * a software DH, EncryptWithLabel round-trips, and SignContent is encoded exactly.
 */
#include <errno.h>
#include <string.h>

#include "agent/mls.h"
#include "common/error.h"
#include "tests/crypto/crypto-test.h"
#include "tests/fixture.h"
#include "tests/vectors.h"

static const uint16_t suites[] = { 1, 2, 3, 5, 7 };

static mk_hpke_suite hpke_of(const mk_suite *su)
{
	return (mk_hpke_suite){ su->kem_id, su->kdf_id, su->aead_id };
}

/* DecryptWithLabel with a software key: what mls.c does with the token's DH. */
static int soft_decrypt(const mk_suite *su, const mk_bytes *priv, const mk_bytes *pub,
			const char *label, const uint8_t *context, size_t context_len,
			const uint8_t *kem_output, size_t kem_output_len, const uint8_t *ct,
			size_t ct_len, mk_bytes *ret_pt)
{
	_cleanup_bytes_ mk_bytes info = MK_BYTES_NULL;
	mk_hpke_soft_key k = { mk_hpke_kem_curve(su->kem_id), priv->data, priv->len };
	int r;

	r = mk_mls_labeled_content(label, context, context_len, &info);
	if (r < 0)
		return r;
	return mk_hpke_open_base(hpke_of(su), mk_hpke_soft_dh, &k, pub->data, pub->len, info.data,
				 info.len, NULL, 0, kem_output, kem_output_len, ct, ct_len, ret_pt);
}

static void test_suite(uint16_t id)
{
	const mk_suite *su = mk_suite_get(id);
	char file[64];
	json_object *v;
	const char *label;
	_cleanup_bytes_ mk_bytes pub = MK_BYTES_NULL, content = MK_BYTES_NULL,
				 sig = MK_BYTES_NULL, priv = MK_BYTES_NULL, epub = MK_BYTES_NULL,
				 ctx = MK_BYTES_NULL, kem = MK_BYTES_NULL, ct = MK_BYTES_NULL,
				 pt = MK_BYTES_NULL, got = MK_BYTES_NULL, derived = MK_BYTES_NULL;
	mk_bytes none = MK_BYTES_NULL;

	if (!mkt_ok(su != NULL, "suite %u known", id))
		return;
	snprintf(file, sizeof(file), "mls-crypto-basics-suite%u.json", id);
	v = mkt_vector_load(file);
	mkt_ok(mkt_json_int(v, "cipher_suite") == id, "%s is for suite %u", file, id);

	label = mkt_json_str(v, "sign_with_label.label");
	mkt_json_hex(v, "sign_with_label.pub", &pub);
	mkt_json_hex(v, "sign_with_label.content", &content);
	mkt_json_hex(v, "sign_with_label.signature", &sig);
	mkt_ok_r(mk_mls_verify_with_label(id, pub.data, pub.len, label, content.data, content.len,
					  sig.data, sig.len),
		 "suite %u: vector signature verifies", id);
	content.data[0] ^= 1;
	mkt_ok_err(mk_mls_verify_with_label(id, pub.data, pub.len, label, content.data,
					    content.len, sig.data, sig.len),
		   -EBADMSG, "suite %u: other content does not verify", id);
	content.data[0] ^= 1;
	mkt_ok_err(mk_mls_verify_with_label(id, pub.data, pub.len, "SignWithLabeL", content.data,
					    content.len, sig.data, sig.len),
		   -EBADMSG, "suite %u: other label does not verify", id);
	mkt_ok_err(mk_mls_verify_with_label(id, pub.data, pub.len, label, content.data,
					    content.len, sig.data, sig.len - 1),
		   -EBADMSG, "suite %u: truncated signature does not verify", id);
	mkt_ok_err(mk_mls_verify_with_label(id, pub.data, pub.len - 1, label, content.data,
					    content.len, sig.data, sig.len),
		   -EINVAL, "suite %u: truncated public key is InvalidInput", id);
	mkt_ok_err(mk_mls_verify_with_label(4, pub.data, pub.len, label, content.data,
					    content.len, sig.data, sig.len),
		   -EOPNOTSUPP, "suite 4 (X448) is Unsupported");

	label = mkt_json_str(v, "encrypt_with_label.label");
	mkt_json_hex(v, "encrypt_with_label.priv", &priv);
	mkt_json_hex(v, "encrypt_with_label.pub", &epub);
	mkt_json_hex(v, "encrypt_with_label.context", &ctx);
	mkt_json_hex(v, "encrypt_with_label.kem_output", &kem);
	mkt_json_hex(v, "encrypt_with_label.ciphertext", &ct);
	mkt_json_hex(v, "encrypt_with_label.plaintext", &pt);
	mkt_ok(mk_hpke_public_key(mk_hpke_kem_curve(su->kem_id), priv.data, priv.len,
				  &derived) == 0 &&
		       mkt_bytes_eq(derived.data, derived.len, &epub),
	       "suite %u: priv gives pub", id);
	mkt_ok(soft_decrypt(su, &priv, &epub, label, ctx.data, ctx.len, kem.data, kem.len,
			    ct.data, ct.len, &got) == 0 &&
		       mkt_bytes_eq(got.data, got.len, &pt),
	       "suite %u: DecryptWithLabel (software DH) gives the plaintext", id);
	mkt_ok_err(soft_decrypt(su, &priv, &epub, "EncryptWithLabeL", ctx.data, ctx.len,
				kem.data, kem.len, ct.data, ct.len, &none),
		   -EBADMSG, "suite %u: other label: DecryptFailed", id);
	mkt_ok_err(soft_decrypt(su, &priv, &epub, label, ctx.data, ctx.len - 1, kem.data,
				kem.len, ct.data, ct.len, &none),
		   -EBADMSG, "suite %u: other context: DecryptFailed", id);
	mkt_ok(none.data == NULL, "suite %u: no plaintext after failures", id);

	mk_bytes_clear(&kem);
	mk_bytes_clear(&ct);
	mk_bytes_clear(&got);
	mkt_ok(mk_mls_encrypt_with_label(id, epub.data, epub.len, label, ctx.data, ctx.len,
					 pt.data, pt.len, &kem, &ct) == 0 &&
		       soft_decrypt(su, &priv, &epub, label, ctx.data, ctx.len, kem.data, kem.len,
				    ct.data, ct.len, &got) == 0 &&
		       mkt_bytes_eq(got.data, got.len, &pt),
	       "suite %u: EncryptWithLabel round-trips", id);
	json_object_put(v);
}

static void test_labeled_content(void)
{
	static const uint8_t want[] = { 0x09, 'M', 'L', 'S', ' ', '1', '.', '0', ' ', 'L', 0x02,
					'a', 'b' };
	_cleanup_bytes_ mk_bytes b = MK_BYTES_NULL, big = MK_BYTES_NULL;
	char label[300];

	mkt_ok(mk_mls_labeled_content("L", (const uint8_t *)"ab", 2, &b) == 0 &&
		       b.len == sizeof(want) && memcmp(b.data, want, sizeof(want)) == 0,
	       "SignContent = V(\"MLS 1.0 L\") || V(\"ab\")");
	mk_bytes_clear(&b);
	mkt_ok(mk_mls_labeled_content("", NULL, 0, &b) == 0 && b.len == 10 && b.data[0] == 8 &&
		       b.data[9] == 0,
	       "empty label and content");
	mk_bytes_clear(&b);
	memset(label, 'x', sizeof(label));
	label[MK_MLS_LABEL_MAX] = '\0';
	mkt_ok(mk_mls_labeled_content(label, NULL, 0, &b) == 0 && b.len == 2 + 8 + 255 + 1 &&
		       b.data[0] == 0x41 && b.data[1] == 0x07,
	       "a 255-byte label gets a 2-byte length (263)");
	mk_bytes_clear(&b);
	label[MK_MLS_LABEL_MAX] = 'x';
	label[MK_MLS_LABEL_MAX + 1] = '\0';
	mkt_ok_err(mk_mls_labeled_content(label, NULL, 0, &b), -EINVAL, "a 256-byte label refused");
	mkt_ok_err(mk_mls_labeled_content(NULL, NULL, 0, &b), -EINVAL, "no label refused");
	mkt_ok_err(mk_mls_labeled_content("L", (const uint8_t *)"", (size_t)1 << 30, &b), -EINVAL,
		   "content of 2^30 bytes (over the varint range) refused");
	mkt_ok(b.data == NULL, "nothing handed out on failure");

	mk_bytes_alloc((size_t)4 << 20, &big);
	mkt_ok(mk_mls_labeled_content("L", big.data, big.len, &b) == 0 &&
		       b.len == 10 + 4 + big.len && b.data[10] == 0x80 && b.data[11] == 0x40,
	       "4 MiB content gets a 4-byte length");
}

/* Large inputs: a 1 MiB context through Encrypt/DecryptWithLabel for every suite. */
static void test_large(void)
{
	_cleanup_bytes_ mk_bytes ctx = MK_BYTES_NULL;

	mk_bytes_alloc((size_t)1 << 20, &ctx);
	for (size_t i = 0; i < ctx.len; i++)
		ctx.data[i] = (uint8_t)(i ^ (i >> 8));
	for (size_t i = 0; i < ELEMENTSOF(suites); i++) {
		const mk_suite *su = mk_suite_get(suites[i]);
		_cleanup_secret_ mk_secret *sk = NULL;
		_cleanup_bytes_ mk_bytes pk = MK_BYTES_NULL, kem = MK_BYTES_NULL,
					 ct = MK_BYTES_NULL, got = MK_BYTES_NULL, priv = MK_BYTES_NULL;

		mk_hpke_generate_key_pair(su->kem_id, &sk, &pk);
		mk_bytes_dup(sk->data, sk->len, &priv);
		mkt_ok(mk_mls_encrypt_with_label(su->id, pk.data, pk.len, "Welcome", ctx.data,
						 ctx.len, (const uint8_t *)"hi", 2, &kem,
						 &ct) == 0 &&
			       soft_decrypt(su, &priv, &pk, "Welcome", ctx.data, ctx.len, kem.data,
					    kem.len, ct.data, ct.len, &got) == 0 &&
			       got.len == 2 && memcmp(got.data, "hi", 2) == 0,
		       "suite %u: 1 MiB context round-trips", su->id);
	}
}

int main(void)
{
	for (size_t i = 0; i < ELEMENTSOF(suites); i++)
		test_suite(suites[i]);
	test_labeled_content();
	test_large();
	return mkt_done();
}
