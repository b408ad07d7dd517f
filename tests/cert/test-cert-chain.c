/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The chain logic of pkcs11/p11-cert.c without a token: ordering a pool of certificates
 * above a leaf (by issuer name AND signature, so that a look-alike CA is never taken),
 * checking a chain given in order, describing a certificate, and its public key.
 */
#include <errno.h>
#include <time.h>

#include "common/error.h"
#include "pkcs11/p11.h"
#include "tests/cert/cert-test.h"
#include "tests/tap.h"

static EVP_PKEY *k_root, *k_inter, *k_leaf, *k_fake, *k_other;
static X509 *root, *inter, *leaf, *fake_inter, *other_root;
static mk_bytes d_root, d_inter, d_leaf, d_fake, d_other;

static void make_ca(void)
{
	k_root = ca_key_new();
	k_inter = ca_key_new();
	k_leaf = ca_key_new();
	k_fake = ca_key_new();
	k_other = ca_key_new();
	root = ca_issue("Test Root", k_root, NULL, NULL, k_root, true, -3600, 86400 * 365);
	inter = ca_issue("Test Intermediate", k_inter, root, NULL, k_root, true, -3600, 86400 * 30);
	leaf = ca_issue("Erika Mustermann", k_leaf, inter, NULL, k_inter, false, -60, 86400);
	/* the same names as the intermediate, but signed by a key that is not the root's */
	fake_inter = ca_issue("Test Intermediate", k_fake, NULL, "Test Root", k_fake, true, -3600,
			      86400);
	other_root = ca_issue("Other Root", k_other, NULL, NULL, k_other, true, -3600, 86400);
	ca_der(root, &d_root);
	ca_der(inter, &d_inter);
	ca_der(leaf, &d_leaf);
	ca_der(fake_inter, &d_fake);
	ca_der(other_root, &d_other);
}

static void test_build(void)
{
	size_t idx[MK_X509_CHAIN_MAX], n = 99;
	mk_bytes pool[] = { d_other, d_root, d_leaf, d_fake, d_inter };
	mk_bytes garbage = { (uint8_t *)"\x30\x03\x02\x01\x01", 5 };
	mk_bytes pool2[] = { garbage, d_inter };

	mkt_ok_r(mk_x509_chain_build(&d_leaf, pool, ELEMENTSOF(pool), idx, &n),
		 "chain_build over a shuffled pool");
	mkt_ok(n == 2 && idx[0] == 4 && idx[1] == 1,
	       "leaf -> intermediate -> root, the look-alike intermediate and the unrelated root "
	       "passed over (n=%zu, idx %zu %zu)", n, n > 0 ? idx[0] : 99, n > 1 ? idx[1] : 99);

	mkt_ok_r(mk_x509_chain_build(&d_leaf, pool2, ELEMENTSOF(pool2), idx, &n),
		 "chain_build with a garbage entry in the pool");
	mkt_ok(n == 1 && idx[0] == 1, "stops where the pool has no issuer (n=%zu)", n);

	mkt_ok_r(mk_x509_chain_build(&d_leaf, NULL, 0, idx, &n), "chain_build with no pool");
	mkt_ok(n == 0, "a leaf alone (n=%zu)", n);

	mkt_ok_r(mk_x509_chain_build(&d_root, pool, ELEMENTSOF(pool), idx, &n),
		 "chain_build from a self-signed certificate");
	mkt_ok(n == 0, "a self-signed leaf stops at once (n=%zu)", n);

	mkt_ok_err(mk_x509_chain_build(&garbage, pool, ELEMENTSOF(pool), idx, &n), -EINVAL,
		   "a leaf that does not parse is refused");
}

