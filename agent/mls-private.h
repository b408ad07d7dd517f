/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Private to agent/: pieces that the token side (mls.c) and software side (mls-soft.c) share. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "agent/suite.h"
#include "common/curve.h"

/* 0 when label is not NULL and at most MK_MLS_LABEL_MAX bytes, else -EINVAL with a message. */
int mk_mls_check_label(const char *label);

/*
 * Hashes SignContent = V("MLS 1.0 " + label) || V(content) with md ("SHA256"/"SHA384"/
 * "SHA512") piece by piece, without building it, into out (at least 64 bytes); sets
 * *ret_len. -EINVAL for a bad label or a content over the varint range.
 */
int mk_mls_sign_content_digest(const char *md, const char *label, const uint8_t *content,
			       size_t content_len, uint8_t *out, size_t *ret_len);

/* The curve of a key algorithm, without the token layer (mk_crypto does not link it). */
mk_curve mk_mls_alg_curve(mk_key_alg a);
