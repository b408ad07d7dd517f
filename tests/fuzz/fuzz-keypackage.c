/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The KeyPackage decoder (agent/keypackage.h): the input is read as MLSMessages back to back,
 * as `mlskey keypackage --count N` writes them. Every KeyPackage that decodes must re-encode
 * to exactly the bytes it was read from (the decoder accepts only the canonical encoding),
 * and a receiver's checks must run on it without crashing. A failed read leaves the reader
 * where it was.
 */
#include <stdlib.h>
#include <string.h>

#include "agent/keypackage.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	mk_key_package *kp = malloc(sizeof(*kp));
	mk_reader r;

	if (!kp)
		return 0;
	mk_reader_init(&r, data, size);
	while (!mk_reader_empty(&r)) {
		mk_reader before = r;
		mk_bytes out = MK_BYTES_NULL;
		mk_kp_span inner;

		if (mk_kp_read_message(&r, kp, &inner) < 0) {
			FUZZ_ASSERT(r.p == before.p && r.left == before.left);
			break;
		}
		FUZZ_ASSERT(mk_kp_encode_message(kp, &out) == 0);
		FUZZ_ASSERT(out.len == before.left - r.left &&
			    memcmp(out.data, before.p, out.len) == 0);
		FUZZ_ASSERT(inner.p == before.p + 4 && inner.n == out.len - 4);
		mk_bytes_clear(&out);
		(void)mk_kp_check(kp, 1700000000);
	}
	free(kp);
	return 0;
}
