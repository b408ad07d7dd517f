/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <openssl/evp.h>
#include <string.h>

#include "agent/mls-private.h"
#include "agent/mls.h"
#include "common/error.h"
#include "common/tls.h"

static int unsupported_suite(uint16_t suite)
{
	return mk_error(-EOPNOTSUPP, "MLS cipher suite %u is not supported (1, 2, 3, 5 and 7 are)",
			suite);
}

/* How a message names a key: its label, or its URI when it has none. */
static const char *key_name(const mk_key_info *ki)
{
	return ki->label && ki->label[0] ? ki->label : ki->uri ? ki->uri : "(unnamed)";
}

static int wrong_key(const mk_key_info *ki, const mk_suite *su, mk_key_alg want)
{
	return mk_error(-EOPNOTSUPP, "key \"%s\" is %s, but cipher suite %u (%s) needs %s",
			key_name(ki), mk_key_alg_name(ki->alg), su->id, su->name,
			mk_key_alg_name(want));
}

int mk_mls_sign_with_label(mk_key *k, uint16_t suite, const char *label, const uint8_t *content,
			   size_t content_len, mk_bytes *ret_sig)
{
	const mk_suite *su = mk_suite_get(suite);
	const mk_key_info *ki;
	uint8_t dg[EVP_MAX_MD_SIZE];
	size_t dl = 0;
	int r;

	if (!k)
		return -EINVAL;
	if (!su)
		return unsupported_suite(suite);
	ki = mk_key_get_info(k);
	if (ki->alg != su->sig_alg)
		return wrong_key(ki, su, su->sig_alg);
	if (su->sig_alg == MK_ALG_ED25519) {
		/* Pure EdDSA signs the message itself: CKM_EDDSA needs SignContent whole. */
		_cleanup_bytes_ mk_bytes tbs = MK_BYTES_NULL;

		r = mk_mls_labeled_content(label, content, content_len, &tbs);
		if (r < 0)
			return r;
		return mk_key_sign(k, tbs.data, tbs.len, ret_sig);
	}
	/* ECDSA: hash SignContent piecewise (no copy of the content), sign the digest. */
	r = mk_mls_sign_content_digest(su->md_name, label, content, content_len, dg, &dl);
	if (r < 0)
		return r;
	return mk_key_sign_digest(k, dg, dl, ret_sig);
}

/* The HPKE DH on the token: CKM_ECDH1_DERIVE with the recipient key. */
static int token_dh(void *userdata, const uint8_t *pk, size_t pk_len, mk_secret **ret)
{
	return mk_key_derive(userdata, pk, pk_len, ret);
}

static uint16_t kem_of_alg(mk_key_alg a)
{
	switch (a) {
	case MK_ALG_DHKEM_P256:
		return MK_HPKE_KEM_P256;
	case MK_ALG_DHKEM_P384:
		return MK_HPKE_KEM_P384;
	case MK_ALG_DHKEM_P521:
		return MK_HPKE_KEM_P521;
	case MK_ALG_DHKEM_X25519:
		return MK_HPKE_KEM_X25519;
	default:
		return 0;
	}
}

int mk_mls_hpke_open(mk_key *k, uint16_t kdf, uint16_t aead, const uint8_t *info,
		     size_t info_len, const uint8_t *aad, size_t aad_len, const uint8_t *enc,
		     size_t enc_len, const uint8_t *ct, size_t ct_len, mk_bytes *ret_pt)
{
	const mk_key_info *ki;
	uint16_t kem;

	if (!k)
		return -EINVAL;
	ki = mk_key_get_info(k);
	kem = kem_of_alg(ki->alg);
	if (!kem)
		return mk_error(-EOPNOTSUPP, "key \"%s\" is %s, not an HPKE (DHKEM) key",
				key_name(ki), mk_key_alg_name(ki->alg));
	if (!ki->public_key)
		return mk_error(-ENOKEY, "the public key of \"%s\" is not on the token; HPKE needs "
				"it (kem_context = enc || pkR)", key_name(ki));
	return mk_hpke_open_base((mk_hpke_suite){ kem, kdf, aead }, token_dh, k, ki->public_key,
				 ki->public_key_len, info, info_len, aad, aad_len, enc, enc_len,
				 ct, ct_len, ret_pt);
}

int mk_mls_decrypt_with_label(mk_key *k, uint16_t suite, const char *label,
			      const uint8_t *context, size_t context_len, const uint8_t *kem_output,
			      size_t kem_output_len, const uint8_t *ct, size_t ct_len,
			      mk_bytes *ret_pt)
{
	const mk_suite *su = mk_suite_get(suite);
	_cleanup_bytes_ mk_bytes info = MK_BYTES_NULL;
	const mk_key_info *ki;
	int r;

	if (!k)
		return -EINVAL;
	if (!su)
		return unsupported_suite(suite);
	ki = mk_key_get_info(k);
	if (ki->alg != su->kem_alg)
		return wrong_key(ki, su, su->kem_alg);
	r = mk_mls_labeled_content(label, context, context_len, &info);
	if (r < 0)
		return r;
	return mk_mls_hpke_open(k, su->kdf_id, su->aead_id, info.data, info.len, NULL, 0,
				kem_output, kem_output_len, ct, ct_len, ret_pt);
}
