/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <limits.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <pthread.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "agent/hpke.h"
#include "agent/ossl.h"
#include "common/error.h"

#define MK_HPKE_TAG_LEN 16
#define MK_HPKE_NH_MAX 64
#define MK_HPKE_NPK_MAX 133

/* --- parameters (RFC 9180 §7) ------------------------------------------------------------ */

typedef struct kem_params {
	uint16_t id;
	mk_curve curve;
	const char *name;
	const char *md; /* the KEM's own KDF */
	size_t nh;
	size_t nsecret;
	size_t nsk;
	size_t npk; /* = Nenc */
	size_t ndh;
	uint8_t bitmask; /* DeriveKeyPair, NIST curves */
} kem_params;

typedef struct kdf_params {
	uint16_t id;
	const char *name;
	const char *md;
	size_t nh;
} kdf_params;

typedef struct aead_params {
	uint16_t id;
	const char *name;
	size_t nk;
	size_t nn;
} aead_params;

static const kem_params kems[] = {
	{ MK_HPKE_KEM_P256, MK_CURVE_P256, "DHKEM(P-256)", "SHA256", 32, 32, 32, 65, 32, 0xff },
	{ MK_HPKE_KEM_P384, MK_CURVE_P384, "DHKEM(P-384)", "SHA384", 48, 48, 48, 97, 48, 0xff },
	{ MK_HPKE_KEM_P521, MK_CURVE_P521, "DHKEM(P-521)", "SHA512", 64, 64, 66, 133, 66, 0x01 },
	{ MK_HPKE_KEM_X25519, MK_CURVE_X25519, "DHKEM(X25519)", "SHA256", 32, 32, 32, 32, 32, 0 },
};

static const kdf_params kdfs[] = {
	{ MK_HPKE_KDF_SHA256, "HKDF-SHA256", "SHA256", 32 },
	{ MK_HPKE_KDF_SHA384, "HKDF-SHA384", "SHA384", 48 },
	{ MK_HPKE_KDF_SHA512, "HKDF-SHA512", "SHA512", 64 },
};

static const aead_params aeads[] = {
	{ MK_HPKE_AEAD_AES128GCM, "AES-128-GCM", 16, 12 },
	{ MK_HPKE_AEAD_AES256GCM, "AES-256-GCM", 32, 12 },
	{ MK_HPKE_AEAD_CHACHA20POLY1305, "ChaCha20Poly1305", 32, 12 },
};

static const kem_params *kem_get(uint16_t id)
{
	for (size_t i = 0; i < ELEMENTSOF(kems); i++)
		if (kems[i].id == id)
			return &kems[i];
	return NULL;
}

static const kdf_params *kdf_get(uint16_t id)
{
	for (size_t i = 0; i < ELEMENTSOF(kdfs); i++)
		if (kdfs[i].id == id)
			return &kdfs[i];
	return NULL;
}

static const aead_params *aead_get(uint16_t id)
{
	for (size_t i = 0; i < ELEMENTSOF(aeads); i++)
		if (aeads[i].id == id)
			return &aeads[i];
	return NULL;
}

static const kem_params *kem_of_curve(mk_curve c)
{
	for (size_t i = 0; i < ELEMENTSOF(kems); i++)
		if (kems[i].curve == c)
			return &kems[i];
	return NULL;
}

int mk_hpke_suite_check(mk_hpke_suite s)
{
	if (!kem_get(s.kem))
		return mk_error(-EOPNOTSUPP, "HPKE KEM 0x%04x is not supported (P-256, P-384, "
				"P-521 and X25519 are)", s.kem);
	if (!kdf_get(s.kdf))
		return mk_error(-EOPNOTSUPP, "HPKE KDF 0x%04x is not supported (HKDF-SHA256/384/512 "
				"are)", s.kdf);
	if (!aead_get(s.aead))
		return mk_error(-EOPNOTSUPP, "HPKE AEAD 0x%04x is not supported (AES-128-GCM, "
				"AES-256-GCM and ChaCha20Poly1305 are)", s.aead);
	return 0;
}

mk_curve mk_hpke_kem_curve(uint16_t kem)
{
	const kem_params *k = kem_get(kem);

	return k ? k->curve : MK_CURVE_NONE;
}

/* --- LabeledExtract / LabeledExpand on HMAC (§4) ----------------------------------------- */

