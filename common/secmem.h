/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Secrets (PINs, DH results, HPKE keys and nonces) live only in mk_secret buffers:
 * libsodium's guarded, mlock()ed memory that is wiped when freed. A secret type that
 * wipes itself, rather than hygiene by convention.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "common/macros.h"

typedef struct mk_secret {
	size_t len;
	uint8_t data[]; /* len bytes, 16-byte aligned */
} mk_secret;

/*
 * Initialises libsodium (idempotent, thread-safe). Returns 0 or -ENOMEM. Every other
 * function here calls it; a daemon calls it early so that a failure shows at start.
 */
int mk_secmem_init(void);

/*
 * Allocates a zero-filled secret of len bytes (len may be 0; at most 64 MiB).
 * Returns 0 and sets *ret (free with mk_secret_free), or -ENOMEM / -EINVAL.
 */
int mk_secret_new(size_t len, mk_secret **ret);

/* Allocates a secret holding a copy of p[0..len). Same returns as mk_secret_new(). */
int mk_secret_new_copy(const void *p, size_t len, mk_secret **ret);

/* Wipes and frees s. Accepts NULL; returns NULL. */
mk_secret *mk_secret_free(mk_secret *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(mk_secret *, mk_secret_free)
#define _cleanup_secret_ _cleanup_(mk_secret_freep)

/* Wipes len bytes at p (sodium_memzero), for stack copies. */
void mk_wipe(void *p, size_t len);

/* Constant-time comparison of two equal-length buffers: 1 when equal, else 0. */
int mk_memeq_ct(const void *a, const void *b, size_t len);
