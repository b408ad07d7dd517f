/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The elliptic curves mlskey supports, with what every layer needs to know of them:
 * sizes, the DER OID that goes into CKA_EC_PARAMS, the hash ECDSA uses with them, and
 * validation of points received from anyone.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ec.h>

typedef enum mk_curve {
	MK_CURVE_NONE = 0,
	MK_CURVE_P256,
	MK_CURVE_P384,
	MK_CURVE_P521,
	MK_CURVE_ED25519,
	MK_CURVE_X25519,
	_MK_CURVE_MAX,
} mk_curve;

typedef struct mk_curve_info {
	mk_curve id;
	const char *name;      /* "P-256", "P-384", "P-521", "Ed25519", "X25519" */
	int nid;               /* OpenSSL NID (NID_X9_62_prime256v1, NID_ED25519, ...) */
	const uint8_t *oid;    /* DER OBJECT IDENTIFIER, tag and length included */
	size_t oid_len;
	size_t field_len;      /* bytes of a coordinate / scalar: 32, 48, 66, 32, 32 */
	size_t pub_len;        /* MLS public key encoding: 65, 97, 133, 32, 32 */
	size_t dh_len;         /* Ndh: bytes of an ECDH result (x coordinate); 0 for Ed25519 */
	const char *md_name;   /* ECDSA hash: "SHA256", "SHA384", "SHA512"; NULL for EdDSA/X25519 */
	size_t md_len;         /* its output length; 0 when md_name is NULL */
} mk_curve_info;

/* Static description of c, or NULL for MK_CURVE_NONE / out-of-range values. */
const mk_curve_info *mk_curve_get(mk_curve c);

/*
 * Identifies a curve from CKA_EC_PARAMS as tokens store it: the DER OID, or the DER
 * PrintableString names some tokens use ("edwards25519", "curve25519"). MK_CURVE_NONE if
 * it is none of ours (e.g. brainpool, secp256k1).
 */
mk_curve mk_curve_from_ec_params(const uint8_t *p, size_t n);

/*
 * Validates a public key received from anyone, in its MLS encoding, before it goes near a
 * token: exact length; NIST curves: uncompressed form (0x04), on the curve, not the point
 * at infinity; X25519/Ed25519: exactly 32 bytes. Returns 0 or -EINVAL (with an
 * mk_error() message that says which check failed).
 */
int mk_curve_validate_point(mk_curve c, const uint8_t *p, size_t n);

/*
 * Extracts the public point from a CKA_EC_POINT value, which tokens return either raw or
 * wrapped in a DER OCTET STRING. Decides by the expected length, not by a leading 0x04.
 * On success sets *ret_p / *ret_n to a range inside p (borrowed) and returns 0; -EINVAL
 * when neither form has the curve's length.
 */
int mk_curve_unwrap_ec_point(mk_curve c, const uint8_t *p, size_t n, const uint8_t **ret_p,
			     size_t *ret_n);

/*
 * The OpenSSL group of a NIST curve (P-256/384/521), built once per process and shared:
 * read-only, safe to use from several threads at once; never free it. NULL for the other
 * curves or when OpenSSL cannot build it.
 */
const EC_GROUP *mk_curve_ec_group(mk_curve c);
