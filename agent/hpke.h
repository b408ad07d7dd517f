/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * HPKE base mode (RFC 9180, mode 0x00): DHKEM(P-256, P-384, P-521, X25519) with
 * HKDF-SHA256/384/512 and AES-128-GCM, AES-256-GCM, ChaCha20Poly1305.
 *
 * This module knows nothing of tokens: the recipient's DH is a callback, so the agent
 * passes one that runs CKM_ECDH1_DERIVE on the token, and tests pass a software one.
 * Every intermediate secret lives in mk_secret memory and is wiped before return.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/bytes.h"
#include "common/curve.h"
#include "common/secmem.h"

#define MK_HPKE_KEM_P256 0x0010
#define MK_HPKE_KEM_P384 0x0011
#define MK_HPKE_KEM_P521 0x0012
#define MK_HPKE_KEM_X25519 0x0020
#define MK_HPKE_KDF_SHA256 0x0001
#define MK_HPKE_KDF_SHA384 0x0002
#define MK_HPKE_KDF_SHA512 0x0003
#define MK_HPKE_AEAD_AES128GCM 0x0001
#define MK_HPKE_AEAD_AES256GCM 0x0002
#define MK_HPKE_AEAD_CHACHA20POLY1305 0x0003

typedef struct mk_hpke_suite {
	uint16_t kem, kdf, aead;
} mk_hpke_suite;

/* 0 when all three ids are supported, else -EOPNOTSUPP with a message naming the id. */
int mk_hpke_suite_check(mk_hpke_suite s);

/* The curve of a KEM id (MK_CURVE_NONE if unknown). */
mk_curve mk_hpke_kem_curve(uint16_t kem);

/*
 * DH(skR, pkE) where skR stays wherever the callback keeps it. pk is already validated.
 * Returns 0 and the Ndh-byte shared point in *ret, or a negative errno.
 */
typedef int (*mk_hpke_dh_fn)(void *userdata, const uint8_t *pk, size_t pk_len, mk_secret **ret);

/* A recipient context after the key schedule (opaque; wipes itself on free). */
typedef struct mk_hpke_ctx mk_hpke_ctx;

/*
 * Decap (RFC 9180 §4.1): validates enc (length, on curve, not infinity; X25519: not of small
 * order), dh = dh_fn(enc), refuses an all-zero X25519 dh, and derives the shared secret with kem_context =
 * enc || pkR. pkR is the recipient's public key in its MLS encoding.
 */
int mk_hpke_decap(mk_hpke_suite s, mk_hpke_dh_fn dh_fn, void *userdata, const uint8_t *enc,
		  size_t enc_len, const uint8_t *pkR, size_t pkR_len, mk_secret **ret_shared);

/*
 * KeySchedule for mode_base (§5.1): key, base_nonce, exporter_secret from shared_secret and
 * info (any length; info longer than OpenSSL's HKDF limit is handled). *ret: mk_hpke_ctx_free.
 */
int mk_hpke_key_schedule(mk_hpke_suite s, const mk_secret *shared, const uint8_t *info,
			 size_t info_len, mk_hpke_ctx **ret);
