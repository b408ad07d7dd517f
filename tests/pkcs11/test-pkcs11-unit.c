/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests of the token layer's pure helpers: algorithm names, and the raw r||s to DER
 * conversion of ECDSA signatures, checked against OpenSSL's own encoder.
 */
#include <errno.h>
#include <openssl/bn.h>
#include <openssl/ecdsa.h>
#include <openssl/rand.h>
#include <string.h>

#include "pkcs11/p11-private.h"
#include "tests/tap.h"

static void test_alg_names(void)
{
	static const struct {
		mk_key_alg alg;
		const char *name;
		mk_curve curve;
		bool sign;
	} want[] = {
		{ MK_ALG_ECDSA_P256, "ecdsa-p256", MK_CURVE_P256, true },
		{ MK_ALG_ECDSA_P384, "ecdsa-p384", MK_CURVE_P384, true },
		{ MK_ALG_ECDSA_P521, "ecdsa-p521", MK_CURVE_P521, true },
		{ MK_ALG_ED25519, "ed25519", MK_CURVE_ED25519, true },
		{ MK_ALG_DHKEM_P256, "dhkem-p256", MK_CURVE_P256, false },
		{ MK_ALG_DHKEM_P384, "dhkem-p384", MK_CURVE_P384, false },
		{ MK_ALG_DHKEM_P521, "dhkem-p521", MK_CURVE_P521, false },
		{ MK_ALG_DHKEM_X25519, "dhkem-x25519", MK_CURVE_X25519, false },
	};

	for (size_t i = 0; i < ELEMENTSOF(want); i++) {
		mkt_ok(strcmp(mk_key_alg_name(want[i].alg), want[i].name) == 0, "name of %s",
		       want[i].name);
		mkt_ok(mk_key_alg_from_name(want[i].name) == want[i].alg, "from_name(%s)",
		       want[i].name);
		mkt_ok(mk_key_alg_curve(want[i].alg) == want[i].curve, "curve of %s", want[i].name);
		mkt_ok(mk_key_alg_is_signature(want[i].alg) == want[i].sign, "purpose of %s",
		       want[i].name);
	}
	mkt_ok(strcmp(mk_key_alg_name(MK_ALG_NONE), "unsupported") == 0, "NONE is unsupported");
	mkt_ok(strcmp(mk_key_alg_name((mk_key_alg)99), "unsupported") == 0, "99 is unsupported");
	mkt_ok(strcmp(mk_key_alg_name((mk_key_alg)-1), "unsupported") == 0, "-1 is unsupported");
	mkt_ok(mk_key_alg_from_name("unsupported") == MK_ALG_NONE, "from_name(unsupported)");
	mkt_ok(mk_key_alg_from_name("ECDSA-P256") == MK_ALG_NONE, "names are case-sensitive");
	mkt_ok(mk_key_alg_from_name(NULL) == MK_ALG_NONE, "from_name(NULL)");
	mkt_ok(mk_key_alg_curve(MK_ALG_NONE) == MK_CURVE_NONE, "NONE has no curve");
	mkt_ok(!mk_key_alg_is_signature(MK_ALG_NONE), "NONE does not sign");
}

/* OpenSSL's DER of (r, s) given as n/2-byte big-endian halves. */
static int openssl_der(const uint8_t *rs, size_t n, uint8_t *out)
{
	ECDSA_SIG *sig = ECDSA_SIG_new();
	BIGNUM *r = BN_bin2bn(rs, (int)(n / 2), NULL), *s = BN_bin2bn(rs + n / 2, (int)(n / 2), NULL);
	unsigned char *p = out;
	int len;

	ECDSA_SIG_set0(sig, r, s);
	len = i2d_ECDSA_SIG(sig, &p);
	ECDSA_SIG_free(sig);
	return len;
}

static bool der_matches(const uint8_t *rs, size_t n)
{
	uint8_t mine[160], theirs[256];
	size_t len = 0;
	int want;

	if (mk_p11_ecdsa_raw_to_der(rs, n, mine, sizeof(mine), &len) < 0)
		return false;
	want = openssl_der(rs, n, theirs);
	return want > 0 && (size_t)want == len && memcmp(mine, theirs, len) == 0;
}

static void test_ecdsa_der(void)
{
	static const size_t sizes[] = { 64, 96, 132 };
	uint8_t rs[132], out[160];
	size_t len = 0;

	for (size_t i = 0; i < ELEMENTSOF(sizes); i++) {
		size_t n = sizes[i], bad = 0;

		for (int k = 0; k < 500; k++) {
			RAND_bytes(rs, (int)n);
			/* Edge cases: high bit set (needs a 0x00), leading zeros (stripped). */
			if (k % 5 == 1)
				rs[0] |= 0x80, rs[n / 2] |= 0x80;
			if (k % 5 == 2)
				rs[0] = 0, rs[1] = 0, rs[n / 2] = 0;
			if (k % 5 == 3)
				memset(rs, 0, n / 2 - 1);
			if (!der_matches(rs, n))
				bad++;
		}
		mkt_ok(bad == 0, "%zu-byte r||s: DER equals OpenSSL's i2d_ECDSA_SIG (500 cases)", n);
	}
	/* P-521 with both halves full and high bits: the longest form, 0x81 length. */
	memset(rs, 0xff, 132);
	mkt_ok(mk_p11_ecdsa_raw_to_der(rs, 132, out, sizeof(out), &len) == 0 && len == 141 &&
	       out[0] == 0x30 && out[1] == 0x81 && out[2] == 138, "longest P-521 signature: 141 bytes");
	memset(rs, 0, 64);
	mkt_ok(der_matches(rs, 64), "r = s = 0 encodes as INTEGER 0");

	mkt_ok(mk_p11_ecdsa_raw_to_der(rs, 63, out, sizeof(out), &len) == -EINVAL, "odd length refused");
	mkt_ok(mk_p11_ecdsa_raw_to_der(rs, 0, out, sizeof(out), &len) == -EINVAL, "empty refused");
	mkt_ok(mk_p11_ecdsa_raw_to_der(rs, 134, out, sizeof(out), &len) == -EINVAL,
	       "over 2x66 bytes refused");
	mkt_ok(mk_p11_ecdsa_raw_to_der(NULL, 64, out, sizeof(out), &len) == -EINVAL, "NULL input");
	mkt_ok(mk_p11_ecdsa_raw_to_der(rs, 64, NULL, 0, &len) == -EINVAL, "NULL output");
	memset(rs, 0xff, 64);
	mkt_ok(mk_p11_ecdsa_raw_to_der(rs, 64, out, 71, &len) == -EINVAL, "short output buffer");
	mkt_ok(mk_p11_ecdsa_raw_to_der(rs, 64, out, 72, &len) == 0 && len == 72, "exact buffer");
}

int main(void)
{
	test_alg_names();
	test_ecdsa_der();
	return mkt_done();
}
