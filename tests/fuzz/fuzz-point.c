/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Point validation (mk_curve_validate_point, mk_curve_unwrap_ec_point) and the software DH
 * behind it. The first byte picks the curve, the rest is the point. A point that validates
 * must re-encode to the same bytes and give a DH result of Ndh bytes (never all zero for
 * X25519); one that does not must be refused by the DH as well.
 */
#include <openssl/ec.h>
#include <sodium.h>
#include <string.h>

#include "common/curve.h"
#include "tests/fuzz/fuzz-common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	mk_curve c;
	const mk_curve_info *ci;
	const uint8_t *p, *up;
	size_t n, un;
	int valid;

	if (size < 1)
		return 0;
	c = (mk_curve)(MK_CURVE_P256 + data[0] % (_MK_CURVE_MAX - MK_CURVE_P256));
	ci = mk_curve_get(c);
	p = data + 1;
	n = size - 1;

	if (mk_curve_unwrap_ec_point(c, p, n, &up, &un) == 0)
		FUZZ_ASSERT(un == ci->pub_len && up >= p && up + un <= p + n);
	FUZZ_ASSERT(mk_curve_from_ec_params(p, n) == MK_CURVE_NONE ||
		    mk_curve_get(mk_curve_from_ec_params(p, n)) != NULL);

	valid = mk_curve_validate_point(c, p, n) == 0;
	if (valid && ci->md_name) {
		const EC_GROUP *g = mk_curve_ec_group(c);
		EC_POINT *pt = EC_POINT_new(g);
		uint8_t out[133];

		FUZZ_ASSERT(pt && EC_POINT_oct2point(g, pt, p, n, NULL) == 1);
		FUZZ_ASSERT(EC_POINT_point2oct(g, pt, POINT_CONVERSION_UNCOMPRESSED, out,
					       sizeof(out), NULL) == n);
		FUZZ_ASSERT(memcmp(out, p, n) == 0);
		EC_POINT_free(pt);
	}
	if (c != MK_CURVE_ED25519) {
		uint16_t kem = c == MK_CURVE_P256   ? MK_HPKE_KEM_P256
			       : c == MK_CURVE_P384 ? MK_HPKE_KEM_P384
			       : c == MK_CURVE_P521 ? MK_HPKE_KEM_P521
						    : MK_HPKE_KEM_X25519;
		const fuzz_key *k = fuzz_recipient(kem);
		mk_hpke_soft_key sk = { c, k->sk->data, k->sk->len };
		mk_secret *dh = NULL;
		int r = mk_hpke_soft_dh(&sk, p, n, &dh);

		if (!valid)
			FUZZ_ASSERT(r < 0 && dh == NULL);
		else if (c != MK_CURVE_X25519) /* prime order: every valid point has a DH */
			FUZZ_ASSERT(r == 0);
		if (r == 0) {
			FUZZ_ASSERT(dh && dh->len == ci->dh_len);
			FUZZ_ASSERT(!sodium_is_zero(dh->data, dh->len));
		}
		mk_secret_free(dh);
	}
	return 0;
}
