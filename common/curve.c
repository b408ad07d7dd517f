/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <openssl/ec.h>
#include <openssl/obj_mac.h>
#include <pthread.h>
#include <string.h>

#include "common/curve.h"
#include "common/error.h"

static const uint8_t oid_p256[] = { 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07 };
static const uint8_t oid_p384[] = { 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22 };
static const uint8_t oid_p521[] = { 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23 };
static const uint8_t oid_ed25519[] = { 0x06, 0x03, 0x2b, 0x65, 0x70 };
static const uint8_t oid_x25519[] = { 0x06, 0x03, 0x2b, 0x65, 0x6e };

static const mk_curve_info curves[_MK_CURVE_MAX] = {
	[MK_CURVE_P256] = { MK_CURVE_P256, "P-256", NID_X9_62_prime256v1, oid_p256,
			    sizeof(oid_p256), 32, 65, 32, "SHA256", 32 },
	[MK_CURVE_P384] = { MK_CURVE_P384, "P-384", NID_secp384r1, oid_p384, sizeof(oid_p384),
			    48, 97, 48, "SHA384", 48 },
	[MK_CURVE_P521] = { MK_CURVE_P521, "P-521", NID_secp521r1, oid_p521, sizeof(oid_p521),
			    66, 133, 66, "SHA512", 64 },
	[MK_CURVE_ED25519] = { MK_CURVE_ED25519, "Ed25519", NID_ED25519, oid_ed25519,
			       sizeof(oid_ed25519), 32, 32, 0, NULL, 0 },
	[MK_CURVE_X25519] = { MK_CURVE_X25519, "X25519", NID_X25519, oid_x25519,
			      sizeof(oid_x25519), 32, 32, 32, NULL, 0 },
};

/* Building a group costs more than validating a point with it, so each is built once. */
static pthread_once_t groups_once = PTHREAD_ONCE_INIT;
static EC_GROUP *groups[_MK_CURVE_MAX];

static void build_groups(void)
{
	for (int c = MK_CURVE_P256; c <= MK_CURVE_P521; c++)
		groups[c] = EC_GROUP_new_by_curve_name(curves[c].nid);
}

const EC_GROUP *mk_curve_ec_group(mk_curve c)
{
	if (c < MK_CURVE_P256 || c > MK_CURVE_P521)
		return NULL;
	pthread_once(&groups_once, build_groups);
	return groups[c];
}

const mk_curve_info *mk_curve_get(mk_curve c)
{
	if (c <= MK_CURVE_NONE || c >= _MK_CURVE_MAX)
		return NULL;
	return &curves[c];
}

static bool printable_is(const uint8_t *p, size_t n, const char *s)
{
	size_t l = strlen(s);

	return n == l + 2 && p[0] == 0x13 && p[1] == l && memcmp(p + 2, s, l) == 0;
}

mk_curve mk_curve_from_ec_params(const uint8_t *p, size_t n)
{
	if (!p)
		return MK_CURVE_NONE;
	for (int c = MK_CURVE_P256; c < _MK_CURVE_MAX; c++)
		if (n == curves[c].oid_len && memcmp(p, curves[c].oid, n) == 0)
			return (mk_curve)c;
	if (printable_is(p, n, "edwards25519"))
		return MK_CURVE_ED25519;
	if (printable_is(p, n, "curve25519"))
		return MK_CURVE_X25519;
	return MK_CURVE_NONE;
}

int mk_curve_validate_point(mk_curve c, const uint8_t *p, size_t n)
{
	const mk_curve_info *ci = mk_curve_get(c);
	const EC_GROUP *group;
	EC_POINT *pt = NULL;
	int r;

	if (!ci)
		return mk_error(-EINVAL, "unknown curve");
	if (!p || n != ci->pub_len)
		return mk_error(-EINVAL, "%s public key must be %zu bytes, got %zu", ci->name,
				ci->pub_len, p ? n : 0);
	if (c == MK_CURVE_X25519 || c == MK_CURVE_ED25519)
		return 0;
	if (p[0] != 0x04)
		return mk_error(-EINVAL, "%s public key must be an uncompressed point (04||X||Y)",
				ci->name);

	group = mk_curve_ec_group(c);
	pt = group ? EC_POINT_new(group) : NULL;
	if (!pt) {
		r = -ENOMEM;
		goto out;
	}
	/* oct2point checks that the coordinates are in range and the point is on the curve. */
	if (EC_POINT_oct2point(group, pt, p, n, NULL) != 1 ||
	    EC_POINT_is_on_curve(group, pt, NULL) != 1) {
		r = mk_error(-EINVAL, "%s public key is not a point on the curve", ci->name);
		goto out;
	}
	if (EC_POINT_is_at_infinity(group, pt)) {
		r = mk_error(-EINVAL, "%s public key is the point at infinity", ci->name);
		goto out;
	}
	r = 0;
out:
	EC_POINT_free(pt);
	return r;
}

int mk_curve_unwrap_ec_point(mk_curve c, const uint8_t *p, size_t n, const uint8_t **ret_p,
			     size_t *ret_n)
{
	const mk_curve_info *ci = mk_curve_get(c);
	size_t want;

	if (!ci || !p)
		return -EINVAL;
	want = ci->pub_len;
	if (n == want) {
		*ret_p = p;
		*ret_n = n;
		return 0;
	}
	/* DER OCTET STRING: 04 len point, with len in short (< 128) or 0x81 long form. */
	if (want < 128 && n == want + 2 && p[0] == 0x04 && p[1] == want) {
		*ret_p = p + 2;
		*ret_n = want;
		return 0;
	}
	if (want >= 128 && want < 256 && n == want + 3 && p[0] == 0x04 && p[1] == 0x81 &&
	    p[2] == want) {
		*ret_p = p + 3;
		*ret_n = want;
		return 0;
	}
	return mk_error(-EINVAL, "CKA_EC_POINT has %zu bytes; a %s point has %zu", n, ci->name,
			want);
}
