/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/evp.h>
#include <string.h>

#include "agent/mls-private.h"
#include "agent/mls.h"
#include "agent/ossl.h"
#include "common/error.h"
#include "common/tls.h"

static const char mls_prefix[] = "MLS 1.0 ";
#define MLS_PREFIX_LEN (sizeof(mls_prefix) - 1)

int mk_mls_check_label(const char *label)
{
	if (!label)
		return mk_error(-EINVAL, "an MLS label is required");
	if (strlen(label) > MK_MLS_LABEL_MAX)
		return mk_error(-EINVAL, "MLS label is longer than %d bytes", MK_MLS_LABEL_MAX);
	return 0;
}

mk_curve mk_mls_alg_curve(mk_key_alg a)
{
	switch (a) {
	case MK_ALG_ECDSA_P256:
	case MK_ALG_DHKEM_P256:
		return MK_CURVE_P256;
	case MK_ALG_ECDSA_P384:
	case MK_ALG_DHKEM_P384:
		return MK_CURVE_P384;
	case MK_ALG_ECDSA_P521:
	case MK_ALG_DHKEM_P521:
		return MK_CURVE_P521;
	case MK_ALG_ED25519:
		return MK_CURVE_ED25519;
	case MK_ALG_DHKEM_X25519:
		return MK_CURVE_X25519;
	default:
		return MK_CURVE_NONE;
	}
}

int mk_mls_labeled_content(const char *label, const uint8_t *content, size_t content_len,
			   mk_bytes *ret)
{
	uint8_t h1[4], h2[4];
	size_t ll, n1, n2, total;
	mk_bytes b;
	uint8_t *p;
	int r;

	r = mk_mls_check_label(label);
	if (r < 0)
		return r;
	if (content_len > MK_VARINT_MAX)
		return mk_error(-EINVAL, "MLS content of %zu bytes is over the varint range",
				content_len);
	ll = strlen(label);
	n1 = mk_varint_encode(MLS_PREFIX_LEN + ll, h1);
	n2 = mk_varint_encode(content_len, h2);
	total = n1 + MLS_PREFIX_LEN + ll + n2 + content_len;
	/* Sized exactly and written once: a 4 MiB content is copied a single time. */
	r = mk_bytes_alloc(total, &b);
	if (r < 0)
		return r;
	p = b.data;
	memcpy(p, h1, n1), p += n1;
	memcpy(p, mls_prefix, MLS_PREFIX_LEN), p += MLS_PREFIX_LEN;
	memcpy(p, label, ll), p += ll;
	memcpy(p, h2, n2), p += n2;
	if (content_len)
		memcpy(p, content, content_len);
	*ret = b;
	return 0;
}

int mk_mls_sign_content_digest(const char *md, const char *label, const uint8_t *content,
			       size_t content_len, uint8_t *out, size_t *ret_len)
{
	const EVP_MD *m = mk_ossl_md(md);
	uint8_t h1[4], h2[4];
	size_t ll, n1, n2;
	unsigned int outl = 0;
	EVP_MD_CTX *c;
	int r, ok;

	r = mk_mls_check_label(label);
	if (r < 0)
		return r;
	if (content_len > MK_VARINT_MAX)
		return mk_error(-EINVAL, "MLS content of %zu bytes is over the varint range",
				content_len);
	if (!m)
		return mk_error(-EOPNOTSUPP, "hash %s is not available in OpenSSL", md);
	ll = strlen(label);
	n1 = mk_varint_encode(MLS_PREFIX_LEN + ll, h1);
	n2 = mk_varint_encode(content_len, h2);
	c = EVP_MD_CTX_new();
	if (!c)
		return -ENOMEM;
	ok = EVP_DigestInit_ex2(c, m, NULL) == 1 && EVP_DigestUpdate(c, h1, n1) == 1 &&
	     EVP_DigestUpdate(c, mls_prefix, MLS_PREFIX_LEN) == 1 &&
	     EVP_DigestUpdate(c, label, ll) == 1 && EVP_DigestUpdate(c, h2, n2) == 1 &&
	     EVP_DigestUpdate(c, content, content_len) == 1 &&
	     EVP_DigestFinal_ex(c, out, &outl) == 1;
	EVP_MD_CTX_free(c);
	if (!ok)
		return mk_error(-ENOMEM, "%s failed in OpenSSL", md);
	*ret_len = outl;
	return 0;
}

