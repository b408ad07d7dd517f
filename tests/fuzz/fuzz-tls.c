/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The TLS codec (common/tls.h). The first byte is a cap for opaque<V>; the rest is read as a
 * stream of (op, value) pairs. Every successful read is checked to re-encode to the exact
 * bytes it consumed (so only minimal varints are accepted), and a failed read must leave
 * the reader untouched.
 */
#include <string.h>

#include "common/tls.h"
#include "tests/fuzz/fuzz.h"

static void check_reencodes(const mk_reader *before, const mk_reader *after, int op,
			    uint64_t v, const uint8_t *p, size_t n)
{
	size_t used = before->left - after->left;
	mk_bytes out = MK_BYTES_NULL;
	mk_writer w;

	mk_writer_init(&w, 1 << 20);
	switch (op) {
	case 0:
		mk_write_u8(&w, (uint8_t)v);
		break;
	case 1:
		mk_write_u16(&w, (uint16_t)v);
		break;
	case 2:
		mk_write_u32(&w, (uint32_t)v);
		break;
	case 3:
		mk_write_u64(&w, v);
		break;
	case 4:
		mk_write_varint(&w, v);
		break;
	case 5:
		mk_write_opaque(&w, p, n);
		break;
	default:
		mk_write_bytes(&w, p, n);
		break;
	}
	FUZZ_ASSERT(mk_writer_finish(&w, &out) == 0);
	FUZZ_ASSERT(out.len == used && memcmp(out.data, before->p, used) == 0);
	mk_bytes_clear(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	mk_reader r;
	size_t cap;

	if (size < 1)
		return 0;
	cap = (size_t)data[0] * 4;
	mk_reader_init(&r, data + 1, size - 1);
	while (!mk_reader_empty(&r)) {
		mk_reader before;
		const uint8_t *p = NULL;
		uint8_t op, u8 = 0;
		uint16_t u16 = 0;
		uint32_t u32 = 0;
		uint64_t v = 0;
		size_t n = 0;
		int e;

		if (mk_read_u8(&r, &op) < 0)
			break;
		op %= 7;
		before = r;
		switch (op) {
		case 0:
			e = mk_read_u8(&r, &u8);
			v = u8;
			break;
		case 1:
			e = mk_read_u16(&r, &u16);
			v = u16;
			break;
		case 2:
			e = mk_read_u32(&r, &u32);
			v = u32;
			break;
		case 3:
			e = mk_read_u64(&r, &v);
			break;
		case 4:
			e = mk_read_varint(&r, &v);
			if (e == 0)
				FUZZ_ASSERT(v <= MK_VARINT_MAX);
			break;
		case 5:
			e = mk_read_opaque(&r, cap, &p, &n);
			if (e == 0)
				FUZZ_ASSERT(n <= cap && p + n <= data + size);
			break;
		default:
			n = r.left ? before.p[0] % 16 : 0;
			e = mk_read_bytes(&r, n, &p);
			break;
		}
		if (e < 0) {
			FUZZ_ASSERT(r.p == before.p && r.left == before.left);
			break;
		}
		check_reencodes(&before, &r, op, v, p, n);
	}
	return 0;
}
