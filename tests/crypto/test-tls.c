/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The TLS presentation-language codec (common/tls.h): varints, opaque<V>, fixed integers. */
#include <errno.h>
#include <string.h>

#include "common/tls.h"
#include "tests/tap.h"

static bool read_varint_hex(const uint8_t *p, size_t n, uint64_t *v, size_t *left)
{
	mk_reader r;

	mk_reader_init(&r, p, n);
	if (mk_read_varint(&r, v) < 0)
		return false;
	*left = r.left;
	return true;
}

static void test_varint_roundtrip(void)
{
	static const struct {
		uint64_t v;
		size_t len;
	} cases[] = {
		{ 0, 1 }, { 37, 1 }, { 63, 1 }, { 64, 2 }, { 15293, 2 }, { 16383, 2 },
		{ 16384, 4 }, { 494878333, 4 }, { MK_VARINT_MAX, 4 },
	};
	uint8_t b[4];

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		uint64_t v = 0;
		size_t n = mk_varint_encode(cases[i].v, b), left = 99;

		mkt_ok(n == cases[i].len && read_varint_hex(b, n, &v, &left) && v == cases[i].v &&
			       left == 0,
		       "varint %llu encodes in %zu bytes and reads back",
		       (unsigned long long)cases[i].v, cases[i].len);
	}
	mkt_ok(mk_varint_encode(MK_VARINT_MAX + 1, b) == 0, "2^30 does not encode");
	/* RFC 9000 §A.1 examples that fit MLS's range */
	{
		static const uint8_t ex2[] = { 0x7b, 0xbd }, ex4[] = { 0x9d, 0x7f, 0x3e, 0x7d };
		uint64_t v = 0;
		size_t left;

		mkt_ok(read_varint_hex(ex2, 2, &v, &left) && v == 15293, "7bbd is 15293");
		mkt_ok(read_varint_hex(ex4, 4, &v, &left) && v == 494878333,
		       "9d7f3e7d is 494878333");
	}
}

static void test_varint_rejects(void)
{
	static const struct {
		uint8_t b[8];
		size_t n;
		const char *what;
	} bad[] = {
		{ { 0x40, 0x05 }, 2, "non-minimal 2-byte 5 (40 05)" },
		{ { 0x40, 0x3f }, 2, "non-minimal 2-byte 63" },
		{ { 0x80, 0x00, 0x00, 0x05 }, 4, "non-minimal 4-byte 5" },
		{ { 0x80, 0x00, 0x3f, 0xff }, 4, "non-minimal 4-byte 16383" },
		{ { 0xc0, 0, 0, 0, 0, 0, 0, 1 }, 8, "prefix 11 (8-byte QUIC form)" },
		{ { 0xff }, 1, "prefix 11 alone" },
		{ { 0x40 }, 1, "truncated 2-byte" },
		{ { 0x80, 0x00, 0x40 }, 3, "truncated 4-byte" },
		{ { 0 }, 0, "empty input" },
	};

	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		mk_reader r;
		uint64_t v = 12345;

		mk_reader_init(&r, bad[i].n ? bad[i].b : NULL, bad[i].n);
		mkt_ok(mk_read_varint(&r, &v) == -EBADMSG && v == 12345 && r.left == bad[i].n,
		       "varint rejects %s, reader and output untouched", bad[i].what);
	}
}

static void test_fixed(void)
{
	static const uint8_t in[] = { 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09,
				      0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f };
	mk_reader r;
	uint8_t a = 0;
	uint16_t b = 0;
	uint32_t c = 0;
	uint64_t d = 0, keep = 7;

	mk_reader_init(&r, in, sizeof(in));
	mkt_ok(mk_read_u8(&r, &a) == 0 && a == 0x01, "u8");
	mkt_ok(mk_read_u16(&r, &b) == 0 && b == 0x0203, "u16 big-endian");
	mkt_ok(mk_read_u32(&r, &c) == 0 && c == 0x04050607, "u32 big-endian");
	mkt_ok(r.left == 8, "7 bytes consumed");
	mkt_ok(mk_read_u64(&r, &d) == 0 && d == 0x08090a0b0c0d0e0fULL, "u64 big-endian");
	mkt_ok(mk_reader_empty(&r), "reader empty at the end");
	mkt_ok(mk_read_u8(&r, &a) == -EBADMSG && a == 0x01, "u8 past the end refused");
	mk_reader_init(&r, in, 7);
	mkt_ok(mk_read_u64(&r, &keep) == -EBADMSG && keep == 7 && r.left == 7,
	       "truncated u64 refused, nothing consumed");
	mk_reader_init(&r, in, 3);
	mkt_ok(mk_read_u32(&r, &c) == -EBADMSG && r.left == 3, "truncated u32 refused");
	mk_reader_init(&r, in, 1);
	mkt_ok(mk_read_u16(&r, &b) == -EBADMSG && r.left == 1, "truncated u16 refused");
}