static const uint8_t hpke_v1[] = { 'H', 'P', 'K', 'E', '-', 'v', '1' };

typedef struct suite_id {
	uint8_t b[10];
	size_t n;
	const char *md; /* hash of the KDF in use with this suite_id */
	size_t nh;
} suite_id;

static suite_id kem_suite_id(const kem_params *k)
{
	return (suite_id){ { 'K', 'E', 'M', (uint8_t)(k->id >> 8), (uint8_t)k->id }, 5, k->md,
			   k->nh };
}

static suite_id hpke_suite_id(mk_hpke_suite s, const kdf_params *kdf)
{
	return (suite_id){ { 'H', 'P', 'K', 'E', (uint8_t)(s.kem >> 8), (uint8_t)s.kem,
			     (uint8_t)(s.kdf >> 8), (uint8_t)s.kdf, (uint8_t)(s.aead >> 8),
			     (uint8_t)s.aead },
			   10, kdf->md, kdf->nh };
}

static int hmac_fail(void)
{
	return mk_error(-ENOMEM, "HMAC failed in OpenSSL (out of memory?)");
}

/*
 * HKDF-Extract(salt, "HPKE-v1" || suite_id || label || ikm), fed to HMAC piece by piece so
 * that an ikm (an HPKE info) of any length works. *ret gets Nh bytes.
 */
static int labeled_extract(const suite_id *sid, const uint8_t *salt, size_t salt_len,
			   const char *label, const uint8_t *ikm, size_t ikm_len, mk_secret **ret)
{
	_cleanup_secret_ mk_secret *out = NULL;
	EVP_MAC_CTX *c;
	size_t outl = 0;
	int r, ok;

	r = mk_secret_new(sid->nh, &out);
	if (r < 0)
		return r;
	c = mk_ossl_hmac_new(sid->md, salt, salt_len);
	if (!c)
		return hmac_fail();
	ok = EVP_MAC_update(c, hpke_v1, sizeof(hpke_v1)) == 1 &&
	     EVP_MAC_update(c, sid->b, sid->n) == 1 &&
	     EVP_MAC_update(c, (const uint8_t *)label, strlen(label)) == 1 &&
	     (ikm_len == 0 || EVP_MAC_update(c, ikm, ikm_len) == 1) &&
	     EVP_MAC_final(c, out->data, &outl, out->len) == 1 && outl == sid->nh;
	EVP_MAC_CTX_free(c);
	if (!ok)
		return hmac_fail();
	*ret = TAKE_PTR(out);
	return 0;
}

/* HKDF-Expand(prk, I2OSP(L, 2) || "HPKE-v1" || suite_id || label || info, L). */
static int labeled_expand(const suite_id *sid, const mk_secret *prk, const char *label,
			  const uint8_t *info, size_t info_len, size_t L, mk_secret **ret)
{
	_cleanup_secret_ mk_secret *out = NULL;
	uint8_t t[MK_HPKE_NH_MAX], l2[2] = { (uint8_t)(L >> 8), (uint8_t)L };
	size_t done = 0, tl = 0;
	int r = 0;

	if (L > 255 * sid->nh || L > 0xffff)
		return mk_error(-EINVAL, "HPKE cannot expand to %zu bytes", L);
	r = mk_secret_new(L, &out);
	if (r < 0)
		return r;
	for (uint8_t i = 1; done < L; i++) {
		EVP_MAC_CTX *c = mk_ossl_hmac_new(sid->md, prk->data, prk->len);
		size_t outl = 0;
		int ok;

		if (!c) {
			r = hmac_fail();
			break;
		}
		ok = (tl == 0 || EVP_MAC_update(c, t, tl) == 1) &&
		     EVP_MAC_update(c, l2, sizeof(l2)) == 1 &&
		     EVP_MAC_update(c, hpke_v1, sizeof(hpke_v1)) == 1 &&
		     EVP_MAC_update(c, sid->b, sid->n) == 1 &&
		     EVP_MAC_update(c, (const uint8_t *)label, strlen(label)) == 1 &&
		     (info_len == 0 || EVP_MAC_update(c, info, info_len) == 1) &&
		     EVP_MAC_update(c, &i, 1) == 1 && EVP_MAC_final(c, t, &outl, sizeof(t)) == 1 &&
		     outl == sid->nh;
		EVP_MAC_CTX_free(c);
		if (!ok) {
			r = hmac_fail();
			break;
		}
		tl = outl;
		memcpy(out->data + done, t, MK_MIN(tl, L - done));
		done += MK_MIN(tl, L - done);
	}
	mk_wipe(t, sizeof(t));
	if (r < 0)
		return r;
	*ret = TAKE_PTR(out);
	return 0;
}