/* An EVP_PKEY for a validated public key in its MLS encoding. */
static EVP_PKEY *pkey_from_pub(mk_curve curve, const uint8_t *pub, size_t pub_len)
{
	const mk_curve_info *ci = mk_curve_get(curve);
	EVP_PKEY_CTX *pc;
	EVP_PKEY *pk = NULL;

	if (curve == MK_CURVE_ED25519)
		return EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub, pub_len);
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME,
						 (char *)OBJ_nid2sn(ci->nid), 0),
		OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, (void *)pub, pub_len),
		OSSL_PARAM_construct_end(),
	};
	pc = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	if (!pc || EVP_PKEY_fromdata_init(pc) != 1 ||
	    EVP_PKEY_fromdata(pc, &pk, EVP_PKEY_PUBLIC_KEY, params) != 1)
		pk = NULL;
	EVP_PKEY_CTX_free(pc);
	return pk;
}

int mk_mls_verify_with_label(uint16_t suite, const uint8_t *pub, size_t pub_len,
			     const char *label, const uint8_t *content, size_t content_len,
			     const uint8_t *sig, size_t sig_len)
{
	const mk_suite *su = mk_suite_get(suite);
	mk_curve curve;
	EVP_PKEY *pk = NULL;
	int r, ok;

	if (!su)
		return mk_error(-EOPNOTSUPP, "MLS cipher suite %u is not supported (1, 2, 3, 5 "
				"and 7 are)", suite);
	r = mk_mls_check_label(label);
	if (r < 0)
		return r;
	curve = mk_mls_alg_curve(su->sig_alg);
	r = mk_curve_validate_point(curve, pub, pub_len);
	if (r < 0)
		return r;
	pk = pkey_from_pub(curve, pub, pub_len);
	if (!pk) {
		ERR_clear_error();
		return mk_error(-EINVAL, "%s public key is not usable", mk_curve_get(curve)->name);
	}
	if (curve == MK_CURVE_ED25519) {
		mk_bytes tbs = MK_BYTES_NULL;
		EVP_MD_CTX *c;

		r = mk_mls_labeled_content(label, content, content_len, &tbs);
		if (r < 0)
			goto out;
		c = EVP_MD_CTX_new();
		ok = c && EVP_DigestVerifyInit_ex(c, NULL, NULL, NULL, NULL, pk, NULL) == 1 &&
		     EVP_DigestVerify(c, sig, sig_len, tbs.data, tbs.len) == 1;
		EVP_MD_CTX_free(c);
		mk_bytes_clear(&tbs);
	} else {
		uint8_t dg[EVP_MAX_MD_SIZE];
		size_t dl = 0;
		EVP_PKEY_CTX *pc;

		r = mk_mls_sign_content_digest(su->md_name, label, content, content_len, dg, &dl);
		if (r < 0)
			goto out;
		pc = EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL);
		ok = pc && EVP_PKEY_verify_init(pc) == 1 &&
		     EVP_PKEY_CTX_set_signature_md(pc, mk_ossl_md(su->md_name)) == 1 &&
		     EVP_PKEY_verify(pc, sig, sig_len, dg, dl) == 1;
		EVP_PKEY_CTX_free(pc);
	}
	ERR_clear_error();
	r = ok ? 0 : mk_error(-EBADMSG, "MLS signature does not verify (suite %u, label \"%s\")",
			      suite, label);
out:
	EVP_PKEY_free(pk);
	return r;
}

int mk_mls_encrypt_with_label(uint16_t suite, const uint8_t *pub, size_t pub_len,
			      const char *label, const uint8_t *context, size_t context_len,
			      const uint8_t *pt, size_t pt_len, mk_bytes *ret_kem_output,
			      mk_bytes *ret_ct)
{
	const mk_suite *su = mk_suite_get(suite);
	_cleanup_bytes_ mk_bytes info = MK_BYTES_NULL;
	int r;

	if (!su)
		return mk_error(-EOPNOTSUPP, "MLS cipher suite %u is not supported (1, 2, 3, 5 "
				"and 7 are)", suite);
	r = mk_mls_labeled_content(label, context, context_len, &info);
	if (r < 0)
		return r;
	return mk_hpke_seal_base((mk_hpke_suite){ su->kem_id, su->kdf_id, su->aead_id }, pub,
				 pub_len, info.data, info.len, NULL, 0, pt, pt_len, NULL, 0,
				 ret_kem_output, ret_ct);
}
