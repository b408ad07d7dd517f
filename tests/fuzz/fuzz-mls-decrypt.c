/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * HPKE / MLS input parsing: the input is split with the TLS codec and run through
 * DecryptWithLabel (mode 0) or a general HPKE OpenBase (mode 1) with a software DH:
 *   mode 0: u8 0, u16 suite, opaque label<255>, opaque context, opaque kem_output, opaque ct
 *   mode 1: u8 1, u16 kem, u16 kdf, u16 aead, opaque info, opaque aad, opaque enc, opaque ct
 * Invariants: a failure hands out no plaintext; a success on a ciphertext that the fuzzer
 * could not have forged only happens for the seeds (which encrypt to the fixed key).
 */
#include <string.h>

#include "agent/mls.h"
#include "common/tls.h"
#include "tests/fuzz/fuzz-common.h"

#define CAP (1u << 20)

static void open_with(mk_hpke_suite s, const uint8_t *info, size_t info_len, const uint8_t *aad,
		      size_t aad_len, const uint8_t *enc, size_t enc_len, const uint8_t *ct,
		      size_t ct_len)
{
	const fuzz_key *k = fuzz_recipient(s.kem);
	mk_bytes pt = MK_BYTES_NULL;
	mk_hpke_soft_key sk;
	int r;

	if (!k) {
		FUZZ_ASSERT(mk_hpke_suite_check(s) < 0);
		return;
	}
	sk = (mk_hpke_soft_key){ mk_hpke_kem_curve(s.kem), k->sk->data, k->sk->len };
	r = mk_hpke_open_base(s, mk_hpke_soft_dh, &sk, k->pk.data, k->pk.len, info, info_len, aad,
			      aad_len, enc, enc_len, ct, ct_len, &pt);
	if (r < 0) {
		FUZZ_ASSERT(pt.data == NULL);
		return;
	}
	FUZZ_ASSERT(ct_len >= 16 && pt.len == ct_len - 16);
	mk_bytes_clear(&pt);
}

static void mode_mls(mk_reader *r)
{
	const uint8_t *label, *ctx, *kem, *ct;
	size_t label_len, ctx_len, kem_len, ct_len;
	_cleanup_bytes_ mk_bytes info = MK_BYTES_NULL;
	const mk_suite *su;
	char lbl[256];
	uint16_t id;

	if (mk_read_u16(r, &id) < 0 || mk_read_opaque(r, 255, &label, &label_len) < 0 ||
	    mk_read_opaque(r, CAP, &ctx, &ctx_len) < 0 ||
	    mk_read_opaque(r, 512, &kem, &kem_len) < 0 || mk_read_opaque(r, CAP, &ct, &ct_len) < 0)
		return;
	memcpy(lbl, label, label_len);
	lbl[label_len] = '\0';
	su = mk_suite_get(id);
	if (!su)
		return;
	FUZZ_ASSERT(mk_mls_labeled_content(lbl, ctx, ctx_len, &info) == 0);
	open_with((mk_hpke_suite){ su->kem_id, su->kdf_id, su->aead_id }, info.data, info.len,
		  NULL, 0, kem, kem_len, ct, ct_len);
}

static void mode_hpke(mk_reader *r)
{
	const uint8_t *info, *aad, *enc, *ct;
	size_t info_len, aad_len, enc_len, ct_len;
	mk_hpke_suite s;

	if (mk_read_u16(r, &s.kem) < 0 || mk_read_u16(r, &s.kdf) < 0 ||
	    mk_read_u16(r, &s.aead) < 0 || mk_read_opaque(r, CAP, &info, &info_len) < 0 ||
	    mk_read_opaque(r, CAP, &aad, &aad_len) < 0 ||
	    mk_read_opaque(r, 512, &enc, &enc_len) < 0 || mk_read_opaque(r, CAP, &ct, &ct_len) < 0)
		return;
	open_with(s, info, info_len, aad, aad_len, enc, enc_len, ct, ct_len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	mk_reader r;
	uint8_t mode;

	mk_reader_init(&r, data, size);
	if (mk_read_u8(&r, &mode) < 0)
		return 0;
	if (mode == 0)
		mode_mls(&r);
	else if (mode == 1)
		mode_hpke(&r);
	return 0;
}
