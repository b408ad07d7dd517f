/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The bounded reader and writer for the TLS presentation language as MLS uses it
 * (RFC 9420 §2.1.2): fixed big-endian integers, QUIC-style variable-length integers in
 * minimal form only, and opaque<V> vectors. Every length is checked against what is left
 * (and against a caller's cap) before anything is allocated or copied.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/bytes.h"

/* Largest value a varint can carry: 2^30 - 1. */
#define MK_VARINT_MAX ((uint64_t)0x3fffffff)

/* --- reading ----------------------------------------------------------------------------- */

typedef struct mk_reader {
	const uint8_t *p; /* next unread byte (borrowed) */
	size_t left;      /* bytes left */
} mk_reader;

/* Sets r to read p[0..n). p may be NULL when n == 0. */
void mk_reader_init(mk_reader *r, const uint8_t *p, size_t n);

/*
 * Each reader function consumes on success and returns 0; on failure it returns -EBADMSG
 * (truncated input, non-minimal or invalid varint, vector over its cap) and leaves *r and
 * the outputs untouched.
 */
int mk_read_u8(mk_reader *r, uint8_t *ret);
int mk_read_u16(mk_reader *r, uint16_t *ret);
int mk_read_u32(mk_reader *r, uint32_t *ret);
int mk_read_u64(mk_reader *r, uint64_t *ret);

/* A varint: prefix 00/01/10 gives 1/2/4 bytes; 11 and non-minimal encodings are rejected. */
int mk_read_varint(mk_reader *r, uint64_t *ret);

/* n raw bytes; *ret points into the input (borrowed, valid as long as the input). */
int mk_read_bytes(mk_reader *r, size_t n, const uint8_t **ret);

/* opaque<V> with at most max bytes of content; *ret and *ret_n borrowed from the input. */
int mk_read_opaque(mk_reader *r, size_t max, const uint8_t **ret, size_t *ret_n);

/* true when every byte was consumed. */
bool mk_reader_empty(const mk_reader *r);

/* --- writing ----------------------------------------------------------------------------- */

typedef struct mk_writer {
	uint8_t *buf;
	size_t len;
	size_t cap;
	size_t max; /* hard cap on len */
	int error;  /* first error; once set, every write is a no-op */
} mk_writer;

/* Starts an empty writer that refuses to grow past max bytes. */
void mk_writer_init(mk_writer *w, size_t max);

/*
 * Each writer function appends and returns 0, or returns -ENOMEM / -E2BIG (over max, or a
 * varint over MK_VARINT_MAX) and records it in w->error so that a sequence of writes can be
 * checked once at the end (mk_writer_finish).
 */
int mk_write_u8(mk_writer *w, uint8_t v);
int mk_write_u16(mk_writer *w, uint16_t v);
int mk_write_u32(mk_writer *w, uint32_t v);
int mk_write_u64(mk_writer *w, uint64_t v);
int mk_write_varint(mk_writer *w, uint64_t v);
int mk_write_bytes(mk_writer *w, const void *p, size_t n);
/* opaque<V>: varint length then the bytes. */
int mk_write_opaque(mk_writer *w, const void *p, size_t n);

/*
 * Hands the written bytes to *ret (mk_bytes_clear frees them) and resets w. Returns the
 * first recorded error instead (and frees the buffer) if any write failed.
 */
int mk_writer_finish(mk_writer *w, mk_bytes *ret);

/* Frees (with a wipe) whatever w holds. */
void mk_writer_clear(mk_writer *w);

/*
 * Encodes v as a minimal varint into out[0..4); returns its length (1, 2 or 4), or 0 when
 * v > MK_VARINT_MAX. For hashing vectors piecewise without building them.
 */
size_t mk_varint_encode(uint64_t v, uint8_t out[4]);
