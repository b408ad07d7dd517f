/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Writes the seed corpora of the fuzz targets into DIR/<target>/ (run from the source tree:
 * build/tests/fuzz/gen-seeds tests/fuzz/corpus). The MLS/HPKE seeds are real ciphertexts to
 * the fuzzers' fixed recipient keys, so that mutations start from inputs that decrypt.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "agent/mls.h"
#include "common/tls.h"
#include "tests/fuzz/fuzz-common.h"

static const char *outdir;

static void put(const char *target, const char *name, const uint8_t *p, size_t n)
{
	char path[1024];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", outdir, target);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/%s/%s", outdir, target, name);
	f = fopen(path, "wb");
	if (!f || fwrite(p, 1, n, f) != n) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		exit(1);
	}
	fclose(f);
}

static void put_writer(const char *target, const char *name, mk_writer *w)
{
	mk_bytes b = MK_BYTES_NULL;

	if (mk_writer_finish(w, &b) < 0)
		exit(1);
	put(target, name, b.data, b.len);
	mk_bytes_clear(&b);
}

static void tls_seeds(void)
{
	static const uint8_t s1[] = { 0x10, 4, 0x25, 4, 0x7b, 0xbd, 4, 0x9d, 0x7f, 0x3e, 0x7d };
	static const uint8_t s2[] = { 0x10, 5, 0x03, 'a', 'b', 'c', 5, 0x00, 0, 7, 1, 0x12, 0x34 };
	static const uint8_t s3[] = { 0xff, 2, 0xde, 0xad, 0xbe, 0xef, 3, 1, 2, 3, 4, 5, 6, 7, 8 };
	static const uint8_t s4[] = { 0x10, 4, 0x40, 0x05 };             /* non-minimal */
	static const uint8_t s5[] = { 0x10, 4, 0xc0, 0, 0, 0, 0, 0, 0, 1 }; /* prefix 11 */
	static const uint8_t s6[] = { 0x01, 5, 0x40, 0x41, 'x' };         /* over cap, short */
	static const uint8_t s7[] = { 0x40, 6, 0x05, 1, 2, 3, 4, 5, 6, 0x41, 0x00 };

	put("fuzz-tls", "varints", s1, sizeof(s1));
	put("fuzz-tls", "opaques", s2, sizeof(s2));
	put("fuzz-tls", "fixed", s3, sizeof(s3));
	put("fuzz-tls", "nonminimal", s4, sizeof(s4));
	put("fuzz-tls", "prefix11", s5, sizeof(s5));
	put("fuzz-tls", "overcap", s6, sizeof(s6));
	put("fuzz-tls", "rawbytes", s7, sizeof(s7));
}

static void mls_seeds(void)
{
	static const uint16_t suites[] = { 1, 2, 3, 5, 7 };
	static const uint8_t ctx[] = "group context";

	for (size_t i = 0; i < ELEMENTSOF(suites); i++) {
		const mk_suite *su = mk_suite_get(suites[i]);
		const fuzz_key *k = fuzz_recipient(su->kem_id);
		mk_bytes kem = MK_BYTES_NULL, ct = MK_BYTES_NULL;
		mk_writer w;
		char name[64];

		if (mk_mls_encrypt_with_label(su->id, k->pk.data, k->pk.len, "UpdatePathNode", ctx,
					      sizeof(ctx) - 1, (const uint8_t *)"path secret", 11,
					      &kem, &ct) < 0)
			exit(1);
		mk_writer_init(&w, 1 << 20);
		mk_write_u8(&w, 0);
		mk_write_u16(&w, su->id);
		mk_write_opaque(&w, "UpdatePathNode", 14);
		mk_write_opaque(&w, ctx, sizeof(ctx) - 1);
		mk_write_opaque(&w, kem.data, kem.len);
		mk_write_opaque(&w, ct.data, ct.len);
		snprintf(name, sizeof(name), "mls-suite%u", su->id);
		put_writer("fuzz-mls-decrypt", name, &w);
		mk_bytes_clear(&kem);
		mk_bytes_clear(&ct);

		/* the same suite's HPKE directly, with an aad */
		{
			mk_hpke_suite s = { su->kem_id, su->kdf_id, su->aead_id };

			if (mk_hpke_seal_base(s, k->pk.data, k->pk.len, (const uint8_t *)"info", 4,
					      (const uint8_t *)"aad", 3, (const uint8_t *)"pt", 2,
					      NULL, 0, &kem, &ct) < 0)
				exit(1);
			mk_writer_init(&w, 1 << 20);
			mk_write_u8(&w, 1);
			mk_write_u16(&w, s.kem);
			mk_write_u16(&w, s.kdf);
			mk_write_u16(&w, s.aead);
			mk_write_opaque(&w, "info", 4);
			mk_write_opaque(&w, "aad", 3);
			mk_write_opaque(&w, kem.data, kem.len);
			mk_write_opaque(&w, ct.data, ct.len);
			snprintf(name, sizeof(name), "hpke-kem%04x-kdf%04x-aead%04x", s.kem, s.kdf,
				 s.aead);
			put_writer("fuzz-mls-decrypt", name, &w);
			mk_bytes_clear(&kem);
			mk_bytes_clear(&ct);
		}
	}
	{
		static const uint8_t bad_suite[] = { 0, 0, 4, 1, 'L', 0, 32, 0 };
		static const uint8_t truncated[] = { 0, 0, 2, 7, 'W', 'e', 'l' };
		static const uint8_t x25519_zero[] = {
			1, 0, 0x20, 0, 1, 0, 1, 0, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
			0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16,
			0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
		};

		put("fuzz-mls-decrypt", "bad-suite", bad_suite, sizeof(bad_suite));
		put("fuzz-mls-decrypt", "truncated", truncated, sizeof(truncated));
		put("fuzz-mls-decrypt", "x25519-zero-point", x25519_zero, sizeof(x25519_zero));
	}
}

