/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * MLS (RFC 9420) operations with keys that stay on the token:
 *   SignWithLabel(key, Label, Content) = Sign(key, V("MLS 1.0 " + Label) || V(Content))  §5.1.2
 *   DecryptWithLabel(key, Label, Context, kem_output, ciphertext) =
 *       OpenBase(kem_output, key, info = V("MLS 1.0 " + Label) || V(Context), aad = "", ct) §5.1.3
 * and their software counterparts for clients and tests (VerifyWithLabel, EncryptWithLabel).
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "agent/hpke.h"
#include "agent/suite.h"
#include "common/bytes.h"
#include "pkcs11/p11.h"

/* Longest label accepted (bytes, without the "MLS 1.0 " prefix). */
#define MK_MLS_LABEL_MAX 255

/*
 * Signs SignContent on the token with key k for cipher suite `suite`. The key must be the
 * suite's signature algorithm (else -EOPNOTSUPP with a message naming both). ECDSA: the
 * SignContent is hashed piecewise (no copy of content), then CKM_ECDSA; returns DER.
 * Ed25519: CKM_EDDSA over SignContent; returns 64 raw bytes.
 */
int mk_mls_sign_with_label(mk_key *k, uint16_t suite, const char *label, const uint8_t *content,
			   size_t content_len, mk_bytes *ret_sig);

/*
 * Verifies in software (OpenSSL) a signature over SignContent under the public key pub
 * (MLS encoding) for the suite. 0 when valid, -EBADMSG when not, -EINVAL for a malformed
 * key, -EOPNOTSUPP for an unknown suite.
 */
int mk_mls_verify_with_label(uint16_t suite, const uint8_t *pub, size_t pub_len,
			     const char *label, const uint8_t *content, size_t content_len,
			     const uint8_t *sig, size_t sig_len);

/*
 * DecryptWithLabel with an HPKE key on the token. The key must be the suite's KEM
 * algorithm (-EOPNOTSUPP). Any authentication failure, including a wrong label, context or
 * suite, gives -EBADMSG and no plaintext.
 */
int mk_mls_decrypt_with_label(mk_key *k, uint16_t suite, const char *label,
			      const uint8_t *context, size_t context_len, const uint8_t *kem_output,
			      size_t kem_output_len, const uint8_t *ct, size_t ct_len,
			      mk_bytes *ret_pt);

/* General single-shot HPKE OpenBase with a key on the token (the KEM follows the key). */
int mk_mls_hpke_open(mk_key *k, uint16_t kdf, uint16_t aead, const uint8_t *info,
		     size_t info_len, const uint8_t *aad, size_t aad_len, const uint8_t *enc,
		     size_t enc_len, const uint8_t *ct, size_t ct_len, mk_bytes *ret_pt);

/* EncryptWithLabel in software to pub (MLS encoding) for the suite. */
int mk_mls_encrypt_with_label(uint16_t suite, const uint8_t *pub, size_t pub_len,
			      const char *label, const uint8_t *context, size_t context_len,
			      const uint8_t *pt, size_t pt_len, mk_bytes *ret_kem_output,
			      mk_bytes *ret_ct);

/*
 * Builds V("MLS 1.0 " + label) || V(content) into *ret (SignContent / EncryptContext).
 * -EINVAL for a label over MK_MLS_LABEL_MAX or content over the varint range.
 */
int mk_mls_labeled_content(const char *label, const uint8_t *content, size_t content_len,
			   mk_bytes *ret);