/* --- software DH ------------------------------------------------------------------------- */

/* sk as a BIGNUM in [1, order), flagged for constant-time use. NULL if out of range. */
static BIGNUM *ec_scalar(const EC_GROUP *g, const uint8_t *sk, size_t sk_len)
{
	BIGNUM *d = BN_secure_new();

	if (!d)
		return NULL;
	BN_set_flags(d, BN_FLG_CONSTTIME);
	if (!BN_bin2bn(sk, (int)sk_len, d) || BN_is_zero(d) ||
	    BN_cmp(d, EC_GROUP_get0_order(g)) >= 0) {
		BN_clear_free(d);
		return NULL;
	}
	return d;
}

int mk_hpke_public_key(mk_curve c, const uint8_t *sk, size_t sk_len, mk_bytes *ret_pk)
{
	const kem_params *k = kem_of_curve(c);
	const EC_GROUP *g;
	EC_POINT *p = NULL;
	BIGNUM *d = NULL;
	mk_bytes pk = MK_BYTES_NULL;
	int r;

	if (!k)
		return mk_error(-EOPNOTSUPP, "no HPKE KEM on curve %d", (int)c);
	if (!sk || sk_len != k->nsk)
		return mk_error(-EINVAL, "%s private key must be %zu bytes", k->name, k->nsk);
	r = mk_bytes_alloc(k->npk, &pk);
	if (r < 0)
		return r;
	if (c == MK_CURVE_X25519) {
		crypto_scalarmult_curve25519_base(pk.data, sk);
		*ret_pk = pk;
		return 0;
	}
	g = mk_curve_ec_group(c);
	d = g ? ec_scalar(g, sk, sk_len) : NULL;
	if (!d) {
		r = mk_error(-EINVAL, "%s private key is not a valid scalar", k->name);
		goto out;
	}
	p = EC_POINT_new(g);
	if (!p || EC_POINT_mul(g, p, d, NULL, NULL, NULL) != 1 ||
	    EC_POINT_point2oct(g, p, POINT_CONVERSION_UNCOMPRESSED, pk.data, pk.len, NULL) !=
		    pk.len) {
		r = mk_error(-ENOMEM, "%s public key computation failed in OpenSSL", k->name);
		goto out;
	}
	*ret_pk = pk;
	pk = MK_BYTES_NULL;
	r = 0;
out:
	EC_POINT_free(p);
	BN_clear_free(d);
	mk_bytes_clear(&pk);
	return r;
}

int mk_hpke_soft_dh(void *userdata, const uint8_t *pk, size_t pk_len, mk_secret **ret)
{
	const mk_hpke_soft_key *key = userdata;
	const kem_params *k = key ? kem_of_curve(key->curve) : NULL;
	_cleanup_secret_ mk_secret *out = NULL;
	const EC_GROUP *g;
	EC_POINT *peer = NULL, *res = NULL;
	BIGNUM *d = NULL, *x = NULL;
	int r;

	if (!k)
		return mk_error(-EOPNOTSUPP, "software DH: unsupported curve");
	if (!key->sk || key->sk_len != k->nsk)
		return mk_error(-EINVAL, "%s private key must be %zu bytes", k->name, k->nsk);
	if (!pk || pk_len != k->npk)
		return mk_error(-EINVAL, "%s public key must be %zu bytes", k->name, k->npk);
	r = mk_secret_new(k->ndh, &out);
	if (r < 0)
		return r;
	if (key->curve == MK_CURVE_X25519) {
		/* libsodium refuses an all-zero result (a low-order point). */
		if (crypto_scalarmult_curve25519(out->data, key->sk, pk) != 0)
			return mk_error(-EINVAL, "X25519 public key gives an all-zero shared "
					"secret (a low-order point)");
		*ret = TAKE_PTR(out);
		return 0;
	}
	g = mk_curve_ec_group(key->curve);
	if (!g)
		return -ENOMEM;
	d = ec_scalar(g, key->sk, key->sk_len);
	peer = EC_POINT_new(g);
	res = EC_POINT_new(g);
	x = BN_secure_new();
	if (!d || !peer || !res || !x) {
		r = d ? -ENOMEM : mk_error(-EINVAL, "%s private key is not a valid scalar", k->name);
		goto out;
	}
	/* Only the uncompressed form: OpenSSL would also take compressed and hybrid (06/07). */
	if (pk[0] != 0x04 || EC_POINT_oct2point(g, peer, pk, pk_len, NULL) != 1 ||
	    EC_POINT_is_on_curve(g, peer, NULL) != 1 || EC_POINT_is_at_infinity(g, peer)) {
		r = mk_error(-EINVAL, "%s public key is not a point on the curve", k->name);
		goto out;
	}
	if (EC_POINT_mul(g, res, NULL, peer, d, NULL) != 1 || EC_POINT_is_at_infinity(g, res) ||
	    EC_POINT_get_affine_coordinates(g, res, x, NULL, NULL) != 1 ||
	    BN_bn2binpad(x, out->data, (int)out->len) != (int)out->len) {
		r = mk_error(-EINVAL, "%s DH failed", k->name);
		goto out;
	}
	*ret = TAKE_PTR(out);
	r = 0;
out:
	EC_POINT_clear_free(res);
	EC_POINT_free(peer);
	BN_clear_free(d);
	BN_clear_free(x);
	return r;
}

