/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * HPKE base mode in software against RFC 9180 Appendix A (P-256 and X25519, AES-128-GCM and
 * ChaCha20Poly1305): DeriveKeyPair, shared secret, key schedule, every sequence number's
 * nonce and ciphertext, exports; then negative cases and large inputs.
 */
#include <errno.h>
#include <string.h>

#include <sodium.h>

#include "agent/hpke.h"
#include "common/error.h"
#include "tests/crypto/crypto-test.h"
#include "tests/fixture.h"
#include "tests/vectors.h"

static const char *const files[] = {
	"hpke-base-kem0010-kdf0001-aead0001.json",
	"hpke-base-kem0010-kdf0001-aead0003.json",
	"hpke-base-kem0020-kdf0001-aead0001.json",
	"hpke-base-kem0020-kdf0001-aead0003.json",
};

typedef struct vec {
	json_object *root;
	mk_hpke_suite s;
	mk_bytes info, ikmE, pkEm, skEm, ikmR, pkRm, skRm, enc, shared, key, base_nonce, exporter;
} vec;

static void vec_load(vec *v, const char *file)
{
	v->root = mkt_vector_load(file);
	v->s = (mk_hpke_suite){ (uint16_t)mkt_json_int(v->root, "kem_id"),
				(uint16_t)mkt_json_int(v->root, "kdf_id"),
				(uint16_t)mkt_json_int(v->root, "aead_id") };
	mkt_json_hex(v->root, "info", &v->info);
	mkt_json_hex(v->root, "ikmE", &v->ikmE);
	mkt_json_hex(v->root, "pkEm", &v->pkEm);
	mkt_json_hex(v->root, "skEm", &v->skEm);
	mkt_json_hex(v->root, "ikmR", &v->ikmR);
	mkt_json_hex(v->root, "pkRm", &v->pkRm);
	mkt_json_hex(v->root, "skRm", &v->skRm);
	mkt_json_hex(v->root, "enc", &v->enc);
	mkt_json_hex(v->root, "shared_secret", &v->shared);
	mkt_json_hex(v->root, "key", &v->key);
	mkt_json_hex(v->root, "base_nonce", &v->base_nonce);
	mkt_json_hex(v->root, "exporter_secret", &v->exporter);
}

static void vec_free(vec *v)
{
	mk_bytes *all[] = { &v->info, &v->ikmE, &v->pkEm, &v->skEm, &v->ikmR, &v->pkRm,
			    &v->skRm, &v->enc, &v->shared, &v->key, &v->base_nonce, &v->exporter };

	for (size_t i = 0; i < ELEMENTSOF(all); i++)
		mk_bytes_clear(all[i]);
	json_object_put(v->root);
}

