/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "common/bytes.h"

int mk_bytes_alloc(size_t len, mk_bytes *ret)
{
	uint8_t *p = calloc(1, len ? len : 1);

	if (!p)
		return -ENOMEM;
	ret->data = p;
	ret->len = len;
	return 0;
}

int mk_bytes_dup(const void *p, size_t len, mk_bytes *ret)
{
	mk_bytes b;
	int r = mk_bytes_alloc(len, &b);

	if (r < 0)
		return r;
	if (len)
		memcpy(b.data, p, len);
	*ret = b;
	return 0;
}

void mk_bytes_clear(mk_bytes *b)
{
	if (b->data) {
		OPENSSL_cleanse(b->data, b->len);
		free(b->data);
	}
	*b = MK_BYTES_NULL;
}

char *mk_hex_encode(const uint8_t *p, size_t len)
{
	static const char digits[] = "0123456789abcdef";
	char *s = malloc(len * 2 + 1);

	if (!s)
		return NULL;
	for (size_t i = 0; i < len; i++) {
		s[2 * i] = digits[p[i] >> 4];
		s[2 * i + 1] = digits[p[i] & 15];
	}
	s[len * 2] = '\0';
	return s;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int mk_hex_decode(const char *hex, mk_bytes *ret)
{
	size_t n = strlen(hex);
	mk_bytes b;
	int r;

	if (n % 2)
		return -EINVAL;
	r = mk_bytes_alloc(n / 2, &b);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n / 2; i++) {
		int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);

		if (hi < 0 || lo < 0) {
			mk_bytes_clear(&b);
			return -EINVAL;
		}
		b.data[i] = (uint8_t)(hi << 4 | lo);
	}
	*ret = b;
	return 0;
}