int mk_hpke_derive_key_pair(uint16_t kem, const uint8_t *ikm, size_t ikm_len,
			    mk_secret **ret_sk, mk_bytes *ret_pk)
{
	const kem_params *k = kem_get(kem);
	_cleanup_secret_ mk_secret *prk = NULL, *sk = NULL;
	mk_bytes pk = MK_BYTES_NULL;
	suite_id sid;
	int r;

	if (!k)
		return mk_error(-EOPNOTSUPP, "HPKE KEM 0x%04x is not supported", kem);
	sid = kem_suite_id(k);
	r = labeled_extract(&sid, NULL, 0, "dkp_prk", ikm, ikm_len, &prk);
	if (r < 0)
		return r;
	if (k->curve == MK_CURVE_X25519) {
		r = labeled_expand(&sid, prk, "sk", NULL, 0, k->nsk, &sk);
	} else {
		const EC_GROUP *g = mk_curve_ec_group(k->curve);
		BIGNUM *d = NULL;

		if (!g)
			return -ENOMEM;
		for (unsigned counter = 0;; counter++) {
			uint8_t ctr = (uint8_t)counter;

			if (counter > 255)
				return mk_error(-EIO, "HPKE DeriveKeyPair found no valid scalar");
			sk = mk_secret_free(sk);
			r = labeled_expand(&sid, prk, "candidate", &ctr, 1, k->nsk, &sk);
			if (r < 0)
				return r;
			sk->data[0] &= k->bitmask;
			d = ec_scalar(g, sk->data, sk->len);
			if (d)
				break;
		}
		BN_clear_free(d);
	}
	if (r < 0)
		return r;
	r = mk_hpke_public_key(k->curve, sk->data, sk->len, &pk);
	if (r < 0)
		return r;
	*ret_sk = TAKE_PTR(sk);
	*ret_pk = pk;
	return 0;
}

int mk_hpke_generate_key_pair(uint16_t kem, mk_secret **ret_sk, mk_bytes *ret_pk)
{
	const kem_params *k = kem_get(kem);
	_cleanup_secret_ mk_secret *ikm = NULL;
	int r;

	if (!k)
		return mk_error(-EOPNOTSUPP, "HPKE KEM 0x%04x is not supported", kem);
	r = mk_secret_new(k->nsk, &ikm);
	if (r < 0)
		return r;
	randombytes_buf(ikm->data, ikm->len);
	return mk_hpke_derive_key_pair(kem, ikm->data, ikm->len, ret_sk, ret_pk);
}

/* --- KEM (§4.1) -------------------------------------------------------------------------- */

/* shared_secret = LabeledExpand(LabeledExtract("", "eae_prk", dh), "shared_secret",
 * enc || pkR, Nsecret). */