static void test_vector(const char *file)
{
	_cleanup_secret_ mk_secret *sk = NULL, *shared = NULL;
	_cleanup_(mk_hpke_ctx_freep) mk_hpke_ctx *c = NULL, *sc = NULL;
	_cleanup_bytes_ mk_bytes pk = MK_BYTES_NULL;
	json_object *encs, *exps;
	mk_hpke_soft_key rk;
	vec v = { 0 };

	vec_load(&v, file);
	mkt_diag("%s", file);
	mkt_ok_r(mk_hpke_suite_check(v.s), "suite supported");

	mkt_ok(mk_hpke_derive_key_pair(v.s.kem, v.ikmE.data, v.ikmE.len, &sk, &pk) == 0 &&
		       mkt_secret_eq(sk, &v.skEm) && mkt_bytes_eq(pk.data, pk.len, &v.pkEm),
	       "DeriveKeyPair(ikmE) gives skEm and pkEm");
	sk = mk_secret_free(sk);
	mk_bytes_clear(&pk);
	mkt_ok(mk_hpke_derive_key_pair(v.s.kem, v.ikmR.data, v.ikmR.len, &sk, &pk) == 0 &&
		       mkt_secret_eq(sk, &v.skRm) && mkt_bytes_eq(pk.data, pk.len, &v.pkRm),
	       "DeriveKeyPair(ikmR) gives skRm and pkRm");
	sk = mk_secret_free(sk);
	mk_bytes_clear(&pk);

	rk = (mk_hpke_soft_key){ mk_hpke_kem_curve(v.s.kem), v.skRm.data, v.skRm.len };
	mkt_ok_r(mk_hpke_decap(v.s, mk_hpke_soft_dh, &rk, v.enc.data, v.enc.len, v.pkRm.data,
			       v.pkRm.len, &shared),
		 "Decap");
	mkt_ok(mkt_secret_eq(shared, &v.shared), "shared_secret matches");
	if (!shared)
		goto out;
	mkt_ok_r(mk_hpke_key_schedule(v.s, shared, v.info.data, v.info.len, &c), "KeySchedule");
	if (!c)
		goto out;
	mkt_ok(mkt_secret_eq(mk_hpke_ctx_key(c), &v.key), "key matches");
	mkt_ok(mkt_secret_eq(mk_hpke_ctx_base_nonce(c), &v.base_nonce), "base_nonce matches");
	mkt_ok(mkt_secret_eq(mk_hpke_ctx_exporter_secret(c), &v.exporter),
	       "exporter_secret matches");
	/* a second context, for sealing: same schedule */
	mk_hpke_key_schedule(v.s, shared, v.info.data, v.info.len, &sc);

	encs = mkt_json_path(v.root, "encryptions");
	for (size_t i = 0; encs && i < json_object_array_length(encs); i++) {
		_cleanup_bytes_ mk_bytes pt = MK_BYTES_NULL, aad = MK_BYTES_NULL,
					 nonce = MK_BYTES_NULL, ct = MK_BYTES_NULL,
					 got = MK_BYTES_NULL, sealed = MK_BYTES_NULL;
		json_object *e = json_object_array_get_idx(encs, i);
		long long seq = mkt_json_int(e, "sequence_number");
		uint8_t n[12];

		mkt_json_hex(e, "pt", &pt);
		mkt_json_hex(e, "aad", &aad);
		mkt_json_hex(e, "nonce", &nonce);
		mkt_json_hex(e, "ct", &ct);
		mk_hpke_ctx_set_seq(c, (uint64_t)seq);
		mkt_ok(mk_hpke_ctx_nonce(c, n, sizeof(n)) == 0 && mkt_bytes_eq(n, 12, &nonce),
		       "sequence %lld: nonce matches", seq);
		mkt_ok(mk_hpke_ctx_open(c, aad.data, aad.len, ct.data, ct.len, &got) == 0 &&
			       mkt_bytes_eq(got.data, got.len, &pt),
		       "sequence %lld: Open gives pt", seq);
		mk_hpke_ctx_set_seq(sc, (uint64_t)seq);
		mkt_ok(mk_hpke_ctx_seal(sc, aad.data, aad.len, pt.data, pt.len, &sealed) == 0 &&
			       mkt_bytes_eq(sealed.data, sealed.len, &ct),
		       "sequence %lld: Seal gives ct", seq);
	}

	exps = mkt_json_path(v.root, "exports");
	for (size_t i = 0; exps && i < json_object_array_length(exps); i++) {
		_cleanup_bytes_ mk_bytes ectx = MK_BYTES_NULL, want = MK_BYTES_NULL;
		_cleanup_secret_ mk_secret *got = NULL;
		json_object *e = json_object_array_get_idx(exps, i);

		mkt_json_hex(e, "exporter_context", &ectx);
		mkt_json_hex(e, "exported_value", &want);
		mkt_ok(mk_hpke_ctx_export(c, ectx.data, ectx.len,
					  (size_t)mkt_json_int(e, "L"), &got) == 0 &&
			       mkt_secret_eq(got, &want),
		       "export %zu matches", i);
	}

	/* single-shot seal with the vector's ikmE reproduces enc and the sequence-0 ct */
	{
		_cleanup_bytes_ mk_bytes pt = MK_BYTES_NULL, aad = MK_BYTES_NULL,
					 ct = MK_BYTES_NULL, enc = MK_BYTES_NULL,
					 sct = MK_BYTES_NULL, got = MK_BYTES_NULL;

		mkt_json_hex(v.root, "encryptions.0.pt", &pt);
		mkt_json_hex(v.root, "encryptions.0.aad", &aad);
		mkt_json_hex(v.root, "encryptions.0.ct", &ct);
		mkt_ok(mk_hpke_seal_base(v.s, v.pkRm.data, v.pkRm.len, v.info.data, v.info.len,
					 aad.data, aad.len, pt.data, pt.len, v.ikmE.data,
					 v.ikmE.len, &enc, &sct) == 0 &&
			       mkt_bytes_eq(enc.data, enc.len, &v.enc) &&
			       mkt_bytes_eq(sct.data, sct.len, &ct),
		       "SealBase with ikmE gives enc and ct");
		mkt_ok(mk_hpke_open_base(v.s, mk_hpke_soft_dh, &rk, v.pkRm.data, v.pkRm.len,
					 v.info.data, v.info.len, aad.data, aad.len, v.enc.data,
					 v.enc.len, ct.data, ct.len, &got) == 0 &&
			       mkt_bytes_eq(got.data, got.len, &pt),
		       "OpenBase single-shot gives pt");
	}
out:
	vec_free(&v);
}

