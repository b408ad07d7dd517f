/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Tests only: imports known-answer private keys into a SoftHSM2 token with C_CreateObject,
 * so that the vectors in ../shared/vectors run through the token itself. The agent never
 * imports private keys; this lives in tests/ on purpose.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "pkcs11/p11.h"

/*
 * Creates a private key object and its public key object on the SoftHSM token labelled
 * token_label (in the store mkt_softhsm_setup() made; logs in with MKT_USER_PIN through
 * its own session of the SoftHSM module). Both objects get CKA_ID id and CKA_LABEL label.
 * priv: EC: big-endian scalar padded to the field size; Ed25519: 32-byte seed; X25519:
 * 32-byte scalar (stored as SoftHSM's CKK_EC_EDWARDS with the X25519 OID). pub: MLS
 * encoding. The private key gets CKA_SIGN for signature algorithms, CKA_DERIVE for DHKEM
 * ones, CKA_SENSITIVE TRUE. Returns 0 or a negative errno (and prints a TAP diagnostic).
 */
int mkt_import_key(const char *token_label, mk_key_alg alg, const char *label, const uint8_t *id,
		   size_t id_len, const uint8_t *priv, size_t priv_len, const uint8_t *pub,
		   size_t pub_len);

/*
 * Creates an X.509 certificate object (CKO_CERTIFICATE, CKC_X_509, CKA_VALUE = der) with
 * CKA_ID id and CKA_LABEL label on the SoftHSM token labelled token_label. Returns 0 or a
 * negative errno (and prints a TAP diagnostic).
 */
int mkt_import_cert(const char *token_label, const char *label, const uint8_t *id, size_t id_len,
		    const uint8_t *der, size_t der_len);

/*
 * The number of certificate objects (CKO_CERTIFICATE, any type) on the SoftHSM token
 * labelled token_label, through a session of its own. Returns the count or a negative errno.
 */
int mkt_count_certs(const char *token_label);