static int extract_and_expand(const kem_params *k, const mk_secret *dh, const uint8_t *enc,
			      const uint8_t *pkR, mk_secret **ret)
{
	_cleanup_secret_ mk_secret *prk = NULL;
	uint8_t kem_context[2 * MK_HPKE_NPK_MAX];
	suite_id sid = kem_suite_id(k);
	int r;

	memcpy(kem_context, enc, k->npk);
	memcpy(kem_context + k->npk, pkR, k->npk);
	r = labeled_extract(&sid, NULL, 0, "eae_prk", dh->data, dh->len, &prk);
	if (r < 0)
		return r;
	return labeled_expand(&sid, prk, "shared_secret", kem_context, 2 * k->npk, k->nsecret,
			      ret);
}

/*
 * The X25519 encodings of points of small order (0, 1, the two of order 8, p-1, p, p+1),
 * compared without the top bit, as libsodium does: their DH with any key is all zero. They
 * are refused before the DH, so that such a point never reaches a token (SoftHSM answers it
 * with a generic failure, other tokens may not check at all).
 */
static bool x25519_small_order(const uint8_t p[32])
{
	static const uint8_t bad[7][32] = {
		{ 0 },
		{ 1 },
		{ 0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3,
		  0xfa, 0xf1, 0x9f, 0xc4, 0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32,
		  0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00 },
		{ 0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1,
		  0x55, 0x9c, 0x83, 0xef, 0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c,
		  0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f, 0x11, 0x57 },
		{ 0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		  0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		  0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f },
		{ 0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		  0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		  0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f },
		{ 0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		  0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		  0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f },
	};

	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		uint8_t diff = (uint8_t)((p[31] & 0x7f) ^ bad[i][31]);

		for (size_t j = 0; j < 31; j++)
			diff |= p[j] ^ bad[i][j];
		if (diff == 0)
			return true;
	}
	return false;
}

bool mk_hpke_x25519_small_order(const uint8_t p[32])
{
	return x25519_small_order(p);
}

int mk_hpke_decap(mk_hpke_suite s, mk_hpke_dh_fn dh_fn, void *userdata, const uint8_t *enc,
		  size_t enc_len, const uint8_t *pkR, size_t pkR_len, mk_secret **ret_shared)
{
	const kem_params *k = kem_get(s.kem);
	_cleanup_secret_ mk_secret *dh = NULL;
	int r;

	r = mk_hpke_suite_check(s);
	if (r < 0)
		return r;
	if (!pkR || pkR_len != k->npk)
		return mk_error(-EINVAL, "%s recipient public key must be %zu bytes, got %zu",
				k->name, k->npk, pkR ? pkR_len : 0);
	/* Before the point goes anywhere near a token: an invalid-curve point can leak the
	 * private key of a token that does not check it. */
	r = mk_curve_validate_point(k->curve, enc, enc_len);
	if (r < 0)
		return r;
	if (k->curve == MK_CURVE_X25519 && x25519_small_order(enc))
		return mk_error(-EINVAL, "X25519 public key is a point of small order (its shared "
				"secret would be all zero)");
	r = dh_fn(userdata, enc, enc_len, &dh);
	if (r < 0)
		return r;
	if (!dh || dh->len != k->ndh)
		return mk_error(-EIO, "%s: DH returned %zu bytes, expected %zu", k->name,
				dh ? dh->len : 0, k->ndh);
	if (k->curve == MK_CURVE_X25519 && sodium_is_zero(dh->data, dh->len))
		return mk_error(-EINVAL, "X25519 public key gives an all-zero shared secret "
				"(a low-order point)");
	return extract_and_expand(k, dh, enc, pkR, ret_shared);
}

/* --- key schedule (§5.1) ----------------------------------------------------------------- */

struct mk_hpke_ctx {
	mk_hpke_suite s;
	const kdf_params *kdf;
	const aead_params *aead;
	const EVP_CIPHER *cipher;
	mk_secret *key, *base_nonce, *exporter, *nonce; /* nonce: scratch for the current one */
	uint64_t seq;
};

mk_hpke_ctx *mk_hpke_ctx_free(mk_hpke_ctx *c)
{
	if (!c)
		return NULL;
	mk_secret_free(c->key);
	mk_secret_free(c->base_nonce);
	mk_secret_free(c->exporter);
	mk_secret_free(c->nonce);
	free(c);
	return NULL;
}

/*
 * psk_id_hash = LabeledExtract("", "psk_id_hash", "") in mode_base depends on the suite only
 * and is public: computed once per suite and kept.
 */