/* Negative cases on the first P-256 and X25519 vectors. */
static void test_negative(const char *file)
{
	_cleanup_bytes_ mk_bytes pt = MK_BYTES_NULL, aad = MK_BYTES_NULL, ct = MK_BYTES_NULL,
				 bad = MK_BYTES_NULL, badenc = MK_BYTES_NULL;
	mk_bytes got = MK_BYTES_NULL;
	mk_hpke_soft_key rk;
	bool x25519;
	vec v = { 0 };
	int r;

	vec_load(&v, file);
	x25519 = v.s.kem == MK_HPKE_KEM_X25519;
	rk = (mk_hpke_soft_key){ mk_hpke_kem_curve(v.s.kem), v.skRm.data, v.skRm.len };
	mkt_json_hex(v.root, "encryptions.0.pt", &pt);
	mkt_json_hex(v.root, "encryptions.0.aad", &aad);
	mkt_json_hex(v.root, "encryptions.0.ct", &ct);
	mkt_diag("negative cases, %s", file);

#define OPEN(info, infolen, a, alen, e, elen, c, clen)                                             \
	mk_hpke_open_base(v.s, mk_hpke_soft_dh, &rk, v.pkRm.data, v.pkRm.len, info, infolen, a,  \
			  alen, e, elen, c, clen, &got)

	mk_bytes_dup(ct.data, ct.len, &bad);
	bad.data[0] ^= 0x01;
	r = OPEN(v.info.data, v.info.len, aad.data, aad.len, v.enc.data, v.enc.len, bad.data,
		 bad.len);
	mkt_ok_err(r, -EBADMSG, "tampered ciphertext: DecryptFailed");
	mkt_ok(got.data == NULL, "tampered ciphertext: no plaintext");
	mkt_ok(strcmp(mk_error_name(r), "DecryptFailed") == 0, "error name DecryptFailed");

	bad.data[0] ^= 0x01;
	bad.data[bad.len - 1] ^= 0x80;
	mkt_ok_err(OPEN(v.info.data, v.info.len, aad.data, aad.len, v.enc.data, v.enc.len,
			bad.data, bad.len),
		   -EBADMSG, "tampered tag: DecryptFailed");
	mkt_ok(got.data == NULL, "tampered tag: no plaintext");

	mkt_ok_err(OPEN(v.info.data, v.info.len, aad.data, aad.len, v.enc.data, v.enc.len,
			ct.data, 15),
		   -EBADMSG, "ciphertext shorter than the tag: DecryptFailed");
	mkt_ok_err(OPEN(v.info.data, v.info.len, aad.data, aad.len, v.enc.data, v.enc.len,
			ct.data, ct.len - 1),
		   -EBADMSG, "truncated ciphertext: DecryptFailed");
	mkt_ok_err(OPEN(v.info.data, v.info.len - 1, aad.data, aad.len, v.enc.data, v.enc.len,
			ct.data, ct.len),
		   -EBADMSG, "other info: DecryptFailed");
	mkt_ok_err(OPEN(v.info.data, v.info.len, aad.data, aad.len - 1, v.enc.data, v.enc.len,
			ct.data, ct.len),
		   -EBADMSG, "other aad: DecryptFailed");
	mkt_ok(got.data == NULL, "no plaintext on any of them");

	mk_bytes_dup(v.enc.data, v.enc.len, &badenc);
	badenc.data[badenc.len - 1] ^= 0x01;
	r = OPEN(v.info.data, v.info.len, aad.data, aad.len, badenc.data, badenc.len, ct.data,
		 ct.len);
	if (x25519)
		mkt_ok_err(r, -EBADMSG, "tampered kem_output: DecryptFailed");
	else
		mkt_ok_err(r, -EINVAL, "tampered kem_output is off the curve: InvalidInput (%s)",
			   mk_error_message());
	mkt_ok(got.data == NULL, "tampered kem_output: no plaintext");
	mkt_ok_err(OPEN(v.info.data, v.info.len, aad.data, aad.len, v.enc.data, v.enc.len - 1,
			ct.data, ct.len),
		   -EINVAL, "truncated kem_output: InvalidInput");
	if (x25519) {
		uint8_t zero[32] = { 0 }, one[32] = { 1 };

		mkt_ok_err(OPEN(v.info.data, v.info.len, aad.data, aad.len, zero, 32, ct.data,
				ct.len),
			   -EINVAL, "X25519 kem_output 0 (all-zero DH) refused");
		mkt_ok_err(OPEN(v.info.data, v.info.len, aad.data, aad.len, one, 32, ct.data,
				ct.len),
			   -EINVAL, "X25519 kem_output 1 (low order, all-zero DH) refused");
	} else {
		uint8_t inf[65] = { 0x04 }, comp[65];

		mkt_ok_err(OPEN(v.info.data, v.info.len, aad.data, aad.len, inf, 65, ct.data,
				ct.len),
			   -EINVAL, "P-256 kem_output (0,0) refused");
		memcpy(comp, v.enc.data, 65);
		comp[0] = 0x02;
		mkt_ok_err(OPEN(v.info.data, v.info.len, aad.data, aad.len, comp, 33, ct.data,
				ct.len),
			   -EINVAL, "P-256 compressed kem_output refused");
		/* hybrid form (06/07 || X || Y): OpenSSL parses it, mlskey must not */
		{
			mk_secret *dh = NULL;

			memcpy(comp, v.enc.data, 65);
			comp[0] = (uint8_t)(0x06 | (comp[64] & 1));
			mkt_ok_err(OPEN(v.info.data, v.info.len, aad.data, aad.len, comp, 65,
					ct.data, ct.len),
				   -EINVAL, "P-256 hybrid-form kem_output refused");
			mkt_ok_err(mk_hpke_soft_dh(&rk, comp, 65, &dh), -EINVAL,
				   "software DH refuses the hybrid form too (fuzz-point regression)");
			mkt_ok(dh == NULL, "no DH result");
		}
	}
	mkt_ok(got.data == NULL, "no plaintext for any bad kem_output");

	{
		mk_hpke_suite s = v.s;

		s.kem = 0x0021; /* X448 */
		mkt_ok_err(mk_hpke_open_base(s, mk_hpke_soft_dh, &rk, v.pkRm.data, v.pkRm.len,
					     NULL, 0, NULL, 0, v.enc.data, v.enc.len, ct.data,
					     ct.len, &got),
			   -EOPNOTSUPP, "unsupported KEM refused");
		s = v.s;
		s.aead = 0xffff; /* export-only */
		mkt_ok_err(mk_hpke_suite_check(s), -EOPNOTSUPP, "export-only AEAD refused");
		s = v.s;
		s.kdf = 0x0004;
		mkt_ok_err(mk_hpke_suite_check(s), -EOPNOTSUPP, "unknown KDF refused");
		s = v.s;
		s.aead = v.s.aead == 1 ? 3 : 1;
		mkt_ok_err(mk_hpke_open_base(s, mk_hpke_soft_dh, &rk, v.pkRm.data, v.pkRm.len,
					     v.info.data, v.info.len, aad.data, aad.len,
					     v.enc.data, v.enc.len, ct.data, ct.len, &got),
			   -EBADMSG, "other AEAD than the sender's: DecryptFailed");
	}
	{
		_cleanup_bytes_ mk_bytes enc = MK_BYTES_NULL, sct = MK_BYTES_NULL;
		uint8_t off[65];

		if (!x25519) {
			memcpy(off, v.pkRm.data, 65);
			off[64] ^= 1;
			mkt_ok_err(mk_hpke_seal_base(v.s, off, 65, NULL, 0, NULL, 0, pt.data,
						     pt.len, NULL, 0, &enc, &sct),
				   -EINVAL, "seal to an off-curve pkR refused");
			mkt_ok(enc.data == NULL && sct.data == NULL, "seal wrote nothing");
		}
	}
#undef OPEN
	vec_free(&v);
}

