/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * X.509 logic that needs no token (issue 8): parsing a whole DER certificate, its public
 * key in MLS encoding, its names and dates, and chains: which certificate issued which, in
 * order. All parsing is OpenSSL's. Kept apart from the token code so that a fuzz target
 * can build it alone (tests/fuzz/fuzz-x509.c).
 */
#include <errno.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/error.h"
#include "pkcs11/x509-private.h"

/* --- parsing ----------------------------------------------------------------------------- */

/* Parses exactly n bytes of DER (no trailing bytes); NULL when they are no certificate. */
X509 *mk_x509_parse(const uint8_t *der, size_t n)
{
	const unsigned char *p = der;
	X509 *x;

	if (!der || n == 0 || n > MK_X509_MAX_DER)
		return NULL;
	x = d2i_X509(NULL, &p, (long)n);
	if (x && p != der + n) {
		X509_free(x);
		return NULL;
	}
	return x;
}

int mk_x509_key(X509 *x, mk_bytes *ret)
{
	EVP_PKEY *pk = x ? X509_get0_pubkey(x) : NULL;
	uint8_t buf[160];
	size_t len = sizeof(buf);

	if (pk && (EVP_PKEY_is_a(pk, "ED25519") || EVP_PKEY_is_a(pk, "X25519"))) {
		if (EVP_PKEY_get_raw_public_key(pk, buf, &len) == 1)
			return mk_bytes_dup(buf, len, ret);
	} else if (pk && EVP_PKEY_is_a(pk, "EC")) {
		if (EVP_PKEY_get_octet_string_param(pk, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, buf,
						    sizeof(buf), &len) == 1 &&
		    len > 0 && buf[0] == 0x04)
			return mk_bytes_dup(buf, len, ret);
	}
	return -EINVAL;
}

int mk_x509_public_key(const uint8_t *der, size_t n, mk_bytes *ret)
{
	X509 *x = mk_x509_parse(der, n);
	int r = mk_x509_key(x, ret);

	X509_free(x);
	return r;
}

/* issuer issued subject: names and extensions fit, and issuer's key verifies the signature. */
bool mk_x509_issued(X509 *issuer, X509 *subject)
{
	EVP_PKEY *pk = X509_get0_pubkey(issuer);
	bool ok;

	ok = X509_check_issued(issuer, subject) == X509_V_OK && pk &&
	     X509_verify(subject, pk) == 1;
	ERR_clear_error();
	return ok;
}

char *mk_x509_name(const X509_NAME *name)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *s = NULL, *data;
	long n;

	if (!b)
		return NULL;
	if (X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253) >= 0) {
		/* not NUL-terminated: copied by length */
		n = BIO_get_mem_data(b, &data);
		s = malloc(n > 0 ? (size_t)n + 1 : 1);
		if (s && n > 0)
			memcpy(s, data, (size_t)n);
		if (s)
			s[n > 0 ? n : 0] = '\0';
	}
	BIO_free(b);
	return s;
}

static int64_t asn1_time_epoch(const ASN1_TIME *t)
{
	struct tm tm = { 0 };

	if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
		return 0;
	return (int64_t)timegm(&tm);
}

int mk_x509_describe_parsed(X509 *x, mk_x509_info *ret)
{
	mk_x509_info i = {
		.subject = mk_x509_name(X509_get_subject_name(x)),
		.issuer = mk_x509_name(X509_get_issuer_name(x)),
		.not_before = asn1_time_epoch(X509_get0_notBefore(x)),
		.not_after = asn1_time_epoch(X509_get0_notAfter(x)),
		.self_signed = mk_x509_issued(x, x),
	};

	if (!i.subject || !i.issuer) {
		mk_x509_info_clear(&i);
		return -ENOMEM;
	}
	*ret = i;
	return 0;
}

int mk_x509_check(const uint8_t *der, size_t n)
{
	X509 *x = mk_x509_parse(der, n);

	if (!x)
		return mk_error(-EINVAL, "the certificate is no DER X.509 certificate");
	X509_free(x);
	return 0;
}

int mk_x509_describe(const uint8_t *der, size_t n, mk_x509_info *ret)
{
	X509 *x = mk_x509_parse(der, n);
	int r;

	if (!x)
		return mk_error(-EINVAL, "the certificate is no DER X.509 certificate");
	r = mk_x509_describe_parsed(x, ret);
	X509_free(x);
	return r;
}

void mk_x509_info_clear(mk_x509_info *i)
{
	free(i->subject);
	free(i->issuer);
	*i = (mk_x509_info){ 0 };
}

