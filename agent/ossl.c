/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <openssl/core_names.h>
#include <pthread.h>
#include <string.h>

#include "agent/hpke.h"
#include "agent/ossl.h"
#include "common/macros.h"

static const char *const md_names[] = { "SHA256", "SHA384", "SHA512" };

static pthread_once_t once = PTHREAD_ONCE_INIT;
static EVP_MD *mds[ELEMENTSOF(md_names)];
static EVP_MAC_CTX *hmac_tmpl[ELEMENTSOF(md_names)]; /* unkeyed; only ever duplicated */
static EVP_CIPHER *aes128gcm, *aes256gcm, *chacha;

/* Fetched once and kept for the life of the process: a fetch takes the provider store's
 * lock and a name lookup, which is measurable next to a fast token. */
static void fetch_all(void)
{
	EVP_MAC *hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);

	for (size_t i = 0; i < ELEMENTSOF(md_names); i++) {
		OSSL_PARAM params[] = {
			OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
							 (char *)md_names[i], 0),
			OSSL_PARAM_construct_end(),
		};
		EVP_MAC_CTX *c;

		mds[i] = EVP_MD_fetch(NULL, md_names[i], NULL);
		c = hmac ? EVP_MAC_CTX_new(hmac) : NULL;
		if (c && EVP_MAC_CTX_set_params(c, params) != 1) {
			EVP_MAC_CTX_free(c);
			c = NULL;
		}
		hmac_tmpl[i] = c;
	}
	EVP_MAC_free(hmac); /* the contexts hold their own reference */
	aes128gcm = EVP_CIPHER_fetch(NULL, "AES-128-GCM", NULL);
	aes256gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
	chacha = EVP_CIPHER_fetch(NULL, "ChaCha20-Poly1305", NULL);
}

static int md_index(const char *name)
{
	for (size_t i = 0; name && i < ELEMENTSOF(md_names); i++)
		if (strcmp(name, md_names[i]) == 0)
			return (int)i;
	return -1;
}

const EVP_MD *mk_ossl_md(const char *name)
{
	int i = md_index(name);

	pthread_once(&once, fetch_all);
	return i < 0 ? NULL : mds[i];
}

const EVP_CIPHER *mk_ossl_aead(uint16_t aead_id)
{
	pthread_once(&once, fetch_all);
	switch (aead_id) {
	case MK_HPKE_AEAD_AES128GCM:
		return aes128gcm;
	case MK_HPKE_AEAD_AES256GCM:
		return aes256gcm;
	case MK_HPKE_AEAD_CHACHA20POLY1305:
		return chacha;
	default:
		return NULL;
	}
}

EVP_MAC_CTX *mk_ossl_hmac_new(const char *md, const uint8_t *key, size_t len)
{
	static const uint8_t empty[1];
	int i = md_index(md);
	EVP_MAC_CTX *c;

	pthread_once(&once, fetch_all);
	if (i < 0 || !hmac_tmpl[i])
		return NULL;
	c = EVP_MAC_CTX_dup(hmac_tmpl[i]);
	if (!c)
		return NULL;
	/* A NULL key would mean "reuse the previous key", which a fresh context lacks. */
	if (EVP_MAC_init(c, key && len ? key : empty, len, NULL) != 1) {
		EVP_MAC_CTX_free(c);
		return NULL;
	}
	return c;
}
