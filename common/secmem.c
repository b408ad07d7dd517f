/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <string.h>

#include "common/secmem.h"

#define MK_SECRET_MAX ((size_t)64 << 20)

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int init_result;

static void do_init(void)
{
	init_result = sodium_init() < 0 ? -ENOMEM : 0;
}

int mk_secmem_init(void)
{
	pthread_once(&init_once, do_init);
	return init_result;
}

int mk_secret_new(size_t len, mk_secret **ret)
{
	mk_secret *s;
	size_t total;
	int r;

	r = mk_secmem_init();
	if (r < 0)
		return r;
	if (len > MK_SECRET_MAX)
		return -EINVAL;
	/* sodium_malloc() places the block against a guard page, so round the size up to keep
	 * the header aligned. */
	total = (sizeof(mk_secret) + len + 15) & ~(size_t)15;
	s = sodium_malloc(total);
	if (!s)
		return -ENOMEM;
	memset(s, 0, total);
	s->len = len;
	*ret = s;
	return 0;
}

int mk_secret_new_copy(const void *p, size_t len, mk_secret **ret)
{
	mk_secret *s;
	int r;

	r = mk_secret_new(len, &s);
	if (r < 0)
		return r;
	if (len)
		memcpy(s->data, p, len);
	*ret = s;
	return 0;
}

mk_secret *mk_secret_free(mk_secret *s)
{
	if (s)
		sodium_free(s); /* wipes before unmapping */
	return NULL;
}

void mk_wipe(void *p, size_t len)
{
	if (p && len)
		sodium_memzero(p, len);
}

int mk_memeq_ct(const void *a, const void *b, size_t len)
{
	if (len == 0)
		return 1;
	return sodium_memcmp(a, b, len) == 0;
}