/* --- chains ------------------------------------------------------------------------------ */

/* The chain logic on parsed certificates: pool entries may be NULL (skipped). */
void mk_x509_chain_build_parsed(X509 *leaf, X509 *const *pool, size_t n_pool, size_t *idx,
				size_t *ret_n)
{
	bool used[MK_X509_POOL_MAX] = { false };
	X509 *cur = leaf;
	size_t n = 0;

	n_pool = MK_MIN(n_pool, (size_t)MK_X509_POOL_MAX);
	while (n + 1 < MK_X509_CHAIN_MAX && !mk_x509_issued(cur, cur)) {
		size_t found = n_pool;

		for (size_t i = 0; i < n_pool && found == n_pool; i++)
			if (pool[i] && !used[i] && X509_cmp(pool[i], cur) != 0 &&
			    mk_x509_issued(pool[i], cur))
				found = i;
		if (found == n_pool)
			break;
		used[found] = true;
		idx[n++] = found;
		cur = pool[found];
	}
	*ret_n = n;
}

int mk_x509_chain_build(const mk_bytes *leaf, const mk_bytes *pool, size_t n_pool,
			size_t *ret_idx, size_t *ret_n)
{
	X509 *l = mk_x509_parse(leaf ? leaf->data : NULL, leaf ? leaf->len : 0);
	X509 **xs;
	size_t idx[MK_X509_CHAIN_MAX], n = 0;

	if (!l)
		return mk_error(-EINVAL, "the leaf certificate is no DER X.509 certificate");
	n_pool = MK_MIN(n_pool, (size_t)MK_X509_POOL_MAX);
	xs = calloc(n_pool ? n_pool : 1, sizeof(*xs));
	if (!xs) {
		X509_free(l);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n_pool; i++)
		xs[i] = mk_x509_parse(pool[i].data, pool[i].len);
	mk_x509_chain_build_parsed(l, xs, n_pool, idx, &n);
	for (size_t i = 0; i < n_pool; i++)
		X509_free(xs[i]);
	free(xs);
	X509_free(l);
	memcpy(ret_idx, idx, n * sizeof(*idx));
	*ret_n = n;
	return 0;
}

/* Parses certs[0..n) into xs (all or nothing), with messages that say which one failed. */
int mk_x509_chain_parse(const mk_bytes *certs, size_t n, X509 **xs)
{
	if (n == 0)
		return mk_error(-EINVAL, "no certificate given; give the key's certificate first, "
				"then the CA certificates that issued it");
	if (n > MK_X509_CHAIN_MAX)
		return mk_error(-EINVAL, "%zu certificates given; at most %d are accepted", n,
				MK_X509_CHAIN_MAX);
	for (size_t i = 0; i < n; i++) {
		if (certs[i].len > MK_X509_MAX_DER || !(xs[i] = mk_x509_parse(certs[i].data,
									   certs[i].len))) {
			for (size_t j = 0; j < i; j++)
				X509_free(xs[j]);
			if (certs[i].len > MK_X509_MAX_DER)
				return mk_error(-EINVAL, "certificate %zu has %zu bytes; at most "
						"%u are accepted", i + 1, certs[i].len,
						MK_X509_MAX_DER);
			return mk_error(-EINVAL, "certificate %zu is no DER X.509 certificate "
					"(or has bytes after it)", i + 1);
		}
	}
	return 0;
}

int mk_x509_chain_order_check(X509 *const *xs, size_t n)
{
	for (size_t i = 1; i < n; i++) {
		if (mk_x509_issued(xs[i], xs[i - 1]))
			continue;
		_cleanup_free_ char *a = mk_x509_name(X509_get_subject_name(xs[i - 1]));
		_cleanup_free_ char *b = mk_x509_name(X509_get_subject_name(xs[i]));

		return mk_error(-EINVAL, "the chain is not in order: certificate %zu (\"%.200s\") "
				"did not issue certificate %zu (\"%.200s\"); give the key's "
				"certificate first, then each issuer in turn", i + 1,
				b ? b : "?", i, a ? a : "?");
	}
	return 0;
}

int mk_x509_chain_check(const mk_bytes *certs, size_t n)
{
	X509 *xs[MK_X509_CHAIN_MAX];
	int r;

	r = mk_x509_chain_parse(certs, n, xs);
	if (r < 0)
		return r;
	r = mk_x509_chain_order_check(xs, n);
	for (size_t i = 0; i < n; i++)
		X509_free(xs[i]);
	return r;
}