/* Every KEM x KDF x AEAD round-trips with fresh keys, with a 1 MiB info and 4 MiB pt. */
static void test_roundtrip_all(void)
{
	static const uint16_t kem_ids[] = { MK_HPKE_KEM_P256, MK_HPKE_KEM_P384, MK_HPKE_KEM_P521,
					    MK_HPKE_KEM_X25519 };
	size_t big_info = (size_t)1 << 20, big_pt = (size_t)4 << 20;
	_cleanup_bytes_ mk_bytes info = MK_BYTES_NULL, pt = MK_BYTES_NULL;

	if (mk_bytes_alloc(big_info, &info) < 0 || mk_bytes_alloc(big_pt, &pt) < 0)
		mkt_bail("out of memory");
	for (size_t i = 0; i < info.len; i++)
		info.data[i] = (uint8_t)(i * 7);
	for (size_t i = 0; i < pt.len; i++)
		pt.data[i] = (uint8_t)(i * 13);

	for (size_t k = 0; k < ELEMENTSOF(kem_ids); k++)
		for (uint16_t kdf = 1; kdf <= 3; kdf++)
			for (uint16_t aead = 1; aead <= 3; aead++) {
				mk_hpke_suite s = { kem_ids[k], kdf, aead };
				_cleanup_secret_ mk_secret *sk = NULL;
				_cleanup_bytes_ mk_bytes pk = MK_BYTES_NULL, enc = MK_BYTES_NULL,
							 ct = MK_BYTES_NULL, got = MK_BYTES_NULL;
				bool big = kdf == 1 && aead == 1;
				size_t il = big ? info.len : 100, pl = big ? pt.len : 100;
				mk_hpke_soft_key rk;

				if (mk_hpke_generate_key_pair(s.kem, &sk, &pk) < 0) {
					mkt_ok(false, "key pair for KEM 0x%04x", s.kem);
					continue;
				}
				rk = (mk_hpke_soft_key){ mk_hpke_kem_curve(s.kem), sk->data,
							 sk->len };
				mkt_ok(mk_hpke_seal_base(s, pk.data, pk.len, info.data, il,
							 (const uint8_t *)"aad", 3, pt.data, pl,
							 NULL, 0, &enc, &ct) == 0 &&
					       mk_hpke_open_base(s, mk_hpke_soft_dh, &rk, pk.data,
								 pk.len, info.data, il,
								 (const uint8_t *)"aad", 3,
								 enc.data, enc.len, ct.data,
								 ct.len, &got) == 0 &&
					       got.len == pl && memcmp(got.data, pt.data, pl) == 0,
				       "round trip KEM 0x%04x KDF %u AEAD %u (info %zu, pt %zu)",
				       s.kem, kdf, aead, il, pl);
				if (big) {
					mk_bytes none = MK_BYTES_NULL;

					info.data[il - 1] ^= 1;
					mkt_ok(mk_hpke_open_base(s, mk_hpke_soft_dh, &rk, pk.data,
								 pk.len, info.data, il,
								 (const uint8_t *)"aad", 3,
								 enc.data, enc.len, ct.data,
								 ct.len, &none) == -EBADMSG &&
						       none.data == NULL,
					       "1 MiB info differing in its last byte: "
					       "DecryptFailed");
					info.data[il - 1] ^= 1;
				}
			}
}