static void test_check(void)
{
	mk_bytes good[] = { d_leaf, d_inter, d_root };
	mk_bytes no_root[] = { d_leaf, d_inter };
	mk_bytes swapped[] = { d_leaf, d_root, d_inter };
	mk_bytes fake[] = { d_leaf, d_fake };
	mk_bytes many[MK_X509_CHAIN_MAX + 1];
	mk_bytes trailing = MK_BYTES_NULL;
	const char *msg;

	mkt_ok_r(mk_x509_chain_check(good, 3), "leaf, intermediate, root is in order");
	mkt_ok_r(mk_x509_chain_check(no_root, 2), "leaf, intermediate (no root) is in order");
	mkt_ok_r(mk_x509_chain_check(good, 1), "a leaf alone is a chain");
	mkt_ok_err(mk_x509_chain_check(swapped, 3), -EINVAL, "leaf, root, intermediate: refused");
	msg = mk_error_message();
	mkt_ok(msg && strstr(msg, "not in order") && strstr(msg, "certificate 2") &&
		       strstr(msg, "CN=Test Root"),
	       "the message names the certificate at fault: %s", msg ? msg : "(none)");
	mkt_ok_err(mk_x509_chain_check(fake, 2), -EINVAL,
		   "a look-alike intermediate (right names, wrong key) is refused");
	mkt_ok_err(mk_x509_chain_check(good, 0), -EINVAL, "no certificate is refused");
	for (size_t i = 0; i < ELEMENTSOF(many); i++)
		many[i] = d_root;
	mkt_ok_err(mk_x509_chain_check(many, ELEMENTSOF(many)), -EINVAL,
		   "more than %d certificates are refused", MK_X509_CHAIN_MAX);
	if (mk_bytes_alloc(d_leaf.len + 1, &trailing) < 0)
		mkt_bail("out of memory");
	memcpy(trailing.data, d_leaf.data, d_leaf.len);
	mkt_ok_err(mk_x509_chain_check(&trailing, 1), -EINVAL,
		   "a certificate with a byte after its DER is refused");
	trailing.len = d_leaf.len - 1;
	mkt_ok_err(mk_x509_chain_check(&trailing, 1), -EINVAL, "a truncated certificate is refused");
	mk_bytes_clear(&trailing);
}

static void test_describe(void)
{
	mk_x509_info i = { 0 };
	mk_bytes pub = MK_BYTES_NULL;
	uint8_t want[65];
	size_t want_len = sizeof(want);
	int64_t now = (int64_t)time(NULL);

	mkt_ok_r(mk_x509_describe(d_leaf.data, d_leaf.len, &i), "describe the leaf");
	mkt_ok(i.subject && strcmp(i.subject, "CN=Erika Mustermann,O=Stadt Musterhausen,C=DE") == 0,
	       "subject in RFC 2253: %s", i.subject ? i.subject : "(null)");
	mkt_ok(i.issuer && strcmp(i.issuer, "CN=Test Intermediate,O=Stadt Musterhausen,C=DE") == 0,
	       "issuer in RFC 2253: %s", i.issuer ? i.issuer : "(null)");
	mkt_ok(i.not_before >= now - 60 - 5 && i.not_before <= now - 60 + 5 &&
		       i.not_after >= now + 86400 - 5 && i.not_after <= now + 86400 + 5,
	       "validity as issued (%lld .. %lld, now %lld)", (long long)i.not_before,
	       (long long)i.not_after, (long long)now);
	mkt_ok(!i.self_signed, "the leaf is not self-signed");
	mk_x509_info_clear(&i);
	mkt_ok_r(mk_x509_describe(d_root.data, d_root.len, &i), "describe the root");
	mkt_ok(i.self_signed, "the root is self-signed");
	mk_x509_info_clear(&i);
	mkt_ok_err(mk_x509_describe((const uint8_t *)"junk", 4, &i), -EINVAL,
		   "junk does not describe");
	mkt_ok_r(mk_x509_check(d_leaf.data, d_leaf.len), "mk_x509_check: a certificate");
	mkt_ok_err(mk_x509_check(d_leaf.data, d_leaf.len - 1), -EINVAL,
		   "mk_x509_check: a truncated one is refused");
	mkt_ok_err(mk_x509_check(NULL, 0), -EINVAL, "mk_x509_check: nothing is refused");

	EVP_PKEY_get_octet_string_param(k_leaf, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, want,
					sizeof(want), &want_len);
	mkt_ok_r(mk_x509_public_key(d_leaf.data, d_leaf.len, &pub), "the leaf's public key");
	mkt_ok(pub.len == 65 && want_len == 65 && memcmp(pub.data, want, 65) == 0,
	       "is the key it was issued for, in MLS encoding (%zu bytes)", pub.len);
	mk_bytes_clear(&pub);
}

int main(void)
{
	make_ca();
	test_build();
	test_check();
	test_describe();

	X509_free(root);
	X509_free(inter);
	X509_free(leaf);
	X509_free(fake_inter);
	X509_free(other_root);
	EVP_PKEY_free(k_root);
	EVP_PKEY_free(k_inter);
	EVP_PKEY_free(k_leaf);
	EVP_PKEY_free(k_fake);
	EVP_PKEY_free(k_other);
	mk_bytes_clear(&d_root);
	mk_bytes_clear(&d_inter);
	mk_bytes_clear(&d_leaf);
	mk_bytes_clear(&d_fake);
	mk_bytes_clear(&d_other);
	return mkt_done();
}
