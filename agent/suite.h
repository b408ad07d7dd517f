/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* MLS cipher suites (RFC 9420 §17.1) that mlskey supports: 1, 2, 3, 5, 7. */
#pragma once

#include <stdint.h>

#include "pkcs11/p11.h"

typedef struct mk_suite {
	uint16_t id;
	const char *name;      /* "MLS_128_DHKEMP256_AES128GCM_SHA256_P256", ... */
	mk_key_alg sig_alg;    /* MK_ALG_ECDSA_P256, MK_ALG_ED25519, ... */
	mk_key_alg kem_alg;    /* MK_ALG_DHKEM_P256, MK_ALG_DHKEM_X25519, ... */
	uint16_t kem_id;       /* HPKE ids, RFC 9180 §7 */
	uint16_t kdf_id;
	uint16_t aead_id;
	const char *md_name;   /* the suite's hash: "SHA256", "SHA384", "SHA512" */
	size_t md_len;
} mk_suite;

/* The suite with that id, or NULL (unknown, or X448/Ed448 suites 4 and 6). */
const mk_suite *mk_suite_get(uint16_t id);
