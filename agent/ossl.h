/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Private to agent/: OpenSSL algorithms fetched once per process (thread-safely) instead of
 * on every operation, and HMAC through EVP_MAC (OpenSSL 3.0's HKDF KDF refuses an info
 * over 32 KiB, so HPKE's Extract/Expand are built on HMAC here).
 */
#pragma once

#include <openssl/evp.h>
#include <stddef.h>
#include <stdint.h>

/* "SHA256", "SHA384" or "SHA512", fetched once; NULL for any other name or on failure. */
const EVP_MD *mk_ossl_md(const char *name);

/* The cipher of an HPKE AEAD id (AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305), or NULL. */
const EVP_CIPHER *mk_ossl_aead(uint16_t aead_id);

/*
 * A new HMAC context for hash md ("SHA256"/"SHA384"/"SHA512") keyed with key[0..len)
 * (len may be 0: an empty key). Returns NULL on failure. Free with EVP_MAC_CTX_free.
 */
EVP_MAC_CTX *mk_ossl_hmac_new(const char *md, const uint8_t *key, size_t len);
