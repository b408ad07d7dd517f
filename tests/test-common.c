/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Unit tests of common/: errors, secrets, bytes, curves. */
#include <string.h>

#include "common/bytes.h"
#include "common/curve.h"
#include "common/error.h"
#include "common/secmem.h"
#include "tests/tap.h"

static void test_error(void)
{
	mk_error_clear();
	mkt_ok(mk_error_message() == NULL, "no message after clear");
	mkt_ok(mk_error(-EIO, "token \"%s\" failed", "demo") == -EIO, "mk_error returns r");
	mkt_ok(strcmp(mk_error_message(), "token \"demo\" failed") == 0, "message recorded");
	mkt_ok(strcmp(mk_error_name(-ENOKEY), "NoSuchKey") == 0, "ENOKEY is NoSuchKey");
	mkt_ok(strcmp(mk_error_name(-EBADMSG), "DecryptFailed") == 0, "EBADMSG is DecryptFailed");
	mkt_ok(strcmp(mk_error_name(-EKEYREVOKED), "PinLocked") == 0, "EKEYREVOKED is PinLocked");
	mkt_ok(strcmp(mk_error_name(-E2BIG), "TokenError") == 0, "unknown maps to TokenError");
	mk_error_clear();
	mkt_ok(strstr(mk_error_text(-ENOMEDIUM), "insert") != NULL, "generic text says what to do");
}

static void test_secret(void)
{
	mk_secret *s = NULL;
	const uint8_t pin[] = "123456";

	mkt_ok_r(mk_secret_new_copy(pin, 6, &s), "secret allocated");
	mkt_ok(s && s->len == 6 && memcmp(s->data, pin, 6) == 0, "secret holds the copy");
	mkt_ok(((uintptr_t)s & 15) == 0, "secret header is aligned");
	s = mk_secret_free(s);
	mkt_ok(s == NULL, "free returns NULL");
	mkt_ok(mk_secret_new((size_t)1 << 40, &s) == -EINVAL && s == NULL,
	       "absurd size refused, output untouched");
	mkt_ok(mk_memeq_ct("abc", "abc", 3) == 1 && mk_memeq_ct("abc", "abd", 3) == 0,
	       "constant-time compare");
}

static void test_bytes(void)
{
	_cleanup_bytes_ mk_bytes b = MK_BYTES_NULL;
	_cleanup_free_ char *hex = NULL;

	mkt_ok(mk_hex_decode("00ffA0", &b) == 0 && b.len == 3 && b.data[1] == 0xff &&
		       b.data[2] == 0xa0,
	       "hex decodes");
	hex = mk_hex_encode(b.data, b.len);
	mkt_ok(hex && strcmp(hex, "00ffa0") == 0, "hex encodes lower case");
	mk_bytes_clear(&b);
	mkt_ok(mk_hex_decode("abc", &b) == -EINVAL, "odd hex refused");
	mkt_ok(mk_hex_decode("zz", &b) == -EINVAL && b.data == NULL, "bad hex refused");
}

static void test_curve(void)
{
	static const uint8_t g256[65] = {
		0x04, 0x6b, 0x17, 0xd1, 0xf2, 0xe1, 0x2c, 0x42, 0x47, 0xf8, 0xbc, 0xe6, 0xe5,
		0x63, 0xa4, 0x40, 0xf2, 0x77, 0x03, 0x7d, 0x81, 0x2d, 0xeb, 0x33, 0xa0, 0xf4,
		0xa1, 0x39, 0x45, 0xd8, 0x98, 0xc2, 0x96, 0x4f, 0xe3, 0x42, 0xe2, 0xfe, 0x1a,
		0x7f, 0x9b, 0x8e, 0xe7, 0xeb, 0x4a, 0x7c, 0x0f, 0x9e, 0x16, 0x2b, 0xce, 0x33,
		0x57, 0x6b, 0x31, 0x5e, 0xce, 0xcb, 0xb6, 0x40, 0x68, 0x37, 0xbf, 0x51, 0xf5,
	};
	uint8_t bad[65], wrapped[67];
	const uint8_t *p;
	size_t n;

	mkt_ok(mk_curve_validate_point(MK_CURVE_P256, g256, sizeof(g256)) == 0,
	       "P-256 generator is valid");
	memcpy(bad, g256, sizeof(bad));
	bad[64] ^= 1;
	mkt_ok(mk_curve_validate_point(MK_CURVE_P256, bad, sizeof(bad)) == -EINVAL,
	       "off-curve point refused");
	mkt_ok(mk_curve_validate_point(MK_CURVE_P256, g256, 64) == -EINVAL, "short point refused");
	memset(bad, 0, sizeof(bad));
	bad[0] = 0x04;
	mkt_ok(mk_curve_validate_point(MK_CURVE_P256, bad, sizeof(bad)) == -EINVAL,
	       "zero point refused");
	bad[0] = 0x00;
	mkt_ok(mk_curve_validate_point(MK_CURVE_P256, bad, 1) == -EINVAL,
	       "infinity encoding refused");
	mkt_ok(mk_curve_from_ec_params(mk_curve_get(MK_CURVE_P384)->oid,
				       mk_curve_get(MK_CURVE_P384)->oid_len) == MK_CURVE_P384,
	       "P-384 OID recognised");
	mkt_ok(mk_curve_from_ec_params((const uint8_t *)"\x13\x0c" "edwards25519", 14) ==
		       MK_CURVE_ED25519,
	       "printable edwards25519 recognised");
	wrapped[0] = 0x04;
	wrapped[1] = 65;
	memcpy(wrapped + 2, g256, 65);
	mkt_ok(mk_curve_unwrap_ec_point(MK_CURVE_P256, wrapped, 67, &p, &n) == 0 && n == 65 &&
		       p == wrapped + 2,
	       "DER-wrapped EC point unwrapped");
	mkt_ok(mk_curve_unwrap_ec_point(MK_CURVE_P256, g256, 65, &p, &n) == 0 && p == g256,
	       "raw EC point kept (leading 0x04 is not a DER tag here)");
	mkt_ok(mk_curve_unwrap_ec_point(MK_CURVE_P256, g256, 40, &p, &n) == -EINVAL,
	       "EC point of wrong length refused");
}

int main(void)
{
	test_error();
	test_secret();
	test_bytes();
	test_curve();
	return mkt_done();
}