mk_hpke_ctx *mk_hpke_ctx_free(mk_hpke_ctx *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(mk_hpke_ctx *, mk_hpke_ctx_free)

/* Borrowed views for known-answer tests. Valid until the context is freed. */
const mk_secret *mk_hpke_ctx_key(const mk_hpke_ctx *c);
const mk_secret *mk_hpke_ctx_base_nonce(const mk_hpke_ctx *c);
const mk_secret *mk_hpke_ctx_exporter_secret(const mk_hpke_ctx *c);
/* Sets the sequence number (tests); the nonce is base_nonce XOR I2OSP(seq, Nn). */
void mk_hpke_ctx_set_seq(mk_hpke_ctx *c, uint64_t seq);
/* Writes the nonce for the current sequence number into out (Nn bytes). */
int mk_hpke_ctx_nonce(const mk_hpke_ctx *c, uint8_t *out, size_t out_len);

/*
 * Open: AEAD-decrypts ct (ciphertext || 16-byte tag) with the current nonce and aad, then
 * increments the sequence number. On a tag mismatch returns -EBADMSG and writes nothing:
 * no byte of plaintext is ever handed out. *ret_pt is wiped on free (mk_bytes_clear).
 */
int mk_hpke_ctx_open(mk_hpke_ctx *c, const uint8_t *aad, size_t aad_len, const uint8_t *ct,
		     size_t ct_len, mk_bytes *ret_pt);
/* Seal with the context's key and nonce, then increment the sequence number. */
int mk_hpke_ctx_seal(mk_hpke_ctx *c, const uint8_t *aad, size_t aad_len, const uint8_t *pt,
		     size_t pt_len, mk_bytes *ret_ct);
/* Export (§5.3): LabeledExpand(exporter_secret, "sec", exporter_context, L). */
int mk_hpke_ctx_export(const mk_hpke_ctx *c, const uint8_t *exp_ctx, size_t exp_ctx_len,
		       size_t L, mk_secret **ret);

/* Single-shot OpenBase: decap + key schedule + open at sequence 0. */
int mk_hpke_open_base(mk_hpke_suite s, mk_hpke_dh_fn dh_fn, void *userdata, const uint8_t *pkR,
		      size_t pkR_len, const uint8_t *info, size_t info_len, const uint8_t *aad,
		      size_t aad_len, const uint8_t *enc, size_t enc_len, const uint8_t *ct,
		      size_t ct_len, mk_bytes *ret_pt);

/*
 * Single-shot SealBase in software to pkR (validated first). ikmE, when not NULL, is the
 * ephemeral key's input keying material for DeriveKeyPair (known-answer tests); NULL makes a
 * fresh random ephemeral key. Sets *ret_enc and *ret_ct.
 */
int mk_hpke_seal_base(mk_hpke_suite s, const uint8_t *pkR, size_t pkR_len, const uint8_t *info,
		      size_t info_len, const uint8_t *aad, size_t aad_len, const uint8_t *pt,
		      size_t pt_len, const uint8_t *ikmE, size_t ikmE_len, mk_bytes *ret_enc,
		      mk_bytes *ret_ct);

/* --- software keys (added for tests, fuzzing and clients; the agent's keys are on tokens) --- */

/*
 * DeriveKeyPair (RFC 9180 §7.1.3) for a KEM: NIST curves with the candidate/bitmask loop,
 * X25519 plain. Sets *ret_sk (Nsk bytes: big-endian scalar of the field size, or the 32-byte
 * X25519 scalar) and *ret_pk (MLS encoding). -EOPNOTSUPP for an unknown KEM.
 */
int mk_hpke_derive_key_pair(uint16_t kem, const uint8_t *ikm, size_t ikm_len,
			    mk_secret **ret_sk, mk_bytes *ret_pk);

/* A fresh random key pair for a KEM (DeriveKeyPair over random ikm). */
int mk_hpke_generate_key_pair(uint16_t kem, mk_secret **ret_sk, mk_bytes *ret_pk);

/* The public key (MLS encoding) of a software private key. -EINVAL for an invalid scalar. */
int mk_hpke_public_key(mk_curve c, const uint8_t *sk, size_t sk_len, mk_bytes *ret_pk);

/* userdata for mk_hpke_soft_dh: a private key kept in software (borrowed). */
typedef struct mk_hpke_soft_key {
	mk_curve curve;
	const uint8_t *sk; /* as mk_hpke_derive_key_pair() returns it */
	size_t sk_len;
} mk_hpke_soft_key;

/*
 * An mk_hpke_dh_fn that computes DH(sk, pk) in software: the x coordinate (NIST) or the
 * X25519 result, in *ret. -EINVAL for an invalid point or scalar or an all-zero X25519 result.
 */
int mk_hpke_soft_dh(void *userdata, const uint8_t *pk, size_t pk_len, mk_secret **ret);

/*
 * true when p (32 bytes) encodes an X25519 point of small order, whose DH with any key is
 * all zero. mk_hpke_decap() refuses such an enc before calling the DH (-EINVAL).
 */
bool mk_hpke_x25519_small_order(const uint8_t p[32]);
