/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Fixed software recipient keys for the fuzz targets (one per KEM, derived once). */
#pragma once

#include <string.h>

#include "agent/hpke.h"
#include "tests/fuzz/fuzz.h"

/* ikm of the fuzzers' recipient keys; tests/fuzz/gen-seeds.c encrypts to the same keys. */
#define FUZZ_RECIPIENT_IKM "mlskey fuzz recipient key, not a secret"

typedef struct fuzz_key {
	mk_secret *sk;
	mk_bytes pk;
} fuzz_key;

/* The recipient key of a KEM (NULL for an unsupported one); kept for the process's life. */
static inline const fuzz_key *fuzz_recipient(uint16_t kem)
{
	static const uint16_t kems[] = { MK_HPKE_KEM_P256, MK_HPKE_KEM_P384, MK_HPKE_KEM_P521,
					 MK_HPKE_KEM_X25519 };
	static fuzz_key keys[4];

	for (size_t i = 0; i < 4; i++) {
		if (kems[i] != kem)
			continue;
		if (!keys[i].sk)
			FUZZ_ASSERT(mk_hpke_derive_key_pair(kem,
							    (const uint8_t *)FUZZ_RECIPIENT_IKM,
							    strlen(FUZZ_RECIPIENT_IKM), &keys[i].sk,
							    &keys[i].pk) == 0);
		return &keys[i];
	}
	return NULL;
}
