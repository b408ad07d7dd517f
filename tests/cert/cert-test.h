/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A test CA made with the OpenSSL API: keys, certificates for a given public key (a CA can
 * certify a public key directly with X509_set_pubkey, no CSR needed), DER and PEM output.
 * Bails out on any OpenSSL failure: a test without its CA cannot go on.
 */
#pragma once

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "common/bytes.h"
#include "tests/tap.h"

/* A fresh P-256 key pair (a CA's). */
static inline EVP_PKEY *ca_key_new(void)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");

	if (!k)
		mkt_bail("EVP_EC_gen failed");
	return k;
}

/* The public key of an MLS encoding: 04||X||Y on P-256, or a raw Ed25519 key (32 bytes). */
static inline EVP_PKEY *ca_public_key(const uint8_t *pub, size_t n)
{
	EVP_PKEY_CTX *ctx;
	EVP_PKEY *k = NULL;

	if (n == 32) {
		k = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub, n);
	} else {
		OSSL_PARAM params[] = {
			OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)"P-256", 0),
			OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, (void *)pub, n),
			OSSL_PARAM_END,
		};

		ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
		if (ctx && EVP_PKEY_fromdata_init(ctx) == 1)
			EVP_PKEY_fromdata(ctx, &k, EVP_PKEY_PUBLIC_KEY, params);
		EVP_PKEY_CTX_free(ctx);
	}
	if (!k)
		mkt_bail("cannot make an EVP_PKEY of a %zu-byte public key", n);
	return k;
}

static inline void ca_name(X509_NAME *name, const char *cn)
{
	X509_NAME_add_entry_by_txt(name, "C", MBSTRING_ASC, (const unsigned char *)"DE", -1, -1, 0);
	X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
				   (const unsigned char *)"Stadt Musterhausen", -1, -1, 0);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0);
}

static inline void ca_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *e;

	X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
	e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (!e || X509_add_ext(x, e, -1) != 1)
		mkt_bail("cannot add extension %d", nid);
	X509_EXTENSION_free(e);
}

/*
 * A certificate with subject CN=cn (C=DE, O=Stadt Musterhausen) for the public key of
 * subject_key, issued by issuer (NULL: self-signed, then issuer_name_cn names the issuer
 * when not NULL, for a certificate that only claims an issuer) and signed with sign_key.
 * Valid from now + from_s to now + to_s seconds. ca: basicConstraints CA:TRUE.
 */
static inline X509 *ca_issue(const char *cn, EVP_PKEY *subject_key, X509 *issuer,
			     const char *issuer_name_cn, EVP_PKEY *sign_key, bool ca, long from_s,
			     long to_s)
{
	static long serial = 1000;
	X509 *x = X509_new();

	if (!x)
		mkt_bail("X509_new failed");
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
	ca_name(X509_get_subject_name(x), cn);
	if (issuer)
		X509_set_issuer_name(x, X509_get_subject_name(issuer));
	else if (issuer_name_cn)
		ca_name(X509_get_issuer_name(x), issuer_name_cn);
	else
		ca_name(X509_get_issuer_name(x), cn);
	X509_gmtime_adj(X509_getm_notBefore(x), from_s);
	X509_gmtime_adj(X509_getm_notAfter(x), to_s);
	if (X509_set_pubkey(x, subject_key) != 1)
		mkt_bail("X509_set_pubkey failed");
	ca_ext(x, issuer ? issuer : x, NID_basic_constraints, ca ? "critical,CA:TRUE" : "CA:FALSE");
	if (ca)
		ca_ext(x, issuer ? issuer : x, NID_key_usage, "critical,keyCertSign,cRLSign");
	else
		ca_ext(x, issuer ? issuer : x, NID_key_usage, "critical,digitalSignature");
	if (X509_sign(x, sign_key, EVP_sha256()) <= 0)
		mkt_bail("X509_sign failed");
	return x;
}

/* DER of x into *ret (mk_bytes_clear). */
static inline void ca_der(X509 *x, mk_bytes *ret)
{
	unsigned char *p = NULL;
	int n = i2d_X509(x, &p);

	if (n <= 0 || mk_bytes_dup(p, (size_t)n, ret) < 0)
		mkt_bail("i2d_X509 failed");
	OPENSSL_free(p);
}

/* Writes the certificates xs[0..n) as PEM into path. */
static inline void ca_write_pem(const char *path, X509 *const *xs, size_t n)
{
	FILE *f = fopen(path, "we");

	if (!f)
		mkt_bail("cannot write %s", path);
	for (size_t i = 0; i < n; i++)
		if (PEM_write_X509(f, xs[i]) != 1)
			mkt_bail("PEM_write_X509 failed");
	fclose(f);
}

/* Writes x as DER into path. */
static inline void ca_write_der(const char *path, X509 *x)
{
	mk_bytes d = MK_BYTES_NULL;
	FILE *f = fopen(path, "we");

	if (!f)
		mkt_bail("cannot write %s", path);
	ca_der(x, &d);
	if (fwrite(d.data, 1, d.len, f) != d.len)
		mkt_bail("cannot write %s", path);
	fclose(f);
	mk_bytes_clear(&d);
}