static int psk_id_hash(mk_hpke_suite s, const suite_id *sid, uint8_t out[MK_HPKE_NH_MAX])
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	static struct {
		mk_hpke_suite s;
		uint8_t h[MK_HPKE_NH_MAX];
	} cache[ELEMENTSOF(kems) * ELEMENTSOF(kdfs) * ELEMENTSOF(aeads)];
	static size_t ncache;
	_cleanup_secret_ mk_secret *h = NULL;
	bool found = false;
	int r;

	pthread_mutex_lock(&lock);
	for (size_t i = 0; i < ncache && !found; i++)
		if (cache[i].s.kem == s.kem && cache[i].s.kdf == s.kdf && cache[i].s.aead == s.aead) {
			memcpy(out, cache[i].h, sid->nh);
			found = true;
		}
	pthread_mutex_unlock(&lock);
	if (found)
		return 0;
	r = labeled_extract(sid, NULL, 0, "psk_id_hash", NULL, 0, &h);
	if (r < 0)
		return r;
	memcpy(out, h->data, sid->nh);
	pthread_mutex_lock(&lock);
	if (ncache < ELEMENTSOF(cache)) {
		cache[ncache].s = s;
		memcpy(cache[ncache].h, h->data, sid->nh);
		ncache++;
	}
	pthread_mutex_unlock(&lock);
	return 0;
}

/* The key schedule; the exporter secret only when asked (single-shot Open never exports). */
static int key_schedule(mk_hpke_suite s, const mk_secret *shared, const uint8_t *info,
			size_t info_len, bool exporter, mk_hpke_ctx **ret)
{
	_cleanup_(mk_hpke_ctx_freep) mk_hpke_ctx *c = NULL;
	_cleanup_secret_ mk_secret *info_hash = NULL, *secret = NULL;
	uint8_t ksc[1 + 2 * MK_HPKE_NH_MAX];
	suite_id sid;
	size_t nh;
	int r;

	r = mk_hpke_suite_check(s);
	if (r < 0)
		return r;
	if (!shared)
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->s = s;
	c->kdf = kdf_get(s.kdf);
	c->aead = aead_get(s.aead);
	c->cipher = mk_ossl_aead(s.aead);
	if (!c->cipher)
		return mk_error(-EOPNOTSUPP, "OpenSSL lacks the cipher %s", c->aead->name);
	sid = hpke_suite_id(s, c->kdf);
	nh = c->kdf->nh;

	ksc[0] = 0x00; /* mode_base */
	r = psk_id_hash(s, &sid, ksc + 1);
	if (r < 0)
		return r;
	r = labeled_extract(&sid, NULL, 0, "info_hash", info, info_len, &info_hash);
	if (r < 0)
		return r;
	memcpy(ksc + 1 + nh, info_hash->data, nh);
	r = labeled_extract(&sid, shared->data, shared->len, "secret", NULL, 0, &secret);
	if (r < 0)
		return r;
	r = labeled_expand(&sid, secret, "key", ksc, 1 + 2 * nh, c->aead->nk, &c->key);
	if (r < 0)
		return r;
	r = labeled_expand(&sid, secret, "base_nonce", ksc, 1 + 2 * nh, c->aead->nn,
			   &c->base_nonce);
	if (r < 0)
		return r;
	if (exporter) {
		r = labeled_expand(&sid, secret, "exp", ksc, 1 + 2 * nh, nh, &c->exporter);
		if (r < 0)
			return r;
	}
	r = mk_secret_new(c->aead->nn, &c->nonce);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(c);
	return 0;
}

int mk_hpke_key_schedule(mk_hpke_suite s, const mk_secret *shared, const uint8_t *info,
			 size_t info_len, mk_hpke_ctx **ret)
{
	return key_schedule(s, shared, info, info_len, true, ret);
}

const mk_secret *mk_hpke_ctx_key(const mk_hpke_ctx *c)
{
	return c->key;
}

const mk_secret *mk_hpke_ctx_base_nonce(const mk_hpke_ctx *c)
{
	return c->base_nonce;
}

const mk_secret *mk_hpke_ctx_exporter_secret(const mk_hpke_ctx *c)
{
	return c->exporter;
}

void mk_hpke_ctx_set_seq(mk_hpke_ctx *c, uint64_t seq)
{
	c->seq = seq;
}