static void point_seeds(void)
{
	static const struct {
		mk_curve c;
		uint16_t kem;
		const char *name;
	} curves[] = {
		{ MK_CURVE_P256, MK_HPKE_KEM_P256, "p256" },
		{ MK_CURVE_P384, MK_HPKE_KEM_P384, "p384" },
		{ MK_CURVE_P521, MK_HPKE_KEM_P521, "p521" },
		{ MK_CURVE_X25519, MK_HPKE_KEM_X25519, "x25519" },
	};
	uint8_t buf[200];
	char name[64];

	for (size_t i = 0; i < ELEMENTSOF(curves); i++) {
		const fuzz_key *k = fuzz_recipient(curves[i].kem);
		size_t n = k->pk.len;

		buf[0] = (uint8_t)(curves[i].c - MK_CURVE_P256);
		memcpy(buf + 1, k->pk.data, n);
		snprintf(name, sizeof(name), "%s-valid", curves[i].name);
		put("fuzz-point", name, buf, 1 + n);
		buf[n] ^= 1;
		snprintf(name, sizeof(name), "%s-off-curve", curves[i].name);
		put("fuzz-point", name, buf, 1 + n);
		buf[n] ^= 1;
		/* DER OCTET STRING wrapped, as some tokens return CKA_EC_POINT */
		if (n < 128) {
			buf[1] = 0x04;
			buf[2] = (uint8_t)n;
			memcpy(buf + 3, k->pk.data, n);
			snprintf(name, sizeof(name), "%s-wrapped", curves[i].name);
			put("fuzz-point", name, buf, 3 + n);
		} else {
			buf[1] = 0x04;
			buf[2] = 0x81;
			buf[3] = (uint8_t)n;
			memcpy(buf + 4, k->pk.data, n);
			snprintf(name, sizeof(name), "%s-wrapped", curves[i].name);
			put("fuzz-point", name, buf, 4 + n);
		}
		memset(buf + 1, 0, n);
		if (curves[i].c != MK_CURVE_X25519)
			buf[1] = 0x04;
		snprintf(name, sizeof(name), "%s-zero", curves[i].name);
		put("fuzz-point", name, buf, 1 + n);
	}
	buf[0] = MK_CURVE_ED25519 - MK_CURVE_P256;
	memset(buf + 1, 0x5a, 32);
	put("fuzz-point", "ed25519", buf, 33);
	buf[0] = MK_CURVE_X25519 - MK_CURVE_P256;
	memset(buf + 1, 0, 32);
	buf[1] = 1;
	put("fuzz-point", "x25519-one", buf, 33);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s CORPUS-DIR\n", argv[0]);
		return 2;
	}
	outdir = argv[1];
	tls_seeds();
	mls_seeds();
	point_seeds();
	return 0;
}
