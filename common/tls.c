/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "common/tls.h"

/* --- reading ----------------------------------------------------------------------------- */

void mk_reader_init(mk_reader *r, const uint8_t *p, size_t n)
{
	r->p = n ? p : NULL;
	r->left = p ? n : 0;
}

/* Reads a big-endian integer of n (<= 8) bytes. */
static int read_be(mk_reader *r, size_t n, uint64_t *ret)
{
	uint64_t v = 0;

	if (r->left < n)
		return -EBADMSG;
	for (size_t i = 0; i < n; i++)
		v = v << 8 | r->p[i];
	r->p += n;
	r->left -= n;
	*ret = v;
	return 0;
}

int mk_read_u8(mk_reader *r, uint8_t *ret)
{
	uint64_t v;
	int e = read_be(r, 1, &v);

	if (e < 0)
		return e;
	*ret = (uint8_t)v;
	return 0;
}

int mk_read_u16(mk_reader *r, uint16_t *ret)
{
	uint64_t v;
	int e = read_be(r, 2, &v);

	if (e < 0)
		return e;
	*ret = (uint16_t)v;
	return 0;
}

int mk_read_u32(mk_reader *r, uint32_t *ret)
{
	uint64_t v;
	int e = read_be(r, 4, &v);

	if (e < 0)
		return e;
	*ret = (uint32_t)v;
	return 0;
}

int mk_read_u64(mk_reader *r, uint64_t *ret)
{
	return read_be(r, 8, ret);
}

int mk_read_varint(mk_reader *r, uint64_t *ret)
{
	uint64_t v;
	size_t n;

	if (r->left < 1)
		return -EBADMSG;
	switch (r->p[0] >> 6) {
	case 0:
		n = 1;
		break;
	case 1:
		n = 2;
		break;
	case 2:
		n = 4;
		break;
	default:
		return -EBADMSG; /* 11: reserved in MLS */
	}
	if (r->left < n)
		return -EBADMSG;
	v = r->p[0] & 0x3f;
	for (size_t i = 1; i < n; i++)
		v = v << 8 | r->p[i];
	/* Minimal form only (RFC 9420 §2.1.2): the value must need this many bytes. */
	if ((n == 2 && v < 64) || (n == 4 && v < 16384))
		return -EBADMSG;
	r->p += n;
	r->left -= n;
	*ret = v;
	return 0;
}

int mk_read_bytes(mk_reader *r, size_t n, const uint8_t **ret)
{
	if (n > r->left)
		return -EBADMSG;
	*ret = r->p;
	r->p += n;
	r->left -= n;
	return 0;
}

int mk_read_opaque(mk_reader *r, size_t max, const uint8_t **ret, size_t *ret_n)
{
	mk_reader save = *r;
	uint64_t len;
	int e;

	e = mk_read_varint(r, &len);
	if (e < 0)
		return e;
	if (len > max || len > r->left) {
		*r = save;
		return -EBADMSG;
	}
	*ret = r->p;
	*ret_n = (size_t)len;
	r->p += len;
	r->left -= (size_t)len;
	return 0;
}

bool mk_reader_empty(const mk_reader *r)
{
	return r->left == 0;
}

/* --- writing ----------------------------------------------------------------------------- */

void mk_writer_init(mk_writer *w, size_t max)
{
	*w = (mk_writer){ .max = max };
}

/* Makes room for n more bytes, growing geometrically; records and returns any error. */
static int reserve(mk_writer *w, size_t n)
{
	size_t need, cap;
	uint8_t *nb;

	if (w->error)
		return w->error;
	if (n > w->max || w->len > w->max - n)
		return (w->error = -E2BIG);
	need = w->len + n;
	if (need <= w->cap)
		return 0;
	cap = w->cap ? w->cap : 64;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	if (cap > w->max)
		cap = need > w->max ? need : w->max;
	/* Grow by copy and wipe rather than realloc: the old buffer may hold a plaintext. */
	nb = malloc(cap);
	if (!nb)
		return (w->error = -ENOMEM);
	if (w->len)
		memcpy(nb, w->buf, w->len);
	if (w->buf) {
		OPENSSL_cleanse(w->buf, w->cap);
		free(w->buf);
	}
	w->buf = nb;
	w->cap = cap;
	return 0;
}

static int write_be(mk_writer *w, uint64_t v, size_t n)
{
	int e = reserve(w, n);

	if (e < 0)
		return e;
	for (size_t i = 0; i < n; i++)
		w->buf[w->len + i] = (uint8_t)(v >> (8 * (n - 1 - i)));
	w->len += n;
	return 0;
}

int mk_write_u8(mk_writer *w, uint8_t v)
{
	return write_be(w, v, 1);
}

int mk_write_u16(mk_writer *w, uint16_t v)
{
	return write_be(w, v, 2);
}

int mk_write_u32(mk_writer *w, uint32_t v)
{
	return write_be(w, v, 4);
}

int mk_write_u64(mk_writer *w, uint64_t v)
{
	return write_be(w, v, 8);
}

size_t mk_varint_encode(uint64_t v, uint8_t out[4])
{
	if (v < 64) {
		out[0] = (uint8_t)v;
		return 1;
	}
	if (v < 16384) {
		out[0] = (uint8_t)(0x40 | v >> 8);
		out[1] = (uint8_t)v;
		return 2;
	}
	if (v <= MK_VARINT_MAX) {
		out[0] = (uint8_t)(0x80 | v >> 24);
		out[1] = (uint8_t)(v >> 16);
		out[2] = (uint8_t)(v >> 8);
		out[3] = (uint8_t)v;
		return 4;
	}
	return 0;
}

int mk_write_varint(mk_writer *w, uint64_t v)
{
	uint8_t b[4];
	size_t n;

	if (w->error)
		return w->error;
	n = mk_varint_encode(v, b);
	if (n == 0)
		return (w->error = -E2BIG);
	return mk_write_bytes(w, b, n);
}

int mk_write_bytes(mk_writer *w, const void *p, size_t n)
{
	int e = reserve(w, n);

	if (e < 0)
		return e;
	if (n)
		memcpy(w->buf + w->len, p, n);
	w->len += n;
	return 0;
}

int mk_write_opaque(mk_writer *w, const void *p, size_t n)
{
	uint8_t b[4];
	size_t hl;
	int e;

	if (w->error)
		return w->error;
	hl = mk_varint_encode(n, b);
	if (hl == 0)
		return (w->error = -E2BIG);
	/* Reserve header and body together so that a failure leaves no half-written vector. */
	e = reserve(w, n > SIZE_MAX - hl ? SIZE_MAX : hl + n);
	if (e < 0)
		return e;
	memcpy(w->buf + w->len, b, hl);
	if (n)
		memcpy(w->buf + w->len + hl, p, n);
	w->len += hl + n;
	return 0;
}

int mk_writer_finish(mk_writer *w, mk_bytes *ret)
{
	int e = w->error;
	size_t max = w->max;

	if (e < 0) {
		mk_writer_clear(w);
		mk_writer_init(w, max);
		return e;
	}
	if (!w->buf) {
		return mk_bytes_alloc(0, ret);
	}
	ret->data = w->buf;
	ret->len = w->len;
	mk_writer_init(w, max);
	return 0;
}

void mk_writer_clear(mk_writer *w)
{
	if (w->buf) {
		OPENSSL_cleanse(w->buf, w->cap);
		free(w->buf);
	}
	w->buf = NULL;
	w->len = w->cap = 0;
	w->error = 0;
}
