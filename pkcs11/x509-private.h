/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Inside the token layer: the X.509 helpers of x509.c on parsed certificates, for
 * p11-cert.c (and the fuzz target). Nothing outside pkcs11/ and its tests includes this.
 */
#pragma once

#include <openssl/x509.h>
#include <stdbool.h>

#include "pkcs11/p11.h"

/* Most certificates one chain search looks at (a token's certificate objects). */
#define MK_X509_POOL_MAX 4096u

/* Parses exactly n bytes of DER (at most MK_X509_MAX_DER, nothing after it); NULL if not. */
X509 *mk_x509_parse(const uint8_t *der, size_t n);

/* The MLS encoding of x's public key into *ret, as mk_x509_public_key(). -EINVAL, -ENOMEM. */
int mk_x509_key(X509 *x, mk_bytes *ret);

/* issuer issued subject: X509_check_issued (names, key usage) and X509_verify. */
bool mk_x509_issued(X509 *issuer, X509 *subject);

/* name as an RFC 2253 string (XN_FLAG_RFC2253), free(); NULL without memory. */
char *mk_x509_name(const X509_NAME *name);

/* mk_x509_describe() of a parsed certificate. 0 or -ENOMEM. */
int mk_x509_describe_parsed(X509 *x, mk_x509_info *ret);

/*
 * mk_x509_chain_build() on parsed certificates: pool entries may be NULL (skipped); at most
 * MK_X509_POOL_MAX of the pool are looked at. idx has room for MK_X509_CHAIN_MAX - 1.
 */
void mk_x509_chain_build_parsed(X509 *leaf, X509 *const *pool, size_t n_pool, size_t *idx,
				size_t *ret_n);

/* Parses certs[0..n) into xs (all or nothing; X509_free each), with messages: -EINVAL. */
int mk_x509_chain_parse(const mk_bytes *certs, size_t n, X509 **xs);

/* Each xs[i] issued xs[i - 1]; -EINVAL with a message naming the pair at fault. */
int mk_x509_chain_order_check(X509 *const *xs, size_t n);