static void test_opaque(void)
{
	static const uint8_t in[] = { 0x03, 'a', 'b', 'c', 0x00, 0x40, 0x40 };
	uint8_t big[70] = { 0x40, 0x41 };
	const uint8_t *p = NULL, *q;
	size_t n = 99;
	mk_reader r;

	mk_reader_init(&r, in, sizeof(in));
	mkt_ok(mk_read_opaque(&r, 16, &p, &n) == 0 && n == 3 && memcmp(p, "abc", 3) == 0 &&
		       p == in + 1,
	       "opaque<V> borrows its bytes from the input");
	mkt_ok(mk_read_opaque(&r, 16, &p, &n) == 0 && n == 0, "empty opaque");
	mkt_ok(mk_read_opaque(&r, 1000, &p, &n) == -EBADMSG && r.left == 2 && n == 0,
	       "opaque whose length (64) runs past the input is refused before any copy");

	mk_reader_init(&r, in, sizeof(in));
	mkt_ok(mk_read_opaque(&r, 2, &p, &n) == -EBADMSG && r.left == sizeof(in),
	       "opaque over its cap refused, nothing consumed");

	/* a 65-byte vector with a 2-byte length, exactly filling the input */
	mk_reader_init(&r, big, 2 + 65);
	mkt_ok(mk_read_opaque(&r, 65, &p, &n) == 0 && n == 65 && mk_reader_empty(&r),
	       "opaque with 2-byte length");
	mk_reader_init(&r, big, 2 + 64);
	mkt_ok(mk_read_opaque(&r, 65, &p, &n) == -EBADMSG, "opaque missing its last byte refused");
	big[0] = 0x40;
	big[1] = 0x03; /* 3 in two bytes: not minimal */
	mk_reader_init(&r, big, 5);
	mkt_ok(mk_read_opaque(&r, 65, &p, &n) == -EBADMSG, "opaque with non-minimal length refused");

	mk_reader_init(&r, in, sizeof(in));
	mkt_ok(mk_read_bytes(&r, 4, &q) == 0 && q == in && r.left == 3, "raw bytes");
	mkt_ok(mk_read_bytes(&r, 4, &q) == -EBADMSG && r.left == 3, "raw bytes past the end");
	mkt_ok(mk_read_bytes(&r, SIZE_MAX, &q) == -EBADMSG, "absurd length refused");
}

static void test_writer(void)
{
	mk_bytes out = MK_BYTES_NULL;
	uint8_t payload[300];
	mk_writer w;
	mk_reader r;
	const uint8_t *p;
	size_t n;
	uint64_t v;

	memset(payload, 0xab, sizeof(payload));
	mk_writer_init(&w, 1024);
	mk_write_u8(&w, 7);
	mk_write_u16(&w, 0x1234);
	mk_write_u32(&w, 0xdeadbeef);
	mk_write_u64(&w, 0x0102030405060708ULL);
	mk_write_varint(&w, 16384);
	mk_write_opaque(&w, payload, sizeof(payload));
	mk_write_bytes(&w, "xy", 2);
	mkt_ok(mk_writer_finish(&w, &out) == 0 && out.len == 1 + 2 + 4 + 8 + 4 + 2 + 300 + 2,
	       "writer produced %zu bytes", out.len);
	mkt_ok(out.data[0] == 7 && out.data[1] == 0x12 && out.data[3] == 0xde &&
		       out.data[15 + 4] == 0x41 && out.data[15 + 5] == 0x2c,
	       "fields in order, big-endian, opaque length 300 as 41 2c");
	mk_reader_init(&r, out.data, out.len);
	mk_read_bytes(&r, 7, &p);
	mk_read_u64(&r, &v);
	mkt_ok(mk_read_varint(&r, &v) == 0 && v == 16384, "varint reads back");
	mkt_ok(mk_read_opaque(&r, 300, &p, &n) == 0 && n == 300 && p[299] == 0xab,
	       "opaque reads back");
	mk_bytes_clear(&out);

	mk_writer_init(&w, 8);
	mkt_ok(mk_write_u32(&w, 1) == 0, "first write within the cap");
	mkt_ok(mk_write_u64(&w, 2) == -E2BIG, "write over the cap refused");
	mkt_ok(mk_write_u8(&w, 3) == -E2BIG, "later writes fail with the first error");
	mkt_ok(mk_writer_finish(&w, &out) == -E2BIG && out.data == NULL,
	       "finish reports the error and hands out nothing");
	mk_writer_clear(&w);

	mk_writer_init(&w, 100);
	mkt_ok(mk_write_varint(&w, MK_VARINT_MAX + 1) == -E2BIG, "varint over 2^30-1 refused");
	mk_writer_clear(&w);

	mk_writer_init(&w, 10);
	mkt_ok(mk_write_opaque(&w, payload, 10) == -E2BIG && w.len == 0,
	       "opaque that does not fit leaves nothing half-written");
	mk_writer_clear(&w);

	mk_writer_init(&w, 10);
	mkt_ok(mk_writer_finish(&w, &out) == 0 && out.len == 0 && out.data,
	       "empty writer finishes with an empty buffer");
	mk_bytes_clear(&out);

	/* growth across many small writes */
	mk_writer_init(&w, 1 << 20);
	for (int i = 0; i < 100000; i++)
		mk_write_u8(&w, (uint8_t)i);
	mkt_ok(mk_writer_finish(&w, &out) == 0 && out.len == 100000 && out.data[99999] == 0x9f,
	       "writer grows to 100000 bytes");
	mk_bytes_clear(&out);
}

int main(void)
{
	test_varint_roundtrip();
	test_varint_rejects();
	test_fixed();
	test_opaque();
	test_writer();
	return mkt_done();
}