/* The small-order list is exactly the points whose X25519 DH is all zero. */
static void test_x25519_small_order(void)
{
	static const uint8_t o8[2][32] = {
		{ 0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3,
		  0xfa, 0xf1, 0x9f, 0xc4, 0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32,
		  0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00 },
		{ 0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1,
		  0x55, 0x9c, 0x83, 0xef, 0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c,
		  0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f, 0x11, 0x57 },
	};
	_cleanup_secret_ mk_secret *sk = NULL;
	_cleanup_bytes_ mk_bytes pk = MK_BYTES_NULL;
	size_t listed = 0, mismatch = 0, tried = 0;
	mk_hpke_soft_key k;
	uint8_t p[32];

	mk_hpke_generate_key_pair(MK_HPKE_KEM_X25519, &sk, &pk);
	k = (mk_hpke_soft_key){ MK_CURVE_X25519, sk->data, sk->len };
	/* candidates: 0..19, p-20..p+18 (p = 2^255-19), the two points of order 8, and 200
	 * random points; each also with the top bit set (X25519 ignores it) */
	for (int i = 0; i < 20 + 39 + 2 + 200; i++)
		for (int top = 0; top < 2; top++) {
			mk_secret *dh = NULL;
			bool small, allzero;

			memset(p, 0, sizeof(p));
			if (i < 20) {
				p[0] = (uint8_t)i;
			} else if (i < 59) {
				memset(p, 0xff, 31);
				p[31] = 0x7f;
				p[0] = (uint8_t)(0xed + (i - 20) - 20);
			} else if (i < 61) {
				memcpy(p, o8[i - 59], 32);
			} else {
				randombytes_buf(p, sizeof(p));
			}
			if (top)
				p[31] |= 0x80;
			small = mk_hpke_x25519_small_order(p);
			allzero = mk_hpke_soft_dh(&k, p, 32, &dh) == -EINVAL;
			mk_secret_free(dh);
			listed += small;
			mismatch += small != allzero;
			tried++;
		}
	mkt_ok(mismatch == 0 && listed == 14,
	       "X25519: the small-order list is exactly the all-zero DHs among %zu points "
	       "(%zu listed, %zu mismatches)",
	       tried, listed, mismatch);
}

int main(void)
{
	for (size_t i = 0; i < ELEMENTSOF(files); i++)
		test_vector(files[i]);
	test_negative(files[0]);
	test_negative(files[2]);
	test_x25519_small_order();
	test_roundtrip_all();
	return mkt_done();
}