int mk_hpke_ctx_nonce(const mk_hpke_ctx *c, uint8_t *out, size_t out_len)
{
	size_t nn = c->aead->nn;

	if (!out || out_len < nn)
		return -EINVAL;
	memcpy(out, c->base_nonce->data, nn);
	for (size_t i = 0; i < 8; i++)
		out[nn - 1 - i] ^= (uint8_t)(c->seq >> (8 * i));
	return 0;
}

/* EVP_CipherUpdate takes an int length: feed long inputs in chunks. */
static int cipher_update(EVP_CIPHER_CTX *e, uint8_t *out, const uint8_t *in, size_t n)
{
	while (n > 0) {
		int chunk = (int)MK_MIN(n, (size_t)1 << 30), outl = 0;

		if (EVP_CipherUpdate(e, out, &outl, in, chunk) != 1 || (out && outl != chunk))
			return -1;
		in += chunk;
		if (out)
			out += chunk;
		n -= (size_t)chunk;
	}
	return 0;
}

int mk_hpke_ctx_open(mk_hpke_ctx *c, const uint8_t *aad, size_t aad_len, const uint8_t *ct,
		     size_t ct_len, mk_bytes *ret_pt)
{
	mk_bytes pt = MK_BYTES_NULL;
	EVP_CIPHER_CTX *e = NULL;
	size_t n;
	int r, outl = 0;

	if (!ct || ct_len < MK_HPKE_TAG_LEN)
		return mk_error(-EBADMSG, "HPKE ciphertext is shorter than its %d-byte tag",
				MK_HPKE_TAG_LEN);
	if (c->seq == UINT64_MAX)
		return mk_error(-EINVAL, "HPKE context reached its message limit");
	n = ct_len - MK_HPKE_TAG_LEN;
	r = mk_hpke_ctx_nonce(c, c->nonce->data, c->nonce->len);
	if (r < 0)
		return r;
	r = mk_bytes_alloc(n, &pt);
	if (r < 0)
		return r;
	e = EVP_CIPHER_CTX_new();
	if (!e || EVP_DecryptInit_ex2(e, c->cipher, c->key->data, c->nonce->data, NULL) != 1 ||
	    cipher_update(e, NULL, aad, aad_len) < 0 || cipher_update(e, pt.data, ct, n) < 0 ||
	    EVP_CIPHER_CTX_ctrl(e, EVP_CTRL_AEAD_SET_TAG, MK_HPKE_TAG_LEN,
				(void *)(ct + n)) != 1) {
		r = mk_error(-ENOMEM, "%s failed in OpenSSL", c->aead->name);
		goto out;
	}
	/* The plaintext is handed out only once the tag has been checked. */
	if (EVP_DecryptFinal_ex(e, pt.data + n, &outl) != 1) {
		r = mk_error(-EBADMSG, "HPKE decryption failed: the ciphertext, its label, "
				       "context or key do not match");
		goto out;
	}
	c->seq++;
	*ret_pt = pt;
	pt = MK_BYTES_NULL;
	r = 0;
out:
	EVP_CIPHER_CTX_free(e);
	mk_bytes_clear(&pt);
	mk_wipe(c->nonce->data, c->nonce->len);
	return r;
}

int mk_hpke_ctx_seal(mk_hpke_ctx *c, const uint8_t *aad, size_t aad_len, const uint8_t *pt,
		     size_t pt_len, mk_bytes *ret_ct)
{
	mk_bytes ct = MK_BYTES_NULL;
	EVP_CIPHER_CTX *e = NULL;
	int r, outl = 0;

	if (pt_len > SIZE_MAX - MK_HPKE_TAG_LEN)
		return -E2BIG;
	if (c->seq == UINT64_MAX)
		return mk_error(-EINVAL, "HPKE context reached its message limit");
	r = mk_hpke_ctx_nonce(c, c->nonce->data, c->nonce->len);
	if (r < 0)
		return r;
	r = mk_bytes_alloc(pt_len + MK_HPKE_TAG_LEN, &ct);
	if (r < 0)
		return r;
	e = EVP_CIPHER_CTX_new();
	if (!e || EVP_EncryptInit_ex2(e, c->cipher, c->key->data, c->nonce->data, NULL) != 1 ||
	    cipher_update(e, NULL, aad, aad_len) < 0 || cipher_update(e, ct.data, pt, pt_len) < 0 ||
	    EVP_EncryptFinal_ex(e, ct.data + pt_len, &outl) != 1 ||
	    EVP_CIPHER_CTX_ctrl(e, EVP_CTRL_AEAD_GET_TAG, MK_HPKE_TAG_LEN, ct.data + pt_len) !=
		    1) {
		r = mk_error(-ENOMEM, "%s failed in OpenSSL", c->aead->name);
		goto out;
	}
	c->seq++;
	*ret_ct = ct;
	ct = MK_BYTES_NULL;
	r = 0;
out:
	EVP_CIPHER_CTX_free(e);
	mk_bytes_clear(&ct);
	mk_wipe(c->nonce->data, c->nonce->len);
	return r;
}

