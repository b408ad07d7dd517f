/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Small helpers shared by the tests in tests/crypto/. */
#pragma once

#include <stdbool.h>
#include <string.h>

#include "common/bytes.h"
#include "common/secmem.h"
#include "tests/tap.h"

static inline bool mkt_bytes_eq(const uint8_t *a, size_t an, const mk_bytes *b)
{
	return a && b->data && an == b->len && memcmp(a, b->data, an) == 0;
}

static inline bool mkt_secret_eq(const mk_secret *s, const mk_bytes *b)
{
	return s && mkt_bytes_eq(s->data, s->len, b);
}

/* A hex dump on a diagnostic line (for failures). */
static inline void mkt_diag_hex(const char *what, const uint8_t *p, size_t n)
{
	char *h = mk_hex_encode(p, n);

	mkt_diag("%s: %s", what, h ? h : "(nomem)");
	free(h);
}
