/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mk_bytes: an owned heap byte string (signatures, public keys, plaintexts). Freed with
 * a wipe, because a plaintext can be as sensitive as a key.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "common/macros.h"

typedef struct mk_bytes {
	uint8_t *data;
	size_t len;
} mk_bytes;

#define MK_BYTES_NULL ((mk_bytes){ NULL, 0 })

/* Allocates len bytes (zeroed; len 0 allocates 1 byte). 0 or -ENOMEM; *ret untouched on failure. */
int mk_bytes_alloc(size_t len, mk_bytes *ret);

/* Copies p[0..len) into a new buffer. 0 or -ENOMEM. */
int mk_bytes_dup(const void *p, size_t len, mk_bytes *ret);

/* Wipes and frees b->data and resets b to MK_BYTES_NULL. Accepts an empty b. */
void mk_bytes_clear(mk_bytes *b);
#define _cleanup_bytes_ _cleanup_(mk_bytes_clear)

/* Lower-case hex of p[0..len) into a new NUL-terminated string, or NULL on ENOMEM. */
char *mk_hex_encode(const uint8_t *p, size_t len);

/*
 * Parses hex (upper or lower case, even length, no separators) into a new buffer.
 * 0, -EINVAL for bad hex, or -ENOMEM.
 */
int mk_hex_decode(const char *hex, mk_bytes *ret);