int mk_hpke_ctx_export(const mk_hpke_ctx *c, const uint8_t *exp_ctx, size_t exp_ctx_len,
		       size_t L, mk_secret **ret)
{
	suite_id sid = hpke_suite_id(c->s, c->kdf);

	if (!c->exporter)
		return mk_error(-EINVAL, "this HPKE context has no exporter secret");
	return labeled_expand(&sid, c->exporter, "sec", exp_ctx, exp_ctx_len, L, ret);
}

/* --- single-shot ------------------------------------------------------------------------- */

int mk_hpke_open_base(mk_hpke_suite s, mk_hpke_dh_fn dh_fn, void *userdata, const uint8_t *pkR,
		      size_t pkR_len, const uint8_t *info, size_t info_len, const uint8_t *aad,
		      size_t aad_len, const uint8_t *enc, size_t enc_len, const uint8_t *ct,
		      size_t ct_len, mk_bytes *ret_pt)
{
	_cleanup_secret_ mk_secret *shared = NULL;
	_cleanup_(mk_hpke_ctx_freep) mk_hpke_ctx *c = NULL;
	int r;

	/* Cheap checks first, so that a short ciphertext never costs a token operation. */
	r = mk_hpke_suite_check(s);
	if (r < 0)
		return r;
	if (!ct || ct_len < MK_HPKE_TAG_LEN)
		return mk_error(-EBADMSG, "HPKE ciphertext is shorter than its %d-byte tag",
				MK_HPKE_TAG_LEN);
	r = mk_hpke_decap(s, dh_fn, userdata, enc, enc_len, pkR, pkR_len, &shared);
	if (r < 0)
		return r;
	r = key_schedule(s, shared, info, info_len, false, &c);
	if (r < 0)
		return r;
	return mk_hpke_ctx_open(c, aad, aad_len, ct, ct_len, ret_pt);
}

int mk_hpke_seal_base(mk_hpke_suite s, const uint8_t *pkR, size_t pkR_len, const uint8_t *info,
		      size_t info_len, const uint8_t *aad, size_t aad_len, const uint8_t *pt,
		      size_t pt_len, const uint8_t *ikmE, size_t ikmE_len, mk_bytes *ret_enc,
		      mk_bytes *ret_ct)
{
	_cleanup_secret_ mk_secret *skE = NULL, *dh = NULL, *shared = NULL;
	_cleanup_(mk_hpke_ctx_freep) mk_hpke_ctx *c = NULL;
	_cleanup_bytes_ mk_bytes enc = MK_BYTES_NULL, ct = MK_BYTES_NULL;
	const kem_params *k;
	mk_hpke_soft_key key;
	int r;

	r = mk_hpke_suite_check(s);
	if (r < 0)
		return r;
	k = kem_get(s.kem);
	r = mk_curve_validate_point(k->curve, pkR, pkR_len);
	if (r < 0)
		return r;
	if (ikmE)
		r = mk_hpke_derive_key_pair(s.kem, ikmE, ikmE_len, &skE, &enc);
	else
		r = mk_hpke_generate_key_pair(s.kem, &skE, &enc);
	if (r < 0)
		return r;
	key = (mk_hpke_soft_key){ k->curve, skE->data, skE->len };
	r = mk_hpke_soft_dh(&key, pkR, pkR_len, &dh);
	if (r < 0)
		return r;
	r = extract_and_expand(k, dh, enc.data, pkR, &shared);
	if (r < 0)
		return r;
	r = key_schedule(s, shared, info, info_len, false, &c);
	if (r < 0)
		return r;
	r = mk_hpke_ctx_seal(c, aad, aad_len, pt, pt_len, &ct);
	if (r < 0)
		return r;
	*ret_enc = enc;
	*ret_ct = ct;
	enc = ct = MK_BYTES_NULL;
	return 0;
}
