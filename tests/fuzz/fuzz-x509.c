/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The X.509 logic of pkcs11/x509.c on untrusted certificates (ImportCertificates' argument,
 * a token's certificate objects). The input is a list of certificates, each as a 2-byte
 * big-endian length and its bytes (at most MK_X509_CHAIN_MAX + 1 of them). Invariants: the
 * parse-only check, describe and public key agree on what parses; a chain that checks out
 * parses whole; chain building stays in bounds and never uses a pool entry twice.
 */
#include <string.h>

#include "common/error.h"
#include "pkcs11/x509-private.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	mk_bytes certs[MK_X509_CHAIN_MAX + 1] = { { 0 } };
	size_t n = 0, idx[MK_X509_CHAIN_MAX], n_idx = 0;
	mk_x509_info info;
	mk_bytes pub = MK_BYTES_NULL;

	while (n < MK_X509_CHAIN_MAX + 1 && size >= 2) {
		size_t len = (size_t)data[0] << 8 | data[1];

		data += 2;
		size -= 2;
		if (len > size)
			len = size;
		certs[n++] = (mk_bytes){ (uint8_t *)data, len };
		data += len;
		size -= len;
	}
	for (size_t i = 0; i < n; i++) {
		bool parses = mk_x509_check(certs[i].data, certs[i].len) == 0;
		int r = mk_x509_describe(certs[i].data, certs[i].len, &info);

		FUZZ_ASSERT(parses == (r == 0 || r == -ENOMEM));
		if (r == 0) {
			FUZZ_ASSERT(info.subject && info.issuer);
			mk_x509_info_clear(&info);
		}
		if (mk_x509_public_key(certs[i].data, certs[i].len, &pub) == 0) {
			FUZZ_ASSERT(parses && (pub.len == 32 || pub.data[0] == 0x04));
			mk_bytes_clear(&pub);
		}
	}
	if (mk_x509_chain_check(certs, n) == 0) {
		FUZZ_ASSERT(n >= 1 && n <= MK_X509_CHAIN_MAX);
		for (size_t i = 0; i < n; i++)
			FUZZ_ASSERT(mk_x509_check(certs[i].data, certs[i].len) == 0);
	}
	if (n >= 1 && mk_x509_chain_build(&certs[0], certs + 1, n - 1, idx, &n_idx) == 0) {
		FUZZ_ASSERT(n_idx < MK_X509_CHAIN_MAX && n_idx <= n - 1);
		for (size_t i = 0; i < n_idx; i++) {
			FUZZ_ASSERT(idx[i] < n - 1);
			for (size_t j = 0; j < i; j++)
				FUZZ_ASSERT(idx[i] != idx[j]);
		}
	}
	mk_error_clear();
	return 0;
}
